"""The DaemonSet controller against the in-memory API: placement, pinning, new nodes, rollouts, status."""

from __future__ import annotations

import asyncio
import types
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.client import events, fake, informer, resources, store
from services.controllers import base, daemonset

PODS, NODES, DS = resources.PODS, resources.NODES, resources.DAEMONSETS
KEY = "default/agent"


def node(name: str, *, labels: dict[str, str] | None = None, taints: list[dict[str, Any]] | None = None,
         unschedulable: bool = False) -> dict[str, Any]:  # fmt: skip
    spec: dict[str, Any] = {"taints": taints} if taints else {}
    if unschedulable:
        spec["unschedulable"] = True
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
        "spec": spec,
    }


def ds_body(image: str = "agent:1", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}},
                         "spec": {"containers": [{"name": "c", "image": image}]}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
            **spec,
        },
    }  # fmt: skip


class Env:
    def __init__(self) -> None:
        self.api = fake.FakeApi()
        self.factory = informer.InformerFactory(self.api)
        self.recorder = events.EventRecorder(self.api, component="test")
        self.controller = daemonset.DaemonSetController()
        ctx = base.ControllerContext(self.api, self.factory, self.recorder, types.SimpleNamespace())
        self.controller.setup(ctx)

    async def settle(self) -> None:
        for _ in range(50):
            await asyncio.sleep(0)

    async def sync(self, rounds: int = 1) -> None:
        for _ in range(rounds):
            await self.settle()
            await self.controller.reconcile(KEY)
            await self.settle()

    def pods(self) -> list[dict[str, Any]]:
        return [o for (r, _ns, _n), o in self.api.objects.items() if r == PODS]

    def ds(self) -> dict[str, Any]:
        return self.api.objects[(DS, "default", "agent")]

    async def run_pods(self, *, ready: bool = True) -> None:
        """A kubelet's part: bind each pod to its pinned node and report it Running and Ready."""
        for pod in self.pods():
            changed = store.copy(pod)
            changed["spec"]["nodeName"] = daemonset.node_of(pod)
            status = "True" if ready else "False"
            changed["status"] = {"phase": "Running", "conditions": [
                {"type": "Ready", "status": status, "lastTransitionTime": "2026-01-01T00:00:00Z"}]}  # fmt: skip
            bound = await self.api.update(PODS, changed)
            bound["status"] = changed["status"]
            await self.api.update_status(PODS, bound)
        await self.settle()


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    made = Env()
    try:
        yield made
    finally:
        await made.factory.stop()


async def start(env: Env, *nodes: dict[str, Any], ds: dict[str, Any] | None = None) -> None:
    for n in nodes:
        await env.api.create(NODES, n)
    await env.api.create(DS, ds or ds_body())
    await env.factory.start()


# -- predicates --------------------------------------------------------------------------------


def test_daemon_tolerations_are_added_once() -> None:
    spec = daemonset.daemon_pod_spec({"tolerations": [{"key": "node.kubernetes.io/unschedulable",
                                                        "operator": "Exists", "effect": "NoSchedule"}]})  # fmt: skip
    keys = [(t["key"], t["effect"]) for t in spec["tolerations"]]
    assert len(keys) == len(set(keys)) == 6
    assert ("node.kubernetes.io/unreachable", "NoExecute") in keys
    with_host_network = daemonset.daemon_pod_spec({"hostNetwork": True})
    assert any(t["key"] == "node.kubernetes.io/network-unavailable" for t in with_host_network["tolerations"])


@pytest.mark.parametrize(
    ("pod_spec", "the_node", "expected"),
    [
        ({}, node("a"), (True, True)),
        ({"nodeSelector": {"disk": "ssd"}}, node("a"), (False, False)),
        ({"nodeSelector": {"disk": "ssd"}}, node("a", labels={"disk": "ssd"}), (True, True)),
        ({}, node("a", taints=[{"key": "k", "effect": "NoSchedule"}]), (False, True)),
        ({}, node("a", taints=[{"key": "k", "effect": "NoExecute"}]), (False, False)),
        ({"tolerations": [{"operator": "Exists"}]}, node("a", taints=[{"key": "k", "effect": "NoExecute"}]), (True, True)),
        ({"tolerations": [{"key": "k", "value": "v", "effect": "NoSchedule"}]},
         node("a", taints=[{"key": "k", "value": "v", "effect": "NoSchedule"}]), (True, True)),
        ({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["x"]}]},
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}]}]}}}},
         node("b"), (True, True)),
        ({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["x"]}]}]}}}},
         node("b"), (False, False)),
    ],
)  # fmt: skip
def test_should_run(pod_spec: dict[str, Any], the_node: dict[str, Any], expected: tuple[bool, bool]) -> None:
    assert daemonset.should_run(pod_spec, the_node) == expected


def test_cordoned_nodes_still_run_daemons() -> None:
    cordoned = node(
        "a", unschedulable=True, taints=[{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]
    )
    assert daemonset.should_run(daemonset.daemon_pod_spec({}), cordoned) == (True, True)


def test_pin_to_node_replaces_required_terms() -> None:
    spec: dict[str, Any] = {"affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": []}]},
        "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1}]}}}  # fmt: skip
    daemonset.pin_to_node(spec, "n1")
    required = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert required == {
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]
    }
    assert spec["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"] == [
        {"weight": 1}
    ]
    assert daemonset.node_of({"spec": spec}) == "n1"


