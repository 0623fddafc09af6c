"""The Job controller: run pods to completion, count them, finish the Job, expire it.

A pass over a Job, from the caches:

1. count its pods (controller reference): active (neither finished nor being deleted), ready,
   succeeded, failed; with ``completionMode: Indexed`` also which indexes succeeded
   (``status.completedIndexes``);
2. decide whether the Job is done. Success: ``completions`` pods (or indexes) succeeded, or,
   without ``completions``, one pod succeeded and none is left running. Failure: more failed
   pods than ``backoffLimit`` (container restarts count too under ``restartPolicy: OnFailure``)
   or ``activeDeadlineSeconds`` since ``startTime`` passed. As Kubernetes 1.31+ does, the
   Job first gets the interim condition (``SuccessCriteriaMet`` / ``FailureTarget``), its
   remaining pods are deleted, and then the terminal one (``Complete`` / ``Failed``), which is
   what ``kubectl wait --for=condition=complete`` waits for;
3. otherwise keep ``min(parallelism, remaining completions)`` pods active, creating
   replacements for failed pods after an exponential backoff (10 s doubling to 6 min, as
   upstream) counted from the last failure;
4. a finished Job with ``ttlSecondsAfterFinished`` is deleted (propagation Background) once
   that many seconds passed since it finished (the TTL-after-finished controller's job).

Counting is from the pods still present, kept monotonic against the status (simplified
from upstream's finalizer-based tracking: ``uncountedTerminatedPods`` stays empty). A
failed pod stays until the Job is deleted, as upstream leaves them, so nothing is lost in the
usual case.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from typing import Any

from services.client import clock as clock_
from services.client import errors, resources, store, types
from services.controllers import base, podutil

log = logging.getLogger(__name__)

CONTROLLER_UID_LABELS = ("batch.kubernetes.io/controller-uid", "controller-uid")
JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
BACKOFF_BASE = (
    10.0  # seconds before the first replacement of a failed pod (upstream's DefaultJobPodFailureBackOff)
)
BACKOFF_CAP = 360.0  # seconds; upstream's MaxJobPodFailureBackOff
SUCCESS_MESSAGE = "Reached expected number of succeeded pods"
BACKOFF_MESSAGE = "Job has reached the specified backoff limit"
DEADLINE_MESSAGE = "Job was active longer than specified deadline"


def condition(job: dict[str, Any], type_: str) -> dict[str, Any] | None:
    cond = podutil.condition(job, type_)
    return cond if cond is not None and cond.get("status") == "True" else None


def is_finished(job: dict[str, Any]) -> bool:
    return condition(job, "Complete") is not None or condition(job, "Failed") is not None


def new_condition(type_: str, reason: str, message: str, now: datetime.datetime) -> dict[str, Any]:
    at = podutil.format_time(now)
    return {"type": type_, "status": "True", "lastProbeTime": at, "lastTransitionTime": at,
            "reason": reason, "message": message}  # fmt: skip


def _phase(pod: dict[str, Any]) -> str:
    return (pod.get("status") or {}).get("phase", "")


def index_of(pod: dict[str, Any]) -> int | None:
    md = pod["metadata"]
    text = (md.get("annotations") or {}).get(COMPLETION_INDEX) or (md.get("labels") or {}).get(
        COMPLETION_INDEX
    )
    return int(text) if text is not None and text.isdigit() else None


def format_indexes(indexes: set[int]) -> str:
    """``1,3-5,7``: sorted, runs of three or more collapsed (``status.completedIndexes``)."""
    runs: list[str] = []
    ordered = sorted(indexes)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        sep = "," if j == i + 1 else "-"  # upstream writes a run of two as "3,4"
        runs.append(str(ordered[i]) if i == j else f"{ordered[i]}{sep}{ordered[j]}")
        i = j + 1
    return ",".join(runs)


def parse_indexes(text: str | None) -> set[int]:
    indexes: set[int] = set()
    for part in (text or "").split(","):
        first, _, last = part.strip().partition("-")
        if first.isdigit():
            indexes.update(range(int(first), int(last if last.isdigit() else first) + 1))
    return indexes


def _finished_at(pod: dict[str, Any]) -> datetime.datetime | None:
    """When a pod finished: its last container's finish, else when it stopped being ready."""
    times = [
        podutil.parse_time(((cs.get("state") or {}).get("terminated") or {}).get("finishedAt"))
        for cs in (pod.get("status") or {}).get("containerStatuses") or ()
    ]
    found = [t for t in times if t is not None]
    if found:
        return max(found)
    ready = podutil.condition(pod, "Ready") or {}
    return podutil.parse_time(ready.get("lastTransitionTime")) or podutil.parse_time(
        pod["metadata"].get("creationTimestamp")
    )


