"""SPDY/3.1 as kubectl's port-forward speaks it: frames, header blocks, and a small session.

kubectl 1.31+ sends SPDY/3.1 inside the binary messages of a WebSocket (``SPDY/3.1+portforward.k8s.io``;
kubectl 1.20 sends it on the connection itself after a plain upgrade, ``spdyupgrade``):
the messages are slices of one byte stream, so a frame may span messages and a message may hold
several frames. ``FrameReader`` reassembles them; ``Session`` runs the protocol over any
``send(bytes)`` and is fed whatever arrives.

Frames: a control frame is ``1 | version (15 bits) | type (16) | flags (8) | length (24) | payload``,
a data frame ``0 | stream id (31) | flags (8) | length (24) | data``. Name/value header blocks
(SYN_STREAM, SYN_REPLY, HEADERS) are a 32-bit count, then 32-bit-length-prefixed lowercase names and
values (several values joined by NUL), compressed with zlib primed with the SPDY/3 dictionary: one
compression context per direction for the whole session, each block ending in a sync flush. So
blocks must be compressed in the order they go on the wire (``Session`` writes under one lock) and
every received block must be decompressed, even for a stream that is refused.

Flow control: each stream and (3.1) the session start with a 64 KiB receive window; we grant credit
back with WINDOW_UPDATE as the application reads. On the sending side we honour the peer's windows
only once it shows that it keeps them (a WINDOW_UPDATE or an initial-window SETTINGS): kubectl's
SPDY library (moby/spdystream) neither sends nor reads WINDOW_UPDATE, and waiting for credit from it
would stall every connection after 64 KiB. Backpressure towards such a peer comes from the transport,
and towards us from ``feed``, which waits while a stream holds more than ``HIGH_WATER`` unread bytes.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import struct
import zlib
from collections.abc import Awaitable, Callable, Mapping

log = logging.getLogger(__name__)

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN, FLAG_UNIDIRECTIONAL = 0x01, 0x02
# RST_STREAM status codes
PROTOCOL_ERROR, INVALID_STREAM, REFUSED_STREAM, UNSUPPORTED_VERSION, CANCEL, INTERNAL_ERROR = range(1, 7)
FLOW_CONTROL_ERROR = 7
GOAWAY_OK, GOAWAY_PROTOCOL_ERROR = 0, 1
SETTINGS_INITIAL_WINDOW_SIZE = 7
DEFAULT_WINDOW = 64 * 1024
MAX_DATA = 32 * 1024  # bytes per data frame we send (the format allows 16 MiB)
HIGH_WATER = 256 * 1024  # unread bytes per stream before ``feed`` waits for the reader
MAX_HEADER_BLOCK = 64 * 1024  # decompressed bytes per header block

_HEAD = struct.Struct(">II")

# The SPDY/3 header compression dictionary (draft 3, section 2.6.10.1): length-prefixed words, then
# a run of status codes, months, days and common values. 1423 bytes; zlib names it by its Adler-32.
_WORDS = (
    "options head post put delete trace accept accept-charset accept-encoding accept-language "
    "accept-ranges age allow authorization cache-control connection content-base content-encoding "
    "content-language content-length content-location content-md5 content-range content-type date "
    "etag expect expires from host if-match if-modified-since if-none-match if-range "
    "if-unmodified-since last-modified location max-forwards pragma proxy-authenticate "
    "proxy-authorization range referer retry-after server te trailer transfer-encoding upgrade "
    "user-agent vary via warning www-authenticate method get status"
).split() + ["200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin"]
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
DICTIONARY = b"".join(len(w).to_bytes(4, "big") + w.encode() for w in _WORDS) + _TAIL.encode()


class SpdyError(Exception):
    """The peer broke the protocol badly enough that the session cannot go on."""


# -- frames -----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class DataFrame:
    stream_id: int
    data: bytes
    flags: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class ControlFrame:
    type: int
    flags: int
    payload: bytes  # header blocks still compressed: only the session knows the context
    version: int = VERSION


def control(kind: int, payload: bytes, *, flags: int = 0) -> bytes:
    return _HEAD.pack(0x80000000 | VERSION << 16 | kind, flags << 24 | len(payload)) + payload


def data(stream_id: int, payload: bytes, *, fin: bool = False) -> bytes:
    return _HEAD.pack(stream_id & 0x7FFFFFFF, (FLAG_FIN if fin else 0) << 24 | len(payload)) + payload


def syn_stream(stream_id: int, block: bytes, *, flags: int = 0, priority: int = 0) -> bytes:
    return control(SYN_STREAM, struct.pack(">IIBB", stream_id, 0, priority << 5, 0) + block, flags=flags)


def syn_reply(stream_id: int, block: bytes, *, fin: bool = False) -> bytes:
    return control(SYN_REPLY, stream_id.to_bytes(4, "big") + block, flags=FLAG_FIN if fin else 0)


def rst_stream(stream_id: int, status: int) -> bytes:
    return control(RST_STREAM, _HEAD.pack(stream_id, status))


def settings(values: Mapping[int, int]) -> bytes:
    body = b"".join(_HEAD.pack(key & 0xFFFFFF, value) for key, value in values.items())
    return control(SETTINGS, len(values).to_bytes(4, "big") + body)


def ping(ping_id: int) -> bytes:
    return control(PING, ping_id.to_bytes(4, "big"))


def goaway(last_stream_id: int, status: int = GOAWAY_OK) -> bytes:
    return control(GOAWAY, _HEAD.pack(last_stream_id, status))


def window_update(stream_id: int, delta: int) -> bytes:
    return control(WINDOW_UPDATE, _HEAD.pack(stream_id, delta))


class FrameReader:
    """Reassembles frames from arbitrary slices of the byte stream."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> list[DataFrame | ControlFrame]:
        self._buffer += chunk
        frames: list[DataFrame | ControlFrame] = []
        start = 0  # the buffer is cut once, after the loop: many frames in one chunk stay linear
        while len(self._buffer) - start >= _HEAD.size:
            first, second = _HEAD.unpack_from(self._buffer, start)
            end = start + _HEAD.size + (second & 0xFFFFFF)
            if len(self._buffer) < end:
                break
            payload, flags = bytes(self._buffer[start + _HEAD.size : end]), second >> 24
            if first & 0x80000000:
                frames.append(ControlFrame(first & 0xFFFF, flags, payload, version=first >> 16 & 0x7FFF))
            else:
                frames.append(DataFrame(first, payload, flags))
            start = end
        del self._buffer[:start]
        return frames


