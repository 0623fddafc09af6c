"""The scheduling queue: pending pods by priority, with backoff and re-queueing on cluster changes.

Upstream's ``PriorityQueue`` in four parts:

- *active*: a heap ordered by priority (highest first), then creation time, then arrival;
  ``pop`` hands out its head and marks the pod in flight;
- *backoff*: pods that failed and wait out ``initial * 2**(attempts-1)`` seconds (1 s doubling
  to 10 s by default) before they go back to active;
- *unschedulable*: pods no node could take; they stay until something changes that could make
  them fit (``move``: a node added or changed, an assigned pod deleted, ...), and then go to
  backoff or active depending on whether their backoff has run out. Each remembers which plugins
  rejected it, so a change only wakes the pods it can help. After ``max_unschedulable`` seconds
  a pod is retried anyway (upstream's 5-minute flush), in case an event was missed;
- *gated*: pods with ``schedulingGates``, held until an update removes the gates.

A pod in flight that fails goes back as unschedulable, unless a move happened while it was being
scheduled (the change might have helped it): then it goes to backoff, as upstream's
``moveRequestCycle`` rule says. Deleting a pod in flight marks it so it is dropped when its
attempt ends. Heaps are lazily cleaned: an entry whose pod moved on is skipped when popped.

Everything runs on one event loop; the handlers of the pod informer are the only writers
besides the scheduling loop, and neither awaits while changing the queue.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import itertools
import logging
import time
from collections.abc import Callable, Iterable

from services.machinery import tasks
from services.scheduler.podinfo import PodInfo

log = logging.getLogger(__name__)

ACTIVE, BACKOFF, UNSCHEDULABLE, GATED, IN_FLIGHT = "active", "backoff", "unschedulable", "gated", "in flight"
FLUSH_INTERVAL = 30.0  # seconds between checks for pods unschedulable for too long


class QueueClosed(Exception):
    """``pop`` on a closed queue: the scheduling loop should end."""


@dataclasses.dataclass(eq=False)
class QueuedPod:
    pod: PodInfo
    where: str = ACTIVE
    attempts: int = 0
    added: float = 0.0  # when first queued (monotonic): the e2e latency's start
    last_failure: float = 0.0  # when the last attempt failed
    unschedulable_since: float = 0.0
    rejected_by: frozenset[str] = frozenset()  # plugins of the last failure
    cycle: int = 0  # the scheduling cycle it was popped in
    deleted: bool = False  # deleted (or bound elsewhere) while in flight
    token: int = 0  # which heap entry is current

    @property
    def key(self) -> str:
        return self.pod.key


class SchedulingQueue:
    def __init__(
        self,
        *,
        initial_backoff: float = 1.0,
        max_backoff: float = 10.0,
        max_unschedulable: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.max_unschedulable = max_unschedulable
        self._clock = clock
        self._pods: dict[str, QueuedPod] = {}
        self._unschedulable: dict[str, QueuedPod] = {}  # the subset parked as unschedulable
        self._active: list[tuple[int, str, int, QueuedPod]] = []
        self._backoff: list[tuple[float, int, QueuedPod]] = []
        self._seq = itertools.count()
        self._cycle = 0
        self._move_cycle = -1
        self._next_flush = 0.0
        self._wakeup = asyncio.Event()
        self._closed = False

    # -- counts ----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return sum(1 for qp in self._pods.values() if qp.where != IN_FLIGHT)

    def __contains__(self, key: str) -> bool:
        return key in self._pods

    def get(self, key: str) -> QueuedPod | None:
        return self._pods.get(key)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys((ACTIVE, BACKOFF, UNSCHEDULABLE, GATED), 0)
        for qp in self._pods.values():
            if qp.where in counts:
                counts[qp.where] += 1
        return counts

    # -- informer side ---------------------------------------------------------------------------

    def add(self, pod: PodInfo) -> None:
        """A pending pod appeared (or changed): queue it, or update the queued one."""
        qp = self._pods.get(pod.key)
        if qp is None or qp.deleted:  # a deleted pod in flight stays deleted; this one is new
            qp = self._pods[pod.key] = QueuedPod(pod, added=self._clock())
            self._enqueue(qp)
            return
        relevant = _scheduling_inputs(qp.pod) != _scheduling_inputs(pod)
        qp.pod = pod
        if qp.where == IN_FLIGHT:
            return  # the attempt's outcome decides where it goes
        if qp.where == GATED and not pod.gated:
            self._enqueue(qp)
        elif qp.where == ACTIVE and relevant:
            self._push_active(qp)  # its priority may have changed
        elif qp.where == UNSCHEDULABLE and relevant:
            self._requeue(qp)

    def delete(self, key: str) -> None:
        """The pod is gone or bound: forget it (a pod in flight is dropped when its attempt ends)."""
        qp = self._pods.get(key)
        if qp is None:
            return
        if qp.where == IN_FLIGHT:
            qp.deleted = True
            return
        del self._pods[key]
        self._set(qp, "")  # stale heap entries are skipped

    def move(self, event: str, plugins: Iterable[str] | None = None) -> int:
        """A cluster change that may help pods rejected by ``plugins`` (None: any): retry them."""
        self._move_cycle = self._cycle
        wanted = None if plugins is None else frozenset(plugins)
        moved = 0
        for qp in list(self._unschedulable.values()):
            if wanted is None or qp.rejected_by & wanted or not qp.rejected_by:
                self._requeue(qp)
                moved += 1
        if moved:
            log.debug("%s: %d unschedulable pod(s) retried", event, moved)
        return moved

    # -- scheduling side -------------------------------------------------------------------------

    async def pop(self) -> QueuedPod:
        """The most important pod ready to be scheduled (waits for one); it is now in flight."""
        while True:
            now = self._clock()
            self._flush(now)
            while self._active:
                _, _, token, qp = heapq.heappop(self._active)
                if qp.where == ACTIVE and qp.token == token:
                    self._cycle += 1
                    self._set(qp, IN_FLIGHT)
                    qp.cycle = self._cycle
                    qp.attempts += 1
                    return qp
            if self._closed:
                raise QueueClosed
            self._wakeup.clear()
            try:
                await tasks.wait_for(self._wakeup.wait(), self._sleep_for(now))
            except TimeoutError:
                pass

    def done(self, qp: QueuedPod) -> None:
        """The attempt succeeded (the pod is bound, or being bound): it leaves the queue."""
        if self._pods.get(qp.key) is qp:
            del self._pods[qp.key]
        self._set(qp, "")

    def unschedulable(self, qp: QueuedPod, plugins: Iterable[str] = ()) -> None:
        """No node fits: park it until a relevant change (or back off, if one happened meanwhile)."""
        if self._finished(qp):
            return
        qp.last_failure = self._clock()
        qp.rejected_by = frozenset(plugins)
        if self._move_cycle >= qp.cycle:
            self._to_backoff(qp)
        else:
            self._set(qp, UNSCHEDULABLE)
            qp.unschedulable_since = qp.last_failure

    def backoff(self, qp: QueuedPod) -> None:
        """The attempt failed for a passing reason (an API error): retry after its backoff."""
        if self._finished(qp):
            return
        qp.last_failure = self._clock()
        self._to_backoff(qp)

    def close(self) -> None:
        """Wake a waiting ``pop`` so it ends (stop)."""
        self._closed = True
        self._wakeup.set()

    def backoff_duration(self, qp: QueuedPod) -> float:
        duration = self.initial_backoff
        for _ in range(max(qp.attempts - 1, 0)):
            duration *= 2
            if duration >= self.max_backoff:
                return self.max_backoff
        return min(duration, self.max_backoff)

    # -- internals -------------------------------------------------------------------------------

    def _finished(self, qp: QueuedPod) -> bool:
        if qp.deleted or self._pods.get(qp.key) is not qp:
            if self._pods.get(qp.key) is qp:
                del self._pods[qp.key]
            self._set(qp, "")
            return True
        return False

    def _set(self, qp: QueuedPod, where: str) -> None:
        if qp.where == UNSCHEDULABLE:
            self._unschedulable.pop(qp.key, None)
        qp.where = where
        if where == UNSCHEDULABLE:
            self._unschedulable[qp.key] = qp

    def _enqueue(self, qp: QueuedPod) -> None:
        if qp.pod.gated:
            self._set(qp, GATED)
        else:
            self._push_active(qp)

    def _push_active(self, qp: QueuedPod) -> None:
        self._set(qp, ACTIVE)
        qp.token = next(self._seq)
        heapq.heappush(self._active, (-qp.pod.priority, qp.pod.created, qp.token, qp))
        self._wakeup.set()

    def _requeue(self, qp: QueuedPod) -> None:
        if qp.pod.gated:
            self._set(qp, GATED)
        elif self._backoff_expiry(qp) > self._clock():
            self._to_backoff(qp)
        else:
            self._push_active(qp)

    def _to_backoff(self, qp: QueuedPod) -> None:
        self._set(qp, BACKOFF)
        qp.token = next(self._seq)
        heapq.heappush(self._backoff, (self._backoff_expiry(qp), qp.token, qp))
        self._wakeup.set()

    def _backoff_expiry(self, qp: QueuedPod) -> float:
        return qp.last_failure + self.backoff_duration(qp) if qp.attempts else 0.0

    def _flush(self, now: float) -> None:
        while self._backoff and self._backoff[0][0] <= now:
            _, token, qp = heapq.heappop(self._backoff)
            if qp.where == BACKOFF and qp.token == token:
                self._push_active(qp)
        if now >= self._next_flush:
            self._next_flush = now + min(FLUSH_INTERVAL, self.max_unschedulable)
            for qp in list(self._unschedulable.values()):
                if now - qp.unschedulable_since >= self.max_unschedulable:
                    self._requeue(qp)

    def _sleep_for(self, now: float) -> float:
        wait = max(self._next_flush - now, 0.001)
        while self._backoff:
            expiry, token, qp = self._backoff[0]
            if qp.where == BACKOFF and qp.token == token:
                return min(wait, max(expiry - now, 0.001))
            heapq.heappop(self._backoff)  # stale
        return wait


def _scheduling_inputs(pod: PodInfo) -> tuple[object, ...]:
    """What of a pending pod can change where it fits (our own status writes change none of it)."""
    obj = pod.obj
    md = obj.get("metadata") or {}
    return (obj.get("spec"), md.get("labels"), md.get("annotations"), md.get("deletionTimestamp"))
