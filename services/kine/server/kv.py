"""etcd's KV service: Range, Put, DeleteRange, Txn and Compact over a ``types.Backend``.

Only validation and translation happen here. Request shapes the store cannot
honour are named in the error: outside a transaction they are UNIMPLEMENTED, inside
one INVALID_ARGUMENT (kine's convention, which kube-apiserver and etcdctl report
verbatim). ``serializable`` is accepted as a no-op: every read is served from the
one datastore, so there is no stale follower to read from.
"""

from __future__ import annotations

import logging

from services.kine import types
from services.kine.proto import rpc_pb2
from services.kine.server import convert, errors

logger = logging.getLogger(__name__)

# etcd's --max-txn-ops default.
MAX_TXN_OPS = 128

_SORT_ORDERS = rpc_pb2.RangeRequest.SortOrder
_SORT_TARGETS = rpc_pb2.RangeRequest.SortTarget
# Plain ints: the enum wrappers' attribute lookups are Python calls, on every Range.
_SORT_KEY = _SORT_TARGETS.KEY
_SORT_ANY_ORDER = frozenset((_SORT_ORDERS.NONE, _SORT_ORDERS.ASCEND))
_REVISION_FILTERS = ("min_mod_revision", "max_mod_revision", "min_create_revision", "max_create_revision")

# Compare.target -> (types.CompareTarget, the target_union field etcd reads for it).
_COMPARE_TARGETS: dict[int, tuple[types.CompareTarget, str]] = {
    rpc_pb2.Compare.VERSION: ("version", "version"),
    rpc_pb2.Compare.CREATE: ("create", "create_revision"),
    rpc_pb2.Compare.MOD: ("mod", "mod_revision"),
    rpc_pb2.Compare.VALUE: ("value", "value"),
    rpc_pb2.Compare.LEASE: ("lease", "lease"),
}
_COMPARE_RESULTS: dict[int, types.CompareResult] = {
    rpc_pb2.Compare.EQUAL: "=",
    rpc_pb2.Compare.NOT_EQUAL: "!=",
    rpc_pb2.Compare.LESS: "<",
    rpc_pb2.Compare.GREATER: ">",
}


def _enum_name(enum: object, number: int) -> str:
    try:
        return enum.Name(number)  # type: ignore[attr-defined]
    except ValueError:
        return str(number)


def check_range(request: rpc_pb2.RangeRequest, *, error: type[errors.RequestError]) -> None:
    """Reject what the store cannot do; the backend returns keys in ascending key order."""
    if not request.key:
        raise errors.InvalidArgument(errors.EMPTY_KEY)
    if request.sort_target != _SORT_KEY:
        raise error(
            f"kine: range sort_target {_enum_name(_SORT_TARGETS, request.sort_target)} is not supported"
        )
    if request.sort_order not in _SORT_ANY_ORDER:
        raise error(f"kine: range sort_order {_enum_name(_SORT_ORDERS, request.sort_order)} is not supported")
    for field in _REVISION_FILTERS:
        if getattr(request, field):
            raise error(f"kine: range {field} is not supported")


def check_put(request: rpc_pb2.PutRequest, *, error: type[errors.RequestError]) -> None:
    if not request.key:
        raise errors.InvalidArgument(errors.EMPTY_KEY)
    if request.ignore_value:  # spelled out, not a loop over names: every write passes here
        raise error("kine: put ignore_value is not supported")
    if request.ignore_lease:
        raise error("kine: put ignore_lease is not supported")


def check_delete(request: rpc_pb2.DeleteRangeRequest) -> None:
    if not request.key:
        raise errors.InvalidArgument(errors.EMPTY_KEY)


def compare_from_pb(compare: rpc_pb2.Compare) -> types.Compare:
    if compare.range_end:
        raise errors.InvalidArgument("kine: unsupported in txn: compare with a range_end")
    if not compare.key:
        raise errors.InvalidArgument(errors.EMPTY_KEY)
    if compare.target not in _COMPARE_TARGETS or compare.result not in _COMPARE_RESULTS:
        raise errors.InvalidArgument(f"kine: unsupported in txn: compare {compare.target}/{compare.result}")
    target, field = _COMPARE_TARGETS[compare.target]
    # etcd reads the union member named by the target; another member set reads as zero.
    # Positional arguments: a frozen dataclass's keyword call costs more, on every write.
    return types.Compare(compare.key, target, _COMPARE_RESULTS[compare.result], getattr(compare, field))


