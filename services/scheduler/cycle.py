"""The scheduling loop: pop a pod, decide synchronously, then write the outcome concurrently.

Each cycle takes the queue's most important pod and runs ``Algorithm.schedule`` against the
cache, with no await in between (the cache is the snapshot). A pod that fits is *assumed* on its
node at once, so the next cycle already sees the room it takes, and its binding is written by a
task of its own; the loop moves on to the next pod meanwhile. A pod that fits nowhere may
preempt: the victims' deletion and the preemptor's nomination are written the same way, together
with the FailedScheduling event and the PodScheduled condition.

At most ``parallel_binds`` of these writes are in flight; the loop waits for a slot before it
pops the next pod, which keeps the API server's load bounded and the assumed state short-lived.
Every write task is owned here: ``drain`` waits for them (with a deadline) and cancels the rest,
and a cancelled binding hands its pod back to the queue and its room back to the cache.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Coroutine
from typing import Any

from services.scheduler import algorithm, binder, filters, metrics, preemption, types
from services.scheduler import cache as cache_
from services.scheduler import queue as queue_
from services.scheduler import settings as settings_
from services.scheduler.podinfo import PodInfo

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Report:
    """What a failed attempt writes: the message, and a preemption's nomination and victims."""

    pod: PodInfo
    message: str
    nominated: str | None = None  # set it; "" clears it; None leaves it alone
    victims: list[PodInfo] = dataclasses.field(default_factory=list)
    demoted: list[PodInfo] = dataclasses.field(default_factory=list)  # lower nominees of that node


class SchedulingLoop:
    def __init__(
        self,
        *,
        settings: settings_.SchedulerSettings,
        cache: cache_.Cache,
        queue: queue_.SchedulingQueue,
        algorithm_: algorithm.Algorithm,
        binder_: binder.Binder,
        listers: types.Listers,
        metrics_: metrics.SchedulerMetrics,
    ) -> None:
        self.settings = settings
        self.cache = cache
        self.queue = queue
        self.algorithm = algorithm_
        self.binder = binder_
        self.listers = listers
        self.metrics = metrics_
        self.profile = settings.scheduler_name
        self._slots = asyncio.Semaphore(settings.parallel_binds)
        self._work: set[asyncio.Task[Any]] = set()

    @property
    def in_flight(self) -> int:
        return len(self._work)

    async def run(self) -> None:
        """Schedule until cancelled (or the queue is closed)."""
        while True:
            await self._slots.acquire()
            try:
                qp = await self.queue.pop()
            except queue_.QueueClosed:
                self._slots.release()
                return
            except BaseException:
                self._slots.release()
                raise
            try:
                self.schedule_one(qp)
            except Exception:
                self._slots.release()
                log.exception("scheduling %s failed", qp.key)
                self.queue.backoff(qp)
            await asyncio.sleep(0)  # let informer events and binding answers in between pods

    async def drain(self, deadline: float) -> None:
        """Wait up to ``deadline`` seconds for the writes in flight, then cancel what is left."""
        pending = set(self._work)
        if pending and deadline > 0:
            _, pending = await asyncio.wait(pending, timeout=deadline)
        for task in pending:
            task.cancel()
        if pending:
            log.info("cancelled %d scheduler writes in flight", len(pending))
            await asyncio.wait(pending)

    # -- one cycle (synchronous) ---------------------------------------------------------------

    def schedule_one(self, qp: queue_.QueuedPod) -> None:
        """Decide for one pod; the caller holds a slot, which this hands to a write task or frees."""
        pod = qp.pod
        if pod.deleting or pod.node_name or pod.key in self.cache.pods:
            self.queue.done(qp)  # bound or assumed meanwhile, or going away: nothing to do
            self._slots.release()
            return
        started = time.perf_counter()
        decision = self.algorithm.schedule(pod, self.cache, self.listers)
        if decision.node:
            claims = filters.unbound_delayed_claims(pod, self.listers) if pod.claims else []
            self.cache.assume(pod, decision.node)
            self._spawn(self._bind(qp, decision.node, claims, started), f"bind {pod.key}")
            return
        assert decision.error is not None
        self._unschedulable(qp, decision, started)

    def _unschedulable(self, qp: queue_.QueuedPod, decision: algorithm.Decision, started: float) -> None:
        error = decision.error
        assert error is not None
        report = Report(qp.pod, error.message())
        if decision.state is not None and error.num_nodes:
            self._preempt(qp, decision.state, error, report)
        self.queue.unschedulable(qp, error.plugins)
        self._observe("unschedulable", started)
        log.debug("%s is unschedulable: %s", report.pod.key, report.message)
        self._spawn(self._report(report), f"report {report.pod.key}")

    def _preempt(
        self, qp: queue_.QueuedPod, state: filters.CycleState, error: algorithm.FitError, report: Report
    ) -> None:
        """Try preemption; on success nominate the node (in the cache now, in the API by the report)."""
        pod = qp.pod
        self.metrics.preemption_attempts.inc()
        outcome = preemption.preempt(state, error, rng=self.algorithm.rng)
        if outcome.candidate is None:
            report.message = error.message(outcome.message)
            if outcome.clear_nomination and pod.nominated_node:
                report.nominated = ""
                qp.pod = dataclasses.replace(pod, nominated_node="")
                self.cache.clear_nominated(pod.key)
            return
        node = report.nominated = outcome.candidate.node
        report.victims = outcome.candidate.victims
        waiting = self.cache.nominated.get(node, {}).values()
        report.demoted = [p for p in waiting if p.priority < pod.priority and p.key != pod.key]
        for other in report.demoted:
            self.cache.clear_nominated(other.key)
        qp.pod = dataclasses.replace(pod, nominated_node=node)
        self.cache.nominate(qp.pod, node)
        self.metrics.preemption_victims.observe(len(report.victims))
        log.info("%s preempts %d pod(s) on %s", pod.key, len(report.victims), node)

    # -- writes (tasks) ------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        # Owned by this loop: drain() awaits or cancels every task in _work.
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._work.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._work.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    async def _bind(
        self, qp: queue_.QueuedPod, node: str, claims: list[types.Object], started: float
    ) -> None:
        pod = qp.pod
        try:
            outcome, why = await self.binder.bind(pod, node, claims=claims)
        except asyncio.CancelledError:
            self.cache.forget(pod.key)
            self.queue.backoff(qp)
            raise
        if outcome is binder.Outcome.BOUND:
            self.queue.done(qp)
            self._observe("scheduled", started)
            self.metrics.e2e.labels(self.profile).observe(time.monotonic() - qp.added)
            return
        self.cache.forget(pod.key)
        self.queue.move("AssignedPodDelete")  # the room it held is free again
        if outcome is not binder.Outcome.FAILED:
            self.queue.done(qp)  # bound elsewhere, deleted, or being deleted: the informer tells
            return
        self.queue.backoff(qp)
        self._observe("error", started)
        await self.binder.report_failure(pod, why, reason="SchedulerError")

    async def _report(self, report: Report) -> None:
        if report.nominated and (report.victims or report.demoted):
            await self.binder.evict(report.pod, report.nominated, report.victims, report.demoted)
        await self.binder.report_failure(report.pod, report.message, nominated_node=report.nominated)

    def _observe(self, result: str, started: float) -> None:
        self.metrics.attempts.labels(result, self.profile).inc()
        self.metrics.attempt_duration.labels(result, self.profile).observe(time.perf_counter() - started)
