"""The API server benchmark's creates/s and list latency on each datastore, side by side (issue 6).

One server (``python -m supervisor start --profile server``, without agent, scheduler and
controllers, so only the API server and its store work) is started per datastore, on a fresh data
dir and a fresh database:

- SQLite: the default, ``<data-dir>/server/db/state.db`` through kine;
- PostgreSQL and MariaDB: the local servers (127.0.0.1:5432 as ``postgres``, 127.0.0.1:3306 as
  ``root``) through kine, each in a database created for the run and dropped after it;
- etcd: Debian's ``/usr/bin/etcd``, a one-member cluster on loopback started by this script, used
  directly by the API server (``--datastore-endpoint http://...``, no kine).

A datastore whose server is absent is reported as such and skipped. Each datastore runs the same
cells as ``bench/api_bench.py`` (its load generator, bodies and cell code): ConfigMap creates at
concurrency 1 and 32, then a list of every ConfigMap in the namespace (topped up to the list size).
The create cells run ``rounds`` times and keep the best round, as api_bench does. Beside each
figure the table gives the CPU time per create of the serving processes (API server, kine) and of
the database server (postgres/mariadbd/etcd processes, from ``/proc``; on a shared machine other
clients of PostgreSQL or MariaDB count too).

Usage: ``python bench/ha_bench.py [--quick] [--only sqlite,postgres,mysql,etcd] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script from anywhere in a checkout

from bench import api_bench, http_load, kine_vs_etcd  # noqa: E402

DATASTORES = ("sqlite", "postgres", "mysql", "etcd")
TITLES = {
    "sqlite": "SQLite (kine)",
    "postgres": "PostgreSQL (kine)",
    "mysql": "MariaDB (kine)",
    "etcd": "etcd",
}
POSTGRES = ("127.0.0.1", 5432)
MYSQL = ("127.0.0.1", 3306)
DB_PROCESSES = {"postgres": ("postgres",), "mysql": ("mariadbd", "mysqld"), "etcd": ("etcd",)}
QUIET = ("--disable-agent", "--disable-scheduler", "--disable-controller-manager")
HIGH = api_bench.HIGH
NAMESPACE = "bench"


@dataclasses.dataclass(frozen=True)
class Sizes:
    rounds: int  # of the create cells (the best round counts)
    creates_c1: int
    creates: int  # at concurrency HIGH
    list_objects: int
    lists: int


FULL = Sizes(rounds=2, creates_c1=300, creates=1000, list_objects=10_000, lists=5)
QUICK = Sizes(rounds=1, creates_c1=100, creates=300, list_objects=2000, lists=3)


# -- datastores ------------------------------------------------------------------------------------------


def listening(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=0.5):
            return True
    except OSError:
        return False


async def _drop(kind: str, name: str) -> None:
    if kind == "postgres":
        import asyncpg

        conn = await asyncpg.connect(f"postgres://postgres@{POSTGRES[0]}:{POSTGRES[1]}/postgres")
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
    else:
        import aiomysql

        conn = await aiomysql.connect(host=MYSQL[0], port=MYSQL[1], user="root", password="", autocommit=True)
        try:
            async with conn.cursor() as cur:
                await cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        finally:
            conn.close()


@contextlib.asynccontextmanager
async def datastore(kind: str, workdir: Path) -> AsyncIterator[tuple[str, ...] | None]:
    """The ``start`` flags for ``kind``'s datastore, or None when its server is not there."""
    if kind == "sqlite":
        yield ()
    elif kind == "etcd":
        if not kine_vs_etcd.ETCD.exists():
            yield None
            return
        async with kine_vs_etcd.serving("etcd", kine_vs_etcd.etcd_command, workdir) as endpoint:
            yield ("--datastore-endpoint", f"http://{endpoint}")
    else:
        address = POSTGRES if kind == "postgres" else MYSQL
        if not listening(address):
            yield None
            return
        name = f"ha_bench_{uuid.uuid4().hex[:10]}"  # kine creates it
        host, port = address
        dsn = (
            f"postgres://postgres@{host}:{port}/{name}"
            if kind == "postgres"
            else f"mysql://root:@tcp({host}:{port})/{name}"
        )
        try:
            yield ("--datastore-endpoint", dsn)
        finally:
            await _drop(kind, name)


