"""The CronJob controller: a Job per scheduled time, within the concurrency policy.

Schedules are the five cron fields (minute, hour, day of month, month, day of week) with
``*``, ``?``, lists, ranges, steps, month and weekday names, and the ``@hourly``-style
descriptors, read as Kubernetes' cron library (robfig/cron) reads them: when both day fields
are restricted, a day matching either runs; ``*/n`` is a step, not a wildcard. Times are
computed in ``spec.timeZone`` (an IANA name; else a ``CRON_TZ=``/``TZ=`` prefix; else UTC),
minute by minute over wall-clock time, so a daylight-saving gap is skipped and a repeated hour
runs once.

A pass over a CronJob (upstream's ``syncCronJob``):

1. reconcile ``status.active`` with the Jobs it owns: finished Jobs leave it (``SawCompletedJob``,
   ``lastSuccessfulTime``), running ones missing from it join, vanished ones are dropped;
2. unless suspended, find the most recent scheduled time not yet run, after
   ``lastScheduleTime`` (or the creation time), and no older than ``startingDeadlineSeconds``;
3. ``Forbid`` skips it while a Job is active, ``Replace`` deletes the active Jobs first,
   ``Allow`` just runs it: Job ``<cronjob>-<scheduled time in minutes since the epoch>``;
4. delete the oldest finished Jobs beyond ``successfulJobsHistoryLimit`` (3) and
   ``failedJobsHistoryLimit`` (1);
5. come back at the next scheduled time.

Time comes from a ``Clock``; besides the precise requeue, a tick every ``resync`` seconds on
that clock re-examines every CronJob, which is also what lets a test drive the schedule with
a fake clock.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from services.client import clock as clock_
from services.client import errors, resources, store, types
from services.controllers import base, job, podutil
from services.machinery import cron, tasks

log = logging.getLogger(__name__)

SCHEDULED_TIMESTAMP = "batch.kubernetes.io/cronjob-scheduled-timestamp"
RESYNC = 60.0  # seconds between full re-examinations (a safety net; requeues are precise)
MAX_MISSED = 100  # upstream warns about more missed start times than this

# The schedule parser lives in services/machinery/cron.py (the supervisor's snapshots use it too).
Schedule = cron.Schedule
ScheduleError = cron.ScheduleError
parse_schedule = cron.parse_schedule


def most_recent(
    schedule: Schedule, earliest: datetime.datetime, now: datetime.datetime
) -> tuple[datetime.datetime | None, int]:
    """The latest scheduled time in ``(earliest, now]`` and how many there were (capped)."""
    found = schedule.next(earliest)
    if found is None or found > now:
        return None, 0
    count = 1
    while count <= MAX_MISSED:
        after = schedule.next(found)
        if after is None or after > now:
            return found, count
        found, count = after, count + 1
    return schedule.previous(now), count


def job_name(cronjob_name: str, scheduled: datetime.datetime) -> str:
    return f"{cronjob_name}-{int(scheduled.timestamp()) // 60}"


# -- the controller ----------------------------------------------------------------------------


class CronJobController(base.QueueController):
    name = "cronjob"
    workers = 5  # kube-controller-manager's --concurrent-cron-job-syncs

    def __init__(self, *, clock: types.Clock | None = None, resync: float = RESYNC) -> None:
        super().__init__()
        self.clock = clock or clock_.RealClock()
        self.resync = resync

    def setup(self, ctx: base.ControllerContext) -> None:
        super().setup(ctx)
        self.cronjobs = ctx.informers.informer(resources.CRONJOBS)
        self.jobs = ctx.informers.informer(resources.JOBS, indexers=podutil.INDEXERS)
        self.cronjobs.add_handlers(on_add=self.enqueue, on_update=lambda _o, n: self.enqueue(n))
        self.jobs.add_handlers(
            on_add=self._job_changed,
            on_update=lambda _o, n: self._job_changed(n),
            on_delete=self._job_changed,
        )

    def _job_changed(self, obj: dict[str, Any]) -> None:
        ref = podutil.controller_ref(obj)
        if ref is not None and ref.get("kind") == "CronJob":
            self.queue.add(f"{obj['metadata'].get('namespace', '')}/{ref.get('name', '')}")

    async def run(self) -> None:
        ticker = tasks.guarded(self._tick(), name="cronjob resync")
        try:
            await super().run()
        finally:
            await tasks.cancel_all([ticker])

    async def _tick(self) -> None:
        while True:
            await self.clock.sleep(self.resync)
            for cronjob in self.cronjobs.store.list():
                self.enqueue(cronjob)

    # -- reconcile -----------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        cronjob = self.cronjobs.store.get(key)
        if cronjob is None or podutil.is_deleting(cronjob):
            return
        assert self.ctx is not None
        now = self.clock.now()
        status = store.copy(cronjob.get("status") or {})
        jobs = podutil.owned_by(self.jobs.store, cronjob)
        await self._sync_active(cronjob, status, jobs)
        spec = cronjob.get("spec") or {}
        try:
            schedule = parse_schedule(spec.get("schedule", ""), spec.get("timeZone"))
        except ScheduleError as exc:
            reason = "UnknownTimeZone" if "time zone" in str(exc) else "UnparseableSchedule"
            self.ctx.recorder.warning(
                cronjob, reason, f"unparseable schedule: {spec.get('schedule')!r} : {exc}"
            )
            await self._write_status(cronjob, status)
            return
        if not spec.get("suspend"):
            await self._run_due(cronjob, status, schedule, now)
        await self._write_status(cronjob, status)
        await self._clean_history(cronjob, [j for j in jobs if job.is_finished(j)])
        following = schedule.next(now)
        if following is not None:
            self.queue.add_after(key, max((following - now).total_seconds(), 0.0) + 0.1)

    async def _sync_active(
        self, cronjob: dict[str, Any], status: dict[str, Any], jobs: list[dict[str, Any]]
    ) -> None:
        assert self.ctx is not None
        active = list(status.get("active") or [])
        by_uid = {j["metadata"]["uid"]: j for j in jobs}
        listed = {ref.get("uid") for ref in active}
        for found in jobs:
            uid = found["metadata"]["uid"]
            if job.is_finished(found):
                if uid in listed:
                    active = [ref for ref in active if ref.get("uid") != uid]
                    state = "Complete" if job.condition(found, "Complete") else "Failed"
                    self.ctx.recorder.normal(cronjob, "SawCompletedJob",
                                             f"Saw completed job: {found['metadata']['name']}, status: {state}")  # fmt: skip
                completed = (found.get("status") or {}).get("completionTime")
                if (
                    completed
                    and job.condition(found, "Complete")
                    and completed > (status.get("lastSuccessfulTime") or "")
                ):
                    status["lastSuccessfulTime"] = completed
            elif uid not in listed:
                active.append(_reference(found))
        kept = []
        for ref in active:
            if ref.get("uid") in by_uid or await self._still_exists(ref):
                kept.append(ref)
            else:
                self.ctx.recorder.normal(cronjob, "MissingJob", f"Active job went missing: {ref.get('name')}")
        status["active"] = kept

    async def _still_exists(self, ref: dict[str, Any]) -> bool:
        """The cache may lag behind a Job we just created: ask the API before dropping it."""
        assert self.ctx is not None
        try:
            found = await self.ctx.api.get(
                resources.JOBS, ref.get("name", ""), namespace=ref.get("namespace")
            )
        except errors.ApiError as exc:
            if errors.is_not_found(exc):
                return False
            raise
        return found["metadata"].get("uid") == ref.get("uid")

    async def _run_due(
        self, cronjob: dict[str, Any], status: dict[str, Any], schedule: Schedule, now: datetime.datetime
    ) -> None:
        assert self.ctx is not None
        spec = cronjob.get("spec") or {}
        created = podutil.parse_time(cronjob["metadata"].get("creationTimestamp"))
        earliest = podutil.parse_time(status.get("lastScheduleTime")) or created or now
        deadline = spec.get("startingDeadlineSeconds")
        if deadline is not None:
            earliest = max(earliest, now - datetime.timedelta(seconds=int(deadline)))
        scheduled, missed = most_recent(schedule, earliest, now)
        if scheduled is None:
            return
        if missed > MAX_MISSED:
            self.ctx.recorder.warning(cronjob, "TooManyMissedTimes", f"too many missed start times: {missed}. Set "
                                      "or decrease .spec.startingDeadlineSeconds or check clock skew")  # fmt: skip
        if deadline is not None and scheduled + datetime.timedelta(seconds=int(deadline)) < now:
            self.ctx.recorder.warning(cronjob, "MissSchedule", "Missed scheduled time to start a job: "
                                      + scheduled.astimezone(datetime.UTC).strftime("%a, %d %b %Y %H:%M:%S %z"))  # fmt: skip
            return
        name = job_name(cronjob["metadata"]["name"], scheduled)
        if any(ref.get("name") == name for ref in status.get("active") or ()):
            return
        policy = spec.get("concurrencyPolicy", "Allow")
        if policy == "Forbid" and status.get("active"):
            self.ctx.recorder.normal(cronjob, "JobAlreadyActive", "Not starting job because prior execution is "
                                     "running and concurrency policy is Forbid")  # fmt: skip
            return
        if policy == "Replace":
            for ref in list(status.get("active") or ()):
                await self._delete_job(cronjob, ref.get("name", ""))
            status["active"] = []
        made = await self._create_job(cronjob, name, scheduled, schedule)
        if made is not None:
            status.setdefault("active", []).append(_reference(made))
        status["lastScheduleTime"] = podutil.format_time(scheduled)

    async def _create_job(
        self, cronjob: dict[str, Any], name: str, scheduled: datetime.datetime, schedule: Schedule
    ) -> dict[str, Any] | None:
        assert self.ctx is not None
        template = (cronjob.get("spec") or {}).get("jobTemplate") or {}
        tmeta = template.get("metadata") or {}
        annotations = {**(tmeta.get("annotations") or {}),
                       SCHEDULED_TIMESTAMP: scheduled.astimezone(schedule.tz).isoformat()}  # fmt: skip
        body = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": name,
                "namespace": cronjob["metadata"]["namespace"],
                "labels": dict(tmeta.get("labels") or {}),
                "annotations": annotations,
                "ownerReferences": [podutil.owner_reference(cronjob, api_version="batch/v1", kind="CronJob")],
            },
            "spec": store.copy(template.get("spec") or {}),
        }
        try:
            made = await self.ctx.api.create(resources.JOBS, body)
        except errors.ApiError as exc:
            if errors.is_already_exists(exc):
                return None  # made by an earlier pass whose status write was lost; it is in active already
            self.ctx.recorder.warning(cronjob, "FailedCreate", f"Error creating job: {exc}")
            raise
        self.ctx.recorder.normal(cronjob, "SuccessfulCreate", f"Created job {name}")
        log.info("cronjob %s: created job %s for %s", base.key_of(cronjob), name, scheduled.isoformat())
        return made

    async def _delete_job(self, cronjob: dict[str, Any], name: str) -> None:
        assert self.ctx is not None
        try:
            await self.ctx.api.delete(resources.JOBS, name, namespace=cronjob["metadata"]["namespace"],
                                      propagation_policy="Background")  # fmt: skip
        except errors.ApiError as exc:
            if not errors.is_not_found(exc):
                raise
            return
        self.ctx.recorder.normal(cronjob, "SuccessfulDelete", f"Deleted job {name}")

    async def _clean_history(self, cronjob: dict[str, Any], finished: list[dict[str, Any]]) -> None:
        spec = cronjob.get("spec") or {}
        for state, field, default in (("Complete", "successfulJobsHistoryLimit", 3),
                                      ("Failed", "failedJobsHistoryLimit", 1)):  # fmt: skip
            limit = spec.get(field)
            limit = default if limit is None else int(limit)
            done = sorted((j for j in finished if job.condition(j, state)), key=_started)
            for old in done[: max(len(done) - limit, 0)]:
                await self._delete_job(cronjob, old["metadata"]["name"])

    async def _write_status(self, cronjob: dict[str, Any], status: dict[str, Any]) -> None:
        assert self.ctx is not None
        if not status.get("active"):
            status.pop("active", None)
        if status != (cronjob.get("status") or {}):
            changed = store.copy(cronjob)
            changed["status"] = status
            await self.ctx.api.update_status(resources.CRONJOBS, changed)


def _reference(obj: dict[str, Any]) -> dict[str, Any]:
    md = obj["metadata"]
    return {"kind": "Job", "namespace": md["namespace"], "name": md["name"], "uid": md["uid"],
            "apiVersion": "batch/v1", "resourceVersion": md.get("resourceVersion", "")}  # fmt: skip


def _started(obj: dict[str, Any]) -> tuple[str, str, str]:
    """Oldest first: by start, then by the time it was scheduled for (ties within a second)."""
    md = obj["metadata"]
    started = (obj.get("status") or {}).get("startTime") or md.get("creationTimestamp", "")
    return started, (md.get("annotations") or {}).get(SCHEDULED_TIMESTAMP, ""), md["name"]


def new() -> base.Controller:
    return CronJobController()
