"""The floor under kine: a bare Python gRPC server against a real etcd, on kine's benchmark.

kine must answer etcd's gRPC API with ``grpcio`` (the stack DESIGN.md fixes). This
benchmark measures what that costs before kine does any work of its own: a server
process that answers ``KV/Range`` and ``KV/Txn`` with a fixed, prebuilt response
(no storage, no revision bookkeeping, no logging), served by ``grpc.aio`` exactly as
kine serves, and driven by the same client and workload as ``bench/kine_vs_etcd.py``
(gets of one key, creates in kube-apiserver's transaction shape, at concurrency 1 and
64). Debian's etcd runs the same workload in the same run, then kine itself.

Beside each figure: the server process's CPU per operation (user + system, from
/proc), so the per-call cost of the gRPC layer shows apart from the machine's load.
If the bare server cannot reach etcd's rate, no kine built on it can.

Usage: ``python bench/grpc_floor.py [--ops 4000] [--concurrency 1 64]``;
``--serve HOST:PORT`` runs the bare server alone (what the benchmark starts).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
import grpc.aio

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script from anywhere in a checkout

from bench import kine_vs_etcd as kve  # noqa: E402
from services.kine.proto import kv_pb2, rpc_pb2  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# -- the bare server -----------------------------------------------------------------------------


def bare_handlers() -> grpc.GenericRpcHandler:
    """KV/Range, KV/Txn and KV/Put, each answering one prebuilt response."""
    header = rpc_pb2.ResponseHeader(cluster_id=1, member_id=1, revision=2, raft_term=1)
    kv = kv_pb2.KeyValue(key=b"/bench/warmup", value=kve.VALUE, create_revision=2, mod_revision=2, version=1)
    answers = {
        "Range": (rpc_pb2.RangeRequest, rpc_pb2.RangeResponse(header=header, kvs=[kv], count=1)),
        "Txn": (rpc_pb2.TxnRequest, rpc_pb2.TxnResponse(header=header, succeeded=True)),
        "Put": (rpc_pb2.PutRequest, rpc_pb2.PutResponse(header=header)),
    }

    def handler(response: object):  # one coroutine per method, closed over its answer
        async def answer(request: object, context: grpc.aio.ServicerContext) -> object:
            return response

        return answer

    def method(name: str) -> grpc.RpcMethodHandler:
        request_type, response = answers[name]
        return grpc.unary_unary_rpc_method_handler(
            handler(response),
            request_deserializer=request_type.FromString,
            response_serializer=type(response).SerializeToString,
        )

    return grpc.method_handlers_generic_handler("etcdserverpb.KV", {n: method(n) for n in ("Range", "Txn", "Put")})


def status_handlers() -> grpc.GenericRpcHandler:
    header = rpc_pb2.ResponseHeader(cluster_id=1, member_id=1, revision=2, raft_term=1)
    response = rpc_pb2.StatusResponse(header=header, version="3.5.13")

    async def status(request: object, context: grpc.aio.ServicerContext) -> object:
        return response

    handler = grpc.unary_unary_rpc_method_handler(
        status, request_deserializer=rpc_pb2.StatusRequest.FromString, response_serializer=type(response).SerializeToString
    )
    return grpc.method_handlers_generic_handler("etcdserverpb.Maintenance", {"Status": handler})


async def serve(address: str) -> None:
    server = grpc.aio.server(options=kve.etcd_client.CHANNEL_OPTIONS)
    server.add_generic_rpc_handlers((bare_handlers(), status_handlers()))
    server.add_insecure_port(address)
    await server.start()
    await server.wait_for_termination()


def bare_command(data_dir: Path) -> tuple[list[str], str]:
    endpoint = f"127.0.0.1:{kve.free_port()}"
    return [sys.executable, str(Path(__file__).resolve()), "--serve", endpoint], endpoint


# -- measuring -----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its threads so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def server_pid(endpoint: str) -> int:
    """The pid listening on ``endpoint`` (a loopback TCP port), from /proc/net/tcp* and fd links
    (gRPC listens on an IPv6 socket even for an IPv4 address)."""
    port = int(endpoint.rsplit(":", 1)[1])
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            if int(parts[1].rsplit(":", 1)[1], 16) == port and parts[3] == "0A":  # LISTEN
                inodes.add(parts[9])
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return int(pid)
        except OSError:
            continue
    raise RuntimeError(f"no process listens on {endpoint}")


def creating(concurrency: int) -> kve.Op:
    """Creates of fresh keys (the bare server says yes to every one)."""

    async def op(client: kve.etcd_client.EtcdClient, worker: int, index: int) -> None:
        await client.create(b"/bench/floor/%d/%08d" % (concurrency, index), kve.VALUE)

    return op


Row = tuple[str, int, float, float]  # workload, concurrency, ops/s, server CPU µs per op


async def bench_server(endpoint: str, args: argparse.Namespace) -> list[Row]:
    pid = server_pid(endpoint)
    pool = kve.Pool(endpoint)
    rows: list[Row] = []
    try:
        await pool[0].put(b"/bench/warmup", kve.VALUE)
        await kve.bench_gets(pool, kve.CLIENT_CHANNELS, 200, [b"/bench/warmup"])  # connect every channel
        for c in args.concurrency:
            before = cpu_seconds(pid)
            gets = await kve.bench_gets(pool, c, args.ops, [b"/bench/warmup"])
            rows.append(("get", c, gets.ops_per_second, 1e6 * (cpu_seconds(pid) - before) / args.ops))
            before = cpu_seconds(pid)
            creates = await kve.drive(pool, count=args.ops, concurrency=c, op=creating(c))
            rows.append(("create", c, creates.ops_per_second, 1e6 * (cpu_seconds(pid) - before) / args.ops))
    finally:
        await pool.close()
    return rows


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, list[Row]]:
    servers = [("etcd", kve.etcd_command), ("bare grpc.aio", bare_command)]
    if not args.no_kine:
        servers.append(("kine", kve.kine_command))
    results: dict[str, list[Row]] = {}
    for name, command in servers:
        async with kve.serving(name.split()[0], command, workdir) as endpoint:
            results[name] = await bench_server(endpoint, args)
    return results


def table(results: dict[str, list[Row]]) -> str:
    names = list(results)
    head = "| workload | concurrency | " + " | ".join(f"{n} ops/s (server CPU/op)" for n in names)
    head += " | " + " | ".join(f"{n} / etcd" for n in names[1:]) + " |"
    rows = [head, "|---|---:|" + "---:|" * (2 * len(names) - 1)]
    for i, (workload, concurrency, etcd_rate, _) in enumerate(results["etcd"]):
        cells = [f"{results[n][i][2]:,.0f} ({results[n][i][3]:.0f} µs)" for n in names]
        ratios = [f"{results[n][i][2] / etcd_rate:.2f}" for n in names[1:]]
        rows.append(f"| {workload} | {concurrency} | " + " | ".join(cells + ratios) + " |")
    return "\n".join(rows)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/grpc_floor.py",
        description="etcd, a bare grpc.aio server and kine on the same get/create workload; one table.",
    )
    parser.add_argument("--ops", type=int, default=4000, help="operations per cell (default 4000)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64], metavar="N")
    parser.add_argument("--no-kine", action="store_true", help="leave kine out (etcd and the bare server only)")
    parser.add_argument("--serve", metavar="HOST:PORT", help="run the bare server alone on HOST:PORT")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.serve:
        asyncio.run(serve(args.serve))
        return
    if not kve.ETCD.exists():
        sys.exit(f"{kve.ETCD} is missing: apt-get install etcd-server")
    workdir = Path(tempfile.mkdtemp(prefix="grpc-floor-"))
    load = os.getloadavg()[0]
    started = time.monotonic()
    try:
        results = asyncio.run(run(args, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"etcd, a bare grpc.aio server (fixed answers, no storage) and kine (SQLite), same Python client, "
        f"loopback TCP.\nMachine: {kve.machine()}; load average {load:.2f} before, {os.getloadavg()[0]:.2f} after.\n"
        f"{args.ops} operations per cell, {kve.CLIENT_CHANNELS} client channels.\n\n{table(results)}\n"
    )
    print(f"total {time.monotonic() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