@dataclasses.dataclass
class Counts:
    active: list[dict[str, Any]]  # neither finished nor being deleted
    succeeded: int
    failed: int
    completed: set[int]  # Indexed: the indexes that succeeded


def count(job: dict[str, Any], pods: list[dict[str, Any]]) -> Counts:
    """What the Job's pods add up to, never below what its status already counted."""
    spec, status = job.get("spec") or {}, job.get("status") or {}
    completed = parse_indexes(status.get("completedIndexes"))
    if spec.get("completionMode") == "Indexed":
        completed |= {i for p in pods if _phase(p) == "Succeeded" and (i := index_of(p)) is not None}
        completed = {i for i in completed if i < int(spec.get("completions") or 0)}
        succeeded = len(completed)
    else:
        succeeded = max(int(status.get("succeeded") or 0), sum(_phase(p) == "Succeeded" for p in pods))
    failed = max(int(status.get("failed") or 0), sum(_phase(p) == "Failed" for p in pods))
    return Counts([p for p in pods if podutil.is_active(p)], succeeded, failed, completed)


class JobController(base.QueueController):
    name = "job"
    workers = 5  # kube-controller-manager's --concurrent-job-syncs

    def __init__(
        self,
        *,
        clock: types.Clock | None = None,
        backoff_base: float = BACKOFF_BASE,
        backoff_cap: float = BACKOFF_CAP,
    ) -> None:
        super().__init__()
        self.clock = clock or clock_.RealClock()
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.expectations = podutil.Expectations()

    def setup(self, ctx: base.ControllerContext) -> None:
        super().setup(ctx)
        self.jobs = ctx.informers.informer(resources.JOBS)
        self.pods = ctx.informers.informer(resources.PODS, indexers=podutil.INDEXERS)
        self.jobs.add_handlers(on_add=self.enqueue, on_update=lambda _o, n: self.enqueue(n),
                               on_delete=lambda j: self.expectations.forget(base.key_of(j)))  # fmt: skip
        self.pods.add_handlers(
            on_add=self._pod_added, on_update=self._pod_updated, on_delete=self._pod_deleted
        )

    # -- handlers ------------------------------------------------------------------------------

    def _job_key(self, pod: dict[str, Any]) -> str | None:
        ref = podutil.controller_ref(pod)
        if ref is None or ref.get("kind") != "Job":
            return None
        return f"{pod['metadata'].get('namespace', '')}/{ref.get('name', '')}"

    def _pod_added(self, pod: dict[str, Any]) -> None:
        key = self._job_key(pod)
        if key is not None:
            self.expectations.creation_observed(key)
            self.queue.add(key)

    def _pod_updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        key = self._job_key(new)
        if key is not None:
            if podutil.is_deleting(new) and not podutil.is_deleting(old):
                self.expectations.deletion_observed(key, store.key_of(new))
            self.queue.add(key)

    def _pod_deleted(self, pod: dict[str, Any]) -> None:
        key = self._job_key(pod)
        if key is not None:
            self.expectations.deletion_observed(key, store.key_of(pod))
            self.queue.add(key)

    # -- reconcile -----------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        job = self.jobs.store.get(key)
        if job is None or podutil.is_deleting(job):
            return
        now = self.clock.now()
        if is_finished(job):
            await self._expire(job, now)
            return
        pods = podutil.owned_by(self.pods.store, job)
        status = store.copy(job.get("status") or {})
        spec = job.get("spec") or {}
        counts = count(job, pods)
        if not spec.get("suspend") and not status.get("startTime"):
            status["startTime"] = podutil.format_time(now)
        conditions = list(status.get("conditions") or [])
        target = next((c for c in conditions if c["type"] in ("SuccessCriteriaMet", "FailureTarget")
                       and c.get("status") == "True"), None)  # fmt: skip
        if target is None:
            target = self._verdict(job, status, counts, now)
            if target is not None:
                conditions.append(target)
        if target is not None:  # finishing: no pod may run on, then the terminal condition
            await self._delete_pods(job, counts.active)
            if not counts.active:
                conditions.append(self._finish(job, status, target, now))
        elif spec.get("suspend"):
            await self._delete_pods(job, counts.active)
            conditions = self._set_suspended(job, conditions, True, now)
        else:
            if condition(job, "Suspended") is not None:
                conditions = self._set_suspended(job, conditions, False, now)
                status["startTime"] = podutil.format_time(now)
            await self._manage(job, pods, counts, now)
            self._requeue_for_deadline(job, status, now)
        await self._write_status(job, status, conditions, counts, pods)

    async def _write_status(
        self, job: dict[str, Any], status: dict[str, Any], conditions: list[dict[str, Any]], counts: Counts,
        pods: list[dict[str, Any]],
    ) -> None:  # fmt: skip
        status.update(
            active=len(counts.active),
            ready=sum(podutil.is_ready(p) for p in counts.active),
            terminating=sum(podutil.is_deleting(p) and not podutil.is_terminal(p) for p in pods),
            succeeded=counts.succeeded,
            failed=counts.failed,
            conditions=conditions,
            uncountedTerminatedPods={},
        )
        if (job.get("spec") or {}).get("completionMode") == "Indexed":
            status["completedIndexes"] = format_indexes(counts.completed)
        omitted_when_empty = ("active", "succeeded", "failed", "conditions")
        status = {k: v for k, v in status.items() if k not in omitted_when_empty or v}
        if status != (job.get("status") or {}):
            assert self.ctx is not None
            changed = store.copy(job)
            changed["status"] = status
            await self.ctx.api.update_status(resources.JOBS, changed)

    def _verdict(
        self, job: dict[str, Any], status: dict[str, Any], counts: Counts, now: datetime.datetime
    ) -> dict[str, Any] | None:
        """The interim condition the Job has earned, if any: failure is checked first."""
        spec = job.get("spec") or {}
        restarts = 0
        if ((spec.get("template") or {}).get("spec") or {}).get("restartPolicy") == "OnFailure":
            restarts = sum(
                int(cs.get("restartCount") or 0)
                for p in counts.active
                for cs in (p.get("status") or {}).get("containerStatuses") or ()
            )
        if counts.failed + restarts > int(spec.get("backoffLimit", 6)):
            return new_condition("FailureTarget", "BackoffLimitExceeded", BACKOFF_MESSAGE, now)
        deadline = spec.get("activeDeadlineSeconds")
        started = podutil.parse_time(status.get("startTime"))
        if deadline is not None and started is not None and (now - started).total_seconds() >= int(deadline):
            return new_condition("FailureTarget", "DeadlineExceeded", DEADLINE_MESSAGE, now)
        completions = spec.get("completions")
        if spec.get("completionMode") == "Indexed":
            done = len(counts.completed) >= int(completions or 0)
        elif completions is None:
            done = counts.succeeded > 0 and not counts.active
        else:
            done = counts.succeeded >= int(completions)
        if done:
            return new_condition("SuccessCriteriaMet", "CompletionsReached", SUCCESS_MESSAGE, now)
        return None

    def _finish(
        self, job: dict[str, Any], status: dict[str, Any], target: dict[str, Any], now: datetime.datetime
    ) -> dict[str, Any]:
        assert self.ctx is not None
        if target["type"] == "SuccessCriteriaMet":
            status["completionTime"] = podutil.format_time(now)
            self.ctx.recorder.normal(job, "Completed", "Job completed")
            log.info("job %s completed", base.key_of(job))
            return new_condition("Complete", target["reason"], target["message"], now)
        self.ctx.recorder.warning(job, target["reason"], target["message"])
        log.info("job %s failed: %s", base.key_of(job), target["reason"])
        return new_condition("Failed", target["reason"], target["message"], now)

    def _set_suspended(
        self, job: dict[str, Any], conditions: list[dict[str, Any]], suspended: bool, now: datetime.datetime
    ) -> list[dict[str, Any]]:
        assert self.ctx is not None
        current = next((c for c in conditions if c["type"] == "Suspended"), None)
        if current is not None and (current.get("status") == "True") == suspended:
            return conditions
        if suspended:
            cond = new_condition("Suspended", "JobSuspended", "Job suspended", now)
            self.ctx.recorder.normal(job, "Suspended", "Job suspended")
        else:
            cond = {**new_condition("Suspended", "JobResumed", "Job resumed", now), "status": "False"}
            self.ctx.recorder.normal(job, "Resumed", "Job resumed")
        return [c for c in conditions if c["type"] != "Suspended"] + [cond]

    def _requeue_for_deadline(
        self, job: dict[str, Any], status: dict[str, Any], now: datetime.datetime
    ) -> None:
        deadline = (job.get("spec") or {}).get("activeDeadlineSeconds")
        started = podutil.parse_time(status.get("startTime"))
        if deadline is not None and started is not None:
            left = (started - now).total_seconds() + int(deadline)
            self.queue.add_after(base.key_of(job), max(left, 0.0) + 0.01)

    # -- pods ----------------------------------------------------------------------------------

    async def _manage(
        self, job: dict[str, Any], pods: list[dict[str, Any]], counts: Counts, now: datetime.datetime
    ) -> None:
        key = base.key_of(job)
        active, succeeded = counts.active, counts.succeeded
        if not self.expectations.satisfied(key):
            return
        spec = job.get("spec") or {}
        parallelism = int(spec.get("parallelism", 1))
        completions = spec.get("completions")
        if spec.get("completionMode") == "Indexed":
            indexes, surplus = self._indexes_to_run(job, active, counts.completed, parallelism)
        else:
            if completions is None:
                want = min(len(active), parallelism) if succeeded > 0 else parallelism
            else:
                want = max(min(parallelism, int(completions) - succeeded), 0)
            indexes = [None] * max(want - len(active), 0)
            surplus = sorted(active, key=podutil.deletion_rank)[: max(len(active) - want, 0)]
        if surplus:
            await self._delete_pods(job, surplus)
            return
        if not indexes:
            return
        wait = self._backoff_left(pods, counts.failed, now)
        if wait > 0:
            self.queue.add_after(key, wait)
            return
        self.expectations.expect(key, adds=len(indexes))
        queue = iter(indexes)

        async def create_next() -> None:
            await self._create(job, next(queue))

        done, error = await podutil.slow_start(len(indexes), create_next)
        for _ in range(len(indexes) - done):
            self.expectations.creation_observed(key)
        if error is not None:
            raise error

    def _indexes_to_run(
        self, job: dict[str, Any], active: list[dict[str, Any]], completed: set[int], parallelism: int
    ) -> tuple[list[int | None], list[dict[str, Any]]]:
        completions = int((job.get("spec") or {}).get("completions") or 0)
        running: dict[int, dict[str, Any]] = {}
        surplus: list[dict[str, Any]] = []
        for pod in sorted(active, key=lambda p: p["metadata"].get("creationTimestamp", "")):
            index = index_of(pod)
            if index is None or index >= completions or index in completed or index in running:
                surplus.append(pod)
            else:
                running[index] = pod
        pending = [i for i in range(completions) if i not in completed and i not in running]
        return list(pending[: max(parallelism - len(running), 0)]), surplus

    def _backoff_left(self, pods: list[dict[str, Any]], failed: int, now: datetime.datetime) -> float:
        """Seconds until a replacement may start after ``failed`` failures (0: now)."""
        if failed <= 0:
            return 0.0
        finished = [t for p in pods if _phase(p) == "Failed" and (t := _finished_at(p)) is not None]
        if not finished:
            return 0.0
        delay = min(self.backoff_base * 2 ** min(failed - 1, 30), self.backoff_cap)
        return max((max(finished) - now).total_seconds() + delay, 0.0)

    async def _create(self, job: dict[str, Any], index: int | None) -> None:
        assert self.ctx is not None
        pod = new_pod(job, index)
        created = await self.ctx.api.create(resources.PODS, pod)
        self.ctx.recorder.normal(job, "SuccessfulCreate", f"Created pod: {created['metadata']['name']}")

    async def _delete_pods(self, job: dict[str, Any], pods: list[dict[str, Any]]) -> None:
        if not pods:
            return
        assert self.ctx is not None
        key = base.key_of(job)
        self.expectations.expect(key, deletes=[store.key_of(p) for p in pods])
        for pod in pods:
            name = pod["metadata"]["name"]
            try:
                await self.ctx.api.delete(resources.PODS, name, namespace=pod["metadata"]["namespace"],
                                          preconditions={"uid": pod["metadata"]["uid"]})  # fmt: skip
            except errors.ApiError as exc:
                self.expectations.deletion_observed(key, store.key_of(pod))
                if not errors.is_not_found(exc):
                    raise
                continue
            self.ctx.recorder.normal(job, "SuccessfulDelete", f"Deleted pod: {name}")

    # -- TTL after finished --------------------------------------------------------------------

    async def _expire(self, job: dict[str, Any], now: datetime.datetime) -> None:
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
        if ttl is None:
            return
        status = job.get("status") or {}
        final = condition(job, "Complete") or condition(job, "Failed") or {}
        finished = podutil.parse_time(status.get("completionTime")) or podutil.parse_time(
            final.get("lastTransitionTime")
        )
        if finished is None:
            return
        left = (finished - now).total_seconds() + int(ttl)
        if left > 0:
            self.queue.add_after(base.key_of(job), left)
            return
        assert self.ctx is not None
        md = job["metadata"]
        # Re-read it: the TTL may have changed since the cache saw it (upstream checks too).
        fresh = await self.ctx.api.get(resources.JOBS, md["name"], namespace=md["namespace"])
        if (fresh.get("spec") or {}).get("ttlSecondsAfterFinished") != ttl:
            return
        log.info("job %s: deleting it %ss after it finished", base.key_of(job), ttl)
        try:
            await self.ctx.api.delete(resources.JOBS, md["name"], namespace=md["namespace"],
                                      propagation_policy="Background", preconditions={"uid": md["uid"]})  # fmt: skip
        except errors.ApiError as exc:
            if not errors.is_not_found(exc):
                raise


