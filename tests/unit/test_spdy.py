"""SPDY/3.1 framing, header compression and the session kubectl's port-forward talks to.

Known bytes come from the frame layouts of the SPDY/3 draft; the zlib header of the first block
names the dictionary by its Adler-32 (0xe3c6a7c2), which is what Go's reader (kubectl) checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import zlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import uvicorn

from services.apiserver import app as app_
from services.apiserver import builtin, registry, spdy, spdyupgrade, tls
from services.apiserver.auth import types as auth_types


def test_the_dictionary_is_the_spdy3_one() -> None:
    assert len(spdy.DICTIONARY) == 1423
    assert spdy.DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert spdy.DICTIONARY.endswith(b"utf-8charset=iso-8859-1,utf-,*,enq=0.")
    assert zlib.adler32(spdy.DICTIONARY) == 0xE3C6A7C2


def test_control_and_data_frames_have_the_draft_layout() -> None:
    assert spdy.ping(1) == bytes.fromhex("80030006 00000004 00000001")
    assert spdy.rst_stream(3, spdy.CANCEL) == bytes.fromhex("80030003 00000008 00000003 00000005")
    assert spdy.window_update(0, 32768) == bytes.fromhex("80030009 00000008 00000000 00008000")
    assert spdy.goaway(5) == bytes.fromhex("80030007 00000008 00000005 00000000")
    assert spdy.settings({spdy.SETTINGS_INITIAL_WINDOW_SIZE: 10}) == bytes.fromhex(
        "80030004 0000000c 00000001 00000007 0000000a"
    )
    assert spdy.data(5, b"hi", fin=True) == bytes.fromhex("00000005 01000002 6869")
    assert spdy.syn_reply(1, b"xy", fin=True) == bytes.fromhex("80030002 01000006 00000001 7879")
    assert spdy.syn_stream(3, b"z", priority=2) == bytes.fromhex(
        "80030001 0000000b 00000003 00000000 4000 7a"
    )


def test_frames_are_reassembled_from_any_slicing() -> None:
    wire = spdy.ping(1) + spdy.data(3, b"abc" * 100) + spdy.rst_stream(3, spdy.CANCEL)
    reader = spdy.FrameReader()
    frames = [frame for byte in wire for frame in reader.feed(bytes([byte]))]
    assert frames == [
        spdy.ControlFrame(spdy.PING, 0, bytes.fromhex("00000001")),
        spdy.DataFrame(3, b"abc" * 100),
        spdy.ControlFrame(spdy.RST_STREAM, 0, bytes.fromhex("00000003 00000005")),
    ]
    assert spdy.FrameReader().feed(wire + wire[:5]) == frames  # a partial frame waits for the rest


def test_header_blocks_round_trip_with_lowercase_names_and_nul_joined_values() -> None:
    block = spdy.encode_block({"StreamType": "data", "x": ["a", "b"]})
    assert (
        block
        == bytes.fromhex("00000002 0000000a")
        + b"streamtype"
        + bytes.fromhex("00000004")
        + b"data"
        + bytes.fromhex("00000001")
        + b"x"
        + bytes.fromhex("00000003")
        + b"a\0b"
    )
    assert spdy.decode_block(block) == {"streamtype": ["data"], "x": ["a", "b"]}
    for broken in (block[:-1], block + b"\0", bytes.fromhex("00000001 000000ff")):
        with pytest.raises(spdy.SpdyError):
            spdy.decode_block(broken)


def test_header_compression_keeps_one_context_per_direction() -> None:
    compressor, decompressor = spdy.HeaderCompressor(), spdy.HeaderDecompressor()
    headers = {"streamtype": "error", "port": "8080", "requestid": "0"}
    first, second = compressor.compress(headers), compressor.compress(headers)
    assert first[:6] == bytes.fromhex("78f9 e3c6a7c2")  # zlib header with the dictionary's id
    assert first.endswith(b"\x00\x00\xff\xff") and second.endswith(b"\x00\x00\xff\xff")  # sync flushes
    assert len(second) < len(first)  # the second block refers back to the first
    assert decompressor.decompress(first) == decompressor.decompress(second) == {
        "streamtype": ["error"], "port": ["8080"], "requestid": ["0"],
    }  # fmt: skip
    with pytest.raises(spdy.SpdyError):
        spdy.HeaderDecompressor().decompress(second)  # without the context before it


# -- sessions ------------------------------------------------------------------------------------------


class Wire:
    """One direction of an in-memory transport: what a session sends, another is fed in order."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.sent: list[bytes] = []

    async def send(self, data: bytes) -> None:
        self.sent.append(data)
        await self.queue.put(data)

    async def pump(self, into: spdy.Session) -> None:
        while True:
            await into.feed(await self.queue.get())

    def frames(self) -> list[spdy.DataFrame | spdy.ControlFrame]:
        return spdy.FrameReader().feed(b"".join(self.sent))


