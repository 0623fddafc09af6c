"""The disruption controller: PodDisruptionBudget status from the pods it covers.

For each budget (``policy/v1``), from the caches:

- the pods are those of its namespace its selector matches (a null selector matches none);
  healthy ones are Ready and not being deleted;
- ``minAvailable: N`` wants N healthy pods out of however many exist; a percentage, or
  ``maxUnavailable`` (number or percentage, rounded up), is taken of the expected count: the
  summed ``spec.replicas`` of the pods' controllers (a ReplicaSet counts as its Deployment,
  StatefulSets and ReplicationControllers as themselves), with pods that have no such
  controller counting one each (upstream refuses those; counting them is the gentler choice
  and the brief's);
- ``disruptionsAllowed = max(currentHealthy - desiredHealthy, 0)``, less the pods an eviction
  recorded in ``status.disruptedPods`` that are still there (entries expire after 2 minutes,
  as upstream's ``DeletionTimeout``), and the ``DisruptionAllowed`` condition says whether it
  is positive (``SufficientPods`` / ``InsufficientPods``).

The eviction subresource reads this status to refuse evictions (429), so it must follow pod
readiness closely: every pod change queues the budgets that select the pod.
"""

from __future__ import annotations

import datetime
import logging
import math
from typing import Any

from services.client import clock as clock_
from services.client import resources, store, types
from services.controllers import base, podutil
from services.machinery import errors as apierrors
from services.machinery import selectors

log = logging.getLogger(__name__)

DELETION_TIMEOUT = 120.0  # seconds an entry of status.disruptedPods is trusted


def scaled(value: Any, total: int) -> int:
    """``intstr.GetScaledValueFromIntOrPercent`` rounding up."""
    if isinstance(value, str):
        text = value.strip()
        if not text.endswith("%") or not text[:-1].isdigit():
            raise ValueError(f"invalid value for IntOrString: invalid value {value!r}")
        return math.ceil(int(text[:-1]) * total / 100)
    return int(value)


def _selector(pdb: dict[str, Any]) -> selectors.LabelSelector:
    try:
        return selectors.from_label_selector_dict((pdb.get("spec") or {}).get("selector"))
    except apierrors.ApiError:
        return selectors.NOTHING


