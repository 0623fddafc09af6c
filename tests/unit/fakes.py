"""In-memory test doubles for kine, implementing the same Protocols as the real layers.

``FakeBackend`` is a small but honest ``types.Backend``: an event log with one
revision per write, reads at past revisions, compaction, watches fed synchronously
on every write, and leases without expiry. ``fail_with`` makes the next store call
raise, to drive error paths without patching anything.

``EtcdClient`` is the other side: a thin grpc.aio client that speaks etcd's wire
method names with kine's generated messages, for tests that start a server.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools

import grpc
import grpc.aio

from services.kine import settings as kine_settings
from services.kine import types
from services.kine.proto import rpc_pb2
from services.kine.server import server

# Seconds a test waits for any one response.
RPC_TIMEOUT = 5.0

# -- backend ----------------------------------------------------------------------------


def in_range(key: bytes, start: bytes, end: bytes) -> bool:
    if not end:
        return key == start
    if end == b"\0":
        return key >= start
    return start <= key < end


class FakeWatch:
    def __init__(self, backend: FakeBackend, key: bytes, range_end: bytes) -> None:
        self.key, self.range_end = key, range_end
        self._backend = backend
        self._batches: collections.deque[list[types.Event]] = collections.deque()
        self._ready = asyncio.Event()
        self._closed: str | None = None
        self.closed = False

    def deliver(self, events: list[types.Event]) -> None:
        events = [e for e in events if in_range(e.kv.key, self.key, self.range_end)]
        if events:
            self._batches.append(events)
            self._ready.set()

    def end(self, reason: str) -> None:
        """The store ends this watch; the next next_batch raises WatchClosedError(reason)."""
        self._closed = reason
        self._ready.set()

    async def next_batch(self) -> list[types.Event]:
        while not self._batches:
            if self._closed is not None:
                raise types.WatchClosedError(self._closed)
            self._ready.clear()
            await self._ready.wait()
        events: list[types.Event] = []
        while self._batches:
            events.extend(self._batches.popleft())
        return events

    def pending(self) -> bool:
        return bool(self._batches)

    def close(self) -> None:
        self.closed = True
        self._backend.watches.discard(self)


class FakeBackend:
    """A ``types.Backend`` over dicts and a list; every write is its own revision."""

    def __init__(self) -> None:
        self.revision = 0
        self.compacted = 0
        self.log: list[types.Event] = []  # every event, in revision order
        self.live: dict[bytes, types.KeyValue] = {}
        self.leases: dict[int, types.LeaseInfo] = {}
        self.watches: set[FakeWatch] = set()
        self.fail_with: BaseException | None = None
        self.started = False
        self._lease_ids = itertools.count(0x1000)

    def _check(self) -> None:
        if self.fail_with is not None:
            exc, self.fail_with = self.fail_with, None
            raise exc

    # lifecycle
    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False

    # reads
    async def current_revision(self) -> int:
        self._check()
        return self.revision

    async def compact_revision(self) -> int:
        self._check()
        return self.compacted

    def _state_at(self, revision: int) -> dict[bytes, types.KeyValue]:
        if revision in (0, self.revision):
            return self.live
        if revision > self.revision:
            raise types.FutureRevisionError()
        if revision < self.compacted:
            raise types.CompactedError(self.compacted, self.revision)
        state: dict[bytes, types.KeyValue] = {}
        for event in self.log:
            if event.kv.mod_revision > revision:
                break
            if event.type is types.EventType.PUT:
                state[event.kv.key] = event.kv
            else:
                state.pop(event.kv.key, None)
        return state

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
        self._check()
        state = self._state_at(revision)
        kvs = sorted((kv for k, kv in state.items() if in_range(k, key, range_end)), key=lambda kv: kv.key)
        count = len(kvs)
        more = bool(limit) and count > limit
        kvs = [] if count_only else kvs[:limit] if limit else kvs
        if keys_only:
            kvs = [
                types.KeyValue(kv.key, b"", kv.create_revision, kv.mod_revision, kv.version, kv.lease)
                for kv in kvs
            ]
        return types.RangeResult(revision=revision or self.revision, kvs=kvs, count=count, more=more)

    # writes
    def _append(self, event: types.Event) -> None:
        self.log.append(event)
        for watch in list(self.watches):
            watch.deliver([event])

    def _put(self, key: bytes, value: bytes, lease: int) -> types.PutResult:
        if lease and lease not in self.leases:
            raise types.LeaseNotFoundError()
        self.revision += 1
        prev = self.live.get(key)
        kv = types.KeyValue(
            key=key,
            value=value,
            create_revision=prev.create_revision if prev else self.revision,
            mod_revision=self.revision,
            version=prev.version + 1 if prev else 1,
            lease=lease,
        )
        self.live[key] = kv
        self._append(types.Event(types.EventType.PUT, kv, prev))
        return types.PutResult(revision=self.revision, prev_kv=prev)

    def _delete(self, key: bytes, range_end: bytes) -> types.DeleteResult:
        doomed = sorted(
            (kv for k, kv in self.live.items() if in_range(k, key, range_end)), key=lambda kv: kv.key
        )
        for prev in doomed:
            self.revision += 1
            del self.live[prev.key]
            tombstone = types.KeyValue(prev.key, b"", 0, self.revision, 0, 0)
            self._append(types.Event(types.EventType.DELETE, tombstone, prev))
        return types.DeleteResult(revision=self.revision, deleted=len(doomed), prev_kvs=doomed)

    async def put(
        self, key: bytes, value: bytes, *, lease: int = 0, prev_kv: bool = False
    ) -> types.PutResult:
        self._check()
        return self._put(key, value, lease)

    async def delete_range(
        self, key: bytes, range_end: bytes = b"", *, prev_kv: bool = False
    ) -> types.DeleteResult:
        self._check()
        return self._delete(key, range_end)

    def _compare(self, compare: types.Compare) -> bool:
        kv = self.live.get(compare.key)
        actual: int | bytes = {
            "version": kv.version if kv else 0,
            "create": kv.create_revision if kv else 0,
            "mod": kv.mod_revision if kv else 0,
            "value": kv.value if kv else b"",
            "lease": kv.lease if kv else 0,
        }[compare.target]
        if compare.target == "value" and kv is None:
            return False
        return {
            "=": actual == compare.value,
            "!=": actual != compare.value,
            "<": actual < compare.value,  # type: ignore[operator]
            ">": actual > compare.value,  # type: ignore[operator]
        }[compare.result]

    async def txn(self, txn: types.Txn) -> types.TxnResult:
        self._check()
        succeeded = all(self._compare(c) for c in txn.compare)
        responses: list[types.OpResult] = []
        for op in txn.success if succeeded else txn.failure:
            if isinstance(op, types.RangeOp):
                responses.append(
                    await self.range(
                        op.key, op.range_end, limit=op.limit, keys_only=op.keys_only, count_only=op.count_only
                    )
                )
            elif isinstance(op, types.PutOp):
                responses.append(self._put(op.key, op.value, op.lease))
            else:
                responses.append(self._delete(op.key, op.range_end))
        return types.TxnResult(revision=self.revision, succeeded=succeeded, responses=responses)

    async def compact(self, revision: int) -> int:
        self._check()
        if revision > self.revision:
            raise types.FutureRevisionError()
        if revision <= self.compacted:
            raise types.CompactedError(self.compacted, self.revision)
        self.compacted = revision
        return revision

    # watches
    async def watch(self, key: bytes, range_end: bytes = b"", *, start_revision: int = 0) -> FakeWatch:
        self._check()
        if start_revision and start_revision < self.compacted:
            raise types.CompactedError(self.compacted, self.revision)
        watch = FakeWatch(self, key, range_end)
        if start_revision:
            watch.deliver([e for e in self.log if e.kv.mod_revision >= start_revision])
        self.watches.add(watch)
        return watch

    async def synced_revision(self) -> int:
        # Events are delivered inside the write itself, so every write is synced.
        self._check()
        return self.revision

    async def db_size(self) -> int:
        self._check()
        return 4096 + sum(len(kv.key) + len(kv.value) for kv in self.live.values())

    # leases
    async def lease_grant(self, ttl: int, *, lease_id: int = 0) -> types.LeaseInfo:
        self._check()
        if lease_id in self.leases:
            raise types.LeaseExistsError()
        lease_id = lease_id or next(self._lease_ids)
        self.leases[lease_id] = types.LeaseInfo(id=lease_id, ttl=ttl, granted_ttl=ttl)
        return self.leases[lease_id]

    def _lease(self, lease_id: int) -> types.LeaseInfo:
        if lease_id not in self.leases:
            raise types.LeaseNotFoundError()
        return self.leases[lease_id]

    async def lease_revoke(self, lease_id: int) -> int:
        self._check()
        self._lease(lease_id)
        del self.leases[lease_id]
        for key in [k for k, kv in self.live.items() if kv.lease == lease_id]:
            self._delete(key, b"")
        return self.revision

    async def lease_keepalive(self, lease_id: int) -> types.LeaseInfo:
        self._check()
        return self._lease(lease_id)

    async def lease_time_to_live(self, lease_id: int, *, keys: bool = False) -> types.LeaseInfo:
        self._check()
        info = self._lease(lease_id)
        attached = sorted(k for k, kv in self.live.items() if kv.lease == lease_id) if keys else []
        return types.LeaseInfo(id=info.id, ttl=info.ttl, granted_ttl=info.granted_ttl, keys=attached)

    async def lease_list(self) -> list[int]:
        self._check()
        return sorted(self.leases)


# -- client -------------------------------------------------------------------------------


class EtcdClient:
    """Calls etcd's wire methods (``/etcdserverpb.KV/Range``...) with kine's generated messages."""

    _UNARY = {
        "KV": {
            "Range": rpc_pb2.RangeResponse,
            "Put": rpc_pb2.PutResponse,
            "DeleteRange": rpc_pb2.DeleteRangeResponse,
            "Txn": rpc_pb2.TxnResponse,
            "Compact": rpc_pb2.CompactionResponse,
        },
        "Lease": {
            "LeaseGrant": rpc_pb2.LeaseGrantResponse,
            "LeaseRevoke": rpc_pb2.LeaseRevokeResponse,
            "LeaseTimeToLive": rpc_pb2.LeaseTimeToLiveResponse,
            "LeaseLeases": rpc_pb2.LeaseLeasesResponse,
        },
        "Maintenance": {
            "Status": rpc_pb2.StatusResponse,
            "Alarm": rpc_pb2.AlarmResponse,
            "Defragment": rpc_pb2.DefragmentResponse,
            "Hash": rpc_pb2.HashResponse,
            "HashKV": rpc_pb2.HashKVResponse,
            "MoveLeader": rpc_pb2.MoveLeaderResponse,
            "Downgrade": rpc_pb2.DowngradeResponse,
        },
        "Cluster": {
            "MemberList": rpc_pb2.MemberListResponse,
            "MemberAdd": rpc_pb2.MemberAddResponse,
            "MemberRemove": rpc_pb2.MemberRemoveResponse,
            "MemberUpdate": rpc_pb2.MemberUpdateResponse,
            "MemberPromote": rpc_pb2.MemberPromoteResponse,
        },
    }

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel

    async def call(self, service: str, method: str, request):
        response_type = self._UNARY[service][method]
        rpc = self.channel.unary_unary(
            f"/etcdserverpb.{service}/{method}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=response_type.FromString,
        )
        return await rpc(request, timeout=RPC_TIMEOUT)

    def watch(self) -> grpc.aio.StreamStreamCall:
        rpc = self.channel.stream_stream(
            "/etcdserverpb.Watch/Watch",
            request_serializer=rpc_pb2.WatchRequest.SerializeToString,
            response_deserializer=rpc_pb2.WatchResponse.FromString,
        )
        return rpc()

    def keep_alive(self) -> grpc.aio.StreamStreamCall:
        rpc = self.channel.stream_stream(
            "/etcdserverpb.Lease/LeaseKeepAlive",
            request_serializer=rpc_pb2.LeaseKeepAliveRequest.SerializeToString,
            response_deserializer=rpc_pb2.LeaseKeepAliveResponse.FromString,
        )
        return rpc()

    def snapshot(self) -> grpc.aio.UnaryStreamCall:
        rpc = self.channel.unary_stream(
            "/etcdserverpb.Maintenance/Snapshot",
            request_serializer=rpc_pb2.SnapshotRequest.SerializeToString,
            response_deserializer=rpc_pb2.SnapshotResponse.FromString,
        )
        return rpc(rpc_pb2.SnapshotRequest())


async def read(call: grpc.aio.StreamStreamCall):
    """The next message of a stream call; a test never waits for one longer than RPC_TIMEOUT."""
    async with asyncio.timeout(RPC_TIMEOUT):
        return await call.read()


@contextlib.asynccontextmanager
async def serving(backend: types.Backend, settings: kine_settings.KineSettings):
    """A started GrpcServer on ``settings`` and an ``EtcdClient`` connected to it; both closed after."""
    async with server.GrpcServer(backend, settings) as grpc_server:
        async with grpc.aio.insecure_channel(grpc_server.address) as channel:
            yield grpc_server, EtcdClient(channel)


async def eventually(predicate, *, interval: float = 0.01) -> None:
    """Wait until ``predicate()`` holds, for at most RPC_TIMEOUT seconds."""
    for _ in range(int(RPC_TIMEOUT / interval)):
        if predicate():
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"condition never held: {predicate}")
