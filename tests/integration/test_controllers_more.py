"""The workload, node and K3s controllers against a real API server, with a tiny fake kubelet.

Each test starts ``ApiServer`` on kine's in-memory store in this event loop, and runs the
controllers under test directly (``new()``, ``setup`` with a ``ControllerContext`` built
here, ``run``), as the controller manager does in the edge profile: an in-process
``ApiClient`` acting as ``system:kube-controller-manager``, a shared ``InformerFactory``, an
``EventRecorder``. No scheduler runs: the fake kubelet below binds pods itself (a daemon pod to
the node its affinity names, any other pod to the first node), then plays the pod's part:
Running and Ready, or Succeeded/Failed when the pod's ``test/outcome`` label says so, and it
finishes graceful deletes. It polls, which is fine for a test helper.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import time
import types
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from services.client import api, clock, errors, events, informer, resources
from services.controllers import (
    addons,
    base,
    cronjob,
    daemonset,
    disruption,
    eventttl,
    job,
    nodelifecycle,
    podutil,
    resourcequota,
    statefulset,
)
from tests.integration import cluster as shared
from tests.integration.cluster import Cluster

PODS, NODES, LEASES = resources.PODS, resources.NODES, resources.LEASES
NS = "default"
OUTCOME = "test/outcome"


# -- the cluster -------------------------------------------------------------------------------


data_dir, cluster, admin = shared.fixtures("controllers-more", inprocess_admin=True)


@contextlib.asynccontextmanager
async def controllers(cluster: Cluster, *made: Any, **settings_: Any) -> AsyncIterator[api.ApiClient]:
    """Run ``made`` as the controller manager would: shared informers, one context, ``run``."""
    client = cluster.inprocess_client("system:kube-controller-manager")
    factory = informer.InformerFactory(client)
    recorder = events.EventRecorder(client, component="k3s-controllers")
    options = {"node_monitor_grace_period": 50.0, "node_startup_grace_period": 60.0, "event_ttl": 3600.0,
               "data_dir": None, "disabled_addons": [], **settings_}  # fmt: skip
    ctx = base.ControllerContext(client, factory, recorder, types.SimpleNamespace(**options))
    for controller in made:
        controller.setup(ctx)
    await recorder.start()
    await factory.start()
    running = [asyncio.create_task(c.run(), name=c.name) for c in made]
    try:
        yield client
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await factory.stop()
        await recorder.stop()
        await client.aclose()


eventually = functools.partial(shared.eventually, within=15.0)


# -- a fake kubelet ----------------------------------------------------------------------------


def ready_node(name: str) -> dict[str, Any]:
    now = podutil.format_time(datetime.datetime.now(datetime.UTC))
    conditions = [{"type": t, "status": "False", "reason": "KubeletHasSufficient", "lastHeartbeatTime": now,
                   "lastTransitionTime": now} for t in ("MemoryPressure", "DiskPressure", "PIDPressure")]  # fmt: skip
    conditions.append({"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": now,
                       "lastTransitionTime": now})  # fmt: skip
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {"conditions": conditions, "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}}  # fmt: skip


class Kubelet:
    """Binds and runs pods on ``nodes``, renews their Leases; a node removed from ``nodes`` goes silent."""

    def __init__(self, client: api.ApiClient, *, ready_delay: float = 0.0) -> None:
        self.client = client
        self.nodes: list[str] = []
        self.ready_delay = ready_delay
        self.seen: list[str] = []  # pod names in the order they were first seen
        self._first_seen: dict[str, float] = {}  # pod uid -> when (monotonic)
        self._task: asyncio.Task[Any] | None = None

    async def add_node(self, name: str) -> None:
        created = await self.client.create(NODES, ready_node(name))
        created["status"] = ready_node(name)["status"]
        await self.client.update_status(NODES, created)
        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": name, "namespace": "kube-node-lease"},
                 "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": _micro()}}  # fmt: skip
        await self.client.create(LEASES, lease)
        self.nodes.append(name)

    async def __aenter__(self) -> Kubelet:
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    @staticmethod
    def _stopped() -> bool:
        """Cancelled, even if a request swallowed the CancelledError (3.11's wait_for, gh-86296)."""
        task = asyncio.current_task()
        return task is not None and task.cancelling() > 0

    async def _loop(self) -> None:
        beat = 0.0
        while not self._stopped():
            if time.monotonic() - beat > 0.2:
                beat = time.monotonic()
                for name in list(self.nodes):
                    with contextlib.suppress(errors.ApiError):
                        lease = await self.client.get(LEASES, name, namespace="kube-node-lease")
                        lease["spec"]["renewTime"] = _micro()
                        await self.client.update(LEASES, lease)
            for pod in (await self.client.list(PODS)).get("items") or ():
                with contextlib.suppress(errors.ApiError):
                    await self._handle(pod)
            await asyncio.sleep(0.05)

    async def _handle(self, pod: dict[str, Any]) -> None:
        md, spec = pod["metadata"], pod["spec"]
        if md["name"] not in self.seen:
            self.seen.append(md["name"])
        first_seen = self._first_seen.setdefault(md["uid"], time.monotonic())
        node = spec.get("nodeName") or daemonset.node_of(pod) or (self.nodes[0] if self.nodes else "")
        if node not in self.nodes:
            return  # not ours, or our node is dead
        if md.get("deletionTimestamp"):
            await self.client.delete(PODS, md["name"], namespace=md["namespace"], grace_period_seconds=0)
            return
        if not spec.get("nodeName"):
            await self.client.bind(md["namespace"], md["name"], node)
            return
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed", "Running"):
            return
        if time.monotonic() - first_seen < self.ready_delay:
            return
        await self.client.update_status(PODS, {**pod, "status": _status(pod)})


def _micro() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _status(pod: dict[str, Any]) -> dict[str, Any]:
    now = podutil.format_time(datetime.datetime.now(datetime.UTC))
    outcome = (pod["metadata"].get("labels") or {}).get(OUTCOME, "run")
    if outcome in ("succeed", "fail"):
        code = 0 if outcome == "succeed" else 1
        return {"phase": "Succeeded" if code == 0 else "Failed", "startTime": now,
                "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now}],
                "containerStatuses": [{"name": "c", "ready": False, "restartCount": 0, "image": "x", "imageID": "",
                                       "state": {"terminated": {"exitCode": code, "finishedAt": now}}}]}  # fmt: skip
    return {"phase": "Running", "startTime": now, "podIP": "10.42.0.9",
            "conditions": [{"type": t, "status": "True", "lastTransitionTime": now}
                           for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")],
            "containerStatuses": [{"name": "c", "ready": True, "restartCount": 0, "started": True, "image": "x",
                                   "imageID": "", "state": {"running": {"startedAt": now}}}]}  # fmt: skip


def template(labels: dict[str, str], outcome: str = "run", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"labels": {**labels, OUTCOME: outcome}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec}}  # fmt: skip


async def condition_of(client: api.ApiClient, resource: resources.Resource, name: str, type_: str) -> str:
    obj = await client.get(resource, name, namespace=NS)
    cond = podutil.condition(obj, type_)
    return cond.get("status", "") if cond else ""


# -- jobs --------------------------------------------------------------------------------------


def job_body(name: str, outcome: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": NS},
            "spec": {"template": template({"app": name}, outcome, restartPolicy="Never"), **spec}}  # fmt: skip


async def test_a_job_reaches_complete(cluster: Cluster, admin: api.ApiClient) -> None:
    async with controllers(cluster, job.new()), Kubelet(admin) as kubelet:
        await kubelet.add_node("node-1")
        await admin.create(resources.JOBS, job_body("pi", "succeed", completions=3, parallelism=2))

        async def complete() -> bool:
            return await condition_of(admin, resources.JOBS, "pi", "Complete") == "True"

        await eventually(complete, what="Complete")
        done = await admin.get(resources.JOBS, "pi", namespace=NS)
        status = done["status"]
        assert status["succeeded"] == 3 and status["completionTime"] and "active" not in status
        assert [c["type"] for c in status["conditions"]] == ["SuccessCriteriaMet", "Complete"]
        pods = (await admin.list(PODS, label_selector="batch.kubernetes.io/job-name=pi"))["items"]
        assert len(pods) == 3
        assert all(p["metadata"]["labels"]["controller-uid"] == done["metadata"]["uid"] for p in pods)


async def test_a_failing_job_hits_its_backoff_limit(cluster: Cluster, admin: api.ApiClient) -> None:
    async with controllers(cluster, job.JobController(backoff_base=0.1)), Kubelet(admin) as kubelet:
        await kubelet.add_node("node-1")
        await admin.create(resources.JOBS, job_body("broken", "fail", backoffLimit=2))

        async def failed() -> bool:
            return await condition_of(admin, resources.JOBS, "broken", "Failed") == "True"

        await eventually(failed, what="Failed")
        status = (await admin.get(resources.JOBS, "broken", namespace=NS))["status"]
        assert status["failed"] == 3
        reasons = {c["type"]: c["reason"] for c in status["conditions"]}
        assert reasons == {"FailureTarget": "BackoffLimitExceeded", "Failed": "BackoffLimitExceeded"}
        warnings = await admin.list(
            resources.EVENTS, namespace=NS, field_selector="reason=BackoffLimitExceeded"
        )
        assert warnings["items"]


# -- daemon sets and stateful sets -------------------------------------------------------------


async def test_a_daemonset_runs_on_every_node_including_new_ones(
    cluster: Cluster, admin: api.ApiClient
) -> None:
    body = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent", "namespace": NS},
            "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": template({"app": "agent"})}}  # fmt: skip
    async with controllers(cluster, daemonset.new()), Kubelet(admin) as kubelet:
        await kubelet.add_node("node-1")
        await kubelet.add_node("node-2")
        await admin.create(resources.DAEMONSETS, body)

        async def ready(count: int) -> bool:
            ds = await admin.get(resources.DAEMONSETS, "agent", namespace=NS)
            status = ds.get("status") or {}
            return status.get("numberReady") == count and status.get("desiredNumberScheduled") == count

        await eventually(lambda: ready(2), what="2 daemon pods ready")
        await kubelet.add_node("node-3")
        await eventually(lambda: ready(3), what="a daemon pod on the new node")
        pods = (await admin.list(PODS, label_selector="app=agent"))["items"]
        assert sorted(p["spec"]["nodeName"] for p in pods) == ["node-1", "node-2", "node-3"]
        status = (await admin.get(resources.DAEMONSETS, "agent", namespace=NS))["status"]
        assert status["updatedNumberScheduled"] == 3 and status["numberAvailable"] == 3
        assert status["observedGeneration"] == 1


