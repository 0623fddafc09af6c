"""End-to-end fixtures: kine started through the CLI, a real etcd to compare with, and etcdctl.

kine runs exactly as a user runs it, ``python -m supervisor run kine``, on loopback TCP
at a free port. It counts as started once the gRPC health service answers SERVING;
a process that dies before that is retried on a new port (another process may have
taken the port between our probe and kine's bind), and its log is shown.

Every child writes its output to a log file in the test's tmp dir. Teardown prints
the log, so pytest shows it with a failing test's captured output and nowhere else.
Children are stopped with SIGTERM, then SIGKILL if they do not exit in time.

``KineProcess`` is also used by the integration durability tests, which kill kine
with SIGKILL and restart it on the same data dir.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import IO, Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests import conftest as shared

REPO_ROOT = Path(__file__).resolve().parents[2]
KINE_COMMAND = (sys.executable, "-m", "supervisor", "run", "kine")
ETCD = Path("/usr/bin/etcd")
ETCDCTL = Path("/usr/bin/etcdctl")
START_DEADLINE = 60.0  # seconds for a child to become ready
STOP_DEADLINE = 10.0  # seconds between SIGTERM and SIGKILL
START_ATTEMPTS = 3  # fresh ports to try when a child dies at start
OUTPUT_DEADLINE = 30.0  # seconds to wait for output a background etcdctl should print


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require_binary(path: Path) -> None:
    if not (path.is_file() and os.access(path, os.X_OK)):
        reason = f"{path} is not installed (tests/run.sh installs etcd-server and etcd-client)"
        print(f"SKIP: {reason}")
        pytest.skip(reason)


def run_async(factory: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run a coroutine to completion from sync code, on its own loop in another thread.

    A sync fixture may run while pytest-asyncio owns this thread's event loop; a
    private thread keeps ``asyncio.run`` from replacing it.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def child_env() -> dict[str, str]:
    """The environment for children: no K3S_* or ETCD* settings leak in from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("K3S_", "ETCD"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    return env


def grpc_serving(endpoint: str, *, timeout: float = 1.0) -> bool:
    """True when the gRPC health service at ``endpoint`` reports SERVING."""
    with grpc.insecure_channel(endpoint) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError:
            return False
    return response.status == health_pb2.HealthCheckResponse.SERVING


WAIT_DEADLINE = 90.0  # seconds any awaited cluster state may take before the test fails


def wait_for(what: str, check: Callable[[], Any], *, deadline: float = WAIT_DEADLINE) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``deadline``
    (which only ends a hung test: it is no performance threshold)."""
    end = time.monotonic() + deadline
    last: Any = None
    while time.monotonic() < end:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


class StartError(Exception):
    """A child did not become ready; the message carries the tail of its log."""


class Stoppable:
    """A subprocess in ``self.process`` that can be killed or stopped (SIGTERM, then SIGKILL)."""

    process: subprocess.Popen[bytes] | None

    def kill(self) -> None:
        """SIGKILL, no chance to flush or clean up; then reap."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if the child has not exited within STOP_DEADLINE. Idempotent."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            self.kill()


@dataclasses.dataclass(kw_only=True)
class Child(Stoppable):
    """A server subprocess on a loopback port, with its output in ``log_path``."""

    name: str
    log_path: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} is not running"
        return self.process.pid

    def command(self) -> list[str]:
        raise NotImplementedError

    def pick_ports(self) -> None:
        self.port = free_port()

    def start(self) -> None:
        """Start the child and return once it is ready; retry on fresh ports if it dies at start."""
        for attempt in range(1, START_ATTEMPTS + 1):
            self.pick_ports()
            with self.log_path.open("ab") as log:
                log.write(
                    f"\n=== {self.name} start (attempt {attempt}): {' '.join(self.command())}\n".encode()
                )
                log.flush()
                self.process = subprocess.Popen(
                    self.command(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=child_env(),
                )
            if self._wait_ready():
                return
            if self.process.poll() is None:
                self.stop()
                break  # alive but never ready: another port will not help
        raise StartError(f"{self.name} did not become ready; its log:\n{self.log_tail()}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            if grpc_serving(self.endpoint):
                return True
            time.sleep(0.05)
        return False

    def log_tail(self, limit: int = 20_000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return text[-limit:]

    def print_log(self) -> None:
        print(f"----- {self.name} log ({self.log_path}) -----\n{self.log_tail()}")


@dataclasses.dataclass(kw_only=True)
class KineProcess(Child):
    """kine through the CLI: ``python -m supervisor run kine``, SQLite in ``data_dir`` by default."""

    name: str = "kine"
    data_dir: Path
    datastore_endpoint: str = ""
    extra_args: tuple[str, ...] = ()

    def command(self) -> list[str]:
        args = [*KINE_COMMAND, "--config", "", "--data-dir", str(self.data_dir)]
        args += ["--listen-address", self.endpoint]
        if self.datastore_endpoint:
            args += ["--datastore-endpoint", self.datastore_endpoint]
        return [*args, *self.extra_args]


@dataclasses.dataclass(kw_only=True)
class EtcdProcess(Child):
    """Debian's etcd, a one-member cluster on loopback with its own data dir."""

    name: str = "etcd"
    data_dir: Path
    peer_port: int = 0

    def pick_ports(self) -> None:
        self.port, self.peer_port = free_port(), free_port()

    def command(self) -> list[str]:
        client = f"http://127.0.0.1:{self.port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        return [
            str(ETCD),
            "--name=e2e",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=e2e={peer}",
            "--initial-cluster-state=new",
            "--log-level=warn",
            "--logger=zap",
        ]


@contextlib.contextmanager
def running(child: Child) -> Iterator[Child]:
    """Start a child, and stop it (and print its log for pytest to show on failure) at the end."""
    try:
        child.start()
        yield child
    finally:
        child.stop()
        child.print_log()


@contextlib.contextmanager
def datastore(kind: str) -> Iterator[str]:
    """A datastore endpoint for kine: "" (SQLite in the data dir) or a fresh PostgreSQL/MariaDB database."""
    if kind == "sqlite":
        yield ""
        return
    shared.require(shared.POSTGRES if kind == "postgres" else shared.MYSQL, kind)
    name = shared.unique_name("kine_e2e")
    try:
        yield shared.endpoint_for(kind, name)
    finally:
        run_async(lambda: shared.drop_database(kind, name))


@pytest.fixture
def kine_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KineProcess]:
    """kine on loopback TCP; parametrize indirectly with "sqlite" (default), "postgres" or "mysql"."""
    kind = getattr(request, "param", "sqlite")
    with datastore(kind) as endpoint:
        kine = KineProcess(
            data_dir=tmp_path / "kine", datastore_endpoint=endpoint, log_path=tmp_path / "kine.log"
        )
        with running(kine):
            yield kine


@pytest.fixture
def real_etcd(tmp_path: Path) -> Iterator[EtcdProcess]:
    require_binary(ETCD)
    etcd = EtcdProcess(data_dir=tmp_path / "etcd", log_path=tmp_path / "etcd.log")
    with running(etcd):
        yield etcd


# -- etcdctl -------------------------------------------------------------------------------------


class Lines:
    """A background process whose output lines are read by a thread, so tests can wait for them."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        assert process.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(process.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def next(self, count: int = 1) -> list[str]:
        """The next ``count`` lines; fails if the process ends or prints nothing for OUTPUT_DEADLINE."""
        lines = []
        for _ in range(count):
            try:
                line = self._queue.get(timeout=OUTPUT_DEADLINE)
            except queue.Empty:
                raise AssertionError(f"no output for {OUTPUT_DEADLINE}s; so far: {self.seen}") from None
            if line is None:
                raise AssertionError(f"process exited {self.process.wait()}; output: {self.seen}")
            self.seen.append(line)
            lines.append(line)
        return lines

    def poll(self, wait: float = 0.2) -> list[str]:
        """The lines printed so far, waiting up to ``wait`` seconds for the first; may be empty."""
        lines: list[str] = []
        try:
            line = self._queue.get(timeout=wait)
            while line is not None:
                lines.append(line)
                line = self._queue.get_nowait()
            self._queue.put(None)  # the process ended: keep the marker for next() and rest()
        except queue.Empty:
            pass
        self.seen += lines
        return lines

    def rest(self) -> list[str]:
        """Every remaining line, once the process has ended by itself."""
        self.process.wait(OUTPUT_DEADLINE)
        self._reader.join(OUTPUT_DEADLINE)
        lines = []
        while (line := self._queue.get_nowait()) is not None:
            lines.append(line)
        self.seen += lines
        return lines

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(STOP_DEADLINE)
        if self.process.stdout is not None:
            self.process.stdout.close()


class Etcdctl:
    """``/usr/bin/etcdctl`` (API v3) against one endpoint."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._background: list[Lines] = []

    def argv(self, *args: str) -> list[str]:
        return [str(ETCDCTL), f"--endpoints={self.endpoint}", "--command-timeout=30s", *args]

    def run(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        env = child_env() | {"ETCDCTL_API": "3"}
        return subprocess.run(
            self.argv(*args), input=input, capture_output=True, text=True, env=env, timeout=120
        )

    def __call__(self, *args: str, input: str | None = None) -> str:
        """Run etcdctl, assert it succeeded, return its stdout."""
        result = self.run(*args, input=input)
        assert result.returncode == 0, f"etcdctl {' '.join(args)} -> {result.returncode}\n{result.stderr}"
        return result.stdout

    def fails(self, *args: str, input: str | None = None) -> str:
        """Run etcdctl, assert it failed, return its stderr."""
        result = self.run(*args, input=input)
        assert result.returncode != 0, f"etcdctl {' '.join(args)} succeeded:\n{result.stdout}"
        return result.stderr

    def background(self, *args: str) -> Lines:
        """Start a long-running etcdctl (``watch``...); it is stopped at the end of the test."""
        env = child_env() | {"ETCDCTL_API": "3"}
        process = subprocess.Popen(
            self.argv(*args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, env=env,
        )  # fmt: skip
        lines = Lines(process)
        self._background.append(lines)
        return lines

    def close(self) -> None:
        for lines in self._background:
            lines.stop()


@pytest.fixture
def etcdctl_for() -> Iterator[Callable[[Child], Etcdctl]]:
    """Make an ``Etcdctl`` for any server (kine or etcd); background processes end with the test."""
    require_binary(ETCDCTL)
    made: list[Etcdctl] = []

    def make(server: Child) -> Etcdctl:
        made.append(Etcdctl(server.endpoint))
        return made[-1]

    try:
        yield make
    finally:
        for ctl in made:
            ctl.close()


@pytest.fixture
def etcdctl(kine_server: KineProcess, etcdctl_for: Callable[[Child], Etcdctl]) -> Etcdctl:
    """etcdctl against the ``kine_server`` of this test.

    The server is set up first so it is torn down last, after etcdctl's background watches:
    an open watch stream would otherwise hold the server's graceful stop for its whole grace.
    """
    return etcdctl_for(kine_server)
