"""The StatefulSet controller: stable names, ordered start and stop, per-pod storage.

Pod ``<set>-<n>`` exists for each ordinal ``n`` in ``[start, start + replicas)``
(``spec.ordinals.start``, default 0), with hostname ``<set>-<n>``, subdomain
``spec.serviceName``, and a PersistentVolumeClaim ``<claim>-<set>-<n>`` for each
``volumeClaimTemplates`` entry, created before the pod and mounted by it. Names are fixed, so a
pass that runs before the cache saw its own creation only meets AlreadyExists: no expectations
are needed here.

One pass, as upstream's ``updateStatefulSet``:

1. revisions: the update revision is the ControllerRevision of the current template, the current
   revision the one ``status.currentRevision`` names (what the pods were made from);
2. every missing ordinal is created, failed pods are deleted to be recreated; with
   ``OrderedReady`` (the default) the pass stops at the first pod that is not Running and Ready,
   so ``web-1`` is created only once ``web-0`` is ready; ``Parallel`` does not wait;
3. ordinals at or beyond ``replicas`` are deleted from the highest down, one at a time and only
   while every other pod is healthy with ``OrderedReady``, all at once with ``Parallel``;
4. ``RollingUpdate``: the highest ordinal at or above ``partition`` still on an old revision is
   deleted (it comes back from the update revision), one at a time, each waiting for the pods
   above it to be healthy again; ``OnDelete`` leaves replacement to the user;
5. status, including ``currentRevision := updateRevision`` once every pod is updated and ready.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from services.client import clock as clock_
from services.client import errors, resources, store, types
from services.controllers import base, podutil, revisions

log = logging.getLogger(__name__)

POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"


def ordinal_of(set_name: str, pod: dict[str, Any]) -> int | None:
    match = re.fullmatch(rf"{re.escape(set_name)}-(\d+)", pod["metadata"].get("name", ""))
    return int(match.group(1)) if match else None


def claim_name(template: dict[str, Any], set_name: str, ordinal: int) -> str:
    return f"{template['metadata']['name']}-{set_name}-{ordinal}"


def is_healthy(pod: dict[str, Any]) -> bool:
    """Running and Ready and not being deleted (upstream's ``isHealthy``)."""
    return (
        (pod.get("status") or {}).get("phase") == "Running"
        and podutil.is_ready(pod)
        and not podutil.is_deleting(pod)
    )


def _revision_of(pod: dict[str, Any]) -> str:
    return podutil.labels_of(pod).get(revisions.REVISION_HASH_LABEL, "")


class StatefulSetController(base.QueueController):
    name = "statefulset"
    workers = 2

    def __init__(self, *, clock: types.Clock | None = None) -> None:
        super().__init__()
        self.clock = clock or clock_.RealClock()

    def setup(self, ctx: base.ControllerContext) -> None:
        super().setup(ctx)
        factory = ctx.informers
        self.sets = factory.informer(resources.STATEFULSETS)
        self.pods = factory.informer(resources.PODS, indexers=podutil.INDEXERS)
        self.claims = factory.informer(resources.PERSISTENTVOLUMECLAIMS)
        self.revisions = factory.informer(resources.CONTROLLERREVISIONS)
        self.sets.add_handlers(on_add=self.enqueue, on_update=lambda _o, n: self.enqueue(n))
        self.pods.add_handlers(
            on_add=self._pod_changed,
            on_update=lambda _o, n: self._pod_changed(n),
            on_delete=self._pod_changed,
        )

    def _pod_changed(self, pod: dict[str, Any]) -> None:
        ref = podutil.controller_ref(pod)
        if ref is not None and ref.get("kind") == "StatefulSet":
            self.queue.add(f"{pod['metadata'].get('namespace', '')}/{ref.get('name', '')}")

    # -- reconcile -----------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        sts = self.sets.store.get(key)
        if sts is None or podutil.is_deleting(sts):
            return
        assert self.ctx is not None
        try:
            history = await revisions.sync(self.ctx.api, self.revisions.store, sts)
        except revisions.Collision:
            changed = store.copy(sts)
            status = changed.setdefault("status", {})
            status["collisionCount"] = int(status.get("collisionCount") or 0) + 1
            await self.ctx.api.update_status(resources.STATEFULSETS, changed)
            return
        update = history.update
        current_name = (sts.get("status") or {}).get("currentRevision")
        current = next((r for r in history.revisions if r["metadata"]["name"] == current_name), update)
        pods = podutil.owned_by(self.pods.store, sts)
        await self._sync_pods(sts, pods, current, update)
        names = {current["metadata"]["name"], update["metadata"]["name"], *(_revision_of(p) for p in pods)}
        limit = (sts.get("spec") or {}).get("revisionHistoryLimit")
        await revisions.truncate(self.ctx.api, history.revisions, keep=names, limit=limit)
        await self._update_status(sts, pods, current, update)

    async def _sync_pods(
        self, sts: dict[str, Any], pods: list[dict[str, Any]], current: dict[str, Any], update: dict[str, Any]
    ) -> None:
        spec = sts.get("spec") or {}
        name = sts["metadata"]["name"]
        start = int((spec.get("ordinals") or {}).get("start") or 0)
        wanted = range(start, start + int(spec.get("replicas", 1)))
        ordered = spec.get("podManagementPolicy", "OrderedReady") != "Parallel"
        members: dict[int, dict[str, Any]] = {}
        condemned: list[dict[str, Any]] = []
        for pod in pods:
            ordinal = ordinal_of(name, pod)
            if ordinal is not None and ordinal in wanted:
                members[ordinal] = pod
            else:
                condemned.append(pod)
        condemned.sort(key=lambda p: ordinal_of(name, p) or -1, reverse=True)
        # Each phase returns False when OrderedReady must wait before going on.
        if not await self._fill(sts, wanted, members, ordered, current, update):
            return
        if not await self._scale_down(sts, members, condemned, ordered):
            return
        if (spec.get("updateStrategy") or {}).get("type", "RollingUpdate") == "RollingUpdate":
            await self._roll(sts, wanted, members, update)

    async def _fill(
        self, sts: dict[str, Any], wanted: range, members: dict[int, dict[str, Any]], ordered: bool,
        current: dict[str, Any], update: dict[str, Any],
    ) -> bool:  # fmt: skip
        """Create missing pods and replace failed ones, lowest ordinal first; OrderedReady waits
        for each to be Running and Ready before the next."""
        for ordinal in wanted:
            pod = members.get(ordinal)
            if pod is None:
                await self._create(sts, ordinal, self._revision_for(sts, ordinal, current, update))
            elif podutil.is_terminal(pod) and not podutil.is_deleting(pod):
                await self._delete(sts, pod)
            elif is_healthy(pod) or not ordered:
                continue
            if ordered:
                return False
        return True

    async def _scale_down(
        self,
        sts: dict[str, Any],
        members: dict[int, dict[str, Any]],
        condemned: list[dict[str, Any]],
        ordered: bool,
    ) -> bool:
        """Delete pods beyond ``replicas``, highest ordinal first; OrderedReady deletes one at a
        time, and none while another pod is unhealthy."""
        unhealthy = [p for p in [*(members[o] for o in sorted(members)), *condemned] if not is_healthy(p)]
        for pod in condemned:
            if podutil.is_deleting(pod):
                if ordered:
                    return False
                continue
            if ordered and unhealthy and unhealthy[0] is not pod and not podutil.is_terminal(pod):
                return False
            await self._delete(sts, pod)
            if ordered:
                return False
        return True

    async def _roll(
        self, sts: dict[str, Any], wanted: range, members: dict[int, dict[str, Any]], update: dict[str, Any]
    ) -> None:
        """Replace the highest pod at or above the partition that is not on the update revision,
        once every pod above it is healthy again."""
        strategy = (sts.get("spec") or {}).get("updateStrategy") or {}
        partition = int((strategy.get("rollingUpdate") or {}).get("partition") or 0)
        for ordinal in reversed(wanted):
            if ordinal < wanted.start + partition:
                return
            pod = members.get(ordinal)
            if pod is None:
                return  # created in this pass; the update goes on once it is seen
            if _revision_of(pod) != update["metadata"]["name"] and not podutil.is_deleting(pod):
                log.info("statefulset %s: replacing pod %s for update to revision %s",
                         base.key_of(sts), pod["metadata"]["name"], update["metadata"]["name"])  # fmt: skip
                await self._delete(sts, pod)
                return
            if not is_healthy(pod):
                return

    def _revision_for(
        self, sts: dict[str, Any], ordinal: int, current: dict[str, Any], update: dict[str, Any]
    ) -> dict[str, Any]:
        """Ordinals below the partition are (re)created from the current revision."""
        spec = sts.get("spec") or {}
        strategy = spec.get("updateStrategy") or {}
        if strategy.get("type", "RollingUpdate") == "RollingUpdate":
            partition = int((strategy.get("rollingUpdate") or {}).get("partition") or 0)
            if ordinal < int((spec.get("ordinals") or {}).get("start") or 0) + partition:
                return current
        return update

    # -- writes --------------------------------------------------------------------------------

    async def _create(self, sts: dict[str, Any], ordinal: int, revision: dict[str, Any]) -> None:
        assert self.ctx is not None
        set_name = sts["metadata"]["name"]
        pod_name = f"{set_name}-{ordinal}"
        for template in (sts.get("spec") or {}).get("volumeClaimTemplates") or ():
            await self._ensure_claim(sts, template, ordinal, pod_name)
        pod = self._new_pod(sts, ordinal, revision)
        try:
            await self.ctx.api.create(resources.PODS, pod)
        except errors.ApiError as exc:
            if errors.is_already_exists(exc):
                return  # our cache had not seen it yet
            self.ctx.recorder.warning(sts, "FailedCreate",
                                      f"create Pod {pod_name} in StatefulSet {set_name} failed error: {exc}")  # fmt: skip
            raise
        self.ctx.recorder.normal(
            sts, "SuccessfulCreate", f"create Pod {pod_name} in StatefulSet {set_name} successful"
        )

    def _new_pod(self, sts: dict[str, Any], ordinal: int, revision: dict[str, Any]) -> dict[str, Any]:
        set_name = sts["metadata"]["name"]
        pod_name = f"{set_name}-{ordinal}"
        template = revisions.template_of(revision)
        tmeta = template.get("metadata") or {}
        spec = template.get("spec") or {}
        spec["hostname"] = pod_name
        if (sts.get("spec") or {}).get("serviceName"):
            spec["subdomain"] = sts["spec"]["serviceName"]
        claims = (sts.get("spec") or {}).get("volumeClaimTemplates") or []
        claimed = {c["metadata"]["name"] for c in claims}
        volumes = [v for v in spec.get("volumes") or [] if v.get("name") not in claimed]
        for claim in claims:
            volumes.append({"name": claim["metadata"]["name"],
                            "persistentVolumeClaim": {"claimName": claim_name(claim, set_name, ordinal)}})  # fmt: skip
        if volumes:
            spec["volumes"] = volumes
        labels = {
            **(tmeta.get("labels") or {}),
            revisions.REVISION_HASH_LABEL: revision["metadata"]["name"],
            POD_NAME_LABEL: pod_name,
            POD_INDEX_LABEL: str(ordinal),
        }
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod_name,
                "namespace": sts["metadata"]["namespace"],
                "labels": labels,
                "annotations": dict(tmeta.get("annotations") or {}),
                "ownerReferences": [podutil.owner_reference(sts, api_version="apps/v1", kind="StatefulSet")],
            },
            "spec": spec,
        }

    async def _ensure_claim(
        self, sts: dict[str, Any], template: dict[str, Any], ordinal: int, pod_name: str
    ) -> None:
        assert self.ctx is not None
        set_name, namespace = sts["metadata"]["name"], sts["metadata"]["namespace"]
        name = claim_name(template, set_name, ordinal)
        if self.claims.store.get_by(namespace, name) is not None:
            return
        tmeta = template.get("metadata") or {}
        selector = ((sts.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        claim: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {**(tmeta.get("labels") or {}), **selector},
                "annotations": dict(tmeta.get("annotations") or {}),
            },
            "spec": store.copy(template.get("spec") or {}),
        }
        policy = (sts.get("spec") or {}).get("persistentVolumeClaimRetentionPolicy") or {}
        if policy.get("whenDeleted") == "Delete":  # the garbage collector removes it with the set
            ref = podutil.owner_reference(sts, api_version="apps/v1", kind="StatefulSet")
            ref["controller"] = False
            claim["metadata"]["ownerReferences"] = [ref]
        try:
            await self.ctx.api.create(resources.PERSISTENTVOLUMECLAIMS, claim)
        except errors.ApiError as exc:
            if errors.is_already_exists(exc):
                return
            self.ctx.recorder.warning(sts, "FailedCreate", f"create Claim {name} for Pod {pod_name} in "
                                      f"StatefulSet {set_name} failed error: {exc}")  # fmt: skip
            raise
        self.ctx.recorder.normal(sts, "SuccessfulCreate",
                                 f"create Claim {name} Pod {pod_name} in StatefulSet {set_name} success")  # fmt: skip

    async def _delete(self, sts: dict[str, Any], pod: dict[str, Any]) -> None:
        assert self.ctx is not None
        name = pod["metadata"]["name"]
        try:
            await self.ctx.api.delete(resources.PODS, name, namespace=pod["metadata"]["namespace"],
                                      preconditions={"uid": pod["metadata"]["uid"]})  # fmt: skip
        except errors.ApiError as exc:
            if errors.is_not_found(exc):
                return
            raise
        self.ctx.recorder.normal(sts, "SuccessfulDelete",
                                 f"delete Pod {name} in StatefulSet {sts['metadata']['name']} successful")  # fmt: skip

    # -- status --------------------------------------------------------------------------------

    async def _update_status(
        self, sts: dict[str, Any], pods: list[dict[str, Any]], current: dict[str, Any], update: dict[str, Any]
    ) -> None:
        assert self.ctx is not None
        now = self.clock.now()
        spec = sts.get("spec") or {}
        min_ready = int(spec.get("minReadySeconds") or 0)
        current_name, update_name = current["metadata"]["name"], update["metadata"]["name"]
        counts = dict.fromkeys(("replicas", "ready", "available", "current", "updated"), 0)
        waiting = False
        for pod in pods:
            counts["replicas"] += 1
            if is_healthy(pod):
                counts["ready"] += 1
                if podutil.is_available(pod, min_ready, now):
                    counts["available"] += 1
                else:
                    waiting = True
            if not podutil.is_deleting(pod):
                counts["current"] += 1 if _revision_of(pod) == current_name else 0
                counts["updated"] += 1 if _revision_of(pod) == update_name else 0
        rolled = counts["updated"] == counts["replicas"] and counts["ready"] == counts["replicas"]
        if current_name != update_name and (rolled or counts["current"] == 0):
            current_name, counts["current"] = update_name, counts["updated"]
        status: dict[str, Any] = {
            "observedGeneration": sts["metadata"].get("generation", 1),
            "replicas": counts["replicas"],
            "readyReplicas": counts["ready"],
            "currentReplicas": counts["current"],
            "updatedReplicas": counts["updated"],
            "availableReplicas": counts["available"],
            "currentRevision": current_name,
            "updateRevision": update_name,
            "collisionCount": int((sts.get("status") or {}).get("collisionCount") or 0),
        }
        # omitempty on these three upstream; replicas, availableReplicas and collisionCount always show
        for field in ("readyReplicas", "currentReplicas", "updatedReplicas"):
            if not status[field]:
                del status[field]
        if waiting:
            self.queue.add_after(base.key_of(sts), float(min_ready))
        if status != (sts.get("status") or {}):
            changed = store.copy(sts)
            changed["status"] = status
            await self.ctx.api.update_status(resources.STATEFULSETS, changed)


def new() -> base.Controller:
    return StatefulSetController()
