"""The Job controller against the in-memory API and a fake clock: completions, backoff, deadlines, TTL."""

from __future__ import annotations

import asyncio
import datetime
import types
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.client import clock, events, fake, informer, resources, store
from services.controllers import base, job, podutil

PODS, JOBS = resources.PODS, resources.JOBS
KEY = "default/pi"


def job_body(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "pi", "namespace": "default"},
        "spec": {
            "template": {"metadata": {"labels": {"app": "pi"}},
                         "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "perl"}]}},
            **spec,
        },
    }  # fmt: skip


class Env:
    def __init__(self) -> None:
        self.api = fake.FakeApi()
        self.clock = clock.FakeClock(datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC))
        self.factory = informer.InformerFactory(self.api)
        self.controller = job.JobController(clock=self.clock)
        recorder = events.EventRecorder(self.api, component="test")
        self.controller.setup(
            base.ControllerContext(self.api, self.factory, recorder, types.SimpleNamespace())
        )

    async def settle(self) -> None:
        for _ in range(50):
            await asyncio.sleep(0)

    async def sync(self, rounds: int = 1) -> None:
        for _ in range(rounds):
            await self.settle()
            await self.controller.reconcile(KEY)
            await self.settle()

    def pods(self) -> list[dict[str, Any]]:
        return sorted((o for (r, _ns, _n), o in self.api.objects.items() if r == PODS),
                      key=lambda p: p["metadata"]["name"])  # fmt: skip

    def running(self) -> list[dict[str, Any]]:
        return [p for p in self.pods() if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]

    def job(self) -> dict[str, Any]:
        return self.api.objects[(JOBS, "default", "pi")]

    def conditions(self) -> list[tuple[str, str]]:
        return [(c["type"], c["reason"]) for c in self.job().get("status", {}).get("conditions", [])]

    async def finish(self, pod: dict[str, Any], phase: str) -> None:
        changed = store.copy(pod)
        finished = podutil.format_time(self.clock.now())
        changed["status"] = {"phase": phase, "containerStatuses": [
            {"name": "c", "state": {"terminated": {"exitCode": 0 if phase == "Succeeded" else 1,
                                                   "finishedAt": finished}}}]}  # fmt: skip
        await self.api.update_status(PODS, changed)
        await self.settle()


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    made = Env()
    try:
        yield made
    finally:
        await made.factory.stop()


async def start(env: Env, body: dict[str, Any]) -> None:
    await env.api.create(JOBS, body)
    await env.factory.start()


async def test_completions_run_to_complete(env: Env) -> None:
    await start(env, job_body(completions=2, parallelism=1))
    await env.sync(2)
    [pod] = env.pods()
    md = pod["metadata"]
    uid = env.job()["metadata"]["uid"]
    assert md["generateName"] == "pi-"
    assert md["labels"] == {"app": "pi", "batch.kubernetes.io/controller-uid": uid, "controller-uid": uid,
                            "batch.kubernetes.io/job-name": "pi", "job-name": "pi"}  # fmt: skip
    assert md["ownerReferences"][0]["kind"] == "Job" and md["ownerReferences"][0]["controller"]
    status = env.job()["status"]
    assert status["active"] == 1 and status["startTime"] == "2026-01-01T00:00:00Z"
    assert status["uncountedTerminatedPods"] == {} and status["ready"] == 0
    await env.finish(pod, "Succeeded")
    await env.sync(2)
    assert len(env.pods()) == 2
    await env.finish(env.running()[0], "Succeeded")
    await env.sync()
    assert env.conditions() == [
        ("SuccessCriteriaMet", "CompletionsReached"),
        ("Complete", "CompletionsReached"),
    ]
    status = env.job()["status"]
    assert status["succeeded"] == 2 and "active" not in status and status["completionTime"]


async def test_parallel_work_queue_completes_after_one_success(env: Env) -> None:
    body = job_body(parallelism=3)
    await start(env, body)
    await env.sync(2)
    assert len(env.pods()) == 3
    for pod in env.pods():
        await env.finish(pod, "Succeeded")
    await env.sync()
    assert ("Complete", "CompletionsReached") in env.conditions()


async def test_backoff_limit_fails_the_job(env: Env) -> None:
    await start(env, job_body(backoffLimit=1))
    await env.sync(2)
    await env.finish(env.pods()[0], "Failed")
    await env.sync()
    assert len(env.pods()) == 1  # the replacement waits out the backoff (10 s)
    await env.clock.advance(11)
    await env.sync()
    assert len(env.pods()) == 2
    await env.finish(env.running()[0], "Failed")
    await env.sync()
    assert env.conditions() == [("FailureTarget", "BackoffLimitExceeded"), ("Failed", "BackoffLimitExceeded")]
    assert env.job()["status"]["failed"] == 2
    assert "completionTime" not in env.job()["status"]


async def test_active_deadline_fails_the_job_and_deletes_its_pods(env: Env) -> None:
    await start(env, job_body(activeDeadlineSeconds=30))
    await env.sync(2)
    assert len(env.pods()) == 1
    await env.clock.advance(31)
    await env.sync()
    assert env.pods() == []
    await env.sync()
    assert env.conditions() == [("FailureTarget", "DeadlineExceeded"), ("Failed", "DeadlineExceeded")]


async def test_indexed_job_runs_each_index_once(env: Env) -> None:
    await start(env, job_body(completions=3, parallelism=2, completionMode="Indexed"))
    await env.sync(2)
    pods = env.pods()
    assert sorted(p["metadata"]["annotations"][job.COMPLETION_INDEX] for p in pods) == ["0", "1"]
    assert pods[0]["spec"]["hostname"] in ("pi-0", "pi-1")
    assert any(e["name"] == "JOB_COMPLETION_INDEX" for e in pods[0]["spec"]["containers"][0]["env"])
    for pod in pods:
        await env.finish(pod, "Succeeded")
    await env.sync(2)
    assert env.job()["status"]["completedIndexes"] == "0,1"
    last = env.running()
    assert [p["metadata"]["annotations"][job.COMPLETION_INDEX] for p in last] == ["2"]
    await env.finish(last[0], "Succeeded")
    await env.sync()
    assert env.job()["status"]["completedIndexes"] == "0-2"
    assert ("Complete", "CompletionsReached") in env.conditions()


async def test_suspend_deletes_active_pods(env: Env) -> None:
    await start(env, job_body())
    await env.sync(2)
    changed = store.copy(env.job())
    changed["spec"]["suspend"] = True
    await env.api.update(JOBS, changed)
    await env.sync()
    assert env.pods() == []
    assert ("Suspended", "JobSuspended") in env.conditions()


async def test_ttl_after_finished_deletes_the_job(env: Env) -> None:
    await start(env, job_body(ttlSecondsAfterFinished=100))
    await env.sync(2)
    await env.finish(env.pods()[0], "Succeeded")
    await env.sync()
    assert ("Complete", "CompletionsReached") in env.conditions()
    await env.clock.advance(50)
    await env.sync()
    assert (JOBS, "default", "pi") in env.api.objects
    await env.clock.advance(51)
    await env.sync()
    assert (JOBS, "default", "pi") not in env.api.objects


def test_indexes_format_and_parse() -> None:
    assert job.format_indexes({0, 1, 2, 4, 6, 7}) == "0-2,4,6,7"
    assert job.format_indexes(set()) == ""
    assert job.parse_indexes("0-2,4,6-7") == job.parse_indexes("0-2,4,6,7") == {0, 1, 2, 4, 6, 7}
    assert job.parse_indexes("") == set()
