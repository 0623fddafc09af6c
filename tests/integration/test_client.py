"""The client library against a real API server: CRUD, selectors, paging, watch, informers,
leader election and events.

Each test starts ``ApiServer`` in this event loop on an ephemeral loopback port, over kine's
in-memory backend, with the cluster PKI and the component kubeconfigs the supervisor writes.
The client reaches it two ways, as the two profiles do: over HTTPS with a kubeconfig (server
profile), and by calling the API server's ASGI app in-process (edge profile); the tests that
matter for the fold run in both shapes. Servers are stopped in ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from services.apiserver import app as app_
from services.apiserver import server, settings, tls
from services.client import api, config, errors, events, informer, leader, resources, store, watch
from services.kine import endpoint
from services.kine import settings as kine_settings
from supervisor import kubeconfig, pki

CM = resources.CONFIGMAPS
NS = "default"


class Cluster:
    """An API server on the in-memory store; ``restart`` replaces it on the same port and store."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.backend: Any = None
        self.server: server.ApiServer | None = None
        self.port = 0

    async def start(self) -> None:
        if self.backend is None:
            self.backend = await endpoint.open_backend(
                kine_settings.KineSettings(data_dir=self.data_dir, datastore_endpoint="memory://")
            )
            await self.backend.start()
        options = settings.ApiServerSettings(
            data_dir=self.data_dir, bind_address="127.0.0.1", https_listen_port=self.port
        )
        self.server = server.ApiServer(options, backend=self.backend)
        await self.server.start()
        self.port = self.server.port
        kubeconfig.write_components(self.data_dir, port=self.port)

    async def stop_server(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None

    async def restart(self) -> None:
        await self.stop_server()
        await self.start()

    async def stop(self) -> None:
        await self.stop_server()
        if self.backend is not None:
            await self.backend.stop()

    def kubeconfig(self, component: str = "admin") -> Path:
        return kubeconfig.component_path(self.data_dir, component)

    def asgi_app(self) -> app_.ASGIApp:
        """The API server's ASGI application, as the edge profile hands it to in-process clients."""
        assert self.server is not None and self.server.api is not None
        made = self.server.api
        return app_.ApiApp(
            made,
            authenticator=made.authenticator,
            authorizer=made.authorizer,
            credentials=tls.credentials_from_scope,
            server_address=f"127.0.0.1:{self.port}",
        )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("client-cluster")
    pki.ensure(path)
    return path


@pytest.fixture
async def cluster(data_dir: Path) -> AsyncIterator[Cluster]:
    made = Cluster(data_dir)
    try:
        await made.start()
        yield made
    finally:
        await made.stop()


def connect(cluster: Cluster, shape: str, component: str = "admin") -> api.ApiClient:
    if shape == "https":
        return api.ApiClient(config.load_kubeconfig(cluster.kubeconfig(component)))
    users = {"admin": ("system:admin", ("system:masters",)), "scheduler": ("system:kube-scheduler", ())}
    user, groups = users[component]
    return api.ApiClient(app=cluster.asgi_app(), user=user, groups=groups)


@pytest.fixture(params=["https", "inprocess"])
async def client(request: pytest.FixtureRequest, cluster: Cluster) -> AsyncIterator[api.ApiClient]:
    async with connect(cluster, request.param) as made:
        yield made


async def eventually(condition: Callable[[], bool], *, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def configmap(name: str, labels: dict[str, str] | None = None, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": NS, "labels": labels or {}},
            "data": dict(data)}  # fmt: skip


# -- requests ----------------------------------------------------------------------------------


async def test_create_get_update_patch_delete(client: api.ApiClient) -> None:
    created = await client.create(CM, configmap("crud", a="1"))
    assert created["metadata"]["uid"] and created["metadata"]["resourceVersion"]
    assert (await client.get(CM, "crud", namespace=NS))["data"] == {"a": "1"}
    with pytest.raises(errors.ApiError) as exists:
        await client.create(CM, configmap("crud"))
    assert errors.is_already_exists(exists.value)

    changed = store.copy(created)
    changed["data"]["a"] = "2"
    updated = await client.update(CM, changed)
    with pytest.raises(errors.ApiError) as stale:
        await client.update(CM, changed)  # the resourceVersion we sent is gone now
    assert errors.is_conflict(stale.value)

    await client.patch(CM, "crud", {"data": {"b": "3"}}, namespace=NS)
    await client.patch(CM, "crud", {"metadata": {"labels": {"x": "y"}}}, namespace=NS, patch_type="strategic")
    await client.patch(CM, "crud", [{"op": "remove", "path": "/data/a"}], namespace=NS, patch_type="json")
    applied = await client.patch(CM, "crud", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "crud"},
                                              "data": {"c": "4"}}, namespace=NS, patch_type="apply",
                                 field_manager="client-test", force=True)  # fmt: skip
    assert applied["data"]["b"] == "3" and applied["data"]["c"] == "4" and "a" not in applied["data"]
    assert applied["metadata"]["labels"] == {"x": "y"}
    assert int(applied["metadata"]["resourceVersion"]) > int(updated["metadata"]["resourceVersion"])

    with pytest.raises(errors.ApiError) as precondition:
        await client.delete(CM, "crud", namespace=NS, preconditions={"uid": "not-this-one"})
    assert precondition.value.code == 409
    await client.delete(CM, "crud", namespace=NS, propagation_policy="Background", grace_period_seconds=0)
    with pytest.raises(errors.ApiError) as missing:
        await client.get(CM, "crud", namespace=NS)
    assert errors.is_not_found(missing.value) and missing.value.reason == "NotFound"