# -- header blocks ----------------------------------------------------------------------------------

Headers = dict[str, list[str]]


def encode_block(headers: Mapping[str, str | list[str]]) -> bytes:
    """The uncompressed name/value block: names lowercased, several values joined by NUL."""
    parts = [len(headers).to_bytes(4, "big")]
    for name, value in headers.items():
        raw_name = name.lower().encode()
        raw_value = "\0".join([value] if isinstance(value, str) else value).encode()
        parts += [len(raw_name).to_bytes(4, "big"), raw_name, len(raw_value).to_bytes(4, "big"), raw_value]
    return b"".join(parts)


def decode_block(block: bytes) -> Headers:
    try:
        count = int.from_bytes(block[:4], "big")
        offset, headers = 4, {}
        for _ in range(count):
            name, offset = _field(block, offset)
            value, offset = _field(block, offset)
            headers.setdefault(name.decode().lower(), []).extend(value.decode().split("\0"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise SpdyError(f"malformed header block: {exc}") from None
    if offset != len(block):
        raise SpdyError("malformed header block: trailing bytes")
    return headers


def _field(block: bytes, offset: int) -> tuple[bytes, int]:
    size = int.from_bytes(block[offset : offset + 4], "big")
    end = offset + 4 + size
    if len(block[offset:]) < 4 or end > len(block):
        raise ValueError("a length runs past the end of the block")
    return block[offset + 4 : end], end


class HeaderCompressor:
    """One direction's compression context: blocks must be compressed in wire order."""

    def __init__(self) -> None:
        self._zlib = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, DICTIONARY)

    def compress(self, headers: Mapping[str, str | list[str]]) -> bytes:
        return self._zlib.compress(encode_block(headers)) + self._zlib.flush(zlib.Z_SYNC_FLUSH)


class HeaderDecompressor:
    def __init__(self) -> None:
        self._zlib = zlib.decompressobj(15, DICTIONARY)

    def decompress(self, compressed: bytes) -> Headers:
        try:
            block = self._zlib.decompress(compressed, MAX_HEADER_BLOCK)
        except zlib.error as exc:
            raise SpdyError(f"cannot decompress a header block: {exc}") from None
        if self._zlib.unconsumed_tail:
            raise SpdyError(f"a header block is larger than {MAX_HEADER_BLOCK} bytes")
        return decode_block(block)


# -- the session ------------------------------------------------------------------------------------


class Stream:
    """One SPDY stream: ``read`` until b"", ``write``, ``close`` (our FIN) or ``reset``."""

    def __init__(self, session: Session, stream_id: int, headers: Headers, *, send_window: int) -> None:
        self.id = stream_id
        self.headers = headers
        self.remote_closed = False  # the peer sent FIN
        self.local_closed = False  # we sent FIN
        self.was_reset = False
        self.replied = asyncio.Event()  # our own streams: the peer's SYN_REPLY arrived
        self.send_window = send_window
        self._session = session
        self._chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self._changed = asyncio.Event()  # data, the end, a reset, credit or a read happened
        self._discard = False
        self._unacknowledged = 0

    def header(self, name: str) -> str:
        return (self.headers.get(name) or [""])[0]

    @property
    def done(self) -> bool:
        return self.was_reset or (self.remote_closed and self.local_closed)

    async def read(self) -> bytes:
        """The next bytes the peer sent; b"" once it sent FIN or the stream was reset."""
        while not self._chunks:
            if self.remote_closed or self.was_reset:
                return b""
            await self._wait()
        chunk = self._chunks.popleft()
        self.buffered -= len(chunk)
        self._wake()
        await self._session._consumed(self, len(chunk))
        return chunk

    async def write(self, payload: bytes) -> None:
        view = memoryview(payload)
        while view:
            size = await self._session._credit(self, len(view))
            await self._session._send_frame(data(self.id, bytes(view[:size])))
            view = view[size:]

    async def close(self) -> None:
        """Half-close: FIN, once; nothing more will be written."""
        if self.local_closed or self.was_reset:
            return
        self.local_closed = True
        await self._session._send_frame(data(self.id, b"", fin=True))
        self._session._forget_if_done(self)

    async def reset(self, status: int = CANCEL) -> None:
        if self.was_reset:
            return
        self._ended_by_reset()
        await self._session._send_frame(rst_stream(self.id, status))

    def discard(self) -> None:
        """Drop what is buffered and whatever arrives later: nobody will read this stream."""
        self._discard = True
        self._chunks.clear()
        self.buffered = 0
        self._wake()

    def _received(self, chunk: bytes) -> bool:
        """Buffer ``chunk``; False when it was dropped (its credit is then due at once)."""
        if self._discard or self.remote_closed or self.was_reset:
            return False
        self._chunks.append(chunk)
        self.buffered += len(chunk)
        self._wake()
        return True

    def _ended_by_reset(self) -> None:
        self.was_reset = True
        self._session._forget(self)
        self._wake()

    def _wake(self) -> None:
        self._changed.set()

    async def _wait(self) -> None:
        self._changed.clear()
        await self._changed.wait()


NewStream = Callable[[Stream], None]


class Session:
    """One SPDY/3.1 session over ``send``; the owner passes everything received to ``feed``.

    ``on_stream`` is called for each stream the peer opens, after our SYN_REPLY went out; it must not
    block (start a task). As a client (``server=False``), ``open_stream`` opens streams.
    """

    def __init__(
        self, send: Callable[[bytes], Awaitable[None]], *, on_stream: NewStream, server: bool = True
    ) -> None:
        self._send = send
        self._on_stream = on_stream
        self._server = server
        self._lock = asyncio.Lock()  # one frame at a time, header blocks compressed in wire order
        self._compressor = HeaderCompressor()
        self._decompressor = HeaderDecompressor()
        self._reader = FrameReader()
        self.streams: dict[int, Stream] = {}
        self._last_peer_id = 0
        self._next_id = 2 if server else 1
        self._peer_flow_control = False  # see the module docstring
        self._initial_window = DEFAULT_WINDOW
        self._session_window = DEFAULT_WINDOW
        self._session_unacknowledged = 0
        self._credit_changed = asyncio.Event()
        self.gone_away = asyncio.Event()
        self._handlers = {
            SYN_STREAM: self._on_syn_stream, SYN_REPLY: self._on_syn_reply, RST_STREAM: self._on_rst_stream,
            SETTINGS: self._on_settings, PING: self._on_ping, GOAWAY: self._on_goaway,
            HEADERS: self._on_headers, WINDOW_UPDATE: self._on_window_update,
        }  # fmt: skip

    async def feed(self, chunk: bytes) -> None:
        """Handle whatever frames ``chunk`` completes; raise SpdyError when the session must end."""
        for frame in self._reader.feed(chunk):
            if isinstance(frame, DataFrame):
                await self._on_data(frame)
            elif frame.version != VERSION:
                raise SpdyError(f"SPDY version {frame.version} is not supported")
            elif handler := self._handlers.get(frame.type):
                if len(frame.payload) < 4:
                    raise SpdyError(f"control frame {frame.type} is too short")
                await handler(frame)
            # unknown control frame types are ignored, as the protocol asks

    async def open_stream(self, headers: Mapping[str, str | list[str]]) -> Stream:
        stream_id, self._next_id = self._next_id, self._next_id + 2
        stream = self.streams[stream_id] = Stream(self, stream_id, {}, send_window=self._initial_window)
        async with self._lock:
            await self._send(syn_stream(stream_id, self._compressor.compress(headers)))
        while not (stream.replied.is_set() or stream.was_reset):
            await stream._wait()
        if stream.was_reset:
            raise SpdyError(f"the peer refused stream {stream_id}")
        return stream

    async def goaway(self, status: int = GOAWAY_OK) -> None:
        await self._send_frame(goaway(self._last_peer_id, status))

    def abort(self) -> None:
        """The transport is gone: every stream ends as if reset."""
        for stream in list(self.streams.values()):
            stream._ended_by_reset()
        self._credit_changed.set()

    # -- receiving -------------------------------------------------------------------------------

    async def _on_data(self, frame: DataFrame) -> None:
        stream = self.streams.get(frame.stream_id)
        if stream is None:
            if frame.stream_id > self._last_peer_id and frame.stream_id % 2 == int(self._server):
                await self._send_frame(rst_stream(frame.stream_id, INVALID_STREAM))
            await self._credit_session(len(frame.data))  # a closed stream's late data
            return
        if frame.data and not stream._received(frame.data):
            await self._consumed(stream, len(frame.data))
        if frame.flags & FLAG_FIN:
            stream.remote_closed = True
            stream._wake()
            self._forget_if_done(stream)
        # Backpressure: one stream's slow reader holds the whole session, as in spdystream.
        while stream.buffered > HIGH_WATER and not stream.was_reset:
            await stream._wait()

    async def _on_syn_stream(self, frame: ControlFrame) -> None:
        if len(frame.payload) < 10:
            raise SpdyError("SYN_STREAM is too short")
        stream_id = int.from_bytes(frame.payload[:4], "big") & 0x7FFFFFFF
        headers = self._decompressor.decompress(frame.payload[10:])  # always: the context must advance
        if stream_id <= self._last_peer_id or stream_id % 2 != int(self._server):
            await self._send_frame(rst_stream(stream_id, PROTOCOL_ERROR))
            return
        self._last_peer_id = stream_id
        stream = self.streams[stream_id] = Stream(self, stream_id, headers, send_window=self._initial_window)
        stream.remote_closed = bool(frame.flags & FLAG_FIN)
        async with self._lock:
            await self._send(syn_reply(stream_id, self._compressor.compress({})))
        self._on_stream(stream)

    async def _on_syn_reply(self, frame: ControlFrame) -> None:
        stream = self.streams.get(self._stream_id(frame))
        self._decompressor.decompress(frame.payload[4:])
        if stream is not None:
            stream.replied.set()
            stream.remote_closed = stream.remote_closed or bool(frame.flags & FLAG_FIN)
            stream._wake()

    async def _on_rst_stream(self, frame: ControlFrame) -> None:
        stream = self.streams.get(self._stream_id(frame))
        if stream is not None:
            stream._ended_by_reset()
            self._credit_changed.set()

    async def _on_settings(self, frame: ControlFrame) -> None:
        count = int.from_bytes(frame.payload[:4], "big")
        for index in range(min(count, (len(frame.payload) - 4) // 8)):
            key, value = _HEAD.unpack_from(frame.payload, 4 + 8 * index)
            if key & 0xFFFFFF == SETTINGS_INITIAL_WINDOW_SIZE:
                for stream in self.streams.values():
                    stream.send_window += value - self._initial_window
                self._initial_window = value
                self._peer_flow_control = True
                self._credit_changed.set()

    async def _on_ping(self, frame: ControlFrame) -> None:
        ping_id = int.from_bytes(frame.payload[:4], "big")
        if ping_id % 2 != int(not self._server):  # the peer's ping, not an answer to ours
            await self._send_frame(ping(ping_id))

    async def _on_goaway(self, frame: ControlFrame) -> None:
        self.gone_away.set()

    async def _on_headers(self, frame: ControlFrame) -> None:
        headers = self._decompressor.decompress(frame.payload[4:])
        stream = self.streams.get(self._stream_id(frame))
        if stream is not None:
            for name, values in headers.items():
                stream.headers.setdefault(name, []).extend(values)

    async def _on_window_update(self, frame: ControlFrame) -> None:
        if len(frame.payload) < 8:
            raise SpdyError("WINDOW_UPDATE is too short")
        stream_id, delta = _HEAD.unpack_from(frame.payload)
        self._peer_flow_control = True
        if stream_id == 0:
            self._session_window += delta & 0x7FFFFFFF
        elif (stream := self.streams.get(stream_id)) is not None:
            stream.send_window += delta & 0x7FFFFFFF
        self._credit_changed.set()

    @staticmethod
    def _stream_id(frame: ControlFrame) -> int:
        return int.from_bytes(frame.payload[:4], "big") & 0x7FFFFFFF

    # -- flow control and sending ----------------------------------------------------------------

    async def _consumed(self, stream: Stream, size: int) -> None:
        stream._unacknowledged += size
        if stream._unacknowledged >= DEFAULT_WINDOW // 2 and not stream.done:
            grant, stream._unacknowledged = stream._unacknowledged, 0
            await self._send_frame(window_update(stream.id, grant))
        await self._credit_session(size)

    async def _credit_session(self, size: int) -> None:
        self._session_unacknowledged += size
        if self._session_unacknowledged >= DEFAULT_WINDOW // 2:
            grant, self._session_unacknowledged = self._session_unacknowledged, 0
            await self._send_frame(window_update(0, grant))

    async def _credit(self, stream: Stream, wanted: int) -> int:
        """How many bytes ``stream`` may send now (at most MAX_DATA), waiting for the peer's credit."""
        while True:
            if stream.was_reset or stream.local_closed:
                raise SpdyError(f"stream {stream.id} is closed for writing")
            size = min(wanted, MAX_DATA)
            if self._peer_flow_control:
                size = min(size, stream.send_window, self._session_window)
            if size > 0:
                if self._peer_flow_control:
                    stream.send_window -= size
                    self._session_window -= size
                return size
            self._credit_changed.clear()
            await self._credit_changed.wait()

    async def _send_frame(self, frame: bytes) -> None:
        async with self._lock:
            await self._send(frame)

    def _forget_if_done(self, stream: Stream) -> None:
        if stream.done:
            self._forget(stream)

    def _forget(self, stream: Stream) -> None:
        self.streams.pop(stream.id, None)
