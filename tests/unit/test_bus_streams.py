"""Request/reply and flow-controlled streams on the in-memory bus (the NATS bus runs the same ones in
tests/integration/test_tunnel.py)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

import services.bus
from services.bus import streams, types


def unique_url() -> str:
    return f"memory://streams-{uuid.uuid4().hex[:8]}"


async def test_request_gets_the_responders_reply() -> None:
    bus = await services.bus.connect(unique_url())
    try:

        async def upper(subject: str, payload: bytes) -> bytes:
            return subject.encode() + b":" + payload.upper()

        await bus.serve("svc.echo", upper)
        assert await bus.request("svc.echo", b"hi", within=5) == b"svc.echo:HI"
    finally:
        await bus.close()


async def test_request_without_responders_fails_at_once() -> None:
    bus = await services.bus.connect(unique_url())
    try:
        with pytest.raises(types.NoResponders):
            await bus.request("svc.nobody", b"", within=60)
    finally:
        await bus.close()


async def test_request_times_out_when_the_responder_never_answers() -> None:
    bus = await services.bus.connect(unique_url())
    release = asyncio.Event()
    try:

        async def stuck(subject: str, payload: bytes) -> bytes:
            await release.wait()
            return b""

        await bus.serve("svc.stuck", stuck)
        with pytest.raises(types.RequestTimeout):
            await bus.request("svc.stuck", b"", within=0.05)
    finally:
        release.set()
        await bus.close()


async def test_new_inboxes_are_unique() -> None:
    bus = await services.bus.connect(unique_url())
    assert bus.new_inbox() != bus.new_inbox()
    await bus.close()


class Echo:
    """A stream server whose sessions echo channel 0 back on channel 1 and close when the peer closes 0."""

    def __init__(self) -> None:
        self.headers: list[dict[str, Any]] = []
        self.hold = asyncio.Event()
        self.hold.set()

    async def accept(self, subject: str, header: dict[str, Any]) -> streams.Session:
        if header.get("refuse"):
            raise streams.Refused(404, "NotFound", "no such thing")
        self.headers.append(header)

        async def session(stream: streams.Stream) -> None:
            await self.hold.wait()
            async for frame in stream:
                if frame.closed:
                    await stream.send(2, b"bye")
                    return
                await stream.send(1, frame.data)

        return session


async def serving(
    bus: types.Bus, echo: Echo, *, heartbeat: float = streams.HEARTBEAT
) -> streams.StreamServer:
    server = streams.StreamServer(
        bus, subject="t.open", prefix="t.s", accept=echo.accept, heartbeat=heartbeat
    )
    await server.start()
    return server


async def test_a_stream_carries_data_both_ways_and_ends() -> None:
    bus = await services.bus.connect(unique_url())
    echo = Echo()
    server = await serving(bus, echo)
    try:
        stream = await streams.open_stream(bus, "t.open", {"op": "echo"}, prefix="t.s", within=5)
        payload = bytes(range(256)) * 1000  # several frames and more than one window
        sending = asyncio.create_task(stream.send(0, payload))
        received = b""
        while len(received) < len(payload):
            frame = await stream.receive()
            assert frame is not None and frame.channel == 1
            received += frame.data
        await sending
        assert received == payload
        await stream.close_channel(0)
        assert await stream.receive() == streams.Frame(2, b"bye")
        assert await stream.receive() is None  # the session returned: the server ended the stream
        assert stream.error == ""
        await stream.close()
        assert echo.headers == [{"op": "echo"}]
    finally:
        await server.stop()
        await bus.close()


async def test_a_sender_waits_for_credit_while_the_receiver_does_not_read() -> None:
    bus = await services.bus.connect(unique_url())
    echo = Echo()
    echo.hold.clear()  # the session does not read yet
    server = await serving(bus, echo)
    try:
        stream = await streams.open_stream(bus, "t.open", {}, prefix="t.s", within=5)
        await stream.send(0, b"x" * streams.WINDOW)  # exactly the window: accepted without waiting
        blocked = asyncio.create_task(stream.send(0, b"y"))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not blocked.done()
        echo.hold.set()
        await blocked
        await stream.close()
    finally:
        await server.stop()
        await bus.close()


async def test_a_refusal_carries_code_and_message() -> None:
    bus = await services.bus.connect(unique_url())
    server = await serving(bus, Echo())
    try:
        with pytest.raises(streams.Refused) as info:
            await streams.open_stream(bus, "t.open", {"refuse": True}, prefix="t.s", within=5)
        assert (info.value.code, info.value.reason, info.value.message) == (404, "NotFound", "no such thing")
    finally:
        await server.stop()
        await bus.close()


async def test_opening_without_a_server_says_no_responders() -> None:
    bus = await services.bus.connect(unique_url())
    try:
        with pytest.raises(types.NoResponders):
            await streams.open_stream(bus, "t.open", {}, prefix="t.s", within=5)
    finally:
        await bus.close()


async def test_closing_the_opener_ends_the_session_on_the_server() -> None:
    bus = await services.bus.connect(unique_url())
    server = await serving(bus, Echo())
    try:
        stream = await streams.open_stream(bus, "t.open", {}, prefix="t.s", within=5)
        await stream.send(0, b"ping")
        assert await stream.receive() == streams.Frame(1, b"ping")
        assert server.sessions == 1
        await stream.close()
        async with asyncio.timeout(5):
            while server.sessions:  # noqa: ASYNC110 - the sessions end in tasks of their own
                await asyncio.sleep(0.01)
    finally:
        await server.stop()
        await bus.close()


async def test_stopping_the_server_ends_its_open_streams() -> None:
    bus = await services.bus.connect(unique_url())
    server = await serving(bus, Echo())
    try:
        stream = await streams.open_stream(bus, "t.open", {}, prefix="t.s", within=5)
        await server.stop()
        await server.stop()  # idempotent
        assert await stream.receive() is None
        await stream.close()
    finally:
        await bus.close()


async def test_a_gap_in_sequence_numbers_breaks_the_stream() -> None:
    bus = await services.bus.connect(unique_url())
    receiver = streams.Stream(bus, send_to="gap.out", receive_on="gap.in")
    await receiver.start()
    try:
        await bus.publish("gap.in", streams.HEADER.pack(streams.DATA, 1, 1) + b"one")
        await bus.publish("gap.in", streams.HEADER.pack(streams.DATA, 1, 3) + b"three")
        assert await receiver.receive() == streams.Frame(1, b"one")
        assert await receiver.receive() is None
        assert "lost 1 frames" in receiver.error
    finally:
        await receiver.close()
        await bus.close()


async def test_heartbeats_detect_a_vanished_peer() -> None:
    bus = await services.bus.connect(unique_url())
    # Nobody publishes to "quiet.in": the peer is as good as killed with -9.
    receiver = streams.Stream(bus, send_to="quiet.out", receive_on="quiet.in", heartbeat=0.01)
    await receiver.start()
    try:
        assert await receiver.receive() is None
        assert "stopped answering" in receiver.error
        with pytest.raises(streams.StreamError):
            await receiver.send(0, b"late")
    finally:
        await receiver.close()
        await bus.close()
