"""Several servers on one PostgreSQL or MariaDB datastore, started as users start them.

Each server is ``python -m supervisor start --profile server`` with its own data dir, loopback
ports and the same ``--datastore-endpoint`` and ``--token`` (no node of its own, short leader
election times). One test per database runs the whole story, because starting servers is the
expensive part: the second server joins with the first one's CAs; a third with a wrong token or
another cluster CIDR is refused with exit code 2 and writes nothing; both servers' NATS route with
TLS, and a watch through one server sees writes made through the other (latency printed: the change
notices cross the TLS routes); the server leading the scheduler and the
controllers is killed with SIGKILL (with every child) while writes go through both, the survivor
keeps serving, takes over both leases, and holds every write that was acknowledged; an agent that
joined through the killed server fails over to the survivor (its node Lease is renewed through it).
The times to each takeover are printed.

The ``kubernetes`` Endpoints reconciler is tested in process, on the in-memory store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.apiserver import builtin, context, endpoints_reconciler, registry, storage
from services.kine import endpoint
from services.kine import settings as kine_settings
from supervisor import cluster_join, config, pki
from tests import conftest as shared
from tests.e2e import conftest as e2e
from tests.e2e.apiserver_fixtures import SUPERVISOR_COMMAND, SupervisorCluster

TOKEN = "ha-test-token"
LATENCY_SAMPLES = 100  # writes timed through A and seen through B (enough for a p99)
LEASE_ARGS = (
    "leader-elect-lease-duration=3s",
    "leader-elect-renew-deadline=2s",
    "leader-elect-retry-period=0.5s",
)
CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
FAILOVER_DEADLINE = 60.0  # seconds for the survivor to take over a lease (it expires after 3 s)
DATABASES = {"postgres": (shared.POSTGRES, "PostgreSQL"), "mysql": (shared.MYSQL, "MariaDB")}


def server_args(datastore: str, *extra: str) -> tuple[str, ...]:
    args = ["--datastore-endpoint", datastore, "--token", TOKEN, "--disable-agent"]
    for arg in LEASE_ARGS:
        args += ["--kube-scheduler-arg", arg, "--kube-controller-manager-arg", arg]
    return (*args, *extra)


@contextlib.contextmanager
def database(scheme: str) -> Iterator[str]:
    address, what = DATABASES[scheme]
    shared.require(address, what)
    name = shared.unique_name("ha_test")
    try:
        yield shared.endpoint_for(scheme, name)  # kine creates the database
    finally:
        asyncio.run(shared.drop_database(scheme, name))


@contextlib.contextmanager
def servers(base: Path, datastore: str, names: tuple[str, ...]) -> Iterator[dict[str, SupervisorCluster]]:
    started: dict[str, SupervisorCluster] = {}
    try:
        for name in names:  # one after the other: the first one creates the cluster
            cluster = SupervisorCluster(
                kind="server",
                data_dir=base / name,
                kubeconfig=base / name / "kubeconfig.yaml",
                log_path=base / f"{name}.log",
                extra_args=server_args(datastore),
            )
            started[name] = cluster
            cluster.start()
        yield started
    finally:
        for cluster in started.values():
            cluster.stop()
        for cluster in started.values():
            cluster.print_log()


def refused(base: Path, datastore: str, *extra: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run a server that must be refused at start; its data dir is returned to check it stayed empty."""
    data_dir = base / f"refused-{len(list(base.glob('refused-*')))}"
    command = [
        *SUPERVISOR_COMMAND, "--config", "", "--data-dir", str(data_dir),
        "--https-listen-port", str(e2e.free_port()), "--bind-address", "127.0.0.1",
        "--datastore-endpoint", datastore, "--disable-agent", *extra,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=e2e.child_env())
    return done, data_dir


def kill_server(cluster: SupervisorCluster) -> None:
    """SIGKILL the supervisor and every process under it at once: a machine that died."""
    assert cluster.process is not None
    doomed = [cluster.process.pid, *descendants(cluster.process.pid)]
    for pid in doomed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    cluster.process.wait()


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rpartition(")")[2].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


# -- the story, on each database ------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["postgres", "mysql"])
def test_two_servers_share_one_cluster_and_survive_losing_one(tmp_path: Path, scheme: str) -> None:
    with database(scheme) as datastore, servers(tmp_path, datastore, ("a", "b")) as running:
        a, b = running["a"], running["b"]
        for stem in ("server-ca", "client-ca", "request-header-ca"):
            assert a.tls.crt(stem).read_bytes() == b.tls.crt(stem).read_bytes()
        assert a.tls.service_key.read_bytes() == b.tls.service_key.read_bytes()
        for cluster in (a, b):
            assert_routes_use_tls(cluster)
        check_refusals(tmp_path, datastore)
        check_watch_latency(writer=a, watcher=b, label=scheme)
        check_failover(running)


