"""kine on SQLite against a real etcd, on the same client workload.

Starts Debian's etcd (a one-member cluster in a temporary directory, on free
loopback ports) and kine through the CLI (``python -m supervisor run kine``, SQLite
in a temporary data dir, on loopback TCP). Each server is driven alone, in turn,
by the same client (``bench/etcd_client.py``) with the same workload, in the shapes
kube-apiserver sends:

- create: the create transaction (compare mod == 0, put) on fresh keys;
- update: the compare-and-swap transaction (compare mod == X, put; get on failure),
  each worker on its own key, so every swap succeeds;
- get: single-key reads of existing keys;
- list: a prefix range over 1000 keys;
- watch: the time from sending a create to its event arriving at a watch of the
  prefix held by another process (so the writers never delay the reader), p50 and p99.

Each cell runs a bounded number of operations at concurrency 1 and 64, and the
script prints one table: workload, concurrency, the etcd figure, the kine figure,
and kine/etcd. For ops/s higher is better; for latencies lower is better.

The client is Python too, and it shares the machine with the server under test:
at high concurrency the figures for etcd are partly the client's limit.

Usage: ``python bench/kine_vs_etcd.py [--ops 2000] [--list-ops 200] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import asyncio
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

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script from anywhere in a checkout

from bench import etcd_client  # noqa: E402

ETCD = Path("/usr/bin/etcd")
KINE = (sys.executable, "-m", "supervisor", "run", "kine")
START_DEADLINE = 60.0  # seconds for a server to answer Status
STOP_DEADLINE = 10.0  # seconds between SIGTERM and SIGKILL
WATCH_DEADLINE = 60.0  # seconds for the last watch event of a cell to arrive
LIST_KEYS = 1000
VALUE = b"v" * 256  # etcd's benchmark value size
CLIENT_CHANNELS = 8  # connections shared by the workers of a cell

Op = Callable[[etcd_client.EtcdClient, int, int], Awaitable[None]]  # (client, worker, index)


# -- servers ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def etcd_command(data_dir: Path) -> tuple[list[str], str]:
    client, peer = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    argv = [
        str(ETCD),
        "--name=bench",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=bench={peer}",
        "--log-level=warn",
        "--logger=zap",
    ]
    return argv, client.removeprefix("http://")


def kine_command(data_dir: Path) -> tuple[list[str], str]:
    endpoint = f"127.0.0.1:{free_port()}"
    return [*KINE, "--config", "", "--data-dir", str(data_dir), "--listen-address", endpoint], endpoint


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("K3S_", "ETCD"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    return env


async def answers(endpoint: str, process: asyncio.subprocess.Process) -> bool:
    """Wait until the server answers Status; False if it exits or the deadline passes first."""
    deadline = time.monotonic() + START_DEADLINE
    async with etcd_client.EtcdClient(endpoint, timeout=1.0) as client:
        while time.monotonic() < deadline and process.returncode is None:
            try:
                await client.status()
                return True
            except etcd_client.EtcdError:
                await asyncio.sleep(0.05)
    return False


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), STOP_DEADLINE)
    except TimeoutError:
        process.kill()
        await process.wait()


@contextlib.asynccontextmanager
async def serving(
    name: str, command: Callable[[Path], tuple[list[str], str]], workdir: Path
) -> AsyncIterator[str]:
    """Start a server (retrying on fresh ports if it dies at start), yield its endpoint, stop it."""
    log_path = workdir / f"{name}.log"
    for _ in range(3):
        argv, endpoint = command(workdir / name)
        with log_path.open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=child_env()
            )
        try:
            if await answers(endpoint, process):
                print(f"{name} ready on {endpoint} (pid {process.pid})", file=sys.stderr)
                yield endpoint
                return
        finally:
            await stop(process)
    sys.exit(f"{name} did not start; its log:\n{log_path.read_text(errors='replace')[-5000:]}")


# -- driving a workload --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Sample:
    seconds: float
    latencies: list[float]

    @property
    def ops_per_second(self) -> float:
        return len(self.latencies) / self.seconds

    def percentile_ms(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


class Pool:
    """A few channels to one server, shared round-robin by the workers."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.clients = [etcd_client.EtcdClient(endpoint) for _ in range(CLIENT_CHANNELS)]

    def __getitem__(self, worker: int) -> etcd_client.EtcdClient:
        return self.clients[worker % len(self.clients)]

    async def close(self) -> None:
        for client in self.clients:
            await client.close()


