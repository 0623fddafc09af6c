"""K3s join tokens and the credentials file behind them, shared by the supervisor and the services.

A secure token is ``K10<ca hash>::<username>:<password>``: the hash (64 hex characters) is the
SHA-256 of the CA bundle exactly as ``/cacerts`` serves it, the PEM bytes of ``server-ca.crt``, so a
joining node can prove it reached the right cluster before it sends the password. A bare
``<password>`` (or ``<username>:<password>``) is the short form, trusted on first use.

``server/cred/passwd`` holds one ``<password>,<user>,<uid>,<group>`` line per credential:
``server`` in group ``k3s:server``, ``node`` in group ``k3s:agent``. The API server's ``/v1-k3s/*``
routes check basic auth against it with ``Passwd.check``; the supervisor writes it
(``supervisor/tokens.py``). Both sides import this module so that they cannot disagree on the format.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import re
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

PREFIX = "K10"
SERVER_USER = "server"
AGENT_USER = "node"
SERVER_GROUP = "k3s:server"
AGENT_GROUP = "k3s:agent"
SECRET_BYTES = 16
CA_HASH_MISMATCH = "token CA hash does not match the cluster CA certificate"

_HASH = re.compile(r"[0-9a-fA-F]{64}")


class TokenError(Exception):
    """A malformed token, or one that does not belong to this cluster (the message holds no secret)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Token:
    """A parsed token; ``ca_hash`` and ``username`` are empty in the short form."""

    password: str = dataclasses.field(repr=False)
    username: str = ""
    ca_hash: str = ""

    def secure(self, *, ca_hash: str | None = None, username: str | None = None) -> str:
        """The full ``K10<hash>::<user>:<password>`` form, optionally with another hash or user."""
        return format_token(
            ca_hash=self.ca_hash if ca_hash is None else ca_hash,
            username=self.username if username is None else username,
            password=self.password,
        )


def generate_secret() -> str:
    return secrets.token_hex(SECRET_BYTES)


def ca_hash(ca_pem: bytes) -> str:
    """SHA-256 (hex) of the CA bundle as served by ``/cacerts``."""
    return hashlib.sha256(ca_pem).hexdigest()


def format_token(*, ca_hash: str, username: str, password: str) -> str:
    if not password:
        raise TokenError("token password must not be empty")
    creds = f"{username}:{password}" if username else password
    return f"{PREFIX}{ca_hash}::{creds}" if ca_hash else creds


def parse(text: str) -> Token:
    """``K10<hash>::user:pass``, ``K10<hash>::secret``, ``user:pass`` or ``secret``."""
    text = text.strip()
    if not text:
        raise TokenError("token must not be empty")
    digest = ""
    if text.startswith(PREFIX) and "::" in text:
        digest, text = text[len(PREFIX) :].split("::", 1)
        if digest and not _HASH.fullmatch(digest):
            raise TokenError("token CA hash must be 64 hexadecimal characters")
        digest = digest.lower()
    username, sep, password = text.partition(":")
    if not sep:
        username, password = "", username
    if not password:
        raise TokenError("token password must not be empty")
    return Token(password=password, username=username, ca_hash=digest)


def read_token(path: Path) -> Token:
    """A token file (``server/token``, ``--token-file``)."""
    return parse(Path(path).read_text())


def verify_ca_hash(token: str | Token, ca_pem: bytes) -> bool:
    """Does the CA bundle a server sent match the token? True for a short token (nothing to check).

    A hash matches either the SHA-256 of the whole bundle (K3s's own CA) or the SHA-256 fingerprint
    of the DER root certificate in it (a custom CA, as K3s accepts). Callers should warn when the
    token has no hash at all: the CA was then trusted on first use.
    """
    parsed = parse(token) if isinstance(token, str) else token
    if not parsed.ca_hash:
        return True
    candidates = [ca_hash(ca_pem)]
    with contextlib.suppress(ValueError):
        certs = x509.load_pem_x509_certificates(ca_pem)
        candidates += [
            hashlib.sha256(c.public_bytes(serialization.Encoding.DER)).hexdigest() for c in certs[-1:]
        ]
    return any(hmac.compare_digest(parsed.ca_hash, c) for c in candidates)


class Passwd:
    """``server/cred/passwd``: user -> (password, group), checked in constant time."""

    def __init__(self, entries: dict[str, tuple[str, str]]) -> None:
        self._entries = dict(entries)

    def __repr__(self) -> str:
        return f"Passwd(users={sorted(self._entries)})"

    @classmethod
    def load(cls, path: Path) -> Passwd:
        return cls.parse(Path(path).read_text())

    @classmethod
    def parse(cls, text: str) -> Passwd:
        entries: dict[str, tuple[str, str]] = {}
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            fields = [f.strip() for f in line.split(",")]
            if len(fields) < 4 or not fields[0] or not fields[1]:
                raise TokenError(f"passwd line {number}: want password,user,uid,group")
            entries[fields[1]] = (fields[0], fields[3])
        return cls(entries)

    def render(self) -> str:
        return "".join(f"{pw},{user},{user},{group}\n" for user, (pw, group) in self._entries.items())

    def check(self, username: str, password: str) -> str | None:
        """The user's group (``k3s:server`` or ``k3s:agent``) if the password is right, else None."""
        entry = self._entries.get(username)
        # Compare against something even for an unknown user, so timing says nothing about users.
        expected, group = entry if entry is not None else ("\0" * len(password), "")
        if hmac.compare_digest(expected.encode(), password.encode()) and entry is not None:
            return group
        return None