def assert_routes_use_tls(cluster: SupervisorCluster) -> None:
    """The server's nats.conf routes with TLS: its route certificate, peers checked against the server CA."""
    conf = (cluster.data_dir / "server" / "nats" / "nats.conf").read_text()
    routes = conf[conf.index("cluster {") :]
    assert f'cert_file: "{cluster.tls.crt(pki.NATS_ROUTE)}"' in routes
    assert f'ca_file: "{cluster.tls.crt(pki.SERVER_CA)}"' in routes
    assert "verify: true" in routes


def check_refusals(base: Path, datastore: str) -> None:
    done, data_dir = refused(base, datastore, "--token", "not-the-token")
    assert done.returncode == 2, done.stderr
    assert "another token" in done.stderr and "--token" in done.stderr
    assert not list((data_dir / "server").rglob("*.crt")), "a refused server must write nothing"
    done, data_dir = refused(base, datastore, "--token", TOKEN, "--cluster-cidr", "10.99.0.0/16")
    assert done.returncode == 2, done.stderr
    assert "cluster-cidr (cluster: 10.42.0.0/16, this server: 10.99.0.0/16)" in done.stderr
    assert not list((data_dir / "server").rglob("*.crt"))


def check_watch_latency(*, writer: SupervisorCluster, watcher: SupervisorCluster, label: str) -> None:
    """Write through one server, watch through the other; print how long each event took."""
    with writer.http(writer.admin()) as write, watcher.http(watcher.admin()) as watch:
        rv = watch.get(CONFIGMAPS).json()["metadata"]["resourceVersion"]
        seen: dict[str, float] = {}
        arrived = threading.Condition()

        def read_events() -> None:
            query = {"watch": "1", "resourceVersion": rv, "timeoutSeconds": "30"}
            with watch.stream("GET", CONFIGMAPS, params=query, timeout=40) as response:
                for line in response.iter_lines():
                    name = httpx.Response(200, content=line).json()["object"]["metadata"]["name"]
                    with arrived:
                        seen[name] = time.monotonic()
                        arrived.notify_all()
                    if name == "latency-last":
                        return

        reader = threading.Thread(target=read_events, name="watch through the other server", daemon=True)
        reader.start()
        latencies = []
        names = [f"latency-{i}" for i in range(LATENCY_SAMPLES - 1)] + ["latency-last"]
        for name in names:
            sent = time.monotonic()
            created = write.post(CONFIGMAPS, json={"metadata": {"name": name}, "data": {"k": "v"}})
            assert created.status_code == 201, created.text
            with arrived:
                assert arrived.wait_for(lambda name=name: name in seen, timeout=30), f"{name} never seen"
            latencies.append((seen[name] - sent) * 1000)
        reader.join(30)
    ranked = sorted(latencies)
    print(
        f"cross-server watch latency on {label} over {len(ranked)} writes (write through A -> event through B, "
        f"ms): p50 {statistics.median(ranked):.1f}, p99 {ranked[max(0, round(0.99 * len(ranked)) - 1)]:.1f}, "
        f"max {ranked[-1]:.1f}"
    )


def check_failover(running: dict[str, SupervisorCluster]) -> None:
    """Kill the leader's server under writes; the other takes over and lost no acknowledged write."""
    holders = {
        lease: lease_holder(running["b"], lease) for lease in ("kube-scheduler", "kube-controller-manager")
    }
    leader_name = leads(running, holders["kube-scheduler"], "kube-scheduler")
    survivor_name = "b" if leader_name == "a" else "a"
    leader, survivor = running[leader_name], running[survivor_name]
    acknowledged: list[str] = []
    stop = threading.Event()

    def write_load() -> None:
        clients = [leader.http(leader.admin()), survivor.http(survivor.admin())]
        for number in range(100_000):
            if stop.is_set():
                break
            client = clients[number % 2]
            name = f"load-{number}"
            with contextlib.suppress(httpx.HTTPError):
                response = client.post(CONFIGMAPS, json={"metadata": {"name": name}}, timeout=5)
                if response.status_code == 201:
                    acknowledged.append(name)
        for client in clients:
            client.close()

    agent = start_agent(leader, survivor)
    writer = threading.Thread(target=write_load, name="write load", daemon=True)
    try:
        writer.start()
        time.sleep(1.0)
        kill_server(leader)
        killed, killed_wall, killed_at = time.monotonic(), time.time(), len(acknowledged)
        moved = {}
        for lease, before in holders.items():
            after = wait_for_new_holder(survivor, lease, before)
            assert leads(running, after, lease) == survivor_name
            moved[lease] = time.monotonic() - killed
        reconnected = wait_for_node_lease_renewal(survivor, AGENT_NODE, after=killed_wall) - killed
        print(f"failover: leases moved after {moved['kube-scheduler']:.1f} s (scheduler), "
              f"{moved['kube-controller-manager']:.1f} s (controllers) with a 3 s lease; "
              f"the agent renewed its node lease through the survivor {reconnected:.1f} s after the kill")  # fmt: skip
    finally:
        stop.set()
        agent.terminate()
        agent.wait(15)
    writer.join(30)
    assert len(acknowledged) > killed_at, "writes through the survivor must go on after the kill"
    with survivor.http(survivor.admin()) as client:
        stored = {item["metadata"]["name"] for item in client.get(CONFIGMAPS).json()["items"]}
    missing = [name for name in acknowledged if name not in stored]
    assert not missing, f"acknowledged writes lost: {missing[:10]}"
    print(f"failover: {len(acknowledged)} acknowledged writes, all present through the survivor")


