"""Pod startup latency and throughput with the process runtime, beside the Kubernetes SLO and K3s.

The cluster is started as users start it (``edge_bench.running``: ``python -m supervisor start
--profile edge`` (one process) or ``--profile server`` (one process per component, the server's
own agent as the node); a fresh data dir, one node, the process runtime) and, once its node is Ready, a
watch of the ``bench`` namespace's pods is opened (a list, then a watch from its resourceVersion).
A few warm-up pods are created, seen Running and deleted (the first pods of a process pay for
imports and caches that a running cluster has already paid for). Then two cells of ``--pods``
(default 100) pause-like pods (``sleep 3600`` on the host, one shim each), deleted in between:

- paced: one create every 1/``--rate`` seconds (default 5/s), as ClusterLoader2 measures pod startup
  latency at a rate the cluster keeps up with;
- at once: all created together from ``--concurrency`` keep-alive connections (default 32, opened
  beforehand); its latency is mostly queueing, and it gives the throughput.

Figures per cell:

- startup latency, per pod: from sending its create request to the watch delivering the pod with
  ``status.phase: Running`` (both on this process's monotonic clock). Kubernetes' pod startup SLO
  counts from the pod's creation timestamp, so this is stricter by the create request's latency;
  there is no image pull (the process runtime has none), as the SLO excludes pulls;
- creation latency: the create request's round trip (K3s: 9.0 ms in Koziolek & Eskandani, ICPE 2023);
- throughput: pods / (last Running - first create sent), in pods per minute (K3s: 133.7 pods/min,
  same paper);
- create to bound: when the watch first shows ``spec.nodeName`` (the scheduler's part);
- the CPU the cluster's process spent from the first create to the last Running, per pod, and the
  CPU of each pod's shim and container: unlike the wall-clock figures they hardly depend on what
  else runs on the shared machine; and how long the cluster process's threads waited for a CPU
  (``/proc/<pid>/task/*/schedstat``), which shows when the pods' own processes starve it.

``--cprofile FILE`` runs the supervisor under ``python -m cProfile -o FILE`` (written when it exits)
and prints the top functions, to see where the time goes.

Usage: ``python bench/pod_startup_bench.py [--profile edge|server] [--pods 100] [--rate 5] [--concurrency 32] [--warmup 5]
[--no-pycache] [--cprofile FILE] [--out FILE] [--keep]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import io
import os
import pstats
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script from anywhere in a checkout

from bench import edge_bench, http_load  # noqa: E402

PROFILE_SHAPES = {"edge": "one process", "server": "a process per component"}
SLO_P99 = 5.0  # seconds, Kubernetes pod startup SLO (stateless pods, excluding image pulls)
K3S_PODS_PER_MINUTE = 133.7  # ICPE 2023, control-plane throughput
K3S_CREATE_MS = 9.0  # ICPE 2023, pod creation latency
TARGET_P99 = 2.0  # seconds
TARGET_RATE = 1000.0  # pods per minute


@dataclasses.dataclass(frozen=True)
class Cell:
    """One batch of pods, created paced or at once, until every one was seen Running."""

    startup: list[float]  # seconds, create sent to Running seen, per pod
    binding: list[float]  # seconds, create sent to bound (spec.nodeName) seen, per pod
    creates: http_load.Sample  # the create requests
    seconds: float  # first create sent to last Running seen
    cpu: float  # seconds of CPU the cluster's control plane spent meanwhile
    runqueue: float  # seconds the supervisor's threads waited for a CPU meanwhile (schedstat)
    shim_cpu: float  # seconds of CPU the pods' processes (shims, containers) spent by the end
    load: float  # 1-minute load average at the end

    @property
    def per_minute(self) -> float:
        return 60 * len(self.startup) / self.seconds


def runqueue_seconds(pids: Sequence[int]) -> float:
    """Time the processes' threads spent runnable but waiting for a CPU (/proc/<pid>/task/*/schedstat)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    total += int((task / "schedstat").read_text().split()[1])
    return total / 1e9


async def settle_pods(cluster: edge_bench.Cluster, client: http_load.RawClient) -> None:
    """Delete the namespace's pods (grace 0), wait up to 30 s for their processes to end, then
    until the cluster is quiet: the agent removes pod directories and cgroups after the pods are
    gone from the API, and the next cell should not pay for the last one's cleanup."""
    await edge_bench.delete_pods(client, edge_bench.NAMESPACE)
    for _ in range(150):
        if not cluster.pod_pids():
            break
        await asyncio.sleep(0.2)
    await wait_quiet(cluster.control_pids())


