"""The event recorder on the in-memory API: the Event's fields, counting repeats, never blocking."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.client import clock, errors, events, fake, resources

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "web-1", "namespace": "shop", "uid": "u-1", "resourceVersion": "7"},
}
NODE = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1", "uid": "u-2"}}


@pytest.fixture
def api() -> fake.FakeApi:
    return fake.FakeApi()


@pytest.fixture
def fake_clock() -> clock.FakeClock:
    return clock.FakeClock()


@pytest.fixture
async def recorder(api: fake.FakeApi, fake_clock: clock.FakeClock) -> AsyncIterator[events.EventRecorder]:
    rec = events.EventRecorder(api, component="default-scheduler", instance="server-1", clock=fake_clock)
    await rec.start()
    yield rec
    await rec.stop()


async def sent(api: fake.FakeApi, count: int) -> list[dict[str, Any]]:
    async with asyncio.timeout(2):
        while True:
            found = (await api.list(resources.EVENTS))["items"]
            if len(found) >= count:
                return found
            await asyncio.sleep(0.001)


async def settle(recorder: events.EventRecorder) -> None:
    await asyncio.wait_for(recorder._queue.join(), 2)


async def test_an_event_names_its_object_reason_source_and_times(
    api: fake.FakeApi, recorder: events.EventRecorder
) -> None:
    recorder.warning(POD, "FailedScheduling", "0/3 nodes are available: 3 Insufficient cpu.")
    [event] = await sent(api, 1)
    assert event["metadata"]["namespace"] == "shop"
    assert event["metadata"]["name"].startswith("web-1.")
    assert event["involvedObject"] == {"kind": "Pod", "apiVersion": "v1", "namespace": "shop", "name": "web-1",
                                       "uid": "u-1", "resourceVersion": "7"}  # fmt: skip
    assert (event["type"], event["reason"]) == ("Warning", "FailedScheduling")
    assert event["message"] == "0/3 nodes are available: 3 Insufficient cpu."
    assert event["source"] == {"component": "default-scheduler", "host": "server-1"}
    assert event["reportingComponent"] == "default-scheduler"
    assert event["reportingInstance"] == "server-1"
    assert event["count"] == 1
    assert event["firstTimestamp"] == event["lastTimestamp"] == "2026-01-01T00:00:00Z"


async def test_events_about_cluster_scoped_objects_go_in_default(
    api: fake.FakeApi, recorder: events.EventRecorder
) -> None:
    recorder.normal(NODE, "NodeReady", "Node node-1 status is now: NodeReady")
    [event] = await sent(api, 1)
    assert event["metadata"]["namespace"] == "default"
    assert "namespace" not in event["involvedObject"]


async def test_a_repeat_within_ten_minutes_counts_up_the_same_event(
    api: fake.FakeApi, fake_clock: clock.FakeClock, recorder: events.EventRecorder
) -> None:
    recorder.warning(POD, "BackOff", "Back-off restarting failed container")
    await settle(recorder)
    await fake_clock.advance(300)
    updated = dict(POD, metadata={**POD["metadata"], "resourceVersion": "8"})  # a newer version: same object
    recorder.warning(updated, "BackOff", "Back-off restarting failed container")
    recorder.warning(POD, "BackOff", "Back-off restarting failed container")
    await settle(recorder)
    [event] = await sent(api, 1)
    assert event["count"] == 3
    assert event["firstTimestamp"] == "2026-01-01T00:00:00Z"
    assert event["lastTimestamp"] == "2026-01-01T00:05:00Z"
    assert [verb for verb, res in api.requests if res == "events"].count("patch") == 2


async def test_a_different_message_or_a_late_repeat_is_a_new_event(
    api: fake.FakeApi, fake_clock: clock.FakeClock, recorder: events.EventRecorder
) -> None:
    recorder.normal(POD, "Pulled", "image a")
    recorder.normal(POD, "Pulled", "image b")
    await settle(recorder)
    await fake_clock.advance(601)
    recorder.normal(POD, "Pulled", "image a")
    await settle(recorder)
    found = await sent(api, 3)
    assert len(found) == 3
    assert all(e["count"] == 1 for e in found)


async def test_a_repeat_of_a_deleted_event_creates_it_again(
    api: fake.FakeApi, recorder: events.EventRecorder
) -> None:
    recorder.normal(POD, "Started", "Started container web")
    [event] = await sent(api, 1)
    await api.delete(resources.EVENTS, event["metadata"]["name"], namespace="shop")
    recorder.normal(POD, "Started", "Started container web")
    [again] = await sent(api, 1)
    assert again["count"] == 1 and again["metadata"]["name"] != event["metadata"]["name"]


async def test_recording_never_blocks_and_drops_when_the_queue_is_full(api: fake.FakeApi) -> None:
    rec = events.EventRecorder(api, component="c", queue_size=3)  # not started: nothing is sent
    for i in range(5):
        rec.normal(POD, "Tick", f"tick {i}")
    assert rec.dropped == 2
    await rec.start()
    await settle(rec)
    await rec.stop()
    assert len(await sent(api, 3)) == 3


async def test_a_failed_write_is_logged_and_the_sender_goes_on(
    api: fake.FakeApi, recorder: events.EventRecorder
) -> None:
    api.fail_next("create", errors.TransportError("connection refused"))
    recorder.normal(POD, "A", "first")
    recorder.normal(POD, "B", "second")
    await settle(recorder)
    [event] = await sent(api, 1)
    assert event["reason"] == "B"
    assert recorder.state is events.State.RUNNING


async def test_stop_sends_what_is_queued_and_then_takes_nothing(api: fake.FakeApi) -> None:
    rec = events.EventRecorder(api, component="c")
    await rec.start()
    rec.normal(POD, "A", "queued before stop")
    await rec.stop()
    rec.normal(POD, "B", "after stop")
    found = (await api.list(resources.EVENTS))["items"]
    assert [e["reason"] for e in found] == ["A"]
    await rec.stop()  # idempotent


def test_reference_accepts_an_object_or_a_reference() -> None:
    ref = {"kind": "Pod", "namespace": "a", "name": "b", "uid": "", "fieldPath": "spec.containers{web}"}
    assert events.reference(ref) == {
        "kind": "Pod",
        "namespace": "a",
        "name": "b",
        "fieldPath": "spec.containers{web}",
    }
