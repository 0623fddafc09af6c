"""The bus relayed over one WebSocket: how an agent on another machine reaches the bus.

The cluster's NATS listens on loopback only, and agents open no port and reach only the API
server's port, as with K3s's tunnel. So a remote agent dials ``wss://<server>/v1-k3s/bus`` with
its node certificate, and the API server relays: ``RelayServer`` runs there, on the server's own
bus, and ``RemoteBus`` is the agent's ``Bus``. The relay allows only subjects under one prefix
(the node's ``k3s.tunnel.<node>.``), so a node can serve and stream for itself and nothing else.

Frames are WebSocket binary messages: a 4-byte big-endian header length, a JSON header, then the
payload. Agent to server: ``sub`` (id, subject), ``unsub`` (id), ``pub`` (subject), ``serve`` (id,
subject), ``resp`` (rid). Server to agent: ``msg`` (id, subject), ``req`` (id, rid, subject), and
``err`` (message) before the server closes a session it refuses. A request to a served subject
becomes a ``req`` to the agent; the agent's ``resp`` with the same ``rid`` is the reply.

``RemoteBus`` redials with backoff when the connection drops (the API server restarted, or the load
balancer moved to another server) and renews its subscriptions; notices published meanwhile are
dropped, as a disconnected NATS client's are.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import struct
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from services.bus import types
from services.machinery import tasks

log = logging.getLogger(__name__)

LENGTH = struct.Struct(">I")
SUBPROTOCOL = "k3s-bus.v1"
REDIAL = (0.5, 10.0)  # seconds: first and longest wait before redialling
MAX_HEADER = 64 * 1024

Send = Callable[[bytes], Awaitable[None]]


class RelayError(types.BusError):
    """A frame the other side should not have sent (malformed, or a subject it may not use)."""


def encode(header: dict[str, Any], payload: bytes = b"") -> bytes:
    head = orjson.dumps(header)
    return LENGTH.pack(len(head)) + head + payload


def decode(frame: bytes) -> tuple[dict[str, Any], bytes]:
    if len(frame) < LENGTH.size:
        raise RelayError("relay frame too short")
    (size,) = LENGTH.unpack_from(frame)
    if size > MAX_HEADER or LENGTH.size + size > len(frame):
        raise RelayError("relay frame header length out of range")
    try:
        header = orjson.loads(frame[LENGTH.size : LENGTH.size + size])
    except orjson.JSONDecodeError:
        raise RelayError("relay frame header is not JSON") from None
    if not isinstance(header, dict) or not isinstance(header.get("op"), str):
        raise RelayError("relay frame header needs an op")
    return header, frame[LENGTH.size + size :]


# -- the API server's end ---------------------------------------------------------------------------


class RelayServer:
    """One agent's session: its frames become operations on ``bus``, confined to ``prefix``."""

    def __init__(self, bus: types.Bus, *, prefix: str, send: Send, reply_within: float = 30.0) -> None:
        self.bus = bus
        self.prefix = prefix
        self._send = send
        self._reply_within = reply_within
        self._subscriptions: dict[int, types.Subscription] = {}
        self._pending: dict[int, asyncio.Future[bytes]] = {}
        self._rids = itertools.count(1)

    async def handle(self, frame: bytes) -> None:
        """Apply one frame from the agent; ``RelayError`` for one it may not send."""
        header, payload = decode(frame)
        op = header["op"]
        if op == "resp":
            future = self._pending.pop(int(header.get("rid", 0)), None)
            if future is not None and not future.done():
                future.set_result(payload)
            return
        if op == "unsub":
            subscription = self._subscriptions.pop(int(header.get("id", 0)), None)
            if subscription is not None:
                await subscription.unsubscribe()
            return
        subject = self._allowed(header.get("subject"))
        if op == "pub":
            await self.bus.publish(subject, payload)
        elif op in ("sub", "serve"):
            sid = int(header.get("id", 0))
            if sid in self._subscriptions:
                raise RelayError(f"subscription id {sid} is in use")
            if op == "sub":
                self._subscriptions[sid] = await self.bus.subscribe(subject, self._forwarder(sid))
            else:
                self._subscriptions[sid] = await self.bus.serve(subject, self._responder(sid))
        else:
            raise RelayError(f"unknown relay op {op!r}")

    async def close(self) -> None:
        subscriptions, self._subscriptions = list(self._subscriptions.values()), {}
        for subscription in subscriptions:
            await subscription.unsubscribe()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(types.BusError("the agent's relay closed"))
        self._pending.clear()

    def _allowed(self, subject: Any) -> str:
        if not isinstance(subject, str) or not subject.startswith(self.prefix) or " " in subject:
            raise RelayError(f"subject {subject!r} is outside {self.prefix}*")
        return subject

    def _forwarder(self, sid: int) -> types.Handler:
        async def forward(subject: str, payload: bytes) -> None:
            await self._send(encode({"op": "msg", "id": sid, "subject": subject}, payload))

        return forward

    def _responder(self, sid: int) -> types.Responder:
        async def respond(subject: str, payload: bytes) -> bytes:
            rid = next(self._rids)
            future = self._pending[rid] = asyncio.get_running_loop().create_future()
            try:
                await self._send(encode({"op": "req", "id": sid, "rid": rid, "subject": subject}, payload))
                return await tasks.wait_for(future, self._reply_within)
            finally:
                self._pending.pop(rid, None)

        return respond


