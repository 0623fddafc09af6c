"""Node lifecycle: silent nodes turn Unknown and tainted, their pods are evicted, orphans collected.

Three upstream controllers in one, because they read the same caches:

- **health** (``node_lifecycle_controller``): a node is alive while its Lease in
  ``kube-node-lease`` is renewed or its Ready condition's heartbeat moves. Liveness is judged
  by when *this* process saw the change (its own clock), not by timestamps the node wrote, so
  clock skew cannot hide a dead node. After ``node_monitor_grace_period`` of silence (50 s;
  ``node_startup_grace_period`` for a node that never reported Ready) its Ready, MemoryPressure,
  DiskPressure and PIDPressure conditions become Unknown ("Kubelet stopped posting node
  status."), and its pods' Ready conditions False. Taints follow the Ready condition:
  ``node.kubernetes.io/unreachable:NoExecute`` when Unknown, ``not-ready:NoExecute`` when False,
  neither when True; with NoSchedule taints for the conditions as ``TaintNodesByCondition`` does.
- **taint eviction** (``tainteviction``): a pod on a node with NoExecute taints is deleted at
  once if it does not tolerate one of them, else when the shortest ``tolerationSeconds`` among
  the tolerations it uses has passed since the taint was added (``timeAdded``).
- **pod GC** (``podgc``): pods bound to a node that no longer exists are force-deleted
  (grace 0, after the API confirms the node is gone), so do unscheduled pods being deleted;
  finished pods beyond ``terminated_pod_threshold`` go oldest first.

Work is per node name on the queue; a monitor tick every ``monitor_period`` seconds (on the
controller's clock) queues every node, which is how silence is noticed at all.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
from typing import Any

from services.client import clock as clock_
from services.client import errors, resources, store, types
from services.controllers import base, podutil
from services.machinery import tasks

log = logging.getLogger(__name__)

NODE_INDEX = "node-name"
LEASE_NAMESPACE = "kube-node-lease"
MONITOR_PERIOD = 5.0  # seconds: kube-controller-manager's --node-monitor-period
TERMINATED_POD_THRESHOLD = 12500  # --terminated-pod-gc-threshold
UNREACHABLE = "node.kubernetes.io/unreachable"
NOT_READY = "node.kubernetes.io/not-ready"
WATCHED_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")
# Node condition (type, status) -> the NoSchedule taint it brings (TaintNodesByCondition).
CONDITION_TAINTS = {
    ("Ready", "False"): NOT_READY,
    ("Ready", "Unknown"): UNREACHABLE,
    ("MemoryPressure", "True"): "node.kubernetes.io/memory-pressure",
    ("DiskPressure", "True"): "node.kubernetes.io/disk-pressure",
    ("PIDPressure", "True"): "node.kubernetes.io/pid-pressure",
    ("NetworkUnavailable", "True"): "node.kubernetes.io/network-unavailable",
}
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
MANAGED_NO_SCHEDULE = frozenset([*CONDITION_TAINTS.values(), UNSCHEDULABLE])
MANAGED_NO_EXECUTE = frozenset([UNREACHABLE, NOT_READY])


@dataclasses.dataclass
class _Health:
    probe: float  # monotonic time we last saw the node alive (or first saw it)
    lease: str = ""  # the Lease renewTime last seen
    heartbeat: str = ""  # the Ready condition's lastHeartbeatTime last seen


def _seconds(value: Any, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    return float(value)


def tolerates(toleration: dict[str, Any], taint: dict[str, Any]) -> bool:
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    if key and key != taint.get("key"):
        return False
    if (toleration.get("operator") or "Equal") == "Exists":
        return True
    return bool(key) and (toleration.get("value") or "") == (taint.get("value") or "")


def toleration_time(pod: dict[str, Any], taints: list[dict[str, Any]]) -> float | None:
    """Seconds the pod may stay despite ``taints`` (NoExecute): 0 if one is not tolerated,
    None if forever (upstream's ``getMinTolerationTime`` over the tolerations in use)."""
    tolerations = (pod.get("spec") or {}).get("tolerations") or []
    shortest: float | None = None
    for taint in taints:
        used = [t for t in tolerations if tolerates(t, taint)]
        if not used:
            return 0.0
        for toleration in used:
            seconds = toleration.get("tolerationSeconds")
            if seconds is not None:
                seconds = max(float(seconds), 0.0)
                shortest = seconds if shortest is None else min(shortest, seconds)
    return shortest


def _condition(node: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return podutil.condition(node, type_)


class NodeLifecycleController(base.QueueController):
    name = "nodelifecycle"
    workers = 2

    def __init__(
        self,
        *,
        clock: types.Clock | None = None,
        monitor_period: float = MONITOR_PERIOD,
        terminated_pod_threshold: int = TERMINATED_POD_THRESHOLD,
    ) -> None:
        super().__init__()
        self.clock = clock or clock_.RealClock()
        self.monitor_period = monitor_period
        self.terminated_pod_threshold = terminated_pod_threshold
        self._health: dict[str, _Health] = {}
        # When each NoExecute taint without a timeAdded was first seen: (node, key, value).
        self._tainted_since: dict[tuple[str, str, str], datetime.datetime] = {}

    def setup(self, ctx: base.ControllerContext) -> None:
        super().setup(ctx)
        settings = ctx.settings
        self.grace = _seconds(getattr(settings, "node_monitor_grace_period", None), 50.0)
        self.startup_grace = _seconds(getattr(settings, "node_startup_grace_period", None), 60.0)
        self.nodes = ctx.informers.informer(resources.NODES)
        self.leases = ctx.informers.informer(resources.LEASES, namespace=LEASE_NAMESPACE)
        self.pods = ctx.informers.informer(resources.PODS, indexers={NODE_INDEX: store.pods_by_node})
        self.nodes.add_handlers(on_add=self._node_seen, on_update=lambda _o, n: self._node_seen(n),
                                on_delete=self._node_deleted)  # fmt: skip
        self.leases.add_handlers(on_add=self._lease_seen, on_update=lambda _o, n: self._lease_seen(n))
        self.pods.add_handlers(on_add=self._pod_seen, on_update=lambda _o, n: self._pod_seen(n))

    # -- handlers ------------------------------------------------------------------------------

    def _health_of(self, name: str) -> _Health:
        health = self._health.get(name)
        if health is None:
            health = self._health[name] = _Health(self.clock.monotonic())
        return health

    def _node_seen(self, node: dict[str, Any]) -> None:
        name = node["metadata"]["name"]
        health = self._health_of(name)
        beat = (_condition(node, "Ready") or {}).get("lastHeartbeatTime") or ""
        if beat and beat != health.heartbeat:
            health.heartbeat, health.probe = beat, self.clock.monotonic()
        self.queue.add(name)

    def _node_deleted(self, node: dict[str, Any]) -> None:
        self._health.pop(node["metadata"]["name"], None)
        for gone in [k for k in self._tainted_since if k[0] == node["metadata"]["name"]]:
            del self._tainted_since[gone]
        self.queue.add(node["metadata"]["name"])  # its pods are now orphans

    def _lease_seen(self, lease: dict[str, Any]) -> None:
        name = lease["metadata"]["name"]
        renewed = (lease.get("spec") or {}).get("renewTime") or ""
        health = self._health_of(name)
        if renewed and renewed != health.lease:
            health.lease, health.probe = renewed, self.clock.monotonic()
            ready = _condition(self.nodes.store.get(name) or {}, "Ready") or {}
            if ready.get("status") == "Unknown":
                self.queue.add(name)  # it is back: let its status and taints catch up soon

    def _pod_seen(self, pod: dict[str, Any]) -> None:
        node_name = (pod.get("spec") or {}).get("nodeName")
        if not node_name:
            return
        node = self.nodes.store.get(node_name)
        if node is None or any(
            t.get("effect") == "NoExecute" for t in (node.get("spec") or {}).get("taints") or ()
        ):
            self.queue.add(node_name)

    # -- the monitor ---------------------------------------------------------------------------

    async def run(self) -> None:
        ticker = tasks.guarded(self._monitor(), name="node monitor")
        try:
            await super().run()
        finally:
            await tasks.cancel_all([ticker])

    async def _monitor(self) -> None:
        while True:
            await self.clock.sleep(self.monitor_period)
            self.tick()
            await self.collect_pods()
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # Python 3.11's wait_for may swallow a cancellation inside a request (gh-86296).
                raise asyncio.CancelledError

    def tick(self) -> None:
        """Queue every node, and every node name a pod is bound to (it may be gone)."""
        for name in {*self.nodes.store.keys(), *self.pods.store.index_values(NODE_INDEX)}:
            self.queue.add(name)

    # -- reconcile -----------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        node = self.nodes.store.get(key)
        if node is None:
            await self._collect_orphans(key)
            return
        node = await self._check_health(node)
        node = await self._sync_taints(node)
        await self._evict(node)

    async def _check_health(self, node: dict[str, Any]) -> dict[str, Any]:
        name = node["metadata"]["name"]
        health = self._health_of(name)
        ready = _condition(node, "Ready")
        grace = self.grace if ready is not None else self.startup_grace
        silent = self.clock.monotonic() - health.probe
        if silent <= grace:
            self.queue.add_after(name, grace - silent + 0.01)
            return node
        changed = store.copy(node)
        now = podutil.format_time(self.clock.now())
        conditions = changed.setdefault("status", {}).setdefault("conditions", [])
        dirty = False
        for type_ in WATCHED_CONDITIONS:
            current = next((c for c in conditions if c.get("type") == type_), None)
            if current is None:
                conditions.append({"type": type_, "status": "Unknown", "reason": "NodeStatusNeverUpdated",
                                   "message": "Kubelet never posted node status.",
                                   "lastHeartbeatTime": node["metadata"].get("creationTimestamp", now),
                                   "lastTransitionTime": now})  # fmt: skip
                dirty = True
            elif current.get("status") != "Unknown":
                current.update(status="Unknown", reason="NodeStatusUnknown",
                               message="Kubelet stopped posting node status.", lastTransitionTime=now)  # fmt: skip
                dirty = True
        if not dirty:
            return node
        assert self.ctx is not None
        log.info("node %s: no status for %.0fs; marking it Unknown", name, silent)
        updated = await self.ctx.api.update_status(resources.NODES, changed)
        self.ctx.recorder.normal(node, "NodeNotReady", f"Node {name} status is now: NodeNotReady")
        await self._mark_pods_not_ready(name)
        return updated

    async def _mark_pods_not_ready(self, node_name: str) -> None:
        assert self.ctx is not None
        now = podutil.format_time(self.clock.now())
        for pod in self.pods.store.by_index(NODE_INDEX, node_name):
            ready = podutil.condition(pod, "Ready")
            if ready is None or ready.get("status") == "False" or podutil.is_terminal(pod):
                continue
            changed = store.copy(pod)
            for cond in changed["status"]["conditions"]:
                if cond.get("type") == "Ready":
                    cond.update(status="False", lastTransitionTime=now)
            try:
                await self.ctx.api.update_status(resources.PODS, changed)
            except errors.ApiError as exc:
                if exc.code not in (404, 409):
                    raise

    async def _sync_taints(self, node: dict[str, Any]) -> dict[str, Any]:
        spec = node.get("spec") or {}
        taints = list(spec.get("taints") or [])
        wanted: list[tuple[str, str]] = [
            (key, "NoSchedule")
            for (type_, status), key in CONDITION_TAINTS.items()
            if (_condition(node, type_) or {}).get("status") == status
        ]
        if spec.get("unschedulable"):
            wanted.append((UNSCHEDULABLE, "NoSchedule"))
        ready = (_condition(node, "Ready") or {}).get("status")
        if ready in ("Unknown", "False"):
            wanted.append((UNREACHABLE if ready == "Unknown" else NOT_READY, "NoExecute"))
        managed = {(t.get("key"), t.get("effect")) for t in taints if _managed(t)}
        if managed == set(wanted):
            return node
        now = podutil.format_time(self.clock.now())
        kept = [t for t in taints if not _managed(t) or (t.get("key"), t.get("effect")) in wanted]
        for key, effect in wanted:
            if (key, effect) not in managed:
                kept.append(
                    {"key": key, "effect": effect, **({"timeAdded": now} if effect == "NoExecute" else {})}
                )
        assert self.ctx is not None
        changed = store.copy(node)
        changed.setdefault("spec", {})["taints"] = kept
        if not kept:
            del changed["spec"]["taints"]
        log.info("node %s: taints now %s", node["metadata"]["name"],
                 [f"{t['key']}:{t['effect']}" for t in kept] or "none")  # fmt: skip
        return await self.ctx.api.update(resources.NODES, changed)

    async def _evict(self, node: dict[str, Any]) -> None:
        taints = [t for t in (node.get("spec") or {}).get("taints") or () if t.get("effect") == "NoExecute"]
        name = node["metadata"]["name"]
        current = {(name, t.get("key", ""), t.get("value", "")) for t in taints}
        for gone in [k for k in self._tainted_since if k[0] == name and k not in current]:
            del self._tainted_since[gone]
        if not taints:
            return
        assert self.ctx is not None
        now = self.clock.now()
        since = min(self._taint_time(name, t, now) for t in taints)
        soonest: float | None = None
        for pod in self.pods.store.by_index(NODE_INDEX, name):
            if podutil.is_deleting(pod) or podutil.is_terminal(pod):
                continue
            allowed = toleration_time(pod, taints)
            if allowed is None:
                continue
            left = (since - now).total_seconds() + allowed
            if left > 0:
                soonest = left if soonest is None else min(soonest, left)
                continue
            await self._evict_pod(pod)
        if soonest is not None:
            self.queue.add_after(name, soonest + 0.01)

    def _taint_time(self, node_name: str, taint: dict[str, Any], now: datetime.datetime) -> datetime.datetime:
        """When a NoExecute taint was added: ``timeAdded``, else when this process first saw it."""
        added = podutil.parse_time(taint.get("timeAdded"))
        if added is not None:
            return added
        return self._tainted_since.setdefault((node_name, taint.get("key", ""), taint.get("value", "")), now)

    async def _evict_pod(self, pod: dict[str, Any]) -> None:
        assert self.ctx is not None
        md = pod["metadata"]
        log.info(
            "evicting pod %s/%s from tainted node %s",
            md["namespace"],
            md["name"],
            pod["spec"].get("nodeName"),
        )
        self.ctx.recorder.normal(
            pod, "TaintManagerEviction", f"Marking for deletion Pod {md['namespace']}/{md['name']}"
        )
        await self._disruption_target(
            pod, "DeletionByTaintManager", "Taint manager: deleting due to NoExecute taint"
        )
        await self._delete(pod)

    # -- pod garbage collection ----------------------------------------------------------------

    async def _collect_orphans(self, node_name: str) -> None:
        pods = self.pods.store.by_index(NODE_INDEX, node_name)
        if not pods:
            return
        assert self.ctx is not None
        try:
            await self.ctx.api.get(resources.NODES, node_name)
            return  # the cache lags: the node is there
        except errors.ApiError as exc:
            if not errors.is_not_found(exc):
                raise
        for pod in pods:
            md = pod["metadata"]
            log.info("pod GC: deleting pod %s/%s of deleted node %s", md["namespace"], md["name"], node_name)
            await self._disruption_target(pod, "DeletionByPodGC", "PodGC: node no longer exists")
            await self._delete(pod, force=True)

    async def collect_pods(self) -> None:
        """Unscheduled pods being deleted, and finished pods beyond the threshold."""
        terminated: list[dict[str, Any]] = []
        for pod in self.pods.store.list():
            if podutil.is_deleting(pod) and not (pod.get("spec") or {}).get("nodeName"):
                await self._delete(pod, force=True)
            elif podutil.is_terminal(pod):
                terminated.append(pod)
        excess = len(terminated) - self.terminated_pod_threshold
        if excess > 0:
            terminated.sort(key=lambda p: p["metadata"].get("creationTimestamp", ""))
            for pod in terminated[:excess]:
                await self._delete(pod, force=True)

    async def _disruption_target(self, pod: dict[str, Any], reason: str, message: str) -> None:
        assert self.ctx is not None
        changed = store.copy(pod)
        conditions = changed.setdefault("status", {}).setdefault("conditions", [])
        now = podutil.format_time(self.clock.now())
        conditions[:] = [c for c in conditions if c.get("type") != "DisruptionTarget"]
        conditions.append({"type": "DisruptionTarget", "status": "True", "reason": reason, "message": message,
                           "lastTransitionTime": now})  # fmt: skip
        try:
            await self.ctx.api.update_status(resources.PODS, changed)
        except errors.ApiError as exc:
            if exc.code not in (404, 409):
                raise

    async def _delete(self, pod: dict[str, Any], *, force: bool = False) -> None:
        assert self.ctx is not None
        md = pod["metadata"]
        try:
            await self.ctx.api.delete(resources.PODS, md["name"], namespace=md["namespace"],
                                      grace_period_seconds=0 if force else None,
                                      preconditions={"uid": md["uid"]})  # fmt: skip
        except errors.ApiError as exc:
            if exc.code not in (404, 409):
                raise


def _managed(taint: dict[str, Any]) -> bool:
    key, effect = taint.get("key"), taint.get("effect")
    return (effect == "NoSchedule" and key in MANAGED_NO_SCHEDULE) or (
        effect == "NoExecute" and key in MANAGED_NO_EXECUTE
    )


def new() -> base.Controller:
    return NodeLifecycleController()
