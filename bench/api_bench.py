"""The API server on SQLite under load, beside the Kubernetes SLOs and the raw stack's ceiling.

The cluster is started as users start it (``python -m supervisor start --profile server``, or
``edge``, on a loopback port and a temporary data dir; SQLite is the default datastore) and is ready
once the admin kubeconfig exists and ``/readyz`` answers 200 with the admin's certificate. One async
load generator (``bench/http_load.py``: keep-alive HTTP/1.1, a pool of connections sized to the
concurrency, the admin's client certificate) then runs these cells, in this order:

- ConfigMap creates at concurrency 1 and 32: creates/s, p50 and p99 latency;
- GETs of single ConfigMaps at concurrency 1 and 32;
- a full list of 10,000 ConfigMaps in one namespace (the creates above, topped up at concurrency 32);
- 100 watches of configmaps held open by another process (so the writer never delays the readers),
  then paced creates at concurrency 1: the latency from sending a create to each watcher reading
  its event, p50 and p99 over every (write, watcher) pair. Both processes read CLOCK_MONOTONIC.

Beside each cell's figures the report gives the CPU time the serving processes spent per operation
(the API server, and kine in the server profile, from ``/proc``): unlike throughput it hardly moves
when other work shares the machine.

Each cell runs against the API server and then, at once, against the raw stack, so that both meet
the same neighbours on a shared machine; the create, GET and list cells run three such rounds and
keep each side's best (``Cells``). The raw stack is a bare FastAPI app under uvicorn
(httptools, uvloop, as the API server runs) over the same TLS setup (the cluster's serving
certificate, client certificates verified against its client CA), started by this script in a
subprocess. Its POST route parses the JSON body and returns it, its GET route returns the bytes of
a ConfigMap the API server sent, and a third route the bytes of the 10,000-object list, so the list
ceiling is the cost of moving that body through the stack. The ratio is ours / ceiling for
throughput and ceiling / ours for latency: 1.00 is the ceiling. A last line checks the load
generator: GETs at concurrency 32 against the raw stack with the hand-written client and with httpx.

``--py-spy DIR`` samples the serving processes with py-spy during the concurrency-32 create and GET
cells, writes collapsed stacks to DIR and prints the functions with the most samples.

``--creates-only`` runs nothing but the concurrency-32 create cell, round after round (3,000 creates
each, 5 rounds; ``--quick``: 300 and 1), and gives each round's CPU per create for each serving process:
the figure to judge a change to the create path by, in runs alternated with the old code.

Usage: ``python bench/api_bench.py [--profile server|edge] [--quick] [--creates-only] [--out FILE] [--py-spy DIR]``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import datetime
import multiprocessing
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path

import fastapi  # FastAPI resolves the raw routes' annotations in this module's globals
import orjson
import uvicorn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script from anywhere in a checkout

from bench import http_load  # noqa: E402

SUPERVISOR = (sys.executable, "-m", "supervisor", "start")
READY_DEADLINE = 90.0  # seconds for the cluster to write its kubeconfig and answer /readyz
STOP_DEADLINE = 15.0  # seconds between SIGTERM and SIGKILL
WATCH_DEADLINE = 60.0  # seconds for every watcher to see every write of the watch cell
START_ATTEMPTS = 3  # fresh ports to try when a server dies at start (the port was taken meanwhile)
HIGH = 32  # the high concurrency of the create and GET cells
WATCHERS = 100
WATCH_INTERVAL = 0.01  # seconds between the starts of two watched writes (at most 100 writes/s)
NAMESPACE = "bench"  # creates, GETs and the big list
WATCH_NAMESPACE = "bench-watch"
DATA = {f"key-{n}": "v" * 48 for n in range(4)}  # ~300-byte ConfigMaps
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# Kubernetes SLOs, p99 (sig-scalability/slos/slos.md, reference §18) and the targets.
SLO_MUTATING = 1.0
SLO_READ = 1.0
SLO_LIST = 30.0
TARGET_CREATES = 1000.0  # creates/s at concurrency 32
TARGET_GETS = 3000.0  # GETs/s
TARGET_LIST = 1.0  # seconds for the 10,000-object list
TARGET_WATCH_P99 = 0.050  # seconds, write to event


@dataclasses.dataclass(frozen=True)
class Sizes:
    rounds: int  # of each cell but the watch (the best round counts)
    creates: int  # per create cell and round
    gets: int  # per GET cell and round
    list_objects: int
    lists: int  # timed lists per round
    watch_writes: int
    client_check: int  # GETs per client in the load generator check


FULL = Sizes(
    rounds=3, creates=1000, gets=3000, list_objects=10_000, lists=3, watch_writes=500, client_check=1000
)
QUICK = Sizes(rounds=1, creates=300, gets=600, list_objects=2000, lists=3, watch_writes=60, client_check=300)


# -- processes ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("K3S_", "KUBECONFIG"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    return env


def cpu_seconds(pids: dict[str, int]) -> float:
    """User + system CPU time of the processes (every thread), from /proc."""
    total = 0
    for pid in pids.values():
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def children(parent: int) -> dict[str, int]:
    """``supervisor run <name>`` children of ``parent``, by name."""
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) != parent:
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if b"run" in argv:
                found[argv[argv.index(b"run") + 1].decode()] = int(entry.name)
    return found


async def stop_group(process: asyncio.subprocess.Process) -> None:
    """SIGTERM the process; SIGKILL its whole session (it was started in one) if it lingers."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_DEADLINE)
        except TimeoutError:
            print("no exit after SIGTERM; SIGKILL", file=sys.stderr)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    await process.wait()


