"""The agent's load balancer: server order, persistence, and failover through a real loopback proxy."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.agent import loadbalancer


def test_order_is_current_then_learned_then_the_original_server() -> None:
    servers = loadbalancer.ServerList("lb.example:6443", ["10.0.0.1:6443", "10.0.0.2:6443"])
    assert servers.candidates() == ["10.0.0.1:6443", "10.0.0.2:6443", "lb.example:6443"]
    servers.succeeded("10.0.0.2:6443")
    assert servers.candidates() == ["10.0.0.2:6443", "10.0.0.1:6443", "lb.example:6443"]
    servers.failed("10.0.0.2:6443")
    assert servers.candidates()[0] == "10.0.0.1:6443"
    servers.succeeded("lb.example:6443")  # the fallback worked: keep using it
    assert servers.candidates()[0] == "lb.example:6443"


def test_update_dedupes_keeps_the_original_last_and_forgets_vanished_current() -> None:
    servers = loadbalancer.ServerList("10.0.0.1:6443")
    assert servers.update(["10.0.0.1:6443", "10.0.0.2:6443", "10.0.0.2:6443"])
    assert servers.all() == ["10.0.0.2:6443", "10.0.0.1:6443"]
    assert not servers.update(["10.0.0.2:6443"])
    servers.succeeded("10.0.0.2:6443")
    servers.update(["10.0.0.3:6443"])
    assert servers.current == "" and servers.all() == ["10.0.0.3:6443", "10.0.0.1:6443"]


def test_address_of_and_endpoint_addresses() -> None:
    assert loadbalancer.address_of("https://10.0.0.1:6443") == "10.0.0.1:6443"
    assert loadbalancer.address_of("https://server.example") == "server.example:6443"
    assert loadbalancer.address_of("https://[fd00::1]:7443/") == "[fd00::1]:7443"
    endpoints = {"subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "fd00::2"}],
                              "ports": [{"name": "https", "port": 6443}]}]}  # fmt: skip
    assert loadbalancer.endpoint_addresses(endpoints) == ["10.0.0.1:6443", "[fd00::2]:6443"]
    assert loadbalancer.split_address("[fd00::2]:6443") == ("fd00::2", 6443)


def test_state_file_is_k3s_shaped_and_only_used_for_the_same_server(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "k3s-agent-load-balancer.json"
    loadbalancer.save_state(path, server_url="https://a:6443", addresses=["10.0.0.2:6443"])
    assert json.loads(path.read_text()) == {
        "ServerURL": "https://a:6443",
        "ServerAddresses": ["10.0.0.2:6443"],
    }
    assert loadbalancer.load_state(path, server_url="https://a:6443") == ["10.0.0.2:6443"]
    assert loadbalancer.load_state(path, server_url="https://b:6443") == []
    path.write_text("{not json")
    assert loadbalancer.load_state(path, server_url="https://a:6443") == []
    assert loadbalancer.load_state(tmp_path / "missing.json", server_url="https://a:6443") == []


def dead_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"  # closed again: connections are refused


@pytest.fixture
async def echo() -> AsyncIterator[str]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(b"echo:" + data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


async def roundtrip(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"hi")
        await writer.drain()
        return await reader.read(1024)
    finally:
        writer.close()


async def test_proxy_fails_over_to_a_live_server_and_persists_learned_ones(tmp_path: Path, echo: str) -> None:
    dead = dead_address()
    balancer = loadbalancer.LoadBalancer(f"https://{echo}", agent_dir=tmp_path)
    balancer.update([dead])  # learned first, so tried first
    await balancer.start()
    try:
        assert balancer.servers.candidates() == [dead, echo]
        assert await roundtrip(balancer.port) == b"echo:hi"
        assert balancer.servers.current == echo
        assert await roundtrip(balancer.port) == b"echo:hi"  # straight to the live one now
        saved = loadbalancer.load_state(tmp_path / loadbalancer.STATE_FILE, server_url=f"https://{echo}")
        assert saved == [dead]
    finally:
        await balancer.stop()
        await balancer.stop()  # idempotent


async def test_no_live_server_closes_the_connection(tmp_path: Path) -> None:
    balancer = loadbalancer.LoadBalancer(f"https://{dead_address()}", agent_dir=tmp_path)
    await balancer.start()
    try:
        assert await roundtrip(balancer.port) == b""
    finally:
        await balancer.stop()


async def test_half_close_and_large_transfers_pass_through(tmp_path: Path) -> None:
    """The client half-closes after a large upload; the server answers after its EOF."""
    received = asyncio.get_running_loop().create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # to EOF
        received.set_result(len(data))
        writer.write(b"got %d" % len(data) + b"x" * 3_000_000)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    balancer = loadbalancer.LoadBalancer(f"https://{address}", agent_dir=tmp_path)
    await balancer.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", balancer.port)
        writer.write(b"y" * 5_000_000)  # more than the early buffer and the socket buffers
        writer.write_eof()
        answer = await reader.read()
        assert await received == 5_000_000
        assert answer.startswith(b"got 5000000") and len(answer) == len(b"got 5000000") + 3_000_000
        writer.close()
    finally:
        await balancer.stop()
        server.close()
        await server.wait_closed()


async def test_stop_cuts_open_connections(tmp_path: Path, echo: str) -> None:
    balancer = loadbalancer.LoadBalancer(f"https://{echo}", agent_dir=tmp_path)
    await balancer.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", balancer.port)
    writer.write(b"hi")
    assert await reader.read(1024) == b"echo:hi"
    await balancer.stop()
    with contextlib.suppress(ConnectionResetError):  # cut: an EOF or a reset, either way it ended
        assert await reader.read(1024) == b""
    writer.close()