async def wait_quiet(pids: list[int], *, window: float = 0.5, share: float = 0.05, within: float = 15.0) -> None:
    """Wait until ``pids`` use less than ``share`` of a CPU over ``window`` seconds (at most ``within``)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        before = edge_bench.cpu_seconds(pids)
        await asyncio.sleep(window)
        if edge_bench.cpu_seconds(pids) - before < share * window:
            return


async def warm_up(
    cluster: edge_bench.Cluster, client: http_load.RawClient, watcher: edge_bench.PodWatcher, count: int
) -> None:
    """Run and delete ``count`` pods; open the pool's connections."""

    async def get(index: int) -> None:
        http_load.expect(await client.request("GET", "/api/v1/namespaces/bench/pods"), 200, "warm-up GET")

    await http_load.drive(count=64, concurrency=32, op=get)
    if count:
        names = [f"warm-{n}" for n in range(count)]
        await edge_bench.create_pods(client, names, concurrency=count)
        await watcher.wait_running(names)
    await settle_pods(cluster, client)


async def cell(
    cluster: edge_bench.Cluster,
    client: http_load.RawClient,
    watcher: edge_bench.PodWatcher,
    names: list[str],
    *,
    concurrency: int,
    rate: float | None = None,
) -> Cell:
    """Create the pods (at once, or ``rate`` per second) and wait until all are Running."""
    sent: dict[str, float] = {}
    pids = cluster.control_pids()
    cpu, runqueue = edge_bench.cpu_seconds(pids), runqueue_seconds(pids)
    if rate is None:
        creates = await edge_bench.create_pods(client, names, concurrency=concurrency, sent=sent)
    else:
        creates = await paced_creates(client, names, rate=rate, sent=sent)
    await watcher.wait_running(names)
    cpu, runqueue = edge_bench.cpu_seconds(pids) - cpu, runqueue_seconds(pids) - runqueue
    shim_cpu = edge_bench.cpu_seconds(cluster.pod_pids())
    first, last = min(sent.values()), max(watcher.running[name] for name in names)
    startup = [watcher.running[name] - sent[name] for name in names]
    binding = [watcher.bound[name] - sent[name] for name in names if name in watcher.bound]
    return Cell(startup, binding, creates, last - first, cpu, runqueue, shim_cpu, os.getloadavg()[0])


async def paced_creates(
    client: http_load.RawClient, names: list[str], *, rate: float, sent: dict[str, float]
) -> http_load.Sample:
    """One create every 1/rate seconds, each in its own task (a slow one does not delay the next)."""
    started = time.monotonic()
    latencies: list[float] = []

    async def one(name: str) -> None:
        sent[name] = time.monotonic()
        body = edge_bench.pod_body(name)
        response = await client.request("POST", f"/api/v1/namespaces/{edge_bench.NAMESPACE}/pods", body=body)
        http_load.expect(response, 201, "create pod")
        latencies.append(time.monotonic() - sent[name])

    async with asyncio.TaskGroup() as group:
        for n, name in enumerate(names):
            await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
            group.create_task(one(name), name=f"create {name}")
    return http_load.Sample(time.monotonic() - started, latencies)


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Cell]:
    wrapper = (sys.executable, "-m", "cProfile", "-o", str(args.cprofile)) if args.cprofile else ()
    started = edge_bench.running(args.profile, workdir / args.profile, wrapper=wrapper, pycache=args.pycache)
    cells: dict[str, Cell] = {}
    async with started as (cluster, client):
        print(f"{args.profile} node Ready {cluster.ready_at - cluster.spawned:.2f} s after spawn", file=sys.stderr)
        await edge_bench.ensure_namespace(client)
        watcher = edge_bench.PodWatcher(client)
        await watcher.start()
        try:
            await warm_up(cluster, client, watcher, args.warmup)
            if args.rate > 0:
                print(f"creating {args.pods} pods at {args.rate:g}/s", file=sys.stderr)
                names = [f"paced-{n}" for n in range(args.pods)]
                cells["paced"] = await cell(cluster, client, watcher, names, concurrency=1, rate=args.rate)
                await settle_pods(cluster, client)
            print(f"creating {args.pods} pods at once, concurrency {args.concurrency}", file=sys.stderr)
            names = [f"burst-{n}" for n in range(args.pods)]
            cells["burst"] = await cell(cluster, client, watcher, names, concurrency=args.concurrency)
        finally:
            await watcher.stop()
    return cells


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.1 else f"{seconds * 1000:.1f} ms"


def mark(ok: bool) -> str:
    return "met" if ok else "missed"


def _pair(cells: list[Cell], what: str) -> str:
    """A percentile pair of each cell's ``startup``/``binding`` list or of its creates."""
    texts = []
    for one in cells:
        values = one.creates.latencies if what == "creates" else getattr(one, what)
        texts.append(f"{ms(http_load.percentile(values, 50))} / {ms(http_load.percentile(values, 99))}")
    return " | ".join(texts)


