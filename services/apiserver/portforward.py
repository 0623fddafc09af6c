"""pods/portforward over WebSocket (the Python client's form), relayed through the tunnel.

``GET .../portforward?ports=p1,p2`` upgraded with ``v4.channel.k8s.io`` (or ``portforward.k8s.io``,
or a base64 variant). The i-th port has a data channel 2i and an error channel 2i+1; the first
message on each channel is the port number as two little-endian bytes, before any data. Each port
gets one connection to the pod, one tunnel stream to the agent; a connection failure or a broken
stream is reported as text on the port's error channel. The WebSocket closes when the client leaves
or when every port's connection has ended.

kubectl 1.31+ first offers ``SPDY/3.1+portforward.k8s.io``: SPDY/3.1 inside the WebSocket's binary
messages (``spdy``), with no ``ports`` parameter. Each connection kubectl accepts locally becomes two
SPDY streams sharing a ``requestid`` header: ``streamtype: error`` (which kubectl half-closes at once
and reads to its end) and ``streamtype: data``, both with a ``port`` header. As the kubelet does, one
connection to the pod per data stream, here one tunnel stream to the agent; a failure is written as
text on the error stream, and both streams end with FIN when the connection does. The session lives
until kubectl closes the WebSocket. kubectl 1.20 runs the same SPDY session on the connection
itself, after a plain ``Upgrade: SPDY/3.1`` with ``X-Stream-Protocol-Version: portforward.k8s.io``
(``spdyupgrade``, ``serve_spdy``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

from services.apiserver import context, spdy, spdyupgrade, streams, tunnel, websocket
from services.bus import streams as bus_streams
from services.machinery import errors, tasks

log = logging.getLogger(__name__)

PROTOCOLS = ("v4.channel.k8s.io", "portforward.k8s.io", "v4.base64.channel.k8s.io", "base64.channel.k8s.io")
DATA, ERROR = 0, 1  # the tunnel's port-forward channels
TUNNEL_PROTOCOL = "SPDY/3.1+portforward.k8s.io"
SPDY_PROTOCOLS = ("portforward.k8s.io",)  # X-Stream-Protocol-Version of the plain SPDY upgrade


def ports(ctx: context.Request) -> list[int]:
    found: list[int] = []
    for value in ctx.query.get("ports") or ctx.query.get("port") or ():
        for text in value.split(","):
            try:
                port = int(text.strip())
            except ValueError:
                raise errors.bad_request(f'invalid port "{text}" in query parameter "ports"') from None
            if not 0 < port < 65536:
                raise errors.bad_request(f"port {port} must be between 1 and 65535")
            found.append(port)
    if not found:
        raise errors.bad_request('query parameter "ports" is required: the ports to forward')
    return found


async def serve(ctx: context.Request, connection: websocket.Connection) -> None:
    if TUNNEL_PROTOCOL in connection.subprotocols:
        await _serve_spdy(ctx, connection)
        return
    wanted = ports(ctx)
    found = await streams.target(ctx, container=False)
    channels = websocket.Channels.negotiate(connection.subprotocols, PROTOCOLS)
    if channels is None or "SPDY" in channels.protocol:
        raise errors.bad_request("Upgrade request required")
    client = tunnel.for_api(ctx.api)
    opened: list[bus_streams.Stream | None] = []
    try:
        for port in wanted:
            opened.append(
                await client.open(
                    found.node, {"op": "portforward", **found.header, "port": port}, what="pods/portforward"
                )
            )
        await connection.accept(channels.protocol)
        for index, port in enumerate(wanted):
            for channel in (2 * index, 2 * index + 1):
                await connection.send(channels.encode(channel, port.to_bytes(2, "little")))
        await _relay(connection, opened, channels)
    finally:
        for stream in opened:
            if stream is not None:
                await stream.close()
        await connection.close()


async def _relay(
    connection: websocket.Connection, opened: list[bus_streams.Stream | None], channels: websocket.Channels
) -> None:
    outbound = [
        asyncio.create_task(
            _to_client(connection, stream, index, channels), name=f"port-forward {stream.name}"
        )
        for index, stream in enumerate(opened)
        if stream is not None
    ]
    inbound = asyncio.create_task(_from_client(connection, opened, channels), name="port-forward client")
    try:
        everything_sent = asyncio.gather(*outbound)
        await asyncio.wait({inbound, everything_sent}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (inbound, *outbound):
            task.cancel()
        for task in (inbound, *outbound):
            with contextlib.suppress(asyncio.CancelledError, bus_streams.StreamError):
                await task


async def _from_client(
    connection: websocket.Connection, opened: list[bus_streams.Stream | None], channels: websocket.Channels
) -> None:
    while (message := await connection.receive()) is not None:
        decoded = channels.decode(message)
        if decoded is None:
            continue
        channel, payload = decoded
        index, kind = divmod(channel, 2)
        if kind != 0 or index >= len(opened) or not payload:
            continue  # errors from the client, or a port we do not know: nothing to forward
        stream = opened[index]
        if stream is not None:
            try:
                await stream.send(DATA, payload)
            except bus_streams.StreamError:
                opened[index] = None  # that connection is over; the others go on


async def _to_client(
    connection: websocket.Connection, stream: bus_streams.Stream, index: int, channels: websocket.Channels
) -> None:
    async for frame in stream:
        if frame.closed or not frame.data:
            continue
        channel = 2 * index + (1 if frame.channel == ERROR else 0)
        await connection.send(channels.encode(channel, frame.data))
    if stream.error and stream.error != "closed":
        await connection.send(
            channels.encode(2 * index + 1, f"the stream to the node broke: {stream.error}".encode())
        )


# -- kubectl's form: SPDY/3.1 tunnelled in the WebSocket ----------------------------------------------


async def serve_spdy(ctx: context.Request, connection: streams.Upgraded) -> None:
    """kubectl 1.20's plain ``Upgrade: SPDY/3.1``: the same session, on the raw connection."""
    await _serve_spdy(ctx, connection, upgrade=True)


