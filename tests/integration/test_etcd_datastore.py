"""A real etcd as the datastore (issue 6): ``--datastore-endpoint http(s)://...``, no kine.

The full kubectl set runs against a server on a TLS etcd in ``tests/e2e/test_kubectl.py`` (cluster
kind ``etcd``). Here: the plain-http endpoint with the server and edge profiles, ``run apiserver``
alone on the TLS endpoint, a comma-separated endpoint list whose first member is down, and the
configuration rules. What the API server writes is read back with etcdctl from etcd itself, which
shows that no kine sits in between. Debian's etcd runs on free loopback ports and is stopped in
``finally``; without it these tests skip, saying so.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.kine import client
from supervisor import cli, config
from tests.e2e import apiserver_fixtures as fixtures
from tests.e2e import conftest as e2e

QUIET = ("--disable-agent", "--disable-controller-manager", "--disable-scheduler")


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[fixtures.EtcdServer]:
    """One plain-http etcd shared by this module's tests (each uses names of its own)."""
    with fixtures.running_etcd(tmp_path_factory.mktemp("etcd"), tls=False) as server:
        yield server


def etcdctl(etcd: fixtures.EtcdServer, *args: str) -> str:
    e2e.require_binary(e2e.ETCDCTL)
    argv = [str(e2e.ETCDCTL), f"--endpoints={etcd.url}", "--command-timeout=30s"]
    if etcd.tls is not None:
        tls = etcd.tls
        argv += [f"--cacert={tls.ca}", f"--cert={tls.client_cert}", f"--key={tls.client_key}"]
    result = subprocess.run(
        [*argv, *args], capture_output=True, text=True, env=e2e.child_env() | {"ETCDCTL_API": "3"}, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def configmap_round_trip(cluster: fixtures.Cluster, etcd: fixtures.EtcdServer, name: str) -> None:
    """Create a ConfigMap through the API and find it in etcd under kube-apiserver's key."""
    with cluster.http(cluster.admin()) as http:
        made = http.post(
            "/api/v1/namespaces/default/configmaps", json={"metadata": {"name": name}, "data": {"a": "b"}}
        )
        assert made.status_code == 201, made.text
        listed = http.get("/api/v1/namespaces/default/configmaps")
        assert name in [item["metadata"]["name"] for item in listed.json()["items"]]
    key = f"/registry/configmaps/default/{name}"
    assert etcdctl(etcd, "get", key, "--keys-only").split() == [key]
    revision = etcdctl(etcd, "get", key, "-w", "fields")
    assert f'"ModRevision" : {made.json()["metadata"]["resourceVersion"]}' in revision


def assert_no_kine(cluster: fixtures.Cluster) -> None:
    server = cluster.data_dir / "server"
    assert not (server / "kine.sock").exists() and not (server / "db" / "state.db").exists()


@pytest.mark.parametrize("profile", ["server", "edge"])
def test_start_on_a_plain_http_etcd(profile: str, etcd: fixtures.EtcdServer, tmp_path: Path) -> None:
    args = (*etcd.supervisor_args(), *QUIET)
    with fixtures.running_cluster(profile, tmp_path, extra_args=args) as cluster:
        configmap_round_trip(cluster, etcd, f"via-{profile}")
        assert_no_kine(cluster)
        if profile == "server":
            assert "kine started" not in cluster.log_tail(200_000)


class ApiServerAlone(fixtures.SupervisorCluster):
    """``k3s-supervisor run apiserver`` with the same datastore flags as ``start``."""

    def command(self) -> list[str]:
        argv = super().command()
        del argv[argv.index("--profile") : argv.index("--profile") + 2]
        argv[argv.index("start") : argv.index("start") + 1] = ["run", "apiserver"]
        return argv


def test_run_apiserver_on_a_tls_etcd_with_client_certificates(tmp_path: Path) -> None:
    with fixtures.running_etcd(tmp_path, tls=True) as etcd:
        assert etcd.url.startswith("https://")
        cluster = ApiServerAlone(
            kind="apiserver",
            data_dir=tmp_path / "data",
            kubeconfig=tmp_path / "data" / "kubeconfig.yaml",
            log_path=tmp_path / "apiserver.log",
            extra_args=etcd.supervisor_args(),
        )
        try:
            cluster.start()
            configmap_round_trip(cluster, etcd, "via-run-apiserver")
            assert_no_kine(cluster)
        finally:
            cluster.stop()
            cluster.print_log()


async def test_endpoint_list_skips_a_member_that_is_down(etcd: fixtures.EtcdServer) -> None:
    dead = f"http://127.0.0.1:{e2e.free_port()}"
    async with client.GrpcBackend(f"{dead},{etcd.url}", connect_timeout=20) as backend:
        put = await backend.put(b"/h3/list", b"yes")
        assert (await backend.range(b"/h3/list")).kvs[0].mod_revision == put.revision


def test_endpoint_list_forms() -> None:
    assert client.parse_endpoints("https://10.0.0.1:2379, https://10.0.0.2:2379") == (
        ["10.0.0.1:2379", "10.0.0.2:2379"],
        True,
    )
    assert client.parse_endpoints("http://etcd:2379") == (["etcd:2379"], False)
    for bad in ("http://a:1,https://b:1", "unix:/x.sock,http://a:1", ","):
        with pytest.raises(ValueError):
            client.parse_endpoints(bad)


# -- configuration -----------------------------------------------------------------------------------------


def load(tmp_path: Path, *argv: str) -> config.Settings:
    command = ["start", "-d", str(tmp_path)] if argv[:1] != ("run",) else [*argv[:2], "-d", str(tmp_path)]
    rest = argv if command[0] == "start" else argv[2:]
    flags = config.flags_given(vars(cli.build_parser().parse_args([*command, *rest])))
    return config.load(flags, environ={"K3S_CONFIG_FILE": ""})


def test_start_runs_no_kine_and_hands_the_endpoint_to_the_apiserver(tmp_path: Path) -> None:
    endpoint = "https://10.0.0.1:2379,https://10.0.0.2:2379"
    files = ("--datastore-cafile", "/etc/etcd/ca.crt", "--datastore-certfile", "/etc/etcd/c.crt")
    settings = load(
        tmp_path, "--datastore-endpoint", endpoint, *files, "--datastore-keyfile", "/etc/etcd/c.key", *QUIET
    )
    assert settings.apiserver.store_address == endpoint
    assert settings.apiserver.store_cafile == Path("/etc/etcd/ca.crt")
    children = cli.server_children(settings)
    assert [child.name for child in children] == ["nats", "apiserver"]
    api = children[1]
    assert api.env is not None and api.env["K3S_DATASTORE_ENDPOINT"] == endpoint
    assert endpoint not in api.argv  # endpoints may carry credentials: environment only
    assert api.argv[api.argv.index("--datastore-keyfile") + 1] == "/etc/etcd/c.key"


def test_run_apiserver_takes_the_datastore_flags(tmp_path: Path) -> None:
    settings = load(tmp_path, "run", "apiserver", "--datastore-endpoint", "http://127.0.0.1:2379")
    assert settings.apiserver.store_address == "http://127.0.0.1:2379"
    # A SQL endpoint is kine's business: the API server still dials kine.
    assert load(tmp_path, "--datastore-endpoint", "postgres://db/k3s").apiserver.store_address == ""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--datastore-endpoint", "http://a:2379", "--datastore-cafile", "ca"), "only used with an https://"),
        (("--datastore-cafile", "ca"), "only used with an https://"),
        (("--datastore-endpoint", "https://a:2379,http://b:2379"), "must start with https://"),
        (("--datastore-endpoint", "https://a:2379", "--datastore-certfile", "c"), "go together"),
    ],
)
def test_datastore_tls_misuse_is_refused(tmp_path: Path, argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(config.ConfigError, match=message):
        load(tmp_path, *argv)