async def answers(target: http_load.Target, path: str) -> bool:
    client = http_load.RawClient(target, connections=1)
    try:
        return (await asyncio.wait_for(client.request("GET", path), 2)).status == 200
    except (OSError, TimeoutError, http_load.LoadError):
        return False
    finally:
        await client.close()


# -- the cluster --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Cluster:
    profile: str
    workdir: Path
    process: asyncio.subprocess.Process | None = None
    port: int = 0

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig.yaml"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.profile}.log"

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "server" / "tls"

    def command(self) -> list[str]:
        return [
            *SUPERVISOR, "--profile", self.profile, "--config", "", "--data-dir", str(self.data_dir),
            "--https-listen-port", str(self.port), "--bind-address", "127.0.0.1",
            "--write-kubeconfig", str(self.kubeconfig),
        ]  # fmt: skip

    def target(self) -> http_load.Target:
        return http_load.target_from_kubeconfig(self.kubeconfig)

    def pids(self) -> dict[str, int]:
        """The serving processes: the API server, and kine in the server profile."""
        assert self.process is not None
        if self.profile == "edge":
            return {"apiserver": self.process.pid}  # kine and the API server run in the supervisor
        found = children(self.process.pid)
        return {name: found[name] for name in ("apiserver", "kine") if name in found}

    def log_tail(self, limit: int = 5000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except FileNotFoundError:
            return "(no log)"


@contextlib.asynccontextmanager
async def running_cluster(profile: str, workdir: Path) -> AsyncIterator[Cluster]:
    """Start the supervisor (a fresh port per attempt), yield the ready cluster, stop it."""
    cluster = Cluster(profile, workdir)
    for _ in range(START_ATTEMPTS):
        cluster.port = free_port()
        with contextlib.suppress(FileNotFoundError):
            cluster.kubeconfig.unlink()  # a stale one names the old port
        with cluster.log_path.open("ab") as log:
            cluster.process = await asyncio.create_subprocess_exec(
                *cluster.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=child_env(), start_new_session=True,
            )  # fmt: skip
        try:
            if await _ready(cluster):
                print(f"{profile} cluster ready on port {cluster.port}: {cluster.pids()}", file=sys.stderr)
                yield cluster
                return
        finally:
            await stop_group(cluster.process)
    sys.exit(f"the {profile} cluster did not become ready; its log:\n{cluster.log_tail()}")


async def _ready(cluster: Cluster) -> bool:
    assert cluster.process is not None
    deadline = time.monotonic() + READY_DEADLINE
    while time.monotonic() < deadline and cluster.process.returncode is None:
        if cluster.kubeconfig.is_file() and await answers(cluster.target(), "/readyz"):
            return True
        await asyncio.sleep(0.1)
    return False


# -- cells: a sample, the server's CPU time, optionally a profile ----------------------------------------


@dataclasses.dataclass(frozen=True)
class Result:
    sample: http_load.Sample  # the best round's
    cpu: float  # seconds of CPU the serving processes spent over every round
    ops: int  # what the CPU time is divided by, over every round: requests, lists, or watched writes

    @property
    def cpu_per_op(self) -> float:
        return self.cpu / self.ops


Results = dict[str, Result]
LATENCY_CELLS = ("list", "watch")  # judged by latency; the others by throughput


class Cells:
    """Runs cells, a round at a time, measuring the serving processes' CPU around each one.

    A cell's result is its best round (highest throughput, or lowest median latency): what the
    machine can do when the neighbours are quiet, as ``timeit`` keeps its fastest repeat. Its CPU
    time per operation is over every round.
    """

    def __init__(
        self, name: str, pids: Callable[[], dict[str, int]], profiler: Profiler | None = None
    ) -> None:
        self.name = name
        self.pids = pids
        self.profiler = profiler
        self.results: Results = {}

    async def run(
        self, key: str, work: Awaitable[http_load.Sample], *, ops: int, profile: bool = False
    ) -> None:
        pids = self.pids()
        recording = self.profiler.record(key, pids) if profile and self.profiler else contextlib.nullcontext()
        async with recording:
            before = cpu_seconds(pids)
            sample = await work
            cpu = cpu_seconds(pids) - before
        print(
            f"  {self.name} {key}: {_headline(sample, key)}, {1000 * cpu / ops:.2f} ms CPU per op",
            file=sys.stderr,
        )
        earlier = self.results.get(key)
        if earlier is not None:
            cpu, ops = cpu + earlier.cpu, ops + earlier.ops
            if not _better(sample, earlier.sample, key):
                sample = earlier.sample
        self.results[key] = Result(sample, cpu, ops)


def _better(sample: http_load.Sample, than: http_load.Sample, key: str) -> bool:
    if key in LATENCY_CELLS:
        return sample.percentile(50) < than.percentile(50)
    return sample.ops_per_second > than.ops_per_second


def _headline(sample: http_load.Sample, key: str) -> str:
    if key in LATENCY_CELLS:
        return f"p50 {_ms(sample.percentile(50))}, p99 {_ms(sample.percentile(99))}"
    return f"{sample.ops_per_second:,.0f}/s"


async def warm(side: Side) -> None:
    """Fill the pool with open connections before a cell, so no cell pays for TLS handshakes
    (uvicorn closes connections idle for 5 s, and a concurrency-1 cell leaves 31 idle)."""

    async def op(index: int) -> None:
        http_load.expect(await side.client.request("GET", side.paths["warm"]), 200, "warm-up")

    await http_load.drive(count=HIGH * 2, concurrency=HIGH, op=op)


# -- profiling ----------------------------------------------------------------------------------------


class Profiler:
    """py-spy ``record`` of the serving processes while a cell runs; collapsed stacks in ``directory``."""

    def __init__(self, directory: Path, tag: str) -> None:
        self.directory = directory
        self.tag = tag
        self.files: list[Path] = []

    @contextlib.asynccontextmanager
    async def record(self, cell: str, pids: dict[str, int]) -> AsyncIterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        running: list[asyncio.subprocess.Process] = []
        for name, pid in pids.items():
            out = self.directory / f"{self.tag}-{cell.replace(' ', '-')}-{name}.txt"
            argv = ["py-spy", "record", "--pid", str(pid), "--format", "raw", "--rate", "250",
                    "--nonblocking", "--output", str(out)]  # fmt: skip
            running.append(
                await asyncio.create_subprocess_exec(
                    *argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
            self.files.append(out)
        await asyncio.sleep(0.5)  # py-spy attaches before the cell starts
        try:
            yield
        finally:
            for process in running:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            for process in running:
                try:
                    await asyncio.wait_for(process.wait(), 20)
                except TimeoutError:
                    process.kill()
                    await process.wait()

    def summary(self, top: int = 15) -> str:
        return "\n\n".join(summarise(path, top) for path in self.files if path.is_file())


def summarise(path: Path, top: int) -> str:
    """The functions with the most samples in a collapsed-stack file: on top of the stack, and anywhere."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return f"{path.name}: no samples"
    rows = [f"{path.name}: {total} samples", "  self%  total%  function"]
    for frame, count in own.most_common(top):
        rows.append(f"  {100 * count / total:5.1f}  {100 * inclusive[frame] / total:6.1f}  {frame}")
    rows.append("  -- the project's functions, most inclusive first --")
    project = [
        (f, c)
        for f, c in inclusive.most_common()
        if f.endswith(".py)") and f.split("(")[-1].startswith("services/")
    ]
    for frame, count in project[:top]:
        rows.append(f"  {100 * own[frame] / total:5.1f}  {100 * count / total:6.1f}  {frame}")
    return "\n".join(rows)


def _frame(frame: str) -> str:
    """``func (/abs/path/file.py:123)`` as ``func (file path from its package root)``."""
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0]
    for root in ("/site-packages/", f"/lib/python{sys.version_info[0]}.{sys.version_info[1]}/", f"{ROOT}/"):
        file = file.split(root, 1)[-1]
    return f"{name} ({file})"


# -- the API workload -------------------------------------------------------------------------------


def configmap(name: str, cell: str) -> bytes:
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"bench": cell}},
        "data": DATA,
    }
    return orjson.dumps(body)


async def create_namespace(client: http_load.Client, name: str) -> None:
    response = await client.request(
        "POST", "/api/v1/namespaces", body=orjson.dumps({"metadata": {"name": name}})
    )
    if response.status not in (201, 409):
        http_load.expect(response, 201, f"create namespace {name}")


async def creates(side: Side, names: Sequence[str], *, concurrency: int, cell: str) -> http_load.Sample:
    bodies = [configmap(name, cell) for name in names]

    async def op(index: int) -> None:
        response = await side.client.request("POST", side.paths["create"], body=bodies[index])
        http_load.expect(response, 201, f"create {names[index]}")

    return await http_load.drive(count=len(names), concurrency=concurrency, op=op)


async def gets(side: Side, names: Sequence[str], *, count: int, concurrency: int) -> http_load.Sample:
    chosen = random.Random(concurrency).choices(names, k=count)
    paths = [side.paths["get"].format(name=name) for name in chosen]

    async def op(index: int) -> None:
        http_load.expect(await side.client.request("GET", paths[index]), 200, f"GET {paths[index]}")

    return await http_load.drive(count=count, concurrency=concurrency, op=op)


async def lists(side: Side, *, count: int) -> http_load.Sample:
    async def op(index: int) -> None:
        http_load.expect(await side.client.request("GET", side.paths["list"]), 200, "list")

    return await http_load.drive(count=count, concurrency=1, op=op)


async def fetch(client: http_load.Client, path: str, *, items: int | None = None) -> bytes:
    """A body the raw stack will serve; a list is checked to hold ``items`` objects or more
    (the controllers publish ``kube-root-ca.crt`` into every namespace, whenever they get to it)."""
    body = http_load.expect(await client.request("GET", path), 200, f"GET {path}").body
    if items is not None and len(orjson.loads(body)["items"]) < items:
        raise http_load.LoadError(f"{path} holds fewer than {items} objects")
    return body


@dataclasses.dataclass
class Side:
    """One server under test: a client to it and the cells it ran."""

    client: http_load.Client
    cells: Cells
    paths: dict[str, str]  # create, get (a format with {name}), list


async def bench(cluster: Cluster, raw: RawStack, args: argparse.Namespace) -> tuple[Results, Results]:
    """Each API cell, then the same cell against the raw stack, so both meet the same neighbours."""
    sizes: Sizes = args.sizes
    collection = f"/api/v1/namespaces/{NAMESPACE}/configmaps"
    profiler = Profiler(args.py_spy, args.profile) if args.py_spy else None
    make = http_load.CLIENTS[args.client]
    api = Side(
        make(cluster.target(), connections=HIGH),
        Cells("API server", cluster.pids, profiler),
        {"create": collection, "get": collection + "/{name}", "list": collection, "warm": "/readyz"},
    )
    ceiling = Side(make(raw.target, connections=HIGH), Cells("raw stack", lambda: {"raw stack": raw.pid}),
                   {"create": "/raw/configmaps", "get": "/raw/configmap?{name}", "list": "/raw/list", "warm": "/raw/ok"})  # fmt: skip
    try:
        for namespace in (NAMESPACE, WATCH_NAMESPACE):
            await create_namespace(api.client, namespace)
        names = [f"warmup-{n:04d}" for n in range(HIGH * 4)]
        await creates(api, names, concurrency=HIGH, cell="warmup")  # and loads the namespace cache
        await gets(api, names, count=HIGH * 4, concurrency=HIGH)  # loads the configmap cache
        raw.publish("get", await fetch(api.client, f"{collection}/{names[0]}"))
        for round_ in range(sizes.rounds):
            names += await _create_and_get_cells(api, ceiling, names, sizes=sizes, round_=round_)
        fill = [f"fill-{n:06d}" for n in range(sizes.list_objects - len(names))]
        await creates(api, fill, concurrency=HIGH, cell="fill")
        raw.publish("list", await fetch(api.client, collection, items=sizes.list_objects))
        for _ in range(sizes.rounds):
            for side in (api, ceiling):
                await side.cells.run("list", lists(side, count=sizes.lists), ops=sizes.lists)
        watch = bench_watch(api.client, cluster, sizes.watch_writes)
        await api.cells.run("watch", watch, ops=sizes.watch_writes)
    finally:
        await api.client.close()
        await ceiling.client.close()
    if profiler is not None:
        print(f"py-spy samples in {args.py_spy}:\n{profiler.summary()}", file=sys.stderr)
    return api.cells.results, ceiling.cells.results


async def _create_and_get_cells(
    api: Side, ceiling: Side, names: list[str], *, sizes: Sizes, round_: int
) -> list[str]:
    """One round of the create and GET cells on both sides; the names it created. The first round is profiled."""
    created: list[str] = []
    for c in (1, HIGH):
        cell = [f"c{c}-r{round_}-{n:06d}" for n in range(sizes.creates)]
        for side in (api, ceiling):
            await warm(side)
            work = creates(side, cell, concurrency=c, cell=f"c{c}")
            await side.cells.run(f"create c{c}", work, ops=len(cell), profile=c == HIGH and round_ == 0)
        created += cell
    for c in (1, HIGH):
        for side in (api, ceiling):
            await warm(side)
            work = gets(side, names + created, count=sizes.gets, concurrency=c)
            await side.cells.run(f"get c{c}", work, ops=sizes.gets, profile=c == HIGH and round_ == 0)
    return created


# -- watches ----------------------------------------------------------------------------------------


def watcher_process(kubeconfig: str, path: str, expected: list[str], conn: Connection) -> None:
    """``WATCHERS`` watches in one process. Sends "open" once all answered 200, "armed" once all saw
    the probe, then ``{name: [time.monotonic() at receipt, one per watcher]}`` for the expected names."""
    with asyncio.Runner(loop_factory=http_load.loop_factory()) as runner:
        try:
            conn.send(runner.run(_watch_all(Path(kubeconfig), path, expected, conn)))
        except Exception as exc:  # reported to the parent, which fails the cell
            conn.send(f"the watchers failed: {exc!r}")
        finally:
            conn.close()


async def _watch_all(
    kubeconfig: Path, path: str, expected: list[str], conn: Connection
) -> dict[str, list[float]]:
    client = http_load.RawClient(http_load.target_from_kubeconfig(kubeconfig), connections=1)
    received: dict[str, list[float]] = {name: [] for name in expected}
    opened, probed = asyncio.Barrier(WATCHERS + 1), asyncio.Barrier(WATCHERS + 1)

    async def watch() -> None:
        async with client.lines(path) as (status, lines):
            if status != 200:
                raise http_load.LoadError(f"a watch answered {status}")
            await opened.wait()
            seen = 0
            async for line in lines:
                at = time.monotonic()
                name = orjson.loads(line)["object"]["metadata"].get("name", "")
                if name == "watch-probe":
                    await probed.wait()
                elif name in received:
                    received[name].append(at)
                    seen += 1
                    if seen == len(expected):
                        return

    async with asyncio.timeout(WATCH_DEADLINE), asyncio.TaskGroup() as group:
        for n in range(WATCHERS):
            group.create_task(watch(), name=f"watcher {n}")
        await opened.wait()
        conn.send("open")
        await probed.wait()
        conn.send("armed")
    return received


async def bench_watch(client: http_load.Client, cluster: Cluster, writes: int) -> http_load.Sample:
    """Paced creates at concurrency 1; the time from sending each to each watcher reading its event."""
    listed = await fetch(client, f"/api/v1/namespaces/{WATCH_NAMESPACE}/configmaps?limit=1")
    revision = orjson.loads(listed)["metadata"]["resourceVersion"]  # watch from now: no initial events
    path = f"/api/v1/configmaps?watch=1&resourceVersion={revision}&timeoutSeconds=600"
    names = [f"watch-{n:05d}" for n in range(writes)]
    spawn = multiprocessing.get_context("spawn")
    ours, theirs = spawn.Pipe()
    watcher = spawn.Process(
        target=watcher_process, args=(str(cluster.kubeconfig), path, names, theirs), name="watchers"
    )
    watcher.start()
    theirs.close()
    loop = asyncio.get_running_loop()
    try:
        await _expect_message(loop, ours, "open")
        probe = configmap("watch-probe", "watch")
        response = await client.request(
            "POST", f"/api/v1/namespaces/{WATCH_NAMESPACE}/configmaps", body=probe
        )
        http_load.expect(response, 201, "create the probe")
        await _expect_message(loop, ours, "armed")
        sent, seconds = await _paced_creates(client, names)
        received = await loop.run_in_executor(None, ours.recv)
    finally:
        ours.close()
        await loop.run_in_executor(None, watcher.join, WATCH_DEADLINE)
        if watcher.is_alive():
            watcher.kill()
    if not isinstance(received, dict):
        raise http_load.LoadError(str(received))
    if missing := sum(WATCHERS - len(times) for times in received.values()):
        raise http_load.LoadError(f"{missing} watch events never arrived")
    return http_load.Sample(seconds, [at - sent[name] for name, times in received.items() for at in times])


async def _expect_message(loop: asyncio.AbstractEventLoop, conn: Connection, expected: str) -> None:
    message = await loop.run_in_executor(None, conn.recv)
    if message != expected:
        raise http_load.LoadError(f"the watchers sent {message!r}, not {expected!r}")


async def _paced_creates(client: http_load.Client, names: list[str]) -> tuple[dict[str, float], float]:
    """One create every WATCH_INTERVAL (or as soon as the previous one answered); send times by name."""
    path = f"/api/v1/namespaces/{WATCH_NAMESPACE}/configmaps"
    bodies = [configmap(name, "watch") for name in names]
    sent: dict[str, float] = {}
    started = time.monotonic()
    for n, name in enumerate(names):
        if (delay := started + n * WATCH_INTERVAL - time.monotonic()) > 0:
            await asyncio.sleep(delay)
        sent[name] = time.monotonic()
        http_load.expect(await client.request("POST", path, body=bodies[n]), 201, f"create {name}")
    return sent, time.monotonic() - started


# -- the raw stack ----------------------------------------------------------------------------------


def serve_raw_stack(tls_dir: str, port: int, bodies_dir: str) -> None:
    """A bare FastAPI app under uvicorn with the API server's TLS context (run in a child process).

    The GET and list routes answer with bytes the API server sent, published as files in
    ``bodies_dir`` before the first request to them (``RawStack.publish``) and read once.
    """
    from services.apiserver import tls

    app = fastapi.FastAPI()
    json = "application/json"
    bodies: dict[str, bytes] = {}

    def body(name: str) -> bytes:
        if name not in bodies:
            bodies[name] = (Path(bodies_dir) / f"{name}.json").read_bytes()
        return bodies[name]

    # orjson in and out, no pydantic model on the path: the API server's own rule (DESIGN §7), so the
    # routes do the least a FastAPI route can and the figures are a ceiling.
    @app.post("/raw/configmaps")
    async def echo(request: fastapi.Request) -> fastapi.Response:
        return fastapi.Response(orjson.dumps(orjson.loads(await request.body())), 201, media_type=json)

    @app.get("/raw/configmap")
    async def one() -> fastapi.Response:
        return fastapi.Response(body("get"), media_type=json)

    @app.get("/raw/list")
    async def many() -> fastapi.Response:
        return fastapi.Response(body("list"), media_type=json)

    @app.get("/raw/ok")
    async def ok() -> fastapi.Response:
        return fastapi.Response(b"ok", media_type="text/plain")

    directory = Path(tls_dir)
    context = tls.server_context(
        cert_file=directory / "serving-kube-apiserver.crt",
        key_file=directory / "serving-kube-apiserver.key",
        client_ca_file=directory / "client-ca.crt",
    )
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, http="httptools", loop="uvloop", log_level="warning",
        access_log=False, lifespan="off", ssl_context_factory=lambda _config, _default: context,
    )  # fmt: skip
    uvicorn.Server(config).run()


@dataclasses.dataclass(frozen=True)
class RawStack:
    target: http_load.Target
    pid: int
    bodies_dir: Path

    def publish(self, name: str, body: bytes) -> None:
        (self.bodies_dir / f"{name}.json").write_bytes(body)


@contextlib.asynccontextmanager
async def running_raw_stack(cluster: Cluster) -> AsyncIterator[RawStack]:
    """The raw stack in a child process, on the cluster's certificates; stopped at the end."""
    spawn = multiprocessing.get_context("spawn")
    bodies_dir = cluster.workdir / "raw-bodies"
    bodies_dir.mkdir(exist_ok=True)
    for _ in range(START_ATTEMPTS):
        port = free_port()
        server = spawn.Process(
            target=serve_raw_stack, args=(str(cluster.tls_dir), port, str(bodies_dir)), name="raw stack"
        )
        server.start()
        target = http_load.target_from_kubeconfig(cluster.kubeconfig, url=f"https://127.0.0.1:{port}")
        try:
            deadline = time.monotonic() + READY_DEADLINE
            while server.is_alive() and time.monotonic() < deadline:
                if await answers(target, "/raw/ok"):
                    print(f"raw stack ready on port {port} (pid {server.pid})", file=sys.stderr)
                    assert server.pid is not None
                    yield RawStack(target, server.pid, bodies_dir)
                    return
                await asyncio.sleep(0.1)
        finally:
            server.terminate()
            server.join(STOP_DEADLINE)
            if server.is_alive():
                server.kill()
    sys.exit("the raw stack did not start")


async def client_check(raw: RawStack, count: int) -> dict[str, float]:
    """GETs/s at concurrency 32 against the raw stack with each client: which one limits less."""
    rates = {}
    for name, make in http_load.CLIENTS.items():
        client = make(raw.target, connections=HIGH)

        async def get(index: int, client: http_load.Client = client) -> None:
            http_load.expect(await client.request("GET", "/raw/configmap"), 200, "raw GET")

        try:
            await http_load.drive(count=HIGH * 2, concurrency=HIGH, op=get)  # connects
            rates[name] = (await http_load.drive(count=count, concurrency=HIGH, op=get)).ops_per_second
        finally:
            await client.close()
    return rates


# -- the report -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Row:
    figure: str
    key: str
    throughput: bool  # the result is ops/s (else a latency)
    target: str
    slo: float | None  # p99 seconds
    meets: Callable[[http_load.Sample], bool] | None = None


def rows(sizes: Sizes) -> list[Row]:
    return [
        Row("ConfigMap create, c1", "create c1", True, "-", SLO_MUTATING),
        Row(f"ConfigMap create, c{HIGH}", f"create c{HIGH}", True, f">= {TARGET_CREATES:,.0f}/s", SLO_MUTATING,
            lambda s: s.ops_per_second >= TARGET_CREATES),
        Row("ConfigMap GET, c1", "get c1", True, "-", SLO_READ),
        Row(f"ConfigMap GET, c{HIGH}", f"get c{HIGH}", True, f">= {TARGET_GETS:,.0f}/s", SLO_READ,
            lambda s: s.ops_per_second >= TARGET_GETS),
        Row(f"list of {sizes.list_objects:,} ConfigMaps", "list", False, f"< {TARGET_LIST:.0f} s", SLO_LIST,
            lambda s: s.percentile(99) < TARGET_LIST),
        Row(f"watch, {WATCHERS} watchers: write to event", "watch", False,
            f"p99 < {TARGET_WATCH_P99 * 1000:.0f} ms", None, lambda s: s.percentile(99) < TARGET_WATCH_P99),
    ]  # fmt: skip


def _ms(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:.0f} ms" if ms >= 100 else f"{ms:.1f} ms" if ms >= 1 else f"{ms:.2f} ms"


def _mark(ok: bool | None) -> str:
    return "" if ok is None else " (met)" if ok else " (missed)"


def table(api: Results, raw: Results, sizes: Sizes) -> str:
    lines = [
        "| figure | result | p50 | p99 | target | Kubernetes SLO, p99 | raw-stack ceiling | ratio to ceiling "
        "| server CPU/op | raw-stack CPU/op |",
        "|---|---:|---:|---:|---|---|---:|---:|---:|---:|",
    ]
    for row in rows(sizes):
        ours, ceiling = api[row.key], raw.get(row.key)
        sample = ours.sample
        if row.throughput:
            result = f"{sample.ops_per_second:,.0f}/s"
            ceiling_text = f"{ceiling.sample.ops_per_second:,.0f}/s" if ceiling else "n/a"
            ratio = f"{sample.ops_per_second / ceiling.sample.ops_per_second:.2f}" if ceiling else "n/a"
        else:
            result = _ms(sample.percentile(50))
            ceiling_text = _ms(ceiling.sample.percentile(50)) if ceiling else "n/a"
            ratio = f"{ceiling.sample.percentile(50) / sample.percentile(50):.2f}" if ceiling else "n/a"
        slo = (
            "none yet" if row.slo is None else f"<= {row.slo:.0f} s{_mark(sample.percentile(99) <= row.slo)}"
        )
        target = row.target + _mark(row.meets(sample) if row.meets else None)
        raw_cpu = _ms(ceiling.cpu_per_op) if ceiling else "n/a"
        lines.append(
            f"| {row.figure} | {result} | {_ms(sample.percentile(50))} | {_ms(sample.percentile(99))} | {target} "
            f"| {slo} | {ceiling_text} | {ratio} | {_ms(ours.cpu_per_op)} | {raw_cpu} |"
        )
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{datetime.date.today().isoformat()}, {os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def report(args: argparse.Namespace, api: Results, raw: Results, clients: dict[str, float]) -> str:
    sizes: Sizes = args.sizes
    check = " | ".join(f"{http_load.CLIENTS[name].name}: {rate:,.0f}/s" for name, rate in clients.items())
    watch = api["watch"].sample
    serving = (
        "the API server and kine" if args.profile == "server" else "the supervisor (kine and the API server)"
    )
    return (
        f"API server, `--profile {args.profile}`, SQLite. Machine: {machine()}; load average "
        f"{args.load_before:.2f} before the run, {os.getloadavg()[0]:.2f} after.\n\n"
        f"Load generator: {http_load.CLIENTS[args.client].name}, HTTP/1.1 keep-alive, {HIGH} connections, "
        f"the admin's client certificate, loopback TLS. Each cell but the watch runs {sizes.rounds} round(s), "
        f"alternating API server and raw stack, and shows its best round: {sizes.creates} creates, {sizes.gets} GETs or "
        f"{sizes.lists} lists per round. Then {sizes.watch_writes} watched creates at most {1 / WATCH_INTERVAL:.0f}/s "
        f"(achieved {sizes.watch_writes / watch.seconds:.0f}/s), each to {WATCHERS} watchers in another process.\n"
        f"Raw-stack ceiling: bare FastAPI + uvicorn (httptools, uvloop) on the same TLS setup and load generator; "
        f"ratio is ours / ceiling for throughput, ceiling / ours for latency (1.00 = the ceiling). "
        f"Lists and the watch give latency in the result column (p50). "
        f"Server CPU/op: CPU time of {serving} per request (per list; per watched write, fanned out to "
        f"{WATCHERS}), over every round; it hardly moves when neighbours share the machine, throughput does.\n\n"
        f"{table(api, raw, sizes)}\n\n"
        f"Load generator check, GET c{HIGH} against the raw stack: {check}.\n"
    )


# -- creates only ---------------------------------------------------------------------------------

CREATE_ROUNDS = Sizes(rounds=5, creates=3000, gets=0, list_objects=0, lists=0, watch_writes=0, client_check=0)


async def creates_only(args: argparse.Namespace, workdir: Path) -> str:
    """The c32 create cell ``rounds`` times; per round, creates/s, p99 and each process's CPU per create."""
    sizes: Sizes = args.sizes
    rows = []
    async with running_cluster(args.profile, workdir) as cluster:
        side = Side(
            http_load.CLIENTS[args.client](cluster.target(), connections=HIGH),
            Cells("API server", cluster.pids),
            {"create": f"/api/v1/namespaces/{NAMESPACE}/configmaps", "warm": "/readyz"},
        )
        profiler = Profiler(args.py_spy, args.profile) if args.py_spy else None
        try:
            await create_namespace(side.client, NAMESPACE)
            await creates(side, [f"warmup-{n:04d}" for n in range(HIGH * 4)], concurrency=HIGH, cell="warmup")
            for round_ in range(sizes.rounds):
                await warm(side)
                pids = cluster.pids()
                recording = (
                    profiler.record(f"create c{HIGH}", pids)
                    if profiler and round_ == 0
                    else contextlib.nullcontext()
                )
                async with recording:
                    before = {name: cpu_seconds({name: pid}) for name, pid in pids.items()}
                    names = [f"c{HIGH}-r{round_}-{n:06d}" for n in range(sizes.creates)]
                    sample = await creates(side, names, concurrency=HIGH, cell=f"c{HIGH}")
                    cpu = {
                        name: (cpu_seconds({name: pid}) - before[name]) / len(names)
                        for name, pid in pids.items()
                    }
                rows.append((sample, cpu, os.getloadavg()[0]))
                print(f"  round {round_ + 1}: {sample.ops_per_second:,.0f}/s, "
                      + ", ".join(f"{name} {1000 * c:.3f} ms" for name, c in cpu.items()), file=sys.stderr)  # fmt: skip
        finally:
            await side.client.close()
    if profiler is not None:
        print(f"py-spy samples in {args.py_spy}:\n{profiler.summary()}", file=sys.stderr)
    return _creates_report(args, rows)


def _creates_report(
    args: argparse.Namespace, rows: list[tuple[http_load.Sample, dict[str, float], float]]
) -> str:
    names = list(rows[0][1])
    head = f"| round | creates/s | p99 | {' | '.join(f'CPU per create, {n}' for n in names)} | total | load average |"
    lines = [head, "|---" * (len(names) + 5) + "|"]
    for number, (sample, cpu, load) in enumerate(rows, 1):
        cpus = [*(cpu[n] for n in names), sum(cpu.values())]
        cells = [
            f"{sample.ops_per_second:,.0f}",
            _ms(sample.percentile(99)),
            *(f"{1000 * c:.3f} ms" for c in cpus),
        ]
        lines.append(f"| {number} | {' | '.join(cells)} | {load:.2f} |")
    return (
        f"ConfigMap creates at concurrency {HIGH}, `--profile {args.profile}`, SQLite, {args.sizes.creates} per round. "
        f"Machine: {machine()}; load average {args.load_before:.2f} before the run.\n\n"
        + "\n".join(lines)
        + "\n"
    )


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/api_bench.py",
        description=(
            "Benchmark the API server on SQLite (ConfigMap creates, GETs, a 10,000-object list, 100 watchers) "
            "against the Kubernetes SLOs and a bare FastAPI app on the same TLS setup; print one table."
        ),
    )
    parser.add_argument("--profile", choices=("server", "edge"), default="server",
                        help="the supervisor profile to start (default: server)")  # fmt: skip
    parser.add_argument("--quick", action="store_true",
                        help=f"smaller cells ({QUICK.creates} creates, a {QUICK.list_objects}-object list): a smoke run")  # fmt: skip
    parser.add_argument("--client", choices=sorted(http_load.CLIENTS), default="raw",
                        help="the load generator's HTTP client (default: raw; the report compares both)")  # fmt: skip
    parser.add_argument("--out", type=Path, metavar="FILE", help="also write the report as markdown to FILE")
    parser.add_argument("--py-spy", type=Path, metavar="DIR", dest="py_spy",
                        help="sample the serving processes with py-spy during the c32 create and GET cells")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the cluster's data dir and log")
    parser.add_argument("--creates-only", action="store_true", dest="creates_only",
                        help="only the c32 create cell, in rounds, with each serving process's CPU per create")  # fmt: skip
    args = parser.parse_args(argv)
    args.sizes = QUICK if args.quick else FULL
    if args.creates_only and not args.quick:
        args.sizes = CREATE_ROUNDS
    args.load_before = os.getloadavg()[0]  # other work on the machine skews every figure: say how much
    if args.py_spy is not None and shutil.which("py-spy") is None:
        parser.error("--py-spy needs py-spy on PATH (pip install py-spy)")
    return args


async def run(args: argparse.Namespace, workdir: Path) -> tuple[Results, Results, dict[str, float]]:
    async with running_cluster(args.profile, workdir) as cluster, running_raw_stack(cluster) as raw:
        print(
            f"benchmarking the API server ({args.profile} profile) and the raw stack, cell by cell",
            file=sys.stderr,
        )
        api, ceiling = await bench(cluster, raw, args)
        clients = await client_check(raw, args.sizes.client_check)
    return api, ceiling, clients


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="api-bench-"))
    started = time.monotonic()
    try:
        with asyncio.Runner(loop_factory=http_load.loop_factory()) as runner:
            if args.creates_only:
                text = runner.run(creates_only(args, workdir))
            else:
                text = report(args, *runner.run(run(args, workdir)))
    finally:
        if args.keep:
            print(f"data dir and log kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(text)
    print(f"total {time.monotonic() - started:.0f} s", file=sys.stderr)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
