"""Bidirectional byte streams over bus subjects, with flow control: the agent tunnel's transport.

A stream is opened with one request and then carried by two subjects, one per direction::

    opener                                   server
      subscribe <prefix>.<sid>.out
      request <subject> {"sid", "header"} --> accept(header): refuse, or subscribe <prefix>.<sid>.in
                                          <-- {"ok": true} | {"error": {"code", "reason", "message"}}
      publish <prefix>.<sid>.in   frames  --> session(stream)
      frames <-- publish <prefix>.<sid>.out

Frames are ``kind (1 byte) | channel (1 byte) | sequence (4 bytes, big-endian) | payload``:
``D`` data on a channel, ``C`` the sender closed a channel, ``W`` a window grant (4-byte count of
bytes), ``E`` the end of the stream (payload: why, empty when normal), ``P`` a heartbeat.

Flow control is credit based, as in HTTP/2: a sender may have at most ``window`` data bytes that
the receiver's application has not yet consumed; the receiver grants credit back as it reads. So a
slow WebSocket client slows the process on the node instead of filling memory, and neither the
in-memory broker's queues nor NATS's slow-consumer limit ever overflow.

Both transports keep order between one publisher and one subscriber, so frames carry a sequence
number only to detect loss (NATS may drop under pressure or across a reconnect): a gap ends the
stream with an error. Heartbeats every ``heartbeat`` seconds let each side notice that the other is
gone (an agent killed with -9 sends no ``E``) after ``DEAD_AFTER`` silent periods.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import re
import struct
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from services.bus import types
from services.machinery import tasks

logger = logging.getLogger(__name__)

HEADER = struct.Struct(">cBI")
MAX_FRAME = 32 * 1024  # payload bytes per data frame (well under NATS's 1 MiB message limit)
WINDOW = 256 * 1024  # unconsumed data bytes a sender may have in flight
HEARTBEAT = 5.0  # seconds between heartbeats on an idle stream
DEAD_AFTER = 4  # silent heartbeat periods after which the peer counts as gone
DATA, CLOSE, GRANT, END, PING = b"D", b"C", b"W", b"E", b"P"


class StreamError(types.BusError):
    """The stream broke: the peer vanished, frames were lost, or the peer ended it with an error."""


class Refused(types.BusError):
    """The server refused to open a stream; ``code`` and ``reason`` follow Kubernetes' Status."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message


@dataclasses.dataclass(frozen=True, slots=True)
class Frame:
    channel: int
    data: bytes = b""
    closed: bool = False  # the peer closed this channel (no more data on it)