# -- the agent's end -----------------------------------------------------------------------------------


class _Registration:
    def __init__(self, bus: RemoteBus, sid: int, op: str, subject: str, callback: Any) -> None:
        self.bus, self.sid, self.op, self.subject, self.callback = bus, sid, op, subject, callback

    async def unsubscribe(self) -> None:
        if self.bus._registrations.pop(self.sid, None) is not None:
            await self.bus._send_quietly(encode({"op": "unsub", "id": self.sid}))


class RemoteBus:
    """A ``Bus`` whose operations travel to the API server's relay over one WebSocket."""

    def __init__(self, url: str, *, ssl_context: ssl.SSLContext | None, server_hostname: str | None = None) -> None:
        self.url = url
        self._ssl = ssl_context
        self._server_hostname = server_hostname
        self._registrations: dict[int, _Registration] = {}
        self._ids = itertools.count(1)
        self._socket: Any = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[Any] | None = None
        self._answers: set[asyncio.Task[Any]] = set()  # responders running; cancelled at close
        self._closed = False

    async def start(self) -> None:
        """Dial once (so that a wrong URL or credential is an error now), then keep the connection."""
        await self._dial()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"bus relay {self.url}")

    async def publish(self, subject: str, payload: bytes) -> None:
        await self._send_quietly(encode({"op": "pub", "subject": subject}, payload))

    async def subscribe(self, subject: str, handler: types.Handler) -> types.Subscription:
        return await self._register("sub", subject, handler)

    async def serve(self, subject: str, responder: types.Responder) -> types.Subscription:
        return await self._register("serve", subject, responder)

    async def request(self, subject: str, payload: bytes, *, within: float) -> bytes:
        raise types.BusError("an agent's relayed bus serves requests; it does not send them")

    def new_inbox(self) -> str:
        return f"_INBOX.{uuid.uuid4().hex}"

    async def close(self) -> None:
        self._closed = True
        running = [t for t in (self._task, *self._answers) if t is not None]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        if self._socket is not None:
            await self._socket.close()

    # -- the connection -------------------------------------------------------------------------

    async def _register(self, op: str, subject: str, callback: Any) -> types.Subscription:
        sid = next(self._ids)
        registration = self._registrations[sid] = _Registration(self, sid, op, subject, callback)
        await self._send_quietly(encode({"op": op, "id": sid, "subject": subject}))
        return registration

    async def _dial(self) -> None:
        from websockets.asyncio import client

        try:
            self._socket = await client.connect(
                self.url, ssl=self._ssl, server_hostname=self._server_hostname,
                subprotocols=[SUBPROTOCOL], max_size=None, open_timeout=10,  # type: ignore[list-item]
            )  # fmt: skip
        except (OSError, TimeoutError) as exc:
            raise types.BusError(f"cannot reach the bus relay at {self.url}: {exc}") from None
        except Exception as exc:  # websockets' handshake errors (a refused upgrade: 401, 403, 404)
            raise types.BusError(f"the bus relay at {self.url} refused us: {exc}") from None
        for registration in list(self._registrations.values()):  # renew after a redial
            await self._socket.send(encode({"op": registration.op, "id": registration.sid,
                                            "subject": registration.subject}))  # fmt: skip
        self._connected.set()

    async def _run(self) -> None:
        delay = REDIAL[0]
        while not self._closed:
            try:
                await self._read()
                delay = REDIAL[0]
            except types.BusError as exc:
                log.warning("bus relay: %s", exc)
            self._connected.clear()
            while not self._closed:
                await asyncio.sleep(delay)
                delay = min(delay * 2, REDIAL[1])
                try:
                    await self._dial()
                    log.info("bus relay: reconnected to %s", self.url)
                    break
                except types.BusError as exc:
                    log.debug("bus relay: %s", exc)

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for frame in self._socket:
                if isinstance(frame, bytes):
                    await self._dispatch(*decode(frame))
        except ConnectionClosed:
            pass
        if not self._closed:
            raise types.BusError(f"the connection to {self.url} closed")

    async def _dispatch(self, header: dict[str, Any], payload: bytes) -> None:
        registration = self._registrations.get(int(header.get("id", 0)))
        if header["op"] == "err":
            raise types.BusError(f"the relay refused us: {header.get('message', '')}")
        if registration is None:
            return
        if header["op"] == "msg":
            await registration.callback(header.get("subject", ""), payload)
        elif header["op"] == "req":
            # Answered in its own task: a slow responder must not hold up the other frames.
            task = asyncio.get_running_loop().create_task(self._answer(registration, header, payload))
            self._answers.add(task)
            task.add_done_callback(self._answers.discard)

    async def _answer(self, registration: _Registration, header: dict[str, Any], payload: bytes) -> None:
        try:
            reply = await registration.callback(header.get("subject", ""), payload)
        except Exception:
            log.exception("bus relay: the responder of %s failed", registration.subject)
            return
        await self._send_quietly(encode({"op": "resp", "rid": header.get("rid", 0)}, reply))

    async def _send_quietly(self, frame: bytes) -> None:
        """Send if connected; a frame sent while disconnected is dropped (renewals follow the redial)."""
        from websockets.exceptions import ConnectionClosed

        if self._socket is None or not self._connected.is_set():
            return
        try:
            await self._socket.send(frame)
        except ConnectionClosed:
            self._connected.clear()