def op_from_pb(op: rpc_pb2.RequestOp) -> types.Op:
    kind = op.WhichOneof("request")
    if kind == "request_put":  # the common case first: every create and update
        put = op.request_put
        check_put(put, error=errors.InvalidArgument)
        return types.PutOp(put.key, put.value, put.lease, put.prev_kv)
    if kind == "request_range":
        request = op.request_range
        check_range(request, error=errors.InvalidArgument)
        if request.revision > 0:
            raise errors.InvalidArgument("kine: unsupported in txn: range at a revision")
        return types.RangeOp(
            key=request.key,
            range_end=request.range_end,
            limit=max(request.limit, 0),
            keys_only=request.keys_only,
            count_only=request.count_only,
        )
    if kind == "request_delete_range":
        check_delete(op.request_delete_range)
        delete = op.request_delete_range
        return types.DeleteOp(key=delete.key, range_end=delete.range_end, prev_kv=delete.prev_kv)
    if kind == "request_txn":
        raise errors.InvalidArgument("kine: unsupported in txn: nested txn")
    raise errors.InvalidArgument("kine: unsupported in txn: empty request op")


def txn_from_pb(request: rpc_pb2.TxnRequest) -> types.Txn:
    if max(len(request.compare), len(request.success), len(request.failure)) > MAX_TXN_OPS:
        raise errors.InvalidArgument(errors.TOO_MANY_OPS)
    return types.Txn(
        [compare_from_pb(c) for c in request.compare],
        [op_from_pb(op) for op in request.success],
        [op_from_pb(op) for op in request.failure],
    )


def fill_op_result(
    pb: rpc_pb2.ResponseOp, op: types.Op, result: types.OpResult, identity: convert.Identity
) -> None:
    if isinstance(result, types.RangeResult):
        convert.fill_range(pb.response_range, result, identity)
    elif isinstance(result, types.PutResult):
        prev_kv = isinstance(op, types.PutOp) and op.prev_kv
        convert.fill_put(pb.response_put, result, identity, prev_kv=prev_kv)
    else:
        prev_kv = isinstance(op, types.DeleteOp) and op.prev_kv
        convert.fill_delete(pb.response_delete_range, result, identity, prev_kv=prev_kv)


class KVService:
    """Handlers for ``etcdserverpb.KV``; each takes the request message and returns the response."""

    def __init__(self, backend: types.Backend, *, identity: convert.Identity) -> None:
        self._backend = backend
        self._identity = identity

    async def range(self, request: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        check_range(request, error=errors.Unimplemented)
        result = await self._backend.range(
            request.key,
            request.range_end,
            revision=max(request.revision, 0),
            limit=max(request.limit, 0),
            keys_only=request.keys_only,
            count_only=request.count_only,
        )
        logger.debug(
            "RANGE %r..%r rev=%d => rev=%d count=%d", request.key, request.range_end, request.revision,
            result.revision, result.count,
        )  # fmt: skip
        return convert.range_to_pb(result, self._identity)

    async def put(self, request: rpc_pb2.PutRequest) -> rpc_pb2.PutResponse:
        check_put(request, error=errors.Unimplemented)
        result = await self._backend.put(
            request.key, request.value, lease=request.lease, prev_kv=request.prev_kv
        )
        logger.debug("PUT %r lease=%d => rev=%d", request.key, request.lease, result.revision)
        return convert.put_to_pb(result, self._identity, prev_kv=request.prev_kv)

    async def delete_range(self, request: rpc_pb2.DeleteRangeRequest) -> rpc_pb2.DeleteRangeResponse:
        check_delete(request)
        result = await self._backend.delete_range(request.key, request.range_end, prev_kv=request.prev_kv)
        logger.debug(
            "DELETE %r..%r => rev=%d deleted=%d",
            request.key,
            request.range_end,
            result.revision,
            result.deleted,
        )
        return convert.delete_to_pb(result, self._identity, prev_kv=request.prev_kv)

    async def txn(self, request: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        txn = txn_from_pb(request)
        result = await self._backend.txn(txn)
        ops = txn.success if result.succeeded else txn.failure
        logger.debug(
            "TXN compares=%d => rev=%d succeeded=%s", len(txn.compare), result.revision, result.succeeded
        )
        response = rpc_pb2.TxnResponse()
        self._identity.fill_header(response.header, result.revision)
        if result.succeeded:
            response.succeeded = True
        add = response.responses.add
        for op, res in zip(ops, result.responses, strict=True):
            fill_op_result(add(), op, res, self._identity)
        return response

    async def compact(self, request: rpc_pb2.CompactionRequest) -> rpc_pb2.CompactionResponse:
        compacted = await self._backend.compact(request.revision)
        revision = await self._backend.current_revision()
        logger.debug("COMPACT rev=%d => compact=%d rev=%d", request.revision, compacted, revision)
        return rpc_pb2.CompactionResponse(header=self._identity.header(revision))
