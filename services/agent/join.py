"""Joining a cluster: who this node is, whether the server is the right one, and its certificate.

Identity. The node name is ``--node-name``, else the hostname, lower-cased; ``--with-node-id``
appends ``-<id>``, eight hex characters generated once. The node password is 16 random bytes in
hex, generated once. Both live in the node directory, where K3s keeps them:

- ``/etc/rancher/node/{password,id}`` when running as root with the default data dir
  (``/var/lib/rancher/k3s``), so that a reinstall with the same data keeps the node's identity;
- ``<data-dir>/agent/etc/rancher/node/{password,id}`` otherwise (unprivileged, or a custom data
  dir: tests and several agents on one host must not share one password file). K3s's rootless
  mode makes the same choice.

The server check, before any secret leaves the host (K3s's ``getCACerts``): fetch ``/cacerts``
without verification, fetch it again trusting only that bundle (which proves the serving
certificate chains to it), and compare its SHA-256 with the hash in the token. A short token has
no hash: the CA is then trusted on first use, with a warning. K3s first tries the OS trust store
(for publicly trusted servers); a cluster CA is never in it, so that step is left out.

Then ``GET /v1-k3s/client-kubelet.crt`` with the token as basic auth and the node's name and
password as headers returns the client certificate (CN ``system:node:<name>``), its CA and a key;
they are written under ``<data-dir>/agent`` with a kubeconfig naming them, and only they are used
from then on. Refusals are ``JoinError``s with one printable line; an unreachable server is
``ServerUnreachable`` (the caller retries).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import socket
import ssl
from pathlib import Path
from typing import Any

import httpx
import yaml
from cryptography import x509

from services.agent import settings as settings_
from services.machinery import k3stoken

log = logging.getLogger(__name__)

ROOT_NODE_DIR = Path("/etc/rancher/node")
PASSWORD_FILE = "password"
NODE_ID_FILE = "id"
CA_FILE = "server-ca.crt"
CERT_FILE = "client-kubelet.crt"
KEY_FILE = "client-kubelet.key"
KUBECONFIG_FILE = "kubelet.kubeconfig"
NODE_ID_BYTES = 4


class JoinError(Exception):
    """The join was refused or cannot work; the message is one line for the user (no secret in it)."""


class CaHashMismatch(JoinError):
    """The server's CA is not the one the token names (the CLI exits with code 2)."""


class ServerUnreachable(JoinError):
    """No answer from the server (yet): worth retrying."""


@dataclasses.dataclass(frozen=True, slots=True)
class Identity:
    name: str
    password: str = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True, slots=True)
class Credentials:
    """The files the agent talks to the API with."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    kubeconfig: Path

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.load_cert_chain(str(self.cert_file), str(self.key_file))
        return context


# -- identity ---------------------------------------------------------------------------------------


def node_dir(settings: settings_.AgentSettings, *, is_root: bool | None = None) -> Path:
    """Where the node password and id live (see the module docstring)."""
    root = os.geteuid() == 0 if is_root is None else is_root
    if root and settings.data_dir == settings_.DEFAULT_DATA_DIR:
        return ROOT_NODE_DIR
    return settings.agent_dir / "etc" / "rancher" / "node"


def node_name(settings: settings_.AgentSettings, *, directory: Path | None = None) -> str:
    """``--node-name`` or the hostname, lower-cased, with ``-<node id>`` under ``--with-node-id``."""
    name = (settings.node_name or socket.gethostname()).strip().lower()
    if not name:
        raise JoinError("the node has no name: give --node-name")
    if settings.with_node_id:
        directory = directory or node_dir(settings)
        name = f"{name}-{_kept(directory / NODE_ID_FILE, lambda: secrets.token_hex(NODE_ID_BYTES))}"
    return name


def identity(settings: settings_.AgentSettings, *, directory: Path | None = None) -> Identity:
    """The node's name and password, creating the password (and node id) on first use."""
    directory = directory or node_dir(settings)
    name = node_name(settings, directory=directory)
    password = _kept(directory / PASSWORD_FILE, lambda: secrets.token_hex(16))
    return Identity(name=name, password=password)


def _kept(path: Path, make: Any) -> str:
    """The file's content, or a new value written to it first (0600, atomically)."""
    try:
        value = path.read_text().strip()
        if value:
            return value
    except FileNotFoundError:
        pass
    value = make()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return value


# -- the server ---------------------------------------------------------------------------------------


