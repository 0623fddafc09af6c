"""The process manager with dummy children: order, readiness gates, restarts, SIGTERM then SIGKILL.

Children are small Python one-liners; a child that must be "ready" touches a marker file once it is
(for instance after installing its signal handler) and its probe checks for that file.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from supervisor import cli, config, process

FAST = process.Backoff(initial=0.05, maximum=0.2, reset_after=60.0)


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def file_probe(path: Path) -> process.Probe:
    async def probe() -> bool:
        return await asyncio.to_thread(path.exists)

    return probe


def sleeper(
    marker: Path, *, ignore_term: bool = False, on_term: Path | None = None, name: str = ""
) -> list[str]:
    """A child that sleeps; it touches ``marker`` once its SIGTERM handling is in place."""
    lines = ["import pathlib, signal, sys, time"]
    if ignore_term:
        lines.append("signal.signal(signal.SIGTERM, signal.SIG_IGN)")
    if on_term is not None:
        lines.append(
            "def bye(*_):\n"
            f"    with open({str(on_term)!r}, 'a') as f: f.write({name!r} + '\\n')\n"
            "    sys.exit(0)\n"
            "signal.signal(signal.SIGTERM, bye)"
        )
    lines += [f"pathlib.Path({str(marker)!r}).touch()", "time.sleep(60)"]
    return python("\n".join(lines))


async def eventually(condition: Callable[[], bool], *, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


# -- backoff ------------------------------------------------------------------------------------------


def test_backoff_doubles_from_one_second_to_thirty() -> None:
    backoff = process.Backoff()
    delays, delay = [], None
    for _ in range(8):
        delay = backoff.next_delay(delay, healthy_for=0.0)
        delays.append(delay)
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_backoff_resets_after_a_healthy_run() -> None:
    backoff = process.Backoff(reset_after=60.0)
    assert backoff.next_delay(30.0, healthy_for=59.0) == 30.0
    assert backoff.next_delay(30.0, healthy_for=60.0) == 1.0


# -- starting -----------------------------------------------------------------------------------------


async def test_children_start_in_order_each_gated_on_its_probe(tmp_path: Path) -> None:
    first_ready = asyncio.Event()

    async def first_probe() -> bool:
        return first_ready.is_set()

    manager = process.ProcessManager(
        [
            process.ChildSpec(name="first", argv=sleeper(tmp_path / "first"), probe=first_probe),
            process.ChildSpec(
                name="second", argv=sleeper(tmp_path / "second"), probe=file_probe(tmp_path / "second")
            ),
        ]
    )
    starting = asyncio.create_task(manager.start())
    first, second = manager.children
    await eventually(lambda: first.pid is not None)
    await asyncio.sleep(0.3)
    assert first.state is process.State.STARTING
    assert second.state is process.State.IDLE and second.pid is None  # gated on the first one
    first_ready.set()
    await asyncio.wait_for(starting, 10)
    assert [child.state for child in manager.children] == [process.State.READY, process.State.READY]
    await manager.stop()
    assert [child.state for child in manager.children] == [process.State.STOPPED, process.State.STOPPED]


async def test_output_is_prefixed_with_name_and_pid(capsys: pytest.CaptureFixture[str]) -> None:
    spec = process.ChildSpec(
        name="echo",
        argv=python("import sys, time; print('hello'); print('oops', file=sys.stderr); time.sleep(60)"),
    )
    async with process.ProcessManager([spec]) as manager:
        pid = manager.children[0].pid
        await eventually(lambda: manager.children[0].last_error_line == "oops")
        await asyncio.sleep(0.1)
    captured = capsys.readouterr()
    assert f"[echo {pid}] hello\n" in captured.out
    assert f"[echo {pid}] oops\n" in captured.err


async def test_a_child_failing_for_good_before_ready_fails_the_start(tmp_path: Path) -> None:
    manager = process.ProcessManager(
        [
            process.ChildSpec(name="ok", argv=sleeper(tmp_path / "ok"), probe=file_probe(tmp_path / "ok")),
            process.ChildSpec(
                name="bad",
                argv=python(
                    "import sys; print('k3s-supervisor: error: bad flag', file=sys.stderr); sys.exit(2)"
                ),
                probe=file_probe(tmp_path / "never"),
            ),
        ],
        backoff=FAST,
    )
    with pytest.raises(process.ProcessError, match="^bad failed to start: bad flag$"):
        await manager.start()
    ok, bad = manager.children
    assert bad.state is process.State.FAILED and bad.restarts == 0
    assert ok.state is process.State.STOPPED and ok.returncode is not None  # stopped, not left behind
    await manager.stop()  # idempotent after a failed start


async def test_a_child_not_ready_in_time_fails_the_start(tmp_path: Path) -> None:
    spec = process.ChildSpec(
        name="slow",
        argv=sleeper(tmp_path / "marker"),
        probe=file_probe(tmp_path / "never"),
        ready_timeout=0.3,
    )
    manager = process.ProcessManager([spec])
    with pytest.raises(process.ProcessError, match="slow not ready within 0.3s"):
        await manager.start()
    assert manager.children[0].returncode is not None


async def test_a_missing_program_fails_the_start() -> None:
    manager = process.ProcessManager([process.ChildSpec(name="ghost", argv=["/nonexistent/k3s-ghost"])])
    with pytest.raises(
        process.ProcessError, match="ghost failed to start: cannot run /nonexistent/k3s-ghost"
    ):
        await manager.start()


# -- restarting ---------------------------------------------------------------------------------------


async def test_unexpected_deaths_restart_with_doubling_backoff(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    code = f"import time, sys\nwith open({str(starts)!r}, 'a') as f: f.write(repr(time.monotonic()) + '\\n')\nsys.exit(1)"
    manager = process.ProcessManager([process.ChildSpec(name="crashy", argv=python(code))], backoff=FAST)
    await manager.start()
    child = manager.children[0]
    await eventually(lambda: child.restarts >= 5, within=10)
    await manager.stop()
    times = [float(line) for line in starts.read_text().split()]
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    for gap, delay in zip(gaps, [0.05, 0.1, 0.2, 0.2, 0.2], strict=False):
        assert delay <= gap < delay + 1.0, gaps


async def test_a_killed_child_comes_back(tmp_path: Path) -> None:
    marker = tmp_path / "up"
    spec = process.ChildSpec(name="victim", argv=sleeper(marker), probe=file_probe(marker))
    async with process.ProcessManager([spec], backoff=FAST) as manager:
        child = manager.children[0]
        first_pid = child.pid
        assert first_pid is not None
        os.kill(first_pid, signal.SIGKILL)
        await eventually(lambda: child.restarts == 1 and child.state is process.State.READY)
        assert child.pid != first_pid
    assert child.state is process.State.STOPPED


async def test_stop_during_backoff_does_not_wait_for_it() -> None:
    slow = process.Backoff(initial=30.0, maximum=30.0)
    spec = process.ChildSpec(name="crashy", argv=python("import sys; sys.exit(1)"))
    manager = process.ProcessManager([spec], backoff=slow)
    await manager.start()
    await eventually(lambda: manager.children[0].state is process.State.BACKOFF)
    started = time.monotonic()
    await manager.stop()
    assert time.monotonic() - started < 2.0
    assert manager.children[0].restarts == 1


# -- stopping -----------------------------------------------------------------------------------------


async def test_children_stop_in_reverse_order(tmp_path: Path) -> None:
    order = tmp_path / "order"
    specs = [
        process.ChildSpec(
            name=name,
            argv=sleeper(tmp_path / name, on_term=order, name=name),
            probe=file_probe(tmp_path / name),
        )
        for name in ("nats", "kine", "apiserver")
    ]
    async with process.ProcessManager(specs):
        pass
    assert order.read_text().split() == ["apiserver", "kine", "nats"]


async def test_sigterm_then_sigkill_for_a_child_that_ignores_sigterm(tmp_path: Path) -> None:
    marker = tmp_path / "stubborn"
    spec = process.ChildSpec(
        name="stubborn", argv=sleeper(marker, ignore_term=True), probe=file_probe(marker), stop_timeout=0.5
    )
    manager = process.ProcessManager([spec])
    await manager.start()
    started = time.monotonic()
    await manager.stop()
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 5.0
    assert manager.children[0].returncode == -signal.SIGKILL


async def test_a_cancelled_stop_kills_at_once(tmp_path: Path) -> None:
    marker = tmp_path / "stubborn"
    spec = process.ChildSpec(
        name="stubborn", argv=sleeper(marker, ignore_term=True), probe=file_probe(marker), stop_timeout=30.0
    )
    manager = process.ProcessManager([spec])
    await manager.start()
    stopping = asyncio.create_task(manager.stop())
    await asyncio.sleep(0.2)
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    child = manager.children[0]
    await eventually(lambda: child.returncode is not None, within=2.0)
    assert child.returncode == -signal.SIGKILL
    await manager.stop()


# -- probes -------------------------------------------------------------------------------------------


async def test_grpc_health_probe(tmp_path: Path) -> None:
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    socket_path = tmp_path / "kine.sock"
    probe = process.grpc_health_probe(f"unix:{socket_path}")
    with pytest.raises(grpc.aio.AioRpcError):
        await probe()  # nothing listening yet
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(f"unix:{socket_path}")
    await server.start()
    try:
        await servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert await probe() is False
        await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        assert await probe() is True
    finally:
        await server.stop(None)


# -- how `start` wires its children -------------------------------------------------------------------------


def server_settings(tmp_path: Path, *argv: str) -> config.Settings:
    flags = config.flags_given(vars(cli.build_parser().parse_args(["start", "-d", str(tmp_path), *argv])))
    return config.load(flags, environ={"K3S_CONFIG_FILE": ""})


def test_start_runs_nats_then_kine_with_secrets_kept_off_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("K3S_TOKEN", "do-not-leak")
    endpoint = "postgres://kine:hunter2@db:5432/k3s"
    children = cli.server_children(server_settings(tmp_path, "--datastore-endpoint", endpoint))
    assert [c.name for c in children] == ["nats", "kine", "apiserver", "scheduler", "controllers", "agent"]
    nats_spec, kine_spec, api_spec, scheduler_spec, controllers_spec, agent_spec = children
    for spec in (scheduler_spec, controllers_spec, agent_spec):
        assert spec.env is not None and "K3S_TOKEN" not in spec.env
        assert not any("hunter2" in arg or "do-not-leak" in arg for arg in spec.argv)
    assert "--server-node" in agent_spec.argv
    health = scheduler_spec.argv[scheduler_spec.argv.index("--scheduler-health-address") + 1]
    assert health.startswith("127.0.0.1:") and int(health.rpartition(":")[2]) > 0
    assert api_spec.argv[1:5] == ["-m", "supervisor", "run", "apiserver"]
    assert api_spec.env is not None and "K3S_TOKEN" not in api_spec.env
    assert not any("hunter2" in arg for arg in api_spec.argv)
    assert nats_spec.argv[1:5] == ["-m", "supervisor", "run", "nats"]
    port = nats_spec.argv[nats_spec.argv.index("--nats-port") + 1]
    assert int(port) not in (0, 4222)
    assert kine_spec.argv[1:5] == ["-m", "supervisor", "run", "kine"]
    assert ["--config", ""] == kine_spec.argv[5:7]  # the file was read once, by the supervisor
    assert not any("hunter2" in arg for arg in (*nats_spec.argv, *kine_spec.argv))
    assert kine_spec.env is not None and nats_spec.env is not None
    assert kine_spec.env["K3S_DATASTORE_ENDPOINT"] == endpoint
    password = (tmp_path / "server" / "nats" / "credentials.json").read_text()
    assert kine_spec.env["K3S_NATS_URL"].startswith("nats://k3s-server:")
    assert kine_spec.env["K3S_NATS_URL"].endswith(f"@127.0.0.1:{port}")
    assert kine_spec.env["K3S_NATS_URL"].split(":")[2].split("@")[0] in password
    assert "K3S_TOKEN" not in kine_spec.env and "K3S_TOKEN" not in nats_spec.env


def test_disabled_components_are_not_started(tmp_path: Path) -> None:
    settings = server_settings(tmp_path, "--disable-scheduler", "--disable-controller-manager", "--disable-agent")
    assert [c.name for c in cli.server_children(settings)] == ["nats", "kine", "apiserver"]


def test_start_with_an_external_nats_runs_no_nats(tmp_path: Path) -> None:
    children = cli.server_children(server_settings(tmp_path, "--nats-url", "nats://127.0.0.1:4222"))
    kine_spec, api_spec = children[:2]
    assert [c.name for c in children] == ["kine", "apiserver", "scheduler", "controllers", "agent"]
    assert api_spec.env is not None and api_spec.env["K3S_NATS_URL"] == "nats://127.0.0.1:4222"
    assert kine_spec.env is not None and kine_spec.env["K3S_NATS_URL"] == "nats://127.0.0.1:4222"


@pytest.mark.parametrize(
    ("listen", "target"),
    [
        ("", "unix:{data}/server/kine.sock"),
        ("127.0.0.1:2379", "127.0.0.1:2379"),
        ("0.0.0.0:2379", "127.0.0.1:2379"),
        (":2379", "127.0.0.1:2379"),
        ("[::]:2379", "[::1]:2379"),
        ("http://10.0.0.5:2379", "10.0.0.5:2379"),
    ],
)
def test_kine_readiness_target(tmp_path: Path, listen: str, target: str) -> None:
    argv = ["--listen-address", listen] if listen else []
    settings = server_settings(tmp_path, *argv)
    assert cli.kine_target(settings.kine) == target.format(data=tmp_path.resolve())