async def test_status_is_written_through_its_subresource(client: api.ApiClient) -> None:
    template = {
        "metadata": {"labels": {"app": "d"}},
        "spec": {"containers": [{"name": "c", "image": "pause"}]},
    }
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": NS},
                  "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "d"}}, "template": template}}  # fmt: skip
    created = await client.create(resources.DEPLOYMENTS, deployment)
    created["status"] = {"observedGeneration": 1, "replicas": 0}
    created["spec"]["replicas"] = 5  # ignored by a status write
    written = await client.update_status(resources.DEPLOYMENTS, created)
    assert written["status"]["observedGeneration"] == 1
    assert written["spec"]["replicas"] == 1


async def test_selectors_and_paging(client: api.ApiClient) -> None:
    for i in range(7):
        await client.create(CM, configmap(f"page-{i}", {"tier": "web" if i % 2 else "db"}))
    every = await client.list(CM, namespace=NS, page_size=2, label_selector="tier")
    assert sorted(i["metadata"]["name"] for i in every["items"]) == [f"page-{i}" for i in range(7)]
    assert "continue" not in every["metadata"] and every["metadata"]["resourceVersion"]
    web = await client.list(CM, namespace=NS, label_selector="tier=web", page_size=1)
    assert sorted(i["metadata"]["name"] for i in web["items"]) == ["page-1", "page-3", "page-5"]
    one = await client.list(CM, namespace=NS, field_selector="metadata.name=page-4")
    assert [i["metadata"]["name"] for i in one["items"]] == ["page-4"]
    with pytest.raises(errors.ApiError) as bad:
        await client.list(CM, field_selector="data.x=1")
    assert bad.value.code == 400


async def test_bind_and_evict_pods(client: api.ApiClient) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": NS},
           "spec": {"containers": [{"name": "c", "image": "pause"}]}}  # fmt: skip
    created = await client.create(resources.PODS, pod)
    await client.bind(NS, "p", "node-1", uid=created["metadata"]["uid"])
    bound = await client.list(resources.PODS, namespace=NS, field_selector="spec.nodeName=node-1")
    assert [p["metadata"]["name"] for p in bound["items"]] == ["p"]
    with pytest.raises(errors.ApiError) as twice:
        await client.bind(NS, "p", "node-2")
    assert twice.value.code == 409
    await client.evict(NS, "p", delete_options={"gracePeriodSeconds": 0})
    with contextlib.suppress(errors.ApiError):
        left = await client.get(resources.PODS, "p", namespace=NS)
        assert left["metadata"].get("deletionTimestamp"), "an evicted pod is deleted or being deleted"


async def test_watch_streams_changes_in_order_until_the_timeout(client: api.ApiClient) -> None:
    start = (await client.list(CM, namespace=NS))["metadata"]["resourceVersion"]
    seen: list[tuple[str, str, str]] = []
    stream = client.watch(CM, namespace=NS, resource_version=start, timeout_seconds=1)
    async with stream:
        await client.create(CM, configmap("w", v="1"))
        await client.patch(CM, "w", {"data": {"v": "2"}}, namespace=NS)
        await client.delete(CM, "w", namespace=NS)
        async with asyncio.timeout(10):
            async for kind, obj in stream:  # ends by itself after timeoutSeconds
                seen.append((kind, obj["metadata"]["name"], (obj.get("data") or {}).get("v", "")))
    assert seen == [("ADDED", "w", "1"), ("MODIFIED", "w", "2"), ("DELETED", "w", "2")]
    assert int(stream.resource_version) > int(start)


