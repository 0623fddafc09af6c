"""WebSocket requests: authenticate and authorize as any request, then exec, attach or port-forward.

uvicorn hands the app a ``websocket`` scope after the HTTP handshake arrives and before it answers
it. Everything that can fail before streaming (authentication, authorization, the pod, its node,
the agent's answer) is answered as plain HTTP with a ``Status`` body through ASGI's
``websocket.http.response`` extension, so clients see the same errors as without WebSocket (kubectl
then falls back to its SPDY request, which gets the same answer). Only then is the upgrade accepted.

Authorization follows kube-apiserver 1.31+: an upgrade is a ``GET``, authorized as ``get`` on the
subresource like any read, and for exec, attach and portforward also as ``create`` (the verb their
``POST`` form always had), so read-only users cannot exec over WebSocket.

The channel framing of Kubernetes' WebSocket protocols lives in ``Channels``: each message is a
channel number and a payload, in binary (``v5.channel.k8s.io``, ``v4.channel.k8s.io``, ... and
``channel.k8s.io``) or as text with base64 payloads (``base64.channel.k8s.io`` and its versions).

kubectl's port-forward offers ``SPDY/3.1+portforward.k8s.io``, which is not an RFC 7230 token (the
``/``): the ``websockets`` library behind uvicorn refuses such a handshake with 400 before the app
sees it. ``with_kubernetes_subprotocols`` wraps uvicorn's protocol class so that the offer is only
split on commas, as Kubernetes (gorilla/websocket) does; the app still picks the answer on accept.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import logging
import urllib.parse
from typing import Any

import orjson
from websockets import server as ws_server

from services.apiserver import request
from services.apiserver.auth import types as auth_types
from services.machinery import errors

log = logging.getLogger(__name__)

SUBRESOURCES = frozenset({"exec", "attach", "portforward"})


class Connection:
    """One ASGI WebSocket: deny with an HTTP response before ``accept``, or exchange messages after."""

    kind = "websocket"  # the prefix of the ASGI message types (``spdyupgrade.Connection``: "spdy")

    def __init__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.scope = scope
        self._receive = receive
        self._send = send
        self.accepted = False
        self.closed = False
        self.subprotocols: list[str] = [p.strip() for p in scope.get("subprotocols") or () if p.strip()]

    async def wait_connect(self) -> bool:
        message = await self._receive()
        return message["type"] == f"{self.kind}.connect"

    async def accept(self, subprotocol: str | None) -> None:
        message: dict[str, Any] = {"type": "websocket.accept"}
        if subprotocol:
            message["subprotocol"] = subprotocol
        await self._send(message)
        self.accepted = True

    async def deny(self, exc: errors.ApiError) -> None:
        """Refuse the upgrade with ``exc`` as an HTTP ``Status`` response (or a bare 403 without the extension)."""
        if "websocket.http.response" not in (self.scope.get("extensions") or {}):
            await self._send({"type": "websocket.close", "code": 1008})
            return
        body = orjson.dumps(exc.status())
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await self._send({"type": "websocket.http.response.start", "status": exc.code, "headers": headers})
        await self._send({"type": "websocket.http.response.body", "body": body})
        self.closed = True

    async def receive(self) -> bytes | str | None:
        """The next message's payload; None once the client has gone."""
        if self.closed:
            return None
        message = await self._receive()
        if message["type"] == f"{self.kind}.disconnect":
            self.closed = True
            return None
        data = message.get("bytes")
        return data if data is not None else message.get("text") or ""

    async def send(self, payload: bytes | str) -> None:
        if self.closed:
            return
        key = "bytes" if isinstance(payload, bytes) else "text"
        try:
            await self._send({"type": f"{self.kind}.send", key: payload})
        except OSError:  # the client went away mid-write (uvicorn raises ClientDisconnected, an OSError)
            self.closed = True

    async def close(self, code: int = 1000) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            await self._send({"type": f"{self.kind}.close", "code": code})
        except OSError:
            log.debug("client left before the close of its WebSocket")


class _CommaSplitServerProtocol(ws_server.ServerProtocol):
    def process_subprotocol(self, headers: Any) -> None:
        # uvicorn hands the offered names to the app (split on commas) and adds the accepted one to
        # the response itself, so nothing is chosen here: only the strict token parsing is skipped.
        return None


