"""The scheduler against a real API server: placements, failure reports, preemption, leadership.

Each test starts ``ApiServer`` in this event loop on an ephemeral loopback port over kine's
in-memory backend, with the cluster PKI and the component kubeconfigs the supervisor writes. The
scheduler connects as the supervisor connects it: with ``<data-dir>/server/cred/scheduler.kubeconfig``
(user ``system:kube-scheduler``, so RBAC is exercised), or in-process through the API server's ASGI
app as the edge profile folds it; the placement tests run in both shapes.

Nodes are virtual: Node objects with capacity, allocatable and a Ready condition, created by the
test; no agent runs. Where a kubelet would finish deleting a pod (a preemption victim) the test
does it, by deleting with a grace period of 0.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from services.client import api, errors, resources
from services.scheduler import component
from services.scheduler import settings as settings_
from tests.integration.cluster import Cluster, eventually, fixtures

NS = "default"
PODS, NODES = resources.PODS, resources.NODES
CONTROL_PLANE_TAINT = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}


data_dir, cluster, admin = fixtures("scheduler-cluster")


def fast_settings(cluster: Cluster, **overrides: Any) -> settings_.SchedulerSettings:
    values: dict[str, Any] = {
        "kubeconfig": cluster.kubeconfig("scheduler"),
        "leader_elect": False,
        "pod_initial_backoff": 0.1,
        "pod_max_backoff": 0.5,
        "drain_timeout": 1.0,
    }
    values.update(overrides)
    return settings_.SchedulerSettings(**values)


async def start_scheduler(cluster: Cluster, shape: str = "https", **overrides: Any) -> component.Scheduler:
    client = None if shape == "https" else cluster.inprocess_client("system:kube-scheduler")
    scheduler = component.Scheduler(fast_settings(cluster, **overrides), api=client)
    await scheduler.start()
    return scheduler


async def stop_scheduler(scheduler: component.Scheduler) -> None:
    await scheduler.stop()
    if not scheduler._own_api and isinstance(scheduler.api, api.ApiClient):
        await scheduler.api.aclose()


@pytest.fixture(params=["https", "inprocess"])
async def scheduler(request: pytest.FixtureRequest, cluster: Cluster) -> AsyncIterator[component.Scheduler]:
    made = await start_scheduler(cluster, request.param)
    try:
        yield made
    finally:
        await stop_scheduler(made)


# -- objects -------------------------------------------------------------------------------------


def node(
    name: str,
    *,
    cpu: str = "4",
    memory: str = "8Gi",
    pods: str = "110",
    labels: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
    ready: bool = True,
) -> dict[str, Any]:
    capacity = {"cpu": cpu, "memory": memory, "pods": pods, "ephemeral-storage": "20Gi"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
        "spec": {"taints": taints or []},
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [
                {"type": "Ready", "status": "True" if ready else "False", "reason": "KubeletReady"}
            ],
        },
    }


def pod(
    name: str,
    *,
    cpu: str | None = None,
    memory: str | None = None,
    labels: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v}
    container = {"name": "c", "image": "pause", "resources": {"requests": requests} if requests else {}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels or {}},
        "spec": {"containers": [container], **spec},
    }


async def add_node(admin: api.ApiClient, obj: dict[str, Any]) -> None:
    created = await admin.create(NODES, obj)
    if created.get("status", {}).get("allocatable") != obj["status"]["allocatable"]:
        created["status"] = obj["status"]  # a server that drops status on create: write it after
        await admin.update_status(NODES, created)


until = functools.partial(eventually, within=10.0)


async def bound_node(admin: api.ApiClient, name: str, *, within: float = 10.0) -> str:
    async def check() -> str:
        return (await admin.get(PODS, name, namespace=NS)).get("spec", {}).get("nodeName", "")

    return await until(check, within=within, what=f"pod {name} bound")


async def events_about(admin: api.ApiClient, name: str, reason: str) -> list[dict[str, Any]]:
    listed = await admin.list(resources.EVENTS, namespace=NS)
    return [
        e
        for e in listed["items"]
        if e.get("involvedObject", {}).get("name") == name and e.get("reason") == reason
    ]


def scheduled_condition(obj: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in obj.get("status", {}).get("conditions") or () if c["type"] == "PodScheduled"), {})


# -- placements ----------------------------------------------------------------------------------


async def test_binds_by_resource_requests(admin: api.ApiClient, scheduler: component.Scheduler) -> None:
    await add_node(admin, node("small", cpu="1", memory="1Gi"))
    await add_node(admin, node("big", cpu="8", memory="16Gi"))
    await add_node(admin, node("full-pods", cpu="64", memory="64Gi", pods="0"))
    await admin.create(PODS, pod("wants-2-cpu", cpu="2", memory="1Gi"))
    await admin.create(PODS, pod("wants-3gi", cpu="100m", memory="3Gi"))
    assert await bound_node(admin, "wants-2-cpu") == "big"
    assert await bound_node(admin, "wants-3gi") == "big"
    bound = await admin.get(PODS, "wants-2-cpu", namespace=NS)
    assert scheduled_condition(bound)["status"] == "True"
    scheduled = await until(lambda: events_about(admin, "wants-2-cpu", "Scheduled"), what="Scheduled event")
    assert scheduled[0]["message"] == "Successfully assigned default/wants-2-cpu to big"
    assert scheduled[0]["source"]["component"] == "default-scheduler"


async def test_taints_selectors_and_node_affinity(
    admin: api.ApiClient, scheduler: component.Scheduler
) -> None:
    await add_node(admin, node("cp", labels={"zone": "a"}, taints=[CONTROL_PLANE_TAINT]))
    await add_node(admin, node("gpu", labels={"zone": "b", "accel": "gpu"},
                               taints=[{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]))  # fmt: skip
    await add_node(admin, node("plain-a", labels={"zone": "a"}))
    await add_node(admin, node("plain-c", labels={"zone": "c"}))
    tolerate_gpu = [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]
    await admin.create(PODS, pod("to-gpu", nodeSelector={"accel": "gpu"}, tolerations=tolerate_gpu))
    zone_c = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["c", "d"]}]}]}}}  # fmt: skip
    await admin.create(PODS, pod("to-zone-c", affinity=zone_c))
    by_name = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["plain-a"]}]}]}}}  # fmt: skip
    await admin.create(PODS, pod("to-plain-a", affinity=by_name))
    for i in range(4):
        await admin.create(PODS, pod(f"anywhere-{i}"))
    assert await bound_node(admin, "to-gpu") == "gpu"
    assert await bound_node(admin, "to-zone-c") == "plain-c"
    assert await bound_node(admin, "to-plain-a") == "plain-a"
    for i in range(4):  # neither the control plane nor the dedicated node, untolerated
        assert await bound_node(admin, f"anywhere-{i}") in ("plain-a", "plain-c")


async def test_pod_affinity_anti_affinity_and_spread(
    admin: api.ApiClient, scheduler: component.Scheduler
) -> None:
    for name, zone in (("n1", "a"), ("n2", "a"), ("n3", "b"), ("n4", "b")):
        await add_node(admin, node(name, labels={"topology.kubernetes.io/zone": zone}))
    hostname = "kubernetes.io/hostname"
    anti = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": hostname}]}}  # fmt: skip
    for i in range(4):
        await admin.create(PODS, pod(f"db-{i}", labels={"app": "db"}, affinity=anti))
    placed = {await bound_node(admin, f"db-{i}") for i in range(4)}
    assert placed == {"n1", "n2", "n3", "n4"}  # one per node
    db_0_node = await bound_node(admin, "db-0")

    near = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": hostname,
         "namespaces": [NS]}]}}  # fmt: skip
    await admin.create(PODS, pod("cache", labels={"app": "cache"}, affinity=near))
    assert await bound_node(admin, "cache") in placed

    # a fifth db pod has nowhere to go
    await admin.create(PODS, pod("db-4", labels={"app": "db"}, affinity=anti))

    async def refused() -> dict[str, Any]:
        return scheduled_condition(await admin.get(PODS, "db-4", namespace=NS)).get("message")

    message = await until(refused, what="db-4 reported unschedulable")
    assert message.startswith("0/4 nodes are available: 4 node(s) didn't match pod anti-affinity rules.")

    spread = [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
               "labelSelector": {"matchLabels": {"app": "web"}}}]  # fmt: skip
    for i in range(6):
        await admin.create(PODS, pod(f"web-{i}", labels={"app": "web"}, topologySpreadConstraints=spread))
    zones = {"n1": "a", "n2": "a", "n3": "b", "n4": "b"}
    counted = [zones[await bound_node(admin, f"web-{i}")] for i in range(6)]
    assert counted.count("a") == 3 and counted.count("b") == 3
    assert db_0_node


# -- failures ------------------------------------------------------------------------------------


async def test_unschedulable_pod_is_reported_then_bound_when_a_node_arrives(
    admin: api.ApiClient, scheduler: component.Scheduler
) -> None:
    await add_node(admin, node("cp-0", cpu="8", taints=[CONTROL_PLANE_TAINT]))
    await add_node(admin, node("worker-0", cpu="1"))
    await add_node(admin, node("worker-1", cpu="1"))
    await admin.create(PODS, pod("hungry", cpu="2"))
    expected = (
        "0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, "
        "2 Insufficient cpu. preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, "
        "2 No preemption victims found for incoming pod.."
    )

    async def reported() -> dict[str, Any]:
        condition = scheduled_condition(await admin.get(PODS, "hungry", namespace=NS))
        return condition if condition.get("status") == "False" else {}

    condition = await until(reported, what="PodScheduled=False")
    assert condition["reason"] == "Unschedulable"
    assert condition["message"] == expected
    failed = await until(
        lambda: events_about(admin, "hungry", "FailedScheduling"), what="FailedScheduling event"
    )
    assert failed[0]["type"] == "Warning" and failed[0]["message"] == expected

    await add_node(admin, node("worker-big", cpu="4"))
    assert await bound_node(admin, "hungry") == "worker-big"


async def test_host_ports_and_pod_count(admin: api.ApiClient, scheduler: component.Scheduler) -> None:
    await add_node(admin, node("only", pods="2"))
    ports = [{"containerPort": 80, "hostPort": 8080, "protocol": "TCP"}]
    first = pod("port-1")
    first["spec"]["containers"][0]["ports"] = ports
    second = pod("port-2")
    second["spec"]["containers"][0]["ports"] = ports
    await admin.create(PODS, first)
    assert await bound_node(admin, "port-1") == "only"
    await admin.create(PODS, second)

    async def message_of(name: str) -> str:
        return scheduled_condition(await admin.get(PODS, name, namespace=NS)).get("message", "")

    text = await until(lambda: message_of("port-2"), what="port conflict reported")
    assert text.startswith(
        "0/1 nodes are available: 1 node(s) didn't have free ports for the requested pod ports."
    )
    await admin.create(PODS, pod("filler"))
    assert await bound_node(admin, "filler") == "only"
    await admin.create(PODS, pod("one-too-many"))
    text = await until(lambda: message_of("one-too-many"), what="pod count reported")
    assert text.startswith("0/1 nodes are available: 1 Too many pods.")


# -- preemption ----------------------------------------------------------------------------------


async def finish_terminating(admin: api.ApiClient, name: str) -> None:
    """Do what the kubelet of a real node would: end a terminating pod's grace period at once."""

    async def terminating() -> bool:
        try:
            got = await admin.get(PODS, name, namespace=NS)
        except errors.ApiError as exc:
            return exc.code == 404
        return bool(got["metadata"].get("deletionTimestamp"))

    await until(terminating, what=f"{name} terminating")
    try:
        await admin.delete(PODS, name, namespace=NS, grace_period_seconds=0)
    except errors.ApiError as exc:
        if exc.code != 404:
            raise


