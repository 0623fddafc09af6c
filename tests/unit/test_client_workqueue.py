"""The work queue: dedup, one worker per key, delays, backoff, shutdown, and the worker loop."""

from __future__ import annotations

import asyncio

import pytest

from services.client import errors, workqueue


async def test_a_key_queued_twice_is_queued_once() -> None:
    queue: workqueue.WorkQueue[str] = workqueue.WorkQueue()
    queue.add("a")
    queue.add("b")
    queue.add("a")
    assert len(queue) == 2
    assert await queue.get() == "a"
    assert await queue.get() == "b"


async def test_a_key_being_processed_is_requeued_only_when_done() -> None:
    queue: workqueue.WorkQueue[str] = workqueue.WorkQueue()
    queue.add("a")
    key = await queue.get()
    queue.add("a")  # changed again while a worker has it
    queue.add("a")
    assert len(queue) == 0, "a second worker must not get a key being processed"
    queue.done(key)
    assert len(queue) == 1
    assert await queue.get() == "a"
    queue.done("a")
    assert len(queue) == 0


async def test_get_waits_for_an_add() -> None:
    queue: workqueue.WorkQueue[str] = workqueue.WorkQueue()
    getter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    assert not getter.done()
    queue.add("x")
    assert await asyncio.wait_for(getter, 1) == "x"


async def test_a_getter_cancelled_after_its_wakeup_passes_the_key_on() -> None:
    queue: workqueue.WorkQueue[str] = workqueue.WorkQueue()
    first = asyncio.ensure_future(queue.get())
    second = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.add("x")  # wakes the first getter...
    first.cancel()  # ...which is cancelled before it runs
    assert await asyncio.wait_for(second, 1) == "x"
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_add_after_delays_and_the_earliest_delay_wins() -> None:
    queue: workqueue.WorkQueue[str] = workqueue.WorkQueue()
    queue.add_after("slow", 0.05)
    queue.add_after("fast", 10.0)
    queue.add_after("fast", 0.01)  # earlier: replaces the 10 s one
    queue.add_after("fast", 5.0)  # later: ignored
    assert len(queue) == 0
    assert await asyncio.wait_for(queue.get(), 1) == "fast"
    assert await asyncio.wait_for(queue.get(), 1) == "slow"


async def test_add_after_with_no_delay_adds_now() -> None:
    queue: workqueue.WorkQueue[str] = workqueue.WorkQueue()
    queue.add_after("a", 0)
    assert len(queue) == 1


def test_exponential_backoff_doubles_from_5ms_to_the_cap_and_forget_resets() -> None:
    limiter = workqueue.ExponentialRateLimiter()
    delays = [limiter.when("k") for _ in range(5)]
    assert delays == pytest.approx([0.005, 0.01, 0.02, 0.04, 0.08])
    assert limiter.retries("k") == 5
    assert limiter.when("other") == pytest.approx(0.005), "backoff is per key"
    for _ in range(100):
        last = limiter.when("k")
    assert last == 1000.0
    limiter.forget("k")
    assert limiter.retries("k") == 0
    assert limiter.when("k") == pytest.approx(0.005)


