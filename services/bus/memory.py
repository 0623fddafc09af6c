"""In-process bus with NATS subject semantics, for the edge profile and for tests.

Subjects are dot-separated tokens; a subscription may use ``*`` (exactly one token) and, as its last
token, ``>`` (one or more tokens), as NATS does. Every ``memory://NAME`` URL in a process maps to one
broker, so components folded into one process find each other by URL exactly as they would through
NATS. A broker lives as long as some bus holds it.

Delivery mirrors NATS: each subscription has its own bounded queue and one named delivery task, so
handlers of one subscription run in order, a slow handler never blocks the publisher, and a full
queue drops notices (counted and logged) instead of growing without bound.

Request/reply as NATS does it: a request is published with a reply subject (a fresh inbox) on which
the requester waits; when no subscription matches the request's subject the requester learns it at
once (NATS's "no responders").
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
import uuid
import weakref
from collections.abc import Awaitable, Callable

from services.bus import types

logger = logging.getLogger(__name__)

DEFAULT_MAX_PENDING = 65536  # notices queued per subscription before new ones are dropped
INBOX_PREFIX = "_INBOX"

Deliver = Callable[[str, bytes, str], Awaitable[None]]  # (subject, payload, reply subject or "")

_brokers: weakref.WeakValueDictionary[str, Broker] = weakref.WeakValueDictionary()


def connect(url: str, *, max_pending: int = DEFAULT_MAX_PENDING) -> MemoryBus:
    """A bus on the broker named by ``url`` (``memory://NAME``; ``memory://`` is ``default``)."""
    parts = urllib.parse.urlsplit(url)
    name = (parts.netloc + parts.path).strip("/") or "default"
    broker = _brokers.get(name)
    if broker is None:
        broker = _brokers[name] = Broker(name)
    return MemoryBus(broker, max_pending=max_pending)


def split_subject(subject: str, *, wildcards: bool) -> tuple[str, ...]:
    """Validate ``subject`` and return its tokens; wildcards are allowed only in subscriptions."""
    tokens = tuple(subject.split("."))
    if not subject or any(ch.isspace() for ch in subject) or "" in tokens:
        raise types.BusError(f"invalid subject {subject!r}")
    if not wildcards and ("*" in tokens or ">" in tokens):
        raise types.BusError(f"cannot publish to wildcard subject {subject!r}")
    if ">" in tokens[:-1]:
        raise types.BusError(f"'>' must be the last token of {subject!r}")
    return tokens


def subject_matches(pattern: tuple[str, ...], subject: tuple[str, ...]) -> bool:
    for index, token in enumerate(pattern):
        if token == ">":
            return len(subject) > index
        if index >= len(subject) or token not in ("*", subject[index]):
            return False
    return len(pattern) == len(subject)


class Broker:
    """Routes published notices to the matching subscriptions of every bus on it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._subscriptions: set[MemorySubscription | ReplyWaiter] = set()

    def add(self, subscription: MemorySubscription | ReplyWaiter) -> None:
        self._subscriptions.add(subscription)

    def remove(self, subscription: MemorySubscription | ReplyWaiter) -> None:
        self._subscriptions.discard(subscription)

    def publish(self, subject: str, payload: bytes, *, reply: str = "") -> int:
        """Route a notice; returns how many subscriptions it reached."""
        tokens = split_subject(subject, wildcards=False)
        reached = 0
        # Iterate over a copy: a handler may subscribe or unsubscribe while we route.
        for subscription in list(self._subscriptions):
            if subject_matches(subscription.pattern, tokens):
                subscription.offer(subject, payload, reply)
                reached += 1
        return reached


class MemorySubscription:
    def __init__(self, broker: Broker, subject: str, deliver: Deliver, *, max_pending: int) -> None:
        self.subject = subject
        self.pattern = split_subject(subject, wildcards=True)
        self.dropped = 0
        self._broker = broker
        self._handler = deliver
        self._queue: asyncio.Queue[tuple[str, bytes, str]] = asyncio.Queue(max_pending)
        self._task = asyncio.create_task(self._deliver(), name=f"bus delivery {subject}")
        broker.add(self)

    def offer(self, subject: str, payload: bytes, reply: str = "") -> None:
        try:
            self._queue.put_nowait((subject, payload, reply))
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                logger.warning(
                    "bus subscriber to %s is too slow: %d notices dropped", self.subject, self.dropped
                )

    async def _deliver(self) -> None:
        while True:
            subject, payload, reply = await self._queue.get()
            try:
                await self._handler(subject, payload, reply)
            except Exception:
                logger.exception("bus handler for %s failed on %s", self.subject, subject)

    async def unsubscribe(self) -> None:
        self._broker.remove(self)
        self._task.cancel()
        if asyncio.current_task() is self._task:
            return  # a handler unsubscribing itself: it ends at its next await
        try:
            await self._task
        except asyncio.CancelledError:
            # Ours to absorb only when it is the delivery task's cancellation, not our caller's.
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise


class ReplyWaiter:
    """A one-shot subscription to a request's inbox: the first reply resolves it, in the publisher's call."""

    def __init__(self, inbox: str) -> None:
        self.subject = inbox
        self.pattern = split_subject(inbox, wildcards=False)
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def offer(self, subject: str, payload: bytes, reply: str = "") -> None:
        if not self.reply.done():
            self.reply.set_result(payload)


class MemoryBus:
    """One connection to a broker; closing it ends its own subscriptions only."""

    def __init__(self, broker: Broker, *, max_pending: int = DEFAULT_MAX_PENDING) -> None:
        self._broker = broker
        self._max_pending = max_pending
        self._subscriptions: list[MemorySubscription] = []
        self._closed = False

    async def publish(self, subject: str, payload: bytes) -> None:
        self._check_open()
        self._broker.publish(subject, bytes(payload))

    async def subscribe(self, subject: str, handler: types.Handler) -> MemorySubscription:
        self._check_open()

        async def deliver(subject: str, payload: bytes, reply: str) -> None:
            await handler(subject, payload)

        return self._add(subject, deliver)

    async def serve(self, subject: str, responder: types.Responder) -> MemorySubscription:
        self._check_open()

        async def deliver(subject: str, payload: bytes, reply: str) -> None:
            answer = await responder(subject, payload)
            if reply:
                self._broker.publish(reply, bytes(answer))

        return self._add(subject, deliver)

    async def request(self, subject: str, payload: bytes, *, within: float) -> bytes:
        self._check_open()
        waiter = ReplyWaiter(self.new_inbox())
        self._broker.add(waiter)
        try:
            if not self._broker.publish(subject, bytes(payload), reply=waiter.subject):
                raise types.NoResponders(f"no responders on {subject!r}")
            try:
                async with asyncio.timeout(within):
                    return await waiter.reply
            except TimeoutError:
                raise types.RequestTimeout(f"no reply on {subject!r} within {within:g}s") from None
        finally:
            self._broker.remove(waiter)

    def new_inbox(self) -> str:
        return f"{INBOX_PREFIX}.{uuid.uuid4().hex}"

    def _add(self, subject: str, deliver: Deliver) -> MemorySubscription:
        subscription = MemorySubscription(self._broker, subject, deliver, max_pending=self._max_pending)
        self._subscriptions.append(subscription)
        return subscription

    async def close(self) -> None:
        self._closed = True
        subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:
            await subscription.unsubscribe()

    def _check_open(self) -> None:
        if self._closed:
            raise types.BusError(f"bus memory://{self._broker.name} is closed")