AGENT_NODE = "ha-agent"


def start_agent(server: SupervisorCluster, other: SupervisorCluster) -> subprocess.Popen[bytes]:
    """An agent joined to ``server``; it learns ``other`` from the kubernetes Endpoints at join."""
    command = [
        *SUPERVISOR_COMMAND[:-1], "run", "agent", "--config", "", "--data-dir", str(server.data_dir.parent / "agent"),
        "--server", server.url, "--token", TOKEN, "--node-name", AGENT_NODE,
    ]  # fmt: skip
    with server.log_path.with_name("agent.log").open("ab") as log:  # the child keeps its own descriptor
        agent = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=e2e.child_env())
    try:
        wait_for_node_lease_renewal(other, AGENT_NODE, after=0)
        balancer = server.data_dir.parent / "agent" / "agent" / "etc" / "k3s-agent-load-balancer.json"
        deadline = time.monotonic() + FAILOVER_DEADLINE
        while time.monotonic() < deadline and f":{other.port}" not in (balancer.read_text() if balancer.exists() else ""):
            time.sleep(0.2)
        assert f":{other.port}" in balancer.read_text(), "the agent did not learn the second server"
    except BaseException:
        agent.kill()  # the caller never gets it to stop: do not leave it running
        agent.wait()
        raise
    return agent


def wait_for_node_lease_renewal(cluster: SupervisorCluster, node: str, *, after: float) -> float:
    """Wait until the node's Lease was renewed after unix time ``after``; returns monotonic now."""
    deadline = time.monotonic() + FAILOVER_DEADLINE
    path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}"
    with cluster.http(cluster.admin()) as client:
        while time.monotonic() < deadline:
            response = client.get(path)
            renewed = response.json().get("spec", {}).get("renewTime", "") if response.status_code == 200 else ""
            if renewed and _unix(renewed) > after:
                return time.monotonic()
            time.sleep(0.2)
    raise AssertionError(f"the lease of node {node} was not renewed through the surviving server")


def _unix(stamp: str) -> float:
    import datetime

    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def lease_holder(cluster: SupervisorCluster, name: str) -> str:
    deadline = time.monotonic() + FAILOVER_DEADLINE
    with cluster.http(cluster.admin()) as client:
        while time.monotonic() < deadline:
            response = client.get(f"/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{name}")
            holder = (
                response.json().get("spec", {}).get("holderIdentity") if response.status_code == 200 else ""
            )
            if holder:
                return str(holder)
            time.sleep(0.2)
    raise AssertionError(f"no holder of lease {name}")


def wait_for_new_holder(cluster: SupervisorCluster, name: str, before: str) -> str:
    deadline = time.monotonic() + FAILOVER_DEADLINE
    while time.monotonic() < deadline:
        holder = lease_holder(cluster, name)
        if holder != before:
            return holder
        time.sleep(0.2)
    raise AssertionError(f"lease {name} still held by the dead server's {before}")


def leads(running: dict[str, SupervisorCluster], holder: str, lease: str) -> str:
    """Which server runs the component whose identity holds the lease (it logs taking it)."""
    needle = f"kube-system/{lease}: {holder} is the leader"
    deadline = time.monotonic() + FAILOVER_DEADLINE
    found: list[str] = []
    while time.monotonic() < deadline:  # the line may still be on its way through the supervisor
        found = [name for name, cluster in running.items() if needle in cluster.log_tail(10_000_000)]
        if found:
            break
        time.sleep(0.2)
    assert len(found) == 1, f"{holder} found leading in {found}"
    return found[0]


