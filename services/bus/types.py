"""The bus contract: notices, request/reply and subject streams between processes.

Two implementations keep the same semantics: NATS between processes and hosts, and an in-process
broker when everything is folded into one process (edge profile, tests). Notices are
fire-and-forget; ``request`` waits for one reply, and fails at once when nobody serves the subject
(NATS's "no responders"), so a caller can tell "no agent" from "a slow agent". Streams with flow
control are built on these in ``services.bus.streams``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

Handler = Callable[[str, bytes], Awaitable[None]]  # (subject, payload)
Responder = Callable[[str, bytes], Awaitable[bytes]]  # (subject, request payload) -> reply payload


class BusError(Exception):
    """The bus is unreachable or refused us (the message never carries credentials)."""


class NoResponders(BusError):
    """A request found nobody serving its subject."""


class RequestTimeout(BusError):
    """A request was delivered but no reply came in time."""


class Subscription(Protocol):
    async def unsubscribe(self) -> None: ...


class Bus(Protocol):
    async def publish(self, subject: str, payload: bytes) -> None:
        """Send a notice; never blocks on slow subscribers, may drop when disconnected."""
        ...

    async def subscribe(self, subject: str, handler: Handler) -> Subscription:
        """Call ``handler`` for each notice on ``subject`` (NATS wildcards allowed)."""
        ...

    async def request(self, subject: str, payload: bytes, *, within: float) -> bytes:
        """Send ``payload`` to one server of ``subject`` and return its reply.

        Raises ``NoResponders`` when nobody serves the subject, ``RequestTimeout`` when no reply
        comes within ``within`` seconds."""
        ...

    async def serve(self, subject: str, responder: Responder) -> Subscription:
        """Answer requests on ``subject``: the responder's return value is the reply. Requests of
        one subscription are answered one at a time, so a responder must be quick."""
        ...

    def new_inbox(self) -> str:
        """A fresh, unique subject to receive on (NATS's ``_INBOX.<id>``)."""
        ...

    async def close(self) -> None: ...
