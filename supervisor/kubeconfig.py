"""Kubeconfigs: the admin's (``--write-kubeconfig``) and one per component in ``server/cred``.

The admin kubeconfig is K3s's ``k3s.yaml``: cluster, user and context all named ``default``, server
``https://127.0.0.1:<https-listen-port>``, with the server CA and the ``system:admin`` client
certificate (O ``system:masters``) embedded, so the file can be copied to another machine as it is
(after changing the address). Where it goes follows K3s: ``--write-kubeconfig`` when given, else
``/etc/rancher/k3s/k3s.yaml`` for root and ``$HOME/.kube/k3s.yaml`` for anyone else (who cannot
write under ``/etc``). Its mode is ``--write-kubeconfig-mode`` (octal text such as ``644``),
default 0600. It is rewritten at every start, since the certificate may have been renewed.

The component kubeconfigs (``admin``, ``supervisor``, ``controller``, ``scheduler``, ``api-server``,
``k3s-controller``, ``cloud-controller``, named as K3s names them) point at the files in
``server/tls`` instead of embedding them, as K3s's do: a renewed certificate is then picked up
without rewriting them, and there is one copy of each key on disk.
"""

from __future__ import annotations

import base64
import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from supervisor import pki

DEFAULT_ROOT_PATH = Path("/etc/rancher/k3s/k3s.yaml")
DEFAULT_USER_PATH = Path(".kube/k3s.yaml")  # under $HOME when not root
DEFAULT_MODE = 0o600
DEFAULT_PORT = 6443
NAME = "default"  # K3s names the cluster, the user and the context `default`

# kubeconfig file in server/cred -> the client certificate it uses, as K3s pairs them.
COMPONENTS: dict[str, str] = {
    "admin": "client-admin",
    "supervisor": "client-supervisor",
    "controller": "client-controller",
    "scheduler": "client-scheduler",
    "api-server": "client-kube-apiserver",
    "k3s-controller": "client-k3s-controller",
    "cloud-controller": "client-k3s-cloud-controller",
}


def default_path(*, is_root: bool | None = None, home: Path | None = None) -> Path:
    if is_root is None:
        is_root = os.geteuid() == 0
    if is_root:
        return DEFAULT_ROOT_PATH
    return (home or Path.home()) / DEFAULT_USER_PATH


def parse_mode(value: str | int | None) -> int:
    """``--write-kubeconfig-mode``: octal text (``644``, ``0644``, ``0o644``); empty means 0600."""
    if value is None or value == "":
        return DEFAULT_MODE
    if isinstance(value, int):
        mode = int(str(value), 8)  # YAML gives 644 as an int: it still means octal
    else:
        text = value.strip().lower().removeprefix("0o")
        try:
            mode = int(text, 8)
        except ValueError:
            raise ValueError(
                f"invalid --write-kubeconfig-mode {value!r}: want octal such as 600 or 644"
            ) from None
    if not 0 <= mode <= 0o777:
        raise ValueError(f"invalid --write-kubeconfig-mode {value!r}: want octal such as 600 or 644")
    return mode


def server_url(host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> str:
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass
    return f"https://{host}:{port}"


def build(*, server: str, cluster: Mapping[str, str], user: Mapping[str, str]) -> dict[str, Any]:
    """One cluster, one user, one context, all named ``default``."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": NAME, "cluster": {**cluster, "server": server}}],
        "contexts": [{"name": NAME, "context": {"cluster": NAME, "user": NAME}}],
        "current-context": NAME,
        "preferences": {},
        "users": [{"name": NAME, "user": dict(user)}],
    }


def embedded(*, server: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> dict[str, Any]:
    return build(
        server=server,
        cluster={"certificate-authority-data": _b64(ca_pem)},
        user={"client-certificate-data": _b64(cert_pem), "client-key-data": _b64(key_pem)},
    )


def by_path(*, server: str, ca_file: Path, cert_file: Path, key_file: Path) -> dict[str, Any]:
    return build(
        server=server,
        cluster={"certificate-authority": str(ca_file)},
        user={"client-certificate": str(cert_file), "client-key": str(key_file)},
    )


def dump(config: Mapping[str, Any]) -> bytes:
    return yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=False).encode()


def write_admin(
    data_dir: Path,
    *,
    path: Path | None = None,
    mode: int = DEFAULT_MODE,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
) -> Path:
    """Write the admin kubeconfig from ``server/tls`` (run ``pki.ensure`` first); returns its path."""
    files = pki.TlsFiles(pki.tls_dir(data_dir))
    config = embedded(
        server=server_url(host, port),
        ca_pem=files.crt(pki.SERVER_CA).read_bytes(),
        cert_pem=files.crt(pki.CLIENT_ADMIN).read_bytes(),
        key_pem=files.key(pki.CLIENT_ADMIN).read_bytes(),
    )
    target = path or default_path()
    _write(target, dump(config), mode=mode)
    return target


def write_components(data_dir: Path, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> dict[str, Path]:
    """``server/cred/<component>.kubeconfig`` for every entry of ``COMPONENTS`` (mode 0600)."""
    files = pki.TlsFiles(pki.tls_dir(data_dir))
    cred = Path(data_dir) / "server" / "cred"
    written = {}
    for component, stem in COMPONENTS.items():
        config = by_path(
            server=server_url(host, port),
            ca_file=files.crt(pki.SERVER_CA),
            cert_file=files.crt(stem),
            key_file=files.key(stem),
        )
        target = cred / f"{component}.kubeconfig"
        _write(target, dump(config), mode=DEFAULT_MODE)
        written[component] = target
    return written


def component_path(data_dir: Path, component: str) -> Path:
    if component not in COMPONENTS:
        raise KeyError(component)
    return Path(data_dir) / "server" / "cred" / f"{component}.kubeconfig"


def load(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(Path(path).read_text())
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} is not a kubeconfig")
    return loaded


def _write(path: Path, content: bytes, *, mode: int) -> None:
    """Skip identical content (the file may be watched), but always enforce the mode."""
    try:
        if path.read_bytes() == content:
            os.chmod(path, mode)
            return
    except OSError:
        pass
    pki.write_atomic(path, content, mode=mode)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
