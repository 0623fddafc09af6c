"""An async HTTP/1.1 load generator for the benchmarks: keep-alive connections, bounded loops.

One interface, two implementations, so a benchmark can check that the client is not what it measures:

- ``RawClient``: HTTP/1.1 written and parsed by hand over asyncio streams (``Content-Length`` and
  chunked bodies), one pool of keep-alive connections. It costs the client a fraction of what httpx
  does per request, which matters when client and server share a small machine.
- ``HttpxClient``: ``httpx.AsyncClient`` speaking HTTP/1.1 with a connection pool of the same size.

``drive`` runs a bounded number of operations from ``concurrency`` workers, each request on a
connection of its own from the pool (the pool is sized to the concurrency, so no worker waits for a
connection), and returns every latency. ``RawClient.lines`` opens a streaming request (a watch) on a
connection of its own and yields its body line by line.

TLS comes from a kubeconfig (server CA, client certificate and key, embedded or as files), the way
every Kubernetes client authenticates; ``ssl`` loads certificates from files only, so embedded ones
are written to a private temporary directory while the context is built.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import math
import ssl
import tempfile
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import yaml

CONNECT_TIMEOUT = 10.0  # seconds for TCP and the TLS handshake
MAX_HEADER = 64 * 1024  # bytes of a response head before we call the response malformed
MAX_IDLE = 4.0  # seconds a pooled connection may idle: uvicorn closes keep-alive connections after 5


class LoadError(Exception):
    """A request failed at the HTTP level (connection, framing) or answered an unexpected status."""


@dataclasses.dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


class Client(Protocol):
    """What a benchmark needs from a client: one request on a pooled keep-alive connection."""

    async def request(
        self, method: str, path: str, *, body: bytes | None = None, content_type: str = "application/json"
    ) -> Response: ...

    async def close(self) -> None: ...


# -- TLS from a kubeconfig ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Target:
    """Where to send requests and how to authenticate: a URL and a client TLS context."""

    url: str
    context: ssl.SSLContext

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urllib.parse.urlsplit(self.url)
        return parts.port or (443 if parts.scheme == "https" else 80)


def target_from_kubeconfig(path: Path, *, url: str | None = None) -> Target:
    """The current context's server (or ``url``) with its CA and the user's client certificate."""
    config = yaml.safe_load(path.read_text())
    current = config.get("current-context")
    contexts = {c["name"]: c["context"] for c in config.get("contexts") or ()}
    chosen = contexts.get(current) or next(iter(contexts.values()), {"cluster": None, "user": None})
    cluster = _named(config.get("clusters"), chosen.get("cluster"))
    user = _named(config.get("users"), chosen.get("user"))
    with tempfile.TemporaryDirectory() as tmp:
        ca = _pem_file(cluster, "certificate-authority", Path(tmp) / "ca.crt")
        context = ssl.create_default_context(cafile=ca)
        cert = _pem_file(user, "client-certificate", Path(tmp) / "tls.crt")
        key = _pem_file(user, "client-key", Path(tmp) / "tls.key")
        if cert and key:
            context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    return Target(url=url or cluster["server"], context=context)


def _named(entries: Any, name: str | None) -> dict[str, Any]:
    for entry in entries or ():
        if name is None or entry.get("name") == name:
            return next(v for k, v in entry.items() if k != "name")
    raise LoadError(f"the kubeconfig has no entry named {name!r}")


def _pem_file(section: dict[str, Any], field: str, scratch: Path) -> str | None:
    """The path of ``field``'s PEM: the file it names, or its ``-data`` written to ``scratch``."""
    if section.get(f"{field}-data"):
        scratch.write_bytes(base64.b64decode(section[f"{field}-data"]))
        scratch.chmod(0o600)
        return str(scratch)
    return section.get(field)


# -- the raw client ---------------------------------------------------------------------------------