class Pair:
    def __init__(self) -> None:
        self.to_server, self.to_client = Wire(), Wire()
        self.accepted: asyncio.Queue[spdy.Stream] = asyncio.Queue()
        self.server = spdy.Session(self.to_client.send, on_stream=self.accepted.put_nowait)
        self.client = spdy.Session(self.to_server.send, on_stream=lambda _: None, server=False)


@contextlib.asynccontextmanager
async def connected() -> AsyncIterator[Pair]:
    pair = Pair()
    pumps = [
        asyncio.create_task(pair.to_server.pump(pair.server), name="to server"),
        asyncio.create_task(pair.to_client.pump(pair.client), name="to client"),
    ]
    try:
        yield pair
    finally:
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)


async def settle() -> None:
    """Let every task run until none can make progress (no clock involved)."""
    for _ in range(50):
        await asyncio.sleep(0)


async def read_all(stream: spdy.Stream) -> bytes:
    out = b""
    while chunk := await stream.read():
        out += chunk
    return out


async def test_streams_carry_headers_and_data_both_ways_until_fin() -> None:
    async with connected() as pair:
        mine = await pair.client.open_stream({"streamtype": "data", "port": "80", "requestid": "7"})
        theirs = await pair.accepted.get()
        assert (mine.id, theirs.id) == (1, 1)
        assert (theirs.header("streamtype"), theirs.header("port"), theirs.header("requestid")) == (
            "data", "80", "7",
        )  # fmt: skip
        await mine.write(b"ping" * 20_000)
        await mine.close()
        assert await read_all(theirs) == b"ping" * 20_000
        await theirs.write(b"pong")
        await theirs.close()
        assert await read_all(mine) == b"pong"
        assert theirs.done and mine.done and not pair.server.streams
        second = await pair.client.open_stream({"streamtype": "error"})
        assert second.id == 3


async def test_reading_grants_credit_back_with_window_updates() -> None:
    async with connected() as pair:
        mine = await pair.client.open_stream({})
        theirs = await pair.accepted.get()
        await mine.write(bytes(40_000))
        assert len(await theirs.read()) == spdy.MAX_DATA
        await theirs.read()
        await settle()
        updates = [f.payload for f in pair.to_client.frames() if getattr(f, "type", 0) == spdy.WINDOW_UPDATE]
        # half a window (32 KiB) read: credit for the stream and for the session; the rest waits
        assert updates == [bytes.fromhex("00000001 00008000"), bytes.fromhex("00000000 00008000")]


async def test_a_peer_without_flow_control_is_not_waited_for() -> None:
    """kubectl (spdystream) never sends WINDOW_UPDATE: writing must not stop at 64 KiB."""
    wire = Wire()
    session = spdy.Session(wire.send, on_stream=lambda _: None)
    await session.feed(spdy.syn_stream(1, spdy.HeaderCompressor().compress({})))
    await session.streams[1].write(bytes(300_000))
    assert sum(len(f.data) for f in wire.frames() if isinstance(f, spdy.DataFrame)) == 300_000


async def test_a_peer_that_keeps_windows_gets_them_respected() -> None:
    wire = Wire()
    accepted: list[spdy.Stream] = []
    session = spdy.Session(wire.send, on_stream=accepted.append)
    await session.feed(spdy.settings({spdy.SETTINGS_INITIAL_WINDOW_SIZE: 10}))
    await session.feed(spdy.syn_stream(1, spdy.HeaderCompressor().compress({})))
    writing = asyncio.create_task(accepted[0].write(b"x" * 25))
    await settle()
    assert not writing.done()
    assert [f.data for f in wire.frames() if isinstance(f, spdy.DataFrame)] == [b"x" * 10]
    await session.feed(spdy.window_update(1, 100))
    await writing
    assert [f.data for f in wire.frames() if isinstance(f, spdy.DataFrame)] == [b"x" * 10, b"x" * 15]


async def test_pings_from_the_peer_are_echoed_and_answers_are_not() -> None:
    wire = Wire()
    session = spdy.Session(wire.send, on_stream=lambda _: None)
    await session.feed(spdy.ping(5) + spdy.ping(6))
    assert wire.sent == [spdy.ping(5)]