async def test_watch_with_initial_events_ends_them_with_a_bookmark(client: api.ApiClient) -> None:
    await client.create(CM, configmap("before"))
    kinds: list[str] = []
    async with client.watch(CM, namespace=NS, send_initial_events=True, timeout_seconds=30) as stream:
        async with asyncio.timeout(10):
            async for kind, obj in stream:
                kinds.append(kind)
                if kind == "BOOKMARK":
                    assert watch.is_initial_events_end(obj)
                    break
    assert kinds[-1] == "BOOKMARK" and "ADDED" in kinds


async def test_a_small_pool_serves_many_concurrent_requests_and_a_closed_watch_ends(cluster: Cluster) -> None:
    cfg = config.load_kubeconfig(cluster.kubeconfig())
    async with api.ApiClient(cfg, max_connections=3) as client:
        await client.create(CM, configmap("shared", v="1"))
        stream = client.watch(CM, namespace=NS)  # holds one of the three connections while open
        await stream.open()
        got = await asyncio.gather(*(client.get(CM, "shared", namespace=NS) for _ in range(40)))
        assert {g["data"]["v"] for g in got} == {"1"}

        async def read() -> list[str]:
            return [kind async for kind, _ in stream]

        reader = asyncio.create_task(read(), name="watch reader")
        await client.patch(CM, "shared", {"data": {"v": "2"}}, namespace=NS)
        await eventually(lambda: stream.resource_version != "")
        await stream.aclose()  # from this task while the reader waits: it ends without an error
        kinds = await asyncio.wait_for(reader, 10)
        assert set(kinds) <= {"ADDED", "MODIFIED"}
        assert (await client.get(CM, "shared", namespace=NS))["data"]["v"] == "2"


# -- informers ---------------------------------------------------------------------------------


