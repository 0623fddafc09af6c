"""The Scheduler component on the client library's in-memory API: lifecycle, binding, reports."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pydantic
import pytest

from services.client import errors, fake, resources
from services.scheduler import component
from services.scheduler import settings as settings_
from tests.unit.test_scheduler_filters import node, pod


@pytest.fixture
def api() -> fake.FakeApi:
    return fake.FakeApi()


def options(**overrides: Any) -> settings_.SchedulerSettings:
    values: dict[str, Any] = {"leader_elect": False, "pod_initial_backoff": 0.05, "pod_max_backoff": 0.1}
    return settings_.SchedulerSettings(**{**values, **overrides})


@pytest.fixture
async def scheduler(api: fake.FakeApi) -> AsyncIterator[component.Scheduler]:
    made = component.Scheduler(options(), api=api)
    await made.start()
    try:
        yield made
    finally:
        await made.stop()


async def until(condition: Callable[[], Any], within: float = 5.0) -> Any:
    deadline = time.monotonic() + within
    while not (got := condition()):
        assert time.monotonic() < deadline, "not in time"
        await asyncio.sleep(0.01)
    return got


def stored(api: fake.FakeApi, name: str) -> dict[str, Any]:
    return api.objects[(resources.PODS, "default", name)]


async def test_binds_pending_pods_and_skips_other_schedulers(
    api: fake.FakeApi, scheduler: component.Scheduler
) -> None:
    await api.create(resources.NODES, node("n1", cpu="2"))
    await api.create(resources.PODS, pod("mine", cpu="1"))
    await api.create(resources.PODS, pod("theirs", cpu="1", schedulerName="other-scheduler"))
    await until(lambda: stored(api, "mine")["spec"].get("nodeName") == "n1")
    await asyncio.sleep(0.1)
    assert not stored(api, "theirs")["spec"].get("nodeName")
    assert ("bind", "pods") in api.requests
    assert scheduler.is_leader  # no election: it always acts


async def test_reports_unschedulable_then_binds_when_room_appears(
    api: fake.FakeApi, scheduler: component.Scheduler
) -> None:
    await api.create(resources.NODES, node("n1", cpu="1"))
    await api.create(resources.PODS, pod("big", cpu="2"))

    def condition() -> dict[str, Any]:
        conditions = stored(api, "big").get("status", {}).get("conditions") or ()
        return next((c for c in conditions if c["type"] == "PodScheduled"), {})

    got = await until(condition)
    assert got["status"] == "False" and got["reason"] == "Unschedulable"
    assert got["message"].startswith("0/1 nodes are available: 1 Insufficient cpu.")
    events = await until(lambda: [o for (r, _, _), o in api.objects.items() if r == resources.EVENTS
                                  and o["reason"] == "FailedScheduling"])  # fmt: skip
    assert events[0]["involvedObject"]["name"] == "big"
    await api.create(resources.NODES, node("n2", cpu="4"))
    await until(lambda: stored(api, "big")["spec"].get("nodeName") == "n2")


async def test_a_binding_conflict_is_not_retried(api: fake.FakeApi, scheduler: component.Scheduler) -> None:
    api.fail_next("bind", errors.ApiError(409, "Conflict", 'pod p is already assigned to node "x"'))
    await api.create(resources.NODES, node("n1"))
    await api.create(resources.PODS, pod("p"))
    await until(lambda: ("bind", "pods") in api.requests)
    await asyncio.sleep(0.2)
    assert api.requests.count(("bind", "pods")) == 1
    assert not scheduler.cache.assumed


async def test_a_failed_binding_is_retried(api: fake.FakeApi, scheduler: component.Scheduler) -> None:
    api.fail_next("bind", errors.ApiError(500, "InternalError", "boom"))
    await api.create(resources.NODES, node("n1"))
    await api.create(resources.PODS, pod("p"))
    await until(lambda: stored(api, "p")["spec"].get("nodeName") == "n1")
    assert api.requests.count(("bind", "pods")) == 2


async def test_leader_election_and_stop(api: fake.FakeApi) -> None:
    timings = {"leader_elect": True, "leader_elect_lease_duration": 3.0, "leader_elect_renew_deadline": 2.0,
               "leader_elect_retry_period": 0.2}  # fmt: skip
    first = component.Scheduler(options(identity="one", **timings), api=api)
    second = component.Scheduler(options(identity="two", **timings), api=api)
    await first.start()
    await second.start()
    try:
        await until(lambda: first.is_leader)
        assert not second.is_leader
        await first.stop()
        await first.stop()  # idempotent
        await until(lambda: second.is_leader)
        await api.create(resources.NODES, node("n1"))
        await api.create(resources.PODS, pod("p"))
        await until(lambda: stored(api, "p")["spec"].get("nodeName") == "n1")
    finally:
        await first.stop()
        await second.stop()
    assert first.state is component.State.STOPPED
    await asyncio.wait_for(second.wait(), 1)


async def test_health_endpoint(scheduler: component.Scheduler) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", scheduler.health_port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"ok")


def test_settings() -> None:
    assert settings_.SchedulerSettings().health_address == "127.0.0.1:0"
    for address in ("0.0.0.0:10259", "10.0.0.1:1", "example.com:1", "nonsense"):
        with pytest.raises(pydantic.ValidationError):
            settings_.SchedulerSettings(health_address=address)
    assert settings_.SchedulerSettings(health_address="[::1]:10259").health_port == 10259
    with pytest.raises(pydantic.ValidationError):
        settings_.SchedulerSettings(pod_initial_backoff=5, pod_max_backoff=1)
    with pytest.raises(ValueError):
        component.Scheduler(settings_.SchedulerSettings())  # neither a kubeconfig nor a client
