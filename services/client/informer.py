"""Shared informers: one list-then-watch per resource, a cache, and handlers called in order.

An ``Informer`` keeps a ``store.Store`` equal to the API's view of one resource (optionally one
namespace, or a selector) and tells its handlers what changed, as client-go's reflector and
shared informer do:

- list, replace the store, then watch from the list's resourceVersion with bookmarks on and a
  server-side timeout of 5-10 minutes (client-go's spread, so watches do not all end at once);
- when a watch ends cleanly, or the connection drops, watch again from the last resourceVersion
  seen (events and bookmarks both move it): no relist;
- relist only when the server says that resourceVersion is gone (410 Expired);
- on any other failure, retry with exponential backoff (0.8 s doubling to 30 s, jittered).

Handlers (``on_add(obj)``, ``on_update(old, new)``, ``on_delete(obj)``) are plain functions,
called in the order they were added, once per change, after the store holds the change; they
should be quick (put a key on a work queue) because the next event waits for them. A handler
added after the informer synced is first told about every object already cached. A relist
reports the difference from the cache: adds, updates of objects whose resourceVersion moved,
and deletes of objects that vanished meanwhile.

Objects handed to handlers and returned by the store are the cached ones: never mutate them
(``store.copy`` gives a private copy). ``InformerFactory`` hands every controller of a process
the same informer for the same resource, so the process holds one cache and one watch each.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from services.client import errors, store, types
from services.client.resources import Resource
from services.machinery import tasks

log = logging.getLogger(__name__)

WATCH_TIMEOUT = (300, 600)  # seconds: the server ends each watch after a random time in this range
HEALTHY_WATCH = 10.0  # seconds: a watch that lasted this long resets the backoff


class State(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclasses.dataclass(frozen=True, eq=False)
class Handlers:
    """One registration; pass it to ``remove_handlers`` to unregister."""

    on_add: Callable[[types.Object], None] | None = None
    on_update: Callable[[types.Object, types.Object], None] | None = None
    on_delete: Callable[[types.Object], None] | None = None


class Backoff:
    """Exponential backoff with jitter: ``next()`` is the delay before the next attempt."""

    def __init__(self, initial: float = 0.8, cap: float = 30.0, jitter: float = 0.1) -> None:
        self.initial, self.cap, self.jitter = initial, cap, jitter
        self._delay = initial

    def next(self) -> float:
        delay = self._delay
        self._delay = min(self._delay * 2, self.cap)
        return delay * (1 + random.uniform(0, self.jitter))

    def reset(self) -> None:
        self._delay = self.initial


class Informer:
    def __init__(
        self,
        api: types.Api,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        indexers: Mapping[str, store.IndexFunc] | None = None,
        watch_timeout: tuple[int, int] = WATCH_TIMEOUT,
        backoff: Backoff | None = None,
        on_failure: Callable[[BaseException | None], None] | None = None,
    ) -> None:
        self.api = api
        self.resource = resource
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.store = store.Store(indexers)
        self.state = State.NEW
        self.resource_version = ""  # the last one seen; "" means: list first
        self._watch_timeout = watch_timeout
        self._backoff = backoff or Backoff()
        self._on_failure = on_failure
        self._handlers: list[Handlers] = []
        self._synced = asyncio.Event()
        self._ended = asyncio.Event()
        self._task: asyncio.Task[Any] | None = None
        self.name = f"informer {resource}" + (f" in {namespace}" if namespace else "")

    # -- consumers ------------------------------------------------------------------------------

    @property
    def has_synced(self) -> bool:
        """True once the first list is in the store and its handlers were called."""
        return self._synced.is_set()

    def add_handlers(
        self,
        *,
        on_add: Callable[[types.Object], None] | None = None,
        on_update: Callable[[types.Object, types.Object], None] | None = None,
        on_delete: Callable[[types.Object], None] | None = None,
    ) -> Handlers:
        handlers = Handlers(on_add, on_update, on_delete)
        # No await between the replay and the registration: no event can slip in between.
        if on_add is not None:
            for obj in self.store.list():
                self._call(on_add, obj)
        self._handlers.append(handlers)
        return handlers

    def remove_handlers(self, handlers: Handlers) -> None:
        self._handlers = [h for h in self._handlers if h is not handlers]

    def add_indexer(self, name: str, func: store.IndexFunc) -> None:
        self.store.add_indexer(name, func)

    async def wait_synced(self) -> None:
        """Return once synced; raise ``ClientError`` if the informer ends before that."""
        if self._synced.is_set():
            return
        synced = asyncio.ensure_future(self._synced.wait())
        ended = asyncio.ensure_future(self._ended.wait())
        try:
            await asyncio.wait({synced, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await tasks.cancel_all([synced, ended])
        if not self._synced.is_set():
            raise errors.ClientError(f"{self.name} {self.state.value} before it synced")

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> Informer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start listing and watching; return once the cache is synced (idempotent)."""
        if self.state is State.NEW:
            self.state = State.STARTING
            self._task = tasks.guarded(self._run(), name=self.name, on_failure=self._failed)
        await self.wait_synced()
        if self.state is State.STARTING:
            self.state = State.RUNNING
            log.info(
                "%s synced: %d objects at resourceVersion %s",
                self.name,
                len(self.store),
                self.resource_version,
            )

    async def stop(self) -> None:
        if self.state in (State.STOPPING, State.STOPPED, State.FAILED):
            return
        self.state = State.STOPPING
        if self._task is not None:
            await tasks.cancel_all([self._task])
        self.state = State.STOPPED
        self._ended.set()

    def _failed(self, exc: BaseException | None) -> None:
        self.state = State.FAILED
        self._ended.set()
        if self._on_failure is not None:
            self._on_failure(exc)

    # -- the loop -------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            listed = not self.resource_version
            try:
                if listed:
                    await self._list()
                await self._watch()
            except errors.ApiError as exc:
                if exc.code == 410:
                    log.info("%s: resourceVersion %s expired; relisting", self.name, self.resource_version)
                    self.resource_version = ""
                    if listed:  # expired right after a fresh list: do not spin on a confused server
                        await self._pause(started, "the listed resourceVersion expired at once")
                    continue
                await self._pause(started, f"{exc.code} {exc.reason}: {exc.message}")
            except errors.TransportError as exc:
                await self._pause(started, str(exc))
            else:
                # A clean end (the server's timeout): resume at once, unless it ended at once.
                if time.monotonic() - started < 1.0:
                    await self._pause(started, "the watch ended immediately")
                else:
                    self._backoff.reset()

    async def _pause(self, started: float, why: str) -> None:
        if time.monotonic() - started >= HEALTHY_WATCH:
            self._backoff.reset()
        delay = self._backoff.next()
        log.warning("%s: %s; retrying in %.1fs", self.name, why, delay)
        await asyncio.sleep(delay)

    async def _list(self) -> None:
        listed = await self.api.list(
            self.resource,
            namespace=self.namespace,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
        )
        self._replace(listed.get("items") or [])
        self.resource_version = (listed.get("metadata") or {}).get("resourceVersion", "")
        self._backoff.reset()
        if not self._synced.is_set():
            self._synced.set()

    async def _watch(self) -> None:
        stream = self.api.watch(
            self.resource,
            namespace=self.namespace,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            resource_version=self.resource_version,
            allow_bookmarks=True,
            timeout_seconds=random.randint(*self._watch_timeout),
        )
        async with stream:
            async for kind, obj in stream:
                self._apply(kind, obj)
                rv = (obj.get("metadata") or {}).get("resourceVersion")
                if rv:
                    self.resource_version = rv

    # -- applying changes -----------------------------------------------------------------------

    def _apply(self, kind: str, obj: types.Object) -> None:
        if kind in ("ADDED", "MODIFIED"):
            old = self.store.put(obj)
            if old is None:
                self._notify_add(obj)
            else:
                self._notify_update(old, obj)
        elif kind == "DELETED":
            self.store.remove(store.key_of(obj))
            self._notify_delete(obj)
        elif kind != "BOOKMARK":
            log.warning("%s: ignoring an event of unknown type %r", self.name, kind)

    def _replace(self, objs: list[types.Object]) -> None:
        old = {store.key_of(o): o for o in self.store.list()}
        self.store.replace(objs)
        for obj in objs:
            before = old.pop(store.key_of(obj), None)
            if before is None:
                self._notify_add(obj)
            elif _rv(before) != _rv(obj):
                self._notify_update(before, obj)
        for gone in old.values():
            self._notify_delete(gone)

    def _notify_add(self, obj: types.Object) -> None:
        for h in self._handlers:
            if h.on_add is not None:
                self._call(h.on_add, obj)

    def _notify_update(self, old: types.Object, new: types.Object) -> None:
        for h in self._handlers:
            if h.on_update is not None:
                self._call(h.on_update, old, new)

    def _notify_delete(self, obj: types.Object) -> None:
        for h in self._handlers:
            if h.on_delete is not None:
                self._call(h.on_delete, obj)

    def _call(self, handler: Callable[..., Any], *args: types.Object) -> None:
        try:
            handler(*args)
        except Exception:  # one broken handler must not starve the others or kill the watch
            log.exception("%s: handler %s failed", self.name, getattr(handler, "__qualname__", handler))


