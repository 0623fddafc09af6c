"""Service ClusterIP and NodePort allocation through real API servers, over HTTPS, in this process.

Each test starts ``ApiServer`` (as ``tests/e2e/apiserver_fixtures.py`` does in a thread, but on
the test's own event loop, so the test can reach the server's store and run ``repair``) with
certificates in a fresh data dir, on the in-memory kine backend. The two-server tests run two
API servers on one kine (in-memory or SQLite) and on two kines over one PostgreSQL or MariaDB
database, as K3s servers on an external datastore do. Everything stops with its ``async with``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.apiserver import allocators, server, settings, storage
from services.kine import endpoint, types
from services.kine import settings as kine_settings
from supervisor import pki
from tests import conftest as shared

SERVICE_CIDR = ipaddress.ip_network("10.43.0.0/16")
SERVICES = "/api/v1/namespaces/default/services"


@dataclasses.dataclass
class Running:
    """One API server and an admin HTTPS client for it."""

    server: server.ApiServer
    http: httpx.AsyncClient

    @property
    def api(self) -> Any:
        return self.server.api

    async def create(self, name: str, *, query: str = "", **spec: Any) -> httpx.Response:
        spec.setdefault("ports", [{"port": 80}])
        body = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}
        return await self.http.post(SERVICES + query, json=body)

    async def created(self, name: str, **spec: Any) -> dict[str, Any]:
        response = await self.create(name, **spec)
        assert response.status_code == 201, response.text
        return response.json()

    async def keys(self, prefix: str) -> list[str]:
        result = await self.server.api.store.backend.range(
            prefix.encode(), storage.prefix_end(prefix), keys_only=True
        )
        return [kv.key.decode().removeprefix(prefix) for kv in result.kvs]


class CountingBackend:
    """A backend that counts the reads and transactions touching the allocation keys."""

    def __init__(self, inner: types.Backend) -> None:
        self.inner = inner
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _count(self, key: bytes) -> None:
        if key.startswith(b"/registry/ranges/"):
            self.calls += 1

    async def range(self, key: bytes, *args: Any, **kwargs: Any) -> Any:
        self._count(key)
        return await self.inner.range(key, *args, **kwargs)

    async def txn(self, txn: types.Txn) -> Any:
        for compare in txn.compare:
            self._count(compare.key)
        return await self.inner.txn(txn)


def admin_context(data_dir: Path) -> ssl.SSLContext:
    files = pki.TlsFiles(pki.tls_dir(data_dir))
    context = ssl.create_default_context(cafile=files.crt(pki.SERVER_CA))
    context.load_cert_chain(files.crt(pki.CLIENT_ADMIN), files.key(pki.CLIENT_ADMIN))
    return context


@contextlib.asynccontextmanager
async def running(data_dir: Path, backend: Any, **options: Any) -> AsyncIterator[Running]:
    config = settings.ApiServerSettings(
        data_dir=data_dir, bind_address="127.0.0.1", https_listen_port=0, **options
    )
    async with server.ApiServer(config, backend=backend) as api_server:
        async with httpx.AsyncClient(
            base_url=f"https://127.0.0.1:{api_server.port}", verify=admin_context(data_dir), timeout=30.0
        ) as http:
            yield Running(api_server, http)


@contextlib.asynccontextmanager
async def kine(data_dir: Path, datastore: str = "memory://") -> AsyncIterator[Any]:
    backend = await endpoint.open_backend(
        # Two kines on one database see each other's writes by polling (no bus here): poll often.
        kine_settings.KineSettings(
            data_dir=data_dir, datastore_endpoint=datastore, compact_interval=0, poll_interval=0.05
        )
    )
    await backend.start()
    try:
        yield backend
    finally:
        await backend.stop()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    pki.ensure(tmp_path)
    return tmp_path


@pytest.fixture
async def cluster(data_dir: Path) -> AsyncIterator[Running]:
    async with kine(data_dir) as backend, running(data_dir, backend) as one:
        yield one


def assert_invalid(response: httpx.Response, message: str) -> None:
    assert response.status_code == 422, response.text
    status = response.json()
    assert status["reason"] == "Invalid"
    assert message in status["message"], status["message"]


# -- cluster IPs -----------------------------------------------------------------------------------------


async def test_cluster_ips_are_in_range_distinct_and_never_the_first(cluster: Running) -> None:
    kubernetes = (await cluster.http.get(SERVICES + "/kubernetes")).json()
    assert kubernetes["spec"]["clusterIP"] == "10.43.0.1"
    responses = await asyncio.gather(*(cluster.create(f"web-{i}") for i in range(40)))
    ips = []
    for response in responses:
        assert response.status_code == 201, response.text
        spec = response.json()["spec"]
        assert spec["clusterIPs"] == [spec["clusterIP"]]
        ips.append(ipaddress.ip_address(spec["clusterIP"]))
    assert len(set(ips)) == len(ips)
    reserved = {
        SERVICE_CIDR.network_address,
        SERVICE_CIDR.network_address + 1,
        SERVICE_CIDR.broadcast_address,
    }
    assert all(ip in SERVICE_CIDR and ip not in reserved for ip in ips)
    # Random picks stay above the static band (10.43.0.1-10.43.1.0), kept for explicit IPs such as DNS.
    assert all(ip > ipaddress.ip_address("10.43.1.0") for ip in ips)
    assert sorted(await cluster.keys(allocators.IP_PREFIX)) == sorted(["10.43.0.1", *map(str, ips)])


async def test_explicit_cluster_ip_must_be_free_and_in_range(cluster: Running) -> None:
    first = await cluster.created("dns", clusterIP="10.43.0.10")
    assert first["spec"]["clusterIP"] == "10.43.0.10" and first["spec"]["clusterIPs"] == ["10.43.0.10"]
    assert_invalid(
        await cluster.create("dns-again", clusterIP="10.43.0.10"),
        'spec.clusterIPs: Invalid value: []string{"10.43.0.10"}: failed to allocate IP 10.43.0.10: '
        "provided IP is already allocated",
    )
    assert_invalid(await cluster.create("taken", clusterIP="10.43.0.1"), "provided IP is already allocated")
    # What vcluster and cluster-api send to learn the service CIDR from the message.
    response = await cluster.create("probe", clusterIP="0.0.0.0")
    assert_invalid(response, "the provided IP (0.0.0.0) is not in the valid range")
    assert response.json()["message"].endswith("The range of valid IPs is 10.43.0.0/16")
    for outside in ("10.0.0.5", "10.43.255.255", "10.43.0.0", "fd00::5"):
        assert_invalid(await cluster.create("outside", clusterIP=outside), "is not in the valid range")
    assert_invalid(await cluster.create("garbage", clusterIP="not-an-ip"), "must be a valid IP address")
    assert_invalid(
        await cluster.create("mismatch", clusterIP="10.43.0.11", clusterIPs=["10.43.0.12"]),
        "must match `clusterIP`",
    )


async def test_delete_frees_the_ip(cluster: Running) -> None:
    await cluster.created("a", clusterIP="10.43.9.9")
    assert (await cluster.http.delete(SERVICES + "/a")).status_code == 200
    assert "10.43.9.9" not in await cluster.keys(allocators.IP_PREFIX)
    assert (await cluster.created("b", clusterIP="10.43.9.9"))["spec"]["clusterIP"] == "10.43.9.9"


async def test_update_keeps_the_ip_and_refuses_a_change(cluster: Running) -> None:
    created = await cluster.created("keep", type="NodePort")
    ip, node_port = created["spec"]["clusterIP"], created["spec"]["ports"][0]["nodePort"]
    # A replace that omits what was allocated (kubectl replace of the original manifest).
    body = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "keep"},
            "spec": {"type": "NodePort", "ports": [{"port": 80}], "selector": {"app": "x"}}}  # fmt: skip
    response = await cluster.http.put(SERVICES + "/keep", json=body)
    assert response.status_code == 200, response.text
    spec = response.json()["spec"]
    assert (spec["clusterIP"], spec["clusterIPs"], spec["ports"][0]["nodePort"]) == (ip, [ip], node_port)
    assert spec["selector"] == {"app": "x"}
    body["spec"]["clusterIP"] = "10.43.200.200"
    assert_invalid(await cluster.http.put(SERVICES + "/keep", json=body), "spec.clusterIP")
    assert "10.43.200.200" not in await cluster.keys(allocators.IP_PREFIX)
    assert sorted(await cluster.keys(allocators.IP_PREFIX)) == sorted(["10.43.0.1", ip])


async def test_headless_gets_no_ip(cluster: Running) -> None:
    spec = (await cluster.created("headless", clusterIP="None"))["spec"]
    assert (spec["clusterIP"], spec["clusterIPs"]) == ("None", ["None"])
    assert await cluster.keys(allocators.IP_PREFIX) == ["10.43.0.1"]
    patched = await cluster.http.patch(
        SERVICES + "/headless",
        json={"spec": {"selector": {"app": "y"}}},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["spec"]["clusterIP"] == "None"
    assert_invalid(await cluster.create("headless-np", type="NodePort", clusterIP="None"), "'None'")


async def test_external_name_gets_nothing(cluster: Running) -> None:
    spec = (await cluster.created("ext", type="ExternalName", externalName="example.com"))["spec"]
    assert "clusterIP" not in spec and "clusterIPs" not in spec
    assert all("nodePort" not in port for port in spec["ports"])
    assert await cluster.keys(allocators.IP_PREFIX) == ["10.43.0.1"]
    response = await cluster.create(
        "ext-ip", type="ExternalName", externalName="x.org", clusterIP="10.43.3.3"
    )
    assert_invalid(response, "may not be set for ExternalName services")


async def test_type_change_to_external_name_releases_the_ip(cluster: Running) -> None:
    await cluster.created("moving", clusterIP="10.43.4.4")
    patched = await cluster.http.patch(
        SERVICES + "/moving",
        json={"spec": {"type": "ExternalName", "externalName": "example.com"}},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert patched.status_code == 200, patched.text
    assert "clusterIP" not in patched.json()["spec"]
    # Free at once for an explicit request (the mark is checked against the stored Service).
    assert (await cluster.created("next", clusterIP="10.43.4.4"))["spec"]["clusterIP"] == "10.43.4.4"
    # And back: ExternalName -> ClusterIP allocates again.
    back = await cluster.http.patch(
        SERVICES + "/moving",
        json={"spec": {"type": "ClusterIP", "externalName": None}},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert back.status_code == 200, back.text
    assert back.json()["spec"]["clusterIP"] not in ("10.43.4.4", None)


# -- node ports ------------------------------------------------------------------------------------------


async def test_node_ports_are_in_range_and_distinct(cluster: Running) -> None:
    two_ports = [{"name": "http", "port": 80}, {"name": "https", "port": 443}]
    responses = await asyncio.gather(
        *(cluster.create(f"np-{i}", type="NodePort", ports=two_ports) for i in range(20)),
        *(cluster.create(f"lb-{i}", type="LoadBalancer", ports=two_ports) for i in range(5)),
    )
    ports = []
    for response in responses:
        assert response.status_code == 201, response.text
        ports += [p["nodePort"] for p in response.json()["spec"]["ports"]]
    assert len(ports) == 50 and len(set(ports)) == 50
    assert all(30000 <= p <= 32767 for p in ports)
    assert sorted(map(int, await cluster.keys(allocators.PORT_PREFIX))) == sorted(ports)
    local = await cluster.created("local", type="LoadBalancer", externalTrafficPolicy="Local")
    health = local["spec"]["healthCheckNodePort"]
    assert 30000 <= health <= 32767 and health not in ports


async def test_explicit_node_port_must_be_free_and_in_range(cluster: Running) -> None:
    await cluster.created("fixed", type="NodePort", ports=[{"port": 80, "nodePort": 30080}])
    assert_invalid(
        await cluster.create("clash", type="NodePort", ports=[{"port": 80, "nodePort": 30080}]),
        "spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated",
    )
    assert_invalid(
        await cluster.create("far", type="NodePort", ports=[{"port": 80, "nodePort": 40000}]),
        "spec.ports[0].nodePort: Invalid value: 40000: provided port is not in the valid range. "
        "The range of valid ports is 30000-32767",
    )
    assert_invalid(
        await cluster.create("cip", ports=[{"port": 80, "nodePort": 30081}]),
        "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'",
    )
    # A failed create gives back what it claimed before failing: its IP and its first port.
    response = await cluster.create(
        "half", type="NodePort", clusterIP="10.43.5.5",
        ports=[{"name": "a", "port": 80, "nodePort": 30090}, {"name": "b", "port": 81, "nodePort": 30080}],
    )  # fmt: skip
    assert_invalid(
        response, "spec.ports[1].nodePort: Invalid value: 30080: provided port is already allocated"
    )
    assert "10.43.5.5" not in await cluster.keys(allocators.IP_PREFIX)
    assert await cluster.keys(allocators.PORT_PREFIX) == ["30080"]
    # One port number may serve TCP and UDP.
    both = [{"name": "dns", "port": 53, "nodePort": 30053}, {"name": "dns-udp", "port": 53, "protocol": "UDP", "nodePort": 30053}]  # fmt: skip
    await cluster.created("both", type="NodePort", ports=both)


async def test_ports_added_and_removed_on_update(cluster: Running) -> None:
    await cluster.created("grow", type="NodePort", ports=[{"name": "a", "port": 80, "nodePort": 30100}])
    grown = await cluster.http.patch(
        SERVICES + "/grow",
        json={"spec": {"ports": [{"name": "a", "port": 80, "nodePort": 30100}, {"name": "b", "port": 81}]}},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert grown.status_code == 200, grown.text
    added = grown.json()["spec"]["ports"][1]["nodePort"]
    assert 30000 <= added <= 32767 and added != 30100
    shrunk = await cluster.http.patch(
        SERVICES + "/grow",
        json={"spec": {"ports": [{"name": "b", "port": 81, "nodePort": added}]}},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert shrunk.status_code == 200, shrunk.text
    await cluster.created("reuse", type="NodePort", ports=[{"port": 80, "nodePort": 30100}])
    # NodePort -> ClusterIP drops the node ports and frees them.
    to_cluster_ip = await cluster.http.patch(
        SERVICES + "/grow", json={"spec": {"type": "ClusterIP"}},
        headers={"content-type": "application/merge-patch+json"},
    )  # fmt: skip
    assert to_cluster_ip.status_code == 200, to_cluster_ip.text
    assert all("nodePort" not in p for p in to_cluster_ip.json()["spec"]["ports"])
    await cluster.created("reuse-added", type="NodePort", ports=[{"port": 80, "nodePort": added}])


# -- what must not allocate --------------------------------------------------------------------------------


async def test_dry_run_stores_nothing(cluster: Running) -> None:
    response = await cluster.create("dry", query="?dryRun=All", type="NodePort", clusterIP="10.43.6.6")
    assert response.status_code == 201, response.text
    assert response.json()["spec"]["clusterIP"] == "10.43.6.6"
    random_pick = await cluster.create("dry2", query="?dryRun=All", type="NodePort")
    assert ipaddress.ip_address(random_pick.json()["spec"]["clusterIP"]) in SERVICE_CIDR
    assert await cluster.keys(allocators.IP_PREFIX) == ["10.43.0.1"]
    assert await cluster.keys(allocators.PORT_PREFIX) == []
    await cluster.created("real", clusterIP="10.43.6.6")


async def test_failed_creates_claim_nothing(cluster: Running) -> None:
    bad = await cluster.create("bad", clusterIP="10.43.8.8", ports=[{"port": 0}])
    assert bad.status_code == 422, bad.text
    await cluster.created("good", clusterIP="10.43.8.8")
    again = await cluster.create("good", clusterIP="10.43.8.8")
    assert again.status_code == 409 and again.json()["reason"] == "AlreadyExists", again.text
    assert sorted(await cluster.keys(allocators.IP_PREFIX)) == ["10.43.0.1", "10.43.8.8"]


# -- repair ----------------------------------------------------------------------------------------------------


async def test_repair_frees_leaks_and_records_missing_keys(cluster: Running) -> None:
    store = cluster.api.store
    owner = {"namespace": "default", "name": "gone", "uid": "0000"}
    old = {"owner": owner, "allocated": "2020-01-01T00:00:00Z", "releasing": False}
    assert await store.create(allocators.IP_PREFIX + "10.43.77.77", old) is not None
    assert await store.create(allocators.PORT_PREFIX + "31999", old) is not None
    fresh = {**old, "allocated": "2999-01-01T00:00:00Z"}  # a create still in flight
    assert await store.create(allocators.IP_PREFIX + "10.43.77.78", fresh) is not None
    live = await cluster.created("live", type="NodePort")
    ip = live["spec"]["clusterIP"]
    found = await store.get(allocators.IP_PREFIX + ip)
    assert await store.delete(allocators.IP_PREFIX + ip, expected=found.revision) is not None

    result = await allocators.repair(cluster.api)
    assert (result.freed, result.recorded) == (2, 1)
    assert sorted(await cluster.keys(allocators.IP_PREFIX)) == sorted(["10.43.0.1", "10.43.77.78", ip])
    assert await cluster.keys(allocators.PORT_PREFIX) == [str(live["spec"]["ports"][0]["nodePort"])]
    assert_invalid(await cluster.create("clash", clusterIP=ip), "provided IP is already allocated")
    assert (await allocators.repair(cluster.api)).freed == 0


# -- scale and several API servers --------------------------------------------------------------------------------


async def test_allocation_costs_constant_store_calls(data_dir: Path) -> None:
    async with kine(data_dir) as inner:
        counting = CountingBackend(inner)
        async with running(data_dir, counting) as one:
            before = counting.calls
            count = 200
            for start in range(0, count, 50):
                results = await asyncio.gather(
                    *(one.create(f"s-{i}", type="NodePort") for i in range(start, start + 50))
                )
                assert all(r.status_code == 201 for r in results)
            # One create per IP and per node port, plus rare collisions: no listing, nothing O(n).
            assert counting.calls - before <= 2 * count + 20


@contextlib.asynccontextmanager
async def shared_store(data_dir: Path, shape: str) -> AsyncIterator[list[Any]]:
    """Backends for two API servers: one kine (memory, SQLite), or two kines on one SQL database.

    Two kines on one SQLite file is not a shape K3s supports (SQLite is single-server), so the
    several-kine case runs on PostgreSQL and MariaDB, as K3s servers on an external datastore do.
    """
    if shape in ("memory", "sqlite"):
        async with kine(data_dir / "kine", "memory://" if shape == "memory" else "") as backend:
            yield [backend, backend]
        return
    shared.require(shared.POSTGRES if shape == "postgres" else shared.MYSQL, shape)
    name = shared.unique_name("alloc_test")
    database = shared.endpoint_for(shape, name)
    try:
        async with (
            kine(data_dir / "kine-0", database) as first,
            kine(data_dir / "kine-1", database) as second,
        ):
            yield [first, second]
    finally:
        await shared.drop_database(shape, name)


@pytest.mark.parametrize(
    "shape",
    [
        "memory",
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ],
)
async def test_two_api_servers_never_hand_out_one_value_twice(data_dir: Path, shape: str) -> None:
    async with contextlib.AsyncExitStack() as stack:
        backends = await stack.enter_async_context(shared_store(data_dir, shape))
        # Narrow ranges make collisions (and the listing fallback) likely: 100 services on 253 IPs
        # (237 above the static band) and 140 node ports.
        narrow = {"service_cidr": "10.43.0.0/24", "service_node_port_range": "30000-30139"}
        servers = [await stack.enter_async_context(running(data_dir, b, **narrow)) for b in backends]
        async with asyncio.timeout(120):  # a store that stalls fails the test instead of hanging the run
            results = await asyncio.gather(
                *(servers[i % 2].create(f"svc-{i}", type="NodePort") for i in range(100))
            )
        assert all(r.status_code == 201 for r in results), [r.text for r in results if r.status_code != 201]
        ips = [r.json()["spec"]["clusterIP"] for r in results]
        ports = [r.json()["spec"]["ports"][0]["nodePort"] for r in results]
        assert len(set(ips)) == 100 and "10.43.0.1" not in ips
        assert len(set(ports)) == 100
        assert sorted(await servers[1].keys(allocators.IP_PREFIX)) == sorted(["10.43.0.1", *ips])
        assert sorted(map(int, await servers[0].keys(allocators.PORT_PREFIX))) == sorted(ports)
        # The stored Services hold exactly what was handed out.
        listed = (await servers[1].http.get(SERVICES)).json()["items"]
        assert sorted(s["spec"]["clusterIP"] for s in listed) == sorted(["10.43.0.1", *ips])
