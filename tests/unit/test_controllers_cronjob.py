"""CronJob schedules (robfig/cron's reading of cron lines) and the controller under a fake clock."""

from __future__ import annotations

import asyncio
import datetime
import types
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.client import clock, events, fake, informer, resources, store
from services.controllers import base, cronjob, job

UTC = datetime.UTC
JOBS, CRONJOBS = resources.JOBS, resources.CRONJOBS
KEY = "default/hello"
T0 = datetime.datetime(2026, 3, 2, 12, 0, 30, tzinfo=UTC)  # a Monday, 30 s past 12:00


def at(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text)


# -- schedules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "after", "expected"),
    [
        ("* * * * *", "2026-03-02T12:00:30+00:00", "2026-03-02T12:01:00+00:00"),
        ("*/15 * * * *", "2026-03-02T12:00:00+00:00", "2026-03-02T12:15:00+00:00"),
        ("5 4 * * *", "2026-03-02T12:00:00+00:00", "2026-03-03T04:05:00+00:00"),
        ("0 9-17/4 * * MON-FRI", "2026-03-06T17:00:00+00:00", "2026-03-09T09:00:00+00:00"),
        ("0 0 1 JAN,jul *", "2026-03-02T12:00:00+00:00", "2026-07-01T00:00:00+00:00"),
        ("0 0 13 * 5", "2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00"),  # 13th OR Friday
        ("0 0 13 * *", "2026-01-01T00:00:00+00:00", "2026-01-13T00:00:00+00:00"),
        ("0 0 * * 7", "2026-03-02T12:00:00+00:00", "2026-03-08T00:00:00+00:00"),  # 7 is Sunday
        ("0 0 29 2 *", "2026-03-02T12:00:00+00:00", "2028-02-29T00:00:00+00:00"),
        ("@hourly", "2026-03-02T12:00:00+00:00", "2026-03-02T13:00:00+00:00"),
        ("@weekly", "2026-03-02T12:00:00+00:00", "2026-03-08T00:00:00+00:00"),
        ("30 1/6 * * ?", "2026-03-02T12:00:00+00:00", "2026-03-02T13:30:00+00:00"),
    ],
)
def test_next(line: str, after: str, expected: str) -> None:
    assert cronjob.parse_schedule(line).next(at(after)) == at(expected)


def test_previous_and_time_zones() -> None:
    schedule = cronjob.parse_schedule("0 9 * * *", "America/New_York")
    assert schedule.next(at("2026-03-02T12:00:00+00:00")) == at("2026-03-02T14:00:00+00:00")  # 09:00 EST
    assert schedule.next(at("2026-03-09T12:00:00+00:00")) == at("2026-03-09T13:00:00+00:00")  # 09:00 EDT
    assert schedule.previous(at("2026-03-02T12:00:00+00:00")) == at("2026-03-01T14:00:00+00:00")
    prefixed = cronjob.parse_schedule("CRON_TZ=Asia/Tokyo 0 0 * * *")
    assert prefixed.next(at("2026-03-02T12:00:00+00:00")) == at("2026-03-02T15:00:00+00:00")


def test_a_daylight_saving_gap_is_skipped() -> None:
    schedule = cronjob.parse_schedule("30 2 * * *", "Europe/Berlin")
    assert schedule.next(at("2026-03-28T12:00:00+00:00")) == at("2026-03-30T00:30:00+00:00")


@pytest.mark.parametrize(
    "line", ["* * * *", "61 * * * *", "* * * * MON-FUN", "*/0 * * * *", "@every 5m", "a b c d e"]
)
def test_bad_schedules(line: str) -> None:
    with pytest.raises(cronjob.ScheduleError):
        cronjob.parse_schedule(line)


def test_unknown_time_zone() -> None:
    with pytest.raises(cronjob.ScheduleError, match="unknown time zone"):
        cronjob.parse_schedule("* * * * *", "Mars/Olympus")


def test_most_recent_counts_missed_times() -> None:
    every_minute = cronjob.parse_schedule("* * * * *")
    assert cronjob.most_recent(
        every_minute, at("2026-03-02T12:00:00+00:00"), at("2026-03-02T12:00:59+00:00")
    ) == (None, 0)
    found, missed = cronjob.most_recent(
        every_minute, at("2026-03-02T12:00:00+00:00"), at("2026-03-02T12:03:10+00:00")
    )
    assert (found, missed) == (at("2026-03-02T12:03:00+00:00"), 3)
    found, missed = cronjob.most_recent(
        every_minute, at("2026-03-01T00:00:00+00:00"), at("2026-03-02T12:03:10+00:00")
    )
    assert found == at("2026-03-02T12:03:00+00:00") and missed > cronjob.MAX_MISSED


def test_job_name_is_minutes_since_the_epoch() -> None:
    assert cronjob.job_name("hello", at("2026-03-02T12:01:00+00:00")) == "hello-29540881"


# -- the controller ----------------------------------------------------------------------------


