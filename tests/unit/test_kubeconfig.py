"""Kubeconfigs: K3s's admin k3s.yaml and the per-component files in server/cred."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from supervisor import kubeconfig, pki


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    pki.ensure(tmp_path / "data")
    return tmp_path / "data"


def test_default_path_follows_k3s(tmp_path: Path) -> None:
    assert kubeconfig.default_path(is_root=True) == Path("/etc/rancher/k3s/k3s.yaml")
    assert kubeconfig.default_path(is_root=False, home=tmp_path) == tmp_path / ".kube" / "k3s.yaml"


@pytest.mark.parametrize(
    ("given", "mode"),
    [(None, 0o600), ("", 0o600), ("644", 0o644), ("0644", 0o644), ("0o640", 0o640), (644, 0o644)],
)
def test_parse_mode(given: str | int | None, mode: int) -> None:
    assert kubeconfig.parse_mode(given) == mode


@pytest.mark.parametrize("given", ["rw", "999", "7777"])
def test_parse_mode_rejects(given: str) -> None:
    with pytest.raises(ValueError, match="write-kubeconfig-mode"):
        kubeconfig.parse_mode(given)


def test_admin_kubeconfig_embeds_ca_and_admin_cert(data_dir: Path, tmp_path: Path) -> None:
    target = kubeconfig.write_admin(data_dir, path=tmp_path / "etc" / "k3s.yaml", port=6443)
    config = kubeconfig.load(target)
    assert config["current-context"] == "default"
    assert config["contexts"] == [{"name": "default", "context": {"cluster": "default", "user": "default"}}]
    cluster = config["clusters"][0]["cluster"]
    assert cluster["server"] == "https://127.0.0.1:6443"
    files = pki.TlsFiles(pki.tls_dir(data_dir))
    assert base64.b64decode(cluster["certificate-authority-data"]) == files.crt("server-ca").read_bytes()
    user = config["users"][0]["user"]
    cert = x509.load_pem_x509_certificates(base64.b64decode(user["client-certificate-data"]))[0]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:admin"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    assert base64.b64decode(user["client-key-data"]) == files.key("client-admin").read_bytes()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_admin_kubeconfig_mode_and_rewrite(data_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "k3s.yaml"
    kubeconfig.write_admin(data_dir, path=target, mode=kubeconfig.parse_mode("644"))
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    kubeconfig.write_admin(data_dir, path=target, mode=0o600)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    pki.rotate(data_dir, services=["admin"])
    kubeconfig.write_admin(data_dir, path=target, mode=0o600)
    user = kubeconfig.load(target)["users"][0]["user"]
    assert (
        base64.b64decode(user["client-key-data"])
        == pki.TlsFiles(pki.tls_dir(data_dir)).key("client-admin").read_bytes()
    )


def test_ipv6_server_url() -> None:
    assert kubeconfig.server_url("::1", 6443) == "https://[::1]:6443"
    assert kubeconfig.server_url("example.com", 443) == "https://example.com:443"


def test_component_kubeconfigs_point_at_tls_files(data_dir: Path) -> None:
    written = kubeconfig.write_components(data_dir, port=6443)
    assert set(written) >= {"admin", "controller", "scheduler", "supervisor", "api-server"}
    tls = pki.tls_dir(data_dir)
    config = kubeconfig.load(written["scheduler"])
    assert written["scheduler"] == data_dir / "server" / "cred" / "scheduler.kubeconfig"
    assert config["clusters"][0]["cluster"] == {
        "certificate-authority": str(tls / "server-ca.crt"),
        "server": "https://127.0.0.1:6443",
    }
    assert config["users"][0]["user"] == {
        "client-certificate": str(tls / "client-scheduler.crt"),
        "client-key": str(tls / "client-scheduler.key"),
    }
    for path in written.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        user = kubeconfig.load(path)["users"][0]["user"]
        assert Path(user["client-certificate"]).exists() and Path(user["client-key"]).exists()
    assert kubeconfig.component_path(data_dir, "controller") == written["controller"]
