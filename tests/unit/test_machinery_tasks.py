"""services.machinery.tasks: guarded tasks and a wait_for that keeps cancellations."""

from __future__ import annotations

import asyncio
import sys

import pytest

from services.machinery import tasks


async def _cancel_as_the_result_arrives(wait_for) -> asyncio.Task[object]:
    """Cancel a task in the very loop step in which the awaitable it waits on finishes."""
    result: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def inner() -> int:
        return await result

    async def body() -> object:
        return await wait_for(inner(), 5)

    task = asyncio.create_task(body())
    await asyncio.sleep(0.01)
    result.set_result(1)
    assert task.cancel()  # not done yet: the cancellation is accepted
    return task


async def test_wait_for_keeps_a_cancellation_that_arrives_with_the_result() -> None:
    task = await _cancel_as_the_result_arrives(tasks.wait_for)
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_the_stdlib_wait_for_loses_that_cancellation_on_this_python() -> None:
    """Why the helper exists; if the interpreter is fixed, this records it."""
    task = await _cancel_as_the_result_arrives(asyncio.wait_for)
    try:
        outcome = await task
    except asyncio.CancelledError:
        outcome = "cancelled"

    assert outcome == (1 if sys.version_info < (3, 12) else "cancelled")


async def test_wait_for_times_out_and_cancels_the_inner_work() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def slow() -> None:
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(TimeoutError):
        await tasks.wait_for(slow(), 0.01)
    assert started.is_set() and cancelled.is_set()


async def test_wait_for_returns_the_result_and_accepts_no_timeout() -> None:
    async def value() -> str:
        await asyncio.sleep(0)
        return "ok"

    assert await tasks.wait_for(value(), 1) == "ok"
    assert await tasks.wait_for(value(), None) == "ok"


async def test_cancel_all_cancels_again_a_task_that_lost_its_cancellation(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(tasks, "RECANCEL_AFTER", 0.05)
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed > 1:
                    raise  # the second cancellation is taken

    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    await tasks.cancel_all([task])
    assert task.cancelled() and swallowed == 2
    assert "stubborn is still running" in caplog.text


async def test_cancel_all_raises_a_task_failure_and_passes_our_cancellation() -> None:
    async def failing() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            raise RuntimeError("broken cleanup")

    task = asyncio.create_task(failing())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="broken cleanup"):
        await tasks.cancel_all([task])

    async def slow_cleanup() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            await asyncio.shield(asyncio.sleep(0.2))

    inner = asyncio.create_task(slow_cleanup())
    await asyncio.sleep(0)
    outer = asyncio.create_task(tasks.cancel_all([inner]))
    await asyncio.sleep(0.01)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    await asyncio.wait({inner})