def cj_body(schedule: str = "* * * * *", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "hello", "namespace": "default"},
        "spec": {
            "schedule": schedule,
            "jobTemplate": {"metadata": {"labels": {"app": "hello"}},
                            "spec": {"template": {"spec": {"restartPolicy": "Never",
                                                           "containers": [{"name": "c", "image": "busybox"}]}}}},
            **spec,
        },
    }  # fmt: skip


class Env:
    def __init__(self) -> None:
        self.api = fake.FakeApi()
        self.clock = clock.FakeClock(T0)
        self.factory = informer.InformerFactory(self.api)
        self.recorder = events.EventRecorder(self.api, component="test")
        self.controller = cronjob.CronJobController(clock=self.clock)
        self.controller.setup(
            base.ControllerContext(self.api, self.factory, self.recorder, types.SimpleNamespace())
        )

    async def settle(self) -> None:
        for _ in range(50):
            await asyncio.sleep(0)

    async def sync(self) -> None:
        await self.settle()
        await self.controller.reconcile(KEY)
        await self.settle()

    def jobs(self) -> dict[str, dict[str, Any]]:
        return {n: o for (r, _ns, n), o in self.api.objects.items() if r == JOBS}

    def cj(self) -> dict[str, Any]:
        return self.api.objects[(CRONJOBS, "default", "hello")]

    async def finish(self, name: str, state: str) -> None:
        found = store.copy(self.jobs()[name])
        found["status"] = {"conditions": [job.new_condition(state, "X", "", self.clock.now())],
                           "completionTime": "2026-03-02T12:01:05Z"}  # fmt: skip
        await self.api.update_status(JOBS, found)
        await self.settle()


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    made = Env()
    try:
        yield made
    finally:
        await made.factory.stop()


async def start(env: Env, body: dict[str, Any], *, last: str = "2026-03-02T12:00:00Z") -> None:
    created = await env.api.create(CRONJOBS, body)
    created["status"] = {"lastScheduleTime": last}
    await env.api.update_status(CRONJOBS, created)
    await env.factory.start()


async def test_a_job_per_scheduled_minute(env: Env) -> None:
    await start(env, cj_body())
    await env.sync()
    assert env.jobs() == {}
    await env.clock.advance(31)
    await env.sync()
    name = "hello-29540881"
    assert list(env.jobs()) == [name]
    made = env.jobs()[name]
    assert made["metadata"]["labels"] == {"app": "hello"}
    assert made["metadata"]["annotations"][cronjob.SCHEDULED_TIMESTAMP] == "2026-03-02T12:01:00+00:00"
    assert made["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
    status = env.cj()["status"]
    assert status["lastScheduleTime"] == "2026-03-02T12:01:00Z"
    assert [ref["name"] for ref in status["active"]] == [name]
    await env.sync()
    assert len(env.jobs()) == 1


async def test_finished_jobs_leave_active_and_old_ones_are_deleted(env: Env) -> None:
    await start(env, cj_body(successfulJobsHistoryLimit=1))
    names = []
    for _ in range(3):
        await env.clock.advance(60)
        await env.sync()
        names = sorted(env.jobs())
        await env.finish(names[-1], "Complete")
        await env.sync()
    assert sorted(env.jobs()) == names[-1:]
    status = env.cj()["status"]
    assert "active" not in status and status["lastSuccessfulTime"] == "2026-03-02T12:01:05Z"


async def test_forbid_skips_while_a_job_runs(env: Env) -> None:
    await start(env, cj_body(concurrencyPolicy="Forbid"))
    await env.clock.advance(31)
    await env.sync()
    await env.clock.advance(60)
    await env.sync()
    assert len(env.jobs()) == 1


async def test_replace_deletes_the_running_job(env: Env) -> None:
    await start(env, cj_body(concurrencyPolicy="Replace"))
    await env.clock.advance(31)
    await env.sync()
    first = list(env.jobs())
    await env.clock.advance(60)
    await env.sync()
    assert len(env.jobs()) == 1 and list(env.jobs()) != first


async def test_suspended_cronjobs_start_nothing(env: Env) -> None:
    await start(env, cj_body(suspend=True))
    await env.clock.advance(120)
    await env.sync()
    assert env.jobs() == {}


async def test_a_start_too_late_is_missed(env: Env) -> None:
    await start(env, cj_body("0 * * * *", startingDeadlineSeconds=10), last="2026-03-02T11:00:00Z")
    await env.sync()  # 12:00 was 30 s ago: past the 10 s deadline
    assert env.jobs() == {}


async def test_the_resync_tick_runs_on_the_controllers_clock(env: Env) -> None:
    await start(env, cj_body())
    task = asyncio.create_task(env.controller.run())
    try:
        await env.settle()
        await env.clock.advance(cronjob.RESYNC + 1)
        for _ in range(100):
            if env.jobs():
                break
            await asyncio.sleep(0.01)
        assert list(env.jobs()) == ["hello-29540881"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
