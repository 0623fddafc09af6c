"""An event recorder: core/v1 Events about objects, sent in the background, repeats counted.

``recorder.event(obj, "Warning", "FailedScheduling", "0/3 nodes are available: ...")`` never
blocks and never raises: the event goes on a bounded queue (dropped, and counted in ``dropped``,
when the queue is full, because a controller must never stall on its own diagnostics) and one
background task writes them in order.

Repeats are folded like client-go's event correlator: an event identical to one recorded in the
last 10 minutes (same source, involved object, type, reason and message) is not created again;
the existing Event's ``count`` goes up and its ``lastTimestamp`` moves, with one PATCH. An Event
that has meanwhile expired or been deleted (404) is created afresh. The cache of recent events is
bounded (least recently seen dropped first).

Each Event carries ``source.component``/``source.host`` and ``reportingComponent``/
``reportingInstance``; events about cluster-scoped objects (nodes) go in ``default``, as
Kubernetes puts them.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import enum
import logging
import socket
import time
from typing import Any, Literal

from services.client import clock as clock_
from services.client import errors, resources, types
from services.machinery import tasks

log = logging.getLogger(__name__)

AGGREGATION_WINDOW = 600.0  # seconds: a repeat within this long counts up the existing Event
QUEUE_SIZE = 1000  # events waiting to be sent before new ones are dropped
CACHE_SIZE = 4096  # recent events remembered for counting repeats
DRAIN_TIMEOUT = 2.0  # seconds ``stop`` waits for queued events to be sent
EventType = Literal["Normal", "Warning"]


class State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclasses.dataclass(frozen=True, slots=True)
class _Pending:
    ref: dict[str, Any]
    type: str
    reason: str
    message: str
    action: str
    at: datetime.datetime  # when it happened (not when it was sent)
    seen: float  # the same, on the monotonic clock


@dataclasses.dataclass(slots=True)
class _Recorded:
    name: str
    namespace: str
    count: int
    last: float  # monotonic time of the last occurrence


def reference(obj: dict[str, Any]) -> dict[str, Any]:
    """An ObjectReference to ``obj`` (an object, or already a reference)."""
    if "metadata" not in obj:
        return {k: v for k, v in obj.items() if v}
    meta = obj["metadata"]
    ref = {
        "kind": obj.get("kind", ""),
        "apiVersion": obj.get("apiVersion", ""),
        "namespace": meta.get("namespace", ""),
        "name": meta.get("name", ""),
        "uid": meta.get("uid", ""),
        "resourceVersion": meta.get("resourceVersion", ""),
    }
    return {k: v for k, v in ref.items() if v}


def timestamp(moment: datetime.datetime) -> str:
    """A ``metav1.Time``: RFC 3339 UTC, whole seconds."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventRecorder:
    def __init__(
        self,
        api: types.Api,
        *,
        component: str,
        instance: str = "",
        clock: types.Clock | None = None,
        queue_size: int = QUEUE_SIZE,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        self.api = api
        self.component = component
        self.instance = instance or socket.gethostname()
        self.clock = clock or clock_.RealClock()
        self.state = State.NEW
        self.dropped = 0
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(queue_size)
        self._recent: collections.OrderedDict[tuple[str, ...], _Recorded] = collections.OrderedDict()
        self._cache_size = cache_size
        self._task: asyncio.Task[Any] | None = None
        self._last_ns = 0  # the suffix of the last Event name, kept increasing on coarse clocks

    # -- recording (any code, any time) ---------------------------------------------------------

    def event(
        self, obj: dict[str, Any], type_: EventType, reason: str, message: str, *, action: str = ""
    ) -> None:
        """Record that ``reason``/``message`` happened to ``obj``; returns at once."""
        if self.state in (State.STOPPING, State.STOPPED):
            return
        pending = _Pending(
            reference(obj), type_, reason, message, action, self.clock.now(), self.clock.monotonic()
        )
        try:
            self._queue.put_nowait(pending)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning(
                    "event recorder %s: queue full, %d events dropped so far", self.component, self.dropped
                )

    def normal(self, obj: dict[str, Any], reason: str, message: str) -> None:
        self.event(obj, "Normal", reason, message)

    def warning(self, obj: dict[str, Any], reason: str, message: str) -> None:
        self.event(obj, "Warning", reason, message)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.state is State.NEW:
            self.state = State.RUNNING
            self._task = tasks.guarded(self._send_loop(), name=f"event recorder {self.component}")

    async def stop(self, *, drain_timeout: float = DRAIN_TIMEOUT) -> None:
        """Take no more events, send what is queued for up to ``drain_timeout`` s, then stop."""
        if self.state in (State.STOPPING, State.STOPPED):
            return
        running = self.state is State.RUNNING
        self.state = State.STOPPING
        if running and self._task is not None and not self._task.done():
            try:
                await tasks.wait_for(self._queue.join(), drain_timeout)
            except TimeoutError:
                log.warning(
                    "event recorder %s: %d events unsent at stop", self.component, self._queue.qsize()
                )
        if self._task is not None:
            await tasks.cancel_all([self._task])
        self.state = State.STOPPED

    async def __aenter__(self) -> EventRecorder:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- sending --------------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        while True:
            pending = await self._queue.get()
            try:
                await self._send(pending)
            except (errors.ApiError, errors.TransportError) as exc:
                log.warning("event recorder %s: could not write %s event on %s: %s",
                            self.component, pending.reason, pending.ref.get("name", "?"), exc)  # fmt: skip
            finally:
                self._queue.task_done()

    async def _send(self, pending: _Pending) -> None:
        key = self._key(pending)
        recorded = self._recent.get(key)
        if recorded is not None and pending.seen - recorded.last < AGGREGATION_WINDOW:
            if await self._count_up(recorded, pending):
                self._recent.move_to_end(key)
                return
        created = await self.api.create(resources.EVENTS, self._new_event(pending))
        meta = created.get("metadata") or {}
        self._recent[key] = _Recorded(meta.get("name", ""), meta.get("namespace", ""), 1, pending.seen)
        self._recent.move_to_end(key)
        while len(self._recent) > self._cache_size:
            self._recent.popitem(last=False)

    async def _count_up(self, recorded: _Recorded, pending: _Pending) -> bool:
        """PATCH the existing Event's count and lastTimestamp; False when it is gone."""
        body = {"count": recorded.count + 1, "lastTimestamp": timestamp(pending.at)}
        try:
            await self.api.patch(resources.EVENTS, recorded.name, body, namespace=recorded.namespace,
                                 patch_type="merge")  # fmt: skip
        except errors.ApiError as exc:
            if exc.code == 404:
                return False
            raise
        recorded.count += 1
        recorded.last = pending.seen
        return True

    def _key(self, pending: _Pending) -> tuple[str, ...]:
        ref = pending.ref
        fields = ("kind", "namespace", "name", "fieldPath", "uid", "apiVersion")
        return (self.component, self.instance, *(str(ref.get(f, "")) for f in fields),
                pending.type, pending.reason, pending.message)  # fmt: skip

    def _new_event(self, pending: _Pending) -> dict[str, Any]:
        ref = pending.ref
        namespace = ref.get("namespace") or "default"
        at = timestamp(pending.at)
        # client-go names events <object>.<unix nanoseconds in hex>: unique, and sorted by time.
        self._last_ns = max(time.time_ns(), self._last_ns + 1)
        name = f"{ref.get('name', 'unknown')}.{self._last_ns:x}"
        event: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": ref,
            "reason": pending.reason,
            "message": pending.message,
            "type": pending.type,
            "source": {"component": self.component, "host": self.instance},
            "count": 1,
            "firstTimestamp": at,
            "lastTimestamp": at,
            "reportingComponent": self.component,
            "reportingInstance": self.instance,
        }
        if pending.action:
            event["action"] = pending.action
        return event
