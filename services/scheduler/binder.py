"""The scheduler's writes: bindings, failure reports, and preemption's evictions.

- ``bind`` POSTs ``pods/<name>/binding`` with the pod's uid (so a pod deleted and re-created
  under the same name is not bound by mistake). A 409 means the pod is already bound (perhaps by
  another scheduler) or is being deleted, a 404 that it is gone: either way the informer will
  tell the truth, and the pod is not retried. Unbound WaitForFirstConsumer claims are first
  annotated with the chosen node, as upstream's VolumeBinding PreBind does, so the provisioner
  creates the volume there.
- ``report_failure`` records a ``FailedScheduling`` Warning event (repeats are counted by the
  event recorder) and sets the pod's ``PodScheduled`` condition to False with reason
  ``Unschedulable`` and the same message, plus ``status.nominatedNodeName`` after a preemption.
  The status is patched only when it changes, so a pod retried every 10 s writes it once.
- ``evict`` marks each victim with the ``DisruptionTarget`` condition, deletes it, and records
  ``Preempted``; lower-priority pods nominated to the same node lose their nomination.

Errors are translated here: callers get an ``Outcome``, never an exception from the API.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Sequence

from services.client import errors, events, resources
from services.machinery import meta
from services.scheduler import types
from services.scheduler.podinfo import PodInfo

log = logging.getLogger(__name__)

SELECTED_NODE = "volume.kubernetes.io/selected-node"


class Outcome(enum.Enum):
    BOUND = "bound"
    ALREADY_BOUND = "already bound"  # 409: bound meanwhile, or being deleted
    GONE = "gone"  # 404
    FAILED = "failed"  # anything else: retry with backoff


class Binder:
    def __init__(
        self,
        api: types.Api,
        recorder: events.EventRecorder,
        *,
        scheduler_name: str,
        scheduled_events_per_second: float = 50.0,
    ) -> None:
        self.api = api
        self.recorder = recorder
        self.scheduler_name = scheduler_name
        self.scheduled_events = TokenBucket(
            scheduled_events_per_second, burst=2 * scheduled_events_per_second
        )

    async def bind(
        self, pod: PodInfo, node: str, *, claims: Sequence[types.Object] = ()
    ) -> tuple[Outcome, str]:
        """Bind ``pod`` to ``node``; the outcome and, when it failed, why."""
        try:
            for claim in claims:
                await self._select_node(claim, node)
            await self.api.bind(pod.namespace, pod.name, node, uid=pod.uid or None)
        except errors.ApiError as exc:
            if exc.code == 409:
                log.debug("binding %s to %s: %s", pod.key, node, exc.message)
                return Outcome.ALREADY_BOUND, exc.message
            if exc.code == 404:
                return Outcome.GONE, exc.message
            log.warning("binding %s to %s failed: %s %s", pod.key, node, exc.code, exc.message)
            return Outcome.FAILED, f"binding rejected: {exc.message}"
        except errors.TransportError as exc:
            log.warning("binding %s to %s failed: %s", pod.key, node, exc)
            return Outcome.FAILED, f"binding rejected: {exc}"
        if self.scheduled_events.take():
            self.recorder.normal(pod.obj, "Scheduled", f"Successfully assigned {pod.key} to {node}")
        return Outcome.BOUND, ""

    async def _select_node(self, claim: types.Object, node: str) -> None:
        md = claim.get("metadata") or {}
        if (md.get("annotations") or {}).get(SELECTED_NODE) == node:
            return
        patch = {"metadata": {"annotations": {SELECTED_NODE: node}}}
        await self.api.patch(
            resources.PERSISTENTVOLUMECLAIMS, md.get("name", ""), patch, namespace=md.get("namespace")
        )

    async def report_failure(
        self, pod: PodInfo, message: str, *, reason: str = "Unschedulable", nominated_node: str | None = None
    ) -> None:
        """The FailedScheduling event and the PodScheduled=False condition (``nominated_node``:
        set it, or clear it with ``""``; None leaves it alone)."""
        self.recorder.warning(pod.obj, "FailedScheduling", message)
        patch = status_patch(pod.obj, reason=reason, message=message, nominated_node=nominated_node)
        if patch is None:
            return
        try:
            await self.api.patch(
                resources.PODS,
                pod.name,
                patch,
                namespace=pod.namespace,
                subresource="status",
                patch_type="strategic",
            )
        except errors.ApiError as exc:
            if exc.code != 404:
                log.warning("updating the status of %s failed: %s %s", pod.key, exc.code, exc.message)
        except errors.TransportError as exc:
            log.warning("updating the status of %s failed: %s", pod.key, exc)

    async def evict(
        self, preemptor: PodInfo, node: str, victims: list[PodInfo], demoted: list[PodInfo]
    ) -> None:
        """Delete the victims (each marked DisruptionTarget first) and clear the nominations of
        lower-priority pods that were waiting for the same node."""
        condition = {
            "type": "DisruptionTarget",
            "status": "True",
            "reason": "PreemptionByScheduler",
            "message": f"{preemptor.obj.get('spec', {}).get('schedulerName') or self.scheduler_name}: "
            "preempting to accommodate a higher priority pod",
            "lastTransitionTime": meta.now_rfc3339(),
        }
        for victim in victims:
            try:
                await self.api.patch(
                    resources.PODS, victim.name, {"status": {"conditions": [condition]}},
                    namespace=victim.namespace, subresource="status", patch_type="strategic",
                )  # fmt: skip
                await self.api.delete(resources.PODS, victim.name, namespace=victim.namespace,
                                      preconditions={"uid": victim.uid} if victim.uid else None)  # fmt: skip
            except errors.ApiError as exc:
                if exc.code not in (404, 409):
                    log.warning("preempting %s failed: %s %s", victim.key, exc.code, exc.message)
                continue
            except errors.TransportError as exc:
                log.warning("preempting %s failed: %s", victim.key, exc)
                continue
            log.info("preempted %s on %s for %s", victim.key, node, preemptor.key)
            self.recorder.event(
                victim.obj, "Normal", "Preempted", f"Preempted by pod {preemptor.uid} on node {node}",
                action="Preempting",
            )  # fmt: skip
        for pod in demoted:
            patch = {"status": {"nominatedNodeName": None}}
            try:
                await self.api.patch(
                    resources.PODS, pod.name, patch, namespace=pod.namespace, subresource="status"
                )
            except (errors.ApiError, errors.TransportError) as exc:
                log.info("clearing the nomination of %s failed: %s", pod.key, exc)


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; ``take`` never waits."""

    def __init__(self, rate: float, *, burst: float) -> None:
        self.rate, self.burst = rate, max(burst, 1.0 if rate else 0.0)
        self._tokens = self.burst
        self._last = time.monotonic()
        self.skipped = 0

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self.skipped += 1
        return False


def status_patch(
    pod: types.Object, *, reason: str, message: str, nominated_node: str | None
) -> types.Object | None:
    """The strategic-merge patch that sets PodScheduled=False, or None when nothing would change."""
    status = pod.get("status") or {}
    current = next((c for c in status.get("conditions") or () if c.get("type") == "PodScheduled"), None)
    same = current is not None and (current.get("status"), current.get("reason"), current.get("message")) == (
        "False",
        reason,
        message,
    )
    nomination_same = nominated_node is None or (status.get("nominatedNodeName") or "") == nominated_node
    if same and nomination_same:
        return None
    changed_status = current is None or current.get("status") != "False"
    condition = {
        "type": "PodScheduled",
        "status": "False",
        "reason": reason,
        "message": message,
        "lastProbeTime": None,
        "lastTransitionTime": meta.now_rfc3339() if changed_status else current.get("lastTransitionTime"),
    }
    body: types.Object = {"conditions": [condition]}
    if nominated_node is not None:
        body["nominatedNodeName"] = nominated_node or None
    return {"status": body}
