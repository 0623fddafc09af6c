"""SPDY/3.1 over a plain HTTP/1.1 upgrade: how kubectl 1.20 runs exec, attach and port-forward.

Such a kubectl sends ``POST .../exec`` (or attach, portforward) with ``Connection: Upgrade``,
``Upgrade: SPDY/3.1`` and one ``X-Stream-Protocol-Version`` header per protocol it speaks
(``v4.channel.k8s.io`` ... for exec and attach, ``portforward.k8s.io`` for port-forward). The server
answers ``101 Switching Protocols`` with ``Upgrade: SPDY/3.1``, ``Connection: Upgrade`` and the chosen
``X-Stream-Protocol-Version``, and from then on the connection carries a SPDY session (``spdy``) in
which the client opens the streams (``remotecommand``, ``portforward`` relay them to the agent).

ASGI has no such upgrade: uvicorn passes anything but ``Upgrade: websocket`` to the app as a plain
request and keeps the connection. So the hand-over happens one level down, in uvicorn's HTTP
protocol, the way uvicorn itself hands a WebSocket upgrade to its WebSocket protocol:
``with_spdy_upgrades`` subclasses the HTTP protocol class (httptools or h11) so that an upgrade to
SPDY/3.1 replaces it on the transport with ``UpgradeProtocol``. That one calls the same ASGI app
with a ``spdy`` scope (an HTTP scope with that type), so authentication, authorization and the
pod checks run in the app exactly as for a WebSocket (``websocket.serve_upgrade``), and errors
before the switch are ordinary HTTP responses with a ``Status`` body. The messages between the two
halves mirror ASGI's WebSocket ones:

- to the app: ``spdy.connect`` once, then ``spdy.receive`` (``bytes``) until ``spdy.disconnect``;
- from the app: ``spdy.accept`` (``headers``: the 101's extra headers), then ``spdy.send``
  (``bytes``) and ``spdy.close``; or, instead of accepting, ``spdy.response`` (``status``,
  ``headers``, ``body``), after which the connection closes.

Backpressure: reading pauses while more than ``HIGH_WATER`` received bytes wait for the app, and
``spdy.send`` waits while the transport's write buffer is full. The connection is one of uvicorn's
(``server_state.connections``), so a server shutdown closes it, and the app's task is one of its
tasks, cancelled after the graceful-shutdown timeout like any request's.
"""

from __future__ import annotations

import asyncio
import collections
import http
import logging
import urllib.parse
from typing import Any

import orjson

from services.apiserver import websocket
from services.machinery import errors

log = logging.getLogger(__name__)

UPGRADE = b"spdy/3.1"  # the Upgrade header's value, lowercased as uvicorn compares it
PROTOCOL_HEADER = "x-stream-protocol-version"
HIGH_WATER = 256 * 1024  # received bytes waiting for the app before reading pauses


def negotiate(offered: list[str], supported: tuple[str, ...]) -> str:
    """The first protocol the client offered that we support, as Kubernetes' ``httpstream.Handshake``.

    400 when the client offered none (it must), 403 when none of its protocols is ours.
    """
    if not offered:
        raise errors.bad_request(f"unable to upgrade: {PROTOCOL_HEADER.title()} is required")
    for protocol in offered:
        if protocol in supported:
            return protocol
    raise errors.ApiError(
        403, "Forbidden",
        f"unable to upgrade: unable to negotiate protocol: client supports {offered}, "
        f"server accepts {list(supported)}",
    )  # fmt: skip


# -- the app's side -----------------------------------------------------------------------------------


class Connection(websocket.Connection):
    """The app's view of one upgrade: a ``websocket.Connection`` with SPDY's handshake, so the same
    code serves both. The offered protocols are the ``X-Stream-Protocol-Version`` headers."""

    kind = "spdy"

    def __init__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        super().__init__(scope, receive, send)
        self.subprotocols = [
            part.strip()
            for name, value in scope.get("headers") or ()
            if name.decode("latin-1").lower() == PROTOCOL_HEADER
            for part in value.decode("latin-1").split(",")
            if part.strip()
        ]

    async def accept(self, subprotocol: str | None) -> None:
        headers = [(PROTOCOL_HEADER.encode(), subprotocol.encode())] if subprotocol else []
        await self._send({"type": "spdy.accept", "headers": headers})
        self.accepted = True

    async def deny(self, exc: errors.ApiError) -> None:
        body = orjson.dumps(exc.status())
        await self._send({
            "type": "spdy.response", "status": exc.code, "body": body,
            "headers": [(b"content-type", b"application/json")],
        })  # fmt: skip
        self.closed = True


