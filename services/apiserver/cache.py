"""The watch cache: one store watch per resource, lists and watches served from memory.

Each ``ResourceCache`` lists its resource once at revision R, then watches the
store from R + 1 and applies every event to a dict of objects. Clients' lists
are served from that dict after a consistency wait (``sync``: every write the
store acknowledged before the request is applied), and clients' watches are
fed from it: replayed from a bounded history of recent events when they resume
from a resourceVersion, then live. A client too slow for its bounded queue is
closed and re-watches from its last resourceVersion, as client-go does.

Cached objects are shared and must never be mutated: handlers copy before they
change anything.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from services.apiserver import registry, storage
from services.kine import types
from services.machinery import errors, patch, tasks

log = logging.getLogger(__name__)

HISTORY = 10_000  # events kept per resource for watches that resume
WATCHER_BUFFER = 10_000  # events queued per client watch before it is closed
LIST_PAGE = 10_000

Predicate = Callable[[dict[str, Any]], bool]


@dataclasses.dataclass(frozen=True, slots=True)
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED
    obj: dict[str, Any]
    prev: dict[str, Any] | None
    revision: int


class CacheWatcher:
    """One client watch: filtered events from the cache, in revision order."""

    def __init__(self, cache: ResourceCache, *, namespace: str, predicate: Predicate | None) -> None:
        self._cache = cache
        self.namespace = namespace
        self.predicate = predicate
        self._queue: collections.deque[WatchEvent] = collections.deque()
        self._ready = asyncio.Event()
        self.closed: str | None = None

    def _visible(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        if self.namespace and obj.get("metadata", {}).get("namespace") != self.namespace:
            return False
        return self.predicate is None or self.predicate(obj)

    def offer(self, event: WatchEvent) -> None:
        """Queue the event as this watcher sees it (selector transitions become ADDED/DELETED)."""
        if self.closed is not None:
            return
        now = self._visible(event.obj)
        if event.type == "DELETED":
            out = event if now else None
        elif event.type == "ADDED":
            out = event if now else None
        else:
            before = self._visible(event.prev)
            if now and before:
                out = event
            elif now:
                out = WatchEvent("ADDED", event.obj, None, event.revision)
            elif before:
                gone = _with_revision(event.prev or event.obj, event.revision)
                out = WatchEvent("DELETED", gone, None, event.revision)
            else:
                out = None
        if out is None:
            return
        if len(self._queue) >= WATCHER_BUFFER:
            self.close("the watcher fell too far behind")
            return
        self._queue.append(out)
        self._ready.set()

    async def next(self) -> list[WatchEvent]:
        """Wait for events; raise EOFError with the reason when the watch was closed."""
        while not self._queue:
            if self.closed is not None:
                raise EOFError(self.closed)
            self._ready.clear()
            await self._ready.wait()
        batch = list(self._queue)
        self._queue.clear()
        return batch

    def close(self, reason: str = "closed") -> None:
        if self.closed is None:
            self.closed = reason
            self._ready.set()
            self._cache.watchers.discard(self)


class ResourceCache:
    def __init__(self, info: registry.ResourceInfo, store: storage.ObjectStore) -> None:
        self.info = info
        self.store = store
        self.objects: dict[str, dict[str, Any]] = {}
        self.revision = 0
        self.watchers: set[CacheWatcher] = set()
        self._history: collections.deque[WatchEvent] = collections.deque()
        self._floor = 0  # watches may resume from any revision >= floor
        self._sorted: list[str] | None = None
        self._watch: types.Watch | None = None
        self._busy = False
        self._changed = asyncio.Condition()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[Any] | None = None
        self._prefix = info.storage_prefix

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        await self._load()
        self._task = tasks.guarded(self._run(), name=f"watch cache {self.info.resource_group}")
        self._ready.set()

    async def stop(self) -> None:
        if self._task is not None:
            await tasks.cancel_all([self._task])
            self._task = None
        if self._watch is not None:
            self._watch.close()
        for watcher in list(self.watchers):
            watcher.close("the API server is stopping")

    async def _load(self) -> None:
        """List everything at one revision, then watch from the next."""
        objects: dict[str, dict[str, Any]] = {}
        revision = 0
        start = ""
        while True:
            items, served, more, _ = await self.store.list(
                self._prefix, revision=revision, limit=LIST_PAGE, start=start
            )
            revision = revision or served
            for item in items:
                objects[self._key(item.obj)] = item.obj
            if not more or not items:
                break
            start = self._key(items[-1].obj) + "\x00"
        self._watch = await self.store.backend.watch(
            self._prefix.encode(), storage.prefix_end(self._prefix), start_revision=revision + 1
        )
        self.objects = objects
        self._sorted = None
        self.revision = revision
        self._history.clear()
        self._floor = revision

    def _key(self, obj: dict[str, Any]) -> str:
        meta = obj.get("metadata", {})
        return self.info.key(meta.get("namespace", ""), meta.get("name", ""))

    async def _run(self) -> None:
        while True:
            assert self._watch is not None
            try:
                batch = await self._watch.next_batch()
            except types.WatchClosedError as exc:
                log.warning("%s: store watch ended (%s); resuming from revision %d", self.info.resource_group, exc, self.revision)
                await self._resume()
                continue
            self._busy = True
            try:
                for event in batch:
                    self._apply(event)
            finally:
                self._busy = False
            async with self._changed:
                self._changed.notify_all()

    async def _resume(self) -> None:
        """Watch again from the next revision (a store restart loses nothing); reload only if compacted."""
        delay = 0.1
        while True:
            try:
                self._watch = await self.store.backend.watch(
                    self._prefix.encode(), storage.prefix_end(self._prefix), start_revision=self.revision + 1
                )
                return
            except types.CompactedError:
                log.warning("%s: missed events were compacted away; reloading", self.info.resource_group)
                await self._reload()
                return
            except types.StoreError as exc:
                log.warning("%s: cannot watch the store yet (%s); retrying", self.info.resource_group, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _reload(self) -> None:
        while True:
            try:
                await self._load()
            except types.StoreError as exc:
                log.warning("%s: reload failed (%s); retrying", self.info.resource_group, exc)
                await asyncio.sleep(1)
                continue
            break
        # Watchers cannot know what they missed: they re-watch and get 410 or a fresh list.
        for watcher in list(self.watchers):
            watcher.close("the watch cache was reloaded")

    def _apply(self, event: types.Event) -> None:
        key = event.kv.key.decode("latin-1")
        rev = event.kv.mod_revision
        prev = self.objects.get(key)
        if event.type == types.EventType.DELETE:
            if prev is None and event.prev_kv is not None:
                prev = storage.decode(event.prev_kv.value, event.prev_kv.mod_revision)
            self.objects.pop(key, None)
            self._sorted = None
            if prev is None:
                self.revision = max(self.revision, rev)
                return
            out = WatchEvent("DELETED", _with_revision(prev, rev), None, rev)
        else:
            obj = storage.decode(event.kv.value, rev)
            if key not in self.objects:
                self._sorted = None
            self.objects[key] = obj
            out = WatchEvent("MODIFIED" if prev is not None else "ADDED", obj, prev, rev)
        self.revision = max(self.revision, rev)
        if len(self._history) >= HISTORY:
            self._floor = self._history.popleft().revision
        self._history.append(out)
        for watcher in list(self.watchers):
            watcher.offer(out)

    # -- reads ------------------------------------------------------------------------

    async def sync(self) -> int:
        """Wait until every write acknowledged so far is applied; return the cache revision."""
        await self._ready.wait()
        target = await self.store.backend.synced_revision()
        async with self._changed:
            await self._changed.wait_for(lambda: not self._busy and not (self._watch and self._watch.pending()))
        self.revision = max(self.revision, target)
        return self.revision

    def sorted_keys(self) -> list[str]:
        if self._sorted is None:
            self._sorted = sorted(self.objects)
        return self._sorted

    def list(self, namespace: str, predicate: Predicate | None) -> list[dict[str, Any]]:
        keys = self.sorted_keys()
        if namespace:
            prefix = self.info.collection_prefix(namespace)
            keys = _range(keys, prefix)
        objs = [self.objects[k] for k in keys]
        if predicate is not None:
            objs = [o for o in objs if predicate(o)]
        return objs

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get(self.info.key(namespace, name))

    def watch(self, *, namespace: str, predicate: Predicate | None, after: int | None) -> CacheWatcher:
        """A client watch of events after revision ``after`` (None: from now).

        Raises ApiError 410 when ``after`` is older than the retained history.
        """
        watcher = CacheWatcher(self, namespace=namespace, predicate=predicate)
        if after is not None and after < self.revision:
            if after < self._floor:
                raise errors.gone(f"too old resource version: {after} ({self._floor})")
            for event in self._history:
                if event.revision > after:
                    watcher.offer(event)
        self.watchers.add(watcher)
        return watcher


def _with_revision(obj: dict[str, Any], revision: int) -> dict[str, Any]:
    out = dict(obj)
    out["metadata"] = {**obj.get("metadata", {}), "resourceVersion": str(revision)}
    return out


def _range(keys: list[str], prefix: str) -> list[str]:
    import bisect

    lo = bisect.bisect_left(keys, prefix)
    hi = bisect.bisect_left(keys, prefix[:-1] + chr(ord(prefix[-1]) + 1))
    return keys[lo:hi]


def deep_copy(obj: dict[str, Any]) -> dict[str, Any]:
    """A private copy of a cached object."""
    result: dict[str, Any] = patch.clone(obj)
    return result