async def fetch_ca(server: str, token: k3stoken.Token, *, request_timeout: float) -> bytes:
    """The cluster CA bundle, verified as the module docstring says; JoinError on a mismatch."""
    async with httpx.AsyncClient(verify=False, timeout=request_timeout, trust_env=False) as client:
        first = await _get(client, f"{server}/cacerts")
    try:
        x509.load_pem_x509_certificates(first.content)
        context = ssl.create_default_context(cadata=first.content.decode())
    except (ValueError, ssl.SSLError):
        raise JoinError(f"{server}/cacerts did not answer a CA certificate bundle") from None
    async with httpx.AsyncClient(verify=context, timeout=request_timeout, trust_env=False) as client:
        try:
            second = await _get(client, f"{server}/cacerts")
        except ServerUnreachable as exc:
            if _tls_failure(exc):
                raise JoinError(
                    f"the server's certificate does not chain to its own CA bundle: {exc}"
                ) from None
            raise
    if second.content != first.content:
        raise JoinError(f"{server}/cacerts changed between two reads; try again")
    if not token.ca_hash:
        log.warning(
            "the token has no CA hash: trusting the server's CA on first use (use the full K10 token)"
        )
    elif not k3stoken.verify_ca_hash(token, second.content):
        raise CaHashMismatch(k3stoken.CA_HASH_MISMATCH)
    return second.content


async def fetch_client_cert(
    server: str, *, token: k3stoken.Token, ca_pem: bytes, node: Identity, request_timeout: float
) -> bytes:
    """PEM: the node's client certificate, its CA, then its key (K3s's answer, as is)."""
    context = ssl.create_default_context(cadata=ca_pem.decode())
    username = token.username or k3stoken.AGENT_USER
    headers = {"k3s-Node-Name": node.name, "k3s-Node-Password": node.password}
    async with httpx.AsyncClient(verify=context, timeout=request_timeout, trust_env=False) as client:
        response = await _get(
            client, f"{server}/v1-k3s/client-kubelet.crt", headers=headers, auth=(username, token.password)
        )
    if response.status_code == 401:
        raise JoinError("the server refused the join token (401 Unauthorized): check --token")
    if response.status_code == 403:
        raise JoinError(f"the server refused node {node.name!r} (403 Forbidden): {_message(response)}")
    if response.status_code != 200:
        raise JoinError(
            f"the server answered {response.status_code} for the node certificate: {_message(response)}"
        )
    return response.content


async def join(settings: settings_.AgentSettings, *, server: str, node: Identity) -> Credentials:
    """Verify the server, fetch the node's certificate, write them under ``<data-dir>/agent``."""
    text = settings.token_text()
    if not text:
        raise JoinError("joining a server needs a token: give --token or --token-file")
    try:
        token = k3stoken.parse(text)
    except k3stoken.TokenError as exc:
        raise JoinError(f"invalid token: {exc}") from None
    server = server.rstrip("/")
    ca_pem = await fetch_ca(server, token, request_timeout=settings.join_timeout)
    answer = await fetch_client_cert(
        server, token=token, ca_pem=ca_pem, node=node, request_timeout=settings.join_timeout
    )
    cert_pem, key_pem = split_pem(answer)
    credentials = write_credentials(settings.agent_dir, ca_pem=ca_pem, cert_pem=cert_pem, key_pem=key_pem)
    log.info("joined %s as node %s", server, node.name)
    return credentials


def split_pem(answer: bytes) -> tuple[bytes, bytes]:
    """(certificates, key) of a PEM answer holding both."""
    marker = answer.find(b"-----BEGIN ", answer.rfind(b"-----END CERTIFICATE-----"))
    if marker < 0 or b"PRIVATE KEY" not in answer[marker:]:
        raise JoinError("the server's node certificate answer holds no private key")
    return answer[:marker], answer[marker:]


def write_credentials(directory: Path, *, ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> Credentials:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths = Credentials(
        ca_file=directory / CA_FILE,
        cert_file=directory / CERT_FILE,
        key_file=directory / KEY_FILE,
        kubeconfig=directory / KUBECONFIG_FILE,
    )
    _write(paths.key_file, key_pem, mode=0o600)
    _write(paths.cert_file, cert_pem, mode=0o644)
    _write(paths.ca_file, ca_pem, mode=0o644)
    return paths


def write_kubeconfig(credentials: Credentials, *, server: str) -> None:
    """``<data-dir>/agent/kubelet.kubeconfig``, for people debugging the node (the agent uses the files)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {"server": server, "certificate-authority": str(credentials.ca_file)},
            }
        ],
        "users": [
            {
                "name": "node",
                "user": {
                    "client-certificate": str(credentials.cert_file),
                    "client-key": str(credentials.key_file),
                },
            }
        ],  # fmt: skip
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "node"}}],
        "current-context": "local",
    }
    _write(credentials.kubeconfig, yaml.safe_dump(config).encode(), mode=0o600)


def _write(path: Path, data: bytes, *, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


async def _get(client: httpx.AsyncClient, url: str, **kwargs: Any) -> httpx.Response:
    try:
        return await client.get(url, **kwargs)
    except httpx.TransportError as exc:
        raise ServerUnreachable(f"cannot reach {url}: {exc!r}") from exc


def _tls_failure(exc: BaseException) -> bool:
    """Whether an ssl error (a certificate that does not verify) is behind ``exc``."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300]
    return str(body.get("message", "")) if isinstance(body, dict) else response.text.strip()[:300]
