"""K3s's ``/v1-k3s/*`` routes for joining agents: CA bundles and the kubelet certificates.

An agent authenticates with the join token as HTTP basic auth (user ``node`` or ``server``),
checked against ``<data-dir>/server/cred/passwd``; these routes come before the Kubernetes
authenticator because the token is not an API credential. A wrong or missing password is a 401.

The kubelet certificates also need the node's identity: headers ``k3s-Node-Name`` and
``k3s-Node-Password``. The password is checked against the scrypt hash K3s keeps in the immutable
Secret ``kube-system/<node>.node-password.k3s`` (type ``k3s.cattle.io/node-password``, data key
``hash``, K3s's ``$1:<salt hex>:<log2 N>:<r>:<p>:<base64 key>`` format). The first agent with a
name creates it; another password for the same name is a 403 saying the name is taken. The
controller ``nodepassword`` deletes the Secret with the Node, which frees the name.

``client-kubelet.crt`` answers, as K3s does, the client certificate (CN ``system:node:<name>``,
O ``system:nodes``, signed by the client CA) followed by the CA and then the private key, all PEM;
the key is fresh for every request. ``serving-kubelet.crt`` is the same for a serving certificate
signed by the server CA, naming the node and the addresses in ``k3s-Node-IP``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
from pathlib import Path
from typing import Any

from services.apiserver import bootstrap, context, responses
from services.machinery import certs, errors, k3stoken

log = logging.getLogger(__name__)

PREFIX = "/v1-k3s/"
SECRET_NAMESPACE = "kube-system"
SECRET_SUFFIX = ".node-password.k3s"
SECRET_TYPE = "k3s.cattle.io/node-password"
NODE_USER_PREFIX = "system:node:"
NODES_GROUP = "system:nodes"
# K3s's scrypt parameters: N = 2^15, r = 8, p = 1, a 64-byte key and an 8-byte salt.
SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P, SCRYPT_KEY_LEN, SCRYPT_SALT_LEN = 15, 8, 1, 64, 8
SCRYPT_MAXMEM = 256 * 1024 * 1024  # hashlib's default (32 MiB) is just too small for N = 2^15, r = 8
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_HASH_FORMAT = re.compile(r"\$1:([0-9a-f]+):(\d+):(\d+):(\d+):([A-Za-z0-9+/]+)")
PEM = "application/x-pem-file"


# -- node password hashes ---------------------------------------------------------------------------


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """K3s's node password hash (slow on purpose: ~0.1 s; call it in a thread)."""
    salt = salt if salt is not None else os.urandom(SCRYPT_SALT_LEN)
    key = _scrypt(password, salt, SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P, SCRYPT_KEY_LEN)
    encoded = base64.b64encode(key).decode().rstrip("=")
    return f"$1:{salt.hex()}:{SCRYPT_LOG_N}:{SCRYPT_R}:{SCRYPT_P}:{encoded}"


def verify_password(hashed: str, password: str) -> bool:
    match = _HASH_FORMAT.fullmatch(hashed.strip())
    if match is None:
        return False
    salt_hex, log_n, r, p, encoded = match.groups()
    try:
        expected = base64.b64decode(encoded + "=" * (-len(encoded) % 4))
        salt = bytes.fromhex(salt_hex)
        actual = _scrypt(password, salt, int(log_n), int(r), int(p), len(expected))
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(expected, actual)


def _scrypt(password: str, salt: bytes, log_n: int, r: int, p: int, length: int) -> bytes:
    if not 1 <= log_n <= 20:  # a stored hash must not make us spend unbounded memory
        raise ValueError("scrypt cost out of range")
    return hashlib.scrypt(
        password.encode(), salt=salt, n=1 << log_n, r=r, p=p, dklen=length, maxmem=SCRYPT_MAXMEM
    )


def secret_name(node_name: str) -> str:
    return f"{node_name}{SECRET_SUFFIX}".lower()


# -- the routes ---------------------------------------------------------------------------------------