async def test_a_statefulset_creates_web_0_before_web_1(cluster: Cluster, admin: api.ApiClient) -> None:
    claim = {"metadata": {"name": "www"}, "spec": {"accessModes": ["ReadWriteOnce"],
                                                   "resources": {"requests": {"storage": "1Gi"}}}}  # fmt: skip
    body = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web", "namespace": NS},
            "spec": {"replicas": 3, "serviceName": "web", "selector": {"matchLabels": {"app": "web"}},
                     "template": template({"app": "web"}), "volumeClaimTemplates": [claim]}}  # fmt: skip
    async with controllers(cluster, statefulset.new()), Kubelet(admin, ready_delay=0.5) as kubelet:
        await kubelet.add_node("node-1")
        await admin.create(resources.STATEFULSETS, body)

        async def web_0_alone() -> bool:
            names = [
                p["metadata"]["name"] for p in (await admin.list(PODS, label_selector="app=web"))["items"]
            ]
            return names == ["web-0"]

        await eventually(web_0_alone, what="web-0")
        await asyncio.sleep(0.2)
        assert await web_0_alone()  # web-1 waits while web-0 is not ready

        async def all_ready() -> bool:
            status = (await admin.get(resources.STATEFULSETS, "web", namespace=NS)).get("status") or {}
            return status.get("readyReplicas") == 3

        await eventually(all_ready, what="3 ready replicas")
        assert [n for n in kubelet.seen if n.startswith("web-")] == ["web-0", "web-1", "web-2"]
        claims = (await admin.list(resources.PERSISTENTVOLUMECLAIMS, namespace=NS))["items"]
        assert sorted(c["metadata"]["name"] for c in claims) == ["www-web-0", "www-web-1", "www-web-2"]
        status = (await admin.get(resources.STATEFULSETS, "web", namespace=NS))["status"]
        assert status["currentRevision"] == status["updateRevision"] and status["updatedReplicas"] == 3


