"""Cold start, memory and idle CPU of the edge profile (and the server profile), beside K3s's figures.

Each profile is started as users start it: ``python -m supervisor start --profile edge|server`` with
``--config ''``, a fresh temporary data dir (so every start generates its PKI and an empty SQLite
datastore) and ``--https-listen-port 0`` on 127.0.0.1. Figures, in this order:

- cold start, ``--runs`` times (default 5, median reported, min-max beside it): from the spawn of the
  supervisor to the admin kubeconfig on disk, and to the Node's Ready condition True as seen through
  the API (a list of nodes, then a watch from its resourceVersion, so the moment is the event's
  arrival, not a polling tick);
- RSS right after start: at the moment the node was seen Ready, in every run (median);
- on the last run's cluster, after ``SETTLE`` seconds: ``--idle-seconds`` (default 60) of idle, RSS and
  CPU time sampled every second: CPU is the processes' CPU time delta over the wall time (mean), and
  the 95th percentile of the one-second samples, as the K3s resource-profiling page reports p95;
- then ``--pods`` (default 20) pause-like pods (``sleep`` on the host through the process runtime) are
  created, and once all are Running (seen by a watch) and ``SETTLE`` seconds passed, the same idle
  window again, with RSS of the control plane and, apart, of the pods' processes (one shim each, a
  small standard-library Python process like containerd-shim, plus the ``sleep``).

Every start runs with a bytecode cache (``PYTHONPYCACHEPREFIX`` in the temporary dir, filled by one
uncounted start per profile), as an installed package starts; ``--no-pycache`` keeps this
environment's PYTHONDONTWRITEBYTECODE, with which every start compiles the project's modules
(about 0.4 s more here).

"The process" is the supervisor for the edge profile (every component runs in it). For the server
profile it is the supervisor and all its children (nats, kine, apiserver, scheduler, controllers,
agent): RSS is their sum, as the issue asks; PSS (shared pages split between the processes) is given
beside it. The pods' shims and containers are never counted in the control plane's figures.

The machine is shared (other work runs on its two cores): the load average is printed before and
after. CPU time barely depends on it; wall-clock start times do.

Processes are torn down even on errors: pods are deleted with grace 0, the supervisor gets SIGTERM
(SIGKILL to its session after ``STOP_DEADLINE``), and any process whose command line names the
temporary directory, or whose pid a container's ``state.json`` records, is killed by process group.

``pod_startup_bench.py`` reuses the helpers here (``running``, ``PodWatcher``, ``create_pods``).

Usage: ``python bench/edge_bench.py [--profiles edge,server] [--runs 5] [--idle-seconds 60]
[--pods 20] [--no-pycache] [--out FILE] [--keep]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script from anywhere in a checkout

from bench import http_load  # noqa: E402

SUPERVISOR = (sys.executable, "-m", "supervisor", "start")
READY_DEADLINE = 120.0  # seconds from spawn to node Ready before a start counts as failed
STOP_DEADLINE = 15.0  # seconds between SIGTERM and SIGKILL
POD_DEADLINE = 300.0  # seconds for pods to turn Running, or to go away after deletion
SETTLE = 5.0  # seconds of quiet before an idle window (informer syncs, first leases, status posts)
NAMESPACE = "bench"
SHIM_MARK = b"runtimes/shim.py"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# K3s's published figures (docs/shared reference §13) and the targets.
K3S_START = (25.0, 50.0)  # seconds, cold start to Ready
K3S_SERVER_RSS = (500.0, 1600.0)  # MB, server (k3s.service, with containerd)
K3S_AGENT_RSS = 275.0  # MB
K3S_IDLE_CPU = (5.0, 6.0)  # % of a core, p95, server with a workload (Xeon), resource-profiling page
TARGET_START = 2.0  # seconds
TARGET_RSS = 150.0  # MB


# -- processes ----------------------------------------------------------------------------------------


def _stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (field 3, the state, is index 0)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_table() -> dict[int, tuple[int, bytes]]:
    """Every live process: pid -> (parent pid, command line)."""
    table: dict[int, tuple[int, bytes]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                table[int(entry.name)] = (int(_stat(int(entry.name))[1]), (entry / "cmdline").read_bytes())
    return table


def process_tree(root: int, data_dir: Path | None = None) -> tuple[list[int], list[int]]:
    """``root`` and its descendants, split in two: the control plane, and pods (shims and below).

    Shims detach from the agent (they outlive it), so with ``data_dir`` the shims whose spec lies
    under it count too, wherever they hang in the process tree, with their descendants.
    """
    table = process_table()
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        kids.setdefault(ppid, []).append(pid)
    control: list[int] = []
    pods: list[int] = []
    stack = [(root, False)]
    if data_dir is not None:
        mark = str(data_dir).encode()
        stack += [(pid, True) for pid, (_, cmd) in table.items() if SHIM_MARK in cmd and mark in cmd]
    seen: set[int] = set()
    while stack:
        pid, in_pod = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        in_pod = in_pod or SHIM_MARK in table.get(pid, (0, b""))[1]
        (pods if in_pod else control).append(pid)
        stack.extend((kid, in_pod) for kid in kids.get(pid, ()))
    return control, pods


def _status_kb(pid: int, field: str, file: str = "status") -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def rss_mb(pids: Sequence[int]) -> float:
    return sum(_status_kb(pid, "VmRSS") for pid in pids) / 1024


def pss_mb(pids: Sequence[int]) -> float:
    """Proportional set size: shared pages (libpython, the interpreter's own) split between sharers."""
    return sum(_status_kb(pid, "Pss", "smaps_rollup") for pid in pids) / 1024


def process_name(pid: int) -> str:
    """``supervisor run <name>`` children by their name, the supervisor as such, others by argv[0]."""
    try:
        argv = [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]
    except OSError:
        return "?"
    if "run" in argv[:-1] and "supervisor" in argv:
        return argv[argv.index("run") + 1]
    return "supervisor" if "supervisor" in argv else Path(argv[0]).name


def breakdown(pids: Sequence[int]) -> str:
    """``name RSS`` for each process, largest first."""
    sizes = sorted(((rss_mb([pid]), process_name(pid)) for pid in pids), reverse=True)
    return ", ".join(f"{name} {size:.0f} MB" for size, name in sizes)


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of the processes (every thread), from /proc."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = _stat(pid)
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def child_env(pycache: Path | None = None) -> dict[str, str]:
    """The supervisor's environment; with ``pycache``, compiled bytecode is kept there and reused.

    An installed package starts from its .pyc files; a checkout run with PYTHONDONTWRITEBYTECODE
    (as on this machine) compiles every module of the project at each start instead.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("K3S_", "KUBECONFIG"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    if pycache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def _kill_group(pid: int) -> None:
    for kill in (os.killpg, os.kill):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill(pid, signal.SIGKILL)


def sweep(workdir: Path) -> int:
    """SIGKILL what a run left behind: processes naming ``workdir`` and recorded containers."""
    killed = 0
    mark = str(workdir).encode()
    for pid, (_, cmdline) in process_table().items():
        if mark in cmdline and pid != os.getpid():
            _kill_group(pid)
            killed += 1
    for state_file in workdir.rglob("state.json"):
        with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
            state = orjson.loads(state_file.read_bytes())
            if int(_stat(state["pid"])[19]) == state["start_ticks"]:  # not a recycled pid
                _kill_group(state["pid"])
                killed += 1
    if killed:
        time.sleep(0.5)  # the killed processes leave their cgroups
    for sandbox in workdir.rglob("sandbox.json"):  # pods/<uid>/sandbox.json: pods the agent left behind
        remove_cgroups(sandbox.parent.name)
    return killed


def remove_cgroups(pod_uid: str) -> None:
    """Remove the (empty) cgroups of one of our pods, where the agent lays them out as root."""
    for base in ("", "memory/", "cpu/", "cpu,cpuacct/"):
        for qos in ("", "burstable/", "besteffort/"):
            pod_dir = Path(f"/sys/fs/cgroup/{base}kubepods/{qos}pod{pod_uid}")
            with contextlib.suppress(OSError):
                for leaf in pod_dir.iterdir():
                    if leaf.is_dir():
                        leaf.rmdir()
                pod_dir.rmdir()


# -- the cluster --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Cluster:
    """One supervisor run: its process and the moments its start went through (monotonic seconds)."""

    profile: str
    workdir: Path
    process: asyncio.subprocess.Process | None = None
    spawned: float = math.nan
    kubeconfig_at: float = math.nan
    ready_at: float = math.nan
    rss_at_ready: float = math.nan  # MB, the control plane's

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig.yaml"

    @property
    def log_path(self) -> Path:
        return self.workdir / "supervisor.log"

    def command(self) -> list[str]:
        return [
            *SUPERVISOR, "--profile", self.profile, "--config", "", "--data-dir", str(self.workdir / "data"),
            "--https-listen-port", "0", "--bind-address", "127.0.0.1",
            "--write-kubeconfig", str(self.kubeconfig),
        ]  # fmt: skip

    def make_workdir(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)

    def target(self) -> http_load.Target:
        return http_load.target_from_kubeconfig(self.kubeconfig)

    def control_pids(self) -> list[int]:
        assert self.process is not None
        return process_tree(self.process.pid)[0]

    def pod_pids(self) -> list[int]:
        assert self.process is not None
        return process_tree(self.process.pid, self.workdir)[1]

    def log_tail(self, limit: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except FileNotFoundError:
            return "(no log)"


@contextlib.asynccontextmanager
async def running(
    profile: str, workdir: Path, *, wrapper: Sequence[str] = (), pycache: Path | None = None
) -> AsyncIterator[tuple[Cluster, http_load.RawClient]]:
    """Spawn the supervisor, wait for its node to be Ready, yield it with an admin client; tear down.

    ``wrapper`` replaces ``python`` in the command (``python -m cProfile -o FILE``) to profile it;
    ``pycache`` is where its bytecode is kept (``child_env``).
    """
    cluster = Cluster(profile, workdir)
    cluster.make_workdir()
    command = cluster.command()
    if wrapper:
        command = [*wrapper, *command[1:]]
    client: http_load.RawClient | None = None
    try:
        with cluster.log_path.open("ab") as log:
            cluster.spawned = time.monotonic()
            cluster.process = await asyncio.create_subprocess_exec(
                *command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=child_env(pycache), start_new_session=True,
            )  # fmt: skip
        target = await _wait_kubeconfig(cluster)
        client = http_load.RawClient(target, connections=32)
        await _wait_node_ready(cluster, client)
        cluster.rss_at_ready = rss_mb(cluster.control_pids())
        yield cluster, client
    finally:
        await teardown(cluster, client)


async def _wait_kubeconfig(cluster: Cluster) -> http_load.Target:
    assert cluster.process is not None
    while time.monotonic() - cluster.spawned < READY_DEADLINE and cluster.process.returncode is None:
        if cluster.kubeconfig.is_file():
            with contextlib.suppress(Exception):  # half-written: read it again next tick
                target = cluster.target()
                cluster.kubeconfig_at = time.monotonic()
                return target
        await asyncio.sleep(0.005)
    raise RuntimeError(f"no kubeconfig from the {cluster.profile} profile; its log:\n{cluster.log_tail()}")


def node_ready(node: dict[str, Any]) -> bool:
    conditions = node.get("status", {}).get("conditions") or ()
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


async def _wait_node_ready(cluster: Cluster, client: http_load.RawClient) -> None:
    """List nodes; unless one is Ready, watch from the list's revision until one is."""
    while time.monotonic() - cluster.spawned < READY_DEADLINE:
        assert cluster.process is not None
        if cluster.process.returncode is not None:
            break
        try:
            listed = orjson.loads(
                http_load.expect(await client.request("GET", "/api/v1/nodes"), 200, "list").body
            )
        except (OSError, http_load.LoadError):
            await asyncio.sleep(0.01)  # the kubeconfig can precede the listener by a moment
            continue
        if any(node_ready(node) for node in listed["items"]):
            cluster.ready_at = time.monotonic()
            return
        revision = listed["metadata"]["resourceVersion"]
        path = f"/api/v1/nodes?watch=1&resourceVersion={revision}&timeoutSeconds=30"
        if await _watch_ready(client, path):
            cluster.ready_at = time.monotonic()
            return
    raise RuntimeError(
        f"the {cluster.profile} profile's node never turned Ready; its log:\n{cluster.log_tail()}"
    )


async def _watch_ready(client: http_load.RawClient, path: str) -> bool:
    """Whether the watch delivered a Ready node; False when it ended first (list and watch again)."""
    try:
        async with client.lines(path) as (status, lines):
            if status != 200:
                return False
            async for line in lines:
                event = orjson.loads(line)
                if event.get("type") in ("ADDED", "MODIFIED") and node_ready(event["object"]):
                    return True
    except (OSError, EOFError, http_load.LoadError):
        await asyncio.sleep(0.01)
    return False


async def teardown(cluster: Cluster, client: http_load.RawClient | None) -> None:
    """Delete the pods (grace 0) and wait for their processes, stop the supervisor, sweep leftovers."""
    process = cluster.process
    if process is not None and process.returncode is None and client is not None:
        with contextlib.suppress(Exception):  # a broken cluster still gets stopped and swept below
            await delete_pods(client, NAMESPACE)
            for _ in range(150):  # 30 s for the agent to stop the pods' processes
                if not cluster.pod_pids():
                    break
                await asyncio.sleep(0.2)
    if client is not None:
        await client.close()
    if process is not None:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), STOP_DEADLINE)
            except TimeoutError:
                print(f"{cluster.profile}: no exit after SIGTERM; SIGKILL", file=sys.stderr)
        _kill_group(process.pid)
        await process.wait()
    if leftovers := sweep(cluster.workdir):
        print(f"{cluster.profile}: killed {leftovers} leftover process(es)", file=sys.stderr)


