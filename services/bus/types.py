"""The bus contract: fire-and-forget notices between processes (NATS, or in memory when folded)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

Handler = Callable[[str, bytes], Awaitable[None]]  # (subject, payload)


class BusError(Exception):
    """The bus is unreachable or refused us (the message never carries credentials)."""


class Subscription(Protocol):
    async def unsubscribe(self) -> None: ...


class Bus(Protocol):
    async def publish(self, subject: str, payload: bytes) -> None:
        """Send a notice; never blocks on slow subscribers, may drop when disconnected."""
        ...

    async def subscribe(self, subject: str, handler: Handler) -> Subscription:
        """Call ``handler`` for each notice on ``subject`` (NATS wildcards allowed)."""
        ...

    async def close(self) -> None: ...
