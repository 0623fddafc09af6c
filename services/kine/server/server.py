"""kine's etcd v3 gRPC server: one ``GrpcServer`` in front of one ``types.Backend``.

The generated protobuf modules use the ``kine.*`` packages (see proto/generate.py),
so handlers are registered here by hand under etcd's service names; only those
names travel on the wire. ``RPCS`` is the whole wire surface in one table.

Every handler goes through ``_handler``, which times it, counts it by status code,
and turns exceptions into gRPC statuses through ``errors.to_status``. The server
does not own the backend: whoever built both starts the backend first and stops it
after this server (stop accepting, drain, then close the store).
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import grpc
import grpc.aio
from google.protobuf import message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.kine import settings as kine_settings
from services.kine import types
from services.kine.proto import rpc_pb2
from services.kine.server import cluster, convert, errors, kv, lease, maintenance, watch
from services.kine.server import metrics as kine_metrics
from services.machinery.lifecycle import State

logger = logging.getLogger(__name__)

# etcd's embed defaults (etcd: server/embed/config.go, server/etcdserver/api/v3rpc/grpc.go).
SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    # MaxRequestBytes (1.5 MiB) plus gRPC overhead (512 KiB).
    ("grpc.max_receive_message_length", 2 * 1024 * 1024),
    ("grpc.max_send_message_length", -1),
    # Server keepalive: ping an idle client every 2 h, drop it after 20 s without an answer.
    ("grpc.keepalive_time_ms", 2 * 60 * 60 * 1000),
    ("grpc.keepalive_timeout_ms", 20_000),
    # Enforcement: clients may ping at most every 5 s, and not while they have no stream.
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 0),
    # Never share a TCP port with another process silently.
    ("grpc.so_reuseport", 0),
)
HEALTH_SERVICES = ("", "etcdserverpb.KV")
SOCKET_NAME = Path("server") / "kine.sock"
DEFAULT_GRACE = 5.0
# Seconds to wait for cancelled handlers to unwind once grpc has stopped.
HANDLER_DRAIN_TIMEOUT = 2.0
# The status message of streams ended because the server stops.
STREAM_ENDED = "kine: server is stopping"

Kind = Literal["unary", "unary_stream", "stream_stream"]


class ServerError(types.StoreError):
    """The server could not start (address in use, bad listen address...)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Rpc:
    service: str  # etcd's fully qualified service name, as on the wire
    method: str
    kind: Kind
    request: type[message.Message]
    response: type[message.Message]
    # unary: handler(request) -> response; streams: handler(request or iterator, write) -> None
    handler: Callable[..., Any]


@dataclasses.dataclass(frozen=True, slots=True)
class _Services:
    kv: kv.KVService
    watch: watch.WatchService
    lease: lease.LeaseService
    maintenance: maintenance.MaintenanceService
    cluster: cluster.ClusterService


