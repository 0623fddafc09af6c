"""Node lifecycle against the in-memory API and a fake clock: silence, taints, eviction, pod GC."""

from __future__ import annotations

import asyncio
import datetime
import types
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.client import clock, events, fake, informer, resources, store
from services.controllers import base, nodelifecycle, podutil

PODS, NODES, LEASES = resources.PODS, resources.NODES, resources.LEASES
START = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
UNREACHABLE = {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}


def ready_node(name: str, *, status: str = "True", beat: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    conditions = [
        {"type": t, "status": "False", "lastHeartbeatTime": beat}
        for t in ("MemoryPressure", "DiskPressure", "PIDPressure")
    ]
    conditions.append(
        {"type": "Ready", "status": status, "reason": "KubeletReady", "lastHeartbeatTime": beat}
    )
    return {"metadata": {"name": name}, "spec": {}, "status": {"conditions": conditions}}


def lease(name: str, renewed: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": renewed}}  # fmt: skip


def pod(
    name: str, node: str | None, tolerations: list[dict[str, Any]] | None = None, **status: Any
) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "x"}], "tolerations": tolerations or []}
    if node:
        spec["nodeName"] = node
    return {"metadata": {"name": name, "namespace": "default"}, "spec": spec,
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}], **status}}  # fmt: skip


class Env:
    def __init__(self, **options: Any) -> None:
        self.api = fake.FakeApi()
        self.clock = clock.FakeClock(START)
        self.factory = informer.InformerFactory(self.api)
        self.controller = nodelifecycle.NodeLifecycleController(clock=self.clock, **options)
        settings = types.SimpleNamespace(node_monitor_grace_period=40.0, node_startup_grace_period=60.0)
        recorder = events.EventRecorder(self.api, component="test")
        self.controller.setup(base.ControllerContext(self.api, self.factory, recorder, settings))

    async def settle(self) -> None:
        for _ in range(50):
            await asyncio.sleep(0)

    async def sync(self, name: str = "n1") -> None:
        await self.settle()
        await self.controller.reconcile(name)
        await self.settle()

    def node(self, name: str = "n1") -> dict[str, Any]:
        return self.api.objects[(NODES, "", name)]

    def taints(self, name: str = "n1") -> list[tuple[str, str]]:
        return sorted((t["key"], t["effect"]) for t in self.node(name)["spec"].get("taints") or ())

    def pods(self) -> list[str]:
        return sorted(n for (r, _ns, n) in self.api.objects if r == PODS)

    async def renew(self, name: str = "n1") -> None:
        current = store.copy(self.api.objects[(LEASES, "kube-node-lease", name)])
        current["spec"]["renewTime"] = podutil.format_time(self.clock.now()).replace("Z", ".000000Z")
        await self.api.update(LEASES, current)
        await self.settle()

    async def report(self, ready: str, name: str = "n1") -> None:
        """What a kubelet posts: its conditions with a fresh heartbeat."""
        current = store.copy(self.node(name))
        beat = podutil.format_time(self.clock.now())
        current["status"] = ready_node(name, status=ready, beat=beat)["status"]
        await self.api.update_status(NODES, current)
        await self.settle()


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    made = Env()
    try:
        yield made
    finally:
        await made.factory.stop()


async def start(env: Env, *objects: tuple[Any, dict[str, Any]]) -> None:
    for resource, obj in objects:
        await env.api.create(resource, obj)
    await env.factory.start()


