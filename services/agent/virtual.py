"""Virtual nodes (``--virtual-nodes N``): N Ready nodes from one process, whose pods run nothing.

Like kwok: each node is registered with the same shapes a real agent posts (``node``), its Lease
renewed and its Ready heartbeat posted, and every pod bound to one of them is reported Running
with a full kubelet-like status (conditions, containerStatuses with ``state.running``, ready,
started, restartCount 0, image and imageID; hostIP; podIP from the node's podCIDR, or the host
IP when it has none or the pod uses the host network; qosClass). A pod that runs to completion
(restartPolicy Never or OnFailure, as a Job's) then succeeds: its containers terminate with exit
code 0, as kwok's default stages have it. A pod being deleted gets the final delete (grace 0) at
once, as a kubelet does once its containers have stopped.

Cheap at 1,000 nodes: one pod informer and one node informer for all of them (not N watches);
a work queue of pod keys with a few workers; Lease renewals as one small merge patch per node,
and heartbeats once per ``status_report_interval``, both with bounded concurrency. Pod IPs are
kept in memory per node; after a restart, pods that already have an IP keep it.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from services.agent import node as node_
from services.client import errors, informer, resources, store, workqueue
from services.client import types as client_types
from services.machinery import tasks

log = logging.getLogger(__name__)

VIRTUAL_LABEL = "k3s.io/virtual-node"
RUNTIME_VERSION = "virtual://0.1.0"
CAPACITY = {
    "cpu": "32",
    "memory": "131072Mi",
    "ephemeral-storage": "1Ti",
    "hugepages-1Gi": "0",
    "hugepages-2Mi": "0",
}
WORKERS = 8
CONCURRENCY = 32  # API requests in flight for registrations, renewals and heartbeats
Obj = dict[str, Any]


def node_names(base: str, count: int) -> list[str]:
    return [f"{base}-{i}" for i in range(count)]


def qos_class(pod: Obj) -> str:
    """Guaranteed, Burstable or BestEffort, from the containers' requests and limits."""
    spec = pod.get("spec") or {}
    containers = [*(spec.get("initContainers") or ()), *(spec.get("containers") or ())]
    any_set, guaranteed = False, True
    for container in containers:
        res = container.get("resources") or {}
        requests, limits = res.get("requests") or {}, res.get("limits") or {}
        if requests or limits:
            any_set = True
        for kind in ("cpu", "memory"):
            if kind not in limits or requests.get(kind, limits[kind]) != limits[kind]:
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def _digest(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()


def container_status(pod_uid: str, container: Obj, *, started_at: str, init: bool = False) -> Obj:
    image = container.get("image", "")
    status: Obj = {
        "name": container["name"],
        "image": image,
        "imageID": f"sha256:{_digest('image', image)}",
        "containerID": f"virtual://{_digest(pod_uid, container['name'])}",
        "lastState": {},
        "restartCount": 0,
    }
    if init and container.get("restartPolicy") != "Always":  # a sidecar keeps running; others completed
        status["state"] = {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": started_at,
                                          "finishedAt": started_at}}  # fmt: skip
        status.update(ready=True, started=False)
    else:
        status["state"] = {"running": {"startedAt": started_at}}
        status.update(ready=True, started=True)
    return status