# -- nodes -------------------------------------------------------------------------------------


async def test_a_silent_node_turns_unknown_and_its_pods_are_evicted(
    cluster: Cluster, admin: api.ApiClient
) -> None:
    unreachable = {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}
    lifecycle = nodelifecycle.NodeLifecycleController(monitor_period=0.2)
    async with controllers(cluster, lifecycle, node_monitor_grace_period=1.5), Kubelet(admin) as kubelet:
        await kubelet.add_node("alive")
        await kubelet.add_node("doomed")
        for name, tolerations in (
            ("short", [{**unreachable, "tolerationSeconds": 1}]),
            ("patient", [unreachable]),
        ):
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
                   "spec": {"nodeName": "doomed", "tolerations": tolerations,
                            "containers": [{"name": "c", "image": "busybox"}]}}  # fmt: skip
            await admin.create(PODS, pod)
        await eventually(lambda: _phase(admin, "short", "Running"), what="pods running")
        await asyncio.sleep(2.0)
        assert (await admin.get(NODES, "doomed")).get("spec", {}).get(
            "taints"
        ) is None  # the lease is renewed
        kubelet.nodes.remove("doomed")  # its kubelet dies

        async def tainted() -> bool:
            node = await admin.get(NODES, "doomed")
            return any(t["key"] == unreachable["key"] for t in (node.get("spec") or {}).get("taints") or ())

        await eventually(tainted, what="the unreachable taint")
        node = await admin.get(NODES, "doomed")
        ready = podutil.condition(node, "Ready")
        assert ready is not None and (ready["status"], ready["reason"]) == ("Unknown", "NodeStatusUnknown")
        assert ready["message"] == "Kubelet stopped posting node status."
        assert {(t["key"], t["effect"]) for t in node["spec"]["taints"]} == {
            ("node.kubernetes.io/unreachable", "NoExecute"), ("node.kubernetes.io/unreachable", "NoSchedule")}  # fmt: skip

        async def evicted() -> bool:
            short = await admin.get(PODS, "short", namespace=NS)
            return bool(short["metadata"].get("deletionTimestamp"))

        await eventually(evicted, within=5, what="the short-tolerating pod evicted")
        patient = await admin.get(PODS, "patient", namespace=NS)
        assert not patient["metadata"].get("deletionTimestamp")
        assert (await admin.get(NODES, "alive")).get("spec", {}).get("taints") is None

        kubelet.nodes.append("doomed")  # it comes back (and finishes the eviction)
        fresh = await admin.get(NODES, "doomed")
        fresh["status"] = ready_node("doomed")["status"]
        await admin.update_status(NODES, fresh)

        async def untainted() -> bool:
            return not (await admin.get(NODES, "doomed")).get("spec", {}).get("taints")

        await eventually(untainted, what="taints removed")