async def test_a_reset_ends_reading_and_writing() -> None:
    async with connected() as pair:
        mine = await pair.client.open_stream({})
        theirs = await pair.accepted.get()
        await mine.reset()
        await settle()
        assert await theirs.read() == b""
        with pytest.raises(spdy.SpdyError):
            await theirs.write(b"too late")


async def test_protocol_errors() -> None:
    wire = Wire()
    session = spdy.Session(wire.send, on_stream=lambda _: None)
    compressor = spdy.HeaderCompressor()
    await session.feed(spdy.syn_stream(2, compressor.compress({})))  # even: the server's own numbering
    await session.feed(spdy.data(9, b"nobody"))  # a stream never opened
    assert wire.sent == [spdy.rst_stream(2, spdy.PROTOCOL_ERROR), spdy.rst_stream(9, spdy.INVALID_STREAM)]
    with pytest.raises(spdy.SpdyError, match="version 2"):
        await session.feed(bytes.fromhex("80020006 00000004 00000001"))
    await session.feed(bytes.fromhex("8003ffff 00000000"))  # unknown control frames are ignored


async def test_feed_waits_while_a_stream_holds_too_much_unread() -> None:
    wire = Wire()
    accepted: list[spdy.Stream] = []
    session = spdy.Session(wire.send, on_stream=accepted.append)
    await session.feed(spdy.syn_stream(1, spdy.HeaderCompressor().compress({})))
    chunk = spdy.data(1, bytes(spdy.MAX_DATA))
    feeding = asyncio.create_task(session.feed(chunk * (spdy.HIGH_WATER // spdy.MAX_DATA + 1)))
    await settle()
    assert not feeding.done()
    await accepted[0].read()
    await feeding
    accepted[0].discard()  # nobody reads any more: later data is dropped, never waited for
    await session.feed(chunk * (spdy.HIGH_WATER // spdy.MAX_DATA + 1))


def test_the_websocket_protocol_wrapper_is_idempotent_and_selective() -> None:
    from uvicorn.protocols.websockets import websockets_sansio_impl

    from services.apiserver import websocket

    wrapped = websocket.with_kubernetes_subprotocols(websockets_sansio_impl.WebSocketsSansIOProtocol)
    assert issubclass(wrapped, websockets_sansio_impl.WebSocketsSansIOProtocol)
    assert websocket.with_kubernetes_subprotocols(wrapped) is wrapped
    other = type("OtherProtocol", (), {})  # e.g. uvicorn's legacy websockets protocol, left as it is
    assert websocket.with_kubernetes_subprotocols(other) is other


# -- kubectl's plain Upgrade: SPDY/3.1 (spdyupgrade) ---------------------------------------------------

POD_KEY = "/registry/pods/default/web"
POD = {"metadata": {"namespace": "default", "name": "web", "uid": "u1"},
       "spec": {"nodeName": "n1", "containers": [{"name": "main"}]}}  # fmt: skip


class _Stored:
    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj


class _Store:
    async def get(self, key: str) -> _Stored | None:
        return _Stored(POD) if key == POD_KEY else None


class _Api:
    """What the upgrade path reads of the API: the registry and the pods."""

    def __init__(self) -> None:
        self.registry = registry.Registry(builtin.builtin_resources())
        self.store = _Store()
        self.settings = None


class _Users:
    """Tokens "alice" (may do anything) and "bob" (may do nothing); the authorizer records its questions."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    async def authenticate(self, credentials: auth_types.Credentials) -> auth_types.UserInfo | None:
        token = credentials.bearer_token
        return auth_types.UserInfo(token) if token in ("alice", "bob") else None

    async def authorize(self, attributes: auth_types.Attributes) -> auth_types.Decision:
        self.asked.append((attributes.verb, f"{attributes.resource}/{attributes.subresource}"))
        return auth_types.Decision(attributes.user.name == "alice")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclasses.dataclass
class Upgraded:
    status: int
    headers: dict[str, list[str]]
    body: bytes
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


@pytest.fixture(params=["httptools", "h11"])
async def api_server(request: pytest.FixtureRequest) -> AsyncIterator[tuple[int, _Users]]:
    """The API app behind uvicorn's ``request.param`` HTTP protocol, as tls.py wires it (without TLS)."""
    users = _Users()
    application = app_.ApiApp(
        _Api(), authenticator=users, authorizer=users, credentials=tls.credentials_from_scope,  # type: ignore[arg-type]
        server_address="127.0.0.1",
    )  # fmt: skip
    config = uvicorn.Config(
        application, host="127.0.0.1", port=0, http=tls.http_protocol(request.param), ws="none",
        lifespan="off", log_level="warning",
    )  # fmt: skip
    server = _Server(config)
    serving = asyncio.create_task(server.serve(), name="test uvicorn")
    try:
        while not server.started:
            assert not serving.done(), "uvicorn did not start"
            await asyncio.sleep(0.01)
        yield server.servers[0].sockets[0].getsockname()[1], users
    finally:
        server.should_exit = True
        await serving


async def upgrade(
    port: int, path: str, *, token: str = "alice", protocols: tuple[str, ...] = (), method: str = "POST"
) -> Upgraded:
    """Send kubectl 1.20's upgrade request; the response's status, headers and (non-101) body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: k",
        "Connection: Upgrade",
        "Upgrade: SPDY/3.1",
        "Content-Length: 0",
    ]
    lines += [f"Authorization: Bearer {token}"] if token else []
    lines += [f"X-Stream-Protocol-Version: {protocol}" for protocol in protocols]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
    headers: dict[str, list[str]] = {}
    for line in head[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
    status = int(head[0].split()[1])
    body = b"" if status == 101 else await reader.readexactly(int(headers["content-length"][0]))
    return Upgraded(status, headers, body, reader, writer)


EXEC = "/api/v1/namespaces/default/pods/web/exec?command=true&stdout=true"
FORWARD = "/api/v1/namespaces/default/pods/web/portforward"


async def test_port_forward_switches_to_spdy_after_authorizing_create(api_server: tuple[int, _Users]) -> None:
    port, users = api_server
    answer = await upgrade(port, FORWARD, protocols=("portforward.k8s.io",))
    try:
        assert answer.status == 101
        assert answer.headers["upgrade"] == ["SPDY/3.1"]
        assert answer.headers["connection"] == ["Upgrade"]
        assert answer.headers["x-stream-protocol-version"] == ["portforward.k8s.io"]
        assert users.asked == [("create", "pods/portforward")]  # a POST: create only
        answer.writer.write(spdy.ping(1))  # the connection now speaks SPDY: our ping comes back
        reader = spdy.FrameReader()
        frames: list[Any] = []
        while not frames:
            frames = reader.feed(await answer.reader.read(64))
        assert frames == [spdy.ControlFrame(spdy.PING, 0, bytes.fromhex("00000001"))]
    finally:
        answer.writer.close()


async def test_a_get_upgrade_is_authorized_as_get_and_create(api_server: tuple[int, _Users]) -> None:
    port, users = api_server
    answer = await upgrade(port, FORWARD, protocols=("portforward.k8s.io",), method="GET")
    answer.writer.close()
    assert answer.status == 101
    assert users.asked == [("get", "pods/portforward"), ("create", "pods/portforward")]


def status_of(answer: Upgraded) -> dict[str, Any]:
    assert answer.headers["content-type"] == ["application/json"]
    status = json.loads(answer.body)
    assert (status["kind"], status["code"]) == ("Status", answer.status)
    return status


@pytest.mark.parametrize(
    ("token", "protocols", "path", "code", "message"),
    [
        ("", ("v4.channel.k8s.io",), EXEC, 401, "Unauthorized"),
        ("bob", ("v4.channel.k8s.io",), EXEC, 403, 'User "bob" cannot create resource "pods/exec"'),
        ("alice", (), EXEC, 400, "X-Stream-Protocol-Version is required"),
        ("alice", ("v9.channel.k8s.io",), EXEC, 403, "unable to negotiate protocol"),
        ("alice", ("v4.channel.k8s.io",), FORWARD, 403, "unable to negotiate protocol"),
        ("alice", ("v4.channel.k8s.io",), EXEC.replace("web", "nope"), 404, 'pods "nope" not found'),
        ("alice", ("v4.channel.k8s.io",), EXEC.replace("command=true&", ""), 400, "at least one command"),
    ],
)
async def test_refusals_are_http_statuses_before_the_switch(
    api_server: tuple[int, _Users], token: str, protocols: tuple[str, ...], path: str, code: int, message: str
) -> None:
    port, _ = api_server
    answer = await upgrade(port, path, token=token, protocols=protocols)
    try:
        assert answer.status == code
        assert message in status_of(answer)["message"]
        assert await answer.reader.read() == b""  # and the connection is closed
    finally:
        answer.writer.close()


def test_the_protocol_wrapper_keeps_the_base_class() -> None:
    from uvicorn.protocols.http import h11_impl

    wrapped = spdyupgrade.with_spdy_upgrades(h11_impl.H11Protocol)
    assert issubclass(wrapped, h11_impl.H11Protocol)
    assert wrapped.__name__ == "SpdyUpgradesH11Protocol"