class DisruptionController(base.QueueController):
    name = "disruption"
    workers = 2

    def __init__(self, *, clock: types.Clock | None = None) -> None:
        super().__init__()
        self.clock = clock or clock_.RealClock()

    def setup(self, ctx: base.ControllerContext) -> None:
        super().setup(ctx)
        factory = ctx.informers
        self.budgets = factory.informer(resources.PODDISRUPTIONBUDGETS)
        self.pods = factory.informer(resources.PODS)
        self.scalers = {
            "Deployment": factory.informer(resources.DEPLOYMENTS),
            "ReplicaSet": factory.informer(resources.REPLICASETS),
            "StatefulSet": factory.informer(resources.STATEFULSETS),
            "ReplicationController": factory.informer(resources.REPLICATIONCONTROLLERS),
        }
        self.budgets.add_handlers(on_add=self.enqueue, on_update=lambda _o, n: self.enqueue(n))
        self.pods.add_handlers(
            on_add=self._pod_changed, on_update=self._pod_updated, on_delete=self._pod_changed
        )
        for informer in self.scalers.values():
            informer.add_handlers(on_update=self._scale_changed)

    # -- handlers ------------------------------------------------------------------------------

    def _pod_changed(self, pod: dict[str, Any]) -> None:
        labels = podutil.labels_of(pod)
        for pdb in self.budgets.store.list_namespace(pod["metadata"].get("namespace", "")):
            if _selector(pdb).matches(labels):
                self.enqueue(pdb)

    def _pod_updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        self._pod_changed(new)
        if podutil.labels_of(old) != podutil.labels_of(new):
            self._pod_changed(old)

    def _scale_changed(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        if (old.get("spec") or {}).get("replicas") != (new.get("spec") or {}).get("replicas"):
            for pdb in self.budgets.store.list_namespace(new["metadata"].get("namespace", "")):
                self.enqueue(pdb)

    # -- reconcile -----------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        pdb = self.budgets.store.get(key)
        if pdb is None or podutil.is_deleting(pdb):
            return
        assert self.ctx is not None
        namespace = pdb["metadata"]["namespace"]
        selector = _selector(pdb)
        pods = [
            p for p in self.pods.store.list_namespace(namespace) if selector.matches(podutil.labels_of(p))
        ]
        now = self.clock.now()
        status = dict(pdb.get("status") or {})
        disrupted = self._still_disrupted(status.get("disruptedPods") or {}, pods, now)
        healthy = sum(podutil.is_ready(p) and not podutil.is_deleting(p) for p in pods)
        try:
            expected, desired = self._expected(pdb, pods)
        except ValueError as exc:
            log.warning("poddisruptionbudget %s: %s", key, exc)
            self.ctx.recorder.warning(pdb, "CalculateExpectedPodCountFailed", f"Failed to calculate the number "
                                      f"of expected pods: {exc}")  # fmt: skip
            await self._write(pdb, {**status, "disruptionsAllowed": 0}, "SyncFailed", str(exc), now)
            return
        allowed = max(healthy - desired - len(disrupted), 0)
        status.update(
            currentHealthy=healthy,
            desiredHealthy=desired,
            expectedPods=expected,
            disruptionsAllowed=allowed,
            disruptedPods=disrupted,
        )
        if disrupted:
            self.queue.add_after(key, DELETION_TIMEOUT)  # entries expire: look again then
        else:
            status.pop("disruptedPods")
        reason = "SufficientPods" if allowed > 0 else "InsufficientPods"
        await self._write(pdb, status, reason, "", now)

    def _expected(self, pdb: dict[str, Any], pods: list[dict[str, Any]]) -> tuple[int, int]:
        """``(expectedPods, desiredHealthy)``, upstream's ``getExpectedPodCount``."""
        spec = pdb.get("spec") or {}
        if spec.get("maxUnavailable") is not None:
            expected = self._expected_scale(pods)
            return expected, max(expected - scaled(spec["maxUnavailable"], expected), 0)
        min_available = spec.get("minAvailable")
        if min_available is None:
            return len(pods), 0
        if isinstance(min_available, int):
            return len(pods), min_available
        expected = self._expected_scale(pods)
        return expected, scaled(min_available, expected)

    def _expected_scale(self, pods: list[dict[str, Any]]) -> int:
        """The summed scale of the pods' controllers; pods without a known one count one each."""
        scales: dict[str, int] = {}
        loose = 0
        for pod in pods:
            found = self._scale_of(pod)
            if found is None:
                loose += 1
            else:
                scales[found[0]] = found[1]
        return sum(scales.values()) + loose

    def _scale_of(self, pod: dict[str, Any]) -> tuple[str, int] | None:
        ref = podutil.controller_ref(pod)
        namespace = pod["metadata"].get("namespace", "")
        if ref is None or ref.get("kind") not in self.scalers:
            return None
        owner = self.scalers[ref["kind"]].store.get_by(namespace, ref.get("name", ""))
        if owner is None or owner["metadata"].get("uid") != ref.get("uid"):
            return None
        if ref["kind"] == "ReplicaSet":
            parent = podutil.controller_ref(owner)
            if parent is not None and parent.get("kind") == "Deployment":
                deployment = self.scalers["Deployment"].store.get_by(namespace, parent.get("name", ""))
                if deployment is not None and deployment["metadata"].get("uid") == parent.get("uid"):
                    owner = deployment
        return owner["metadata"]["uid"], int((owner.get("spec") or {}).get("replicas", 1))

    def _still_disrupted(
        self, disrupted: dict[str, str], pods: list[dict[str, Any]], now: datetime.datetime
    ) -> dict[str, str]:
        """Evicted pods not yet seen going, whose eviction is recent enough to trust."""
        present = {p["metadata"]["name"] for p in pods if not podutil.is_deleting(p)}
        kept = {}
        for name, at in disrupted.items():
            when = podutil.parse_time(at)
            if name in present and when is not None and (now - when).total_seconds() < DELETION_TIMEOUT:
                kept[name] = at
        return kept

    async def _write(
        self, pdb: dict[str, Any], status: dict[str, Any], reason: str, message: str, now: datetime.datetime
    ) -> None:
        assert self.ctx is not None
        generation = pdb["metadata"].get("generation", 1)
        allowed = status.get("disruptionsAllowed", 0) > 0
        previous = next(
            (c for c in status.get("conditions") or () if c.get("type") == "DisruptionAllowed"), None
        )
        flipped = previous is None or previous.get("status") != ("True" if allowed else "False")
        cond = {
            "type": "DisruptionAllowed",
            "status": "True" if allowed else "False",
            "reason": reason,
            "message": message,
            "observedGeneration": generation,
            "lastTransitionTime": podutil.format_time(now) if flipped else previous.get("lastTransitionTime"),
        }
        status["conditions"] = [
            c for c in status.get("conditions") or () if c.get("type") != "DisruptionAllowed"
        ]
        status["conditions"].append(cond)
        status["observedGeneration"] = generation
        if status != (pdb.get("status") or {}):
            changed = store.copy(pdb)
            changed["status"] = status
            await self.ctx.api.update_status(resources.PODDISRUPTIONBUDGETS, changed)


def new() -> base.Controller:
    return DisruptionController()