def report(cells: dict[str, Cell], args: argparse.Namespace) -> str:
    order = [cells[key] for key in ("paced", "burst") if key in cells]
    burst = cells["burst"]
    count = len(burst.startup)
    p99s = [http_load.percentile(one.startup, 99) for one in order]
    verdicts = ", ".join(f"{mark(p99 < TARGET_P99)}" for p99 in p99s)
    slo = ", ".join(f"{mark(p99 <= SLO_P99)}" for p99 in p99s)
    rate = burst.per_minute
    heads = ([f"{args.rate:g} pods/s"] if "paced" in cells else []) + ["all at once"]
    cols = "|---" * (len(order) + 1) + "|---|---|---:|"
    bytecode = "bytecode cached" if args.pycache else "no bytecode cache"
    rows = [
        f"Pod startup, process runtime, `--profile {args.profile}` ({PROFILE_SHAPES[args.profile]}, one node). "
        f"Machine: {edge_bench.machine()}; "
        f"load average {args.load_before:.2f} before, {burst.load:.2f} after the last pod ran (the machine is shared).",
        f"{count} pods (`sleep 3600`, no volumes, one shim each) per column, after {args.warmup} warm-up pods "
        f"({bytecode}): created at {args.rate:g} per second, then (after deleting them) all at once from "
        f"{min(args.concurrency, count)} keep-alive connections. Startup = create sent to phase Running delivered "
        "by a watch, one monotonic clock (stricter than the SLO's creation timestamp by the create's latency).",
        "",
        f"| figure | {' | '.join(heads)} | target | Kubernetes SLO / K3s (ICPE 2023) | ratio |",
        cols,
        f"| pod startup latency, p50 / p99 | {_pair(order, 'startup')} | p99 < {TARGET_P99:.0f} s ({verdicts}) "
        f"| SLO p99 <= {SLO_P99:.0f} s ({slo}) | SLO / ours (p99): "
        f"{', '.join(f'{SLO_P99 / p99:.1f}x' for p99 in p99s)} |",
        f"| of which create to bound (scheduler), p50 / p99 | {_pair(order, 'binding')} | - | - | - |",
        "| throughput: first create to last Running | "
        + ("- | " if "paced" in cells else "")
        + f"{rate:,.0f} pods/min ({burst.seconds:.2f} s) | >= {TARGET_RATE:,.0f} pods/min ({mark(rate >= TARGET_RATE)}) "
        f"| K3s {K3S_PODS_PER_MINUTE} pods/min | {rate / K3S_PODS_PER_MINUTE:.1f}x |",
        f"| pod creation latency (the POST), p50 / p99 | {_pair(order, 'creates')} | - | K3s {K3S_CREATE_MS:.1f} ms "
        f"| K3s / ours (p50): {', '.join(f'{K3S_CREATE_MS / 1000 / one.creates.percentile(50):.1f}x' for one in order)} |",
        f"| CPU of the cluster's processes per pod | {' | '.join(ms(one.cpu / count) for one in order)} | - | - | - |",
        f"| CPU of each pod's shim and container | {' | '.join(ms(one.shim_cpu / count) for one in order)} "
        "| - | - | - |",
        f"| the cluster's threads waiting for a CPU (run queue), total | "
        f"{' | '.join(f'{one.runqueue:.2f} s' for one in order)} | - | - | - |",
    ]
    return "\n".join(rows) + "\n"


def print_profile(path: Path, top: int = 30) -> None:
    """The functions with the most cumulative and own time in the supervisor's cProfile output."""
    for key in ("cumulative", "tottime"):
        out = io.StringIO()
        pstats.Stats(str(path), stream=out).sort_stats(key).print_stats(top)
        print(out.getvalue(), file=sys.stderr)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/pod_startup_bench.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--profile", choices=sorted(PROFILE_SHAPES), default="edge",
                        help="the cluster's profile (default edge)")  # fmt: skip
    parser.add_argument("--pods", type=int, default=100, help="pods created at once (default 100)")
    parser.add_argument("--concurrency", type=int, default=32, help="create requests in flight (default 32)")
    parser.add_argument("--rate", type=float, default=5.0,
                        help="pods per second of the paced cell (default 5; 0 skips it)")  # fmt: skip
    parser.add_argument("--warmup", type=int, default=5, help="pods run and deleted first (default 5)")
    parser.add_argument("--cprofile", type=Path, metavar="FILE", help="profile the supervisor into FILE")
    parser.add_argument("--out", type=Path, metavar="FILE", help="also write the report to FILE")
    parser.add_argument("--keep", action="store_true", help="keep the data dir and log")
    parser.add_argument("--no-pycache", action="store_true",
                        help="no bytecode cache when the environment says so (PYTHONDONTWRITEBYTECODE)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.pods < 1 or not 1 <= args.concurrency <= 32:
        parser.error("--pods at least 1; --concurrency 1 to 32 (the client's pool)")
    if args.cprofile is not None:
        args.cprofile = args.cprofile.resolve()
    args.load_before = os.getloadavg()[0]
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM tears down as Ctrl-C does
    workdir = Path(tempfile.mkdtemp(prefix="pod-startup-bench-"))
    args.pycache = None if args.no_pycache else workdir / "pycache"
    started = time.monotonic()
    try:
        with asyncio.Runner(loop_factory=http_load.loop_factory()) as runner:
            cells = runner.run(run(args, workdir))
    finally:
        edge_bench.sweep(workdir)
        if args.keep:
            print(f"data dir and log kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    text = report(cells, args)
    print(text)
    print(f"total {time.monotonic() - started:.0f} s", file=sys.stderr)
    if args.cprofile is not None and args.cprofile.is_file():
        print_profile(args.cprofile)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
