"""The cluster's bootstrap data: what every server on one datastore must share, sealed with the token.

Servers sharing a PostgreSQL/MySQL datastore or an etcd must serve with the same CAs and keys, or a client
trusting one would refuse the next and tokens signed by one would fail on the other. As K3s does,
the first server stores them in the datastore and later servers copy them into their data dir
before ``pki.ensure`` runs, so they generate nothing new.

The record (key ``/bootstrap/<first 12 hex of SHA-256(token secret)>``, in kine's own table or the etcd) is
``k3sbd1:<salt b64>:<nonce b64>:<ciphertext b64>``: the key is PBKDF2-HMAC-SHA256 of the token
secret (``ITERATIONS`` rounds, a random 16-byte salt), the cipher AES-256-GCM. GCM authenticates,
so a wrong token is a failed tag check, never garbage taken for certificates. The clear text is
JSON: the files below (base64, by path under ``<data-dir>/server``), the settings every server
must agree on, and the NATS route password of the servers' NATS cluster.

Only the secret of the token is the passphrase (``K10<hash>::server:<secret>`` and the bare
``<secret>`` seal alike), so a server may be given either form.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from supervisor import pki

PREFIX = b"/bootstrap/"
FORMAT = "k3sbd1"
ITERATIONS = 100_000  # ~50 ms per start: cheap for a server, expensive for a guesser
SALT_BYTES = 16
NONCE_BYTES = 12

# Paths under <data-dir>/server, with the mode each is written with.
FILES: dict[str, int] = {
    **{f"tls/{stem}.crt": pki.CERT_MODE for stem in pki.CAS},
    **{f"tls/{stem}.key": pki.KEY_MODE for stem in pki.CAS},
    f"tls/{pki.SERVICE_KEY}": pki.KEY_MODE,
    "cred/passwd": pki.KEY_MODE,
}


class BootstrapError(Exception):
    """Bootstrap data that cannot be used: a wrong token, a corrupt record (one line, no secret)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Bootstrap:
    """The clear contents of a record."""

    files: dict[str, bytes]  # path under <data-dir>/server -> content
    settings: dict[str, str]  # option name -> value every server must share
    nats_route_password: str = dataclasses.field(repr=False, default="")

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "files": {path: base64.b64encode(data).decode() for path, data in sorted(self.files.items())},
                "settings": self.settings,
                "natsRoutePassword": self.nats_route_password,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Bootstrap:
        try:
            data = json.loads(raw)
            files = {str(path): base64.b64decode(text) for path, text in data["files"].items()}
            settings = {str(key): str(value) for key, value in data["settings"].items()}
            return cls(
                files=files, settings=settings, nats_route_password=str(data.get("natsRoutePassword", ""))
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            raise BootstrapError("the bootstrap data in the datastore is corrupt") from None


# -- keys and sealing ----------------------------------------------------------------------------------


def storage_key(secret: str) -> bytes:
    """Where the record for this token lives (K3s's shape: a short hash, never the token)."""
    return PREFIX + hashlib.sha256(secret.encode()).hexdigest()[:12].encode()


def _derive(secret: str, salt: bytes) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, ITERATIONS, dklen=32)


def seal(clear: bytes, *, secret: str) -> bytes:
    salt, nonce = os.urandom(SALT_BYTES), os.urandom(NONCE_BYTES)
    sealed = AESGCM(_derive(secret, salt)).encrypt(nonce, clear, PREFIX)
    parts = (base64.b64encode(part).decode() for part in (salt, nonce, sealed))
    return ":".join((FORMAT, *parts)).encode()


def unseal(record: bytes, *, secret: str) -> bytes:
    """The clear text; BootstrapError when the token is not the one that sealed it."""
    fields = record.decode(errors="replace").split(":")
    if len(fields) != 4 or fields[0] != FORMAT:
        raise BootstrapError("the bootstrap data in the datastore is not in a format this server reads")
    try:
        salt, nonce, sealed = (base64.b64decode(field, validate=True) for field in fields[1:])
    except ValueError:
        raise BootstrapError("the bootstrap data in the datastore is corrupt") from None
    try:
        return AESGCM(_derive(secret, salt)).decrypt(nonce, sealed, PREFIX)
    except (InvalidTag, ValueError):
        raise BootstrapError(
            "the token does not decrypt this datastore's bootstrap data: start with the cluster's --token"
        ) from None


# -- the data dir --------------------------------------------------------------------------------------


def collect(
    server_dir: Path, *, settings: Mapping[str, str], nats_route_password: str | None = None
) -> Bootstrap:
    """The shared files of a server that has run ``pki.ensure`` and ``tokens.ensure``."""
    files = {}
    for path in FILES:
        try:
            files[path] = (server_dir / path).read_bytes()
        except FileNotFoundError:
            raise BootstrapError(f"{server_dir / path} is missing; cannot publish bootstrap data") from None
    password = nats_route_password or secrets.token_urlsafe(32)
    return Bootstrap(files=files, settings=dict(settings), nats_route_password=password)


def install(server_dir: Path, bootstrap: Bootstrap) -> list[str]:
    """Write the shared files that differ from the ones on disk; return their paths."""
    changed = []
    for path, mode in FILES.items():
        data = bootstrap.files.get(path)
        if data is None:
            continue
        target = server_dir / path
        if target.exists() and target.read_bytes() == data:
            continue
        pki.write_atomic(target, data, mode=mode)
        changed.append(path)
    return changed


def mismatches(stored: Mapping[str, str], local: Mapping[str, str]) -> list[str]:
    """Settings this server was given differently from the cluster's, as ``name (cluster: X, here: Y)``."""
    return [
        f"{name} (cluster: {stored[name] or '-'}, this server: {local.get(name, '') or '-'})"
        for name in sorted(stored)
        if name in local and stored[name] != local[name]
    ]