def db_pids(kind: str, workdir: Path) -> dict[str, int]:
    """The database server's processes (ours only, for etcd), to count their CPU time."""
    names = DB_PROCESSES.get(kind, ())
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if (entry / "comm").read_text().strip() not in names:
                continue
            if kind == "etcd" and str(workdir).encode() not in (entry / "cmdline").read_bytes():
                continue
            found[f"{kind}-{entry.name}"] = int(entry.name)
    return found


# -- the cluster -------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Cluster(api_bench.Cluster):
    """api_bench's server cluster with the datastore's flags."""

    extra_args: tuple[str, ...] = ()

    def command(self) -> list[str]:
        return [*super().command(), *QUIET, *self.extra_args]


@contextlib.asynccontextmanager
async def running_cluster(kind: str, workdir: Path, extra_args: tuple[str, ...]) -> AsyncIterator[Cluster]:
    cluster = Cluster("server", workdir, extra_args=extra_args)
    for _ in range(api_bench.START_ATTEMPTS):
        cluster.port = api_bench.free_port()
        with contextlib.suppress(FileNotFoundError):
            cluster.kubeconfig.unlink()
        with cluster.log_path.open("ab") as log:
            cluster.process = await asyncio.create_subprocess_exec(
                *cluster.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=api_bench.child_env(), start_new_session=True,
            )  # fmt: skip
        try:
            if await api_bench._ready(cluster):
                print(f"{kind}: server ready on port {cluster.port}: {cluster.pids()}", file=sys.stderr)
                yield cluster
                return
        finally:
            await api_bench.stop_group(cluster.process)
    sys.exit(f"the server on {kind} did not become ready; its log:\n{cluster.log_tail()}")


# -- cells ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Figures:
    server: api_bench.Results  # serving processes: API server (+ kine)
    database: api_bench.Results  # the same cells, CPU of the database server


async def bench_one(kind: str, workdir: Path, sizes: Sizes) -> Figures | None:
    async with datastore(kind, workdir) as args:
        if args is None:
            print(f"{kind}: no server here; skipped", file=sys.stderr)
            return None
        async with running_cluster(kind, workdir, args) as cluster:
            return await _cells(kind, cluster, workdir, sizes)


async def _cells(kind: str, cluster: Cluster, workdir: Path, sizes: Sizes) -> Figures:
    collection = f"/api/v1/namespaces/{NAMESPACE}/configmaps"
    paths = {"create": collection, "get": collection + "/{name}", "list": collection, "warm": "/readyz"}
    client = http_load.RawClient(cluster.target(), connections=HIGH)
    server = api_bench.Side(client, api_bench.Cells(TITLES[kind], cluster.pids), paths)
    database = api_bench.Side(
        client, api_bench.Cells(f"{kind} server", lambda: db_pids(kind, workdir)), paths
    )
    try:
        await api_bench.create_namespace(client, NAMESPACE)
        names = [f"warmup-{n:04d}" for n in range(HIGH * 4)]
        await api_bench.creates(server, names, concurrency=HIGH, cell="warmup")
        for round_ in range(sizes.rounds):
            for concurrency, count in ((1, sizes.creates_c1), (HIGH, sizes.creates)):
                cell = [f"c{concurrency}-r{round_}-{n:06d}" for n in range(count)]
                await api_bench.warm(server)
                work = api_bench.creates(server, cell, concurrency=concurrency, cell=f"c{concurrency}")
                await _both(server, database, f"create c{concurrency}", work, ops=count)
                names += cell
        fill = [f"fill-{n:06d}" for n in range(sizes.list_objects - len(names))]
        await api_bench.creates(server, fill, concurrency=HIGH, cell="fill")
        await api_bench.fetch(client, collection, items=sizes.list_objects)  # every object is there
        await _both(server, database, "list", api_bench.lists(server, count=sizes.lists), ops=sizes.lists)
    finally:
        await client.close()
    return Figures(server.cells.results, database.cells.results)


async def _both(
    server: api_bench.Side, database: api_bench.Side, key: str, work: Awaitable[http_load.Sample], *, ops: int
) -> None:
    """Run one cell, measuring the serving processes' and the database's CPU around the same run."""
    pids = database.cells.pids()
    before = api_bench.cpu_seconds(pids)
    await server.cells.run(key, work, ops=ops)
    spent = api_bench.cpu_seconds(pids) - before
    earlier = database.cells.results.get(key)
    sample = server.cells.results[key].sample
    total, count = (spent + earlier.cpu, ops + earlier.ops) if earlier else (spent, ops)
    database.cells.results[key] = api_bench.Result(sample, total, count)


