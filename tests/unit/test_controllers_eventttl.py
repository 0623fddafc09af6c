"""Event TTL: events unseen for an hour are deleted, by their newest timestamp, on a fake clock."""

from __future__ import annotations

import asyncio
import datetime
import types
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.client import clock, events, fake, informer, resources
from services.controllers import base, eventttl

EVENTS = resources.EVENTS
# The in-memory API stamps creationTimestamp with the real time: the clock starts there too.
NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0) + datetime.timedelta(seconds=1)


def ago(seconds: float, *, micro: bool = False) -> str:
    moment = NOW - datetime.timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def event(name: str, **fields: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default"}, "reason": "Test", **fields}


class Env:
    def __init__(self) -> None:
        self.api = fake.FakeApi()
        self.clock = clock.FakeClock(NOW)
        self.factory = informer.InformerFactory(self.api)
        self.controller = eventttl.EventTTLController(clock=self.clock)
        settings = types.SimpleNamespace(event_ttl=3600.0)
        recorder = events.EventRecorder(self.api, component="test")
        self.controller.setup(base.ControllerContext(self.api, self.factory, recorder, settings))

    def names(self) -> list[str]:
        return sorted(n for (r, _ns, n) in self.api.objects if r == EVENTS)

    async def sync_all(self) -> None:
        for _ in range(50):
            await asyncio.sleep(0)
        for key in self.controller.events.store.keys():
            await self.controller.reconcile(key)


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    made = Env()
    try:
        yield made
    finally:
        await made.factory.stop()


def test_last_seen_takes_the_newest_timestamp() -> None:
    seen = eventttl.last_seen({"metadata": {"creationTimestamp": "2026-01-01T10:00:00Z"},
                               "lastTimestamp": "2026-01-01T11:00:00Z",
                               "series": {"lastObservedTime": "2026-01-01T11:30:00.123456Z"}})  # fmt: skip
    assert seen == datetime.datetime(2026, 1, 1, 11, 30, 0, 123456, tzinfo=datetime.UTC)
    assert eventttl.last_seen({"eventTime": "2026-01-01T09:00:00.000000Z"}) == datetime.datetime(
        2026, 1, 1, 9, tzinfo=datetime.UTC
    )


async def test_old_events_are_deleted_and_fresh_ones_kept(env: Env) -> None:
    await env.api.create(EVENTS, event("old", lastTimestamp=ago(3660)))
    await env.api.create(EVENTS, event("new-style", eventTime=ago(5400, micro=True)))
    await env.api.create(EVENTS, event("repeating", firstTimestamp=ago(7200), lastTimestamp=ago(1800)))
    for name in ("old", "new-style", "repeating"):  # as if written back then
        env.api.objects[(EVENTS, "default", name)]["metadata"]["creationTimestamp"] = ago(7200)
    await env.factory.start()
    await env.sync_all()
    assert env.names() == ["repeating"]
    await env.clock.advance(1800)
    await env.sync_all()
    assert env.names() == []


async def test_the_sweep_runs_on_the_controllers_clock(env: Env) -> None:
    await env.api.create(EVENTS, event("e", lastTimestamp=ago(60)))
    await env.factory.start()
    task = asyncio.create_task(env.controller.run())
    try:
        for _ in range(50):
            await asyncio.sleep(0)
        assert env.names() == ["e"]
        # One sweep period at a time: the first advance may come before the sweep loop sleeps on
        # the clock (its start takes a few loop turns), and would then wake nothing.
        for _ in range(200):
            await env.clock.advance(eventttl.SWEEP)
            if not env.names():
                break
            await asyncio.sleep(0.01)
        assert env.names() == []
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