class Counting:
    """The informer's view of a client, counting lists (a relist is what resuming must avoid)."""

    def __init__(self, client: api.ApiClient) -> None:
        self.client = client
        self.lists = 0

    async def list(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.lists += 1
        return await self.client.list(*args, **kwargs)

    def watch(self, *args: Any, **kwargs: Any) -> watch.Watch:
        return self.client.watch(*args, **kwargs)


async def test_an_informer_sees_add_update_delete_in_order(client: api.ApiClient) -> None:
    await client.create(CM, configmap("old"))
    log: list[tuple[str, ...]] = []
    counting = Counting(client)
    inf = informer.Informer(counting, CM, namespace=NS, watch_timeout=(1, 1))  # type: ignore[arg-type]
    inf.add_handlers(
        on_add=lambda o: log.append(("add", o["metadata"]["name"])),
        on_update=lambda old, new: log.append(("update", new["metadata"]["name"], new["data"].get("v", ""))),
        on_delete=lambda o: log.append(("delete", o["metadata"]["name"])),
    )
    async with inf:
        assert log == [("add", "old")] and inf.has_synced
        await client.create(CM, configmap("new", v="1"))
        await client.patch(CM, "new", {"data": {"v": "2"}}, namespace=NS)
        await asyncio.sleep(
            2.5
        )  # the server ends the watch (timeoutSeconds=1), twice; the informer re-watches
        await client.patch(CM, "new", {"data": {"v": "3"}}, namespace=NS)
        await client.delete(CM, "old", namespace=NS)
        await eventually(lambda: len(log) == 5)
        assert log == [
            ("add", "old"),
            ("add", "new"),
            ("update", "new", "2"),
            ("update", "new", "3"),
            ("delete", "old"),
        ]
        assert inf.store.keys() == ["default/new"]
        assert inf.state is informer.State.RUNNING
    assert counting.lists == 1, "a watch that ends is resumed from the last resourceVersion, not relisted"


async def test_informers_recover_when_the_api_server_restarts(cluster: Cluster) -> None:
    async with connect(cluster, "https") as client:
        counting = Counting(client)
        factory = informer.InformerFactory(counting)  # type: ignore[arg-type]
        pods = factory.informer(resources.PODS, indexers={"node": store.pods_by_node})
        cms = factory.informer(CM, namespace=NS)
        assert factory.informer(CM, namespace=NS) is cms
        async with factory:
            await client.create(CM, configmap("a"))
            await eventually(lambda: "default/a" in cms.store)
            await cluster.stop_server()
            await asyncio.sleep(0.2)  # the watches see the connection drop and back off
            await cluster.restart()  # same port, same store, a new watch cache
            await client.create(CM, configmap("b"))
            pod = {"metadata": {"name": "p", "namespace": NS},
                   "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "pause"}]}}  # fmt: skip
            await client.create(resources.PODS, pod)
            await eventually(
                lambda: "default/b" in cms.store and len(pods.store.by_index("node", "n1")) == 1, within=30
            )
            assert sorted(cms.store.keys()) == ["default/a", "default/b"]
    # The new server's cache starts at the store's current revision, so it may answer the
    # resumed watches 410 (as kube-apiserver does after a restart): at most one relist each.
    assert counting.lists <= 4


# -- leader election ---------------------------------------------------------------------------


def fast_election(identity: str) -> leader.ElectionConfig:
    return leader.ElectionConfig(name="kube-scheduler", identity=identity, lease_duration=3,
                                 renew_deadline=2, retry_period=0.2)  # fmt: skip


@pytest.mark.parametrize("shape", ["https", "inprocess"])
async def test_one_of_two_electors_leads_and_the_other_takes_over(cluster: Cluster, shape: str) -> None:
    # As the scheduler: its RBAC allows creating leases and updating the kube-scheduler one.
    async with connect(cluster, shape, "scheduler") as one, connect(cluster, shape, "scheduler") as two:
        first = leader.LeaderElector(one, fast_election("server-1"))
        second = leader.LeaderElector(two, fast_election("server-2"))
        try:
            await first.start()
            await asyncio.wait_for(first.wait_for_leadership(), 10)
            await second.start()
            await asyncio.sleep(1.0)
            assert first.is_leader and not second.is_leader
            assert second.leader == "server-1"
            lease = (await one.get(resources.LEASES, "kube-scheduler", namespace="kube-system"))["spec"]
            assert lease["holderIdentity"] == "server-1" and lease["leaseDurationSeconds"] == 3
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", lease["renewTime"])

            await first.stop()  # releases: the other need not wait for the lease to expire
            await asyncio.wait_for(second.wait_for_leadership(), 2)
            lease = (await two.get(resources.LEASES, "kube-scheduler", namespace="kube-system"))["spec"]
            assert lease["holderIdentity"] == "server-2" and lease["leaseTransitions"] == 1
        finally:
            await first.stop()
            await second.stop()


async def test_leading_context_runs_only_while_leading(cluster: Cluster) -> None:
    async with connect(cluster, "https") as client:
        elector = leader.LeaderElector(client, fast_election("solo"))
        async with elector.leading():
            assert elector.is_leader
        lease = (await client.get(resources.LEASES, "kube-scheduler", namespace="kube-system"))["spec"]
        assert lease["holderIdentity"] == ""


# -- events ------------------------------------------------------------------------------------


async def test_events_are_recorded_and_repeats_counted(client: api.ApiClient) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ev", "namespace": NS},
           "spec": {"containers": [{"name": "c", "image": "pause"}]}}  # fmt: skip
    created = await client.create(resources.PODS, pod)
    async with events.EventRecorder(client, component="default-scheduler", instance="server-1") as recorder:
        for _ in range(3):
            recorder.warning(created, "FailedScheduling", "0/1 nodes are available: 1 Insufficient cpu.")
        recorder.normal(created, "Scheduled", "Successfully assigned default/ev to node-1")
    found = await client.list(resources.EVENTS, namespace=NS, field_selector="involvedObject.name=ev")
    by_reason = {e["reason"]: e for e in found["items"]}
    assert sorted(by_reason) == ["FailedScheduling", "Scheduled"]
    failed = by_reason["FailedScheduling"]
    assert failed["count"] == 3 and failed["type"] == "Warning"
    assert failed["involvedObject"]["uid"] == created["metadata"]["uid"]
    assert failed["source"] == {"component": "default-scheduler", "host": "server-1"}
    assert failed["reportingComponent"] == "default-scheduler"
    assert by_reason["Scheduled"]["count"] == 1
