"""The client's HTTP/1.1 pool against a real scripted server on a loopback port.

The server (``asyncio.start_server``) parses each request head and body and answers with raw
bytes chosen by the test, so framing the API server never produces can be tried too: chunked
bodies, ``Connection: close``, idle connections the server drops, answers cut short, silence.
The client side is the public ``ApiClient`` over ``http.Pool`` (plain http, as a loopback proxy
would be); TLS with client certificates is covered by ``tests/integration/test_client.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest

from services.client import api, config, errors, http, resources

CM = resources.CONFIGMAPS


@dataclasses.dataclass
class Seen:
    connection: int
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


Answer = bytes | None  # raw bytes to write; None: close the connection without answering


class Server:
    """A loopback HTTP/1.1 server answering each request with ``script(seen)``; counts connections."""

    def __init__(self, script: Callable[[Seen], Answer]) -> None:
        self.script = script
        self.seen: list[Seen] = []
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self.writers:
            writer.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        self.writers.append(writer)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                method, target, _ = head[0].split(" ")
                headers = dict(line.split(": ", 1) for line in head[1:] if line)
                headers = {k.lower(): v for k, v in headers.items()}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                seen = Seen(number, method, target, headers, body)
                self.seen.append(seen)
                answer = self.script(seen)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if b"connection: close" in answer.lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def reply(body: Any, *, status: int = 200, extra: str = "") -> bytes:
    content = orjson.dumps(body)
    head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(content)}\r\n{extra}\r\n"
    return head.encode() + content


def chunked(*parts: bytes, status: int = 200, end: bool = True) -> bytes:
    out = f"HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    for part in parts:
        out += b"%x\r\n%s\r\n" % (len(part), part)
    return out + (b"0\r\n\r\n" if end else b"")


def status_body(code: int, reason: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason,
            "message": reason.lower()}  # fmt: skip


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Callable[[Seen], Answer]], Any]]:
    servers: list[Server] = []

    async def start(script: Callable[[Seen], Answer]) -> Server:
        server = Server(script)
        await server.start()
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            await server.stop()


def client_for(server: Server, **kwargs: Any) -> api.ApiClient:
    cfg = config.ClientConfig(server=f"http://127.0.0.1:{server.port}", token="secret-token")
    return api.ApiClient(cfg, **kwargs)


async def test_requests_share_one_keep_alive_connection_and_carry_the_headers(serve: Any) -> None:
    server = await serve(lambda seen: reply({"kind": "ConfigMap", "n": len(server.seen)}))
    async with client_for(server, user_agent="tester") as client:
        assert (await client.get(CM, "a", namespace="ns"))["n"] == 1
        created = await client.create(CM, {"metadata": {"name": "b", "namespace": "ns"}}, field_manager="m")
        assert created["n"] == 2
        await client.list(CM, namespace="ns", label_selector="app in (x,y)", page_size=0)
    assert server.connections == 1
    first, second, third = server.seen
    assert (first.method, first.target) == ("GET", "/api/v1/namespaces/ns/configmaps/a")
    assert first.headers["host"] == f"127.0.0.1:{server.port}"
    assert first.headers["authorization"] == "Bearer secret-token"
    assert first.headers["user-agent"] == "tester" and first.headers["accept"] == "application/json"
    assert (second.method, second.target) == ("POST", "/api/v1/namespaces/ns/configmaps?fieldManager=m")
    assert orjson.loads(second.body) == {"metadata": {"name": "b", "namespace": "ns"}}
    assert second.headers["content-type"] == "application/json"
    assert third.target == "/api/v1/namespaces/ns/configmaps?labelSelector=app+in+%28x%2Cy%29"


async def test_chunked_and_closing_answers_are_read_whole(serve: Any) -> None:
    answers = iter([chunked(b'{"kind":', b'"Pod"}'), reply({"kind": "Node"}, extra="Connection: close\r\n"),
                    reply({"kind": "Lease"})])  # fmt: skip
    server = await serve(lambda seen: next(answers))
    async with client_for(server) as client:
        assert await client.get(resources.PODS, "p", namespace="ns") == {"kind": "Pod"}
        assert await client.get(resources.NODES, "n") == {"kind": "Node"}
        assert await client.get(resources.LEASES, "l", namespace="ns") == {"kind": "Lease"}
    assert [seen.connection for seen in server.seen] == [1, 1, 2]


async def test_a_connection_the_server_dropped_while_idle_is_replaced_and_the_request_sent_again(
    serve: Any,
) -> None:
    def script(seen: Seen) -> Answer:
        if seen.connection == 1 and len(server.seen) == 2:
            return None  # as if its keep-alive timeout struck just as the request arrived
        return reply({"ok": seen.connection})

    server = await serve(script)
    async with client_for(server) as client:
        assert await client.get(CM, "a", namespace="ns") == {"ok": 1}
        assert await client.create(CM, {"metadata": {"name": "b", "namespace": "ns"}}) == {"ok": 2}
    assert [(s.connection, s.method) for s in server.seen] == [(1, "GET"), (1, "POST"), (2, "POST")]


async def test_errors_map_to_api_errors_and_throttling_is_retried(serve: Any) -> None:
    answers = iter([reply(status_body(429, "TooManyRequests"), status=429, extra="Retry-After: 0\r\n"),
                    reply({"kind": "ConfigMap"}),
                    reply(status_body(409, "AlreadyExists"), status=409),
                    reply("<html>", status=502)])  # fmt: skip
    server = await serve(lambda seen: next(answers))
    async with client_for(server) as client:
        assert await client.get(CM, "a", namespace="ns") == {"kind": "ConfigMap"}
        with pytest.raises(errors.ApiError) as exists:
            await client.create(CM, {"metadata": {"name": "a", "namespace": "ns"}})
        assert errors.is_already_exists(exists.value)
        with pytest.raises(errors.ApiError) as gateway:
            await client.get(CM, "a", namespace="ns")
        assert gateway.value.code == 502
    assert server.connections == 1


async def test_failures_below_http_are_transport_errors(serve: Any) -> None:
    answers = iter(
        [None, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{}", b"garbage\r\n\r\n"]
    )
    server = await serve(lambda seen: next(answers))
    async with client_for(server) as client:
        for _ in range(3):  # no answer at all; a body cut short; not HTTP
            with pytest.raises(errors.TransportError):
                await client.get(CM, "a", namespace="ns")
    await server.stop()
    async with client_for(server) as client:
        with pytest.raises(errors.TransportError):
            await client.get(CM, "a", namespace="ns")  # refused


async def test_a_silent_server_times_out(serve: Any) -> None:
    server = await serve(lambda seen: b"")
    async with client_for(server, timeout=0.2) as client:
        with pytest.raises(errors.TransportError, match="no answer"):
            await client.get(CM, "a", namespace="ns")


def event(kind: str, rv: str) -> bytes:
    return orjson.dumps({"type": kind, "object": {"kind": "ConfigMap", "metadata": {"resourceVersion": rv}}})


async def test_a_watch_reads_events_across_chunks_and_hands_its_connection_back(serve: Any) -> None:
    lines = event("ADDED", "5") + b"\n" + event("BOOKMARK", "7") + b"\n"

    def script(seen: Seen) -> Answer:
        if "watch=true" in seen.target:
            return chunked(lines[:10], lines[10:50], lines[50:])
        return reply({"kind": "ConfigMap"})

    server = await serve(script)
    async with client_for(server) as client:
        stream = client.watch(CM, namespace="ns", resource_version="4", timeout_seconds=5)
        async with stream:
            got = [(kind, obj["metadata"]["resourceVersion"]) async for kind, obj in stream]
        assert got == [("ADDED", "5"), ("BOOKMARK", "7")] and stream.resource_version == "7"
        await client.get(CM, "a", namespace="ns")
    assert server.seen[0].target == (
        "/api/v1/namespaces/ns/configmaps?watch=true&resourceVersion=4&allowWatchBookmarks=true&timeoutSeconds=5"
    )
    assert [s.connection for s in server.seen] == [1, 1]


async def test_a_watch_error_event_and_a_refused_watch_raise_api_errors(serve: Any) -> None:
    gone = orjson.dumps({"type": "ERROR", "object": status_body(410, "Expired")}) + b"\n"
    answers = iter([chunked(gone), reply(status_body(403, "Forbidden"), status=403)])
    server = await serve(lambda seen: next(answers))
    async with client_for(server) as client:
        with pytest.raises(errors.ApiError) as expired:
            async with client.watch(CM, resource_version="1") as stream:
                async for _ in stream:
                    pass
        assert errors.is_gone(expired.value)
        with pytest.raises(errors.ApiError) as forbidden:
            async with client.watch(CM):
                pass
        assert forbidden.value.code == 403


async def test_closing_a_watch_from_another_task_ends_its_reader_quietly(serve: Any) -> None:
    server = await serve(lambda seen: chunked(event("ADDED", "1") + b"\n", end=False))
    async with client_for(server) as client:
        stream = client.watch(CM)
        seen: list[str] = []
        first = asyncio.Event()

        async def read() -> None:
            async with stream:
                async for kind, _ in stream:
                    seen.append(kind)
                    first.set()

        reader = asyncio.create_task(read(), name="watch reader")
        await asyncio.wait_for(first.wait(), 5)
        await stream.aclose()
        await asyncio.wait_for(reader, 5)
    assert seen == ["ADDED"]


async def test_a_watch_cut_off_mid_stream_raises_a_transport_error(serve: Any) -> None:
    cut = chunked(event("ADDED", "1") + b"\n", event("ADDED", "2") + b"\n", end=False)[:-20]
    server = await serve(lambda seen: cut.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1))
    async with client_for(server) as client:
        seen: list[str] = []
        with pytest.raises(errors.TransportError):
            async with client.watch(CM) as stream:
                async for _, obj in stream:
                    seen.append(obj["metadata"]["resourceVersion"])
    assert seen == ["1"]


async def test_a_pool_refuses_a_url_it_cannot_speak() -> None:
    with pytest.raises(errors.ConfigError):
        http.Pool("ftp://example")