# -- pods ---------------------------------------------------------------------------------------------


def pod_body(name: str, *, namespace: str = NAMESPACE) -> bytes:
    """A pause-like pod: ``sleep`` run on the host by the process runtime, nothing mounted."""
    return orjson.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "containers": [{"name": "sleep", "image": "busybox", "command": ["sleep", "3600"]}],
            "automountServiceAccountToken": False, "terminationGracePeriodSeconds": 0,
        },
    })  # fmt: skip


async def ensure_namespace(client: http_load.Client, name: str = NAMESPACE) -> None:
    body = orjson.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    response = await client.request("POST", "/api/v1/namespaces", body=body)
    if response.status not in (201, 409):
        http_load.expect(response, 201, f"create namespace {name}")


async def create_pods(
    client: http_load.Client, names: Sequence[str], *, concurrency: int, sent: dict[str, float] | None = None
) -> http_load.Sample:
    """POST the pods from ``concurrency`` workers; ``sent`` gets each one's send time (monotonic)."""

    async def op(index: int) -> None:
        if sent is not None:
            sent[names[index]] = time.monotonic()
        path = f"/api/v1/namespaces/{NAMESPACE}/pods"
        http_load.expect(await client.request("POST", path, body=pod_body(names[index])), 201, "create pod")

    return await http_load.drive(count=len(names), concurrency=concurrency, op=op)