async def test_preemption_of_a_lower_priority_pod(
    admin: api.ApiClient, scheduler: component.Scheduler
) -> None:
    for name, value in (("low", 100), ("high", 1000)):
        await admin.create(resources.PRIORITYCLASSES, {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                                                       "metadata": {"name": name}, "value": value})  # fmt: skip
    await add_node(admin, node("lonely", cpu="2"))
    # spec.priority is what the Priority admission plugin writes from the class; set it as it would.
    await admin.create(PODS, pod("victim", cpu="1500m", priorityClassName="low", priority=100))
    assert await bound_node(admin, "victim") == "lonely"
    await admin.create(PODS, pod("important", cpu="1", priorityClassName="high", priority=1000))

    async def nominated() -> str:
        got = await admin.get(PODS, "important", namespace=NS)
        return got.get("status", {}).get("nominatedNodeName", "")

    assert await until(nominated, what="nominatedNodeName") == "lonely"
    await finish_terminating(admin, "victim")
    assert await bound_node(admin, "important") == "lonely"
    preempted = await until(lambda: events_about(admin, "victim", "Preempted"), what="Preempted event")
    important = await admin.get(PODS, "important", namespace=NS)
    assert preempted[0]["message"] == f"Preempted by pod {important['metadata']['uid']} on node lonely"


