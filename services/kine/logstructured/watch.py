"""Watch fan-out: one poll loop feeds every watch of the process.

A watch subscribes first, then replays history from the log up to the revision
the hub had reached when it subscribed; live batches (all newer than that) queue
behind the replay. Each watch has a bounded queue: one that falls too far behind
is closed with a reason instead of slowing the others or growing without bound.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import logging

from services.kine import types
from services.kine.logstructured import rows
from services.kine.sqllog import log as sqllog

log = logging.getLogger(__name__)


def in_range(key: bytes, start: bytes, end: bytes) -> bool:
    if not end:
        return key == start
    if end == b"\x00":
        return key >= start
    return start <= key < end


def _span(keys: list[bytes], start: bytes, end: bytes) -> tuple[int, int]:
    """The slice of sorted ``keys`` that ``in_range(key, start, end)`` accepts."""
    low = bisect.bisect_left(keys, start)
    if not end:
        return low, bisect.bisect_right(keys, start, low)
    if end == b"\x00":
        return low, len(keys)
    return low, bisect.bisect_left(keys, end, low)


class _Watch:
    def __init__(
        self, hub: WatchHub, start: bytes, end: bytes, *, replay_from: int, replay_upto: int
    ) -> None:
        self._hub = hub
        self.start = start
        self.end = end
        self._replay_after = replay_from - 1
        self._replay_upto = replay_upto
        # A start revision in the future: live events before it are not this watch's.
        self._min_revision = replay_from
        self._queue: collections.deque[list[types.Event]] = collections.deque()
        self._ready = asyncio.Event()
        self._closed: str | None = None

    def offer(self, events: list[types.Event]) -> None:
        if self._closed is not None:
            return
        matched = [
            e
            for e in events
            if e.kv.mod_revision >= self._min_revision and in_range(e.kv.key, self.start, self.end)
        ]
        if not matched:
            return
        if len(self._queue) >= self._hub.buffer:
            self._end("watch closed: the client is too slow to keep up with the event rate")
            return
        self._queue.append(matched)
        self._ready.set()

    def _end(self, reason: str) -> None:
        self._closed = reason
        self._queue.clear()
        self._ready.set()
        self._hub.remove(self)

    async def next_batch(self) -> list[types.Event]:
        while self._replay_after < self._replay_upto:
            batch = await self._replay()
            if batch:
                return batch
        while not self._queue:
            if self._closed is not None:
                raise types.WatchClosedError(self._closed)
            self._ready.clear()
            await self._ready.wait()
        if self._closed is not None:
            raise types.WatchClosedError(self._closed)
        batch = self._queue.popleft()
        while self._queue and len(batch) < 1000:
            batch.extend(self._queue.popleft())
        return batch

    async def _replay(self) -> list[types.Event]:
        page = await self._hub.log.history(
            self.start, self.end or (self.start + b"\x00"), after=self._replay_after, upto=self._replay_upto
        )
        if len(page) < sqllog.POLL_BATCH:
            self._replay_after = self._replay_upto
        else:
            self._replay_after = page[-1].id
        return [rows.to_event(r) for r in page if not r.is_gap and in_range(r.name, self.start, self.end)]

    def pending(self) -> bool:
        return bool(self._queue) or self._replay_after < self._replay_upto

    def close(self) -> None:
        if self._closed is None:
            self._closed = "watch canceled"
            self._queue.clear()
            self._ready.set()
            self._hub.remove(self)


class WatchHub:
    def __init__(self, log_: sqllog.SqlLog, *, buffer: int) -> None:
        self.log = log_
        self.buffer = buffer
        self._watches: set[_Watch] = set()

    @property
    def count(self) -> int:
        return len(self._watches)

    def on_rows(self, batch: list[sqllog.Row]) -> None:
        """Called by the poll loop with new rows, in revision order, gaps removed."""
        if not self._watches or not batch:
            return
        events = [rows.to_event(r) for r in batch]
        # The batch sorted by key once, so each watch finds its range by two bisections instead of
        # testing every event: a batch concerns few of the (one per resource) watches.
        order = sorted(range(len(events)), key=lambda i: events[i].kv.key)
        keys = [events[i].kv.key for i in order]
        for watch in list(self._watches):
            low, high = _span(keys, watch.start, watch.end)
            if low < high:
                watch.offer([events[i] for i in sorted(order[low:high])])  # back in revision order

    def subscribe(self, start: bytes, end: bytes, *, start_revision: int) -> _Watch:
        """A watch of [start, end) from ``start_revision``, or from now when it is 0."""
        upto = self.log.polled_revision
        replay_from = start_revision if start_revision > 0 else upto + 1
        watch = _Watch(self, start, end, replay_from=replay_from, replay_upto=upto)
        self._watches.add(watch)
        return watch

    def remove(self, watch: _Watch) -> None:
        self._watches.discard(watch)

    def close_all(self, reason: str) -> None:
        for watch in list(self._watches):
            watch._end(reason)  # noqa: SLF001 - the hub owns its watches
