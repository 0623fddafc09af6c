"""The DaemonSet controller: one pod per eligible node, rolled by revision.

Each pass over a DaemonSet works from the informers' caches:

1. find or create the ControllerRevision of the current template (``revisions``); its hash
   labels the pods made from it;
2. decide per node whether a daemon pod should run there (node name, node selector, required
   node affinity, NoSchedule/NoExecute taints against the pod's tolerations) and whether an
   existing one may keep running (only NoExecute taints and affinity evict);
3. create the missing pods, pinned to their node by a required node affinity on
   ``metadata.name`` (the default scheduler binds them, as upstream since 1.12), and delete
   the surplus: extra pods on a node, failed pods, pods on nodes they no longer fit;
4. roll out a new template under ``maxUnavailable`` and ``maxSurge``;
5. write the status ``kubectl rollout status`` reads.

Pod creation is counted in "expectations" (client-go's): until the informer has seen every
pod this controller created or deleted for a DaemonSet, the DaemonSet is not managed again,
so a pass that runs before the cache caught up does not create a second pod for a node.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from services.client import clock as clock_
from services.client import errors, resources, store, types
from services.controllers import base, nodelifecycle, podutil, revisions

log = logging.getLogger(__name__)

TEMPLATE_GENERATION_LABEL = "pod-template-generation"

# The tolerations upstream adds to every daemon pod (``util.AddOrUpdateDaemonPodTolerations``):
# daemons keep running through node trouble and on cordoned nodes.
DAEMON_TOLERATIONS = (
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
)
HOST_NETWORK_TOLERATION = {
    "key": "node.kubernetes.io/network-unavailable",
    "operator": "Exists",
    "effect": "NoSchedule",
}


# -- scheduling predicates ---------------------------------------------------------------------


def untolerated(
    taints: list[dict[str, Any]], tolerations: list[dict[str, Any]], effects: tuple[str, ...]
) -> list:
    return [
        t
        for t in taints
        if t.get("effect") in effects and not any(nodelifecycle.tolerates(tol, t) for tol in tolerations)
    ]


def _expression_matches(expr: dict[str, Any], value: str | None) -> bool:
    op, values = expr.get("operator"), expr.get("values") or []
    if op == "In":
        return value is not None and value in values
    if op == "NotIn":
        return value is None or value not in values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if op in ("Gt", "Lt") and value is not None and len(values) == 1:
        try:
            have, want = int(value), int(values[0])
        except ValueError:
            return False
        return have > want if op == "Gt" else have < want
    return False


def _term_matches(term: dict[str, Any], node: dict[str, Any]) -> bool:
    exprs, fields = term.get("matchExpressions") or [], term.get("matchFields") or []
    if not exprs and not fields:
        return False  # an empty term matches no node
    labels = node["metadata"].get("labels") or {}
    name = node["metadata"]["name"]
    return all(_expression_matches(e, labels.get(e.get("key", ""))) for e in exprs) and all(
        _expression_matches(f, name if f.get("key") == "metadata.name" else None) for f in fields
    )


def fits_node_affinity(pod_spec: dict[str, Any], node: dict[str, Any]) -> bool:
    """``nodeSelector`` and required node affinity (terms ORed, expressions ANDed)."""
    labels = node["metadata"].get("labels") or {}
    if any(labels.get(k) != v for k, v in (pod_spec.get("nodeSelector") or {}).items()):
        return False
    required = (((pod_spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ))  # fmt: skip
    if required is None:
        return True
    return any(_term_matches(term, node) for term in required.get("nodeSelectorTerms") or ())


def should_run(pod_spec: dict[str, Any], node: dict[str, Any]) -> tuple[bool, bool]:
    """``(should run, may keep running)`` for a daemon pod with ``pod_spec`` on ``node``."""
    if pod_spec.get("nodeName") and pod_spec["nodeName"] != node["metadata"]["name"]:
        return False, False
    if not fits_node_affinity(pod_spec, node):
        return False, False
    taints = (node.get("spec") or {}).get("taints") or []
    tolerations = pod_spec.get("tolerations") or []
    if untolerated(taints, tolerations, ("NoExecute",)):
        return False, False
    return not untolerated(taints, tolerations, ("NoSchedule",)), True


# -- pods --------------------------------------------------------------------------------------


def daemon_pod_spec(template_spec: dict[str, Any]) -> dict[str, Any]:
    """The template's pod spec with the daemon tolerations added (what eligibility is judged on)."""
    spec = store.copy(template_spec)
    tolerations = spec.setdefault("tolerations", [])
    extra = [*DAEMON_TOLERATIONS, *([HOST_NETWORK_TOLERATION] if spec.get("hostNetwork") else [])]
    for wanted in extra:
        if not any(
            t.get("key") == wanted["key"] and t.get("effect") == wanted["effect"] for t in tolerations
        ):
            tolerations.append(dict(wanted))
    return spec


