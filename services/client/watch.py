"""One watch stream: newline-delimited JSON events, decoded line by line.

The server writes one ``{"type": ..., "object": ...}`` per line (reference §6.1). Lines are
split on ``\\n`` only, as the official clients do, and each is decoded once with orjson.
``ERROR`` events carry a ``Status``; they are raised as ``ApiError`` (410 ``Expired`` means
"relist"), so an iterator of events never yields one. ``resource_version`` follows the stream,
bookmarks included, and is where a new watch resumes after this one ends.

Use it as a context manager so the connection goes back to the pool when the caller stops
early; iterating to the end (or to an error) closes it too.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import httpx
import orjson

from services.client import errors, http
from services.client.resources import Resource

log = logging.getLogger(__name__)

EventType = str  # ADDED, MODIFIED, DELETED, BOOKMARK
INITIAL_EVENTS_END = "k8s.io/initial-events-end"


class Watch:
    """One watch request, opened on ``open`` (or ``async with``) and read as ``async for``.

    The request is kept as an ``httpx.Request`` only as a parsed, editable URL (tests add query
    parameters to it); it is sent through the client's ``http.Transport``, not through httpx.
    """

    def __init__(
        self,
        transport: http.Transport,
        target: str,
        *,
        resource: Resource,
        read_timeout: float | None = None,
    ) -> None:
        self._transport = transport
        self._request = httpx.Request("GET", target)
        self.resource = resource
        self.resource_version = self._request.url.params.get("resourceVersion", "")
        self._read_timeout = read_timeout
        self._response: http.Stream | None = None
        self._iterator: AsyncGenerator[tuple[EventType, dict[str, Any]]] | None = None
        self._closed = False

    async def __aenter__(self) -> Watch:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Send the request; raise ``ApiError`` when the server refuses the watch itself."""
        if self._response is not None:
            return
        target = self._request.url.raw_path.decode("ascii")
        try:
            response = await self._transport.stream("GET", target)
        except errors.TransportError as exc:
            raise errors.TransportError(f"watch {self.resource}: {exc}") from exc
        if response.status >= 400:
            try:
                content = await response.read()
            except errors.TransportError as exc:
                raise errors.TransportError(f"watch {self.resource}: {exc}") from exc
            finally:
                await response.aclose()
            raise errors.from_body(response.status, content)
        self._response = response

    def __aiter__(self) -> AsyncIterator[tuple[EventType, dict[str, Any]]]:
        if self._iterator is None:  # one stream: iterating again goes on where the last loop stopped
            self._iterator = self._events()
        return self._iterator

    async def _events(self) -> AsyncGenerator[tuple[EventType, dict[str, Any]]]:
        if self._closed:
            return
        await self.open()
        assert self._response is not None
        pending = b""
        try:
            async for chunk in self._response.chunks(read_timeout=self._read_timeout):
                pending += chunk
                if b"\n" not in chunk:
                    continue
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield self._decode(line)
            if pending.strip():
                yield self._decode(pending)
        except errors.TransportError:
            if not self._closed:  # a stream we closed ourselves ends quietly
                raise
        finally:
            await self._close_response()

    def _decode(self, line: bytes) -> tuple[EventType, dict[str, Any]]:
        try:
            event = orjson.loads(line)
            kind, obj = event["type"], event["object"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise errors.TransportError(f"watch {self.resource}: undecodable event {line[:200]!r}") from None
        if kind == "ERROR":
            raise errors.from_status(int(obj.get("code") or 500), obj)
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if rv:
            self.resource_version = rv
        return kind, obj

    async def aclose(self) -> None:
        """Stop reading and hand the connection back (idempotent, from any task)."""
        self._closed = True
        await self._close_response()  # first: a read pending in another task then fails and ends
        iterator, self._iterator = self._iterator, None
        if iterator is not None and not iterator.ag_running:
            await iterator.aclose()

    async def _close_response(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            await response.aclose()


def is_initial_events_end(obj: dict[str, Any]) -> bool:
    """True for the bookmark that ends a ``sendInitialEvents`` watch's initial ADDED events."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return annotations.get(INITIAL_EVENTS_END) == "true"