def rpcs(s: _Services) -> list[Rpc]:
    """The wire surface: every etcd RPC this server answers, even if only with UNIMPLEMENTED."""
    p = rpc_pb2
    KV, W, L = "etcdserverpb.KV", "etcdserverpb.Watch", "etcdserverpb.Lease"
    M, C = "etcdserverpb.Maintenance", "etcdserverpb.Cluster"
    # fmt: off
    return [
        Rpc(KV, "Range", "unary", p.RangeRequest, p.RangeResponse, s.kv.range),
        Rpc(KV, "Put", "unary", p.PutRequest, p.PutResponse, s.kv.put),
        Rpc(KV, "DeleteRange", "unary", p.DeleteRangeRequest, p.DeleteRangeResponse, s.kv.delete_range),
        Rpc(KV, "Txn", "unary", p.TxnRequest, p.TxnResponse, s.kv.txn),
        Rpc(KV, "Compact", "unary", p.CompactionRequest, p.CompactionResponse, s.kv.compact),
        Rpc(W, "Watch", "stream_stream", p.WatchRequest, p.WatchResponse, s.watch.watch),
        Rpc(L, "LeaseGrant", "unary", p.LeaseGrantRequest, p.LeaseGrantResponse, s.lease.grant),
        Rpc(L, "LeaseRevoke", "unary", p.LeaseRevokeRequest, p.LeaseRevokeResponse, s.lease.revoke),
        Rpc(L, "LeaseKeepAlive", "stream_stream", p.LeaseKeepAliveRequest, p.LeaseKeepAliveResponse, s.lease.keep_alive),
        Rpc(L, "LeaseTimeToLive", "unary", p.LeaseTimeToLiveRequest, p.LeaseTimeToLiveResponse, s.lease.time_to_live),
        Rpc(L, "LeaseLeases", "unary", p.LeaseLeasesRequest, p.LeaseLeasesResponse, s.lease.leases),
        Rpc(M, "Status", "unary", p.StatusRequest, p.StatusResponse, s.maintenance.status),
        Rpc(M, "Alarm", "unary", p.AlarmRequest, p.AlarmResponse, s.maintenance.alarm),
        Rpc(M, "Defragment", "unary", p.DefragmentRequest, p.DefragmentResponse, s.maintenance.defragment),
        Rpc(M, "Hash", "unary", p.HashRequest, p.HashResponse, s.maintenance.hash),
        Rpc(M, "HashKV", "unary", p.HashKVRequest, p.HashKVResponse, s.maintenance.hash_kv),
        Rpc(M, "Snapshot", "unary_stream", p.SnapshotRequest, p.SnapshotResponse, s.maintenance.snapshot),
        Rpc(M, "MoveLeader", "unary", p.MoveLeaderRequest, p.MoveLeaderResponse, s.maintenance.move_leader),
        Rpc(M, "Downgrade", "unary", p.DowngradeRequest, p.DowngradeResponse, s.maintenance.downgrade),
        Rpc(C, "MemberList", "unary", p.MemberListRequest, p.MemberListResponse, s.cluster.member_list),
        Rpc(C, "MemberAdd", "unary", p.MemberAddRequest, p.MemberAddResponse, s.cluster.member_add),
        Rpc(C, "MemberRemove", "unary", p.MemberRemoveRequest, p.MemberRemoveResponse, s.cluster.member_remove),
        Rpc(C, "MemberUpdate", "unary", p.MemberUpdateRequest, p.MemberUpdateResponse, s.cluster.member_update),
        Rpc(C, "MemberPromote", "unary", p.MemberPromoteRequest, p.MemberPromoteResponse, s.cluster.member_promote),
    ]
    # fmt: on


class Calls:
    """The RPCs in progress: every handler's task, and which of them are streams.

    Stopping waits for ``active`` to unwind (so nothing touches the backend after
    the server stops). Streams (watches, lease keep-alives) never end on their own,
    so stopping ends them first, with UNAVAILABLE, instead of letting them hold the
    whole grace period: clients reconnect, as they would to a restarted etcd.
    """

    def __init__(self) -> None:
        self.active: set[asyncio.Task[Any]] = set()
        self.streams: set[asyncio.Task[Any]] = set()
        self.stopping = False

    def end_streams(self) -> None:
        self.stopping = True
        for task in self.streams:
            task.cancel(STREAM_ENDED)

    def ended_by_stop(self, task: asyncio.Task[Any]) -> bool:
        """True when our own end_streams, and nothing else, cancelled ``task``."""
        return self.stopping and task in self.streams and task.cancelling() == 1


