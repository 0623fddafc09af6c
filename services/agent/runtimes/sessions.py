"""Exec and attach sessions of the process runtime (``types.ExecSession``).

Exec runs a new process with the container's environment, working directory and, when the
container has namespaces, inside them (``nsenter`` with the container's root). A ``tty`` session
gets a pseudo-terminal: stdout carries everything and stderr stays empty, as with CRI runtimes.

Attach reads the container's own output back from its CRI log file as it grows, and writes to
the FIFO the shim gave the container as stdin (only for containers with ``stdin: true``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import struct
import termios
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

from services.agent.runtimes import logs

READ_SIZE = 65536
FOLLOW_POLL = 0.1  # seconds between looks at a log file that has not grown


async def read_fd(fd: int) -> bytes:
    """One read from a non-blocking fd, waiting until it is readable; b"" at EOF."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            return os.read(fd, READ_SIZE)
        except BlockingIOError:
            pass
        except OSError:  # EIO: the pty's other side closed
            return b""
        ready = loop.create_future()
        loop.add_reader(fd, _wake, ready)
        try:
            await ready
        finally:
            loop.remove_reader(fd)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class ProcessSession:
    """A command run for ``exec``: pipes, or a pty when ``tty``."""

    def __init__(self, proc: asyncio.subprocess.Process, *, master: int | None) -> None:
        self._proc = proc
        self._master = master

    @classmethod
    async def start(
        cls, argv: Sequence[str], *, env: Mapping[str, str], cwd: str | None, tty: bool, stdin: bool
    ) -> ProcessSession:
        if tty:
            master, slave = pty.openpty()
            os.set_blocking(master, False)
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=slave, stdout=slave, stderr=slave, env=dict(env), cwd=cwd,
                    start_new_session=True,
                )  # fmt: skip
            finally:
                os.close(slave)
            return cls(proc, master=master)
        pipe, devnull = asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=pipe if stdin else devnull, stdout=pipe, stderr=pipe, env=dict(env), cwd=cwd,
            start_new_session=True,
        )  # fmt: skip
        return cls(proc, master=None)

    async def write_stdin(self, data: bytes) -> None:
        if self._master is not None:
            os.write(self._master, data)
        elif self._proc.stdin is not None:
            self._proc.stdin.write(data)
            await self._proc.stdin.drain()

    async def close_stdin(self) -> None:
        if self._master is not None:
            with contextlib.suppress(OSError):
                os.write(self._master, b"\x04")  # end of input on a terminal
        elif self._proc.stdin is not None:
            self._proc.stdin.close()

    async def stdout(self) -> AsyncIterator[bytes]:
        if self._master is not None:
            while chunk := await read_fd(self._master):
                yield chunk
            return
        assert self._proc.stdout is not None
        while chunk := await self._proc.stdout.read(READ_SIZE):
            yield chunk

    async def stderr(self) -> AsyncIterator[bytes]:
        if self._master is not None or self._proc.stderr is None:
            return
        while chunk := await self._proc.stderr.read(READ_SIZE):
            yield chunk

    async def resize(self, width: int, height: int) -> None:
        if self._master is not None:
            fcntl.ioctl(self._master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))

    async def wait(self) -> int:
        code = await self._proc.wait()
        if self._master is not None:
            with contextlib.suppress(OSError):
                os.close(self._master)
            self._master = None
        return 128 - code if code < 0 else code

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, 9)
        await self.wait()


class AttachSession:
    """The container's own streams: its log file followed from now, its stdin FIFO."""

    def __init__(self, log_path: Path, *, stdin_path: Path | None, running: asyncio.Event) -> None:
        self._log_path = log_path
        self._stdin_fd = os.open(stdin_path, os.O_WRONLY | os.O_NONBLOCK) if stdin_path else None
        self._ended = running  # set when the container exits
        self._offset = log_path.stat().st_size if log_path.exists() else 0
        self._queues: dict[str, asyncio.Queue[bytes | None]] = {
            "stdout": asyncio.Queue(),
            "stderr": asyncio.Queue(),
        }
        self._task = asyncio.get_running_loop().create_task(self._follow(), name=f"attach {log_path}")

    async def _follow(self) -> None:
        try:
            while True:
                grew = self._read_new()
                if not grew:
                    if self._ended.is_set():
                        self._read_new()
                        break
                    await asyncio.sleep(FOLLOW_POLL)
        finally:
            for queue in self._queues.values():
                queue.put_nowait(None)

    def _read_new(self) -> bool:
        try:
            with open(self._log_path, "rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return False
        complete = data[: data.rfind(b"\n") + 1]
        self._offset += len(complete)
        for raw in complete.splitlines():
            parsed = logs.parse(raw)
            if parsed is not None:
                self._queues[parsed[1] if parsed[1] in self._queues else "stdout"].put_nowait(
                    parsed[3] + (b"\n" if parsed[2] else b"")
                )
        return bool(complete)

    async def write_stdin(self, data: bytes) -> None:
        if self._stdin_fd is not None:
            os.write(self._stdin_fd, data)

    async def close_stdin(self) -> None:
        if self._stdin_fd is not None:
            os.close(self._stdin_fd)
            self._stdin_fd = None

    async def _drain(self, stream: str) -> AsyncIterator[bytes]:
        while (chunk := await self._queues[stream].get()) is not None:
            yield chunk

    def stdout(self) -> AsyncIterator[bytes]:
        return self._drain("stdout")

    def stderr(self) -> AsyncIterator[bytes]:
        return self._drain("stderr")

    async def resize(self, width: int, height: int) -> None:
        return None  # containers of this runtime have no terminal

    async def wait(self) -> int:
        await asyncio.wait({self._task})  # never raises: our own cancellation still propagates
        return 0

    async def kill(self) -> None:
        self._task.cancel()
        await asyncio.wait({self._task})
        await self.close_stdin()
