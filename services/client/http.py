"""HTTP/1.1 over asyncio streams: the client's keep-alive connection pool to the API server.

Why not httpx: the scheduler sends one binding (and often an event) per pod, and httpx spends
about a millisecond of CPU on each request (URL and header models, httpcore's pool, h11's event
state machine), more than the scheduling itself. The API server needs much less: one request at
a time per connection (no pipelining), ``Content-Length`` or chunked bodies, keep-alive. This
module does only that, writing the request head in one buffer and parsing the response head
with a few string operations.

Connections are reused most-recent first, so a quiet client keeps few warm connections, and one
idle longer than ``MAX_IDLE`` is dropped rather than raced against the server's keep-alive
timeout. Should the server close a reused connection anyway before answering a byte, the request
is sent once more on a fresh connection, as Go's net/http does: the server did not act on it.
A stream (a watch) holds its connection until closed; a cleanly ended one goes back to the pool.

``Transport`` is the seam ``api`` and ``watch`` use; ``Pool`` implements it over TCP and TLS,
``transport.AsgiTransport`` in process. Failures below HTTP become ``errors.TransportError`` here.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Protocol

from services.client import errors
from services.machinery import tasks

log = logging.getLogger(__name__)

JSON = "application/json"
CONNECT_TIMEOUT = 10.0  # seconds for TCP and the TLS handshake, within the request's own timeout
MAX_IDLE = 4.0  # seconds a pooled connection may idle: uvicorn closes keep-alive connections after 5
READ_LIMIT = 1024 * 1024  # bytes: the longest response head or chunk-size line we accept
DRAIN_ABOVE = 64 * 1024  # bytes of request body above which we wait for the socket buffer to drain
_NO_BODY = frozenset((204, 304))


class Response:
    """A whole response: status, headers (lower-case names), body."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class Stream(Protocol):
    """A response whose body is read as it arrives; ``aclose`` releases it (idempotent)."""

    status: int
    headers: Mapping[str, str]

    def chunks(self, *, read_timeout: float | None = None) -> AsyncIterator[bytes]: ...

    async def read(self) -> bytes: ...

    async def aclose(self) -> None: ...


class Transport(Protocol):
    """One request or one stream to the API; ``target`` is the path with its query string.

    Each implementation bounds a request by the timeout it was built with (for a stream: until
    its head arrives; the body has its own ``read_timeout``).
    """

    async def request(
        self, method: str, target: str, *, body: bytes | None = None, content_type: str = JSON
    ) -> Response: ...

    async def stream(self, method: str, target: str) -> Stream: ...

    async def aclose(self) -> None: ...


class _Stale(Exception):
    """A reused connection was closed by the server before it answered anything."""


class Connection:
    """One HTTP/1.1 connection; one exchange at a time (the pool guarantees it)."""

    __slots__ = ("reader", "writer", "idle_since", "reused", "reusable")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0
        self.reused = False
        self.reusable = False  # set when a response ended cleanly and allows keep-alive

    def fresh(self, now: float) -> bool:
        return now - self.idle_since < MAX_IDLE and not self.reader.at_eof()

    async def send(self, head: bytes, body: bytes | None) -> None:
        self.reusable = False
        if body is None:
            self.writer.write(head)
            return
        self.writer.write(head + body)
        if len(body) > DRAIN_ABOVE:
            await self.writer.drain()

    async def read_head(self) -> tuple[int, dict[str, str]]:
        try:
            raw = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if self.reused and not exc.partial:
                raise _Stale from None
            raise
        except ConnectionResetError:
            if self.reused:
                raise _Stale from None
            raise
        lines = raw.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        status = int(rest[:3])
        headers: dict[str, str] = {}
        for line in lines[1:-2]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        self.reusable = keep_alive  # provisional: the body must still be read to its end
        return status, headers

    async def read_body(self, status: int, headers: dict[str, str], *, head_only: bool = False) -> bytes:
        if head_only or status in _NO_BODY or status < 200:
            return b""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return b"".join([chunk async for chunk in self.chunks()])
        length = headers.get("content-length")
        if length is None:
            self.reusable = False  # the body ends when the server closes the connection
            return await self.reader.read()
        return await self.reader.readexactly(int(length))

    async def chunks(self, *, deadline: Callable[[], float | None] = lambda: None) -> AsyncIterator[bytes]:
        """A chunked body's chunks; the connection is reusable again only after the last one."""
        keep, self.reusable = self.reusable, False
        reader = self.reader
        while True:
            async with asyncio.timeout(deadline()):
                size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
                if size == 0:
                    while await reader.readuntil(b"\r\n") != b"\r\n":
                        pass  # trailers, ignored
                    self.reusable = keep
                    return
                chunk = await reader.readexactly(size + 2)
            if chunk[-2:] != b"\r\n":
                raise ValueError("a chunk does not end with CRLF")
            yield chunk[:-2]

    def close(self) -> None:
        self.reusable = False
        self.writer.close()

    def abort(self) -> None:
        """Drop the connection now: a read pending in another task fails at once."""
        self.reusable = False
        self.writer.transport.abort()


