"""Deployments: roll pod templates out through ReplicaSets, as kube-controller-manager does.

Each distinct pod template of a Deployment is one ReplicaSet named ``<deployment>-<hash>``,
where the hash (``podutil.template_hash``, with ``status.collisionCount``) is also its
``pod-template-hash`` label and part of its selector, so the ReplicaSets' pods never overlap.
The ReplicaSet whose template equals the Deployment's (ignoring that label) is the *new* one;
every other owned ReplicaSet is *old*. Revisions are numbers in the
``deployment.kubernetes.io/revision`` annotation: the new ReplicaSet always carries the highest,
and one that becomes new again (``kubectl rollout undo`` writes an old template back) takes the
next number and remembers the previous ones in ``revision-history``.

A sync, after claiming the namespace's ReplicaSets by selector (adopt and release, as the
ReplicaSet controller does with pods):
- a Deployment being deleted, or paused, or whose size changed, is only scaled: the change is
  shared among its active ReplicaSets in proportion to their size (``_Rollout.scale``);
- ``RollingUpdate`` scales the new ReplicaSet up to at most ``replicas + maxSurge`` pods in
  total, and old ones down while at least ``replicas - maxUnavailable`` pods stay available;
- ``Recreate`` scales every old ReplicaSet to zero, waits until their pods are gone, then
  scales the new one up;
- old ReplicaSets beyond ``revisionHistoryLimit`` are deleted once a rollout completes;
- status is what ``kubectl rollout status`` reads (observedGeneration, replicas,
  updatedReplicas, readyReplicas, availableReplicas, unavailableReplicas) with the
  ``Available`` and ``Progressing`` conditions; a rollout that makes no progress for
  ``progressDeadlineSeconds`` gets ``Progressing=False`` with reason ProgressDeadlineExceeded.

Every write uses the object the API returned from the previous one, so one sync never trips
over its own resourceVersions; a conflict with anyone else re-queues the key.
"""

from __future__ import annotations

import datetime
import logging
import math
from typing import Any

from services.client import errors, resources, store
from services.controllers import base, podutil

log = logging.getLogger(__name__)

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
# Deployment annotations that are not copied onto its ReplicaSets.
NOT_COPIED = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION,
        REVISION_HISTORY,
        DESIRED_REPLICAS,
        MAX_REPLICAS,
        "deprecated.deployment.rollback.to",
    }
)
MAX_HISTORY_CHARS = 2000  # revision-history annotation length limit, as upstream
NO_DEADLINE = 2**31 - 1  # progressDeadlineSeconds meaning "never" (MaxInt32)

Obj = dict[str, Any]


# -- pure helpers ---------------------------------------------------------------------------------


def replicas_of(obj: Obj) -> int:
    return int((obj.get("spec") or {}).get("replicas", 1) or 0)


def status_of(obj: Obj, field: str) -> int:
    return int((obj.get("status") or {}).get(field) or 0)


def revision_of(rs: Obj) -> int:
    try:
        return int(annotations_of(rs).get(REVISION, "0"))
    except ValueError:
        return 0


def _created(obj: Obj) -> tuple[str, str]:
    md = obj.get("metadata") or {}
    return (md.get("creationTimestamp", ""), md.get("name", ""))