async def _serve_spdy(ctx: context.Request, connection: streams.Upgraded, *, upgrade: bool = False) -> None:
    found = await streams.target(ctx, container=False)  # before accepting: errors go out as a Status
    protocol = spdyupgrade.negotiate(connection.subprotocols, SPDY_PROTOCOLS) if upgrade else TUNNEL_PROTOCOL
    forwarder = _SpdyForwarder(found, tunnel.for_api(ctx.api), connection)
    await connection.accept(protocol)
    try:
        await forwarder.run()
    finally:
        await connection.close()


class _SpdyForwarder:
    """One kubectl port-forward session: a task per forwarded connection, all ended with the session."""

    def __init__(
        self, found: streams.Target, client: tunnel.TunnelClient, connection: streams.Upgraded
    ) -> None:
        self._found = found
        self._client = client
        self._connection = connection
        self._session = spdy.Session(connection.send, on_stream=self._on_stream)
        self._error_streams: dict[str, spdy.Stream] = {}  # by request id
        self._tasks: set[asyncio.Task[None]] = set()
        md = found.pod.get("metadata") or {}
        self._pod = f"{md.get('namespace', '')}/{md.get('name', '')}"

    async def run(self) -> None:
        try:
            while (message := await self._connection.receive()) is not None:
                if isinstance(message, str):
                    raise spdy.SpdyError("a text message where SPDY frames were expected")
                await self._session.feed(message)
        except spdy.SpdyError as exc:
            log.info("port-forward to pod %s ended: %s", self._pod, exc)
            await self._session.goaway(spdy.GOAWAY_PROTOCOL_ERROR)
        finally:
            self._session.abort()
            await tasks.cancel_all(list(self._tasks))

    def _on_stream(self, stream: spdy.Stream) -> None:
        kind, request = stream.header("streamtype"), _request_id(stream)
        if kind == "error":
            stream.discard()  # kubectl writes nothing on it
            self._error_streams[request] = stream
            return
        if kind == "data":
            work = self._forward(stream, request)
        else:
            work = stream.reset(spdy.PROTOCOL_ERROR)
        name = f"port-forward {self._pod} #{request}"
        task = asyncio.get_running_loop().create_task(_logged(work, name), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _forward(self, data: spdy.Stream, request: str) -> None:
        """One forwarded connection, kubelet's way: errors as text on the error stream, then FIN on both."""
        try:
            port = _port(data)
            agent = await self._client.open(
                self._found.node, {"op": "portforward", **self._found.header, "port": port},
                what="pods/portforward",
            )  # fmt: skip
        except errors.ApiError as exc:
            await self._report(request, exc.message.encode())
        else:
            try:
                await self._splice(data, request, agent)
            finally:
                await agent.close()
        finally:
            data.discard()
            await data.close()
            error_stream = self._error_streams.pop(request, None)
            if error_stream is not None:
                await error_stream.close()

    async def _splice(self, data: spdy.Stream, request: str, agent: bus_streams.Stream) -> None:
        uploading = asyncio.create_task(_upload(data, agent), name=f"port-forward upload {agent.name}")
        try:
            async for frame in agent:
                if frame.closed or not frame.data:
                    continue
                if frame.channel == ERROR:
                    await self._report(request, frame.data)
                else:
                    await data.write(frame.data)
            if agent.error and agent.error != "closed":
                await self._report(request, f"the stream to the node broke: {agent.error}".encode())
        except spdy.SpdyError:
            log.debug("kubectl reset the data stream of request %s to pod %s", request, self._pod)
        finally:
            await tasks.cancel_all([uploading])

    async def _report(self, request: str, message: bytes) -> None:
        error_stream = self._error_streams.get(request)
        if error_stream is None:
            log.info(
                "port-forward to pod %s, request %s: %s", self._pod, request, message.decode(errors="replace")
            )
            return
        with contextlib.suppress(spdy.SpdyError):
            await error_stream.write(message)


async def _logged(work: Coroutine[Any, Any, None], name: str) -> None:
    """One connection's task: a bug in it is logged once and ends that connection only."""
    try:
        await work
    except Exception:
        log.exception("%s failed", name)


async def _upload(data: spdy.Stream, agent: bus_streams.Stream) -> None:
    """kubectl -> pod, until kubectl's FIN (half-close the pod's side) or its reset (end it all)."""
    try:
        while chunk := await data.read():
            await agent.send(DATA, chunk)
        if data.was_reset:
            await agent.close()
        else:
            await agent.close_channel(DATA)
    except bus_streams.StreamError:
        return  # the agent's side ended; the other direction sees it too


def _request_id(stream: spdy.Stream) -> str:
    """The pair's key; without the header, kubelet pairs an error stream with the data stream after it."""
    return stream.header("requestid") or str(
        stream.id - 2 if stream.header("streamtype") == "data" else stream.id
    )


def _port(stream: spdy.Stream) -> int:
    text = stream.header("port")
    try:
        port = int(text)
    except ValueError:
        raise errors.bad_request(f'invalid port "{text}" in the stream\'s port header') from None
    if not 0 < port < 65536:
        raise errors.bad_request(f"port {port} must be between 1 and 65535")
    return port
