"""Where the API is and how to prove who we are: kubeconfigs and the in-cluster service account.

A ``ClientConfig`` is built once at a process's entry point and handed to ``api.ApiClient``.
Two sources, as client-go has them:

- a kubeconfig. The supervisor's component kubeconfigs (``<data-dir>/server/cred/*.kubeconfig``)
  name certificate files by path, the admin's ``--write-kubeconfig`` embeds them as base64 data;
  both forms are read, relative paths resolved against the kubeconfig's directory as kubectl does.
- in-cluster: the service account token and ``ca.crt`` mounted at
  ``/var/run/secrets/kubernetes.io/serviceaccount``, and ``KUBERNETES_SERVICE_HOST``/``_PORT``
  (read here, at the entry point's request, never deeper in the code).

Projected service account tokens rotate, so a token given as a file is re-read at most once a
minute (``TokenFile``) instead of being captured at start.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import ipaddress
import os
import ssl
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from services.client import errors

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REREAD = 60.0  # seconds; client-go's cached token file source refreshes every minute


class TokenFile:
    """A bearer token read from a file, re-read when older than ``TOKEN_REREAD`` seconds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._token = ""
        self._read_at = float("-inf")

    def __call__(self) -> str:
        now = time.monotonic()
        if now - self._read_at >= TOKEN_REREAD:
            try:
                self._token = self.path.read_text().strip()
            except OSError as exc:
                if not self._token:
                    raise errors.ConfigError(
                        f"cannot read the token file {self.path}: {exc.strerror}"
                    ) from None
                # keep the last good token; the next request tries the file again
            else:
                self._read_at = now
        return self._token


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClientConfig:
    server: str  # https://host:port, no trailing slash
    ssl_context: ssl.SSLContext | None = None  # None: plain http (tests, loopback proxies)
    token: str | None = None  # a fixed bearer token
    token_file: TokenFile | None = None  # a rotating bearer token, preferred over ``token``
    namespace: str = "default"  # the context's namespace, or the service account's
    tls_server_name: str = ""  # the name to expect on the server's certificate, when not the URL's host

    def bearer(self) -> str | None:
        if self.token_file is not None:
            return self.token_file() or None
        return self.token or None


def load_kubeconfig(path: str | os.PathLike[str], *, context: str | None = None) -> ClientConfig:
    """The ``ClientConfig`` of ``context`` (the current context by default) of a kubeconfig file."""
    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise errors.ConfigError(f"cannot read the kubeconfig {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise errors.ConfigError(f"the kubeconfig {path} is not valid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise errors.ConfigError(f"{path} is not a kubeconfig")
    return from_kubeconfig_dict(loaded, context=context, base_dir=path.parent)


def from_kubeconfig_dict(
    config: Mapping[str, Any], *, context: str | None = None, base_dir: Path = Path(".")
) -> ClientConfig:
    name = context or config.get("current-context") or ""
    ctx = _named(config, "contexts", name, "context")
    cluster = _named(config, "clusters", ctx.get("cluster", ""), "cluster")
    user = _named(config, "users", ctx.get("user", ""), "user") if ctx.get("user") else {}
    server = str(cluster.get("server") or "").rstrip("/")
    if not server:
        raise errors.ConfigError(f"the cluster of context {name!r} has no server")
    if "username" in user or "exec" in user or "auth-provider" in user:
        raise errors.ConfigError("basic auth, exec and auth-provider users are not supported")
    ssl_context = _ssl_context(cluster, user, base_dir) if server.startswith("https://") else None
    token_file = None
    if user.get("tokenFile"):
        token_file = TokenFile(_resolve(base_dir, user["tokenFile"]))
    return ClientConfig(
        server=server,
        ssl_context=ssl_context,
        token=user.get("token") or None,
        token_file=token_file,
        namespace=ctx.get("namespace") or "default",
        tls_server_name=cluster.get("tls-server-name") or "",
    )


def in_cluster(
    *, environ: Mapping[str, str] | None = None, directory: Path = SERVICE_ACCOUNT_DIR
) -> ClientConfig:
    """The config of a pod: the API's service address, the mounted service account token and CA."""
    env = os.environ if environ is None else environ
    host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise errors.ConfigError(
            "not in a cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are unset"
        )
    token_file = TokenFile(directory / "token")
    token_file()  # fail now, not at the first request, when there is no token
    context = ssl.create_default_context(cafile=_readable(directory / "ca.crt"))
    namespace_file = directory / "namespace"
    namespace = namespace_file.read_text().strip() if namespace_file.is_file() else "default"
    return ClientConfig(
        server=f"https://{_host(host)}:{port}",
        ssl_context=context,
        token_file=token_file,
        namespace=namespace,
    )


# -- helpers ---------------------------------------------------------------------------------


def _named(config: Mapping[str, Any], section: str, name: str, field: str) -> dict[str, Any]:
    for entry in config.get(section) or ():
        if isinstance(entry, dict) and entry.get("name") == name:
            value = entry.get(field)
            return dict(value) if isinstance(value, dict) else {}
    raise errors.ConfigError(f"the kubeconfig has no {field} named {name!r}")


def _ssl_context(cluster: Mapping[str, Any], user: Mapping[str, Any], base_dir: Path) -> ssl.SSLContext:
    if cluster.get("insecure-skip-tls-verify"):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif cluster.get("certificate-authority-data"):
        context = ssl.create_default_context(cadata=_decode(cluster["certificate-authority-data"]).decode())
    elif cluster.get("certificate-authority"):
        context = ssl.create_default_context(
            cafile=_readable(_resolve(base_dir, cluster["certificate-authority"]))
        )
    else:
        context = ssl.create_default_context()  # the system's trust store
    cert = _pem(user, "client-certificate", base_dir)
    key = _pem(user, "client-key", base_dir)
    if (cert is None) != (key is None):
        raise errors.ConfigError("a client certificate needs both client-certificate and client-key")
    if cert is not None and key is not None:
        _load_chain(context, cert, key)
    return context


def _pem(user: Mapping[str, Any], field: str, base_dir: Path) -> bytes | None:
    if user.get(f"{field}-data"):
        return _decode(user[f"{field}-data"])
    if user.get(field):
        path = _resolve(base_dir, user[field])
        try:
            return path.read_bytes()
        except OSError as exc:
            raise errors.ConfigError(f"cannot read {field} {path}: {exc.strerror}") from None
    return None


def _load_chain(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """``ssl`` loads certificates from files only: stage the PEMs in a private temporary dir."""
    with tempfile.TemporaryDirectory(prefix="k3spy-client-") as tmp:
        cert_path, key_path = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
        key_path.touch(mode=0o600)
        key_path.write_bytes(key)
        cert_path.write_bytes(cert)
        try:
            context.load_cert_chain(cert_path, key_path)
        except ssl.SSLError as exc:
            raise errors.ConfigError(f"the client certificate and key do not load: {exc.reason}") from None


def _decode(data: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise errors.ConfigError("invalid base64 in the kubeconfig") from None


def _resolve(base_dir: Path, value: str) -> Path:
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else base_dir / path


def _readable(path: Path) -> str:
    if not path.is_file():
        raise errors.ConfigError(f"the certificate authority file {path} does not exist")
    return str(path)


def _host(host: str) -> str:
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]"
    except ValueError:
        pass
    return host
