"""A small async etcd v3 client over grpc.aio, built on kine's generated messages.

The benchmark drives kine and a real etcd with this one client, so both sides pay
the same client cost; the durability tests use it to record acknowledged writes.

kine's generated modules use the ``kine.*`` proto packages (so they can share a
process with a client library's copy of etcd's protos), while the wire carries
etcd's service names. There are no generated stubs: each RPC is bound once, by
its explicit path (``/etcdserverpb.KV/Range``), with the message classes'
serializers. Transactions come in the two shapes kube-apiserver sends: create
(compare mod == 0, put) and compare-and-swap (compare mod == X, put; get on failure).

gRPC errors are translated at this boundary into ``EtcdError``, carrying the
status code name and etcd's message (``etcdserver: mvcc: ...``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import grpc
import grpc.aio

from services.kine.proto import kv_pb2, rpc_pb2

CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
)


class EtcdError(Exception):
    """An RPC failed; ``code`` is the gRPC status name, the message is the server's."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class WatchCanceled(EtcdError):
    """The server cancelled a watch (for example, its start revision was compacted)."""

    def __init__(self, reason: str, *, compact_revision: int = 0) -> None:
        super().__init__("CANCELED", reason)
        self.compact_revision = compact_revision


@dataclasses.dataclass(frozen=True, slots=True)
class TxnOutcome:
    succeeded: bool
    revision: int  # the header revision: the written revision when it succeeded
    current: kv_pb2.KeyValue | None = None  # the key's current value after a failed compare


def prefix_end(prefix: bytes) -> bytes:
    """etcd's range end for "every key starting with prefix"."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\x00"  # every key


def _translate(exc: grpc.aio.AioRpcError) -> EtcdError:
    return EtcdError(exc.code().name, exc.details() or "")


class EtcdClient:
    """``async with EtcdClient("127.0.0.1:2379") as client: await client.put(b"k", b"v")``."""

    def __init__(self, target: str, *, timeout: float | None = 30.0) -> None:
        self.target = target
        self.timeout = timeout
        self._channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        self._range = self._unary("KV", "Range", rpc_pb2.RangeRequest, rpc_pb2.RangeResponse)
        self._put = self._unary("KV", "Put", rpc_pb2.PutRequest, rpc_pb2.PutResponse)
        self._delete = self._unary(
            "KV", "DeleteRange", rpc_pb2.DeleteRangeRequest, rpc_pb2.DeleteRangeResponse
        )
        self._txn = self._unary("KV", "Txn", rpc_pb2.TxnRequest, rpc_pb2.TxnResponse)
        self._status = self._unary("Maintenance", "Status", rpc_pb2.StatusRequest, rpc_pb2.StatusResponse)
        self._watch = self._channel.stream_stream(
            "/etcdserverpb.Watch/Watch",
            request_serializer=rpc_pb2.WatchRequest.SerializeToString,
            response_deserializer=rpc_pb2.WatchResponse.FromString,
        )

    def _unary(
        self, service: str, method: str, request: Any, response: Any
    ) -> grpc.aio.UnaryUnaryMultiCallable:
        return self._channel.unary_unary(
            f"/etcdserverpb.{service}/{method}",
            request_serializer=request.SerializeToString,
            response_deserializer=response.FromString,
        )

    async def _call(self, rpc: grpc.aio.UnaryUnaryMultiCallable, request: Any) -> Any:
        try:
            return await rpc(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc) from exc

    async def __aenter__(self) -> EtcdClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    # -- KV ----------------------------------------------------------------------------------

    async def range(
        self,
        key: bytes,
        range_end: bytes = b"",
        *,
        limit: int = 0,
        revision: int = 0,
        keys_only: bool = False,
        count_only: bool = False,
    ) -> rpc_pb2.RangeResponse:
        request = rpc_pb2.RangeRequest(
            key=key,
            range_end=range_end,
            limit=limit,
            revision=revision,
            keys_only=keys_only,
            count_only=count_only,
        )
        return await self._call(self._range, request)

    async def prefix(self, prefix: bytes, **options: Any) -> rpc_pb2.RangeResponse:
        return await self.range(prefix, prefix_end(prefix), **options)

    async def get(self, key: bytes, *, revision: int = 0) -> kv_pb2.KeyValue | None:
        response = await self.range(key, revision=revision)
        return response.kvs[0] if response.kvs else None

    async def put(
        self, key: bytes, value: bytes, *, lease: int = 0, prev_kv: bool = False
    ) -> rpc_pb2.PutResponse:
        return await self._call(
            self._put, rpc_pb2.PutRequest(key=key, value=value, lease=lease, prev_kv=prev_kv)
        )

    async def delete(
        self, key: bytes, range_end: bytes = b"", *, prev_kv: bool = False
    ) -> rpc_pb2.DeleteRangeResponse:
        request = rpc_pb2.DeleteRangeRequest(key=key, range_end=range_end, prev_kv=prev_kv)
        return await self._call(self._delete, request)

    async def txn(self, request: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        return await self._call(self._txn, request)

    async def create(self, key: bytes, value: bytes, *, lease: int = 0) -> TxnOutcome:
        """kube-apiserver's create: succeeds only if the key does not exist."""
        request = rpc_pb2.TxnRequest(
            compare=[_mod_equal(key, 0)],
            success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value, lease=lease))],
        )
        response = await self.txn(request)
        return TxnOutcome(response.succeeded, response.header.revision)

    async def update(self, key: bytes, value: bytes, *, mod_revision: int, lease: int = 0) -> TxnOutcome:
        """kube-apiserver's compare-and-swap: put if the key is still at ``mod_revision``, else get it."""
        request = rpc_pb2.TxnRequest(
            compare=[_mod_equal(key, mod_revision)],
            success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value, lease=lease))],
            failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key))],
        )
        response = await self.txn(request)
        current = None
        if not response.succeeded and response.responses:
            kvs = response.responses[0].response_range.kvs
            current = kvs[0] if kvs else None
        return TxnOutcome(response.succeeded, response.header.revision, current)

    # -- Maintenance and Watch -----------------------------------------------------------------

    async def status(self) -> rpc_pb2.StatusResponse:
        return await self._call(self._status, rpc_pb2.StatusRequest())

    def watch(
        self,
        key: bytes,
        range_end: bytes = b"",
        *,
        start_revision: int = 0,
        prev_kv: bool = False,
        progress_notify: bool = False,
    ) -> Watch:
        """A watch on ``[key, range_end)``; use as ``async with client.watch(...) as w: async for ev in w``."""
        create = rpc_pb2.WatchCreateRequest(
            key=key,
            range_end=range_end,
            start_revision=start_revision,
            prev_kv=prev_kv,
            progress_notify=progress_notify,
        )
        return Watch(self._watch, create)


