"""The scheduling queue: order, backoff, parking unschedulable pods and waking them on changes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.scheduler import filters, podinfo
from services.scheduler import queue as queue_
from tests.unit.test_scheduler_filters import pod


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def info(
    name: str, *, priority: int = 0, created: str = "2026-01-01T00:00:00Z", **spec: Any
) -> podinfo.PodInfo:
    obj = pod(name, priority=priority, **spec)
    obj["metadata"]["creationTimestamp"] = created
    return podinfo.from_pod(obj)


async def pop_now(q: queue_.SchedulingQueue) -> queue_.QueuedPod:
    return await asyncio.wait_for(q.pop(), 0.5)


async def nothing_ready(q: queue_.SchedulingQueue) -> bool:
    try:
        await asyncio.wait_for(q.pop(), 0.05)
    except TimeoutError:
        return True
    return False


async def test_priority_then_creation_then_arrival() -> None:
    q = queue_.SchedulingQueue()
    q.add(info("late-low", created="2026-01-01T00:00:09Z"))
    q.add(info("early-low", created="2026-01-01T00:00:01Z"))
    q.add(info("high", priority=100, created="2026-01-01T00:00:09Z"))
    q.add(info("same-second-1", created="2026-01-01T00:00:05Z"))
    q.add(info("same-second-2", created="2026-01-01T00:00:05Z"))
    order = [(await pop_now(q)).pod.name for _ in range(5)]
    assert order == ["high", "early-low", "same-second-1", "same-second-2", "late-low"]


async def test_backoff_doubles_to_the_cap() -> None:
    clock = Clock()
    q = queue_.SchedulingQueue(initial_backoff=1.0, max_backoff=10.0, clock=clock)
    got = []
    for attempts in range(1, 7):
        got.append(q.backoff_duration(queue_.QueuedPod(info("p"), attempts=attempts)))
    assert got == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


async def test_failed_pod_waits_out_its_backoff() -> None:
    clock = Clock()
    q = queue_.SchedulingQueue(initial_backoff=1.0, max_backoff=10.0, clock=clock)
    q.add(info("p"))
    qp = await pop_now(q)
    q.backoff(qp)
    assert q.counts()["backoff"] == 1
    assert await nothing_ready(q)
    clock.now += 1.01
    again = await pop_now(q)
    assert again is qp and again.attempts == 2


async def test_unschedulable_pods_wait_for_a_relevant_change() -> None:
    clock = Clock()
    q = queue_.SchedulingQueue(initial_backoff=1.0, max_backoff=10.0, clock=clock)
    q.add(info("needs-cpu"))
    q.add(info("needs-peer"))
    a, b = await pop_now(q), await pop_now(q)
    q.unschedulable(a, {filters.NODE_RESOURCES_FIT})
    q.unschedulable(b, {filters.INTER_POD_AFFINITY})
    assert q.counts() == {"active": 0, "backoff": 0, "unschedulable": 2, "gated": 0}
    assert await nothing_ready(q)

    assert q.move("AssignedPodAdd", {filters.INTER_POD_AFFINITY, filters.POD_TOPOLOGY_SPREAD}) == 1
    assert q.counts()["backoff"] == 1  # still inside its 1 s backoff
    clock.now += 1.5
    assert (await pop_now(q)) is b

    clock.now += 5
    assert q.move("NodeAdd") == 1  # a node can help anyone; backoff over: straight to active
    assert (await pop_now(q)) is a


async def test_a_change_during_the_attempt_sends_the_pod_to_backoff() -> None:
    clock = Clock()
    q = queue_.SchedulingQueue(clock=clock)
    q.add(info("p"))
    qp = await pop_now(q)
    q.move("NodeAdd")  # while it was being scheduled
    q.unschedulable(qp, {filters.NODE_RESOURCES_FIT})
    assert q.counts()["backoff"] == 1


async def test_unschedulable_pods_are_retried_after_max_unschedulable() -> None:
    clock = Clock()
    q = queue_.SchedulingQueue(max_unschedulable=60.0, clock=clock)
    q.add(info("p"))
    qp = await pop_now(q)
    q.unschedulable(qp, {filters.TAINT_TOLERATION})
    clock.now += 61
    q._next_flush = 0  # the periodic check is due
    assert (await pop_now(q)) is qp


async def test_updates_deletes_and_gates() -> None:
    q = queue_.SchedulingQueue(initial_backoff=0.01, max_backoff=0.01)
    q.add(info("gated", schedulingGates=[{"name": "wait"}]))
    assert q.counts()["gated"] == 1 and await nothing_ready(q)
    q.add(info("gated"))  # the gate was removed
    assert (await pop_now(q)).pod.name == "gated"

    q.add(info("doomed"))
    q.delete("default/doomed")
    assert "default/doomed" not in q and await nothing_ready(q)

    q.add(info("parked"))
    parked = await pop_now(q)
    q.unschedulable(parked, {filters.NODE_AFFINITY})
    q.add(parked.pod)  # the same pod again (our own status write): stays parked
    assert q.counts()["unschedulable"] == 1
    q.add(info("parked", nodeSelector={"disk": "ssd"}))  # its spec changed: retry now
    assert (await pop_now(q)) is parked and parked.pod.node_selector == {"disk": "ssd"}


async def test_deleted_while_in_flight_is_dropped_but_a_new_pod_of_that_name_is_kept() -> None:
    q = queue_.SchedulingQueue()
    q.add(info("p"))
    qp = await pop_now(q)
    q.delete(qp.key)
    q.unschedulable(qp, {filters.NODE_RESOURCES_FIT})
    assert len(q) == 0
    q.add(info("p2"))
    second = await pop_now(q)
    q.delete(second.key)
    q.add(info("p2"))  # re-created under the same name while the old one was in flight
    q.backoff(second)
    assert len(q) == 1 and q.get("default/p2") is not second


async def test_done_and_close() -> None:
    q = queue_.SchedulingQueue()
    q.add(info("p"))
    qp = await pop_now(q)
    q.done(qp)
    assert len(q) == 0 and "default/p" not in q
    waiter = asyncio.ensure_future(q.pop())
    await asyncio.sleep(0)
    q.close()
    with pytest.raises(queue_.QueueClosed):
        await asyncio.wait_for(waiter, 0.5)
