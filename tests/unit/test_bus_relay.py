"""The bus relay's server end on the in-memory bus: what an agent's frames may do, and what they get."""

from __future__ import annotations

import asyncio
import uuid

import pytest

import services.bus
from services.bus import relay
from services.bus import types as bus_types

PREFIX = "k3s.tunnel.node-a."


class Agent:
    """The frames the relay sends back, decoded."""

    def __init__(self) -> None:
        self.frames: asyncio.Queue[tuple[dict, bytes]] = asyncio.Queue()

    async def send(self, frame: bytes) -> None:
        await self.frames.put(relay.decode(frame))

    async def next(self) -> tuple[dict, bytes]:
        return await asyncio.wait_for(self.frames.get(), 5)


async def session() -> tuple[bus_types.Bus, relay.RelayServer, Agent]:
    bus = await services.bus.connect(f"memory://relay-{uuid.uuid4().hex}")
    agent = Agent()
    return bus, relay.RelayServer(bus, prefix=PREFIX, send=agent.send, reply_within=5), agent


async def test_frames_round_trip() -> None:
    frame = relay.encode({"op": "pub", "subject": "x"}, b"\x00payload")
    assert relay.decode(frame) == ({"op": "pub", "subject": "x"}, b"\x00payload")
    for bad in (b"", b"\x00\x00\x00\x09{}", relay.encode({"no": "op"}), b"\x00\x00\x00\x02[]"):
        with pytest.raises(relay.RelayError):
            relay.decode(bad)


async def test_subscriptions_publishes_and_served_requests_stay_under_the_prefix() -> None:
    bus, server, agent = await session()
    try:
        await server.handle(relay.encode({"op": "sub", "id": 1, "subject": PREFIX + "s.1.in"}))
        await bus.publish(PREFIX + "s.1.in", b"to the agent")
        assert await agent.next() == ({"op": "msg", "id": 1, "subject": PREFIX + "s.1.in"}, b"to the agent")

        seen: asyncio.Queue[bytes] = asyncio.Queue()

        async def collect(_subject: str, payload: bytes) -> None:
            await seen.put(payload)

        await bus.subscribe(PREFIX + "s.1.out", collect)
        await server.handle(relay.encode({"op": "pub", "subject": PREFIX + "s.1.out"}, b"from the agent"))
        assert await asyncio.wait_for(seen.get(), 5) == b"from the agent"

        await server.handle(relay.encode({"op": "serve", "id": 2, "subject": PREFIX + "open"}))
        reply = asyncio.create_task(bus.request(PREFIX + "open", b"open please", within=5))
        header, payload = await agent.next()
        assert (header["op"], header["id"], payload) == ("req", 2, b"open please")
        await server.handle(relay.encode({"op": "resp", "rid": header["rid"]}, b"opened"))
        assert await reply == b"opened"

        for subject in ("k3s.tunnel.node-b.open", "k3s.tunnel.node-a", "other", None):
            with pytest.raises(relay.RelayError, match="outside"):
                await server.handle(relay.encode({"op": "pub", "subject": subject}))
        with pytest.raises(relay.RelayError, match="unknown relay op"):
            await server.handle(relay.encode({"op": "request", "subject": PREFIX + "x"}))
    finally:
        await server.close()
        await bus.close()


async def test_closing_the_session_ends_its_subscriptions() -> None:
    bus, server, agent = await session()
    try:
        await server.handle(relay.encode({"op": "serve", "id": 1, "subject": PREFIX + "open"}))
        await server.close()
        with pytest.raises(bus_types.NoResponders):
            await bus.request(PREFIX + "open", b"", within=1)
        assert agent.frames.empty()
    finally:
        await bus.close()
