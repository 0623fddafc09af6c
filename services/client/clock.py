"""Clocks: the real one, and a fake one that tests advance by hand.

``FakeClock.sleep`` parks the sleeper until ``advance`` moves time past its deadline, so a test
can walk leader election through lease expiry in microseconds of real time. ``advance`` wakes
sleepers in deadline order and yields to the loop after each, letting whatever they start run
before time moves on (as it would have, had the time really passed).
"""

from __future__ import annotations

import asyncio
import datetime
import heapq
import itertools
import time

EPOCH = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


class RealClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FakeClock:
    def __init__(self, start: datetime.datetime = EPOCH) -> None:
        self._start = start
        self._now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def monotonic(self) -> float:
        return self._now

    def now(self) -> datetime.datetime:
        return self._start + datetime.timedelta(seconds=self._now)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), future))
        await future

    @property
    def sleepers(self) -> int:
        """How many tasks are asleep on this clock now."""
        return sum(1 for _, _, f in self._sleepers if not f.done())

    async def advance(self, seconds: float, *, step: float | None = None) -> None:
        """Move time forward by ``seconds``, in steps of ``step`` (default: from deadline to deadline)."""
        target = self._now + seconds
        while True:
            await _settle()
            due = self._sleepers[0][0] if self._sleepers else None
            if step is not None:
                due = min(due, self._now + step) if due is not None else self._now + step
            if due is None or due > target:
                break
            self._now = max(self._now, due)
            while self._sleepers and self._sleepers[0][0] <= self._now:
                _, _, future = heapq.heappop(self._sleepers)
                if not future.done():
                    future.set_result(None)
            await _settle()
        self._now = target
        await _settle()


async def _settle(rounds: int = 20) -> None:
    """Let ready tasks run a while (each ``sleep(0)`` is one pass of the loop)."""
    for _ in range(rounds):
        await asyncio.sleep(0)