# -- the kubernetes endpoints, in process ------------------------------------------------------------


@contextlib.asynccontextmanager
async def memory_api(data_dir: Path) -> Any:
    backend = await endpoint.open_backend(
        kine_settings.KineSettings(data_dir=data_dir, datastore_endpoint="memory://")
    )
    await backend.start()
    try:
        yield context.Api(
            registry_=registry.Registry(builtin.builtin_resources()),
            store=storage.ObjectStore(backend),
            settings=None,
            authenticator=None,  # type: ignore[arg-type]
            authorizer=None,  # type: ignore[arg-type]
        )
    finally:
        await backend.stop()


async def subsets(api: context.Api) -> list[tuple[str, int]]:
    stored = await api.store.get("/registry/services/endpoints/default/kubernetes")
    assert stored is not None
    return sorted(
        (address["ip"], port["port"])
        for subset in stored.obj.get("subsets", [])
        for address in subset["addresses"]
        for port in subset["ports"]
    )


async def test_kubernetes_endpoints_list_every_live_api_server(tmp_path: Path) -> None:
    async with memory_api(tmp_path) as api:
        first = endpoints_reconciler.Reconciler(api, address="10.0.0.1", port=6443, ttl=1, interval=0.1)
        second = endpoints_reconciler.Reconciler(api, address="10.0.0.2", port=6443, ttl=1, interval=0.1)
        await first.start()
        await second.start()
        try:
            await first.reconcile()
            assert await subsets(api) == [("10.0.0.1", 6443), ("10.0.0.2", 6443)]
            # A server that died: its lease is not renewed, the store drops it, the others notice.
            lease = await api.store.backend.lease_grant(1)
            await api.store.backend.put(
                b"/registry/masterleases/10.0.0.3:7443", b'{"ip": "10.0.0.3", "port": 7443}', lease=lease.id
            )
            await first.reconcile()
            assert ("10.0.0.3", 7443) in await subsets(api)
            deadline = time.monotonic() + 10
            while ("10.0.0.3", 7443) in await subsets(api):
                assert time.monotonic() < deadline, "the dead server stayed listed"
                await asyncio.sleep(0.1)
            await second.stop()  # a graceful stop takes the server out at once
            assert await subsets(api) == [("10.0.0.1", 6443)]
        finally:
            await first.stop()
            await second.stop()


# -- two first servers at once ----------------------------------------------------------------------------


async def test_two_first_servers_racing_end_with_one_set_of_cas(tmp_path: Path) -> None:
    shared.require(shared.POSTGRES, "PostgreSQL")
    name = shared.unique_name("ha_race")
    datastore = shared.endpoint_for("postgres", name)
    # Created first: kine does not yet tolerate two processes creating one database at once.
    import asyncpg

    admin = await asyncpg.connect(f"postgres://postgres@{shared.POSTGRES[0]}:{shared.POSTGRES[1]}/postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        both = [
            config.load(
                {"data-dir": str(tmp_path / node), "datastore-endpoint": datastore, "token": TOKEN},
                environ={},
            )
            for node in ("a", "b")
        ]
        await asyncio.gather(*(cluster_join.prepare(settings) for settings in both))
        a, b = (pki.TlsFiles(pki.tls_dir(settings.supervisor.data_dir)) for settings in both)
        for stem in pki.CAS:
            assert a.crt(stem).read_bytes() == b.crt(stem).read_bytes()
        # The loser's leaves were re-issued under the winner's CA.
        ca = pki.load(b, pki.SERVER_CA).cert
        serving = pki.load(b, pki.SERVING_APISERVER).cert
        assert serving.issuer == ca.subject
        serving.verify_directly_issued_by(ca)
        routes = [json.loads(cluster_join.routes_path(s.supervisor.data_dir).read_text()) for s in both]
        assert routes[0]["password"] == routes[1]["password"]
        # Each route record sits on a lease of its own, which the running server will keep alive.
        store = await endpoint.open_backend(both[0].kine)
        await store.start()
        try:
            prefix = cluster_join.ROUTES_PREFIX
            leases = {kv.key: kv.lease for kv in (await store.range(prefix, prefix[:-1] + b"0")).kvs}
            assert leases == {cluster_join.route_key(route["id"]): route["lease"] for route in routes}
            for lease in leases.values():
                assert (await store.lease_time_to_live(lease)).granted_ttl == cluster_join.ROUTE_TTL
        finally:
            await store.stop()
    finally:
        await shared.drop_database("postgres", name)