def pin_to_node(spec: dict[str, Any], node_name: str) -> None:
    """Replace the required node affinity by one term on ``metadata.name`` (upstream's
    ``ReplaceDaemonSetPodNodeNameNodeAffinity``); preferred terms stay."""
    node_affinity = spec.setdefault("affinity", {}).setdefault("nodeAffinity", {})
    node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {
        "nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node_name]}]}
        ]
    }


def node_of(pod: dict[str, Any]) -> str:
    """The node a daemon pod is for: its binding, else its pinning affinity."""
    spec = pod.get("spec") or {}
    if spec.get("nodeName"):
        return spec["nodeName"]
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )) or {}  # fmt: skip
    for term in required.get("nodeSelectorTerms") or ():
        for field in term.get("matchFields") or ():
            if field.get("key") == "metadata.name" and field.get("operator") == "In" and field.get("values"):
                return field["values"][0]
    return ""


def _created(pod: dict[str, Any]) -> str:
    return pod["metadata"].get("creationTimestamp", "")


def scaled(value: Any, total: int, *, round_up: bool) -> int:
    """``intstr.GetScaledValueFromIntOrPercent``."""
    if value is None:
        return 0
    if isinstance(value, str) and value.endswith("%"):
        share = int(value[:-1]) * total / 100
        return math.ceil(share) if round_up else math.floor(share)
    return int(value)


# -- the controller ----------------------------------------------------------------------------