def _handler(rpc: Rpc, metrics: kine_metrics.KineMetrics, calls: Calls) -> grpc.RpcMethodHandler:
    """Wrap ``rpc.handler`` with metrics and the error table, as a gRPC method handler.

    Every call goes through here, so it does no per-call lookups: the metric series
    are resolved once per RPC and status code.
    """
    txn = rpc.method == "Txn"
    unary = rpc.kind == "unary"
    handler = rpc.handler
    stats = metrics.for_rpc(kind=rpc.kind, service=rpc.service, method=rpc.method)
    ok = grpc.StatusCode.OK
    clock = time.perf_counter
    current_task = asyncio.current_task

    async def behavior(arg: Any, context: grpc.aio.ServicerContext) -> Any:
        # Observed before the status reaches the client, so a client never sees an RPC uncounted.
        started = clock()
        task = current_task()
        assert task is not None
        calls.active.add(task)
        if not unary:
            if calls.stopping:
                await context.abort(grpc.StatusCode.UNAVAILABLE, STREAM_ENDED)
            calls.streams.add(task)
        try:
            response = await handler(arg) if unary else await handler(arg, context.write)
        except asyncio.CancelledError:
            if not calls.ended_by_stop(task):
                stats.observe(grpc.StatusCode.CANCELLED, clock() - started)
                raise
            task.uncancel()  # our own stop: end the stream with a status instead
            stats.observe(grpc.StatusCode.UNAVAILABLE, clock() - started)
            await context.abort(grpc.StatusCode.UNAVAILABLE, STREAM_ENDED)
        except Exception as exc:
            code, text = errors.to_status(exc, txn=txn)
            if errors.is_known(exc):
                logger.debug("%s/%s => %s: %s", rpc.service, rpc.method, code.name, text)
            else:
                logger.error("%s/%s failed", rpc.service, rpc.method, exc_info=errors.unwrap(exc))
            stats.observe(code, clock() - started)
            await context.abort(code, text)
        else:
            stats.observe(ok, clock() - started)
            return response
        finally:
            calls.active.discard(task)
            calls.streams.discard(task)

    factory = {
        "unary": grpc.unary_unary_rpc_method_handler,
        "unary_stream": grpc.unary_stream_rpc_method_handler,
        "stream_stream": grpc.stream_stream_rpc_method_handler,
    }[rpc.kind]
    return factory(
        behavior,
        request_deserializer=rpc.request.FromString,
        response_serializer=rpc.response.SerializeToString,
    )


def method_handlers(
    services: list[Rpc], metrics: kine_metrics.KineMetrics, calls: Calls
) -> dict[str, dict[str, grpc.RpcMethodHandler]]:
    """Every RPC's handler by service and method, for ``add_registered_method_handlers``.

    Registered methods are matched by gRPC core from the wire path, with no Python lookup
    per call (a generic handler is asked, in Python, for every call it serves).
    """
    handlers: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
    for rpc in services:
        handlers.setdefault(rpc.service, {})[rpc.method] = _handler(rpc, metrics, calls)
    return handlers


def _check_socket_free(path: Path) -> None:
    """Remove a stale socket file; refuse to steal one another live process is serving."""
    if not path.exists():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise ServerError(f"cannot check socket {path}: {exc}") from exc
        path.unlink(missing_ok=True)
        return
    finally:
        probe.close()
    raise ServerError(f"socket {path} is already being served by another process")