def scaled_value(value: int | str | None, total: int, *, round_up: bool) -> int:
    """An int-or-percent field against ``total`` (surge rounds up, unavailability down)."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.endswith("%"):
        percent = int(text[:-1])
        exact = percent * total / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(text)


def is_rolling(d: Obj) -> bool:
    return ((d.get("spec") or {}).get("strategy") or {}).get("type", "RollingUpdate") == "RollingUpdate"


def fenceposts(d: Obj) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) as pod counts; never both zero."""
    rolling = ((d.get("spec") or {}).get("strategy") or {}).get("rollingUpdate") or {}
    desired = replicas_of(d)
    surge = scaled_value(rolling.get("maxSurge", "25%"), desired, round_up=True)
    unavailable = scaled_value(rolling.get("maxUnavailable", "25%"), desired, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1  # otherwise nothing could ever move
    return surge, unavailable


def max_surge(d: Obj) -> int:
    return fenceposts(d)[0] if is_rolling(d) else 0


def max_unavailable(d: Obj) -> int:
    desired = replicas_of(d)
    if not is_rolling(d) or desired == 0:
        return 0
    return min(fenceposts(d)[1], desired)


def active(rss: list[Obj]) -> list[Obj]:
    return [rs for rs in rss if replicas_of(rs) > 0]


def total_replicas(rss: list[Obj]) -> int:
    return sum(replicas_of(rs) for rs in rss)


def new_rs_replicas(d: Obj, all_rss: list[Obj], new_rs: Obj) -> int:
    """How big the new ReplicaSet may be now (upstream's ``NewRSNewReplicas``)."""
    if not is_rolling(d):
        return replicas_of(d)
    max_total = replicas_of(d) + max_surge(d)
    current = total_replicas(all_rss)
    if current >= max_total:
        return replicas_of(new_rs)
    return replicas_of(new_rs) + min(max_total - current, replicas_of(d) - replicas_of(new_rs))


def has_deadline(d: Obj) -> bool:
    deadline = (d.get("spec") or {}).get("progressDeadlineSeconds")
    return deadline is not None and deadline != NO_DEADLINE


def complete(d: Obj, status: Obj) -> bool:
    """Every replica updated and available, none of the old ones left, this generation seen."""
    want = replicas_of(d)
    return (
        int(status.get("updatedReplicas") or 0) == want
        and int(status.get("replicas") or 0) == want
        and int(status.get("availableReplicas") or 0) == want
        and int(status.get("observedGeneration") or 0) >= int(d["metadata"].get("generation") or 0)
    )


def progressing(d: Obj, status: Obj) -> bool:
    old = d.get("status") or {}

    def n(s: Obj, field: str) -> int:
        return int(s.get(field) or 0)

    return (
        n(status, "updatedReplicas") > n(old, "updatedReplicas")
        or n(status, "replicas") - n(status, "updatedReplicas")
        < n(old, "replicas") - n(old, "updatedReplicas")
        or n(status, "readyReplicas") > n(old, "readyReplicas")
        or n(status, "availableReplicas") > n(old, "availableReplicas")
    )


def timed_out(d: Obj, status: Obj, at: datetime.datetime) -> bool:
    if not has_deadline(d):
        return False
    cond = find_condition(status, "Progressing")
    if cond is None or cond.get("reason") == "NewReplicaSetAvailable":
        return False
    if cond.get("reason") == "ProgressDeadlineExceeded":
        return True
    since = podutil.parse_time(cond.get("lastUpdateTime"))
    deadline = int(d["spec"]["progressDeadlineSeconds"])
    return since is not None and since + datetime.timedelta(seconds=deadline) < at


def spec_of(obj: Obj) -> Obj:
    return obj.get("spec") or {}


def annotations_of(obj: Obj) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("annotations") or {}


def set_progressing(
    status: Obj, state: str, reason: str, message: str, at: datetime.datetime | None = None
) -> None:
    set_condition(status, new_condition("Progressing", state, reason, message, at or podutil.now()))


def find_condition(status: Obj, type_: str) -> Obj | None:
    return next((c for c in status.get("conditions") or () if c.get("type") == type_), None)


def new_condition(type_: str, status: str, reason: str, message: str, at: datetime.datetime) -> Obj:
    stamp = podutil.format_time(at)
    return {"type": type_, "status": status, "lastUpdateTime": stamp, "lastTransitionTime": stamp,
            "reason": reason, "message": message}  # fmt: skip


def set_condition(status: Obj, cond: Obj) -> None:
    """Set ``cond``; the same status and reason changes nothing, the same status keeps the transition time."""
    current = find_condition(status, cond["type"])
    if (
        current is not None
        and current.get("status") == cond["status"]
        and current.get("reason") == cond["reason"]
    ):
        return
    if current is not None and current.get("status") == cond["status"]:
        cond = {**cond, "lastTransitionTime": current.get("lastTransitionTime", cond["lastTransitionTime"])}
    remove_condition(status, cond["type"])
    status.setdefault("conditions", []).append(cond)


def remove_condition(status: Obj, type_: str) -> None:
    conditions = [c for c in status.get("conditions") or () if c.get("type") != type_]
    if conditions:
        status["conditions"] = conditions
    else:
        status.pop("conditions", None)


def set_replicas_annotations(rs: Obj, desired: int, maximum: int) -> bool:
    annotations = rs["metadata"].setdefault("annotations", {})
    wanted = {DESIRED_REPLICAS: str(desired), MAX_REPLICAS: str(maximum)}
    changed = any(annotations.get(k) != v for k, v in wanted.items())
    annotations.update(wanted)
    return changed


def set_new_rs_annotations(d: Obj, rs: Obj, revision: int, *, exists: bool) -> bool:
    """Copy the Deployment's annotations, raise the revision (remembering the old one); True if changed."""
    annotations = rs["metadata"].setdefault("annotations", {})
    changed = False
    for key, value in ((d.get("metadata") or {}).get("annotations") or {}).items():
        if key not in NOT_COPIED and annotations.get(key) != value:
            annotations[key] = value
            changed = True
    old_text = annotations.get(REVISION, "")
    try:
        old = int(old_text or "0")
    except ValueError:
        return changed
    if old < revision:
        annotations[REVISION] = str(revision)
        changed = True
        if old_text:
            _remember_revision(annotations, old_text)
    if not exists and set_replicas_annotations(rs, replicas_of(d), replicas_of(d) + max_surge(d)):
        changed = True
    return changed


def _remember_revision(annotations: dict[str, str], old: str) -> None:
    history = [r for r in annotations.get(REVISION_HISTORY, "").split(",") if r]
    history.append(old)
    while history and len(",".join(history)) > MAX_HISTORY_CHARS:
        history.pop(0)
    annotations[REVISION_HISTORY] = ",".join(history)


def calculate_status(d: Obj, all_rss: list[Obj], new_rs: Obj | None, at: datetime.datetime) -> Obj:
    available = sum(status_of(rs, "availableReplicas") for rs in all_rss)
    previous = d.get("status") or {}
    status: Obj = podutil.omit_zero(
        {
            "observedGeneration": d["metadata"].get("generation", 0),
            "replicas": sum(status_of(rs, "replicas") for rs in all_rss),
            "updatedReplicas": status_of(new_rs, "replicas") if new_rs is not None else 0,
            "readyReplicas": sum(status_of(rs, "readyReplicas") for rs in all_rss),
            "availableReplicas": available,
            "unavailableReplicas": max(0, replicas_of(d) - available),
            "collisionCount": previous.get("collisionCount"),
        }
    )
    if previous.get("conditions"):
        status["conditions"] = store.copy(previous["conditions"])
    if available >= replicas_of(d) - max_unavailable(d):
        cond = new_condition(
            "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.", at
        )
    else:
        cond = new_condition(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            at,
        )
    set_condition(status, cond)
    return status


def same_status(a: Obj, b: Obj) -> bool:
    return podutil.omit_zero(a) == podutil.omit_zero(b)


# -- the controller -------------------------------------------------------------------------------


class DeploymentController(base.QueueController):
    name = "deployment"
    workers = 5

    def setup(self, ctx: base.ControllerContext) -> None:
        super().setup(ctx)
        self.deployments = ctx.informers.informer(resources.DEPLOYMENTS)
        self.replicasets = ctx.informers.informer(resources.REPLICASETS, indexers=podutil.INDEXERS)
        self.pods = ctx.informers.informer(resources.PODS, indexers=podutil.INDEXERS)
        self.deployments.add_handlers(
            on_add=self.enqueue, on_update=lambda old, new: self.enqueue(new), on_delete=self.enqueue
        )
        self.replicasets.add_handlers(
            on_add=self._rs_added, on_update=self._rs_updated, on_delete=self._rs_deleted
        )
        self.pods.add_handlers(on_delete=self._pod_deleted)

    # -- handlers -------------------------------------------------------------------------------

    def _owner_of(self, rs: Obj) -> Obj | None:
        ref = podutil.controller_ref(rs)
        if ref is None or ref.get("kind") != "Deployment":
            return None
        d = self.deployments.store.get_by(rs["metadata"].get("namespace"), ref.get("name", ""))
        return d if d is not None and d["metadata"].get("uid") == ref.get("uid") else None

    def _matching(self, rs: Obj) -> list[Obj]:
        labels = podutil.labels_of(rs)
        namespace = rs["metadata"].get("namespace", "")
        return [
            d
            for d in self.deployments.store.list_namespace(namespace)
            if podutil.selector_of(d.get("spec") or {}).matches(labels)
        ]

    def _rs_added(self, rs: Obj) -> None:
        owner = self._owner_of(rs)
        if owner is not None:
            self.enqueue(owner)
        elif podutil.controller_ref(rs) is None:
            for d in self._matching(rs):
                self.enqueue(d)

    def _rs_updated(self, old: Obj, new: Obj) -> None:
        old_owner, new_owner = self._owner_of(old), self._owner_of(new)
        if old_owner is not None and old_owner is not new_owner:
            self.enqueue(old_owner)
        if new_owner is not None:
            self.enqueue(new_owner)
        elif podutil.controller_ref(new) is None:
            for d in self._matching(new):
                self.enqueue(d)

    def _rs_deleted(self, rs: Obj) -> None:
        owner = self._owner_of(rs)
        if owner is not None:
            self.enqueue(owner)

    def _pod_deleted(self, pod: Obj) -> None:
        """Recreate waits for the old pods to be gone: their deletion moves it on."""
        ref = podutil.controller_ref(pod)
        if ref is None or ref.get("kind") != "ReplicaSet":
            return
        rs = self.replicasets.store.get_by(pod["metadata"].get("namespace"), ref.get("name", ""))
        owner = self._owner_of(rs) if rs is not None else None
        if owner is not None and not is_rolling(owner):
            self.enqueue(owner)

    # -- the sync -------------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        try:
            await self._sync(key)
        except errors.ApiError as exc:
            if not errors.is_conflict(exc):
                raise
            # Routine: the cache had not caught up with a write yet. Try again on fresher data.
            log.debug("deployment %s: %s; retrying", key, exc.message)
            self.queue.add_after(key, 0.05)

    async def _sync(self, key: str) -> None:
        cached = self.deployments.store.get(key)
        if cached is None:
            return
        d = store.copy(cached)
        selector = podutil.selector_of(d.get("spec") or {})
        if selector.empty:
            self.ctx.recorder.warning(
                d, "SelectingAll", "This deployment is selecting all pods. A non-empty selector is required."
            )
            if status_of(d, "observedGeneration") < int(d["metadata"].get("generation") or 0):
                d.setdefault("status", {})["observedGeneration"] = d["metadata"]["generation"]
                await self.ctx.api.update_status(resources.DEPLOYMENTS, d)
            return
        rss = await self._claim(d, selector)
        rollout = _Rollout(self, d, rss)
        if podutil.is_deleting(d):
            await rollout.sync_status_only()
            return
        await rollout.check_paused()
        if (d.get("spec") or {}).get("paused") or rollout.is_scaling_event():
            await rollout.sync()
        elif is_rolling(d):
            await rollout.rolling()
        else:
            await rollout.recreate()

    async def _claim(self, d: Obj, selector: Any) -> list[Obj]:
        namespace = d["metadata"].get("namespace", "")
        candidates = self.replicasets.store.list_namespace(namespace)
        ref = podutil.owner_reference(d, api_version="apps/v1", kind="Deployment")
        return await podutil.claim(
            self.ctx.api, resources.REPLICASETS, owner=d, owner_ref=ref, candidates=candidates,
            selector=selector, can_adopt=lambda: self._still_there(d),
        )  # fmt: skip

    async def _still_there(self, d: Obj) -> bool:
        md = d["metadata"]
        try:
            fresh = await self.ctx.api.get(resources.DEPLOYMENTS, md["name"], namespace=md["namespace"])
        except errors.ApiError as exc:
            if exc.code == 404:
                return False
            raise
        return fresh["metadata"].get("uid") == md.get("uid") and not podutil.is_deleting(fresh)


class _Rollout:
    """One sync of one Deployment: the Deployment and its ReplicaSets as last written."""

    def __init__(self, controller: DeploymentController, d: Obj, rss: list[Obj]) -> None:
        self.ctl = controller
        self.api = controller.ctx.api
        self.recorder = controller.ctx.recorder
        self.d = d
        self.rss = sorted(rss, key=_created)
        self.new: Obj | None = None
        self.old: list[Obj] = []

    @property
    def all(self) -> list[Obj]:
        return [*self.old, *([self.new] if self.new is not None else [])]

    # -- finding and creating the new ReplicaSet --------------------------------------------------

    def _split(self) -> None:
        template = spec_of(self.d).get("template") or {}
        self.new = next(
            (rs for rs in self.rss if podutil.equal_ignore_hash(spec_of(rs).get("template") or {}, template)),
            None,
        )
        self.old = [rs for rs in self.rss if rs is not self.new]

    async def resolve(self, *, create: bool) -> None:
        """Find the new ReplicaSet (or create it) and bring revisions up to date."""
        self._split()
        revision = max((revision_of(rs) for rs in self.old), default=0) + 1
        if self.new is not None:
            await self._sync_new(revision)
        elif create:
            await self._create_new(revision)

    async def _sync_new(self, revision: int) -> None:
        assert self.new is not None
        rs = store.copy(self.new)
        min_ready = spec_of(self.d).get("minReadySeconds", 0) or 0
        changed = set_new_rs_annotations(self.d, rs, revision, exists=True)
        if changed or (spec_of(rs).get("minReadySeconds", 0) or 0) != min_ready:
            rs["spec"]["minReadySeconds"] = min_ready
            self._replace(await self.api.update(resources.REPLICASETS, rs))
        assert self.new is not None
        await self._set_revision(self.new["metadata"].get("annotations", {}).get(REVISION, ""))
        status = store.copy(self.d.get("status") or {})
        if has_deadline(self.d) and find_condition(status, "Progressing") is None:
            message = f'Found new replica set "{self.new["metadata"]["name"]}"'
            set_progressing(status, "True", "FoundNewReplicaSet", message)
            await self._write_status(status)

    async def _create_new(self, revision: int) -> None:
        d, md = self.d, self.d["metadata"]
        spec = d.get("spec") or {}
        collisions = (d.get("status") or {}).get("collisionCount")
        pod_hash = podutil.template_hash(spec.get("template") or {}, collisions)
        template = store.copy(spec.get("template") or {})
        template.setdefault("metadata", {}).setdefault("labels", {})[podutil.POD_TEMPLATE_HASH_LABEL] = (
            pod_hash
        )
        selector = store.copy(spec.get("selector") or {})
        selector.setdefault("matchLabels", {})[podutil.POD_TEMPLATE_HASH_LABEL] = pod_hash
        rs: Obj = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{md['name']}-{pod_hash}",
                "namespace": md["namespace"],
                "labels": dict(template["metadata"]["labels"]),
                "ownerReferences": [podutil.owner_reference(d, api_version="apps/v1", kind="Deployment")],
            },
            "spec": {"replicas": 0, "minReadySeconds": spec.get("minReadySeconds", 0) or 0,
                     "selector": selector, "template": template},
        }  # fmt: skip
        set_new_rs_annotations(d, rs, revision, exists=False)
        rs["spec"]["replicas"] = new_rs_replicas(d, [*self.old, rs], rs)
        try:
            created = await self.api.create(resources.REPLICASETS, rs)
        except errors.ApiError as exc:
            if errors.is_already_exists(exc):
                await self._adopt_existing(rs)
                return
            await self._creation_failed(exc)
            raise
        count = replicas_of(created)
        if count > 0:
            self.recorder.normal(
                d,
                "ScalingReplicaSet",
                f"Scaled up replica set {created['metadata']['name']} from 0 to {count}",
            )
        self.new = created
        await self._set_revision(str(revision))
        if has_deadline(d):
            status = store.copy(self.d.get("status") or {})
            message = f'Created new replica set "{created["metadata"]["name"]}"'
            set_progressing(status, "True", "NewReplicaSetCreated", message)
            await self._write_status(status)

    async def _adopt_existing(self, wanted: Obj) -> None:
        """The name is taken: by our own ReplicaSet not yet cached, or by a hash collision."""
        md = wanted["metadata"]
        existing = await self.api.get(resources.REPLICASETS, md["name"], namespace=md["namespace"])
        template = spec_of(self.d).get("template") or {}
        if podutil.is_controlled_by(existing, self.d) and podutil.equal_ignore_hash(
            existing["spec"]["template"], template
        ):
            self.new = existing
            return
        status = store.copy(self.d.get("status") or {})
        status["collisionCount"] = int(status.get("collisionCount") or 0) + 1
        await self._write_status(status)
        raise errors.ClientError(
            f"hash collision on replica set {md['name']}: collisionCount is now {status['collisionCount']}"
        )

    async def _creation_failed(self, exc: errors.ApiError) -> None:
        if exc.code == 403 and "being terminated" in exc.message:
            return
        self.recorder.warning(self.d, "FailedCreate", f"Failed to create new replica set: {exc.message}")
        if has_deadline(self.d):
            status = store.copy(self.d.get("status") or {})
            set_progressing(status, "False", "ReplicaSetCreateError", exc.message)
            await self._write_status(status)

    async def _set_revision(self, revision: str) -> None:
        annotations = self.d["metadata"].get("annotations") or {}
        if not revision or annotations.get(REVISION) == revision:
            return
        md = self.d["metadata"]
        body = {"metadata": {"annotations": {REVISION: revision}}}
        self.d = await self.api.patch(resources.DEPLOYMENTS, md["name"], body, namespace=md["namespace"])

    def _replace(self, rs: Obj) -> None:
        """Remember the object the API returned for one of our ReplicaSets."""
        name = rs["metadata"]["name"]
        if self.new is not None and self.new["metadata"]["name"] == name:
            self.new = rs
        self.old = [rs if o["metadata"]["name"] == name else o for o in self.old]

    async def _write_status(self, status: Obj) -> None:
        if same_status(self.d.get("status") or {}, status):
            return
        self.d = await self.api.update_status(resources.DEPLOYMENTS, {**self.d, "status": status})

    # -- scaling ----------------------------------------------------------------------------------

    async def scale_rs(self, rs: Obj, size: int) -> bool:
        """Scale one ReplicaSet (and refresh its replica annotations); True if its size changed."""
        copy = store.copy(rs)
        size_changed = replicas_of(rs) != size
        annotations_changed = set_replicas_annotations(
            copy, replicas_of(self.d), replicas_of(self.d) + max_surge(self.d)
        )
        if not size_changed and not annotations_changed:
            return False
        copy["spec"]["replicas"] = size
        self._replace(await self.api.update(resources.REPLICASETS, copy))
        if size_changed:
            direction = "up" if size > replicas_of(rs) else "down"
            name = rs["metadata"]["name"]
            self.recorder.normal(
                self.d,
                "ScalingReplicaSet",
                f"Scaled {direction} replica set {name} from {replicas_of(rs)} to {size}",
            )
        return size_changed

    def is_scaling_event(self) -> bool:
        """Some active ReplicaSet was sized for another ``spec.replicas``: the Deployment was scaled."""
        self._split()
        for rs in active(self.all):
            desired = annotations_of(rs).get(DESIRED_REPLICAS)
            if desired is not None and desired != str(replicas_of(self.d)):
                return True
        return False

    async def scale(self) -> None:
        """Share a change of ``spec.replicas`` among the active ReplicaSets (upstream's ``scale``)."""
        want = replicas_of(self.d)
        only = self._active_or_latest()
        if only is not None:
            if replicas_of(only) != want:
                await self.scale_rs(only, want)
            return
        if self._saturated():
            for rs in active(self.old):
                await self.scale_rs(rs, 0)
            return
        if not is_rolling(self.d):
            return
        rss = active(self.all)
        allowed = want + max_surge(self.d) if want > 0 else 0
        to_add = allowed - total_replicas(rss)
        # Growing: the biggest, then the newest, first; shrinking: the biggest, then the oldest.
        rss.sort(key=_created, reverse=to_add > 0)
        rss.sort(key=replicas_of, reverse=True)  # stable: ties keep the age order
        sizes, added = {}, 0
        for rs in rss:
            share = self._proportion(rs, to_add, added) if to_add else 0
            sizes[rs["metadata"]["name"]] = replicas_of(rs) + share
            added += share
        for i, rs in enumerate(rss):
            name = rs["metadata"]["name"]
            if i == 0 and to_add:  # leftovers of the rounding go to the biggest
                sizes[name] = max(0, sizes[name] + to_add - added)
            await self.scale_rs(rs, sizes[name])

    def _active_or_latest(self) -> Obj | None:
        if self.new is None and not self.old:
            return None
        running = active(self.all)
        if len(running) == 1:
            return running[0]
        if not running:
            return self.new if self.new is not None else max(self.old, key=_created)
        return None

    def _saturated(self) -> bool:
        rs = self.new
        if rs is None:
            return False
        desired = annotations_of(rs).get(DESIRED_REPLICAS)
        want = replicas_of(self.d)
        return replicas_of(rs) == want and desired == str(want) and status_of(rs, "availableReplicas") == want

    def _proportion(self, rs: Obj, to_add: int, added: int) -> int:
        if replicas_of(rs) == 0 or to_add == added:
            return 0
        want = replicas_of(self.d)
        if want == 0:
            fraction = -replicas_of(rs)
        else:
            annotated = annotations_of(rs).get(MAX_REPLICAS)
            base_total = (
                int(annotated) if annotated and annotated.isdigit() else status_of(self.d, "replicas")
            )
            target = (
                replicas_of(rs) * (want + max_surge(self.d)) / base_total if base_total else replicas_of(rs)
            )
            fraction = int(math.floor(target + 0.5)) - replicas_of(rs)
        allowed = to_add - added
        return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)

    # -- strategies -------------------------------------------------------------------------------

    async def sync(self) -> None:
        """Scale only (paused, or a size change); no new ReplicaSet is created."""
        await self.resolve(create=False)
        await self.scale()
        if spec_of(self.d).get("paused"):
            await self.cleanup()
        await self.sync_status()

    async def sync_status_only(self) -> None:
        await self.resolve(create=False)
        await self.sync_status()

    async def rolling(self) -> None:
        await self.resolve(create=True)
        if await self._reconcile_new() or await self._reconcile_old():
            await self.sync_rollout_status()
            return
        if complete(self.d, self.d.get("status") or {}):
            await self.cleanup()
        await self.sync_rollout_status()

    async def _reconcile_new(self) -> bool:
        rs, want = self.new, replicas_of(self.d)
        if rs is None or replicas_of(rs) == want:
            return False
        if replicas_of(rs) > want:
            return await self.scale_rs(rs, want)
        return await self.scale_rs(rs, new_rs_replicas(self.d, self.all, rs))

    async def _reconcile_old(self) -> bool:
        if total_replicas(self.old) == 0:
            return False
        min_available = replicas_of(self.d) - max_unavailable(self.d)
        new_unavailable = (
            max(0, replicas_of(self.new) - status_of(self.new, "availableReplicas")) if self.new else 0
        )
        budget = total_replicas(self.all) - min_available - new_unavailable
        if budget <= 0:
            return False
        cleaned = await self._cleanup_unhealthy(budget)
        scaled = await self._scale_down_old(min_available)
        return cleaned + scaled > 0

    async def _cleanup_unhealthy(self, budget: int) -> int:
        """Scale old ReplicaSets down by their unavailable pods first: removing them costs nothing."""
        done = 0
        for rs in sorted(self.old, key=_created):
            if done >= budget:
                break
            unhealthy = replicas_of(rs) - min(status_of(rs, "availableReplicas"), replicas_of(rs))
            if unhealthy <= 0:
                continue
            step = min(budget - done, unhealthy)
            await self.scale_rs(rs, replicas_of(rs) - step)
            done += step
        return done

    async def _scale_down_old(self, min_available: int) -> int:
        # A ReplicaSet's status may still count pods it is about to delete (its spec already
        # shrank): count at most spec.replicas of each, or maxUnavailable could be overrun.
        available = sum(min(status_of(rs, "availableReplicas"), replicas_of(rs)) for rs in self.all)
        if available <= min_available:
            return 0
        goal, done = available - min_available, 0
        for rs in sorted(self.old, key=_created):
            if done >= goal:
                break
            if replicas_of(rs) == 0:
                continue
            step = min(replicas_of(rs), goal - done)
            await self.scale_rs(rs, replicas_of(rs) - step)
            done += step
        return done

    async def recreate(self) -> None:
        await self.resolve(create=False)
        scaled = False
        for rs in active(self.old):
            scaled = await self.scale_rs(rs, 0) or scaled
        if scaled or self._old_pods_running():
            await self.sync_rollout_status()
            return
        if self.new is None:
            await self.resolve(create=True)
        if self.new is not None and replicas_of(self.new) != replicas_of(self.d):
            await self.scale_rs(self.new, replicas_of(self.d))
        if complete(self.d, self.d.get("status") or {}):
            await self.cleanup()
        await self.sync_rollout_status()

    def _old_pods_running(self) -> bool:
        if sum(status_of(rs, "replicas") for rs in self.old) > 0:
            return True
        pods = self.ctl.pods.store
        for rs in self.old:
            for pod in podutil.owned_by(pods, rs):
                if not podutil.is_terminal(pod):
                    return True
        return False

    async def cleanup(self) -> None:
        """Delete the oldest old ReplicaSets beyond ``revisionHistoryLimit`` (only empty, settled ones)."""
        limit = spec_of(self.d).get("revisionHistoryLimit")
        if limit is None:
            return
        alive = sorted(
            (rs for rs in self.old if not podutil.is_deleting(rs)),
            key=lambda rs: (revision_of(rs), _created(rs)),
        )
        for rs in alive[: max(0, len(alive) - int(limit))]:
            md = rs["metadata"]
            settled = status_of(rs, "observedGeneration") >= int(md.get("generation") or 0)
            if status_of(rs, "replicas") or replicas_of(rs) or not settled:
                continue
            try:
                await self.api.delete(resources.REPLICASETS, md["name"], namespace=md["namespace"],
                                      preconditions={"uid": md["uid"]})  # fmt: skip
            except errors.ApiError as exc:
                if exc.code not in (404, 409):
                    raise

    # -- status -----------------------------------------------------------------------------------

    async def check_paused(self) -> None:
        """Record a pause or a resume in the Progressing condition (a timeout stays reported)."""
        if not has_deadline(self.d):
            return
        status = store.copy(self.d.get("status") or {})
        cond = find_condition(status, "Progressing")
        if cond is not None and cond.get("reason") == "ProgressDeadlineExceeded":
            return
        paused = bool(spec_of(self.d).get("paused"))
        shown = cond is not None and cond.get("reason") == "DeploymentPaused"
        at = podutil.now()
        if paused and not shown:
            set_progressing(status, "Unknown", "DeploymentPaused", "Deployment is paused", at)
        elif not paused and shown:
            set_progressing(status, "Unknown", "DeploymentResumed", "Deployment is resumed", at)
        else:
            return
        await self._write_status(status)

    async def sync_status(self) -> None:
        status = calculate_status(self.d, self.all, self.new, podutil.now())
        await self._write_status(status)

    async def sync_rollout_status(self) -> None:
        at = podutil.now()
        d, new = self.d, self.new
        status = calculate_status(d, self.all, new, at)
        if not has_deadline(d):
            remove_condition(status, "Progressing")
        current = find_condition(d.get("status") or {}, "Progressing")
        done = (
            int(status.get("replicas") or 0) == int(status.get("updatedReplicas") or 0)
            and current is not None
            and current.get("reason") == "NewReplicaSetAvailable"
        )
        subject = (
            f'ReplicaSet "{new["metadata"]["name"]}"'
            if new is not None
            else f'Deployment "{d["metadata"]["name"]}"'
        )
        if has_deadline(d) and not done:
            if complete(d, status):
                message = f"{subject} has successfully progressed."
                set_progressing(status, "True", "NewReplicaSetAvailable", message, at)
            elif progressing(d, status):
                cond = new_condition(
                    "Progressing", "True", "ReplicaSetUpdated", f"{subject} is progressing.", at
                )
                if current is not None and current.get("status") == "True":
                    cond["lastTransitionTime"] = current.get("lastTransitionTime", cond["lastTransitionTime"])
                remove_condition(status, "Progressing")
                set_condition(status, cond)
            elif timed_out(d, status, at):
                message = f"{subject} has timed out progressing."
                set_progressing(status, "False", "ProgressDeadlineExceeded", message, at)
        failures = self._replica_failures(at)
        if failures:
            set_condition(status, failures)
        else:
            remove_condition(status, "ReplicaFailure")
        if same_status(d.get("status") or {}, status):
            self._requeue_if_stuck(status, at)
            return
        await self._write_status(status)

    def _replica_failures(self, at: datetime.datetime) -> Obj | None:
        for rs in [*([self.new] if self.new else []), *self.old]:
            cond = podutil.condition(rs, "ReplicaFailure")
            if cond is not None and cond.get("status") == "True":
                return new_condition(
                    "ReplicaFailure", "True", cond.get("reason", ""), cond.get("message", ""), at
                )
        return None

    def _requeue_if_stuck(self, status: Obj, at: datetime.datetime) -> None:
        """Come back when the progress deadline passes, to report it even if nothing else happens."""
        current = find_condition(self.d.get("status") or {}, "Progressing")
        if not has_deadline(self.d) or current is None:
            return
        if complete(self.d, status) or current.get("reason") == "ProgressDeadlineExceeded":
            return
        since = podutil.parse_time(current.get("lastUpdateTime"))
        if since is None:
            return
        after = (
            since + datetime.timedelta(seconds=int(self.d["spec"]["progressDeadlineSeconds"])) - at
        ).total_seconds()
        self.ctl.queue.add_after(base.key_of(self.d), max(after, 0.05))


def new() -> base.Controller:
    return DeploymentController()
