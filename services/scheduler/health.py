"""A tiny HTTP/1.1 responder for ``/healthz``, ``/livez``, ``/readyz`` and ``/metrics`` on loopback.

The scheduler serves nothing else, so a web framework would be most of its memory; this reads
one request line and its headers, answers, and closes the connection (``Connection: close``).
It listens on loopback only (the settings refuse anything else): plain HTTP, no credentials.
Probes are plain callables so the component decides what "healthy" means.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from services.machinery import tasks

log = logging.getLogger(__name__)

READ_TIMEOUT = 5.0  # seconds a client gets to send its request head
MAX_HEAD = 16 * 1024

Probe = Callable[[], tuple[bool, str]]  # (ok, detail)
MetricsRender = Callable[[], tuple[bytes, str]]  # (body, content type)


class HealthServer:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        healthy: Probe,
        ready: Probe,
        metrics: MetricsRender,
        name: str = "scheduler",
    ) -> None:
        self.host, self.port = host, port
        self._healthy, self._ready, self._metrics = healthy, ready, metrics
        self._name = name
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("%s health and metrics on http://%s:%d", self._name, self.host, self.port)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await tasks.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
            path = rest.partition(" ")[0].partition("?")[0]
            status, body, content_type = self._answer(method, path)
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode("latin-1")
                + (b"" if method == "HEAD" else body)
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # a client that went away or sent garbage gets nothing
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass

    def _answer(self, method: str, path: str) -> tuple[str, bytes, str]:
        text = "text/plain; charset=utf-8"
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", b"method not allowed\n", text
        if path == "/metrics":
            body, content_type = self._metrics()
            return "200 OK", body, content_type
        probe = {"/healthz": self._healthy, "/livez": self._healthy, "/readyz": self._ready}.get(path)
        if probe is None:
            return "404 Not Found", b"404 page not found\n", text
        ok, detail = probe()
        if ok:
            return "200 OK", b"ok", text
        return "503 Service Unavailable", f"{detail}\n".encode(), text
