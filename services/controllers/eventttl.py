"""Event TTL: Events are deleted once they have not been seen for ``event_ttl`` (1 hour).

kube-apiserver expires Events with an etcd lease per write (``--event-ttl``); here a
controller does it, from an informer on ``core/v1`` Events. ``events.k8s.io/v1`` Events are
the same objects under the same keys, so one informer sees both shapes. An Event's age counts
from the last time it was written: the latest of ``lastTimestamp``, ``eventTime``,
``series.lastObservedTime``, ``deprecatedLastTimestamp`` and ``creationTimestamp``, so a
repeating Event whose count keeps rising lives on, as it does upstream.

Each Event is put on the queue for the moment it expires; a sweep every ``sweep`` seconds on
the controller's clock looks at all of them again (a safety net, and a handle for tests with a
fake clock).
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from services.client import clock as clock_
from services.client import errors, resources, types
from services.controllers import base, podutil
from services.machinery import tasks

log = logging.getLogger(__name__)

DEFAULT_TTL = 3600.0  # seconds: kube-apiserver's --event-ttl
SWEEP = 600.0  # seconds between looks at every Event


def last_seen(event: dict[str, Any]) -> datetime.datetime | None:
    """When the Event was last written, by its own timestamps."""
    stamps = (
        event.get("lastTimestamp"),
        event.get("eventTime"),
        (event.get("series") or {}).get("lastObservedTime"),
        event.get("deprecatedLastTimestamp"),
        (event.get("metadata") or {}).get("creationTimestamp"),
    )
    times = [t for t in (podutil.parse_time(s) for s in stamps if isinstance(s, str)) if t is not None]
    return max(times) if times else None


class EventTTLController(base.QueueController):
    name = "eventttl"
    workers = 2

    def __init__(
        self, *, clock: types.Clock | None = None, ttl: float | None = None, sweep: float = SWEEP
    ) -> None:
        super().__init__()
        self.clock = clock or clock_.RealClock()
        self.ttl = ttl
        self.sweep = sweep

    def setup(self, ctx: base.ControllerContext) -> None:
        super().setup(ctx)
        if self.ttl is None:
            self.ttl = float(getattr(ctx.settings, "event_ttl", None) or DEFAULT_TTL)
        self.events = ctx.informers.informer(resources.EVENTS)
        self.events.add_handlers(on_add=self._schedule, on_update=lambda _o, n: self._schedule(n))

    def _left(self, event: dict[str, Any]) -> float:
        """Seconds until the Event expires (<= 0: expired)."""
        assert self.ttl is not None
        seen = last_seen(event)
        if seen is None:
            return 0.0
        return (seen - self.clock.now()).total_seconds() + self.ttl

    def _schedule(self, event: dict[str, Any]) -> None:
        self.queue.add_after(base.key_of(event), max(self._left(event), 0.0))

    async def run(self) -> None:
        sweeper = tasks.guarded(self._sweep(), name="event ttl sweep")
        try:
            await super().run()
        finally:
            await tasks.cancel_all([sweeper])

    async def _sweep(self) -> None:
        while True:
            await self.clock.sleep(self.sweep)
            for key in self.events.store.keys():
                self.queue.add(key)

    async def reconcile(self, key: str) -> None:
        event = self.events.store.get(key)
        if event is None:
            return
        left = self._left(event)
        if left > 0:
            self.queue.add_after(key, left)
            return
        assert self.ctx is not None
        md = event["metadata"]
        log.debug("deleting expired event %s", key)
        try:
            await self.ctx.api.delete(resources.EVENTS, md["name"], namespace=md.get("namespace"),
                                      preconditions={"uid": md["uid"]} if md.get("uid") else None)  # fmt: skip
        except errors.ApiError as exc:
            if exc.code not in (404, 409):  # gone, or rewritten since (it then lives on)
                raise


def new() -> base.Controller:
    return EventTTLController()