class DaemonSetController(base.QueueController):
    name = "daemonset"
    workers = 2

    def __init__(self, *, clock: types.Clock | None = None) -> None:
        super().__init__()
        self.clock = clock or clock_.RealClock()
        self.expectations = podutil.Expectations()

    def setup(self, ctx: base.ControllerContext) -> None:
        super().setup(ctx)
        factory = ctx.informers
        self.daemonsets = factory.informer(resources.DAEMONSETS)
        self.pods = factory.informer(resources.PODS, indexers=podutil.INDEXERS)
        self.nodes = factory.informer(resources.NODES)
        self.revisions = factory.informer(resources.CONTROLLERREVISIONS)
        self.daemonsets.add_handlers(on_add=self.enqueue, on_update=lambda _o, n: self.enqueue(n),
                                     on_delete=self._daemonset_deleted)  # fmt: skip
        self.pods.add_handlers(
            on_add=self._pod_added, on_update=self._pod_updated, on_delete=self._pod_deleted
        )
        self.nodes.add_handlers(on_add=self._node_changed, on_update=self._node_updated,
                                on_delete=self._node_changed)  # fmt: skip

    # -- handlers (quick: keys on the queue) ---------------------------------------------------

    def _owner_key(self, pod: dict[str, Any]) -> str | None:
        for ref in pod["metadata"].get("ownerReferences") or ():
            if ref.get("controller") and ref.get("kind") == "DaemonSet":
                return f"{pod['metadata'].get('namespace', '')}/{ref.get('name', '')}"
        return None

    def _daemonset_deleted(self, ds: dict[str, Any]) -> None:
        self.expectations.forget(base.key_of(ds))

    def _pod_added(self, pod: dict[str, Any]) -> None:
        key = self._owner_key(pod)
        if key is not None:
            self.expectations.creation_observed(key)
            self.queue.add(key)

    def _pod_updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        key = self._owner_key(new)
        if key is not None:
            if new["metadata"].get("deletionTimestamp") and not podutil.is_deleting(old):
                self.expectations.deletion_observed(key, store.key_of(new))  # seen when it starts
            self.queue.add(key)

    def _pod_deleted(self, pod: dict[str, Any]) -> None:
        key = self._owner_key(pod)
        if key is not None:
            self.expectations.deletion_observed(key, store.key_of(pod))
            self.queue.add(key)

    def _node_changed(self, node: dict[str, Any]) -> None:
        for ds in self.daemonsets.store.list():
            self.enqueue(ds)

    def _node_updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        # Heartbeats change the status every few seconds: only what eligibility reads matters.
        if (old["metadata"].get("labels"), old.get("spec")) != (
            new["metadata"].get("labels"),
            new.get("spec"),
        ):
            self._node_changed(new)

    # -- reconcile -----------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        ds = self.daemonsets.store.get(key)
        if ds is None or ds["metadata"].get("deletionTimestamp"):
            return
        assert self.ctx is not None
        try:
            history = await revisions.sync(self.ctx.api, self.revisions.store, ds)
        except revisions.Collision:
            await self._bump_collision_count(ds)
            return
        pods = podutil.owned_by(self.pods.store, ds)
        by_node: dict[str, list[dict[str, Any]]] = {}
        for pod in pods:
            by_node.setdefault(node_of(pod), []).append(pod)
        if self.expectations.satisfied(key):
            await self._manage(ds, by_node, history.update_hash)
            # Roll only on a settled picture: after creates or deletes, wait for their events.
            if _strategy(ds) == "RollingUpdate" and self.expectations.satisfied(key):
                await self._rolling_update(ds, by_node, history.update_hash)
        in_use = {history.update_hash, *(_hash_of(p) for p in pods)}
        keep = {r["metadata"]["name"] for r in history.revisions if _hash_of(r) in in_use}
        limit = (ds.get("spec") or {}).get("revisionHistoryLimit")
        await revisions.truncate(self.ctx.api, history.revisions, keep=keep, limit=limit)
        await self._update_status(ds, by_node, history.update_hash)

    async def _bump_collision_count(self, ds: dict[str, Any]) -> None:
        assert self.ctx is not None
        changed = store.copy(ds)
        status = changed.setdefault("status", {})
        status["collisionCount"] = int(status.get("collisionCount") or 0) + 1
        await self.ctx.api.update_status(resources.DAEMONSETS, changed)

    def _nodes(self, ds: dict[str, Any]) -> list[tuple[dict[str, Any], bool, bool]]:
        spec = daemon_pod_spec(((ds.get("spec") or {}).get("template") or {}).get("spec") or {})
        return [(node, *should_run(spec, node)) for node in self.nodes.store.list()]

    async def _manage(self, ds: dict[str, Any], by_node: dict[str, list[dict[str, Any]]], hash_: str) -> None:
        """Create the missing daemon pods, delete the ones that must go."""
        assert self.ctx is not None
        surge = _max_surge(ds) > 0
        to_create: list[str] = []
        to_delete: list[dict[str, Any]] = []
        for node, run, keep_running in self._nodes(ds):
            pods = by_node.get(node["metadata"]["name"], [])
            live = [p for p in pods if not podutil.is_deleting(p)]
            failed = [p for p in live if (p.get("status") or {}).get("phase") in ("Failed", "Succeeded")]
            for pod in failed:
                self.ctx.recorder.warning(ds, "FailedDaemonPod", f"Found failed daemon pod {pod['metadata']['namespace']}/"
                                              f"{pod['metadata']['name']} on node {node['metadata']['name']}, will try to kill it")  # fmt: skip
            running = [p for p in live if p not in failed]
            to_delete += failed
            if run and not running:
                to_create.append(node["metadata"]["name"])
            elif not keep_running:
                to_delete += running
            elif len(running) > 1:
                to_delete += _surplus(running, hash_, surge=surge)
        known = {n["metadata"]["name"] for n in self.nodes.store.list()}
        for name, pods in by_node.items():
            if name not in known:  # the node is gone: pod GC removes bound pods; unbound ones go now
                to_delete += [p for p in pods if not podutil.is_deleting(p) and not p["spec"].get("nodeName")]
        await self._sync_nodes(ds, to_create, to_delete, hash_)

    async def _rolling_update(
        self, ds: dict[str, Any], by_node: dict[str, list[dict[str, Any]]], hash_: str
    ) -> None:
        """Replace old pods: without surge, delete old ones within ``maxUnavailable`` (the manage
        pass recreates them); with surge, start new pods beside old ones within ``maxSurge`` and
        delete each old pod once its replacement is available."""
        now = self.clock.now()
        min_ready = int((ds.get("spec") or {}).get("minReadySeconds") or 0)
        eligible = [node["metadata"]["name"] for node, run, _ in self._nodes(ds) if run]
        max_surge = _max_surge(ds, len(eligible))
        max_unavailable = _max_unavailable(ds, len(eligible))
        if max_surge == 0 and max_unavailable == 0:
            max_unavailable = 1
        unavailable = surging = 0
        replace_now: list[dict[str, Any]] = []  # old pods to delete whatever the budget
        candidates: list[dict[str, Any]] = []  # available old pods, deleted within maxUnavailable
        surge_now: list[str] = []  # nodes whose old pod is unavailable: surge at once
        surge_candidates: list[str] = []  # nodes with an available old pod: surge within maxSurge
        for node_name in eligible:
            live = [p for p in by_node.get(node_name, []) if not podutil.is_deleting(p)]
            new = [p for p in live if _hash_of(p) == hash_]
            old = [p for p in live if _hash_of(p) != hash_]
            old_available = bool(old) and podutil.is_available(old[0], min_ready, now)
            new_available = any(podutil.is_available(p, min_ready, now) for p in new)
            if not old:
                unavailable += 0 if new_available else 1
            elif max_surge == 0:
                if old_available:
                    candidates.append(old[0])
                else:
                    unavailable += 1
                    replace_now.append(old[0])
            elif new:
                if new_available:
                    replace_now += old  # the surge pod took over
                else:
                    surging += 1
            elif old_available:
                surge_candidates.append(node_name)
            else:
                surge_now.append(node_name)
        if max_surge == 0:
            budget = max(max_unavailable - unavailable, 0)
            await self._sync_nodes(ds, [], replace_now + candidates[:budget], hash_)
        else:
            budget = max(max_surge - surging, 0)
            await self._sync_nodes(ds, surge_now + surge_candidates[:budget], replace_now, hash_)

    async def _sync_nodes(
        self, ds: dict[str, Any], nodes: list[str], doomed: list[dict[str, Any]], hash_: str
    ) -> None:
        """Create a pod on each of ``nodes`` (slow start) and delete ``doomed``, counting both in
        the expectations before the first request goes out."""
        key = base.key_of(ds)
        doomed = list({p["metadata"]["uid"]: p for p in doomed}.values())
        self.expectations.expect(key, adds=len(nodes), deletes=[store.key_of(p) for p in doomed])
        pending = iter(nodes)

        async def create_next() -> None:
            await self._create(ds, next(pending), hash_)

        done, error = await podutil.slow_start(len(nodes), create_next)
        for _ in range(len(nodes) - done):
            self.expectations.creation_observed(key)  # never made: never seen
        for pod in doomed:
            await self._delete(ds, pod)
        if error is not None:
            raise error

    async def _create(self, ds: dict[str, Any], node_name: str, hash_: str) -> None:
        assert self.ctx is not None
        template = (ds.get("spec") or {}).get("template") or {}
        tmeta = template.get("metadata") or {}
        spec = daemon_pod_spec(template.get("spec") or {})
        pin_to_node(spec, node_name)
        labels = {**(tmeta.get("labels") or {}), revisions.REVISION_HASH_LABEL: hash_,
                  TEMPLATE_GENERATION_LABEL: str(ds["metadata"].get("generation", 1))}  # fmt: skip
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": f"{ds['metadata']['name']}-",
                "namespace": ds["metadata"]["namespace"],
                "labels": labels,
                "annotations": dict(tmeta.get("annotations") or {}),
                "ownerReferences": [podutil.owner_reference(ds, api_version="apps/v1", kind="DaemonSet")],
            },
            "spec": spec,
        }
        created = await self.ctx.api.create(resources.PODS, pod)
        self.ctx.recorder.normal(ds, "SuccessfulCreate", f"Created pod: {created['metadata']['name']}")

    async def _delete(self, ds: dict[str, Any], pod: dict[str, Any]) -> None:
        assert self.ctx is not None
        try:
            await self.ctx.api.delete(resources.PODS, pod["metadata"]["name"], namespace=pod["metadata"]["namespace"],
                                      preconditions={"uid": pod["metadata"]["uid"]})  # fmt: skip
        except errors.ApiError as exc:
            self.expectations.deletion_observed(base.key_of(ds), store.key_of(pod))  # no event will come
            if not errors.is_not_found(exc):
                raise
            return
        self.ctx.recorder.normal(ds, "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}")

    async def _update_status(
        self, ds: dict[str, Any], by_node: dict[str, list[dict[str, Any]]], hash_: str
    ) -> None:
        assert self.ctx is not None
        now = self.clock.now()
        min_ready = int((ds.get("spec") or {}).get("minReadySeconds") or 0)
        desired = current = ready = available = updated = misscheduled = 0
        waiting = False
        for node, run, _keep in self._nodes(ds):
            pods = [p for p in by_node.get(node["metadata"]["name"], []) if not podutil.is_deleting(p)]
            if not run:
                misscheduled += 1 if pods else 0
                continue
            desired += 1
            if not pods:
                continue
            current += 1
            newest = max(pods, key=_created)
            ready += 1 if podutil.is_ready(newest) else 0
            if podutil.is_available(newest, min_ready, now):
                available += 1
            elif podutil.is_ready(newest):
                waiting = True
            updated += 1 if any(_hash_of(p) == hash_ for p in pods) else 0
        status = {
            **(ds.get("status") or {}),
            "observedGeneration": ds["metadata"].get("generation", 1),
            "desiredNumberScheduled": desired,
            "currentNumberScheduled": current,
            "numberMisscheduled": misscheduled,
            "numberReady": ready,
            "updatedNumberScheduled": updated,
            "numberAvailable": available,
            "numberUnavailable": desired - available,
        }
        if status["numberAvailable"] == 0:
            status.pop("numberAvailable")  # omitted when zero, as upstream serialises it
        if status["numberUnavailable"] == 0:
            status.pop("numberUnavailable")
        if waiting:
            self.queue.add_after(base.key_of(ds), float(min_ready))
        if status != (ds.get("status") or {}):
            changed = store.copy(ds)
            changed["status"] = status
            await self.ctx.api.update_status(resources.DAEMONSETS, changed)