def _rv(obj: types.Object) -> str:
    return (obj.get("metadata") or {}).get("resourceVersion", "")


class InformerFactory:
    """One informer per (resource, namespace, selectors) for a whole process.

    Ask for informers while setting up (``informer(...)``), then ``await start()``: it starts
    every informer not yet started and returns when all are synced. Asking for more later is
    fine; call ``start()`` again for them. ``on_failure`` hears about an informer whose loop died
    (a bug): the owning component should stop, as it would for any root task.
    """

    def __init__(
        self,
        api: types.Api,
        *,
        watch_timeout: tuple[int, int] = WATCH_TIMEOUT,
        on_failure: Callable[[BaseException | None], None] | None = None,
    ) -> None:
        self.api = api
        self._watch_timeout = watch_timeout
        self._on_failure = on_failure
        self._informers: dict[tuple[Any, ...], Informer] = {}

    def informer(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        indexers: Mapping[str, store.IndexFunc] | None = None,
    ) -> Informer:
        """The shared informer; ``indexers`` not yet on it are added (same name: kept as it is)."""
        key = (resource, namespace, label_selector, field_selector)
        informer = self._informers.get(key)
        if informer is None:
            informer = Informer(
                self.api, resource, namespace=namespace, label_selector=label_selector,
                field_selector=field_selector, watch_timeout=self._watch_timeout, on_failure=self._on_failure,
            )  # fmt: skip
            self._informers[key] = informer
        for name, func in (indexers or {}).items():
            try:
                informer.add_indexer(name, func)
            except ValueError:
                pass  # another controller registered this index already
        return informer

    @property
    def informers(self) -> list[Informer]:
        return list(self._informers.values())

    @property
    def has_synced(self) -> bool:
        return all(i.has_synced for i in self._informers.values())

    async def start(self) -> None:
        await asyncio.gather(*(i.start() for i in self._informers.values()))

    async def stop(self) -> None:
        for informer in self._informers.values():
            await informer.stop()

    async def __aenter__(self) -> InformerFactory:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