async def _phase(client: api.ApiClient, name: str, phase: str) -> bool:
    return (await client.get(PODS, name, namespace=NS)).get("status", {}).get("phase") == phase


# -- budgets, quotas, events -------------------------------------------------------------------


async def test_budget_and_quota_status(cluster: Cluster, admin: api.ApiClient) -> None:
    pdb = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "web", "namespace": NS},
           "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}}  # fmt: skip
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q", "namespace": NS},
             "spec": {"hard": {"pods": "10", "requests.cpu": "2", "requests.memory": "1Gi", "configmaps": "20"}}}  # fmt: skip
    async with controllers(cluster, disruption.new(), resourcequota.new()), Kubelet(admin) as kubelet:
        await kubelet.add_node("node-1")
        await admin.create(resources.PODDISRUPTIONBUDGETS, pdb)
        await admin.create(resources.RESOURCEQUOTAS, quota)
        for i in range(3):
            resources_ = {"requests": {"cpu": "100m", "memory": "64Mi"}}
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"web-{i}", "namespace": NS,
                                                                  "labels": {"app": "web"}},
                   "spec": {"containers": [{"name": "c", "image": "busybox", "resources": resources_}]}}  # fmt: skip
            await admin.create(PODS, pod)

        async def budget() -> dict[str, Any] | None:
            status = (await admin.get(resources.PODDISRUPTIONBUDGETS, "web", namespace=NS)).get(
                "status"
            ) or {}
            return status if status.get("currentHealthy") == 3 else None

        status = await eventually(budget, what="3 healthy pods")
        assert (status["desiredHealthy"], status["expectedPods"], status["disruptionsAllowed"]) == (2, 3, 1)
        assert status["conditions"][0]["reason"] == "SufficientPods"
        await admin.evict(NS, "web-0")

        async def usage() -> dict[str, Any] | None:
            used = ((await admin.get(resources.RESOURCEQUOTAS, "q", namespace=NS)).get("status") or {}).get(
                "used"
            )
            return used if used and used.get("pods") == "2" else None

        used = await eventually(usage, what="quota usage after the eviction")
        assert used["requests.cpu"] == "200m" and used["requests.memory"] == "128Mi"
        assert int(used["configmaps"]) >= 0

        async def one_short() -> bool:
            status = (await admin.get(resources.PODDISRUPTIONBUDGETS, "web", namespace=NS)).get(
                "status"
            ) or {}
            return status.get("currentHealthy") == 2 and status.get("disruptionsAllowed") == 0

        await eventually(one_short, what="no more disruptions allowed")
        with pytest.raises(errors.ApiError) as refused:
            await admin.evict(NS, "web-1")
        assert refused.value.code == 429


