"""Guarded background tasks: named, owned, and loud when they die.

Every background loop in a component runs through ``guarded``: cancellation
passes through untouched, an unexpected exit or failure is logged once with the
task's name, and the owner's ``on_failure`` is told so it can stop itself
(a component whose root loop died must not limp on).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
RECANCEL_AFTER = 10.0  # seconds a cancelled task may take to end before it is cancelled again


def guarded(
    coro: Coroutine[Any, Any, Any],
    *,
    name: str,
    on_failure: Callable[[BaseException | None], None] | None = None,
) -> asyncio.Task[Any]:
    """Start ``coro`` as a named task that logs "X failed" / "X exited unexpectedly"."""

    async def run() -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("%s failed", name)
            if on_failure is not None:
                on_failure(exc)
            return
        log.error("%s exited unexpectedly", name)
        if on_failure is not None:
            on_failure(None)

    task = asyncio.get_running_loop().create_task(run(), name=name)
    # A task cancelled before its first step never awaited ``coro``: close it quietly.
    task.add_done_callback(lambda _: coro.close())
    return task


async def cancel_all(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel tasks and wait for them to finish (idempotent).

    A task still running ``RECANCEL_AFTER`` seconds after its cancellation lost
    it somewhere (a library that swallows ``CancelledError``, or a race like
    CPython gh-86296): it is cancelled again, with a warning, rather than
    waited on forever. A task's own failure is raised here, as ``await task``
    would; our own cancellation passes through.
    """
    for task in tasks:
        task.cancel()
    for task in tasks:
        while not task.done():
            await asyncio.wait({task}, timeout=RECANCEL_AFTER)
            if not task.done():
                log.warning("%s is still running %.0f s after its cancellation; cancelling it again",
                            task.get_name(), RECANCEL_AFTER)  # fmt: skip
                task.cancel()
        if not task.cancelled():
            task.result()  # its failure, if it failed
    tasks.clear()


async def wait_for(aw: Awaitable[T], timeout: float | None) -> T:  # noqa: ASYNC109 (a drop-in)
    """``asyncio.wait_for`` that never loses the caller's cancellation.

    On Python 3.11, ``asyncio.wait_for`` returns the inner result when the inner
    awaitable finishes in the same loop step as the caller is cancelled
    (CPython gh-86296): the cancellation is dropped and a task being stopped
    runs on. ``asyncio.timeout`` has no such window.
    """
    async with asyncio.timeout(timeout):
        return await aw
