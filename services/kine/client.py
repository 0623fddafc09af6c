"""A ``types.Backend`` over etcd v3 gRPC: the store of an API server whose kine runs in its own
process, or whose ``--datastore-endpoint`` names a real etcd.

Every RPC is bound once by etcd's wire path (``/etcdserverpb.KV/Range``) with kine's generated
messages; there are no stubs. gRPC errors are translated here, once, into the store errors of
``types.py``, by status code and etcd's message (the same table ``server/errors.py`` applies in
the other direction), so callers cannot tell this backend from the in-process one.

Watches share ONE Watch stream per backend. A single root task owns it: it opens the stream on
demand, runs a writer (the only task that writes to the stream) and a reader (which dispatches
responses by watch id), and, when the stream breaks, ends every watch on it with
``WatchClosedError("watch stream lost: ...")`` so callers re-watch from their last revision.
etcd answers creates in the order they were sent, so a FIFO pairs each ``created`` with its create.

etcd has no RPC for the compact revision. ``compact_revision()`` finds it with Range probes at a
past revision, which fail exactly below it (etcd and kine agree on that), by a binary search from
the largest value known to be at or below it (raised by compactions, compacted errors and watches
refused as compacted). Compaction only moves forward, so while nothing new was compacted the answer
costs one probe.
A store compacted at exactly revision 1 reports 0: no probe can tell 0 from 1.

Two choices keep the in-process semantics on both kine and etcd:
- ``watch(start_revision=R)`` first probes revision R-1, so it refuses what LogStructured refuses
  (R-1 below the compact revision); etcd alone would refuse only R itself below it.
- ``synced_revision()`` asks the shared stream for a progress response (all its events precede it);
  with no watch open there is nothing to deliver, so the current revision is the answer.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import socket
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from google.protobuf import message

from services.kine import types
from services.kine.proto import kv_pb2, rpc_pb2
from services.machinery import tasks
from services.machinery.lifecycle import State

log = logging.getLogger(__name__)

# Responses are as large as the lists asked for; what we send is bounded by the server.
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    # Find a dead peer under an idle watch; etcd and kine refuse pings more often than every 5 s.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),
)
# A key nobody writes: reads of it cost one index lookup and only their header matters.
PROBE_KEY = b"/kine/client/probe"
# Events merged into one batch by next_batch, as the in-process store does.
MAX_BATCH_EVENTS = 1000
TOO_SLOW = "watch closed: the client is too slow to keep up with the event rate"
CANCELED = "watch canceled"
# etcd: api/v3rpc/rpctypes/error.go.
COMPACTED = "required revision has been compacted"
COMPACTED_REASON = "etcdserver: mvcc: " + COMPACTED
FUTURE_REVISION = "required revision is a future revision"
LEASE_NOT_FOUND = "requested lease not found"
LEASE_EXISTS = "lease already exists"
ALL_WATCHES = -1  # etcd's watch id on a progress response covering the whole stream

_C = grpc.StatusCode
# Requests the store cannot honour (a shape kine does not support, a TTL too large...).
_UNSUPPORTED = (_C.INVALID_ARGUMENT, _C.UNIMPLEMENTED, _C.OUT_OF_RANGE)
_COMPARE_TARGETS = {
    "version": (rpc_pb2.Compare.VERSION, "version"),
    "create": (rpc_pb2.Compare.CREATE, "create_revision"),
    "mod": (rpc_pb2.Compare.MOD, "mod_revision"),
    "value": (rpc_pb2.Compare.VALUE, "value"),
    "lease": (rpc_pb2.Compare.LEASE, "lease"),
}
_COMPARE_RESULTS = {
    "=": rpc_pb2.Compare.EQUAL,
    "!=": rpc_pb2.Compare.NOT_EQUAL,
    "<": rpc_pb2.Compare.LESS,
    ">": rpc_pb2.Compare.GREATER,
}


@dataclasses.dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files for an https etcd (K3s --datastore-cafile/-certfile/-keyfile)."""

    ca: Path | None = None  # the CA that signed the server's certificate; None: the system roots
    cert: Path | None = None  # a client certificate, for etcd's --client-cert-auth
    key: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: Path | None) -> bytes | None:
            return Path(path).read_bytes() if path is not None else None

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca), private_key=read(self.key), certificate_chain=read(self.cert)
        )