def with_kubernetes_subprotocols(protocol_class: type) -> type:
    """uvicorn's ``websockets-sansio`` protocol, accepting subprotocol names such as ``SPDY/3.1+...``.

    Other implementations are returned as they are: uvicorn's legacy ``websockets`` one already leaves
    the header to the app.
    """
    from uvicorn.protocols.websockets import websockets_sansio_impl

    if not issubclass(protocol_class, websockets_sansio_impl.WebSocketsSansIOProtocol):
        return protocol_class
    if issubclass(protocol_class, _KubernetesSubprotocols):
        return protocol_class

    class Lenient(_KubernetesSubprotocols, protocol_class):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            strict = self.conn
            self.conn = _CommaSplitServerProtocol(
                extensions=strict.available_extensions,
                max_size=(strict.max_message_size, strict.max_fragment_size),
                logger=strict.logger,
            )

    Lenient.__name__ = Lenient.__qualname__ = f"KubernetesSubprotocols{protocol_class.__name__}"
    return Lenient


class _KubernetesSubprotocols:
    """Marks a protocol class already wrapped by ``with_kubernetes_subprotocols``."""


@dataclasses.dataclass(frozen=True, slots=True)
class Channels:
    """Kubernetes' channel framing for one negotiated subprotocol."""

    protocol: str
    base64: bool = False
    version: int = 1  # v1 is channel.k8s.io; v4 and up carry Status JSON on the error channel; v5 has close

    @classmethod
    def negotiate(cls, offered: list[str], supported: tuple[str, ...]) -> Channels | None:
        """The first of ``supported`` (our preference) the client offered; v1 binary when it offered none."""
        if not [p for p in offered if p.endswith("channel.k8s.io") or p.endswith("portforward.k8s.io")]:
            return cls("", version=1)
        for protocol in supported:
            if protocol in offered:
                version = int(protocol[1]) if protocol.startswith("v") and protocol[1].isdigit() else 1
                return cls(protocol, base64="base64" in protocol, version=version)
        return None

    def encode(self, channel: int, data: bytes) -> bytes | str:
        if self.base64:
            return str(channel) + base64.b64encode(data).decode("ascii")
        return bytes([channel]) + data

    def decode(self, message: bytes | str) -> tuple[int, bytes] | None:
        """(channel, payload) of a client message, or None for one that carries nothing."""
        if isinstance(message, str):
            if not message:
                return None
            if not self.base64:  # the Python client sends str stdin as text frames: same framing
                return ord(message[0]), message[1:].encode()
            try:
                return int(message[0]), base64.b64decode(message[1:])
            except (ValueError, binascii.Error):
                return None
        if not message:
            return None
        return message[0], bytes(message[1:])


async def handle(app: Any, scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ASGI entry for ``websocket`` scopes (``app`` is the ``ApiApp``)."""
    await serve_upgrade(app, Connection(scope, receive, send), _dispatch)


async def serve_upgrade(app: Any, connection: Any, dispatch: Any) -> None:
    """Authenticate and authorize an upgrade, then ``dispatch(ctx, connection)``; errors before the
    switch are answered as HTTP with a ``Status`` body (``connection.deny``). ``connection`` is a
    ``Connection`` or its SPDY twin (``spdyupgrade.Connection``)."""
    if not await connection.wait_connect():
        return
    scope = connection.scope
    try:
        ctx = await _authorized_context(app, scope)
        await dispatch(ctx, connection)
    except errors.ApiError as exc:
        if not connection.accepted:
            await connection.deny(exc)
        else:
            await connection.close(1011)
    except Exception:  # a bug: logged once here, never a traceback to the client
        log.exception("internal error serving WebSocket %s", scope.get("path"))
        if not connection.accepted:
            await connection.deny(errors.internal("an unexpected error occurred; see the API server log"))
        else:
            await connection.close(1011)


async def _dispatch(ctx: Any, connection: Connection) -> None:
    from services.apiserver import portforward, remotecommand

    if ctx.info.subresource == "portforward":
        await portforward.serve(ctx, connection)
    else:
        await remotecommand.serve(ctx, connection)


async def _authorized_context(app: Any, scope: dict[str, Any]) -> Any:
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    user = await app.authenticator.authenticate(app.credentials(scope))
    if user is None:
        raise errors.unauthorized()
    user = await app.acting_user(user, scope)
    query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    # A WebSocket upgrade is a GET; kubectl's SPDY upgrade a POST (authorized as create only).
    info = request.parse(scope.get("method", "GET"), scope["path"], query)
    if not (
        info.resource_request
        and info.group == ""
        and info.resource == "pods"
        and info.subresource in SUBRESOURCES
    ):
        raise errors.bad_request(
            f"upgrades are served only for pods/exec, pods/attach and pods/portforward, not {scope['path']}"
        )
    ctx = app._context(info, query, headers, b"", user)  # the same lookup as any request
    attributes = auth_types.Attributes(
        user=user, verb=info.verb, namespace=info.namespace, api_group=info.group, api_version=info.version,
        resource=info.resource, subresource=info.subresource, name=info.name, path=info.path,
    )  # fmt: skip
    await app._authorize(attributes)
    if info.verb != "create":
        await app._authorize(dataclasses.replace(attributes, verb="create"))
    return ctx
