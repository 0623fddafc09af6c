"""The process manager behind ``k3s-supervisor start``.

Each component runs as a child OS process wrapped in a ``Child``: start / terminate / kill / wait /
pid for the current process, a readiness probe, and a supervision loop that restarts unexpected
deaths after an exponential backoff (1 s doubling to 30 s, back to 1 s once a run stayed up and
ready long enough). ``ProcessManager`` starts children in dependency order, each gated on its probe
with a deadline, and stops them in reverse order: SIGTERM, a deadline, then SIGKILL.

All process interaction of a child happens inside its supervision task; ``stop()`` only asks (an
Event) and waits for the loop to finish, so a stop can never race a restart. Output of every child
is forwarded line by line, prefixed ``[name pid]``, to the supervisor's own stdout or stderr.

A child that exits with ``PERMANENT_EXIT_CODE`` before it was ever ready failed on something a
restart will not fix (a malformed flag, an unwritable data dir): startup fails at once with its
last error line. After it has been ready once, every death is retried, since a database or NATS
outage is worth waiting out.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import enum
import logging
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from services.machinery import tasks

logger = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[bool]]

PERMANENT_EXIT_CODE = 2  # what k3s-supervisor exits with on a user mistake (as argparse does)
OUTPUT_DRAIN_TIMEOUT = 1.0  # seconds to finish forwarding output after a child exited
PROBE_TIMEOUT = 2.0  # seconds one probe call may take
# Set in every child's environment. A child that knows it (k3s-supervisor run ...) asks the kernel
# for SIGTERM when this pid dies, so a SIGKILLed supervisor never leaves components behind. The
# child does it itself: a preexec hook would run Python between fork and exec in a process that
# has gRPC threads.
SUPERVISOR_PID_ENV = "K3S_SUPERVISOR_PID"


class ProcessError(Exception):
    """A child could not be started (the message is one line for the user)."""


class State(enum.Enum):
    IDLE = "idle"
    STARTING = "starting"
    READY = "ready"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChildSpec:
    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None  # None: inherit the supervisor's environment
    probe: Probe | None = None  # None: ready as soon as the process exists
    ready_timeout: float = 60.0
    stop_timeout: float = 10.0
    probe_interval: float = 0.1


@dataclasses.dataclass(frozen=True, kw_only=True)
class Backoff:
    initial: float = 1.0
    maximum: float = 30.0
    reset_after: float = 60.0  # a run that was ready and lasted this long resets the delay

    def next_delay(self, previous: float | None, *, healthy_for: float) -> float:
        if previous is None or healthy_for >= self.reset_after:
            return self.initial
        return min(previous * 2, self.maximum)


_PR_SET_PDEATHSIG = 1
# Resolved once here, never in a forked child (dlopen after fork is not safe with threads around).
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def set_parent_death_signal(signum: int) -> None:
    """Have the kernel send ``signum`` to this process when its parent dies (Linux; no-op elsewhere)."""
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signum)


async def cancel_and_wait(*tasks: asyncio.Task[Any]) -> None:
    """Cancel ``tasks`` and wait until they are done.

    Their outcome was not wanted and is dropped; our own cancellation, should it arrive meanwhile,
    propagates (``asyncio.wait`` never absorbs it).
    """
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            logger.debug("%s ended with %r while being cancelled", task.get_name(), task.exception())


def grpc_health_probe(target: str, *, service: str = "") -> Probe:
    """A probe asking the standard gRPC health service at ``target`` (``unix:/path`` or ``host:port``)."""

    async def probe() -> bool:
        # Imported on first use: only a supervisor that runs gRPC children needs grpc loaded.
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        # A private subchannel pool: otherwise the failed attempts of earlier probes leave a shared
        # subchannel in reconnect backoff, and this probe fails for up to a second after kine is up.
        async with grpc.aio.insecure_channel(
            target, options=[("grpc.use_local_subchannel_pool", 1)]
        ) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=PROBE_TIMEOUT)
        return response.status == health_pb2.HealthCheckResponse.SERVING

    return probe


class Child:
    """One supervised component: its current process and the loop that keeps it running."""

    def __init__(self, spec: ChildSpec, *, backoff: Backoff | None = None) -> None:
        self.spec = spec
        self.name = spec.name
        self.state = State.IDLE
        self.restarts = 0
        self.last_error_line = ""
        self._backoff = backoff or Backoff()
        self._process: asyncio.subprocess.Process | None = None
        self._ready = asyncio.Event()
        self._ever_ready = False
        self._stopping = asyncio.Event()
        self._finished = asyncio.Event()

    # -- the current process ----------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def returncode(self) -> int | None:
        return self._process.returncode if self._process else None

    def alive(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self) -> None:
        self._set_state(State.STARTING)
        self._ready.clear()
        env = dict(os.environ if self.spec.env is None else self.spec.env)
        env[SUPERVISOR_PID_ENV] = str(os.getpid())
        self._process = await asyncio.create_subprocess_exec(
            *self.spec.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            # Its own session: a Ctrl-C in the terminal reaches the supervisor only, which then stops
            # the children in order instead of all of them dying at once.
            start_new_session=True,
        )
        logger.info("%s started (pid %d)", self.name, self._process.pid)

    async def terminate(self) -> None:
        if self.alive():
            assert self._process is not None
            logger.info("%s stopping (pid %d): SIGTERM", self.name, self._process.pid)
            self._process.terminate()

    def kill(self) -> None:
        if self.alive():
            assert self._process is not None
            logger.warning("%s killed (pid %d): SIGKILL", self.name, self._process.pid)
            self._process.kill()

    async def wait(self) -> int:
        if self._process is None:
            raise ProcessError(f"{self.name} was never started")
        return await self._process.wait()

    # -- supervision ------------------------------------------------------------------------------

    async def supervise(self) -> None:
        """Run the child until asked to stop, restarting it after unexpected deaths."""
        delay: float | None = None
        try:
            while not self._stopping.is_set():
                started = time.monotonic()
                code = await self._run_once()
                if self._stopping.is_set():
                    logger.info("%s stopped (pid %s, exit code %d)", self.name, self.pid, code)
                    break
                if code == PERMANENT_EXIT_CODE and not self._ever_ready:
                    self._set_state(State.FAILED)
                    logger.error(
                        "%s exited with code %d (pid %s) before it was ready; not restarting",
                        self.name,
                        code,
                        self.pid,
                    )
                    return
                healthy_for = time.monotonic() - started if self._ready.is_set() else 0.0
                delay = self._backoff.next_delay(delay, healthy_for=healthy_for)
                await self._back_off(code, delay)
            self._set_state(State.STOPPED)
        except asyncio.CancelledError:
            self.kill()  # cancelled means forced: no grace period left
            raise
        finally:
            self._finished.set()

    async def _run_once(self) -> int:
        try:
            await self.start()
        except OSError as exc:  # the program is missing or not executable: retrying will not help
            self.last_error_line = f"cannot run {self.spec.argv[0]}: {exc.strerror or exc}"
            logger.error("%s %s", self.name, self.last_error_line)
            return PERMANENT_EXIT_CODE
        assert self._process is not None and self._process.stdout and self._process.stderr
        async with asyncio.TaskGroup() as group:
            pumps = [
                group.create_task(self._forward(self._process.stdout, "stdout"), name=f"{self.name} stdout"),
                group.create_task(self._forward(self._process.stderr, "stderr"), name=f"{self.name} stderr"),
            ]
            helpers = [
                group.create_task(self._gate(), name=f"{self.name} readiness"),
                group.create_task(self._stop_when_asked(), name=f"{self.name} stop"),
            ]
            code = await self.wait()
            for helper in helpers:
                helper.cancel()
            # A grandchild holding our pipes open must not hold up the supervisor.
            _done, lingering = await asyncio.wait(pumps, timeout=OUTPUT_DRAIN_TIMEOUT)
            for pump in lingering:
                pump.cancel()
        return code

    async def _back_off(self, code: int, delay: float) -> None:
        self._set_state(State.BACKOFF)
        logger.warning(
            "%s exited unexpectedly with code %d (pid %s); restarting in %.1fs",
            self.name,
            code,
            self.pid,
            delay,
        )
        with contextlib.suppress(TimeoutError):
            await tasks.wait_for(self._stopping.wait(), delay)
        self.restarts += 1

    async def _gate(self) -> None:
        """Probe until ready; a child that never gets there within its deadline is killed."""
        deadline = time.monotonic() + self.spec.ready_timeout
        while not await self._probe_once():
            if time.monotonic() >= deadline:
                logger.error(
                    "%s not ready within %gs (pid %s); killing it",
                    self.name,
                    self.spec.ready_timeout,
                    self.pid,
                )
                self.kill()
                return
            await asyncio.sleep(self.spec.probe_interval)
        self._ever_ready = True
        self._ready.set()
        self._set_state(State.READY)
        logger.info("%s ready (pid %s)", self.name, self.pid)

    async def _probe_once(self) -> bool:
        if self.spec.probe is None:
            return True
        try:
            return bool(await tasks.wait_for(self.spec.probe(), PROBE_TIMEOUT))
        except Exception as exc:
            logger.debug("%s probe failed: %s", self.name, " ".join(str(exc).split())[:200])
            return False

    async def _stop_when_asked(self) -> None:
        await self._stopping.wait()
        self._set_state(State.STOPPING)
        await self.terminate()
        try:
            await tasks.wait_for(self.wait(), self.spec.stop_timeout)
        except TimeoutError:
            logger.warning(
                "%s did not exit within %gs of SIGTERM (pid %s)", self.name, self.spec.stop_timeout, self.pid
            )
            self.kill()

    async def _forward(self, stream: asyncio.StreamReader, target: str) -> None:
        prefix = f"[{self.name} {self.pid}] "
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # a line longer than the reader's limit: the rest of it is discarded
                line = b"<line too long, truncated>\n"
            if not line:
                return
            text = line.decode(errors="replace").rstrip("\r\n")
            if target == "stderr" and text.strip():
                self.last_error_line = text.strip()
            out = sys.stdout if target == "stdout" else sys.stderr
            out.write(prefix + text + "\n")
            out.flush()

    # -- what the manager waits on ----------------------------------------------------------------

    async def wait_ready(self) -> bool:
        """True once ready; False if the loop ended first (stopped, or failed for good)."""
        ready = asyncio.create_task(self._ready.wait(), name=f"{self.name} ready wait")
        finished = asyncio.create_task(self._finished.wait(), name=f"{self.name} finished wait")
        try:
            await asyncio.wait({ready, finished}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait(ready, finished)
        return self._ready.is_set()

    async def stop(self) -> None:
        """Ask the loop to stop the process (SIGTERM, then SIGKILL) and wait until it has."""
        self._stopping.set()
        if self.state is not State.IDLE:
            await self._finished.wait()

    def _set_state(self, state: State) -> None:
        if state is not self.state:
            logger.debug("%s: %s -> %s (pid %s)", self.name, self.state.value, state.value, self.pid)
            self.state = state


class ProcessManager:
    """Starts children in order, each gated on readiness; stops them in reverse order."""

    def __init__(self, specs: Sequence[ChildSpec], *, backoff: Backoff | None = None) -> None:
        self.children = [Child(spec, backoff=backoff) for spec in specs]
        self._started: asyncio.Future[None] | None = None
        self._root: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        """Return once every child is ready; raise ProcessError (everything stopped) if one cannot be."""
        self._started = asyncio.get_running_loop().create_future()
        self._root = asyncio.create_task(self._run(), name="process manager")
        await asyncio.wait({self._root, self._started}, return_when=asyncio.FIRST_COMPLETED)
        if self._root.done():
            self._root.result()

    async def wait(self) -> None:
        """Return when every child has stopped for good."""
        if self._root is not None:
            await asyncio.shield(self._root)

    async def stop(self) -> None:
        """Stop children in reverse order; cancelling this kills whatever is still running."""
        self._stopping = True
        try:
            for child in reversed(self.children):
                await child.stop()
            if self._root is not None:
                # Only wait: a startup failure is start()'s to raise, not stop()'s.
                await asyncio.wait({self._root})
            logger.info("all children stopped")
        except asyncio.CancelledError:
            self.kill()
            raise

    def kill(self) -> None:
        for child in self.children:
            child.kill()

    async def __aenter__(self) -> ProcessManager:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _run(self) -> None:
        failure: ProcessError | None = None
        async with asyncio.TaskGroup() as group:
            for child in self.children:
                if self._stopping:
                    break
                group.create_task(child.supervise(), name=f"supervise {child.name}")
                try:
                    if not await self._gate(child):
                        break
                except ProcessError as exc:
                    failure = exc  # raised below, once the group is done: not wrapped in a group
                    break
            else:
                assert self._started is not None
                self._started.set_result(None)
                logger.info("all %d children ready", len(self.children))
        if failure is not None:
            raise failure

    async def _gate(self, child: Child) -> bool:
        """Wait for ``child`` to be ready; on failure stop what started and raise."""
        try:
            ready = await tasks.wait_for(child.wait_ready(), child.spec.ready_timeout)
        except TimeoutError:
            reason = f"{child.name} not ready within {child.spec.ready_timeout:g}s"
        else:
            if ready or self._stopping:
                return ready
            reason = f"{child.name} failed to start"
            if child.last_error_line:
                # The child's own one-line error, without its "program: error:" prefix.
                reason += ": " + re.sub(r"^\S+: error: ", "", child.last_error_line)
        logger.info("startup failed; stopping the children already started")
        for started in reversed(self.children):
            await started.stop()
        raise ProcessError(reason)