async def drive(pool: Pool, *, count: int, concurrency: int, op: Op) -> Sample:
    """Run ``count`` operations from ``concurrency`` workers; time each and the whole."""
    indexes = iter(range(count))  # shared: each index is handed to exactly one worker
    latencies: list[float] = []

    async def worker(n: int) -> None:
        client = pool[n]
        for index in indexes:
            started = time.perf_counter()
            await op(client, n, index)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return Sample(time.perf_counter() - started, latencies)


async def create(client: etcd_client.EtcdClient, key: bytes) -> int:
    outcome = await client.create(key, VALUE)
    if not outcome.succeeded:
        raise RuntimeError(f"create of fresh key {key!r} failed")
    return outcome.revision


# -- the workloads ---------------------------------------------------------------------------------

Figures = dict[tuple[str, int], float]


async def bench_creates(pool: Pool, concurrency: int, ops: int) -> tuple[Sample, list[bytes]]:
    keys = [b"/bench/create/%d/%08d" % (concurrency, i) for i in range(ops)]

    async def op(client: etcd_client.EtcdClient, worker: int, index: int) -> None:
        await create(client, keys[index])

    return await drive(pool, count=ops, concurrency=concurrency, op=op), keys


async def bench_updates(pool: Pool, concurrency: int, ops: int) -> Sample:
    keys = [b"/bench/update/%d/%d" % (concurrency, n) for n in range(concurrency)]
    revisions = [await create(pool[n], key) for n, key in enumerate(keys)]

    async def op(client: etcd_client.EtcdClient, worker: int, index: int) -> None:
        outcome = await client.update(keys[worker], VALUE, mod_revision=revisions[worker])
        if not outcome.succeeded:
            raise RuntimeError(f"compare-and-swap on {keys[worker]!r} at {revisions[worker]} failed")
        revisions[worker] = outcome.revision

    return await drive(pool, count=ops, concurrency=concurrency, op=op)


async def bench_gets(pool: Pool, concurrency: int, ops: int, keys: Sequence[bytes]) -> Sample:
    chosen = random.Random(concurrency).choices(keys, k=ops)

    async def op(client: etcd_client.EtcdClient, worker: int, index: int) -> None:
        if await client.get(chosen[index]) is None:
            raise RuntimeError(f"{chosen[index]!r} is missing")

    return await drive(pool, count=ops, concurrency=concurrency, op=op)


async def bench_lists(pool: Pool, concurrency: int, ops: int) -> Sample:
    prefix = b"/bench/list/"

    async def op(client: etcd_client.EtcdClient, worker: int, index: int) -> None:
        response = await client.prefix(prefix)
        if len(response.kvs) != LIST_KEYS:
            raise RuntimeError(f"listed {len(response.kvs)} keys, expected {LIST_KEYS}")

    return await drive(pool, count=ops, concurrency=concurrency, op=op)


async def fill_list(pool: Pool) -> None:
    async def op(client: etcd_client.EtcdClient, worker: int, index: int) -> None:
        await create(client, b"/bench/list/%08d" % index)

    await drive(pool, count=LIST_KEYS, concurrency=64, op=op)


def watcher_process(endpoint: str, prefix: bytes, start_revision: int, count: int, conn: Connection) -> None:
    """A watch in its own process, so its event loop is never starved by the writers.

    Sends "ready" once the watch is created, then ``{key: time.monotonic() at receipt}``;
    CLOCK_MONOTONIC is one clock for every process on the machine.
    """

    async def watch() -> dict[bytes, float]:
        received: dict[bytes, float] = {}
        async with etcd_client.EtcdClient(endpoint) as client:
            end = etcd_client.prefix_end(prefix)
            async with client.watch(prefix, end, start_revision=start_revision) as events:
                conn.send("ready")
                async with asyncio.timeout(WATCH_DEADLINE):
                    async for event in events:
                        received[event.kv.key] = time.monotonic()
                        if len(received) == count:
                            break
        return received

    try:
        conn.send(asyncio.run(watch()))
    finally:
        conn.close()


async def bench_watch(pool: Pool, concurrency: int, ops: int) -> Sample:
    """Latency from sending a create to its event arriving on a watch of the prefix, in another process."""
    prefix = b"/bench/watch/%d/" % concurrency
    current = (await pool[0].range(prefix)).header.revision
    ours, theirs = multiprocessing.get_context("spawn").Pipe()
    watcher = multiprocessing.get_context("spawn").Process(
        target=watcher_process, args=(pool.endpoint, prefix, current + 1, ops, theirs), name="watcher"
    )
    watcher.start()
    theirs.close()
    loop = asyncio.get_running_loop()
    sent: dict[bytes, float] = {}

    async def op(client: etcd_client.EtcdClient, worker: int, index: int) -> None:
        key = prefix + b"%08d" % index
        sent[key] = time.monotonic()
        await create(client, key)

    try:
        if await loop.run_in_executor(None, ours.recv) != "ready":
            raise RuntimeError("the watcher process failed to start")
        sample = await drive(pool, count=ops, concurrency=concurrency, op=op)
        received: dict[bytes, float] = await loop.run_in_executor(None, ours.recv)
    finally:
        ours.close()
        await loop.run_in_executor(None, watcher.join, WATCH_DEADLINE)
    return Sample(sample.seconds, [received[key] - sent[key] for key in sent])


