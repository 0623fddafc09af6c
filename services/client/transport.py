"""An httpx transport that calls an ASGI app in this process, streaming the response.

The edge profile folds the API server, scheduler, controllers and agent into one event loop;
their clients then call the API server's ASGI app directly instead of going through TLS and a
socket. ``httpx.ASGITransport`` cannot serve them: it collects the whole body before returning,
and a watch never ends. Here the app runs in a task of its own per request, ``send`` feeds a
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
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import httpx

log = logging.getLogger(__name__)

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]

_END = object()  # queue marker: the app finished the body (or returned)
CLOSE_TIMEOUT = 5.0  # seconds an app gets to return after the client left


class AsgiTransport(httpx.AsyncBaseTransport):
    def __init__(self, app: ASGIApp, *, user: str, groups: Sequence[str] = ()) -> None:
        self.app = app
        self.user = user
        self.groups = list(groups)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        exchange = _Exchange(self.app, self._scope(request), body)
        status, headers = await exchange.start()
        return httpx.Response(status, headers=headers, stream=exchange, request=request)

    def _scope(self, request: httpx.Request) -> dict[str, Any]:
        url = request.url
        port = url.port or (443 if url.scheme == "https" else 80)
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": url.scheme,
            "path": url.path,
            "raw_path": url.raw_path.split(b"?", 1)[0],
            "query_string": url.query,
            "root_path": "",
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "server": (url.host, port),
            "client": ("127.0.0.1", 0),
            "extensions": {"tls": {"client_cert_subject": {"cn": self.user, "o": list(self.groups)}}},
        }


class _Exchange(httpx.AsyncByteStream):
    """One request: the app's task, the chunks it sent, and whether the client has left."""

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

    async def start(self) -> tuple[int, list[tuple[bytes, bytes]]]:
        # Owned by this exchange: ``aclose`` (or a failed start) always awaits it.
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"asgi {self._scope['method']} {self._scope['path']}"
        )
        try:
            return await asyncio.shield(self._started)
        except BaseException:
            await self.aclose()
            raise

    async def _run(self) -> None:
        try:
            await self._app(self._scope, self._receive, self._send)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not self._started.done():
                self._started.set_exception(httpx.TransportError(f"the in-process API failed: {exc!r}"))
            else:
                log.exception("in-process request %s %s failed mid-stream", *self._describe())
        finally:
            if not self._started.done():
                self._started.set_exception(
                    httpx.RemoteProtocolError("the in-process API returned no response")
                )
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

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            chunk = await self._chunks.get()
            if chunk is _END:
                return
            yield chunk

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