def parse_address(address: str, *, tls: TlsFiles | None = None) -> tuple[str, bool]:
    """The gRPC target for ``address`` and whether it needs TLS.

    ``unix:/path``, ``unix:///path``, ``host:port``, ``http://host:port``, ``https://host:port``;
    TLS for https, or for a bare ``host:port`` given TLS files.
    """
    if "," in address:
        raise ValueError(f"one datastore endpoint expected, got {address!r}")
    if address.startswith("unix:"):
        secure, target = False, address
    elif address.startswith(("http://", "https://")):
        scheme, _, rest = address.partition("://")
        secure, target = scheme == "https", rest.split("/", 1)[0]
    else:
        secure, target = tls is not None, address
    if not target or target == "unix:":
        raise ValueError(f"no address in datastore endpoint {address!r}")
    if tls is not None and not secure:
        raise ValueError(f"TLS files were given for the plain-text endpoint {address!r}")
    return target, secure


def parse_endpoints(address: str, *, tls: TlsFiles | None = None) -> tuple[list[str], bool]:
    """The gRPC targets of a comma-separated endpoint list (K3s's etcd form) and whether they need TLS.

    Every endpoint names one member of the same etcd cluster, so they must agree on TLS.
    """
    parsed = [parse_address(part.strip(), tls=tls) for part in address.split(",") if part.strip()]
    if not parsed:
        raise ValueError(f"no address in datastore endpoint {address!r}")
    if len({secure for _, secure in parsed}) > 1:
        raise ValueError(f"the datastore endpoints {address!r} mix http and https")
    targets = [target for target, _ in parsed]
    if len(targets) > 1 and any(target.startswith("unix:") for target in targets):
        raise ValueError(f"a unix socket cannot be one of several datastore endpoints: {address!r}")
    return targets, parsed[0][1]


async def channel_target(targets: list[str]) -> tuple[str, list[tuple[str, str]]]:
    """One gRPC target for ``targets`` and the channel options it needs.

    Several endpoints become one ``ipv4:``/``ipv6:`` address list (names resolved now), so gRPC's
    pick_first policy moves to the next member when one goes away. One channel checks one TLS
    name: the first endpoint's host, which every member's certificate must therefore carry.
    """
    if len(targets) == 1:
        return targets[0], []
    addresses: dict[int, list[str]] = {socket.AF_INET: [], socket.AF_INET6: []}
    loop = asyncio.get_running_loop()
    for target in targets:
        host, _, port = target.rpartition(":")
        host = host.strip("[]")
        try:
            infos = await loop.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        except (OSError, ValueError) as exc:
            raise types.DatastoreError(f"cannot resolve datastore endpoint {target}: {exc}") from None
        for family, _, _, _, sockaddr in infos:
            if family in addresses:
                ip = sockaddr[0] if family == socket.AF_INET else f"[{sockaddr[0]}]"
                if f"{ip}:{port}" not in addresses[family]:
                    addresses[family].append(f"{ip}:{port}")
    family = socket.AF_INET if addresses[socket.AF_INET] else socket.AF_INET6
    scheme = "ipv4" if family == socket.AF_INET else "ipv6"
    first_host = targets[0].rpartition(":")[0].strip("[]")
    options = [
        ("grpc.lb_policy_name", "pick_first"),
        ("grpc.default_authority", targets[0]),
        ("grpc.ssl_target_name_override", first_host),
    ]
    return f"{scheme}:{','.join(addresses[family])}", options


# -- protobuf <-> types -----------------------------------------------------------------------


def _kv(pb: kv_pb2.KeyValue) -> types.KeyValue:
    return types.KeyValue(pb.key, pb.value, pb.create_revision, pb.mod_revision, pb.version, pb.lease)


def _event(pb: kv_pb2.Event) -> types.Event:
    prev = _kv(pb.prev_kv) if pb.HasField("prev_kv") else None
    return types.Event(types.EventType(pb.type), _kv(pb.kv), prev)


def _range_request(op: types.RangeOp, *, revision: int = 0) -> rpc_pb2.RangeRequest:
    return rpc_pb2.RangeRequest(
        key=op.key,
        range_end=op.range_end,
        limit=op.limit,
        revision=revision,
        keys_only=op.keys_only,
        count_only=op.count_only,
    )


