"""The API client's cost per request: GETs per second, and per CPU-second of the client's process.

Every controller, the scheduler and the agent talk to the API server through ``ApiClient``; in
the server profile each runs in its own process, so what a request costs the client bounds what
that process can do on its share of a small machine (the scheduler pays one binding per pod).

Setup: the API server (kine folded in, in-memory store) in a child process on a loopback port,
over HTTPS with the admin's client certificate, as in the server profile. This process reads one
ConfigMap ``--count`` times from ``--concurrency`` workers with each client in turn:

- ``ApiClient``: ``services.client.api.ApiClient`` (its own transport, orjson decoding);
- ``httpx``: a bare ``httpx.AsyncClient`` (HTTP/1.1 keep-alive pool, no decoding), for scale;
- ``raw``: ``bench.http_load.RawClient``, HTTP/1.1 written by hand (no decoding), the floor.

Reported per client: GETs per second of wall time (bounded by the server, which shares the
machine), and GETs per CPU-second of this process with the CPU microseconds per GET: the
client's own cost, which is what the scheduler and controllers pay.

Usage: ``python bench/client_bench.py [--count 5000] [--concurrency 1 8] [--clients ApiClient httpx raw]
[--out FILE]``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script from anywhere in a checkout

from bench import http_load, scheduler_bench  # noqa: E402
from services.client import api, config, resources  # noqa: E402
from supervisor import kubeconfig, pki  # noqa: E402

NAMESPACE = "default"
NAME = "client-bench"
PATH = f"/api/v1/namespaces/{NAMESPACE}/configmaps/{NAME}"
WARM_UP = 200  # requests per client before measuring: connections open, caches warm


@dataclasses.dataclass(frozen=True)
class Cell:
    client: str
    concurrency: int
    count: int
    seconds: float
    cpu: float

    @property
    def per_second(self) -> float:
        return self.count / self.seconds

    @property
    def per_cpu_second(self) -> float:
        return self.count / self.cpu if self.cpu else float("inf")


Get = Callable[[], Awaitable[None]]


async def api_client_get(admin: Path, connections: int) -> tuple[Get, Callable[[], Awaitable[None]]]:
    client = api.ApiClient(config.load_kubeconfig(admin), max_connections=connections)

    async def get() -> None:
        await client.get(resources.CONFIGMAPS, NAME, namespace=NAMESPACE)

    return get, client.aclose


async def load_client_get(
    kind: str, admin: Path, connections: int
) -> tuple[Get, Callable[[], Awaitable[None]]]:
    client = http_load.CLIENTS[kind](http_load.target_from_kubeconfig(admin), connections=connections)

    async def get() -> None:
        http_load.expect(await client.request("GET", PATH), 200, "GET the ConfigMap")

    return get, client.close


async def measure(name: str, admin: Path, *, count: int, concurrency: int) -> Cell:
    if name == "ApiClient":
        get, close = await api_client_get(admin, concurrency)
    else:
        get, close = await load_client_get(name, admin, concurrency)
    try:
        await http_load.drive(count=WARM_UP, concurrency=concurrency, op=lambda _: get())
        cpu = scheduler_bench.cpu_seconds()
        sample = await http_load.drive(count=count, concurrency=concurrency, op=lambda _: get())
        cpu = scheduler_bench.cpu_seconds() - cpu
    finally:
        await close()
    return Cell(name, concurrency, count, sample.seconds, cpu)


async def run(args: argparse.Namespace, data_dir: Path) -> list[Cell]:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(
        target=scheduler_bench.serve_api, args=(str(data_dir), "memory", child), daemon=True
    )
    process.start()
    loop = asyncio.get_running_loop()
    try:
        port = await loop.run_in_executor(None, parent.recv)
        kubeconfig.write_components(data_dir, port=port)
        admin = kubeconfig.component_path(data_dir, "admin")
        async with api.ApiClient(config.load_kubeconfig(admin)) as client:
            body = {"metadata": {"name": NAME, "namespace": NAMESPACE}, "data": {"key": "value" * 20}}
            await client.create(resources.CONFIGMAPS, body)
        cells = []
        for concurrency in args.concurrency:
            for name in args.clients:
                cell = await measure(name, admin, count=args.count, concurrency=concurrency)
                print(f"{name:>9} x{concurrency}: {cell.per_second:,.0f} GET/s, "
                      f"{cell.per_cpu_second:,.0f} GET per CPU-second", flush=True)  # fmt: skip
                cells.append(cell)
        return cells
    finally:
        parent.send("stop")
        await loop.run_in_executor(None, process.join, 30)


def table(args: argparse.Namespace, cells: list[Cell]) -> str:
    uname = platform.uname()
    lines = [
        f"API client, {args.count} GETs of one ConfigMap per cell over HTTPS (admin client certificate); "
        f"API server in its own process (kine in memory); machine: {time.strftime('%Y-%m-%d')}, "
        f"{os.cpu_count()} CPUs, {uname.system} {uname.release}, Python {platform.python_version()}.",
        "",
        "| client | concurrency | GET/s (wall) | GET per CPU-second of the client | client CPU per GET |",
        "|---|---:|---:|---:|---:|",
    ]
    for cell in cells:
        lines.append(
            f"| {cell.client} | {cell.concurrency} | {cell.per_second:,.0f} | {cell.per_cpu_second:,.0f} "
            f"| {cell.cpu / cell.count * 1e6:,.0f} us |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=5000, help="GETs per cell")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--clients", nargs="+", choices=("ApiClient", "httpx", "raw"),
                        default=["ApiClient", "httpx", "raw"])  # fmt: skip
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data_dir = Path(tempfile.mkdtemp(prefix="client-bench-"))
    try:
        pki.ensure(data_dir)
        with asyncio.Runner(loop_factory=http_load.loop_factory()) as runner:
            cells = runner.run(run(args, data_dir))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    text = table(args, cells)
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