def _mod_equal(key: bytes, revision: int) -> rpc_pb2.Compare:
    return rpc_pb2.Compare(
        key=key, target=rpc_pb2.Compare.MOD, result=rpc_pb2.Compare.EQUAL, mod_revision=revision
    )


class Watch:
    """One watch on its own stream. Entering returns once the server has created it."""

    def __init__(self, rpc: grpc.aio.StreamStreamMultiCallable, create: rpc_pb2.WatchCreateRequest) -> None:
        self._rpc = rpc
        self._create = create
        self._call: grpc.aio.StreamStreamCall | None = None
        self.watch_id = 0
        self.created_revision = 0  # the header revision of the created response

    async def __aenter__(self) -> Watch:
        # The stream itself has no deadline: a watch lives as long as its user wants.
        self._call = self._rpc()
        try:
            await self._call.write(rpc_pb2.WatchRequest(create_request=self._create))
            response = await self._read()
        except BaseException:
            self._call.cancel()
            raise
        if response is None or not response.created:
            self._call.cancel()
            raise EtcdError("UNKNOWN", f"watch not created: {response}")
        self.watch_id = response.watch_id
        self.created_revision = response.header.revision
        if response.canceled:
            self._call.cancel()
            raise WatchCanceled(response.cancel_reason, compact_revision=response.compact_revision)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._call is not None:
            self._call.cancel()

    async def _read(self) -> rpc_pb2.WatchResponse | None:
        assert self._call is not None, "enter the watch first"
        try:
            response = await self._call.read()
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc) from exc
        return None if response is grpc.aio.EOF else response

    async def responses(self) -> AsyncIterator[rpc_pb2.WatchResponse]:
        """Every response after the created one, progress notifications included."""
        while (response := await self._read()) is not None:
            if response.canceled:
                raise WatchCanceled(response.cancel_reason, compact_revision=response.compact_revision)
            yield response

    async def __aiter__(self) -> AsyncIterator[kv_pb2.Event]:
        async for response in self.responses():
            for event in response.events:
                yield event