class _Connection:
    """One keep-alive HTTP/1.1 connection; one request at a time (the pool guarantees it)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader = reader
        self.writer = writer
        self.host = host.encode()
        self.idle_since = time.monotonic()

    def reusable(self) -> bool:
        """Not closed by the server, nor about to be (a request racing its keep-alive timeout fails)."""
        return not self.reader.at_eof() and time.monotonic() - self.idle_since < MAX_IDLE

    @classmethod
    async def open(cls, target: Target) -> _Connection:
        ssl_context = target.context if target.url.startswith("https") else None
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                target.host, target.port, ssl=ssl_context, server_hostname=target.host if ssl_context else None,
                limit=MAX_HEADER,
            ),
            CONNECT_TIMEOUT,
        )  # fmt: skip
        return cls(reader, writer, target.host)

    def send(self, method: str, path: str, body: bytes | None, content_type: str) -> None:
        head = b"%s %s HTTP/1.1\r\nHost: %s\r\nAccept: application/json\r\n" % (
            method.encode(), path.encode(), self.host
        )  # fmt: skip
        if body is not None:
            head += b"Content-Type: %s\r\nContent-Length: %d\r\n" % (content_type.encode(), len(body))
        self.writer.write(head + b"\r\n" + (body or b""))

    async def head(self) -> tuple[int, dict[str, str]]:
        try:
            raw = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise LoadError(f"the connection closed or sent a malformed response head: {exc!r}") from exc
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        return status, headers

    async def body(self, headers: dict[str, str]) -> bytes:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            return b"".join([chunk async for chunk in self.chunks()])
        return await self.reader.readexactly(int(headers.get("content-length", "0")))

    async def chunks(self) -> AsyncIterator[bytes]:
        """The chunks of a chunked body, until its last (empty) chunk."""
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")  # no trailers are sent
                return
            chunk = await self.reader.readexactly(size + 2)
            yield chunk[:-2]

    async def request(self, method: str, path: str, body: bytes | None, content_type: str) -> Response:
        self.send(method, path, body, content_type)
        status, headers = await self.head()
        return Response(status, headers, await self.body(headers))

    def close(self) -> None:
        self.writer.close()


class RawClient:
    """Keep-alive connections over asyncio streams, opened on demand and reused most-recent first."""

    name = "raw asyncio streams"

    def __init__(self, target: Target, *, connections: int) -> None:
        self.target = target
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(connections)  # never more connections than the pool size
        self._all: list[_Connection] = []

    async def request(
        self, method: str, path: str, *, body: bytes | None = None, content_type: str = "application/json"
    ) -> Response:
        async with self._slots:
            connection = await self._checkout()
            try:
                response = await connection.request(method, path, body, content_type)
            except BaseException:
                self._forget(connection)  # its framing state is unknown now
                raise
            if response.headers.get("connection", "").lower() == "close":
                self._forget(connection)
            else:
                connection.idle_since = time.monotonic()
                self._idle.append(connection)
            return response

    async def _checkout(self) -> _Connection:
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable():
                return connection
            self._forget(connection)
        return await self._open()

    async def _open(self) -> _Connection:
        connection = await _Connection.open(self.target)
        self._all.append(connection)
        return connection

    def _forget(self, connection: _Connection) -> None:
        connection.close()
        with contextlib.suppress(ValueError):
            self._all.remove(connection)

    @contextlib.asynccontextmanager
    async def lines(self, path: str) -> AsyncIterator[tuple[int, AsyncIterator[bytes]]]:
        """A streaming GET on a connection of its own: its status, then its body line by line."""
        connection = await _Connection.open(self.target)
        try:
            connection.send("GET", path, None, "")
            status, headers = await connection.head()
            yield status, _split_lines(connection.chunks() if status == 200 else _once(connection, headers))
        finally:
            connection.close()

    async def close(self) -> None:
        for connection in self._all:
            connection.close()
        self._all.clear()
        self._idle.clear()


async def _once(connection: _Connection, headers: dict[str, str]) -> AsyncIterator[bytes]:
    yield await connection.body(headers)


async def _split_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    pending = b""
    async for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            if line:
                yield line
    if pending:
        yield pending


# -- the httpx client ---------------------------------------------------------------------------------


class HttpxClient:
    """``httpx.AsyncClient`` over HTTP/1.1 with a keep-alive pool of ``connections``."""

    name = "httpx.AsyncClient"

    def __init__(self, target: Target, *, connections: int) -> None:
        import httpx

        self._client = httpx.AsyncClient(
            base_url=target.url,
            verify=target.context,
            http1=True,
            http2=False,
            timeout=60.0,
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            headers={"accept": "application/json"},
        )

    async def request(
        self, method: str, path: str, *, body: bytes | None = None, content_type: str = "application/json"
    ) -> Response:
        import httpx

        headers = {"content-type": content_type} if body is not None else None
        try:
            answer = await self._client.request(method, path, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise LoadError(f"{method} {path}: {exc!r}") from exc
        return Response(answer.status_code, dict(answer.headers), answer.content)

    async def close(self) -> None:
        await self._client.aclose()


CLIENTS = {"raw": RawClient, "httpx": HttpxClient}  # by --client name; each has a ``name`` for reports


# -- driving a workload ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Sample:
    """The wall time of a run and the latency of each of its operations, in seconds."""

    seconds: float
    latencies: list[float]

    @property
    def ops_per_second(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile, in seconds."""
        return percentile(self.latencies, p)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


async def drive(*, count: int, concurrency: int, op: Callable[[int], Awaitable[None]]) -> Sample:
    """Run ``op(0) .. op(count - 1)`` from ``concurrency`` workers; time each operation and the whole."""
    indexes = iter(range(count))  # shared: each index is handed to exactly one worker
    latencies: list[float] = []

    async def worker() -> None:
        for index in indexes:
            started = time.perf_counter()
            await op(index)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for n in range(min(concurrency, count)):
            group.create_task(worker(), name=f"load worker {n}")
    return Sample(time.perf_counter() - started, latencies)


def expect(response: Response, status: int, what: str) -> Response:
    if response.status != status:
        raise LoadError(f"{what}: HTTP {response.status} (expected {status}): {response.body[:300]!r}")
    return response


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory when it is installed (the API server runs on it too), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