async def test_preemption_policy_never_waits(admin: api.ApiClient, scheduler: component.Scheduler) -> None:
    await add_node(admin, node("busy", cpu="1"))
    await admin.create(PODS, pod("sitting", cpu="1", priority=0))
    assert await bound_node(admin, "sitting") == "busy"
    await admin.create(resources.PRIORITYCLASSES, {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                                                   "metadata": {"name": "polite"}, "value": 1000,
                                                   "preemptionPolicy": "Never"})  # fmt: skip
    await admin.create(PODS, pod("polite", cpu="1", priorityClassName="polite", priority=1000,
                                 preemptionPolicy="Never"))  # fmt: skip

    async def message() -> str:
        return scheduled_condition(await admin.get(PODS, "polite", namespace=NS)).get("message", "")

    text = await until(message, what="polite reported")
    assert text == ("0/1 nodes are available: 1 Insufficient cpu. "
                    "preemption: not eligible due to preemptionPolicy=Never..")  # fmt: skip
    assert (await admin.get(PODS, "sitting", namespace=NS))["metadata"].get("deletionTimestamp") is None


# -- leadership, health --------------------------------------------------------------------------


async def test_only_the_leader_schedules(cluster: Cluster, admin: api.ApiClient) -> None:
    timings = {"leader_elect": True, "leader_elect_lease_duration": 3.0, "leader_elect_renew_deadline": 2.0,
               "leader_elect_retry_period": 0.5}  # fmt: skip
    first = await start_scheduler(cluster, identity="server-1", **timings)
    second = None
    try:
        await until(lambda: _true(first.is_leader), what="first leads")
        second = await start_scheduler(cluster, identity="server-2", **timings)
        await add_node(admin, node("n"))
        for i in range(5):
            await admin.create(PODS, pod(f"led-{i}"))
        for i in range(5):
            await bound_node(admin, f"led-{i}")
        lease = await admin.get(resources.LEASES, "kube-scheduler", namespace="kube-system")
        assert lease["spec"]["holderIdentity"] == "server-1"
        assert not second.is_leader
        assert _attempts(second) == 0 and _attempts(first) == 5

        await stop_scheduler(first)  # releases the lease: the standby takes over at once
        await until(lambda: _true(second.is_leader), within=10, what="second leads")
        await admin.create(PODS, pod("after-failover"))
        assert await bound_node(admin, "after-failover") == "n"
        assert _attempts(second) == 1
    finally:
        await stop_scheduler(first)
        if second is not None:
            await stop_scheduler(second)


async def _true(value: bool) -> bool:
    return value


def _attempts(scheduler: component.Scheduler) -> float:
    return sum(
        sample.value
        for metric in scheduler.metrics.registry.collect()
        if metric.name == "scheduler_schedule_attempts"
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


async def test_health_and_metrics_on_loopback(admin: api.ApiClient, scheduler: component.Scheduler) -> None:
    await add_node(admin, node("m"))
    await admin.create(PODS, pod("measured"))
    await bound_node(admin, "measured")
    base = f"http://127.0.0.1:{scheduler.health_port}"
    async with httpx.AsyncClient(base_url=base, trust_env=False) as http:
        assert (await http.get("/healthz")).text == "ok"
        assert (await http.get("/readyz")).status_code == 200
        metrics_text = (await http.get("/metrics")).text
        assert (await http.get("/nope")).status_code == 404
    assert (
        'scheduler_schedule_attempts_total{profile="default-scheduler",result="scheduled"} 1.0'
        in metrics_text
    )
    assert 'scheduler_pending_pods{queue="active"} 0.0' in metrics_text
    assert "scheduler_e2e_scheduling_duration_seconds_bucket" in metrics_text