def test_toleration_time() -> None:
    taints = [{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]
    assert nodelifecycle.toleration_time(pod("p", "n"), taints) == 0.0
    assert nodelifecycle.toleration_time(pod("p", "n", [UNREACHABLE]), taints) is None
    timed = [{**UNREACHABLE, "tolerationSeconds": 30}, {"operator": "Exists", "tolerationSeconds": 100}]
    assert nodelifecycle.toleration_time(pod("p", "n", timed), taints) == 30.0
    both = taints + [{"key": "other", "effect": "NoExecute"}]
    assert (
        nodelifecycle.toleration_time(pod("p", "n", [{**UNREACHABLE, "tolerationSeconds": 5}]), both) == 0.0
    )


async def test_a_silent_node_turns_unknown_is_tainted_and_its_pods_evicted(env: Env) -> None:
    await start(
        env,
        (NODES, ready_node("n1")),
        (LEASES, lease("n1", "2026-01-01T00:00:00.000000Z")),
        (PODS, pod("timed", "n1", [{**UNREACHABLE, "tolerationSeconds": 30}])),
        (PODS, pod("forever", "n1", [UNREACHABLE])),
        (PODS, pod("intolerant", "n1")),
    )
    await env.sync()
    assert env.taints() == [] and len(env.pods()) == 3
    await env.clock.advance(30)
    await env.renew()
    await env.clock.advance(30)
    await env.sync()
    assert env.taints() == []  # the lease moved 30 s ago: alive
    await env.clock.advance(11)
    await env.sync()
    ready = podutil.condition(env.node(), "Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"], ready["message"]) == (
        "Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status.")  # fmt: skip
    assert ready["lastHeartbeatTime"] == "2026-01-01T00:00:00Z"  # left as the kubelet wrote it
    assert podutil.condition(env.node(), "MemoryPressure")["status"] == "Unknown"
    assert env.taints() == [("node.kubernetes.io/unreachable", "NoExecute"),
                            ("node.kubernetes.io/unreachable", "NoSchedule")]  # fmt: skip
    no_execute = next(t for t in env.node()["spec"]["taints"] if t["effect"] == "NoExecute")
    assert no_execute["timeAdded"] == "2026-01-01T00:01:11Z"
    assert env.pods() == ["forever", "timed"]  # no toleration: evicted at once
    timed = env.api.objects[(PODS, "default", "timed")]
    assert podutil.condition(timed, "Ready")["status"] == "False"
    await env.clock.advance(29)
    await env.sync()
    assert env.pods() == ["forever", "timed"]
    await env.clock.advance(2)
    await env.sync()
    assert env.pods() == ["forever"]


async def test_a_users_no_execute_taint_counts_from_when_it_was_seen(env: Env) -> None:
    node = ready_node("n1")
    node["spec"]["taints"] = [{"key": "maintenance", "effect": "NoExecute"}]  # no timeAdded
    tolerant = [{"key": "maintenance", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 20}]
    await start(env, (NODES, node), (PODS, pod("tolerant", "n1", tolerant)), (PODS, pod("other", "n1")))
    await env.sync()
    assert env.pods() == ["tolerant"]
    await env.report("True")  # alive: only the taint matters
    await env.clock.advance(19)
    await env.sync()
    assert env.pods() == ["tolerant"]
    await env.clock.advance(2)
    await env.sync()
    assert env.pods() == []


async def test_a_node_that_comes_back_loses_its_taints(env: Env) -> None:
    await start(env, (NODES, ready_node("n1")), (LEASES, lease("n1", "2026-01-01T00:00:00.000000Z")))
    await env.clock.advance(41)
    await env.sync()
    assert ("node.kubernetes.io/unreachable", "NoExecute") in env.taints()
    await env.renew()
    await env.report("True")
    await env.sync()
    assert env.taints() == []


async def test_a_node_reporting_not_ready_gets_the_not_ready_taint(env: Env) -> None:
    await start(env, (NODES, ready_node("n1")))
    await env.report("False")
    await env.sync()
    assert env.taints() == [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/not-ready", "NoSchedule"),
    ]


async def test_a_cordoned_node_gets_the_unschedulable_taint(env: Env) -> None:
    cordoned = ready_node("n1")
    cordoned["spec"]["unschedulable"] = True
    await start(env, (NODES, cordoned))
    await env.sync()
    assert env.taints() == [("node.kubernetes.io/unschedulable", "NoSchedule")]


async def test_pods_of_deleted_nodes_are_collected(env: Env) -> None:
    await start(env, (NODES, ready_node("n1")), (PODS, pod("orphan", "ghost")), (PODS, pod("kept", "n1")))
    env.controller.tick()
    await env.sync("ghost")
    assert env.pods() == ["kept"]


async def test_unscheduled_terminating_and_excess_finished_pods_are_collected() -> None:
    env = Env(terminated_pod_threshold=1)
    try:
        stuck = pod("stuck", None)
        stuck["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        done = [pod(f"done-{i}", "n1", phase="Succeeded") for i in range(3)]
        await start(env, (NODES, ready_node("n1")), (PODS, stuck), *((PODS, d) for d in done))
        await env.settle()
        for i, name in enumerate(["done-2", "done-0", "done-1"]):  # the cache's copies: ages set by hand
            env.controller.pods.store.get(f"default/{name}")["metadata"]["creationTimestamp"] = (
                f"2026-01-01T00:00:0{i}Z"
            )
        await env.controller.collect_pods()  # one pass of the monitor
        assert env.pods() == ["done-1"]
    finally:
        await env.factory.stop()