async def test_old_events_expire(cluster: Cluster, admin: api.ApiClient) -> None:
    """With a TTL of 2.5 s: an Event written 2 s before another expires while the other lives."""

    async def write(name: str) -> None:
        seen = podutil.format_time(datetime.datetime.now(datetime.UTC))
        body = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": NS},
                "involvedObject": {"kind": "Pod", "name": "x", "namespace": NS}, "reason": "Test", "message": "m",
                "type": "Normal", "firstTimestamp": seen, "lastTimestamp": seen, "count": 1}  # fmt: skip
        await admin.create(resources.EVENTS, body)

    async def names() -> set[str]:
        return {e["metadata"]["name"] for e in (await admin.list(resources.EVENTS, namespace=NS))["items"]}

    await write("stale.1")
    await asyncio.sleep(2.1)
    await write("fresh.1")
    async with controllers(cluster, eventttl.EventTTLController(ttl=2.5)):

        async def stale_gone() -> bool:
            left = await names()
            assert "fresh.1" in left
            return "stale.1" not in left

        await eventually(stale_gone, what="the stale event deleted")
        await eventually(lambda: _gone(admin, resources.EVENTS, "fresh.1", NS), what="the fresh one, later")


# -- cron jobs on a controllable clock ---------------------------------------------------------