def new_pod(job: dict[str, Any], index: int | None) -> dict[str, Any]:
    """A pod from the Job's template, labelled and owned as upstream's job pods are."""
    md = job["metadata"]
    template = store.copy((job.get("spec") or {}).get("template") or {})
    tmeta = template.get("metadata") or {}
    labels = dict(tmeta.get("labels") or {})
    for label in CONTROLLER_UID_LABELS:
        labels[label] = md["uid"]
    for label in JOB_NAME_LABELS:
        labels[label] = md["name"]
    annotations = dict(tmeta.get("annotations") or {})
    spec = template.get("spec") or {}
    generate = f"{md['name']}-"
    if index is not None:
        generate = f"{md['name']}-{index}-"
        labels[COMPLETION_INDEX] = annotations[COMPLETION_INDEX] = str(index)
        spec["hostname"] = f"{md['name']}-{index}"
        env = {"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
            "fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}}}  # fmt: skip
        for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
            if not any(e.get("name") == "JOB_COMPLETION_INDEX" for e in container.get("env") or ()):
                container.setdefault("env", []).append(env)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": generate,
            "namespace": md["namespace"],
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [podutil.owner_reference(job, api_version="batch/v1", kind="Job")],
        },
        "spec": spec,
    }


def new() -> base.Controller:
    return JobController()
