"""Prometheus metrics for kine, in a registry of their own, and a tiny ``/metrics`` endpoint.

Names follow etcd's (and go-grpc-prometheus's, which etcd exposes) where one
exists, so existing etcd dashboards read kine too. The storage layers cannot
import this package (layers only import downwards), so whoever wires kine
together hands them the ``KineMetrics`` object: they call ``compactions.inc()``,
``compaction_seconds.observe(...)`` and so on, by duck typing. Database size and
revisions are read from the backend at scrape time, so they need no hook.

The endpoint is a plain asyncio HTTP/1.0 responder: one GET, one response, close.
That keeps it on the server's event loop, without a thread or another framework.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from typing import Any

import grpc
import prometheus_client

from services.kine import types

logger = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A scrape request line and headers must arrive within this many seconds.
_READ_TIMEOUT = 5.0
_MAX_HEADER_LINES = 100


class KineMetrics:
    """Every kine metric, registered in ``self.registry`` (never the process-global registry)."""

    def __init__(self) -> None:
        self.registry = prometheus_client.CollectorRegistry(auto_describe=True)
        r = self.registry
        self.handled = prometheus_client.Counter(
            "grpc_server_handled", "RPCs completed on the server, by gRPC status code.",
            ["grpc_type", "grpc_service", "grpc_method", "grpc_code"], registry=r,
        )  # fmt: skip
        self.handling_seconds = prometheus_client.Histogram(
            "grpc_server_handling_seconds", "Time to handle unary RPCs, in seconds.",
            ["grpc_type", "grpc_service", "grpc_method"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.watchers = prometheus_client.Gauge(
            "etcd_debugging_mvcc_watcher_total", "Open watches.", registry=r
        )
        self.watch_streams = prometheus_client.Gauge(
            "etcd_debugging_mvcc_watch_stream_total", "Open Watch streams.", registry=r
        )
        self.watch_events = prometheus_client.Counter(
            "kine_watch_events", "Events sent to watchers.", registry=r
        )
        self.db_size = prometheus_client.Gauge(
            "etcd_mvcc_db_total_size_in_bytes", "Datastore size in bytes, as of the last scrape.", registry=r
        )
        self.current_revision = prometheus_client.Gauge(
            "etcd_debugging_mvcc_current_revision", "Store revision, as of the last scrape.", registry=r
        )
        self.compact_revision = prometheus_client.Gauge(
            "etcd_debugging_mvcc_compact_revision", "Compaction point, as of the last scrape.", registry=r
        )
        self.compactions = prometheus_client.Counter(
            "kine_compactions", "Completed compaction runs.", registry=r
        )
        self.compaction_failures = prometheus_client.Counter(
            "kine_compaction_failures", "Compaction runs that failed.", registry=r
        )
        self.compaction_seconds = prometheus_client.Histogram(
            "kine_compaction_duration_seconds", "Duration of compaction runs, in seconds.", registry=r
        )
        self.compacted_rows = prometheus_client.Counter(
            "kine_compacted_rows", "Log rows removed by compaction.", registry=r
        )

    def for_rpc(self, *, kind: str, service: str, method: str) -> RpcMetrics:
        """One RPC's metrics, with its labelled series looked up once instead of on every call."""
        return RpcMetrics(self, kind=kind, service=service, method=method)

    async def refresh(self, backend: types.Backend) -> None:
        """Read the gauges that live in the store; a failing store leaves the last values."""
        try:
            self.db_size.set(await backend.db_size())
            self.current_revision.set(await backend.current_revision())
            self.compact_revision.set(await backend.compact_revision())
        except types.StoreError as exc:
            logger.debug("metrics refresh failed: %s", exc)

    def render(self) -> bytes:
        return prometheus_client.generate_latest(self.registry)


class RpcMetrics:
    """The labelled series of one RPC; a series appears when it is first observed, as with ``labels``."""

    def __init__(self, metrics: KineMetrics, *, kind: str, service: str, method: str) -> None:
        self._metrics = metrics
        self._labels = (kind, service, method)
        self._timed = kind == "unary"  # go-grpc-prometheus times unary RPCs only
        self._handled: dict[grpc.StatusCode, Any] = {}
        self._seconds: Any = None

    def observe(self, code: grpc.StatusCode, seconds: float) -> None:
        handled = self._handled.get(code)
        if handled is None:
            handled = self._handled[code] = self._metrics.handled.labels(*self._labels, _code_name(code))
        handled.inc()
        if self._timed:
            if self._seconds is None:
                self._seconds = self._metrics.handling_seconds.labels(*self._labels)
            self._seconds.observe(seconds)


def _code_name(code: grpc.StatusCode) -> str:
    # go-grpc-prometheus labels codes by their Go names: OK, NotFound, OutOfRange...
    return (
        "".join(part.capitalize() for part in code.name.split("_"))
        if code is not grpc.StatusCode.OK
        else "OK"
    )


class State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


def split_host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


class MetricsServer:
    """Serves ``GET /metrics`` on ``address`` (HOST:PORT; port 0 picks a free one)."""

    def __init__(self, metrics: KineMetrics, backend: types.Backend, *, address: str) -> None:
        self._metrics = metrics
        self._backend = backend
        self._host, self._port = split_host_port(address)
        self._server: asyncio.Server | None = None
        self.state = State.NEW

    @property
    def address(self) -> str:
        return f"{self._host}:{self._port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self._host, self._port)
        self._port = self._server.sockets[0].getsockname()[1]
        self.state = State.RUNNING
        logger.info("kine metrics listening on http://%s/metrics", self.address)

    async def stop(self) -> None:
        if self._server is None or self.state is State.STOPPED:
            return
        self.state = State.STOPPED
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_READ_TIMEOUT):
                request_line = await reader.readline()
                for _ in range(_MAX_HEADER_LINES):
                    if (await reader.readline()).strip() == b"":
                        break
            status, content_type, body = await self._respond(request_line)
            head = f"HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            writer.write(head.encode() + b"Connection: close\r\n\r\n" + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass  # a client that stalls or leaves gets nothing
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _respond(self, request_line: bytes) -> tuple[str, str, bytes]:
        parts = request_line.split()
        if len(parts) < 2 or parts[0] not in (b"GET", b"HEAD"):
            return "405 Method Not Allowed", "text/plain", b"method not allowed\n"
        if parts[1].split(b"?")[0] != b"/metrics":
            return "404 Not Found", "text/plain", b"not found\n"
        await self._metrics.refresh(self._backend)
        body = self._metrics.render()
        return "200 OK", prometheus_client.CONTENT_TYPE_LATEST, b"" if parts[0] == b"HEAD" else body