def _strategy(ds: dict[str, Any]) -> str:
    return ((ds.get("spec") or {}).get("updateStrategy") or {}).get("type") or "RollingUpdate"


def _rolling(ds: dict[str, Any]) -> dict[str, Any]:
    return ((ds.get("spec") or {}).get("updateStrategy") or {}).get("rollingUpdate") or {}


def _max_surge(ds: dict[str, Any], total: int = 1) -> int:
    return (
        scaled(_rolling(ds).get("maxSurge", 0), total, round_up=True)
        if _strategy(ds) == "RollingUpdate"
        else 0
    )


def _max_unavailable(ds: dict[str, Any], total: int) -> int:
    return scaled(_rolling(ds).get("maxUnavailable", 1), total, round_up=True)


def _hash_of(pod: dict[str, Any]) -> str:
    return (pod["metadata"].get("labels") or {}).get(revisions.REVISION_HASH_LABEL, "")


def _surplus(pods: list[dict[str, Any]], hash_: str, *, surge: bool) -> list[dict[str, Any]]:
    """Which of several pods on one node go. With surge, an updated pod that is not ready yet
    may run beside the oldest ready old pod; otherwise only the oldest pod stays."""
    ordered = sorted(pods, key=_created)
    new = [p for p in ordered if _hash_of(p) == hash_]
    old = [p for p in ordered if _hash_of(p) != hash_]
    if surge and new and old:
        keep = [new[0]] + ([old[0]] if not podutil.is_ready(new[0]) and podutil.is_ready(old[0]) else [])
    else:
        keep = ordered[:1]
    return [p for p in ordered if p not in keep]


def new() -> base.Controller:
    return DaemonSetController()