# -- the controller ----------------------------------------------------------------------------


async def test_one_pod_per_eligible_node(env: Env) -> None:
    await start(env, node("n1"), node("n2"), node("tainted", taints=[{"key": "x", "effect": "NoSchedule"}]))
    await env.sync()
    pods = env.pods()
    assert sorted(daemonset.node_of(p) for p in pods) == ["n1", "n2"]
    pod = pods[0]
    assert pod["metadata"]["generateName"] == "agent-"
    assert pod["metadata"]["labels"]["app"] == "agent"
    assert pod["metadata"]["labels"]["controller-revision-hash"]
    assert pod["metadata"]["labels"]["pod-template-generation"] == "1"
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "DaemonSet"
    assert {t["key"] for t in pod["spec"]["tolerations"]} >= {"node.kubernetes.io/not-ready",
                                                                "node.kubernetes.io/unschedulable"}  # fmt: skip
    await env.sync()  # the cache caught up: nothing more to create
    assert len(env.pods()) == 2
    status = env.ds()["status"]
    assert status["desiredNumberScheduled"] == 2 and status["currentNumberScheduled"] == 2
    assert status["numberReady"] == 0 and status["updatedNumberScheduled"] == 2
    assert status["observedGeneration"] == 1


async def test_status_counts_ready_and_available(env: Env) -> None:
    await start(env, node("n1"), node("n2"))
    await env.sync()
    await env.run_pods()
    await env.sync()
    status = env.ds()["status"]
    assert status["numberReady"] == 2 and status["numberAvailable"] == 2
    assert status["numberMisscheduled"] == 0 and "numberUnavailable" not in status


async def test_a_new_node_gets_a_pod_and_a_deleted_node_none(env: Env) -> None:
    await start(env, node("n1"))
    await env.sync(2)
    await env.api.create(NODES, node("n2"))
    await env.sync(2)
    assert sorted(daemonset.node_of(p) for p in env.pods()) == ["n1", "n2"]


async def test_a_node_that_no_longer_fits_loses_its_pod(env: Env) -> None:
    await start(env, node("n1"), node("n2"))
    await env.sync(2)
    changed = store.copy(env.api.objects[(NODES, "", "n2")])
    changed["spec"]["taints"] = [{"key": "evict", "effect": "NoExecute"}]
    await env.api.update(NODES, changed)
    await env.sync(2)
    assert [daemonset.node_of(p) for p in env.pods()] == ["n1"]


async def test_failed_pods_are_replaced(env: Env) -> None:
    await start(env, node("n1"))
    await env.sync(2)
    failed = store.copy(env.pods()[0])
    failed["status"] = {"phase": "Failed"}
    await env.api.update_status(PODS, failed)
    await env.sync(3)
    pods = env.pods()
    assert len(pods) == 1 and pods[0]["metadata"]["uid"] != failed["metadata"]["uid"]


async def test_rolling_update_respects_max_unavailable(env: Env) -> None:
    await start(env, node("n1"), node("n2"), node("n3"))
    await env.sync(2)
    await env.run_pods()
    old_hash = env.pods()[0]["metadata"]["labels"]["controller-revision-hash"]
    changed = store.copy(env.ds())
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "agent:2"
    await env.api.update(DS, changed)
    await env.sync()
    assert len(env.pods()) == 2  # one old pod deleted, within maxUnavailable 1
    for _ in range(6):
        await env.sync()
        await env.run_pods()
    hashes = {p["metadata"]["labels"]["controller-revision-hash"] for p in env.pods()}
    assert len(env.pods()) == 3 and old_hash not in hashes and len(hashes) == 1
    await env.sync()
    status = env.ds()["status"]
    assert status["updatedNumberScheduled"] == 3 and status["numberAvailable"] == 3
    revs = [o for (r, _ns, _n), o in env.api.objects.items() if r == resources.CONTROLLERREVISIONS]
    assert sorted(r["revision"] for r in revs) == [1, 2]


async def test_rolling_update_with_surge_starts_new_pods_first(env: Env) -> None:
    body = ds_body(
        updateStrategy={"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    )
    await start(env, node("n1"), node("n2"), ds=body)
    await env.sync(2)
    await env.run_pods()
    changed = store.copy(env.ds())
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "agent:2"
    await env.api.update(DS, changed)
    await env.sync()
    assert len(env.pods()) == 3  # a surge pod beside the old one, nothing deleted yet
    for _ in range(8):
        await env.run_pods()
        await env.sync()
    assert len(env.pods()) == 2
    assert len({p["metadata"]["labels"]["controller-revision-hash"] for p in env.pods()}) == 1


async def test_on_delete_strategy_leaves_old_pods(env: Env) -> None:
    await start(env, node("n1"), ds=ds_body(updateStrategy={"type": "OnDelete"}))
    await env.sync(2)
    before = env.pods()[0]["metadata"]["uid"]
    changed = store.copy(env.ds())
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "agent:2"
    await env.api.update(DS, changed)
    await env.sync(2)
    assert [p["metadata"]["uid"] for p in env.pods()] == [before]
    assert env.ds()["status"]["updatedNumberScheduled"] == 0