class Stream:
    """One end of a stream. ``receive`` yields frames in order; ``send`` waits for credit."""

    def __init__(
        self,
        bus: types.Bus,
        *,
        send_to: str,
        receive_on: str,
        window: int = WINDOW,
        heartbeat: float = HEARTBEAT,
    ) -> None:
        self.name = receive_on
        self._bus = bus
        self._send_to = send_to
        self._receive_on = receive_on
        self._window = window
        self._heartbeat = heartbeat
        self._credit = window
        self._credit_changed = asyncio.Event()
        self._frames: collections.deque[Frame | None] = collections.deque()
        self._arrived = asyncio.Event()
        self._unacknowledged = 0  # consumed bytes not yet granted back
        self._send_seq = 0
        self._receive_seq = 0
        self._last_heard = self._last_sent = time.monotonic()
        self._send_lock = asyncio.Lock()
        self._subscription: types.Subscription | None = None
        self._pulse: asyncio.Task[None] | None = None
        self.peer_ended = asyncio.Event()
        self.error = ""  # why the stream broke, when it did
        self._closed = False

    async def start(self) -> None:
        """Subscribe and start heartbeats; frames published to us before this are lost."""
        self._subscription = await self._bus.subscribe(self._receive_on, self._on_message)
        self._pulse = tasks.guarded(self._beat(), name=f"stream heartbeat {self.name}")

    # -- sending ---------------------------------------------------------------------------------

    async def send(self, channel: int, data: bytes) -> None:
        """Send ``data`` on ``channel``, waiting for the peer's credit; raise StreamError once it ended."""
        view = memoryview(data)
        while view:
            await self._wait_credit()
            size = min(len(view), MAX_FRAME, self._credit)
            self._credit -= size
            await self._publish(DATA, channel, bytes(view[:size]))
            view = view[size:]

    async def close_channel(self, channel: int) -> None:
        """Tell the peer no more data comes on ``channel`` (a half close, e.g. stdin's end)."""
        self._check_alive()
        await self._publish(CLOSE, channel, b"")

    async def _wait_credit(self) -> None:
        while True:
            self._check_alive()
            if self._credit > 0:
                return
            self._credit_changed.clear()
            waiter = asyncio.ensure_future(self._credit_changed.wait())
            ended = asyncio.ensure_future(self.peer_ended.wait())
            try:
                await asyncio.wait({waiter, ended}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                ended.cancel()

    def _check_alive(self) -> None:
        if self._closed:
            raise StreamError(f"stream {self.name} is closed")
        if self.peer_ended.is_set():
            raise StreamError(self.error or f"the peer ended stream {self.name}")

    async def _publish(self, kind: bytes, channel: int, payload: bytes) -> None:
        # One lock so sequence numbers go out in the order they were taken.
        async with self._send_lock:
            self._send_seq += 1
            self._last_sent = time.monotonic()
            await self._bus.publish(self._send_to, HEADER.pack(kind, channel, self._send_seq) + payload)

    # -- receiving -------------------------------------------------------------------------------

    async def receive(self) -> Frame | None:
        """The next frame, or None once the peer ended the stream (``error`` says why, if it broke)."""
        while not self._frames:
            self._arrived.clear()
            await self._arrived.wait()
        frame = self._frames.popleft()
        if frame is None:
            self._frames.appendleft(None)  # stays ended for later calls
            return None
        await self._consumed(len(frame.data))
        return frame

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> Frame:
        frame = await self.receive()
        if frame is None:
            raise StopAsyncIteration
        return frame

    async def _consumed(self, size: int) -> None:
        self._unacknowledged += size
        if self._unacknowledged >= self._window // 2 and not self._closed and not self.peer_ended.is_set():
            grant, self._unacknowledged = self._unacknowledged, 0
            try:
                await self._publish(GRANT, 0, grant.to_bytes(4, "big"))
            except types.BusError as exc:
                self._end(f"cannot grant credit on stream {self.name}: {exc}")

    async def _on_message(self, subject: str, payload: bytes) -> None:
        if len(payload) < HEADER.size or self.peer_ended.is_set():
            return
        kind, channel, seq = HEADER.unpack_from(payload)
        self._last_heard = time.monotonic()
        if seq != self._receive_seq + 1:
            self._end(f"stream {self.name} lost {seq - self._receive_seq - 1} frames")
            return
        self._receive_seq = seq
        body = payload[HEADER.size :]
        if kind == DATA:
            self._push(Frame(channel, body))
        elif kind == CLOSE:
            self._push(Frame(channel, closed=True))
        elif kind == GRANT:
            self._credit += int.from_bytes(body[:4], "big")
            self._credit_changed.set()
        elif kind == END:
            self._end(body.decode(errors="replace"))

    def _push(self, frame: Frame | None) -> None:
        self._frames.append(frame)
        self._arrived.set()

    def _end(self, error: str) -> None:
        if self.peer_ended.is_set():
            return
        self.error = error
        self.peer_ended.set()
        self._push(None)

    async def _beat(self) -> None:
        # Runs until close() cancels it, even after the peer ended: close() is the one way out.
        while True:
            await asyncio.sleep(self._heartbeat)
            if self.peer_ended.is_set():
                continue
            now = time.monotonic()
            if now - self._last_heard > self._heartbeat * DEAD_AFTER:
                self._end(f"the peer of stream {self.name} stopped answering")
            elif now - self._last_sent >= self._heartbeat:
                try:
                    await self._publish(PING, 0, b"")
                except types.BusError as exc:
                    logger.debug("heartbeat on %s not sent: %s", self.name, exc)

    # -- the end ---------------------------------------------------------------------------------

    async def close(self, error: str = "") -> None:
        """End the stream (idempotent): tell the peer, unless it ended first, and let go of the subject."""
        if self._closed:
            return
        self._closed = True
        if not self.peer_ended.is_set():
            try:
                await self._publish(END, 0, error.encode())
            except types.BusError as exc:
                logger.debug("end of stream %s not sent: %s", self.name, exc)
        self._end(error or "closed")
        if self._pulse is not None:
            await tasks.cancel_all([self._pulse])
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None


# -- opening and serving ----------------------------------------------------------------------------

Session = Callable[[Stream], Awaitable[None]]
Accept = Callable[[str, dict[str, Any]], Awaitable[Session]]  # (subject, header) -> the session to run
_SID = re.compile(r"^[0-9a-f]{32}$")


async def open_stream(
    bus: types.Bus,
    subject: str,
    header: dict[str, Any],
    *,
    prefix: str,
    within: float,
    heartbeat: float = HEARTBEAT,
) -> Stream:
    """Ask the server of ``subject`` for a stream; raise ``Refused``, ``NoResponders`` or ``RequestTimeout``."""
    sid = uuid.uuid4().hex
    stream = Stream(bus, send_to=f"{prefix}.{sid}.in", receive_on=f"{prefix}.{sid}.out", heartbeat=heartbeat)
    await stream.start()
    try:
        reply = await bus.request(subject, orjson.dumps({"sid": sid, "header": header}), within=within)
        answer = orjson.loads(reply)
        if not answer.get("ok"):
            error = answer.get("error") or {}
            raise Refused(
                int(error.get("code", 500)), str(error.get("reason", "")), str(error.get("message", ""))
            )
    except BaseException:
        await stream.close()
        raise
    return stream


class StreamServer:
    """Serves streams opened on ``subject``: ``accept`` checks the header and returns the session to run.

    Each session runs as a named task owned by this server; ``stop`` cancels those left. ``accept``
    must be quick (requests on the subject are answered one at a time): the slow part goes in the
    session.
    """

    def __init__(
        self, bus: types.Bus, *, subject: str, prefix: str, accept: Accept, heartbeat: float = HEARTBEAT
    ) -> None:
        self.subject = subject
        self._bus = bus
        self._prefix = prefix
        self._accept = accept
        self._heartbeat = heartbeat
        self._subscription: types.Subscription | None = None
        self._sessions: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._subscription = await self._bus.serve(self.subject, self._on_request)

    async def stop(self) -> None:
        if self._subscription is not None:
            subscription, self._subscription = self._subscription, None
            await subscription.unsubscribe()
        await tasks.cancel_all(list(self._sessions))
        self._sessions.clear()

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    async def _on_request(self, subject: str, payload: bytes) -> bytes:
        try:
            request = orjson.loads(payload)
            sid, header = request["sid"], request["header"]
            if not isinstance(sid, str) or not _SID.match(sid) or not isinstance(header, dict):
                raise ValueError("malformed stream request")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            return _refusal(400, "BadRequest", f"malformed stream request: {exc}")
        try:
            session = await self._accept(subject, header)
        except Refused as exc:
            return _refusal(exc.code, exc.reason, exc.message)
        except Exception as exc:
            logger.exception("opening a stream on %s failed", subject)
            return _refusal(500, "InternalError", f"the node could not open the stream: {exc}")
        stream = Stream(
            self._bus, send_to=f"{self._prefix}.{sid}.out", receive_on=f"{self._prefix}.{sid}.in",
            heartbeat=self._heartbeat,
        )  # fmt: skip
        await stream.start()
        task = asyncio.get_running_loop().create_task(
            self._run(session, stream), name=f"stream session {sid}"
        )
        self._sessions.add(task)
        task.add_done_callback(self._sessions.discard)
        return orjson.dumps({"ok": True})

    async def _run(self, session: Session, stream: Stream) -> None:
        error = ""
        try:
            await session(stream)
        except StreamError as exc:
            logger.debug("stream %s ended: %s", stream.name, exc)
        except Exception as exc:
            logger.exception("stream session %s failed", stream.name)
            error = f"the session failed on the node: {exc}"
        finally:
            await stream.close(error)


def _refusal(code: int, reason: str, message: str) -> bytes:
    return orjson.dumps({"ok": False, "error": {"code": code, "reason": reason, "message": message}})