async def delete_pods(client: http_load.Client, namespace: str) -> None:
    listed = await client.request("GET", f"/api/v1/namespaces/{namespace}/pods")
    if listed.status != 200:
        return
    names = [pod["metadata"]["name"] for pod in orjson.loads(listed.body)["items"]]

    async def op(index: int) -> None:
        path = f"/api/v1/namespaces/{namespace}/pods/{names[index]}?gracePeriodSeconds=0"
        await client.request("DELETE", path)

    await http_load.drive(count=len(names), concurrency=16, op=op)


class PodWatcher:
    """A watch of the namespace's pods that notes when each is first seen bound and Running."""

    def __init__(self, client: http_load.RawClient, namespace: str = NAMESPACE) -> None:
        self.client = client
        self.namespace = namespace
        self.running: dict[str, float] = {}
        self.bound: dict[str, float] = {}  # first seen with spec.nodeName
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        listed = await self.client.request("GET", f"/api/v1/namespaces/{self.namespace}/pods")
        revision = orjson.loads(http_load.expect(listed, 200, "list pods").body)["metadata"][
            "resourceVersion"
        ]
        opened = asyncio.Event()
        self._task = asyncio.create_task(self._watch(revision, opened), name="bench pod watch")
        await opened.wait()

    async def _watch(self, revision: str, opened: asyncio.Event) -> None:
        path = f"/api/v1/namespaces/{self.namespace}/pods?watch=1&resourceVersion={revision}"
        async with self.client.lines(path) as (status, lines):
            opened.set()
            if status != 200:
                raise http_load.LoadError(f"the pod watch answered {status}")
            async for line in lines:
                event = orjson.loads(line)
                pod = event.get("object", {})
                name = pod.get("metadata", {}).get("name")
                if pod.get("spec", {}).get("nodeName") and name not in self.bound:
                    self.bound[name] = time.monotonic()
                if pod.get("status", {}).get("phase") == "Running" and name not in self.running:
                    self.running[name] = time.monotonic()
                    self._changed.set()

    async def wait_running(self, names: Sequence[str]) -> None:
        deadline = time.monotonic() + POD_DEADLINE
        while not all(name in self.running for name in names):
            if self._task is not None and self._task.done():
                self._task.result()  # raises what ended the watch
                raise http_load.LoadError("the pod watch ended")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), max(0.0, deadline - time.monotonic()))
            if time.monotonic() >= deadline:
                missing = [name for name in names if name not in self.running]
                raise http_load.LoadError(f"{len(missing)} pods never turned Running, e.g. {missing[:3]}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


# -- measuring ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Idle:
    cpu_mean: float  # % of one core over the window
    cpu_p95: float  # % of one core, 95th percentile of one-second samples
    rss: float  # MB, median of the samples
    rss_p95: float
    pss: float  # MB, at the end of the window


async def idle_window(cluster: Cluster, seconds: float) -> Idle:
    """Sample the control plane's CPU time and RSS every second for ``seconds``."""
    pids = cluster.control_pids()
    cpu_samples: list[float] = []
    rss_samples: list[float] = [rss_mb(pids)]
    started, cpu_start = time.monotonic(), cpu_seconds(pids)
    last, last_cpu = started, cpu_start
    while last - started < seconds:
        await asyncio.sleep(min(1.0, seconds - (last - started)))
        now, cpu = time.monotonic(), cpu_seconds(pids)
        cpu_samples.append(100 * (cpu - last_cpu) / (now - last))
        rss_samples.append(rss_mb(pids))
        last, last_cpu = now, cpu
    return Idle(
        cpu_mean=100 * (last_cpu - cpu_start) / (last - started),
        cpu_p95=http_load.percentile(cpu_samples, 95),
        rss=statistics.median(rss_samples),
        rss_p95=http_load.percentile(rss_samples, 95),
        pss=pss_mb(pids),
    )


@dataclasses.dataclass
class ProfileResult:
    profile: str
    starts: list[float] = dataclasses.field(default_factory=list)  # seconds, spawn to node Ready
    kubeconfigs: list[float] = dataclasses.field(default_factory=list)  # seconds, spawn to kubeconfig
    rss_at_ready: list[float] = dataclasses.field(default_factory=list)
    processes: int = 0
    breakdown: str = ""  # RSS by process, at the end of the idle window
    idle: Idle | None = None
    pods_up: float = math.nan  # seconds for the pods to turn Running
    with_pods: Idle | None = None
    pod_rss: float = math.nan  # MB, shims and containers
    pod_processes: int = 0


async def prime(profile: str, workdir: Path, pycache: Path) -> None:
    """One uncounted start that fills the bytecode cache, as installing a package does."""
    async with running(profile, workdir / f"{profile}-prime", pycache=pycache) as (cluster, _):
        print(f"{profile}: priming start (bytecode compiled) {cluster.ready_at - cluster.spawned:.2f} s",
              file=sys.stderr)  # fmt: skip


async def measure(profile: str, args: argparse.Namespace, workdir: Path) -> ProfileResult:
    result = ProfileResult(profile)
    if args.pycache is not None:
        await prime(profile, workdir, args.pycache)
    for run in range(args.runs):
        async with running(profile, workdir / f"{profile}-{run}", pycache=args.pycache) as (cluster, client):
            result.starts.append(cluster.ready_at - cluster.spawned)
            result.kubeconfigs.append(cluster.kubeconfig_at - cluster.spawned)
            result.rss_at_ready.append(cluster.rss_at_ready)
            print(f"{profile} run {run + 1}: kubeconfig {result.kubeconfigs[-1]:.2f} s, node Ready "
                  f"{result.starts[-1]:.2f} s, RSS {cluster.rss_at_ready:.0f} MB", file=sys.stderr)  # fmt: skip
            if run == args.runs - 1:
                await _steady_state(cluster, client, result, args)
    return result


async def _steady_state(
    cluster: Cluster, client: http_load.RawClient, result: ProfileResult, args: argparse.Namespace
) -> None:
    result.processes = len(cluster.control_pids())
    await asyncio.sleep(SETTLE)
    result.idle = await idle_window(cluster, args.idle_seconds)
    result.breakdown = breakdown(cluster.control_pids())
    print(f"{cluster.profile} idle: {result.idle}", file=sys.stderr)
    await ensure_namespace(client)
    watcher = PodWatcher(client)
    await watcher.start()
    try:
        names = [f"idle-{n}" for n in range(args.pods)]
        started = time.monotonic()
        await create_pods(client, names, concurrency=8)
        await watcher.wait_running(names)
        result.pods_up = time.monotonic() - started
    finally:
        await watcher.stop()
    await asyncio.sleep(SETTLE)
    result.with_pods = await idle_window(cluster, args.idle_seconds)
    pods = cluster.pod_pids()
    result.pod_rss, result.pod_processes = rss_mb(pods), len(pods)
    print(f"{cluster.profile} with {args.pods} pods: {result.with_pods}; pods' processes "
          f"{result.pod_processes}, {result.pod_rss:.0f} MB", file=sys.stderr)  # fmt: skip


# -- the report ---------------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{datetime.date.today().isoformat()}, {os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def mark(ok: bool) -> str:
    return "met" if ok else "missed"


def judge(result: ProfileResult, target: str, ok: bool) -> str:
    """The issue's targets are the edge profile's; the server profile's rows only show them."""
    return f"{target} ({mark(ok)})" if result.profile == "edge" else f"(edge: {target})"


def spread(values: Sequence[float], unit: str, digits: int = 2) -> str:
    return (
        f"{statistics.median(values):.{digits}f} {unit} ({min(values):.{digits}f}-{max(values):.{digits}f})"
    )


def times(peer: tuple[float, float] | float, ours: float) -> str:
    """How many times smaller (or faster) ours is than the peer's figure or range."""
    low, high = peer if isinstance(peer, tuple) else (peer, peer)
    return f"{_x(low / ours)}x" if low == high else f"{_x(low / ours)}-{_x(high / ours)}x"


def _x(ratio: float) -> str:
    return f"{ratio:.1f}" if ratio < 10 else f"{ratio:.0f}"


def table(result: ProfileResult, args: argparse.Namespace) -> str:
    idle, loaded = result.idle, result.with_pods
    assert idle is not None and loaded is not None
    start, rss = statistics.median(result.starts), statistics.median(result.rss_at_ready)
    total = loaded.rss + result.pod_rss
    k3s_rss, workload = "server 0.5-1.6 GB; agent ~275 MB", "server with a workload ~1.6 GB"
    procs = "the process" if result.profile == "edge" else f"sum of {result.processes} processes"
    runs, window, pods = len(result.starts), f"{args.idle_seconds:.0f} s", args.pods
    start_target = judge(result, f"< {TARGET_START:.0f} s", start < TARGET_START)
    rss_target = f"< {TARGET_RSS:.0f} MB"
    rows = [
        "| figure | result | target | K3s published | K3s / ours |",
        "|---|---:|---|---|---:|",
        f"| cold start: spawn to node Ready (API), median of {runs} (min-max) | {spread(result.starts, 's')} "
        f"| {start_target} | 25-50 s to start | {times(K3S_START, start)} |",
        f"| cold start: spawn to kubeconfig written, median of {runs} | {spread(result.kubeconfigs, 's')} "
        "| - | - | - |",
        f"| RSS at node Ready ({procs}), median of {runs} | {spread(result.rss_at_ready, 'MB', 0)} "
        f"| {judge(result, rss_target, rss < TARGET_RSS)} | {k3s_rss} "
        f"| {times(K3S_SERVER_RSS, rss)} (server), {times(K3S_AGENT_RSS, rss)} (agent) |",
        f"| RSS idle, {window} window: median (p95); PSS | {idle.rss:.0f} MB ({idle.rss_p95:.0f}); "
        f"{idle.pss:.0f} MB | {judge(result, rss_target, idle.rss_p95 < TARGET_RSS)} | {k3s_rss} "
        f"| {times(K3S_SERVER_RSS, idle.rss_p95)} (server) |",
        f"| RSS with {pods} pods Running (control plane): median (p95); PSS | {loaded.rss:.0f} MB "
        f"({loaded.rss_p95:.0f}); {loaded.pss:.0f} MB | {judge(result, rss_target, loaded.rss_p95 < TARGET_RSS)} "
        f"| {workload} | {times(K3S_SERVER_RSS[1], loaded.rss_p95)} |",
        f"| the {pods} pods' own processes ({result.pod_processes}: shims and `sleep`s), RSS "
        f"| {result.pod_rss:.0f} MB | - | (containerd and its shims are inside K3s's figure) | - |",
        f"| control plane + pods' processes | {total:.0f} MB | - | {workload} | {times(K3S_SERVER_RSS[1], total)} |",
        f"| idle CPU, {window}: CPU time / wall time (p95 of 1 s samples) | {idle.cpu_mean:.1f} % of a core "
        f"({idle.cpu_p95:.1f} %) | - | p95 5-6 % (Xeon), 25-30 % (Pi 4); ICPE 2023: 20.4 % average "
        f"| {times(K3S_IDLE_CPU, idle.cpu_p95)} (p95, Xeon) |",
        f"| idle CPU with {pods} pods Running, {window} (p95) | {loaded.cpu_mean:.1f} % of a core "
        f"({loaded.cpu_p95:.1f} %) | - | p95 6 % (Xeon, server with a workload) "
        f"| {times(K3S_IDLE_CPU[1], loaded.cpu_p95)} |",
    ]
    return "\n".join(rows)


def bytecode(args: argparse.Namespace) -> str:
    if args.pycache is not None:
        return "bytecode cached as in an installed package (one uncounted start per profile compiled it)"
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        return "no bytecode cache (PYTHONDONTWRITEBYTECODE: every start compiles the project's modules)"
    return "the checkout's own bytecode cache"


def report(results: Sequence[ProfileResult], args: argparse.Namespace) -> str:
    parts = [
        f"Edge and server profiles: cold start, memory, idle CPU. Machine: {machine()}; load average "
        f"{args.load_before:.2f} before, {os.getloadavg()[0]:.2f} after (the machine is shared).",
        f"Each start: `python -m supervisor start --profile <p> --config ''`, a fresh data dir (PKI generated, "
        f"empty SQLite), port 0 on 127.0.0.1, {bytecode(args)}. Idle windows start {SETTLE:.0f} s after node Ready (or after the "
        f"pods turned Running) and sample every second (CPU time counts in 10 ms ticks, so a one-second "
        f"sample moves in steps of 1 %); pods are `sleep 3600` through the process runtime (one shim each).",
    ]
    for result in results:
        title = "one process" if result.profile == "edge" else f"{result.processes} processes"
        parts.append(
            f"**`--profile {result.profile}`** ({title}; the {args.pods} pods were all Running "
            f"{result.pods_up:.1f} s after their creation began)\n\n{table(result, args)}\n\n"
            f"RSS by process after the idle window: {result.breakdown}."
        )
    return "\n\n".join(parts) + "\n"


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python bench/edge_bench.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profiles", default="edge,server", help="comma-separated (default: edge,server)")
    parser.add_argument("--runs", type=int, default=5, help="cold starts per profile (default: 5)")
    parser.add_argument("--idle-seconds", type=float, default=60.0,
                        help="length of each idle window (default 60; record the 60 s figure)")  # fmt: skip
    parser.add_argument("--pods", type=int, default=20, help="pause-like pods for the loaded figures")
    parser.add_argument("--out", type=Path, metavar="FILE", help="also write the report to FILE")
    parser.add_argument("--keep", action="store_true", help="keep the data dirs and logs")
    parser.add_argument("--no-pycache", action="store_true",
                        help="start without a bytecode cache when the environment says so (PYTHONDONTWRITEBYTECODE)")  # fmt: skip
    args = parser.parse_args(argv)
    args.profiles = [p for p in args.profiles.split(",") if p]
    if not set(args.profiles) <= {"edge", "server"} or args.runs < 1:
        parser.error("--profiles takes edge and/or server; --runs at least 1")
    args.load_before = os.getloadavg()[0]
    return args


async def run(args: argparse.Namespace, workdir: Path) -> list[ProfileResult]:
    return [await measure(profile, args, workdir) for profile in args.profiles]


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM tears down as Ctrl-C does
    workdir = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    args.pycache = None if args.no_pycache else workdir / "pycache"
    try:
        with asyncio.Runner(loop_factory=http_load.loop_factory()) as runner:
            results = runner.run(run(args, workdir))
    finally:
        sweep(workdir)  # even after an interrupt: nothing of ours keeps running
        if args.keep:
            print(f"data dirs and logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    text = report(results, args)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