def _range_result(pb: rpc_pb2.RangeResponse, revision: int) -> types.RangeResult:
    return types.RangeResult(revision, [_kv(kv) for kv in pb.kvs], pb.count, pb.more)


# Every write of the API server is one Txn, so its request is filled in place, field by field
# (upb's setters and ``repeated.add()`` cost a third of nested keyword constructors).


def _txn_request(txn: types.Txn) -> rpc_pb2.TxnRequest:
    request = rpc_pb2.TxnRequest()
    add = request.compare.add
    for cmp in txn.compare:
        target, field = _COMPARE_TARGETS[cmp.target]
        pb = add()
        pb.key = cmp.key
        pb.target = target
        pb.result = _COMPARE_RESULTS[cmp.result]
        setattr(pb, field, cmp.value)
    for ops, into in ((txn.success, request.success), (txn.failure, request.failure)):
        for op in ops:
            _fill_op(into.add(), op)
    return request


def _fill_op(pb: rpc_pb2.RequestOp, op: types.Op) -> None:
    if isinstance(op, types.PutOp):
        put = pb.request_put
        put.SetInParent()  # the oneof is set even when every field is at its default
        put.key = op.key
        put.value = op.value
        if op.lease:
            put.lease = op.lease
        if op.prev_kv:
            put.prev_kv = True
    elif isinstance(op, types.RangeOp):
        pb.request_range.SetInParent()
        pb.request_range.CopyFrom(_range_request(op))
    else:
        pb.request_delete_range.SetInParent()
        pb.request_delete_range.CopyFrom(
            rpc_pb2.DeleteRangeRequest(key=op.key, range_end=op.range_end, prev_kv=op.prev_kv)
        )


def _op_result(pb: rpc_pb2.ResponseOp, revision: int) -> types.OpResult:
    # Like LogStructured, every response of a transaction carries the transaction's revision.
    kind = pb.WhichOneof("response")
    if kind == "response_range":
        return _range_result(pb.response_range, revision)
    if kind == "response_put":
        put = pb.response_put
        return types.PutResult(revision, _kv(put.prev_kv) if put.HasField("prev_kv") else None)
    if kind == "response_delete_range":
        delete = pb.response_delete_range
        return types.DeleteResult(revision, delete.deleted, [_kv(kv) for kv in delete.prev_kvs])
    raise types.UnsupportedError(f"unexpected transaction response {kind!r}")


def translate(exc: grpc.aio.AioRpcError, *, rpc: str) -> types.StoreError:
    """The store error for a failed RPC; a CompactedError still lacks its compact revision."""
    code, details = exc.code(), exc.details() or ""
    if COMPACTED in details:
        return types.CompactedError(0)
    if FUTURE_REVISION in details:
        return types.FutureRevisionError()
    if LEASE_NOT_FOUND in details:
        return types.LeaseNotFoundError()
    if LEASE_EXISTS in details:
        return types.LeaseExistsError()
    if code in _UNSUPPORTED:
        return types.UnsupportedError(details or code.name)
    # Unavailable, deadline exceeded, cancelled by a closing channel, etcd's internal errors...
    return types.DatastoreError(f"{rpc}: {code.name}: {details}")


# -- watches ---------------------------------------------------------------------------------


