"""A transport that calls an ASGI app in this process, streaming the response.

The edge profile folds the API server, scheduler, controllers and agent into one event loop;
their clients then call the API server's ASGI app directly instead of going through TLS and a
socket. httpx's ``ASGITransport`` cannot serve them: it collects the whole body before
returning, and a watch never ends. Here the app runs in a task of its own per request, ``send`` feeds a
queue that the response stream reads, and closing the response tells the app the client left
(``http.disconnect``) and then waits for the app to return, so no task outlives its response.

Who is calling is stated, not proved: the app's TLS extension carries the subject a verified
client certificate would have carried (``user`` as CN, ``groups`` as O), which is exactly what
the API server's authenticator reads from a real connection. Only code inside the process can
build such a transport, and that code could read the keys anyway.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

from services.client import errors, http

log = logging.getLogger(__name__)

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]

_END = object()  # queue marker: the app finished the body (or returned)
CLOSE_TIMEOUT = 5.0  # seconds an app gets to return after the client left


class AsgiTransport:
    """``http.Transport`` over an ASGI app: each request runs the app in a task of its own."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        user: str,
        groups: Sequence[str] = (),
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.app = app
        self.timeout = timeout  # seconds until a whole answer; a stream only until its head
        self.user = user
        self.groups = list(groups)
        self._headers = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()
        ]

    async def request(
        self, method: str, target: str, *, body: bytes | None = None, content_type: str = http.JSON
    ) -> http.Response:
        timeout = self.timeout
        exchange = await self._start(method, target, body, content_type)
        try:
            async with asyncio.timeout(timeout):
                content = await exchange.read()
        except TimeoutError:
            raise errors.TransportError(f"{method} {target}: no answer within {timeout:g}s") from None
        finally:
            await exchange.aclose()
        return http.Response(exchange.status, exchange.headers, content)

    async def stream(self, method: str, target: str) -> _Exchange:
        try:
            async with asyncio.timeout(self.timeout):
                return await self._start(method, target, None, http.JSON)
        except TimeoutError:
            raise errors.TransportError(f"{method} {target}: no answer within {self.timeout:g}s") from None

    async def aclose(self) -> None:
        """Nothing pooled: each exchange ends with its response."""

    async def _start(self, method: str, target: str, body: bytes | None, content_type: str) -> _Exchange:
        headers = list(self._headers)
        if body is not None:
            headers += [(b"content-type", content_type.encode("latin-1")),
                        (b"content-length", b"%d" % len(body))]  # fmt: skip
        exchange = _Exchange(self.app, self._scope(method, target, headers), body or b"")
        await exchange.start()
        return exchange

    def _scope(self, method: str, target: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
        path, _, query = target.partition("?")
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "https",
            "path": urllib.parse.unquote(path),
            "raw_path": path.encode("latin-1"),
            "query_string": query.encode("latin-1"),
            "root_path": "",
            "headers": [(b"host", b"in-process"), *headers],
            "server": ("in-process", 443),
            "client": ("127.0.0.1", 0),
            "extensions": {"tls": {"client_cert_subject": {"cn": self.user, "o": list(self.groups)}}},
        }


class _Exchange:
    """One request: the app's task, the chunks it sent, and whether the client has left.

    It is also the response (``http.Stream``): ``status`` and ``headers`` once ``start`` returns.
    """

    def __init__(self, app: ASGIApp, scope: dict[str, Any], body: bytes) -> None:
        self._app = app
        self._scope = scope
        self._body: bytes | None = body
        # Unbounded, unlike a socket's buffer: the app never waits on this reader. The readers of
        # long streams are informers, which take each event as it comes.
        self._chunks: asyncio.Queue[Any] = asyncio.Queue()
        self._started: asyncio.Future[tuple[int, list[tuple[bytes, bytes]]]] = (
            asyncio.get_running_loop().create_future()
        )
        self._left = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.status = 0
        self.headers: dict[str, str] = {}

    async def start(self) -> None:
        # Owned by this exchange: ``aclose`` (or a failed start) always awaits it.
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"asgi {self._scope['method']} {self._scope['path']}"
        )
        try:
            status, raw = await asyncio.shield(self._started)
        except BaseException:
            await self.aclose()
            raise
        self.status = status
        for name, value in raw:
            key, text = name.decode("latin-1").lower(), value.decode("latin-1")
            self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    async def _run(self) -> None:
        try:
            await self._app(self._scope, self._receive, self._send)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not self._started.done():
                self._started.set_exception(errors.TransportError(f"the in-process API failed: {exc!r}"))
            else:
                log.exception("in-process request %s %s failed mid-stream", *self._describe())
        finally:
            if not self._started.done():
                self._started.set_exception(errors.TransportError("the in-process API returned no response"))
            self._chunks.put_nowait(_END)

    async def _receive(self) -> dict[str, Any]:
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await self._left.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            if not self._started.done():
                self._started.set_result((message["status"], list(message.get("headers") or ())))
        elif message["type"] == "http.response.body":
            if message.get("body"):
                self._chunks.put_nowait(message["body"])
            if not message.get("more_body", False):
                self._chunks.put_nowait(_END)

    async def chunks(self, *, read_timeout: float | None = None) -> AsyncIterator[bytes]:
        """The body as the app sends it; ``read_timeout`` is moot in process (no half-open sockets)."""
        while True:
            chunk = await self._chunks.get()
            if chunk is _END:
                return
            yield chunk

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    async def aclose(self) -> None:
        """The client is done: the app sees ``http.disconnect``; a stuck app is cancelled."""
        self._left.set()
        task, self._task = self._task, None
        if task is None:
            return
        # asyncio.wait, not wait_for(shield(...)): on Python 3.11 the latter can swallow our own
        # cancellation (CPython gh-86296), leaving the caller running after it was cancelled.
        try:
            done, _ = await asyncio.wait({task}, timeout=CLOSE_TIMEOUT)
        except asyncio.CancelledError:
            task.cancel()  # we are being cancelled: do not leave the app running behind us
            raise
        if not done:
            log.warning("in-process request %s %s ignored the disconnect; cancelling it", *self._describe())
            task.cancel()
            await asyncio.wait([task])  # waits without raising the task's own cancellation

    def _describe(self) -> tuple[str, str]:
        return self._scope["method"], self._scope["path"]
