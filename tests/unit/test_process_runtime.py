"""The process runtime on its own: shims (forked, or spawned), CRI logs and rotation, exec, attach,
port-forward, adoption.

Containers are real processes (plain ones: no namespaces, no cgroups, so this runs unprivileged
too); each test kills whatever it started in ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from services.agent.runtimes import images, logs, process, types

POD = {"metadata": {"uid": "uid-1", "namespace": "ns", "name": "p"}, "spec": {"containers": [{"name": "c"}]}}


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[process.ProcessRuntime]:
    made = process.ProcessRuntime(
        tmp_path, namespaces=False, cgroups=False, log_max_size=2048, log_max_files=3
    )
    await made.start()
    try:
        yield made
    finally:
        with contextlib.suppress(KeyError):
            await made.remove_pod("uid-1")
        await made.close()


async def start(
    runtime: process.ProcessRuntime, script: str, *, attempt: int = 0, **extra: object
) -> types.ContainerInfo:
    sandbox = await runtime.create_sandbox(POD, pod_ip="10.42.0.2")
    container = {"name": "c", "image": "busybox", "command": ["sh", "-c", script], **extra}
    return await runtime.start_container(
        sandbox, POD, container, attempt=attempt, env={"GREETING": "hey"}, mounts=[]
    )


async def exited(runtime: process.ProcessRuntime) -> types.ContainerInfo:
    async def poll() -> types.ContainerInfo:
        while (info := runtime.containers("uid-1")[0]).state is not types.State.EXITED:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        return info

    return await asyncio.wait_for(poll(), 20)


def test_image_mapping(tmp_path: Path) -> None:
    assert images.normalize("docker.io/library/busybox:1.36") == ("busybox", "1.36")
    assert images.normalize("registry.k8s.io/pause@sha256:abc") == ("registry.k8s.io/pause", "sha256:abc")
    host = images.resolve(tmp_path, "registry.k8s.io/pause:3.9")
    assert host.rootfs is None and host.image_id.startswith("sha256:")
    assert images.argv(host, {}) == images.PAUSE
    (tmp_path / "app").mkdir()
    (tmp_path / "app.json").write_text('{"Entrypoint": ["/bin/app"], "Cmd": ["--serve"], "Env": ["X=1"]}')
    local = images.resolve(tmp_path, "app:latest")
    assert local.rootfs == tmp_path / "app" and images.base_env(local)["X"] == "1"
    assert images.argv(local, {}) == ["/bin/app", "--serve"]
    assert images.argv(local, {"args": ["--debug"]}) == ["/bin/app", "--debug"]
    assert images.argv(local, {"command": ["sh"]}) == ["sh"]
    with pytest.raises(types.ContainerError, match="no local root filesystem"):
        images.argv(images.resolve(tmp_path, "nginx"), {})


def test_log_writer_splits_and_rotates(tmp_path: Path) -> None:
    path = str(tmp_path / "0.log")
    writer = logs.Writer(path, max_size=1024, max_files=3)
    writer.write("stdout", b"one\ntw")
    writer.write("stdout", b"o\n")
    writer.write("stderr", b"x" * (logs.MAX_LINE + 5) + b"\n")
    for index in range(100):
        writer.write("stdout", f"line {index}\n".encode())
    writer.write("stdout", b"tail")
    writer.close()
    assert len(logs.files(path)) == 3  # the live file and two rotated ones
    text = b"".join(logs.read_text(path, stream="stdout"))
    assert text.endswith(b"line 99\ntail") and b"line 50\n" in text
    first = Path(logs.files(path)[-1]).read_bytes().splitlines()[-1]
    assert logs.parse(first)[1:] == ("stdout", False, b"tail")


async def test_start_exit_previous_and_logs(runtime: process.ProcessRuntime) -> None:
    first = await start(runtime, 'echo "$GREETING"; exit 3')
    assert first.state is types.State.RUNNING and first.pid
    done = await exited(runtime)
    assert (done.exit_code, done.reason) == (3, "Error")
    second = await start(runtime, "echo again", attempt=1)
    assert second.attempt == 1
    await exited(runtime)
    assert runtime.previous("uid-1", "c").exit_code == 3
    assert b"".join(logs.read_text(str(runtime.log_path("uid-1", "c", previous=True)))) == b"hey\n"
    assert b"".join(logs.read_text(str(runtime.log_path("uid-1", "c")))) == b"again\n"


async def test_start_error_is_an_exited_attempt(runtime: process.ProcessRuntime) -> None:
    sandbox = await runtime.create_sandbox(POD, pod_ip="10.42.0.2")
    info = await runtime.start_container(sandbox, POD, {"name": "c", "image": "x", "command": ["/no/such/binary"]},
                                         attempt=0, env={}, mounts=[])  # fmt: skip
    assert (info.state, info.exit_code, info.reason) == (types.State.EXITED, 128, "StartError")
    assert "no/such/binary" in info.message


async def test_stop_escalates_to_sigkill(runtime: process.ProcessRuntime) -> None:
    await start(runtime, 'trap "" TERM; echo trapped; while true; do sleep 0.05; done')
    log = runtime.log_path("uid-1", "c")
    assert log is not None
    for _ in range(1000):  # SIGTERM before the trap is set would end it with 143
        if log.exists() and b"trapped" in log.read_bytes():
            break
        await asyncio.sleep(0.02)
    await runtime.stop_container("uid-1", "c", grace=0.2)
    info = runtime.containers("uid-1")[0]
    assert info.state is types.State.EXITED and info.exit_code == 137


async def test_exec_attach_and_port_forward(runtime: process.ProcessRuntime) -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await start(runtime, "cat", stdin=True, workingDir="/tmp")
        session = await runtime.exec(
            "uid-1", "c", ["sh", "-c", 'echo "$GREETING $PWD"; exit 4'], tty=False, stdin=False
        )
        out = b"".join([chunk async for chunk in session.stdout()])
        assert out == b"hey /tmp\n" and await session.wait() == 4
        attached = await runtime.attach("uid-1", "c", stdin=True)
        await attached.write_stdin(b"echoed\n")
        stream = attached.stdout()
        assert await asyncio.wait_for(anext(stream), 20) == b"echoed\n"
        await attached.kill()
        reader, writer = await runtime.port_forward("uid-1", port)
        assert await reader.read() == b""
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_a_new_runtime_adopts_running_containers(
    tmp_path: Path, runtime: process.ProcessRuntime
) -> None:
    running = await start(runtime, "sleep 30")
    forker_pid, shim_pid = runtime.forker.pid, _state(runtime)["shim_pid"]
    await runtime.close()
    assert forker_pid is not None and _gone(forker_pid) and not _gone(shim_pid)  # the shim outlives both
    adopted = process.ProcessRuntime(tmp_path, namespaces=False, cgroups=False)
    await adopted.start()
    try:
        info = adopted.containers("uid-1")[0]
        assert (info.state, info.pid, info.attempt) == (types.State.RUNNING, running.pid, 0)
        assert adopted.sandbox("uid-1").ip == "10.42.0.2"
        await adopted.stop_container("uid-1", "c", grace=5)
        assert adopted.containers("uid-1")[0].state is types.State.EXITED
    finally:
        await adopted.remove_pod("uid-1")
        await adopted.close()


def _state(runtime: process.ProcessRuntime, name: str = "c", attempt: int = 0) -> dict[str, Any]:
    return json.loads(
        (runtime.root_dir / "pods/uid-1/containers" / name / str(attempt) / "state.json").read_text()
    )


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _cmdline(pid: int) -> list[bytes]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")


def _gone(pid: int) -> bool:
    """No such process any more (or only its zombie, waiting for whoever reaps it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


async def test_shims_are_forked_and_a_dead_forker_is_replaced(runtime: process.ProcessRuntime) -> None:
    first = await start(runtime, "sleep 30")
    forker_pid = runtime.forker.pid
    shim_pid = _state(runtime)["shim_pid"]
    assert forker_pid is not None and _parent(shim_pid) == forker_pid
    cmdline = _cmdline(shim_pid)
    assert cmdline[3].endswith(b"runtimes/shim.py") and cmdline[4].endswith(b"/c/0/spec.json")
    os.kill(forker_pid, signal.SIGKILL)
    while not _gone(forker_pid):  # noqa: ASYNC110 - a process state, nothing to await
        await asyncio.sleep(0.01)
    sandbox = runtime.sandbox("uid-1")
    assert sandbox is not None
    second = await runtime.start_container(
        sandbox,
        POD,
        {"name": "d", "image": "busybox", "command": ["sleep", "30"]},
        attempt=0,
        env={},
        mounts=[],
    )
    assert second.state is types.State.RUNNING
    assert runtime.forker.pid not in (None, forker_pid)
    assert _parent(_state(runtime, "d")["shim_pid"]) == runtime.forker.pid
    assert runtime.containers("uid-1")[0].state is types.State.RUNNING and not _gone(first.pid or 0)


async def test_without_a_forker_the_shim_is_spawned(runtime: process.ProcessRuntime) -> None:
    runtime.forker.request = lambda spec_path, answer_fd: False  # type: ignore[method-assign]
    await start(runtime, "exit 5")
    shim_pid = _state(runtime)["shim_pid"]
    assert _parent(shim_pid) == os.getpid()
    assert (await exited(runtime)).exit_code == 5
    while not _gone(shim_pid):  # noqa: ASYNC110 - reaped by the runtime once its exit is seen
        await asyncio.sleep(0.01)
    assert runtime.forker.pid is None