class _Watch:
    """One watch on the shared stream; implements ``types.Watch``."""

    def __init__(self, session: _Session, *, buffer: int) -> None:
        self.id: int | None = None  # set by the stream's ``created`` answer
        self.compact_revision = 0  # set when the server cancelled it as compacted
        self.revision = 0  # the newest header revision seen for this watch (events or progress)
        self._session = session
        self._buffer = buffer
        self._queue: collections.deque[list[types.Event]] = collections.deque()
        self._ready = asyncio.Event()
        self._closed: str | None = None

    @property
    def closed(self) -> bool:
        return self._closed is not None

    def offer(self, events: list[types.Event], revision: int) -> None:
        """Called by the reader, synchronously, in stream order."""
        if self._closed is not None:
            return
        if len(self._queue) >= self._buffer:
            self._end(TOO_SLOW, keep_queued=False)
            return
        self.revision = max(self.revision, revision)
        self._queue.append(events)
        self._ready.set()

    def ended_by_server(self, reason: str) -> None:
        # What was received before the end is still valid: it is delivered first.
        self._end(reason, keep_queued=True)

    def _end(self, reason: str, *, keep_queued: bool) -> None:
        if self._closed is not None:
            return
        self._closed = reason
        if not keep_queued:
            self._queue.clear()
        self._ready.set()
        self._session.forget(self)

    async def next_batch(self) -> list[types.Event]:
        while not self._queue:
            if self._closed is not None:
                raise types.WatchClosedError(self._closed)
            self._ready.clear()
            await self._ready.wait()
        batch = self._queue.popleft()
        while self._queue and len(batch) < MAX_BATCH_EVENTS:
            batch.extend(self._queue.popleft())
        return batch

    def pending(self) -> bool:
        return bool(self._queue)

    def close(self) -> None:
        self._end(CANCELED, keep_queued=False)


class _Session:
    """The state of one Watch stream: its outbox, creates awaiting an id, live watches, progress."""

    def __init__(self) -> None:
        self.outbox: asyncio.Queue[rpc_pb2.WatchRequest] = asyncio.Queue()
        self.creating: collections.deque[tuple[asyncio.Future[int], _Watch]] = collections.deque()
        self.watches: dict[int, _Watch] = {}
        self.lost: str | None = None
        # One progress request in flight at a time, so each response answers exactly the
        # callers that asked before it was sent (kine coalesces requests that overlap).
        self._progress_next: list[asyncio.Future[int | None]] = []
        self._progress_sent: list[asyncio.Future[int | None]] | None = None

    def create(self, request: rpc_pb2.WatchCreateRequest, watch: _Watch) -> asyncio.Future[int]:
        created: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        # Queued together, with no await between: the FIFO and the outbox agree on order.
        self.creating.append((created, watch))
        self.outbox.put_nowait(rpc_pb2.WatchRequest(create_request=request))
        return created

    def forget(self, watch: _Watch) -> None:
        if watch.id is not None and self.watches.pop(watch.id, None) is watch and self.lost is None:
            self.outbox.put_nowait(
                rpc_pb2.WatchRequest(cancel_request=rpc_pb2.WatchCancelRequest(watch_id=watch.id))
            )

    def request_progress(self) -> asyncio.Future[int | None]:
        future: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._progress_next.append(future)
        if self._progress_sent is None:
            self._send_progress()
        return future

    def _send_progress(self) -> None:
        self._progress_sent, self._progress_next = self._progress_next, []
        self.outbox.put_nowait(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))

    def dispatch(self, response: rpc_pb2.WatchResponse) -> None:
        """Route one response; synchronous, so events reach queues in stream order."""
        revision = response.header.revision
        if response.created:
            self._created(response)
        elif response.canceled:
            # Popped first: the server has already dropped it, so no cancel goes back.
            watch = self.watches.pop(response.watch_id, None)
            if watch is not None:
                watch.compact_revision = response.compact_revision
                compacted = response.compact_revision > 0
                watch.ended_by_server(COMPACTED_REASON if compacted else response.cancel_reason or CANCELED)
        elif response.events:
            watch = self.watches.get(response.watch_id)
            if watch is not None:
                watch.offer([_event(e) for e in response.events], revision)
        elif response.watch_id == ALL_WATCHES and revision > 0:
            self._progress(revision)
        elif response.watch_id in self.watches and revision > 0:
            watch = self.watches[response.watch_id]
            watch.revision = max(watch.revision, revision)

    def _created(self, response: rpc_pb2.WatchResponse) -> None:
        if not self.creating:
            log.warning("watch stream: a created answer for no pending create (id %d)", response.watch_id)
            return
        future, watch = self.creating.popleft()
        if response.canceled or response.watch_id == ALL_WATCHES:
            reason = response.cancel_reason or "watch refused"
            if COMPACTED in reason:
                error: types.StoreError = types.CompactedError(
                    response.compact_revision, response.header.revision
                )
            else:
                error = types.UnsupportedError(reason)
            if not future.done():
                future.set_exception(error)
            return
        watch.id = response.watch_id
        watch.revision = response.header.revision
        self.watches[watch.id] = watch
        if watch.closed or future.done():
            # Its caller gave up waiting (cancelled or timed out): do not leave it on the server.
            watch.close()
            self.forget(watch)
            return
        future.set_result(response.header.revision)

    def _progress(self, revision: int) -> None:
        answered, self._progress_sent = self._progress_sent or [], None
        for future in answered:
            if not future.done():
                future.set_result(revision)
        if self._progress_next:
            self._send_progress()

    def lose(self, reason: str) -> None:
        """The stream is gone: fail creates, end watches, release progress waiters."""
        if self.lost is not None:
            return
        self.lost = reason
        while self.creating:
            future, _ = self.creating.popleft()
            if not future.done():
                future.set_exception(types.DatastoreError(reason))
        for watch in list(self.watches.values()):
            watch.ended_by_server(reason)
        self.watches.clear()
        for future in [*(self._progress_sent or []), *self._progress_next]:
            if not future.done():
                future.set_result(None)  # every watch ended: nothing is left to deliver
        self._progress_sent, self._progress_next = None, []