def _client_url(address: str) -> str:
    if address.startswith("unix:"):
        return "unix://" + address.removeprefix("unix:")
    host, port = kine_metrics.split_host_port(address)
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"  # a wildcard listener is reachable on loopback
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class GrpcServer:
    """etcd v3 over gRPC for one backend: ``async with GrpcServer(backend, settings) as server: ...``."""

    def __init__(
        self,
        backend: types.Backend,
        settings: kine_settings.KineSettings,
        *,
        metrics: kine_metrics.KineMetrics | None = None,
    ) -> None:
        self._backend = backend
        self._settings = settings
        self.metrics = metrics if metrics is not None else kine_metrics.KineMetrics()
        self.state = State.NEW
        self._server: grpc.aio.Server | None = None
        self._health: health.aio.HealthServicer | None = None
        self._metrics_server: kine_metrics.MetricsServer | None = None
        self._socket: Path | None = None
        self._address = ""
        self._stopped = asyncio.Event()
        self._calls = Calls()

    @property
    def address(self) -> str:
        """What a gRPC client dials: ``unix:/abs/path/kine.sock`` or ``HOST:PORT`` (the bound port)."""
        return self._address

    @property
    def client_url(self) -> str:
        """The etcd endpoint URL for this server (``unix://...`` or ``http://host:port``)."""
        return _client_url(self._address)

    @property
    def metrics_address(self) -> str:
        """``HOST:PORT`` of the /metrics endpoint, empty when it is disabled."""
        return self._metrics_server.address if self._metrics_server is not None else ""

    async def start(self) -> None:
        """Listen and serve; returns once clients can connect."""
        if self.state is not State.NEW:
            raise RuntimeError(f"GrpcServer cannot start from state {self.state.value}")
        self.state = State.STARTING
        try:
            await self._start()
        except BaseException:
            await self._teardown(grace=0)
            self.state = State.STOPPED
            self._stopped.set()
            raise
        self.state = State.RUNNING
        logger.info("kine gRPC server listening on %s", self._address)

    async def _start(self) -> None:
        server = self._server = grpc.aio.server(options=SERVER_OPTIONS)
        self._address = self._bind(server)
        identity = convert.Identity.for_server(
            datastore=self._settings.datastore_endpoint or str(self._settings.data_dir), address=self._address
        )
        handlers = method_handlers(rpcs(self._services(identity)), self.metrics, self._calls)
        for service, methods in handlers.items():
            server.add_registered_method_handlers(service, methods)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        await server.start()
        if self._socket is not None:
            os.chmod(self._socket, 0o600)
        for name in HEALTH_SERVICES:
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if self._settings.metrics_address:
            self._metrics_server = kine_metrics.MetricsServer(
                self.metrics, self._backend, address=self._settings.metrics_address
            )
            await self._metrics_server.start()

    def _services(self, identity: convert.Identity) -> _Services:
        backend = self._backend
        return _Services(
            kv=kv.KVService(backend, identity=identity),
            watch=watch.WatchService(
                backend,
                identity=identity,
                progress_interval=self._settings.watch_progress_notify_interval,
                metrics=self.metrics,
            ),
            lease=lease.LeaseService(backend, identity=identity),
            maintenance=maintenance.MaintenanceService(
                backend, identity=identity, version=self._settings.emulated_etcd_version
            ),
            cluster=cluster.ClusterService(backend, identity=identity, client_url=_client_url(self._address)),
        )

    def _bind(self, server: grpc.aio.Server) -> str:
        if self._settings.listen_address:
            host, _ = kine_metrics.split_host_port(self._settings.listen_address)
            port = self._add_port(server, self._settings.listen_address)
            return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        path = (self._settings.data_dir / SOCKET_NAME).resolve()
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _check_socket_free(path)
        self._add_port(server, f"unix:{path}")
        self._socket = path
        return f"unix:{path}"

    @staticmethod
    def _add_port(server: grpc.aio.Server, address: str) -> int:
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise ServerError(f"cannot listen on {address}: {exc}") from exc
        if port == 0 and not address.startswith("unix:"):
            raise ServerError(f"cannot listen on {address}")
        return port

    async def stop(self, grace: float = DEFAULT_GRACE) -> None:
        """Stop accepting, let RPCs finish for up to ``grace`` seconds, cancel the rest. Idempotent."""
        if self.state is State.NEW:
            self.state = State.STOPPED
            self._stopped.set()
            return
        if self.state in (State.STOPPING, State.STOPPED):
            await self._stopped.wait()
            return
        self.state = State.STOPPING
        try:
            await self._teardown(grace=grace)
        finally:
            self.state = State.STOPPED
            self._stopped.set()
        logger.info("kine gRPC server on %s stopped", self._address)

    async def _teardown(self, *, grace: float) -> None:
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        if self._metrics_server is not None:
            await self._metrics_server.stop()
        # Watch and keep-alive streams never end by themselves: end them now, not after the grace.
        self._calls.end_streams()
        if self._server is not None:
            await self._server.stop(grace)
        await self._drain_handlers()
        if self._socket is not None:
            self._socket.unlink(missing_ok=True)

    async def _drain_handlers(self) -> None:
        # grpc has cancelled what outlived the grace; wait for those handlers to unwind,
        # so nothing still touches the backend once its owner stops it after us.
        if not self._calls.active:
            return
        _, pending = await asyncio.wait(set(self._calls.active), timeout=HANDLER_DRAIN_TIMEOUT)
        for task in pending:
            task.cancel()
        if pending:
            logger.warning("%d RPC handlers still running after stop; cancelled them again", len(pending))
            await asyncio.wait(pending, timeout=HANDLER_DRAIN_TIMEOUT)

    async def __aenter__(self) -> GrpcServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