async def bench_server(endpoint: str, args: argparse.Namespace) -> Figures:
    figures: Figures = {}
    pool = Pool(endpoint)
    try:
        await pool[0].put(b"/bench/warmup", VALUE)
        await bench_gets(pool, CLIENT_CHANNELS, 100, [b"/bench/warmup"])  # connect every channel
        await fill_list(pool)
        for c in args.concurrency:
            creates, keys = await bench_creates(pool, c, args.ops)
            updates = await bench_updates(pool, c, args.ops)
            gets = await bench_gets(pool, c, args.ops, keys)
            lists = await bench_lists(pool, c, args.list_ops)
            watches = await bench_watch(pool, c, args.ops)
            figures |= {
                ("create (ops/s)", c): creates.ops_per_second,
                ("update, CAS (ops/s)", c): updates.ops_per_second,
                ("get (ops/s)", c): gets.ops_per_second,
                (f"list {LIST_KEYS} keys (ops/s)", c): lists.ops_per_second,
                ("watch latency p50 (ms)", c): watches.percentile_ms(50),
                ("watch latency p99 (ms)", c): watches.percentile_ms(99),
            }
            print(f"  concurrency {c} done", file=sys.stderr)
    finally:
        await pool.close()
    return figures


# -- the report ------------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    etcd = subprocess.run([str(ETCD), "--version"], capture_output=True, text=True).stdout.splitlines()
    return (
        f"{datetime.date.today().isoformat()}, {os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, "
        f"Python {platform.python_version()}, {etcd[0] if etcd else 'etcd ?'}"
    )


def table(etcd: Figures, kine: Figures) -> str:
    rows = ["| workload | concurrency | etcd | kine | kine/etcd |", "|---|---:|---:|---:|---:|"]
    for workload, concurrency in etcd:
        e, k = etcd[workload, concurrency], kine[workload, concurrency]
        figure = "{:.2f}" if "ms" in workload else "{:.0f}"
        ratio = f"{k / e:.2f}" if e else "-"
        rows.append(f"| {workload} | {concurrency} | {figure.format(e)} | {figure.format(k)} | {ratio} |")
    return "\n".join(rows)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/kine_vs_etcd.py",
        description="Drive a real etcd and kine (SQLite, through the CLI) with the same workload; print one table.",
    )
    parser.add_argument(
        "--ops", type=int, default=2000, help="operations per create/update/get/watch cell (default 2000)"
    )
    parser.add_argument(
        "--list-ops", type=int, default=200, help=f"prefix lists of {LIST_KEYS} keys per cell (default 200)"
    )
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 64], metavar="N",
        help="concurrent client workers per cell (default: 1 64)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, metavar="FILE", help="also write the table as markdown to FILE")
    parser.add_argument("--keep", action="store_true", help="keep the servers' data dirs and logs")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if not ETCD.exists():
        sys.exit(f"{ETCD} is missing: apt-get install etcd-server")
    workdir = Path(tempfile.mkdtemp(prefix="kine-vs-etcd-"))
    started = time.monotonic()
    try:
        results = asyncio.run(run(args, workdir))
    finally:
        if args.keep:
            print(f"data dirs and logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report = (
        f"kine (SQLite, `python -m supervisor run kine`) vs etcd, same Python grpc.aio client, loopback TCP.\n"
        f"Machine: {machine()}.\n"
        f"{args.ops} operations per cell ({args.list_ops} for lists), {CLIENT_CHANNELS} client channels, "
        f"{len(VALUE)}-byte values; ops/s: higher is better, ms: lower is better.\n\n"
        f"{table(results['etcd'], results['kine'])}\n"
    )
    print(report)
    print(f"total {time.monotonic() - started:.0f} s", file=sys.stderr)
    if args.out:
        args.out.write_text(report)


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Figures]:
    """Benchmark each server alone, etcd first."""
    results: dict[str, Figures] = {}
    for name, command in (("etcd", etcd_command), ("kine", kine_command)):
        async with serving(name, command, workdir) as endpoint:
            print(f"benchmarking {name}", file=sys.stderr)
            results[name] = await bench_server(endpoint, args)
    return results


if __name__ == "__main__":
    main()