def pod_status(pod: Obj, *, host_ip: str, pod_ip: str) -> Obj:
    """The status a kubelet posts for a pod whose containers all run and are ready."""
    stamp = node_.now_iso()
    current = pod.get("status") or {}
    started = current.get("startTime") or stamp
    uid = pod["metadata"].get("uid", "")
    spec = pod.get("spec") or {}
    scheduled = next((c for c in current.get("conditions") or () if c.get("type") == "PodScheduled"), None)
    conditions = [{"type": kind, "status": "True", "lastProbeTime": None, "lastTransitionTime": stamp}
                  for kind in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady")]  # fmt: skip
    conditions.append(scheduled or {"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                                    "lastTransitionTime": stamp})  # fmt: skip
    status: Obj = {
        "phase": "Running",
        "conditions": conditions,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": started,
        "qosClass": qos_class(pod),
        "containerStatuses": [
            container_status(uid, c, started_at=started) for c in spec.get("containers") or ()
        ],
    }
    if spec.get("initContainers"):
        status["initContainerStatuses"] = [
            container_status(uid, c, started_at=started, init=True) for c in spec["initContainers"]
        ]
    return status


def runs_to_completion(pod: Obj) -> bool:
    """Pods whose restartPolicy is Never or OnFailure (Jobs') exit 0 once Running, as kwok's do."""
    return (pod.get("spec") or {}).get("restartPolicy", "Always") in ("Never", "OnFailure")


def completed_status(pod: Obj) -> Obj:
    """The status of a Running pod whose containers all exited 0: phase Succeeded, not ready."""
    status = pod.get("status") or {}
    stamp = node_.now_iso()
    conditions = [
        {**c, "status": "False", "reason": "PodCompleted", "lastTransitionTime": stamp}
        if c.get("type") in ("Ready", "ContainersReady") else c
        for c in status.get("conditions") or ()
    ]  # fmt: skip
    containers = []
    for container in status.get("containerStatuses") or ():
        started = ((container.get("state") or {}).get("running") or {}).get("startedAt", stamp)
        terminated = {"exitCode": 0, "reason": "Completed", "startedAt": started, "finishedAt": stamp,
                      "containerID": container.get("containerID", "")}  # fmt: skip
        containers.append(
            {**container, "state": {"terminated": terminated}, "ready": False, "started": False}
        )
    return {"phase": "Succeeded", "conditions": conditions, "containerStatuses": containers}


def is_reported(pod: Obj) -> bool:
    """Whether the pod already carries our Running status (nothing to post)."""
    status = pod.get("status") or {}
    containers = (pod.get("spec") or {}).get("containers") or ()
    return (status.get("phase") == "Running" and bool(status.get("hostIP"))
            and len(status.get("containerStatuses") or ()) == len(containers))  # fmt: skip


class PodIPs:
    """Pod addresses per node from its podCIDR: the lowest free host address from .2 up."""

    def __init__(self) -> None:
        self._used: dict[str, dict[str, str]] = {}  # node -> ip -> pod uid
        self._of: dict[str, tuple[str, str]] = {}  # pod uid -> (node, ip)

    def adopt(self, node: str, uid: str, ip: str) -> None:
        self._used.setdefault(node, {})[ip] = uid
        self._of[uid] = (node, ip)

    def assign(self, node: str, uid: str, cidr: str) -> str | None:
        if uid in self._of:
            return self._of[uid][1]
        used = self._used.setdefault(node, {})
        network = ipaddress.ip_network(cidr, strict=False)
        for index, address in enumerate(network.hosts()):
            if index == 0:
                continue  # .1 is the bridge's, as on a flannel node
            if str(address) not in used:
                self.adopt(node, uid, str(address))
                return str(address)
        return None

    def release(self, uid: str) -> None:
        found = self._of.pop(uid, None)
        if found is not None:
            self._used.get(found[0], {}).pop(found[1], None)


class VirtualNodes:
    """``start()`` registers the nodes and returns once they and the caches are ready."""

    def __init__(
        self,
        api: client_types.Api,
        *,
        names: Sequence[str],
        node_ip: str,
        labels: dict[str, str] | None = None,
        taints: Sequence[Obj] = (),
        max_pods: int = 110,
        lease_duration: int = 40,
        lease_renew_interval: float = 10.0,
        status_report_interval: float = 60.0,
        on_failure: Callable[[BaseException | None], None] | None = None,
    ) -> None:
        self.api = api
        self.names = list(names)
        self._ours = frozenset(self.names)
        self.node_ip = node_ip
        self.labels = dict(labels or {})
        self.taints = list(taints)
        self.max_pods = max_pods
        self.lease_duration = lease_duration
        self.lease_renew_interval = lease_renew_interval
        self.status_report_interval = status_report_interval
        self._on_failure = on_failure
        self.ips = PodIPs()
        self.queue: workqueue.WorkQueue[str] = workqueue.WorkQueue(name="virtual pods")
        self._informers = informer.InformerFactory(api, on_failure=on_failure)
        self._pods = self._informers.informer(resources.PODS, field_selector="spec.nodeName!=")
        self._nodes = self._informers.informer(resources.NODES, label_selector=f"{VIRTUAL_LABEL}=true")
        self._conditions = node_.Conditions()  # one set for all: the virtual nodes are always healthy
        self._tasks: list[asyncio.Task[Any]] = []

    async def start(self) -> None:
        await _bounded((self._register(name) for name in self.names), CONCURRENCY)
        self._pods.add_handlers(on_add=self._enqueue, on_update=lambda old, new: self._enqueue(new),
                                on_delete=self._forget)  # fmt: skip
        await self._informers.start()
        self._tasks = [
            tasks.guarded(workqueue.run_worker(self.queue, self.reconcile), name=f"virtual pods worker {i}",
                          on_failure=self._on_failure)
            for i in range(WORKERS)
        ]  # fmt: skip
        self._tasks.append(tasks.guarded(self._every(self.lease_renew_interval, self._renew_leases),
                                         name="virtual node leases", on_failure=self._on_failure))  # fmt: skip
        self._tasks.append(tasks.guarded(self._every(self.status_report_interval, self._heartbeats),
                                         name="virtual node status", on_failure=self._on_failure))  # fmt: skip
        log.info("%d virtual nodes ready (%s ... %s)", len(self.names), self.names[0], self.names[-1])

    async def stop(self) -> None:
        self.queue.shutdown()
        await tasks.cancel_all(self._tasks)
        await self._informers.stop()

    # -- nodes ------------------------------------------------------------------------------------

    def _status(self) -> Obj:
        return {
            "capacity": {**CAPACITY, "pods": str(self.max_pods)},
            "allocatable": {**CAPACITY, "pods": str(self.max_pods)},
            "conditions": self._conditions.compute({}),
            "addresses": [{"type": "InternalIP", "address": self.node_ip}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": node_.KUBELET_PORT}},
            "nodeInfo": {
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": "",
                "osImage": "virtual",
                "containerRuntimeVersion": RUNTIME_VERSION,
                "kubeletVersion": node_.KUBELET_VERSION,
                "kubeProxyVersion": node_.KUBELET_VERSION,
                "operatingSystem": "linux",
                "architecture": "amd64",
            },  # fmt: skip
        }

    async def _register(self, name: str) -> None:
        labels = {**node_.labels_for(name), "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                  VIRTUAL_LABEL: "true", **self.labels}  # fmt: skip
        status = self._status()
        status["addresses"] = [*status["addresses"], {"type": "Hostname", "address": name}]
        body = node_.node_object(name, labels=labels, taints=self.taints, status=status)
        try:
            created = await self.api.create(resources.NODES, body)
        except errors.ApiError as exc:
            if not errors.is_already_exists(exc):
                raise
            created = await self.api.patch(resources.NODES, name, {"metadata": {"labels": labels}})
            await self.api.patch(resources.NODES, name, {"status": status}, subresource="status")
        lease = node_.lease_object(
            name, node_uid=created["metadata"].get("uid", ""), duration=self.lease_duration
        )
        try:
            await self.api.create(resources.LEASES, lease, namespace=node_.LEASE_NAMESPACE)
        except errors.ApiError as exc:
            if not errors.is_already_exists(exc):
                raise
            await self._renew(name)

    async def _renew(self, name: str) -> None:
        patch = {"spec": {"holderIdentity": name, "renewTime": node_.now_micro()}}
        try:
            await self.api.patch(resources.LEASES, name, patch, namespace=node_.LEASE_NAMESPACE)
        except errors.ApiError as exc:
            if exc.code != 404:
                raise
            lease = node_.lease_object(name, node_uid="", duration=self.lease_duration)
            await self.api.create(resources.LEASES, lease, namespace=node_.LEASE_NAMESPACE)

    async def _renew_leases(self) -> None:
        await _bounded((self._renew(name) for name in self.names), CONCURRENCY)

    async def _heartbeats(self) -> None:
        status = {"status": {"conditions": self._conditions.compute({})}}
        await _bounded(
            (self.api.patch(resources.NODES, name, status, subresource="status") for name in self.names),
            CONCURRENCY,
        )

    async def _every(self, interval: float, action: Callable[[], Awaitable[Any]]) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await action()
            except errors.ClientError as exc:  # one refused request must not stop the nodes
                log.warning("virtual nodes: %s", exc)

    # -- pods -------------------------------------------------------------------------------------

    def _enqueue(self, pod: Obj) -> None:
        if (pod.get("spec") or {}).get("nodeName") in self._ours:
            self.queue.add(store.key_of(pod))

    def _forget(self, pod: Obj) -> None:
        self.ips.release(pod["metadata"].get("uid", ""))

    async def reconcile(self, key: str) -> None:
        pod = self._pods.store.get(key)
        if pod is None:
            return
        meta, status = pod["metadata"], pod.get("status") or {}
        if meta.get("deletionTimestamp"):
            await self._finish_delete(pod)
            return
        if status.get("phase") in ("Succeeded", "Failed"):
            self.ips.release(meta.get("uid", ""))  # a finished pod's address may be reused, as upstream
            return
        node = pod["spec"]["nodeName"]
        if status.get("podIP"):
            self.ips.adopt(node, meta.get("uid", ""), status["podIP"])
        if is_reported(pod):
            if not runs_to_completion(pod):
                return
            body = {"status": completed_status(pod)}
        else:
            body = {"status": pod_status(pod, host_ip=self.node_ip, pod_ip=self._pod_ip(pod, node))}
        try:
            await self.api.patch(
                resources.PODS, meta["name"], body, namespace=meta["namespace"], subresource="status"
            )
        except errors.ApiError as exc:
            if exc.code != 404:
                raise

    def _pod_ip(self, pod: Obj, node: str) -> str:
        if (pod.get("spec") or {}).get("hostNetwork"):
            return self.node_ip
        known = (pod.get("status") or {}).get("podIP")
        if known:
            return known
        node_obj = self._nodes.store.get(node)
        cidr = ((node_obj or {}).get("spec") or {}).get("podCIDR")
        if not cidr:
            return self.node_ip
        return self.ips.assign(node, pod["metadata"].get("uid", ""), cidr) or self.node_ip

    async def _finish_delete(self, pod: Obj) -> None:
        meta = pod["metadata"]
        try:
            await self.api.delete(resources.PODS, meta["name"], namespace=meta["namespace"], grace_period_seconds=0,
                                  preconditions={"uid": meta.get("uid", "")})  # fmt: skip
        except errors.ApiError as exc:
            if exc.code not in (404, 409):
                raise
        self.ips.release(meta.get("uid", ""))


async def _bounded(calls: Iterable[Awaitable[Any]], limit: int) -> None:
    """Await every call with at most ``limit`` in flight; the first failure is raised after all end."""
    semaphore = asyncio.Semaphore(limit)

    async def one(call: Awaitable[Any]) -> None:
        async with semaphore:
            await call

    results = await asyncio.gather(*(one(c) for c in calls), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