class Pool:
    """Keep-alive connections to one server; at most ``max_connections`` open, streams included."""

    def __init__(
        self,
        server: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str = "",
        headers: Mapping[str, str] | None = None,
        bearer: Callable[[], str | None] | None = None,
        max_connections: int = 256,
        timeout: float = 30.0,
    ) -> None:
        parts = urllib.parse.urlsplit(server)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise errors.ConfigError(f"the server {server!r} is not an http(s) URL")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl_context = ssl_context if parts.scheme == "https" else None
        if parts.scheme == "https" and self.ssl_context is None:
            self.ssl_context = _unverified()
        self.server_hostname = (server_hostname or self.host) if self.ssl_context is not None else None
        self.prefix = parts.path.rstrip("/")  # a server URL may carry a path (a proxy's)
        lines = [f"Host: {parts.netloc.rpartition('@')[2]}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self._static = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        self._bearer = bearer
        self.timeout = timeout  # seconds for one request, a connection's setup included
        self._slots = asyncio.Semaphore(max_connections)  # never more connections than this
        self._idle: list[Connection] = []  # most recently used last
        self._open: set[Connection] = set()
        self._closed = False

    # -- requests ----------------------------------------------------------------------------------

    async def request(
        self, method: str, target: str, *, body: bytes | None = None, content_type: str = JSON
    ) -> Response:
        timeout = self.timeout
        head = self._head(method, target, body, content_type)
        try:
            async with self._slots, asyncio.timeout(timeout):
                try:
                    return await self._exchange(method, head, body)
                except _Stale:
                    log.debug("%s %s: the server closed an idle connection; sending again", method, target)
                    return await self._exchange(method, head, body, fresh=True)
        except _BELOW_HTTP as exc:
            raise _failure(f"{method} {target}", exc, timeout=timeout) from exc

    async def _exchange(
        self, method: str, head: bytes, body: bytes | None, *, fresh: bool = False
    ) -> Response:
        connection = await self._checkout(fresh=fresh)
        try:
            await connection.send(head, body)
            status, headers = await connection.read_head()
            content = await connection.read_body(status, headers, head_only=method == "HEAD")
        except BaseException:
            self._discard(connection)  # its framing state is unknown now
            raise
        self._checkin(connection)
        return Response(status, headers, content)

    async def stream(self, method: str, target: str) -> PooledStream:
        """Send a request and read its head; the body is then read through ``PooledStream``."""
        timeout = self.timeout
        head = self._head(method, target, None, JSON)
        await self._slots.acquire()
        connection = None
        try:
            async with asyncio.timeout(timeout):
                try:
                    connection = await self._checkout()
                    await connection.send(head, None)
                    status, headers = await connection.read_head()
                except _Stale:
                    self._discard(connection)
                    connection = await self._checkout(fresh=True)
                    await connection.send(head, None)
                    status, headers = await connection.read_head()
        except BaseException as exc:
            if connection is not None:
                self._discard(connection)
            self._slots.release()
            if isinstance(exc, _BELOW_HTTP):
                raise _failure(f"{method} {target}", exc, timeout=timeout) from exc
            raise
        return PooledStream(self, connection, status, headers, target=target)

    def _head(self, method: str, target: str, body: bytes | None, content_type: str) -> bytes:
        head = b"%s %s HTTP/1.1\r\n%s" % (
            method.encode(),
            _quote(self.prefix + target).encode(),
            self._static,
        )
        if self._bearer is not None:
            token = self._bearer()
            if token:
                head += b"Authorization: Bearer %s\r\n" % token.encode("latin-1")
        if body is not None:
            head += b"Content-Type: %s\r\nContent-Length: %d\r\n" % (content_type.encode(), len(body))
        return head + b"\r\n"

    # -- the pool --------------------------------------------------------------------------------

    async def _checkout(self, *, fresh: bool = False) -> Connection:
        if self._closed:
            raise errors.TransportError("the client is closed")
        if not fresh:
            now = time.monotonic()
            while self._idle:
                connection = self._idle.pop()
                if connection.fresh(now):
                    connection.reused = True
                    return connection
                self._discard(connection)
        reader, writer = await tasks.wait_for(
            asyncio.open_connection(
                self.host, self.port, ssl=self.ssl_context, server_hostname=self.server_hostname,
                limit=READ_LIMIT,
            ),
            CONNECT_TIMEOUT,
        )  # fmt: skip
        connection = Connection(reader, writer)
        self._open.add(connection)
        return connection

    def _checkin(self, connection: Connection) -> None:
        if not connection.reusable or self._closed:
            self._discard(connection)
            return
        now = time.monotonic()
        connection.idle_since = now
        idle = self._idle
        while idle and not idle[0].fresh(now):  # the least recently used sink to the front
            self._discard(idle.pop(0))
        idle.append(connection)

    def _discard(self, connection: Connection, *, abort: bool = False) -> None:
        self._open.discard(connection)
        if abort:
            connection.abort()
        else:
            connection.close()

    async def aclose(self) -> None:
        """Close every connection (idempotent); open streams fail and end."""
        self._closed = True
        self._idle.clear()
        for connection in list(self._open):
            self._discard(connection, abort=True)
        await asyncio.sleep(0)  # let the transports' connection_lost callbacks run before we return


class PooledStream:
    """A response body read as it arrives, on a connection the stream holds until ``aclose``."""

    def __init__(
        self, pool: Pool, connection: Connection, status: int, headers: dict[str, str], *, target: str
    ) -> None:
        self.status = status
        self.headers = headers
        self._pool: Pool | None = pool
        self._connection = connection
        self._target = target
        self._finished = False  # the body was read to its end: the connection may be reused

    async def chunks(self, *, read_timeout: float | None = None) -> AsyncIterator[bytes]:
        """The body's chunks; ``read_timeout`` bounds the whole stream (a half-open connection ends)."""
        deadline = None if read_timeout is None else time.monotonic() + read_timeout

        def remaining() -> float | None:
            return None if deadline is None else max(deadline - time.monotonic(), 0.0)

        try:
            if "chunked" in self.headers.get("transfer-encoding", "").lower():
                async for chunk in self._connection.chunks(deadline=remaining):
                    yield chunk
            elif self.status in _NO_BODY or self.status < 200:
                pass
            else:
                async with asyncio.timeout(remaining()):
                    body = await self._connection.read_body(self.status, self.headers)
                if body:
                    yield body
            self._finished = True
        except _BELOW_HTTP as exc:
            raise _failure(f"GET {self._target}", exc, timeout=read_timeout) from exc

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if self._finished and self._connection.reusable:
            pool._checkin(self._connection)
        else:
            pool._discard(self._connection, abort=True)
        pool._slots.release()


# What fails below HTTP: sockets and TLS (OSError, TimeoutError included), framing, a malformed head.
_BELOW_HTTP = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError)


def _failure(what: str, exc: BaseException, *, timeout: float | None) -> errors.TransportError:
    if isinstance(exc, TimeoutError) and timeout is not None:  # an OSError too: test it first
        return errors.TransportError(f"{what}: no answer within {timeout:g}s")
    return errors.TransportError(f"{what}: {exc!r}")


_SAFE = "/:@!$&'()*+,;=?%-._~"  # what may stay as is in a request target: reserved, unreserved, escapes


def _quote(target: str) -> str:
    """The target with anything outside RFC 3986's characters percent-encoded (a space, say)."""
    return urllib.parse.quote(target, safe=_SAFE)


def _unverified() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
