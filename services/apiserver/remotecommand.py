"""pods/exec and pods/attach over WebSocket, relayed to the node's agent through the tunnel.

Channels as Kubernetes numbers them: 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize. The agent
sends the outcome as a ``Status`` on the error channel just before it ends the stream; v4 and v5
clients get it as JSON (kubectl reads the exit code from its ``ExitCode`` cause, the Python client
too), older protocols get only a failure's message as text. In v5 the client ends stdin with the
close message ``[255, 0]``; when the client leaves, the stream ends and the agent kills an exec'd
command (an attached container lives on).

kubectl 1.20 (and any kubectl without WebSocket streaming) speaks SPDY/3.1 over a plain upgrade (``spdyupgrade``): the same
channels as SPDY streams, see ``serve_spdy``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson

from services.apiserver import context, request, spdy, spdyupgrade, streams, tunnel, websocket
from services.bus import streams as bus_streams
from services.machinery import errors, tasks

log = logging.getLogger(__name__)

PROTOCOLS = (
    "v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io",
    "v4.base64.channel.k8s.io", "base64.channel.k8s.io",
)  # fmt: skip
STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
CLOSE = 255  # v5: [255, channel] closes a channel


def options(ctx: context.Request) -> dict[str, Any]:
    """The exec/attach options of the query (kubectl sends them as ``stdin=true`` etc.)."""
    query = ctx.query
    chosen = {
        "stdin": request.flag(query, "stdin"),
        "stdout": request.flag(query, "stdout"),
        "stderr": request.flag(query, "stderr"),
        "tty": request.flag(query, "tty"),
    }
    if ctx.info.subresource == "exec":
        command = query.get("command") or []
        if not command:
            raise errors.bad_request("you must specify at least one command for the container")
        chosen["command"] = command
    if not (chosen["stdin"] or chosen["stdout"] or chosen["stderr"]):
        raise errors.bad_request("you must specify at least 1 of stdin, stdout, stderr")
    if chosen["tty"]:
        chosen["stderr"] = False  # a terminal merges stderr into stdout
    return chosen


async def serve(ctx: context.Request, connection: websocket.Connection) -> None:
    subresource = ctx.info.subresource
    chosen = options(ctx)
    found = await streams.target(ctx)
    channels = websocket.Channels.negotiate(connection.subprotocols, PROTOCOLS)
    if channels is None:
        raise errors.bad_request(
            f"none of the offered WebSocket subprotocols is supported: {connection.subprotocols}"
        )
    header = {"op": subresource, **found.header, **chosen}
    stream = await tunnel.for_api(ctx.api).open(found.node, header, what=f"pods/{subresource}")
    try:
        await connection.accept(channels.protocol)
        await _relay(connection, stream, channels)
    finally:
        await stream.close()
        await connection.close()


async def _relay(
    connection: websocket.Connection, stream: bus_streams.Stream, channels: websocket.Channels
) -> None:
    inbound = asyncio.create_task(
        _from_client(connection, stream, channels), name=f"exec client {stream.name}"
    )
    try:
        await _to_client(connection, stream, channels)
    finally:
        inbound.cancel()
        with contextlib.suppress(asyncio.CancelledError, bus_streams.StreamError):
            await inbound


async def _from_client(
    connection: websocket.Connection, stream: bus_streams.Stream, channels: websocket.Channels
) -> None:
    """Stdin, its close and resizes, until the client leaves; then the stream ends."""
    while (message := await connection.receive()) is not None:
        decoded = channels.decode(message)
        if decoded is None:
            continue
        channel, payload = decoded
        if channel == CLOSE and channels.version >= 5:
            if payload[:1] == bytes([STDIN]):
                await stream.close_channel(STDIN)
        elif channel in (STDIN, RESIZE) and payload:
            await stream.send(channel, payload)
    await stream.close()


async def _to_client(
    connection: websocket.Connection, stream: bus_streams.Stream, channels: websocket.Channels
) -> None:
    status_sent = False
    async for frame in stream:
        if frame.closed or not frame.data:
            continue
        if frame.channel == ERROR:
            status_sent = True
            await _send_status(connection, channels, frame.data)
        elif frame.channel in (STDOUT, STDERR):
            await connection.send(channels.encode(frame.channel, frame.data))
    broken = _broken_status(stream)
    if not status_sent and broken:
        await _send_status(connection, channels, broken)


def _broken_status(stream: bus_streams.Stream) -> bytes:
    """A Status for a tunnel stream that broke before the agent sent one; b"" if it ended cleanly."""
    if not stream.error or stream.error == "closed":
        return b""
    log.info("exec stream %s broke: %s", stream.name, stream.error)
    return orjson.dumps(errors.internal(f"the stream to the node broke: {stream.error}").status())


async def _send_status(connection: websocket.Connection, channels: websocket.Channels, data: bytes) -> None:
    payload = status_payload(channels.version, data)
    if payload:
        await connection.send(channels.encode(ERROR, payload))


def status_payload(version: int, data: bytes) -> bytes:
    """What the error channel carries for the agent's ``Status``: v4+ the JSON, older only a failure's message."""
    if version >= 4:
        return data
    try:
        status = orjson.loads(data)
    except orjson.JSONDecodeError:
        return b""
    return b"" if status.get("status") == "Success" else str(status.get("message", "")).encode()


# -- kubectl's Upgrade: SPDY/3.1 form (spdyupgrade) ---------------------------------------------------
#
# The client opens one SPDY stream per channel, named by its ``streamType`` header: error, and
# stdin, stdout, stderr (not with a tty), resize (with a tty, v3+) as the query asked. Once all are
# there, as kubelet does, stdin and resize go to the agent and its stdout, stderr and Status come
# back on their streams; then every stream ends with FIN and the connection closes.

SPDY_PROTOCOLS = ("v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io")
STREAM_CREATION_TIMEOUT = 30.0  # seconds for the client to open its streams (kubelet's default)
_KINDS = {STDOUT: "stdout", STDERR: "stderr", ERROR: "error"}


async def serve_spdy(ctx: context.Request, connection: streams.Upgraded) -> None:
    subresource = ctx.info.subresource
    chosen = options(ctx)
    found = await streams.target(ctx)
    protocol = spdyupgrade.negotiate(connection.subprotocols, SPDY_PROTOCOLS)
    version = int(protocol[1]) if protocol.startswith("v") else 1
    header = {"op": subresource, **found.header, **chosen}
    stream = await tunnel.for_api(ctx.api).open(found.node, header, what=f"pods/{subresource}")
    try:
        await connection.accept(protocol)
        await _SpdyExec(connection, stream, version=version, wanted=_wanted(chosen, version)).run()
    finally:
        await stream.close()
        await connection.close()


def _wanted(chosen: dict[str, Any], version: int) -> frozenset[str]:
    kinds = {"error", *(kind for kind in ("stdin", "stdout", "stderr") if chosen[kind])}
    if chosen["tty"] and version >= 3:
        kinds.add("resize")
    return frozenset(kinds)


class _SpdyExec:
    """One exec or attach session over SPDY: the client's typed streams spliced with the agent's channels."""

    def __init__(
        self, connection: streams.Upgraded, agent: bus_streams.Stream, *, version: int, wanted: frozenset[str]
    ) -> None:
        self._connection = connection
        self._agent = agent
        self._version = version
        self._wanted = wanted
        self._session = spdy.Session(connection.send, on_stream=self._on_stream)
        self._streams: dict[str, spdy.Stream] = {}
        self._complete = asyncio.Event()  # every wanted stream is open

    async def run(self) -> None:
        """Until the agent's stream ends (the command exited) or the client leaves."""
        reading = asyncio.create_task(self._read(), name=f"exec spdy client {self._agent.name}")
        relaying = asyncio.create_task(self._relay(), name=f"exec spdy {self._agent.name}")
        try:
            await asyncio.wait({reading, relaying}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await tasks.cancel_all([relaying, reading])

    async def _read(self) -> None:
        try:
            while (chunk := await self._connection.receive()) is not None:
                await self._session.feed(chunk if isinstance(chunk, bytes) else chunk.encode())
        except spdy.SpdyError as exc:
            log.info("exec session %s ended: %s", self._agent.name, exc)
            await self._session.goaway(spdy.GOAWAY_PROTOCOL_ERROR)
        finally:
            self._session.abort()

    def _on_stream(self, stream: spdy.Stream) -> None:
        kind = stream.header("streamtype")
        if kind not in ("stdin", "resize"):
            stream.discard()  # the client writes nothing on the others
        if kind not in self._wanted or kind in self._streams:
            log.debug("exec session %s: ignoring a stream of type %r", self._agent.name, kind)
            stream.discard()
            return
        self._streams[kind] = stream
        if self._wanted <= self._streams.keys():
            self._complete.set()

    async def _relay(self) -> None:
        try:
            await tasks.wait_for(self._complete.wait(), STREAM_CREATION_TIMEOUT)
        except TimeoutError:
            missing = sorted(self._wanted - self._streams.keys())
            log.info("exec session %s: the client did not open its %s streams", self._agent.name, missing)
            return
        uploads = [
            asyncio.create_task(self._upload(self._streams[kind], channel), name=f"exec spdy {kind}")
            for kind, channel in (("stdin", STDIN), ("resize", RESIZE))
            if kind in self._streams
        ]
        try:
            await self._download()
        except spdy.SpdyError:
            log.debug("the client reset a stream of exec session %s", self._agent.name)
        finally:
            await tasks.cancel_all(uploads)
            for stream in self._streams.values():
                await stream.close()

    async def _download(self) -> None:
        status_sent = False
        async for frame in self._agent:
            if frame.closed or not frame.data or frame.channel not in _KINDS:
                continue
            data = frame.data
            if frame.channel == ERROR:
                status_sent, data = True, status_payload(self._version, data)
            if data and (stream := self._streams.get(_KINDS[frame.channel])) is not None:
                await stream.write(data)
        broken = _broken_status(self._agent)
        if not status_sent and broken and (stream := self._streams.get("error")) is not None:
            await stream.write(status_payload(self._version, broken))

    async def _upload(self, stream: spdy.Stream, channel: int) -> None:
        """Client -> agent until the client's FIN; the end of stdin is passed on, as v5's close is."""
        try:
            while chunk := await stream.read():
                await self._agent.send(channel, chunk)
            if channel == STDIN and not stream.was_reset:
                await self._agent.close_channel(STDIN)
        except bus_streams.StreamError:
            return  # the agent's side ended; the download sees it too