# -- the backend -------------------------------------------------------------------------------


class GrpcBackend:
    """``async with GrpcBackend("unix:/var/lib/k3s/server/kine.sock") as backend: ...``."""

    def __init__(
        self,
        address: str,
        *,
        tls: TlsFiles | None = None,
        connect_timeout: float = 10.0,
        timeout: float = 30.0,
        watch_buffer: int = 1000,
    ) -> None:
        """``timeout`` bounds every unary RPC and every wait for a watch answer, in seconds;
        ``watch_buffer`` is how many event batches a watch may hold before it is cancelled as too slow."""
        self.address = address
        self._targets, self._secure = parse_endpoints(address, tls=tls)
        self._tls = tls
        self._connect_timeout = connect_timeout
        self._timeout = timeout
        self._watch_buffer = watch_buffer
        self.state = State.NEW
        self._channel: grpc.aio.Channel | None = None
        self._rpcs: dict[str, Any] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._session: _Session | None = None
        self._stream_wanted = asyncio.Event()
        self._compact_floor = 0  # never above the store's compact revision (compaction only grows)
        self._broken: str | None = None  # set if the watch stream's root loop died

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> GrpcBackend:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Connect; returns once the datastore answers a read."""
        if self.state is not State.NEW:
            raise RuntimeError(f"GrpcBackend cannot start from state {self.state.value}")
        self.state = State.STARTING
        try:
            await self._connect()
        except BaseException:
            await self.stop()
            raise
        self._tasks.append(
            tasks.guarded(
                self._stream_loop(), name="kine client watch stream", on_failure=self._stream_failed
            )
        )
        self.state = State.RUNNING
        log.info("store client connected to %s", self.address)

    async def _connect(self) -> None:
        credentials: grpc.ChannelCredentials | None = None
        if self._secure:
            try:
                credentials = await asyncio.to_thread(
                    self._tls.credentials if self._tls is not None else grpc.ssl_channel_credentials
                )
            except OSError as exc:
                raise types.DatastoreError(f"cannot read the datastore TLS files: {exc}") from exc
        target, extra = await channel_target(self._targets)
        options = [*CHANNEL_OPTIONS, *extra]
        if credentials is not None:
            self._channel = grpc.aio.secure_channel(target, credentials, options=options)
        else:
            self._channel = grpc.aio.insecure_channel(target, options=options)
        self._bind(self._channel)
        try:
            async with asyncio.timeout(self._connect_timeout):
                await self._channel.channel_ready()
        except TimeoutError:
            raise types.DatastoreError(
                f"the datastore at {self.address} is unreachable: no connection within {self._connect_timeout:g} s"
            ) from None
        await self._call("Range", rpc_pb2.RangeRequest(key=PROBE_KEY, count_only=True))

    def _bind(self, channel: grpc.aio.Channel) -> None:
        p = rpc_pb2
        unary = {
            "Range": ("KV", p.RangeRequest, p.RangeResponse),
            "Put": ("KV", p.PutRequest, p.PutResponse),
            "DeleteRange": ("KV", p.DeleteRangeRequest, p.DeleteRangeResponse),
            "Txn": ("KV", p.TxnRequest, p.TxnResponse),
            "Compact": ("KV", p.CompactionRequest, p.CompactionResponse),
            "LeaseGrant": ("Lease", p.LeaseGrantRequest, p.LeaseGrantResponse),
            "LeaseRevoke": ("Lease", p.LeaseRevokeRequest, p.LeaseRevokeResponse),
            "LeaseTimeToLive": ("Lease", p.LeaseTimeToLiveRequest, p.LeaseTimeToLiveResponse),
            "LeaseLeases": ("Lease", p.LeaseLeasesRequest, p.LeaseLeasesResponse),
            "Status": ("Maintenance", p.StatusRequest, p.StatusResponse),
        }
        for method, (service, request, response) in unary.items():
            self._rpcs[method] = channel.unary_unary(
                f"/etcdserverpb.{service}/{method}",
                request_serializer=request.SerializeToString,
                response_deserializer=response.FromString,
                _registered_method=True,  # gRPC core interns the path once, not per call
            )
        streams = {
            "Watch": ("Watch", p.WatchRequest, p.WatchResponse),
            "LeaseKeepAlive": ("Lease", p.LeaseKeepAliveRequest, p.LeaseKeepAliveResponse),
        }
        for method, (service, request, response) in streams.items():
            self._rpcs[method] = channel.stream_stream(
                f"/etcdserverpb.{service}/{method}",
                request_serializer=request.SerializeToString,
                response_deserializer=response.FromString,
                _registered_method=True,  # gRPC core interns the path once, not per call
            )

    async def stop(self) -> None:
        """Close every watch and the channel. Idempotent."""
        if self.state in (State.STOPPING, State.STOPPED):
            return
        self.state = State.STOPPING
        await tasks.cancel_all(self._tasks)
        if self._session is not None:
            self._session.lose("the store client is stopping")
        if self._channel is not None:
            await self._channel.close()
        self.state = State.STOPPED
        log.info("store client for %s stopped", self.address)

    # -- unary calls ---------------------------------------------------------------------------

    async def _call(self, method: str, request: message.Message) -> Any:
        if self.state not in (State.STARTING, State.RUNNING):
            raise types.DatastoreError(f"the store client for {self.address} is {self.state.value}")
        try:
            # Like etcd's Go client: wait for the connection (a kine restart), within the deadline.
            return await self._rpcs[method](request, timeout=self._timeout, wait_for_ready=True)
        except grpc.aio.AioRpcError as exc:
            raise translate(exc, rpc=method) from exc

    async def _compacted(self, floor: int) -> types.CompactedError:
        """The full error for a compacted read, knowing the compact revision is at least ``floor``."""
        self._compact_floor = max(self._compact_floor, floor)
        current = await self.current_revision()
        return types.CompactedError(await self._find_compact_revision(current), current)

    # -- reads -----------------------------------------------------------------------------------

    async def current_revision(self) -> int:
        response = await self._call("Range", rpc_pb2.RangeRequest(key=PROBE_KEY, count_only=True))
        return response.header.revision

    async def _readable(self, revision: int) -> bool:
        """True when a read at ``revision`` (>= 1) is not refused as compacted."""
        request = rpc_pb2.RangeRequest(key=PROBE_KEY, revision=revision, count_only=True)
        try:
            await self._call("Range", request)
        except types.CompactedError:
            return False
        except types.FutureRevisionError:
            return True  # above the current revision, so above the compact revision too
        return True

    async def compact_revision(self) -> int:
        """The store's compact revision, found by Range probes (see the module docstring)."""
        return await self._find_compact_revision()

    async def _find_compact_revision(self, upper: int | None = None) -> int:
        """The smallest readable revision from the floor up; ``upper`` is one known readable."""
        low = max(self._compact_floor, 1)
        if await self._readable(low):
            return self._compact_floor  # unchanged since we last knew it (0 and 1 look alike)
        # Invariant: reads fail below the compact revision, which lies in [low, high].
        low += 1
        high = max(upper if upper is not None else await self.current_revision(), low)
        while low < high:
            middle = (low + high) // 2
            if await self._readable(middle):
                high = middle
            else:
                low = middle + 1
        self._compact_floor = max(self._compact_floor, low)
        return low

    async def range(
        self,
        key: bytes,
        range_end: bytes = b"",
        *,
        revision: int = 0,
        limit: int = 0,
        keys_only: bool = False,
        count_only: bool = False,
    ) -> types.RangeResult:
        op = types.RangeOp(key, range_end, limit=limit, keys_only=keys_only, count_only=count_only)
        try:
            response = await self._call("Range", _range_request(op, revision=revision))
        except types.CompactedError:
            raise await self._compacted(revision + 1) from None
        return _range_result(response, response.header.revision)

    # -- writes ------------------------------------------------------------------------------------

    async def put(
        self, key: bytes, value: bytes, *, lease: int = 0, prev_kv: bool = False
    ) -> types.PutResult:
        request = rpc_pb2.PutRequest(key=key, value=value, lease=lease, prev_kv=prev_kv)
        response = await self._call("Put", request)
        prev = _kv(response.prev_kv) if response.HasField("prev_kv") else None
        return types.PutResult(response.header.revision, prev)

    async def delete_range(
        self, key: bytes, range_end: bytes = b"", *, prev_kv: bool = False
    ) -> types.DeleteResult:
        request = rpc_pb2.DeleteRangeRequest(key=key, range_end=range_end, prev_kv=prev_kv)
        response = await self._call("DeleteRange", request)
        return types.DeleteResult(
            response.header.revision, response.deleted, [_kv(kv) for kv in response.prev_kvs]
        )

    async def txn(self, txn: types.Txn) -> types.TxnResult:
        response = await self._call("Txn", _txn_request(txn))
        revision = response.header.revision
        results = [_op_result(r, revision) for r in response.responses]
        return types.TxnResult(revision, response.succeeded, results)

    async def compact(self, revision: int) -> int:
        """Compact up to ``revision``; kine may keep more (its min-retain), etcd compacts exactly."""
        try:
            await self._call("Compact", rpc_pb2.CompactionRequest(revision=revision))
        except types.CompactedError:
            raise await self._compacted(revision) from None
        # Now the compact revision is at most ``revision``: search no higher.
        return await self._find_compact_revision(revision)

    # -- watches -----------------------------------------------------------------------------------

    async def watch(self, key: bytes, range_end: bytes = b"", *, start_revision: int = 0) -> types.Watch:
        if start_revision > 0 and not await self._readable(max(start_revision - 1, 1)):
            raise await self._compacted(start_revision)
        session = self._use_session()
        watch = _Watch(session, buffer=self._watch_buffer)
        request = rpc_pb2.WatchCreateRequest(
            key=key, range_end=range_end, start_revision=start_revision, prev_kv=True, progress_notify=True
        )
        created = session.create(request, watch)
        try:
            async with asyncio.timeout(self._timeout):
                header_revision = await created
        except TimeoutError:
            watch.close()
            raise types.DatastoreError(f"no answer to a watch create within {self._timeout:g} s") from None
        except types.CompactedError as exc:
            raise await self._compacted(exc.compact_revision) from None
        except BaseException:
            watch.close()  # if the server creates it after all, the reader cancels it
            raise
        if watch.compact_revision:
            raise await self._compacted(watch.compact_revision)
        log.debug(
            "WATCH %r..%r start=%d => id=%s rev=%d", key, range_end, start_revision, watch.id, header_revision
        )
        return watch

    def _stream_failed(self, exc: BaseException | None) -> None:
        self._broken = f"the watch stream loop ended ({exc})"
        if self._session is not None:
            self._session.lose(self._broken)

    def _use_session(self) -> _Session:
        if self.state is not State.RUNNING:
            raise types.DatastoreError(f"the store client for {self.address} is {self.state.value}")
        if self._broken is not None:
            raise types.DatastoreError(self._broken)
        if self._session is None or self._session.lost is not None:
            self._session = _Session()
            self._stream_wanted.set()
        return self._session

    async def synced_revision(self) -> int:
        session = self._session
        if session is None or session.lost is not None or not session.watches:
            return await self.current_revision()  # no watch on the stream: nothing to deliver
        answer = session.request_progress()
        try:
            async with asyncio.timeout(self._timeout):
                revision = await answer
        except TimeoutError:
            raise types.DatastoreError(
                f"no progress answer on the watch stream within {self._timeout:g} s"
            ) from None
        return revision if revision is not None else await self.current_revision()

    async def _stream_loop(self) -> None:
        """Serve one Watch stream at a time, opened when a session is wanted."""
        while True:
            await self._stream_wanted.wait()
            self._stream_wanted.clear()
            session = self._session
            if session is None or session.lost is not None:
                continue
            reason = await self._serve(session)
            log.info("store client %s: %s", self.address, reason)
            session.lose(reason)

    async def _serve(self, session: _Session) -> str:
        call = self._rpcs["Watch"](wait_for_ready=True)
        reader = asyncio.create_task(self._read_loop(session, call), name="kine client watch reader")
        writer = asyncio.create_task(self._write_loop(session, call), name="kine client watch writer")
        try:
            await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            reader.cancel()
            writer.cancel()
            call.cancel()
            await asyncio.wait({reader, writer})
            for task in (reader, writer):  # retrieved even when we are being cancelled
                if not task.cancelled():
                    task.exception()
        return _stream_end(reader) or _stream_end(writer) or "watch stream lost"

    async def _read_loop(self, session: _Session, call: grpc.aio.StreamStreamCall) -> str:
        while True:
            response = await call.read()
            if response is grpc.aio.EOF:
                return "watch stream lost: the server ended it"
            session.dispatch(response)

    async def _write_loop(self, session: _Session, call: grpc.aio.StreamStreamCall) -> None:
        while True:
            await call.write(await session.outbox.get())

    # -- status and leases ----------------------------------------------------------------------------

    async def db_size(self) -> int:
        return (await self._call("Status", rpc_pb2.StatusRequest())).dbSize

    async def lease_grant(self, ttl: int, *, lease_id: int = 0) -> types.LeaseInfo:
        response = await self._call("LeaseGrant", rpc_pb2.LeaseGrantRequest(TTL=ttl, ID=lease_id))
        if response.error:
            raise types.StoreError(response.error)
        return types.LeaseInfo(response.ID, response.TTL, response.TTL)

    async def lease_revoke(self, lease_id: int) -> int:
        return (await self._call("LeaseRevoke", rpc_pb2.LeaseRevokeRequest(ID=lease_id))).header.revision

    async def lease_keepalive(self, lease_id: int) -> types.LeaseInfo:
        """One request and one answer on a LeaseKeepAlive stream of its own."""
        if self.state is not State.RUNNING:
            raise types.DatastoreError(f"the store client for {self.address} is {self.state.value}")
        call = self._rpcs["LeaseKeepAlive"](timeout=self._timeout, wait_for_ready=True)
        try:
            await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=lease_id))
            response = await call.read()
            await call.done_writing()
            await call.code()  # the server ends the stream once we stop sending
        except grpc.aio.AioRpcError as exc:
            raise translate(exc, rpc="LeaseKeepAlive") from exc
        finally:
            if not call.done():
                call.cancel()
        if response is grpc.aio.EOF:
            raise types.DatastoreError("LeaseKeepAlive: the server ended the stream without an answer")
        if response.TTL <= 0:
            raise types.LeaseNotFoundError()  # etcd answers TTL 0 for a lease that is gone
        return types.LeaseInfo(lease_id, response.TTL, response.TTL)

    async def lease_time_to_live(self, lease_id: int, *, keys: bool = False) -> types.LeaseInfo:
        response = await self._call("LeaseTimeToLive", rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id, keys=keys))
        return types.LeaseInfo(lease_id, response.TTL, response.grantedTTL, list(response.keys))

    async def lease_list(self) -> list[int]:
        return [lease.ID for lease in (await self._call("LeaseLeases", rpc_pb2.LeaseLeasesRequest())).leases]


def _stream_end(task: asyncio.Task[Any]) -> str | None:
    """Why a stream task ended: its return value or its error (None if it was cancelled)."""
    if task.cancelled():
        return None
    exc = task.exception()
    if exc is None:
        return task.result()
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"watch stream lost: {exc.code().name}: {exc.details()}"
    if isinstance(exc, asyncio.InvalidStateError):
        return "watch stream lost: the call ended"  # a write after the RPC finished
    log.error("watch stream task %s failed", task.get_name(), exc_info=exc)
    return f"watch stream lost: {type(exc).__name__}: {exc}"
