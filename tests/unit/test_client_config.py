"""Client configuration from the kubeconfigs the supervisor writes, from files by hand, and in-cluster."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import yaml

from services.client import config, errors
from supervisor import kubeconfig, pki


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data")
    pki.ensure(path)
    kubeconfig.write_components(path, port=6444)
    return path


def write(path: Path, document: dict) -> Path:
    path.write_text(yaml.safe_dump(document))
    return path


def doc(cluster: dict, user: dict, *, namespace: str = "") -> dict:
    context = {"cluster": "c", "user": "u", **({"namespace": namespace} if namespace else {})}
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "ctx", "context": context}],
        "current-context": "ctx",
    }


@pytest.mark.parametrize("component", ["admin", "scheduler", "controller"])
def test_component_kubeconfigs_name_their_files_by_path(data_dir: Path, component: str) -> None:
    loaded = config.load_kubeconfig(kubeconfig.component_path(data_dir, component))
    assert loaded.server == "https://127.0.0.1:6444"
    assert isinstance(loaded.ssl_context, ssl.SSLContext)
    assert loaded.ssl_context.verify_mode is ssl.CERT_REQUIRED
    assert loaded.bearer() is None
    assert loaded.namespace == "default"


def test_the_admin_kubeconfig_embeds_its_certificates(data_dir: Path, tmp_path: Path) -> None:
    path = kubeconfig.write_admin(data_dir, path=tmp_path / "k3s.yaml", port=6445)
    loaded = config.load_kubeconfig(path)
    assert loaded.server == "https://127.0.0.1:6445"
    assert loaded.ssl_context is not None
    assert loaded.ssl_context.get_ca_certs(), "the embedded CA is trusted"


def test_relative_paths_are_resolved_against_the_kubeconfig(data_dir: Path, tmp_path: Path) -> None:
    tls = data_dir / "server" / "tls"
    (tmp_path / "certs").mkdir()
    for name in ("server-ca.crt", "client-admin.crt", "client-admin.key"):
        (tmp_path / "certs" / name).write_bytes((tls / name).read_bytes())
    path = write(tmp_path / "config", doc(
        {"server": "https://example:6443/", "certificate-authority": "certs/server-ca.crt"},
        {"client-certificate": "certs/client-admin.crt", "client-key": "certs/client-admin.key"},
        namespace="team",
    ))  # fmt: skip
    loaded = config.load_kubeconfig(path)
    assert loaded.server == "https://example:6443"
    assert loaded.namespace == "team"


def test_tokens_fixed_or_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("secret-token\n")
    fixed = config.load_kubeconfig(
        write(tmp_path / "a", doc({"server": "http://127.0.0.1:8080"}, {"token": "abc"}))
    )
    assert fixed.bearer() == "abc" and fixed.ssl_context is None
    insecure = {"server": "https://h:1", "insecure-skip-tls-verify": True}
    from_file = config.load_kubeconfig(write(tmp_path / "b", doc(insecure, {"tokenFile": "token"})))
    assert from_file.bearer() == "secret-token"
    assert from_file.ssl_context is not None and from_file.ssl_context.verify_mode is ssl.CERT_NONE


def test_another_context_can_be_chosen(tmp_path: Path) -> None:
    document = doc({"server": "https://one:1"}, {"token": "t"})
    document["clusters"].append(
        {"name": "c2", "cluster": {"server": "https://two:2", "tls-server-name": "kubernetes"}}
    )
    document["contexts"].append({"name": "other", "context": {"cluster": "c2", "user": "u"}})
    loaded = config.load_kubeconfig(write(tmp_path / "k", document), context="other")
    assert loaded.server == "https://two:2"
    assert loaded.tls_server_name == "kubernetes"


@pytest.mark.parametrize(
    ("cluster", "user", "why"),
    [
        ({"server": ""}, {}, "no server"),
        ({"server": "https://h:1", "certificate-authority": "/nonexistent/ca.crt"}, {}, "does not exist"),
        ({"server": "https://h:1", "certificate-authority-data": "not base64!"}, {}, "base64"),
        ({"server": "https://h:1"}, {"client-certificate-data": "eA=="}, "both"),
        ({"server": "https://h:1"}, {"client-certificate": "/x.crt", "client-key": "/x.key"}, "cannot read"),
        ({"server": "https://h:1"}, {"exec": {"command": "aws"}}, "not supported"),
    ],
)
def test_unusable_kubeconfigs_are_config_errors(tmp_path: Path, cluster: dict, user: dict, why: str) -> None:
    with pytest.raises(errors.ConfigError, match=why):
        config.load_kubeconfig(write(tmp_path / "k", doc(cluster, user)))


def test_a_missing_file_or_context_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match="cannot read"):
        config.load_kubeconfig(tmp_path / "missing")
    with pytest.raises(errors.ConfigError, match="no context named 'nope'"):
        config.load_kubeconfig(write(tmp_path / "k", doc({"server": "https://h:1"}, {})), context="nope")
    (tmp_path / "list").write_text("- a\n- b\n")
    with pytest.raises(errors.ConfigError, match="not a kubeconfig"):
        config.load_kubeconfig(tmp_path / "list")


def test_in_cluster_reads_the_service_account(data_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "token").write_text("sa-token")
    (tmp_path / "ca.crt").write_bytes((data_dir / "server" / "tls" / "server-ca.crt").read_bytes())
    (tmp_path / "namespace").write_text("kube-system\n")
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    loaded = config.in_cluster(environ=env, directory=tmp_path)
    assert loaded.server == "https://[fd00::1]:443"
    assert loaded.bearer() == "sa-token"
    assert loaded.namespace == "kube-system"


def test_in_cluster_outside_a_cluster_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match="not in a cluster"):
        config.in_cluster(environ={}, directory=tmp_path)
    with pytest.raises(errors.ConfigError, match="token"):
        config.in_cluster(
            environ={"KUBERNETES_SERVICE_HOST": "h", "KUBERNETES_SERVICE_PORT": "1"}, directory=tmp_path
        )