class NodeAuth:
    """The ``/v1-k3s/*`` handler of one API server (passwd and CA files read from its data dir)."""

    def __init__(self, api: context.Api, *, data_dir: Path) -> None:
        self.api = api
        self.data_dir = Path(data_dir)
        self._passwd: tuple[float, k3stoken.Passwd] | None = None
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "server" / "tls"

    async def respond(self, path: str, *, method: str, headers: dict[str, str]) -> responses.Response:
        route = path.removeprefix(PREFIX)
        handler = _ROUTES.get(route)
        if handler is None:
            raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
        if method not in ("GET", "HEAD"):
            raise errors.method_not_allowed(f"{method} is not supported on {path}")
        self._authenticate(headers)
        return await handler(self, headers)

    def _authenticate(self, headers: dict[str, str]) -> str:
        """The token user's group; 401 for anything but a right ``server`` or ``node`` password."""
        user, password = _basic_auth(headers.get("authorization", ""))
        group = self._load_passwd().check(user, password) if user else None
        if group is None:
            raise errors.unauthorized("Unauthorized: the join token was not accepted")
        return group

    def _load_passwd(self) -> k3stoken.Passwd:
        path = self.data_dir / "server" / "cred" / "passwd"
        try:
            mtime = path.stat().st_mtime
            if self._passwd is None or self._passwd[0] != mtime:
                self._passwd = (mtime, k3stoken.Passwd.load(path))
        except (OSError, k3stoken.TokenError) as exc:
            log.warning("cannot read the join credentials %s: %s", path, exc)
            raise errors.unauthorized("Unauthorized: this server has no join credentials") from None
        return self._passwd[1]

    async def _ca(self, stem: str) -> responses.Response:
        return responses.Response(200, (self.tls_dir / f"{stem}.crt").read_bytes(), PEM)

    async def client_ca(self, headers: dict[str, str]) -> responses.Response:
        return await self._ca("client-ca")

    async def server_ca(self, headers: dict[str, str]) -> responses.Response:
        return await self._ca("server-ca")

    async def client_kubelet(self, headers: dict[str, str]) -> responses.Response:
        name = await self._node(headers)
        ca = certs.load_pair(self.tls_dir / "client-ca.crt", self.tls_dir / "client-ca.key")
        pair = certs.issue_client_cert(ca, f"{NODE_USER_PREFIX}{name}", [NODES_GROUP])
        log.info("issued the kubelet client certificate of node %s", name)
        return responses.Response(200, pair.cert_pem() + pair.key_pem(), PEM)

    async def serving_kubelet(self, headers: dict[str, str]) -> responses.Response:
        name = await self._node(headers)
        ips = [ip.strip() for ip in headers.get("k3s-node-ip", "").split(",") if ip.strip()]
        ca = certs.load_pair(self.tls_dir / "server-ca.crt", self.tls_dir / "server-ca.key")
        try:
            pair = certs.issue_serving_cert(
                ca, name, dns_names=[name, "localhost"], ip_addresses=["127.0.0.1", *ips]
            )
        except ValueError:
            raise errors.bad_request("k3s-Node-IP must be a comma-separated list of IP addresses") from None
        return responses.Response(200, pair.cert_pem() + pair.key_pem(), PEM)

    async def _node(self, headers: dict[str, str]) -> str:
        """The node name from the headers, after its password checked out (or was recorded)."""
        name = headers.get("k3s-node-name", "").strip().lower()
        password = headers.get("k3s-node-password", "")
        if not name:
            raise errors.bad_request("node name not set (header k3s-Node-Name)")
        if not password:
            raise errors.bad_request("node password not set (header k3s-Node-Password)")
        if len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
            raise errors.bad_request(f"invalid node name {name!r}: must be a lower-case DNS subdomain")
        # One check at a time per name: two agents racing for a name must not both create the Secret
        # (the locks stay: one per node name ever seen is a few bytes each).
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            await self._ensure_password(name, password)
        return name

    async def _ensure_password(self, name: str, password: str) -> None:
        for _ in range(2):
            stored = await self._stored_hash(name)
            if stored is not None:
                if not await asyncio.to_thread(verify_password, stored, password):
                    raise errors.forbidden(
                        f'node password rejected: the node name "{name}" is taken by another node with a '
                        "different password (delete that Node to free the name, or join with --with-node-id)",
                        resource="secrets",
                        name=secret_name(name),
                    )
                return
            hashed = await asyncio.to_thread(hash_password, password)
            if await bootstrap.ensure(self.api, _secret(name, hashed)):
                log.info("node %s: recorded its node password", name)
                return
        raise errors.conflict("secrets", secret_name(name), "the node password secret changed concurrently")

    async def _stored_hash(self, name: str) -> str | None:
        stored = await self.api.store.get(f"/registry/secrets/{SECRET_NAMESPACE}/{secret_name(name)}")
        if stored is None:
            return None
        encoded = (stored.obj.get("data") or {}).get("hash", "")
        try:
            return base64.b64decode(encoded).decode()
        except (binascii.Error, UnicodeDecodeError):
            return ""  # unreadable: verifies nothing, so the name stays taken until the Node is deleted


def _secret(name: str, hashed: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": secret_name(name), "namespace": SECRET_NAMESPACE},
        "immutable": True,
        "type": SECRET_TYPE,
        "data": {"hash": base64.b64encode(hashed.encode()).decode()},
    }


def _basic_auth(header: str) -> tuple[str, str]:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return "", ""
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    user, _, password = decoded.partition(":")
    return user, password


_ROUTES = {
    "client-ca.crt": NodeAuth.client_ca,
    "server-ca.crt": NodeAuth.server_ca,
    "client-kubelet.crt": NodeAuth.client_kubelet,
    "serving-kubelet.crt": NodeAuth.serving_kubelet,
}