def test_the_backoff_cap_and_base_are_configurable() -> None:
    limiter = workqueue.ExponentialRateLimiter(base=1.0, cap=10.0)
    assert [limiter.when("p") for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_the_bucket_limiter_allows_a_burst_then_paces() -> None:
    now = [0.0]
    limiter = workqueue.BucketRateLimiter(qps=10, burst=3, clock=lambda: now[0])
    assert [limiter.when(i) for i in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.when(3) == pytest.approx(0.1)
    assert limiter.when(4) == pytest.approx(0.2)
    now[0] = 10.0  # refilled (up to the burst)
    assert limiter.when(5) == 0.0


def test_the_default_limiter_takes_the_longest_wait() -> None:
    limiter = workqueue.default_rate_limiter()
    assert limiter.when("k") == pytest.approx(0.005)
    assert limiter.retries("k") == 1
    limiter.forget("k")
    assert limiter.retries("k") == 0


async def test_add_rate_limited_waits_the_keys_backoff() -> None:
    queue: workqueue.WorkQueue[str] = workqueue.WorkQueue(
        rate_limiter=workqueue.ExponentialRateLimiter(base=0.02)
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    queue.add_rate_limited("k")
    assert await asyncio.wait_for(queue.get(), 1) == "k"
    assert loop.time() - started >= 0.015
    assert queue.num_requeues("k") == 1
    queue.forget("k")
    assert queue.num_requeues("k") == 0


async def test_shutdown_hands_out_what_is_queued_then_raises() -> None:
    queue: workqueue.WorkQueue[str] = workqueue.WorkQueue()
    queue.add("a")
    queue.add_after("later", 0.01)
    queue.shutdown()
    queue.add("b")  # refused
    assert await queue.get() == "a"
    with pytest.raises(workqueue.ShutDown):
        await queue.get()
    await asyncio.sleep(0.02)
    assert len(queue) == 0, "a delayed add is dropped at shutdown"


async def test_shutdown_wakes_idle_workers() -> None:
    queue: workqueue.WorkQueue[str] = workqueue.WorkQueue()
    getter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.shutdown()
    with pytest.raises(workqueue.ShutDown):
        await asyncio.wait_for(getter, 1)


async def test_shutdown_with_drain_waits_for_work_in_flight() -> None:
    queue: workqueue.WorkQueue[str] = workqueue.WorkQueue()
    queue.add("a")
    key = await queue.get()
    drained = asyncio.ensure_future(queue.shutdown_with_drain())
    await asyncio.sleep(0.01)
    assert not drained.done()
    queue.done(key)
    await asyncio.wait_for(drained, 1)


async def test_workers_never_share_a_key_and_errors_are_retried_with_backoff() -> None:
    queue: workqueue.WorkQueue[str] = workqueue.WorkQueue(
        name="test", rate_limiter=workqueue.ExponentialRateLimiter(base=0.001)
    )
    active: set[str] = set()
    overlaps: list[str] = []
    calls: dict[str, int] = {}

    async def reconcile(key: str) -> None:
        if key in active:
            overlaps.append(key)
        active.add(key)
        calls[key] = calls.get(key, 0) + 1
        try:
            await asyncio.sleep(0.002)
            if calls[key] == 1:
                queue.add(key)  # changed while being reconciled: one more round, after this one
            if key == "flaky" and calls[key] < 4:
                raise errors.ApiError(409, "Conflict", "try again")
        finally:
            active.discard(key)

    workers = [asyncio.ensure_future(workqueue.run_worker(queue, reconcile)) for _ in range(4)]
    for key in ("a", "b", "flaky"):
        queue.add(key)
    for _ in range(200):
        await asyncio.sleep(0.005)
        if calls.get("flaky", 0) >= 4 and len(queue) == 0 and queue.processing == 0:
            break
    await queue.shutdown_with_drain()
    await asyncio.wait_for(asyncio.gather(*workers), 1)
    assert overlaps == []
    assert calls["a"] == 2 and calls["b"] == 2
    assert calls["flaky"] >= 4  # three failures, then (at least) the success
    assert queue.num_requeues("flaky") == 0, "a success forgets the failures"


async def test_a_cancelled_worker_marks_its_key_done() -> None:
    queue: workqueue.WorkQueue[str] = workqueue.WorkQueue()
    entered = asyncio.Event()

    async def reconcile(key: str) -> None:
        entered.set()
        await asyncio.sleep(10)

    worker = asyncio.ensure_future(workqueue.run_worker(queue, reconcile))
    queue.add("a")
    await asyncio.wait_for(entered.wait(), 1)
    worker.cancel()
    with pytest.raises(asyncio.CancelledError):
        await worker
    assert queue.processing == 0
