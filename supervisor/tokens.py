"""Join tokens in K3s's format, and the credentials file the supervisor's routes check them against.

A secure token is ``K10<ca hash>::<username>:<password>``: the hash (64 hex characters) is the
SHA-256 of the CA bundle exactly as ``/cacerts`` serves it, the PEM bytes of ``server-ca.crt``, so a
joining node can prove it reached the right cluster before it sends the password. A bare
``<password>`` (or ``<username>:<password>``) is the short form, trusted on first use.

What a server writes, as K3s does:

- ``server/token``: ``K10<hash>::server:<secret>``, 0600. The secret is ``--token`` when given (bare
  or in full form; a full token's hash must match this cluster's CA), else the one already stored,
  else 16 random bytes in hex. A ``--token`` that differs from the stored secret is refused: the
  token is the cluster's identity and changing it needs a deliberate rotation.
- ``server/node-token``: the legacy name, a symlink to ``token``.
- ``server/agent-token``: ``K10<hash>::node:<agent secret>`` when ``--agent-token`` is given, else
  a symlink to ``token`` (agents may then join with the server secret).
- ``server/cred/passwd``: one ``<password>,<user>,<uid>,<group>`` line per credential, 0600:
  ``server`` in group ``k3s:server`` with the server secret, ``node`` in group ``k3s:agent`` with
  the agent secret (the server secret when there is no agent token). The supervisor's
  ``/v1-k3s/*`` routes authenticate basic auth against it with ``Passwd.check``; the group decides
  the route (servers may do everything agents may). The file is the single place a running server
  reads credentials from, so rotating a token means rewriting it, never restarting with new flags.

The join token is not a Kubernetes API credential: nodes use it only towards ``/v1-k3s/*``, to
obtain their client certificates, and talk to the API with those.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from supervisor import pki

PREFIX = "K10"
SERVER_USER = "server"
AGENT_USER = "node"
SERVER_GROUP = "k3s:server"
AGENT_GROUP = "k3s:agent"
SECRET_BYTES = 16
TOKEN_MODE = 0o600

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


@dataclasses.dataclass(frozen=True, slots=True)
class ServerTokens:
    server: Token  # K10<hash>::server:<secret>
    agent: Token  # K10<hash>::node:<agent secret, or the server secret>


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


# -- the data dir ------------------------------------------------------------------------------


def server_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "server"


def passwd_path(data_dir: Path) -> Path:
    return server_dir(data_dir) / "cred" / "passwd"


def read_token(path: Path) -> Token:
    """A token file (``server/token``, ``--token-file``)."""
    return parse(Path(path).read_text())


def ensure(
    data_dir: Path, *, ca_pem: bytes, token: str | None = None, agent_token: str | None = None
) -> ServerTokens:
    """Write ``token``, ``node-token``, ``agent-token`` and ``cred/passwd`` (see the module doc).

    ``ca_pem`` is the content of ``server-ca.crt``. Call it after ``pki.ensure``, under the same
    single-start discipline (the files are each replaced atomically).
    """
    directory = server_dir(data_dir)
    digest = ca_hash(ca_pem)
    server_secret = _secret(directory / "token", token, ca_pem=ca_pem, what="--token")
    server = Token(password=server_secret, username=SERVER_USER, ca_hash=digest)
    pki.write_atomic(directory / "token", (server.secure() + "\n").encode(), mode=TOKEN_MODE)
    _symlink(directory / "node-token", "token")
    if agent_token is not None:
        agent_secret = _secret(directory / "agent-token", agent_token, ca_pem=ca_pem, what="--agent-token")
        agent = Token(password=agent_secret, username=AGENT_USER, ca_hash=digest)
        pki.write_atomic(directory / "agent-token", (agent.secure() + "\n").encode(), mode=TOKEN_MODE)
    else:
        agent = Token(password=server_secret, username=AGENT_USER, ca_hash=digest)
        _symlink(directory / "agent-token", "token")
    passwd = Passwd(
        {
            SERVER_USER: (server.password, SERVER_GROUP),
            AGENT_USER: (agent.password, AGENT_GROUP),
        }
    )
    pki.write_atomic(passwd_path(data_dir), passwd.render().encode(), mode=TOKEN_MODE)
    return ServerTokens(server=server, agent=agent)


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


def _secret(path: Path, given: str | None, *, ca_pem: bytes, what: str) -> str:
    """The secret to keep: the given one (checked against the CA and the stored one) or the stored one."""
    stored: Token | None = None
    if path.exists() and not path.is_symlink():
        try:
            stored = read_token(path)
        except (TokenError, OSError) as exc:
            # Never replace a cluster's secret silently: agents joined with it.
            raise TokenError(
                f"{path} is unreadable or malformed; fix or remove it ({type(exc).__name__})"
            ) from None
    if given is None:
        return stored.password if stored is not None else generate_secret()
    parsed = parse(given)
    if parsed.ca_hash and not verify_ca_hash(parsed, ca_pem):
        raise TokenError(
            f"{what} carries a CA hash that does not match this server's CA ({path.parent / 'tls'})"
        )
    if stored is not None and not hmac.compare_digest(stored.password, parsed.password):
        raise TokenError(f"{what} does not match the token stored in {path}; rotate the token instead")
    return parsed.password


def _symlink(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` (relative), replacing whatever is there in one rename."""
    if link.is_symlink() and os.readlink(link) == target:
        return
    tmp = link.parent / f".{link.name}.{secrets.token_hex(8)}.tmp"
    os.symlink(target, tmp)
    os.replace(tmp, link)