async def handle(app: Any, scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ASGI entry for ``spdy`` scopes (``app`` is the ``ApiApp``)."""
    await websocket.serve_upgrade(app, Connection(scope, receive, send), _dispatch)


async def _dispatch(ctx: Any, connection: Connection) -> None:
    from services.apiserver import portforward, remotecommand

    if ctx.info.subresource == "portforward":
        await portforward.serve_spdy(ctx, connection)
    else:
        await remotecommand.serve_spdy(ctx, connection)


# -- uvicorn's side -----------------------------------------------------------------------------------


def with_spdy_upgrades(protocol_class: type) -> type:
    """A subclass of uvicorn's HTTP protocol ``protocol_class`` that hands SPDY/3.1 upgrades over."""

    class SpdyUpgrades(protocol_class):  # type: ignore[valid-type,misc]
        def _should_upgrade(self) -> bool:
            return self._get_upgrade() == UPGRADE or super()._should_upgrade()

        def handle_websocket_upgrade(self, *event: Any) -> None:
            # uvicorn calls this for every upgrade _should_upgrade accepts; h11 passes its Request.
            if self._get_upgrade() != UPGRADE:
                super().handle_websocket_upgrade(*event)
                return
            self.connections.discard(self)
            target = event[0].target if event else self.url
            protocol = UpgradeProtocol(self.app, _scope(self.scope, target), server_state=self.server_state)
            protocol.connection_made(self.transport)
            self.transport.set_protocol(protocol)

    SpdyUpgrades.__name__ = SpdyUpgrades.__qualname__ = f"SpdyUpgrades{protocol_class.__name__}"
    return SpdyUpgrades


def _scope(http_scope: dict[str, Any], target: bytes) -> dict[str, Any]:
    raw_path, _, query = target.partition(b"?")
    path = urllib.parse.unquote(raw_path.decode("ascii", errors="replace"))
    return {**http_scope, "type": "spdy", "path": path, "raw_path": raw_path, "query_string": query}


class UpgradeProtocol(asyncio.Protocol):
    """The connection after an ``Upgrade: SPDY/3.1`` request: runs the app on its ``spdy`` scope."""

    def __init__(self, app: Any, scope: dict[str, Any], *, server_state: Any) -> None:
        self._app = app
        self._scope = scope
        self._server_state = server_state
        self._transport: asyncio.Transport | None = None
        self._received: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._arrived = asyncio.Event()  # data arrived or the connection was lost
        self._writable = asyncio.Event()  # cleared while the transport's write buffer is full
        self._writable.set()
        self._connected = False  # spdy.connect delivered
        self._lost = False
        self._switched = False  # the 101 (or a refusal) went out

    # -- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._server_state.connections.add(self)
        task = asyncio.get_running_loop().create_task(self._run(), name=f"spdy {self._scope['path']}")
        self._server_state.tasks.add(task)
        task.add_done_callback(self._server_state.tasks.discard)

    def data_received(self, data: bytes) -> None:
        self._received.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER and self._transport is not None:
            self._transport.pause_reading()
        self._arrived.set()

    def eof_received(self) -> bool | None:
        return None  # the client's half-close ends the session: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._server_state.connections.discard(self)
        self._arrived.set()
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: the session ends with its connection."""
        if self._transport is not None:
            self._transport.close()

    # -- the app ------------------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._app(self._scope, self._receive, self._send)
        except Exception:  # the app answers its own errors; this is a bug
            log.exception("internal error serving SPDY upgrade %s", self._scope.get("path"))
            if not self._switched:
                self._respond(500, [], b"")
        finally:
            self._close()

    async def _receive(self) -> dict[str, Any]:
        if not self._connected:
            self._connected = True
            return {"type": "spdy.connect"}
        while not self._received:
            if self._lost:
                return {"type": "spdy.disconnect"}
            self._arrived.clear()
            await self._arrived.wait()
        data = b"".join(self._received)
        self._received.clear()
        self._buffered = 0
        if self._transport is not None and not self._lost:
            self._transport.resume_reading()
        return {"type": "spdy.receive", "bytes": data}

    async def _send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "spdy.accept":
            self._switch(message.get("headers") or [])
        elif kind == "spdy.response":
            self._respond(message["status"], message.get("headers") or [], message.get("body") or b"")
            self._close()
        elif kind == "spdy.send":
            if self._lost:
                raise ConnectionResetError("the client closed the connection")
            await self._writable.wait()
            self._write(message["bytes"])
        elif kind == "spdy.close":
            self._close()

    def _switch(self, headers: list[tuple[bytes, bytes]]) -> None:
        lines = [b"HTTP/1.1 101 Switching Protocols", b"Connection: Upgrade", b"Upgrade: SPDY/3.1"]
        lines += [name + b": " + value for name, value in headers]
        self._switched = True
        self._write(b"\r\n".join(lines) + b"\r\n\r\n")

    def _respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        lines = [f"HTTP/1.1 {status} {phrase}".encode(), *(name + b": " + value for name, value in headers)]
        lines += [b"Content-Length: " + str(len(body)).encode(), b"Connection: close"]
        self._switched = True
        self._write(b"\r\n".join(lines) + b"\r\n\r\n" + body)

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._lost:
            self._transport.write(data)

    def _close(self) -> None:
        # close() sends what is still buffered first, so a final Status is not lost
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()
