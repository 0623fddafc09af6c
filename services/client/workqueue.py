"""A rate-limited work queue with client-go's guarantees, for asyncio.

Controllers put keys (``namespace/name``) on a queue from informer handlers and let workers
reconcile them. The rules, as in client-go's ``workqueue``:

- a key queued twice is queued once (``dirty`` holds what waits to be processed);
- a key is never handed to two workers at once: one added while being processed waits in
  ``dirty`` and goes back on the queue when its worker calls ``done`` (``processing``);
- ``add_after`` delays an add (the earliest of several pending delays wins);
- ``add_rate_limited`` delays by the rate limiter's verdict for that key: by default 5 ms
  doubling per failure up to 1000 s, and ``forget`` resets it after a success;
- ``shutdown`` stops taking keys and wakes idle workers; keys already queued are still handed
  out, so ``shutdown_with_drain`` can wait until every one of them is done.

Everything runs on one event loop: between two awaits nothing else touches the queue, which is
what keeps ``queue``, ``dirty`` and ``processing`` consistent without a lock.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, Protocol, TypeVar

from services.client import errors

log = logging.getLogger(__name__)

T = TypeVar("T", bound=Hashable)


class ShutDown(Exception):
    """``get`` on a queue that is shut down and empty: the worker should return."""


class RateLimiter(Protocol):
    def when(self, item: Hashable) -> float:
        """Seconds to wait before ``item`` may be retried (counts one more failure)."""
        ...

    def forget(self, item: Hashable) -> None: ...

    def retries(self, item: Hashable) -> int: ...


class ExponentialRateLimiter:
    """``base * 2**failures`` seconds per item, capped (client-go: 5 ms to 1000 s)."""

    def __init__(self, base: float = 0.005, cap: float = 1000.0) -> None:
        self.base, self.cap = base, cap
        self._failures: dict[Hashable, int] = {}

    def when(self, item: Hashable) -> float:
        failures = self._failures.get(item, 0)
        self._failures[item] = failures + 1
        if failures >= 64:  # 2**64 * base is past any cap; do not build the huge float
            return self.cap
        return min(self.base * (2**failures), self.cap)

    def forget(self, item: Hashable) -> None:
        self._failures.pop(item, None)

    def retries(self, item: Hashable) -> int:
        return self._failures.get(item, 0)


class BucketRateLimiter:
    """One token bucket for all items (client-go: 10 per second, bursts of 100)."""

    def __init__(
        self, qps: float = 10.0, burst: int = 100, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.qps, self.burst = qps, burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def when(self, item: Hashable) -> float:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.qps)
        self._last = now
        self._tokens -= 1  # reserve a token, possibly one not yet earned
        return 0.0 if self._tokens >= 0 else -self._tokens / self.qps

    def forget(self, item: Hashable) -> None:
        return None

    def retries(self, item: Hashable) -> int:
        return 0


class MaxOfRateLimiter:
    """The longest wait any of several limiters asks for."""

    def __init__(self, *limiters: RateLimiter) -> None:
        self.limiters = limiters

    def when(self, item: Hashable) -> float:
        return max(limiter.when(item) for limiter in self.limiters)

    def forget(self, item: Hashable) -> None:
        for limiter in self.limiters:
            limiter.forget(item)

    def retries(self, item: Hashable) -> int:
        return max(limiter.retries(item) for limiter in self.limiters)


def default_rate_limiter() -> RateLimiter:
    """client-go's ``DefaultControllerRateLimiter``: per-item 5 ms..1000 s, overall 10/s burst 100."""
    return MaxOfRateLimiter(ExponentialRateLimiter(), BucketRateLimiter())


class WorkQueue(Generic[T]):
    def __init__(self, *, name: str = "", rate_limiter: RateLimiter | None = None) -> None:
        self.name = name
        self.rate_limiter = rate_limiter or ExponentialRateLimiter()
        self._queue: collections.deque[T] = collections.deque()
        self._dirty: set[T] = set()
        self._processing: set[T] = set()
        self._delayed: dict[T, asyncio.TimerHandle] = {}
        self._getters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._idle: asyncio.Event = asyncio.Event()
        self._idle.set()
        self._shutting_down = False

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    @property
    def processing(self) -> int:
        return len(self._processing)

    def add(self, item: T) -> None:
        if self._shutting_down or item in self._dirty:
            return
        self._dirty.add(item)
        self._idle.clear()
        if item in self._processing:
            return  # requeued by done(): one worker per key
        self._queue.append(item)
        self._wake_one()

    def add_after(self, item: T, delay: float) -> None:
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(item)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + delay
        pending = self._delayed.get(item)
        if pending is not None:
            if pending.when() <= deadline:
                return  # an earlier add is already due
            pending.cancel()
        self._delayed[item] = loop.call_at(deadline, self._fire, item)

    def add_rate_limited(self, item: T) -> None:
        self.add_after(item, self.rate_limiter.when(item))

    def forget(self, item: T) -> None:
        """Forget ``item``'s failures (after a success), resetting its backoff."""
        self.rate_limiter.forget(item)

    def num_requeues(self, item: T) -> int:
        return self.rate_limiter.retries(item)

    async def get(self) -> T:
        """The next key to process; the caller must call ``done`` with it. Raises ``ShutDown``."""
        while not self._queue:
            if self._shutting_down:
                raise ShutDown(self.name)
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # we were woken for an item we will not take: pass it on
                raise
        item = self._queue.popleft()
        self._processing.add(item)
        self._dirty.discard(item)
        return item

    def done(self, item: T) -> None:
        self._processing.discard(item)
        if item in self._dirty:
            self._queue.append(item)
            self._wake_one()
        elif not self._processing and not self._queue:
            self._idle.set()

    def shutdown(self) -> None:
        """Take no more keys; workers get the keys already queued, then ``ShutDown``."""
        self._shutting_down = True
        for handle in self._delayed.values():
            handle.cancel()
        self._delayed.clear()
        while self._getters:
            waiter = self._getters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    async def shutdown_with_drain(self) -> None:
        """Shut down, then wait until every queued and in-flight key is done."""
        self.shutdown()
        await self._idle.wait()

    def _fire(self, item: T) -> None:
        self._delayed.pop(item, None)
        self.add(item)

    def _wake_one(self) -> None:
        while self._getters:
            waiter = self._getters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


async def run_worker(queue: WorkQueue[T], reconcile: Callable[[T], Awaitable[None]]) -> None:
    """Process keys until the queue shuts down: success forgets the key's failures, an error
    re-queues it with backoff. Run several for parallelism; the queue keeps them off each other's keys.
    """
    while True:
        try:
            item = await queue.get()
        except ShutDown:
            return
        try:
            await reconcile(item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            retries = queue.num_requeues(item)
            if _expected(exc):
                log.warning("%s: syncing %s failed (retry %d): %s", queue.name, item, retries, exc)
            else:
                log.exception("%s: syncing %s failed (retry %d)", queue.name, item, retries)
            queue.add_rate_limited(item)
        else:
            queue.forget(item)
        finally:
            queue.done(item)


def _expected(exc: Exception) -> bool:
    """API answers and connection trouble are part of life; anything else is a bug worth a traceback."""
    return isinstance(exc, (errors.ApiError, errors.ClientError))