async def test_a_cronjob_starts_a_job_each_minute(cluster: Cluster, admin: api.ApiClient) -> None:
    fake_clock = clock.FakeClock(datetime.datetime.now(datetime.UTC))
    body = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "tick", "namespace": NS},
            "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {
                "template": template({"app": "tick"}, "succeed", restartPolicy="Never")}}}}  # fmt: skip
    cron = cronjob.CronJobController(clock=fake_clock)
    async with controllers(cluster, cron, job.new()), Kubelet(admin) as kubelet:
        await kubelet.add_node("node-1")
        await admin.create(resources.CRONJOBS, body)
        await asyncio.sleep(0.3)
        assert (await admin.list(resources.JOBS, namespace=NS))["items"] == []
        await fake_clock.advance(61)  # past the next minute, and past a resync tick

        async def succeeded() -> dict[str, Any] | None:
            status = (await admin.get(resources.CRONJOBS, "tick", namespace=NS)).get("status") or {}
            return status if status.get("lastSuccessfulTime") else None

        status = await eventually(succeeded, what="a successful scheduled job")
        [made] = (await admin.list(resources.JOBS, namespace=NS))["items"]
        minute = datetime.datetime.fromisoformat(status["lastScheduleTime"])
        assert made["metadata"]["name"] == cronjob.job_name("tick", minute)
        assert made["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
        assert "active" not in status


# -- K3s auto-deploy manifests -----------------------------------------------------------------


async def test_manifests_are_applied_changed_skipped_and_disabled(
    cluster: Cluster, admin: api.ApiClient, tmp_path: Path
) -> None:
    manifests = addons.manifests_dir(tmp_path)
    (manifests / "extra").mkdir(parents=True)
    greeting = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: greeting, namespace: kube-system}\ndata: {text: %s}\n"
    role = "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: greeting-reader}\nrules: []\n"
    (manifests / "greeting.yaml").write_text(greeting % "hello" + role)
    (manifests / "extra" / "other.yml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}\n"
    )
    (manifests / "skipped.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: skipped}\n")
    (manifests / "skipped.yaml.skip").write_text("")
    (manifests / ".hidden.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: hidden}\n")
    controller = addons.AddonController(interval=0.2)
    async with controllers(cluster, controller, data_dir=tmp_path):

        async def text() -> str:
            try:
                return (await admin.get(resources.CONFIGMAPS, "greeting", namespace="kube-system"))["data"][
                    "text"
                ]
            except errors.ApiError:
                return ""

        assert await eventually(text, what="the manifest applied") == "hello"
        addon = await admin.get(resources.ADDONS, "greeting", namespace="kube-system")
        assert addon["spec"]["source"] == str(manifests / "greeting.yaml")
        cm = await admin.get(resources.CONFIGMAPS, "greeting", namespace="kube-system")
        assert cm["metadata"]["ownerReferences"][0]["uid"] == addon["metadata"]["uid"]
        reader_role = resources.Resource(
            "rbac.authorization.k8s.io", "v1", "clusterroles", False, "ClusterRole"
        )
        reader = await admin.get(reader_role, "greeting-reader")
        assert reader["metadata"]["annotations"][addons.OWNER_NAME] == "greeting"
        await eventually(
            lambda: _exists(admin, resources.CONFIGMAPS, "other", NS), what="the subdirectory's manifest"
        )
        assert await _exists(admin, resources.ADDONS, "other", "kube-system")
        for skipped in ("skipped", "hidden"):
            assert not await _exists(admin, resources.CONFIGMAPS, skipped, NS)

        started = time.monotonic()
        (manifests / "greeting.yaml").write_text(greeting % "changed")  # the ClusterRole left the file

        async def changed() -> bool:
            return await text() == "changed"

        await eventually(changed, within=15, what="the change applied")
        assert time.monotonic() - started < 15
        await eventually(
            lambda: _gone(admin, reader_role, "greeting-reader", ""), what="the dropped object pruned"
        )
        events_ = (await admin.list(resources.EVENTS, namespace="kube-system"))["items"]
        reasons = {e["reason"] for e in events_ if e["involvedObject"].get("name") == "greeting"}
        assert {"ApplyingManifest", "AppliedManifest"} <= reasons

        controller.disabled.add("greeting")  # what --disable greeting does at the next start
        await eventually(
            lambda: _gone(admin, resources.ADDONS, "greeting", "kube-system"), what="the Addon removed"
        )
        assert not (manifests / "greeting.yaml").exists()
        assert await _gone(admin, resources.CONFIGMAPS, "greeting", "kube-system")


async def _exists(client: api.ApiClient, resource: resources.Resource, name: str, namespace: str) -> bool:
    try:
        await client.get(resource, name, namespace=namespace or None)
    except errors.ApiError as exc:
        if errors.is_not_found(exc):
            return False
        raise
    return True


async def _gone(client: api.ApiClient, resource: resources.Resource, name: str, namespace: str) -> bool:
    return not await _exists(client, resource, name, namespace)