# -- the report ----------------------------------------------------------------------------------------------


def table(figures: dict[str, Figures | None], sizes: Sizes) -> str:
    lines = [
        f"| datastore | create c1 | create c{HIGH} | create c{HIGH} p50 / p99 | list of {sizes.list_objects:,} p50 / p99 "
        f"| server CPU per create c{HIGH} | database CPU per create c{HIGH} |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind in figures:
        found = figures[kind]
        if found is None:
            lines.append(f"| {TITLES[kind]} | n/a (no server) | | | | | |")
            continue
        c1, high, listed = found.server["create c1"], found.server[f"create c{HIGH}"], found.server["list"]
        ms = api_bench._ms
        database = "in kine" if kind == "sqlite" else ms(found.database[f"create c{HIGH}"].cpu_per_op)
        lines.append(
            f"| {TITLES[kind]} | {c1.sample.ops_per_second:,.0f}/s | {high.sample.ops_per_second:,.0f}/s "
            f"| {ms(high.sample.percentile(50))} / {ms(high.sample.percentile(99))} "
            f"| {ms(listed.sample.percentile(50))} / {ms(listed.sample.percentile(99))} "
            f"| {ms(high.cpu_per_op)} | {database} |"
        )
    return "\n".join(lines)


def report(figures: dict[str, Figures | None], sizes: Sizes, load_before: float) -> str:
    etcd = subprocess.run([str(kine_vs_etcd.ETCD), "--version"], capture_output=True, text=True, check=False)
    version = etcd.stdout.splitlines()[0] if etcd.stdout else "etcd absent"
    return (
        f"API server on each datastore, `--profile server` without agent, scheduler and controllers. "
        f"Machine: {api_bench.machine()}, {version}; load average {load_before:.2f} before the run, "
        f"{os.getloadavg()[0]:.2f} after.\n\n"
        f"Load generator: bench/http_load.py's raw client, HTTP/1.1 keep-alive, {HIGH} connections, the admin's "
        f"client certificate, loopback TLS. Creates: {sizes.creates_c1} at concurrency 1 and {sizes.creates} at "
        f"{HIGH}, best of {sizes.rounds} round(s); then {sizes.lists} lists of the whole namespace. "
        f"SQLite, PostgreSQL and MariaDB are reached through kine; etcd directly (no kine). "
        f"Server CPU: the API server and kine; database CPU: the postgres, mariadbd or etcd processes "
        f"(SQLite runs inside kine).\n\n"
        f"{table(figures, sizes)}\n"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/ha_bench.py",
        description="API server creates/s and list latency on SQLite, PostgreSQL, MariaDB and a real etcd.",
    )
    parser.add_argument("--quick", action="store_true", help="smaller cells: a smoke run")
    parser.add_argument("--only", default=",".join(DATASTORES), help="comma-separated datastores to run")
    parser.add_argument("--out", type=Path, metavar="FILE", help="also write the report as markdown to FILE")
    parser.add_argument("--keep", action="store_true", help="keep the data dirs and logs")
    args = parser.parse_args(argv)
    args.kinds = [kind for kind in args.only.split(",") if kind]
    unknown = set(args.kinds) - set(DATASTORES)
    if unknown:
        parser.error(f"unknown datastores {sorted(unknown)}; choose from {', '.join(DATASTORES)}")
    args.sizes = QUICK if args.quick else FULL
    args.load_before = os.getloadavg()[0]
    return args


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Figures | None]:
    figures: dict[str, Figures | None] = {}
    for kind in args.kinds:
        print(f"benchmarking the API server on {kind}", file=sys.stderr)
        figures[kind] = await bench_one(kind, workdir / kind, args.sizes)
    return figures


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="ha-bench-"))
    for kind in args.kinds:
        (workdir / kind).mkdir()
    started = time.monotonic()
    try:
        with asyncio.Runner(loop_factory=http_load.loop_factory()) as runner:
            figures = runner.run(run(args, workdir))
    finally:
        if args.keep:
            print(f"data dirs and logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    text = report(figures, args.sizes, args.load_before)
    print(text)
    print(f"total {time.monotonic() - started:.0f} s", file=sys.stderr)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
