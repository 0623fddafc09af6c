"""etcd's bidirectional Watch stream over ``types.Backend.watch``.

One ``WatchStream`` per RPC owns, under one TaskGroup:
- the RPC handler's own coroutine, reading create / cancel / progress requests;
- one pump task per watch, moving the backend's event batches into the outbox;
- the writer task, the only one that writes to the gRPC stream;
- the periodic progress notifier and the progress-request responder.

Ordering invariants:
- Every response goes through ``_send`` into one FIFO outbox, so a watch's
  ``created`` precedes its events, and its events precede its ``canceled``.
- Header revisions never go backwards on a stream: ``_send`` raises a lower header
  to the highest one queued so far. Progress notifications are never raised that
  way (a raised progress header would claim events not yet delivered): a progress
  below the high-water mark is not sent, and a requested one is retried.
- A progress at revision R is sent only after ``backend.synced_revision()``
  returned R (every write <= R reached the watches' queues) and the watch has
  nothing pending. A pump takes a batch and queues it with no await in between,
  so "nothing pending" also means "nothing in the pump's hands".

``fragment`` is accepted and never acted on: responses are never split, since the
server's send size is unlimited. A range_end of b"\0" reaches the backend as is,
with Range's meaning: every key >= key.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable

from services.kine import types
from services.kine.proto import rpc_pb2
from services.kine.server import convert, errors
from services.kine.server import metrics as kine_metrics

logger = logging.getLogger(__name__)

Write = Callable[[rpc_pb2.WatchResponse], Awaitable[None]]

# Responses queued for the writer before pumps stop taking batches from the backend.
OUTBOX_LIMIT = 128
# How often a requested progress that could not be answered yet is retried.
PROGRESS_RETRY_INTERVAL = 0.05
# Periodic progress notifications are spread by up to this fraction (etcd: 10 %).
PROGRESS_JITTER = 0.1
# etcd's watch id for a progress response that covers every watch on the stream.
ALL_WATCHES = -1
# etcd's watch id in the answer to a create it refuses.
INVALID_WATCH_ID = -1

# etcd: server/mvcc/watcher.go.
DUPLICATE_ID = "mvcc: duplicate watch ID provided on the WatchStream"
EMPTY_RANGE = "mvcc: watcher range is empty"

_FILTERS = {
    rpc_pb2.WatchCreateRequest.NOPUT: types.EventType.PUT,
    rpc_pb2.WatchCreateRequest.NODELETE: types.EventType.DELETE,
}


@dataclasses.dataclass(eq=False, slots=True)
class _Watcher:
    id: int
    watch: types.Watch
    prev_kv: bool
    progress_notify: bool
    dropped: frozenset[types.EventType]
    task: asyncio.Task[None] | None = None


class _Outbox:
    """An unbounded FIFO with a soft limit that pumps wait on before taking more events."""

    def __init__(self, limit: int) -> None:
        self._items: collections.deque[rpc_pb2.WatchResponse] = collections.deque()
        self._limit = limit
        self._nonempty = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    def put(self, response: rpc_pb2.WatchResponse) -> None:
        self._items.append(response)
        self._nonempty.set()
        if len(self._items) >= self._limit:
            self._room.clear()

    async def get(self) -> rpc_pb2.WatchResponse:
        while not self._items:
            self._nonempty.clear()
            await self._nonempty.wait()
        response = self._items.popleft()
        if len(self._items) < self._limit:
            self._room.set()
        return response

    async def wait_for_room(self) -> None:
        await self._room.wait()


def _range_is_empty(key: bytes, range_end: bytes) -> bool:
    # b"\0" as range_end means "every key >= key", as in Range.
    return bool(range_end) and range_end != b"\0" and key >= range_end


class WatchStream:
    """The state of one Watch RPC; ``run`` returns only when the RPC is cancelled or fails."""

    def __init__(
        self,
        backend: types.Backend,
        *,
        identity: convert.Identity,
        write: Write,
        progress_interval: float,
        metrics: kine_metrics.KineMetrics,
    ) -> None:
        self._backend = backend
        self._identity = identity
        self._write = write
        self._progress_interval = progress_interval
        self._metrics = metrics
        self._watchers: dict[int, _Watcher] = {}
        self._next_id = 0
        self._outbox = _Outbox(OUTBOX_LIMIT)
        self._high_water = 0
        self._progress_requested = asyncio.Event()
        self._answering_progress = False
        self._tasks: asyncio.TaskGroup | None = None

    async def run(self, requests: AsyncIterator[rpc_pb2.WatchRequest]) -> None:
        self._metrics.watch_streams.inc()
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                tasks.create_task(self._write_loop(), name="watch-stream-writer")
                tasks.create_task(self._progress_loop(), name="watch-stream-progress")
                tasks.create_task(self._progress_request_loop(), name="watch-stream-progress-requests")
                await self._read_loop(requests)
                # Like etcd, a client that closes its sending side keeps its watches:
                # the stream lives on (in the tasks above) until the RPC is cancelled.
        finally:
            for watcher in list(self._watchers.values()):
                self._forget(watcher)
            self._metrics.watch_streams.dec()

    # -- requests ---------------------------------------------------------------------

    async def _read_loop(self, requests: AsyncIterator[rpc_pb2.WatchRequest]) -> None:
        async for request in requests:
            kind = request.WhichOneof("request_union")
            if kind == "create_request":
                await self._create(request.create_request)
            elif kind == "cancel_request":
                self._cancel(request.cancel_request.watch_id)
            elif kind == "progress_request":
                self._progress_requested.set()
            # etcd ignores a request with no known member set; so does this stream.

    def _allocate_id(self, requested: int) -> int:
        if requested:
            return requested
        while self._next_id in self._watchers:
            self._next_id += 1
        self._next_id += 1
        return self._next_id - 1

    async def _create(self, create: rpc_pb2.WatchCreateRequest) -> None:
        # etcd: an empty key means the smallest key, b"\0".
        key = create.key or b"\0"
        if _range_is_empty(key, create.range_end):
            await self._reject(EMPTY_RANGE)
            return
        if create.watch_id and create.watch_id in self._watchers:
            await self._reject(DUPLICATE_ID)
            return
        # Only this coroutine allocates ids, so the id chosen after the await is still free.
        try:
            if create.start_revision < 0:
                raise types.CompactedError(await self._backend.compact_revision())
            watch = await self._backend.watch(key, create.range_end, start_revision=create.start_revision)
        except types.CompactedError as exc:
            watch_id = self._allocate_id(create.watch_id)
            revision = await self._current_revision()
            self._send(self._response(watch_id, revision, created=True))
            self._send_canceled(
                watch_id, revision, reason=errors.COMPACTED, compact_revision=exc.compact_revision
            )
            return
        except types.StoreError as exc:
            logger.debug("WATCH %r..%r refused: %s", key, create.range_end, exc)
            await self._reject(str(exc) or type(exc).__name__)
            return
        watch_id = self._allocate_id(create.watch_id)
        watcher = _Watcher(
            id=watch_id,
            watch=watch,
            prev_kv=create.prev_kv,
            progress_notify=create.progress_notify,
            dropped=frozenset(_FILTERS[f] for f in create.filters if f in _FILTERS),
        )
        try:
            revision = await self._current_revision()
        except BaseException:
            watch.close()
            raise
        self._watchers[watch_id] = watcher
        self._metrics.watchers.inc()
        self._send(self._response(watch_id, revision, created=True))
        assert self._tasks is not None
        watcher.task = self._tasks.create_task(self._pump(watcher), name=f"watch-{watch_id}-pump")
        logger.debug(
            "WATCH %d %r..%r start=%d => rev=%d",
            watch_id,
            key,
            create.range_end,
            create.start_revision,
            revision,
        )

    async def _current_revision(self) -> int:
        """The store revision for a header; if the store cannot say, the stream's last header."""
        try:
            return await self._backend.current_revision()
        except types.StoreError as exc:
            logger.debug("watch stream: current revision unavailable: %s", exc)
            return self._high_water

    async def _reject(self, reason: str) -> None:
        # etcd answers a create it refuses with one response both created and canceled.
        revision = await self._current_revision()
        response = self._response(INVALID_WATCH_ID, revision, created=True, canceled=True)
        response.cancel_reason = reason
        self._send(response)

    def _cancel(self, watch_id: int) -> None:
        watcher = self._watchers.get(watch_id)
        if watcher is None:
            return  # etcd sends nothing for an unknown id
        self._forget(watcher)
        self._send_canceled(watch_id, self._high_water)

    def _forget(self, watcher: _Watcher) -> None:
        if self._watchers.pop(watcher.id, None) is None:
            return
        if watcher.task is not None and watcher.task is not asyncio.current_task():
            watcher.task.cancel()
        watcher.watch.close()
        self._metrics.watchers.dec()

    # -- events -------------------------------------------------------------------------

    async def _pump(self, watcher: _Watcher) -> None:
        try:
            while True:
                await self._outbox.wait_for_room()
                events = await watcher.watch.next_batch()
                self._send_events(watcher, events)  # no await between taking and queueing
        except types.CompactedError as exc:
            self._end(watcher, reason=errors.COMPACTED, compact_revision=exc.compact_revision)
        except types.StoreError as exc:
            logger.debug("WATCH %d closed by the store: %s", watcher.id, exc)
            self._end(watcher, reason=str(exc) or type(exc).__name__)
        except Exception:
            logger.exception("watch %d pump failed", watcher.id)
            self._end(watcher, reason=errors.INTERNAL)

    def _send_events(self, watcher: _Watcher, events: list[types.Event]) -> None:
        if watcher.dropped:
            events = [event for event in events if event.type not in watcher.dropped]
        if not events:
            return
        response = self._response(watcher.id, events[-1].kv.mod_revision)
        convert.add_events(response.events, events, prev_kv=watcher.prev_kv)
        self._send(response)

    def _end(self, watcher: _Watcher, *, reason: str, compact_revision: int = 0) -> None:
        if watcher.id not in self._watchers:
            return
        self._forget(watcher)
        self._send_canceled(watcher.id, self._high_water, reason=reason, compact_revision=compact_revision)

    # -- progress -------------------------------------------------------------------------

    def _idle(self, watcher: _Watcher) -> bool:
        return not watcher.watch.pending()

    async def _progress_loop(self) -> None:
        while True:
            await asyncio.sleep(self._progress_interval * (1 + random.random() * PROGRESS_JITTER))
            if self._progress_requested.is_set() or self._answering_progress:
                continue  # a requested progress is on its way; etcd skips periodic ones meanwhile
            if not any(w.progress_notify for w in self._watchers.values()):
                continue
            revision = await self._synced_revision()
            if revision is None:
                continue
            targets = [w for w in self._watchers.values() if w.progress_notify and self._idle(w)]
            for watcher in targets:
                if not self._send_progress(watcher.id, revision):
                    break

    async def _progress_request_loop(self) -> None:
        while True:
            await self._progress_requested.wait()
            # Cleared before syncing: a request arriving meanwhile gets a later answer of its own.
            self._progress_requested.clear()
            self._answering_progress = True
            try:
                while True:
                    revision = await self._synced_revision()
                    idle = all(self._idle(w) for w in self._watchers.values())
                    if revision is not None and idle and self._send_progress(ALL_WATCHES, revision):
                        break
                    await asyncio.sleep(PROGRESS_RETRY_INTERVAL)
            finally:
                self._answering_progress = False

    async def _synced_revision(self) -> int | None:
        # A store hiccup delays progress notifications; it does not end the stream.
        try:
            return await self._backend.synced_revision()
        except types.StoreError as exc:
            logger.debug("watch stream: synced revision unavailable: %s", exc)
            return None

    def _send_progress(self, watch_id: int, revision: int) -> bool:
        if revision < self._high_water:
            return False
        self._high_water = revision
        self._outbox.put(self._response(watch_id, revision))
        return True

    # -- output -----------------------------------------------------------------------------

    def _response(self, watch_id: int, revision: int, **fields: bool) -> rpc_pb2.WatchResponse:
        response = rpc_pb2.WatchResponse(watch_id=watch_id, **fields)
        self._identity.fill_header(response.header, revision)
        return response

    def _send_canceled(
        self, watch_id: int, revision: int, *, reason: str = "", compact_revision: int = 0
    ) -> None:
        response = self._response(watch_id, revision, canceled=True)
        response.cancel_reason = reason
        response.compact_revision = compact_revision
        self._send(response)

    def _send(self, response: rpc_pb2.WatchResponse) -> None:
        # Synchronous, so the high-water mark and the queue order always agree.
        if response.header.revision < self._high_water:
            response.header.revision = self._high_water
        self._high_water = response.header.revision
        self._outbox.put(response)

    async def _write_loop(self) -> None:
        while True:
            response = await self._outbox.get()
            await self._write(response)
            if response.events:
                self._metrics.watch_events.inc(len(response.events))


class WatchService:
    """The handler for ``etcdserverpb.Watch/Watch``."""

    def __init__(
        self,
        backend: types.Backend,
        *,
        identity: convert.Identity,
        progress_interval: float,
        metrics: kine_metrics.KineMetrics,
    ) -> None:
        self._backend = backend
        self._identity = identity
        self._progress_interval = progress_interval
        self._metrics = metrics

    async def watch(self, requests: AsyncIterator[rpc_pb2.WatchRequest], write: Write) -> None:
        stream = WatchStream(
            self._backend,
            identity=self._identity,
            write=write,
            progress_interval=self._progress_interval,
            metrics=self._metrics,
        )
        await stream.run(requests)
