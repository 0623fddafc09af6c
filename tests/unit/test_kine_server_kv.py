"""KV over gRPC: Range, Put, DeleteRange, Txn and Compact translation, and error codes."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest

from services.kine import settings as kine_settings
from services.kine import types
from services.kine.proto import rpc_pb2
from tests.unit import fakes

Range = rpc_pb2.RangeRequest
Put = rpc_pb2.PutRequest
Compare = rpc_pb2.Compare
Op = rpc_pb2.RequestOp


@pytest.fixture
def backend() -> fakes.FakeBackend:
    return fakes.FakeBackend()


@pytest.fixture
async def etcd(backend, tmp_path):
    settings = kine_settings.KineSettings(data_dir=tmp_path, listen_address="127.0.0.1:0")
    async with fakes.serving(backend, settings) as (_, client):
        yield client


async def put(etcd: fakes.EtcdClient, key: bytes, value: bytes, **fields) -> rpc_pb2.PutResponse:
    return await etcd.call("KV", "Put", Put(key=key, value=value, **fields))


async def expect_error(call, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    return info.value.details()


# -- Range ----------------------------------------------------------------------------------


async def test_put_then_get_single_key(etcd):
    written = await put(etcd, b"/registry/pods/default/a", b"v1")
    assert written.header.revision == 1
    assert written.header.raft_term == 1
    assert written.header.cluster_id and written.header.member_id

    got = await etcd.call("KV", "Range", Range(key=b"/registry/pods/default/a"))
    assert got.count == 1 and not got.more
    assert got.kvs[0].value == b"v1"
    assert (got.kvs[0].create_revision, got.kvs[0].mod_revision, got.kvs[0].version) == (1, 1, 1)
    assert got.header.revision == 1


async def test_range_prefix_limit_and_count(etcd):
    for name in (b"a", b"b", b"c"):
        await put(etcd, b"/p/" + name, name)
    await put(etcd, b"/q", b"x")

    page = await etcd.call("KV", "Range", Range(key=b"/p/", range_end=b"/p0", limit=2))
    assert [kv.key for kv in page.kvs] == [b"/p/a", b"/p/b"]
    assert page.more and page.count == 3

    counted = await etcd.call("KV", "Range", Range(key=b"/p/", range_end=b"/p0", count_only=True))
    assert counted.count == 3 and not counted.kvs

    keys = await etcd.call("KV", "Range", Range(key=b"/p/", range_end=b"/p0", keys_only=True))
    assert [kv.value for kv in keys.kvs] == [b"", b"", b""]

    everything = await etcd.call("KV", "Range", Range(key=b"\0", range_end=b"\0"))
    assert everything.count == 4


async def test_range_ascend_by_key_and_serializable_are_accepted(etcd):
    await put(etcd, b"k", b"v")
    request = Range(
        key=b"k", range_end=b"l", sort_order=Range.ASCEND, sort_target=Range.KEY, serializable=True
    )
    assert (await etcd.call("KV", "Range", request)).count == 1


async def test_range_at_past_revision(etcd):
    await put(etcd, b"k", b"old")
    await put(etcd, b"k", b"new")
    past = await etcd.call("KV", "Range", Range(key=b"k", revision=1))
    assert past.kvs[0].value == b"old"
    assert past.header.revision == 1


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"sort_order": Range.DESCEND}, "sort_order DESCEND"),
        ({"sort_target": Range.MOD}, "sort_target MOD"),
        ({"min_mod_revision": 3}, "min_mod_revision"),
        ({"max_create_revision": 3}, "max_create_revision"),
    ],
)
async def test_range_unsupported_options_name_the_field(etcd, fields, named):
    details = await expect_error(
        etcd.call("KV", "Range", Range(key=b"k", range_end=b"l", **fields)), grpc.StatusCode.UNIMPLEMENTED
    )
    assert named in details


async def test_empty_key_is_invalid(etcd):
    details = await expect_error(etcd.call("KV", "Range", Range()), grpc.StatusCode.INVALID_ARGUMENT)
    assert details == "etcdserver: key is not provided"


async def test_future_and_compacted_revisions_are_out_of_range(etcd, backend):
    await put(etcd, b"k", b"1")
    await put(etcd, b"k", b"2")
    details = await expect_error(
        etcd.call("KV", "Range", Range(key=b"k", revision=9)), grpc.StatusCode.OUT_OF_RANGE
    )
    assert details == "etcdserver: mvcc: required revision is a future revision"

    await etcd.call("KV", "Compact", rpc_pb2.CompactionRequest(revision=2))
    details = await expect_error(
        etcd.call("KV", "Range", Range(key=b"k", revision=1)), grpc.StatusCode.OUT_OF_RANGE
    )
    assert details == "etcdserver: mvcc: required revision has been compacted"


# -- Put / DeleteRange --------------------------------------------------------------------


async def test_put_prev_kv_only_when_asked(etcd):
    await put(etcd, b"k", b"1")
    plain = await put(etcd, b"k", b"2")
    assert not plain.HasField("prev_kv")
    with_prev = await put(etcd, b"k", b"3", prev_kv=True)
    assert with_prev.prev_kv.value == b"2"


@pytest.mark.parametrize("flag", ["ignore_value", "ignore_lease"])
async def test_put_ignore_flags_are_unimplemented(etcd, flag):
    details = await expect_error(put(etcd, b"k", b"", **{flag: True}), grpc.StatusCode.UNIMPLEMENTED)
    assert flag in details


async def test_put_with_unknown_lease_is_not_found(etcd):
    details = await expect_error(put(etcd, b"k", b"v", lease=42), grpc.StatusCode.NOT_FOUND)
    assert details == "etcdserver: requested lease not found"


async def test_delete_range_prefix_with_prev_kv(etcd):
    for key in (b"/d/1", b"/d/2", b"/e"):
        await put(etcd, key, key)
    request = rpc_pb2.DeleteRangeRequest(key=b"/d/", range_end=b"/d0", prev_kv=True)
    deleted = await etcd.call("KV", "DeleteRange", request)
    assert deleted.deleted == 2
    assert [kv.key for kv in deleted.prev_kvs] == [b"/d/1", b"/d/2"]
    assert deleted.header.revision == 5

    quiet = await etcd.call("KV", "DeleteRange", rpc_pb2.DeleteRangeRequest(key=b"/e"))
    assert quiet.deleted == 1 and not quiet.prev_kvs


# -- Txn --------------------------------------------------------------------------------


def create_txn(key: bytes, value: bytes) -> rpc_pb2.TxnRequest:
    """kube-apiserver's create: succeed only if the key has never been written (mod == 0)."""
    return rpc_pb2.TxnRequest(
        compare=[Compare(key=key, target=Compare.MOD, result=Compare.EQUAL, mod_revision=0)],
        success=[Op(request_put=Put(key=key, value=value))],
    )


def update_txn(key: bytes, value: bytes, revision: int) -> rpc_pb2.TxnRequest:
    """kube-apiserver's GuaranteedUpdate: put if unchanged, else read the current value."""
    return rpc_pb2.TxnRequest(
        compare=[Compare(key=key, target=Compare.MOD, result=Compare.EQUAL, mod_revision=revision)],
        success=[Op(request_put=Put(key=key, value=value, prev_kv=True))],
        failure=[Op(request_range=Range(key=key))],
    )


async def test_txn_create_then_conflict(etcd):
    created = await etcd.call("KV", "Txn", create_txn(b"/registry/x", b"1"))
    assert created.succeeded
    assert created.header.revision == 1
    assert created.responses[0].WhichOneof("response") == "response_put"

    again = await etcd.call("KV", "Txn", create_txn(b"/registry/x", b"2"))
    assert not again.succeeded and not again.responses


async def test_txn_update_success_and_failure(etcd):
    await put(etcd, b"k", b"1")
    updated = await etcd.call("KV", "Txn", update_txn(b"k", b"2", revision=1))
    assert updated.succeeded
    assert updated.responses[0].response_put.prev_kv.value == b"1"
    assert updated.header.revision == 2

    stale = await etcd.call("KV", "Txn", update_txn(b"k", b"3", revision=1))
    assert not stale.succeeded
    current = stale.responses[0].response_range
    assert current.kvs[0].value == b"2" and current.count == 1


async def test_txn_compares_on_value_version_and_create(etcd):
    await put(etcd, b"k", b"abc")
    request = rpc_pb2.TxnRequest(
        compare=[
            Compare(key=b"k", target=Compare.VALUE, result=Compare.EQUAL, value=b"abc"),
            Compare(key=b"k", target=Compare.VERSION, result=Compare.GREATER, version=0),
            Compare(key=b"k", target=Compare.CREATE, result=Compare.LESS, create_revision=5),
            Compare(key=b"k", target=Compare.LEASE, result=Compare.NOT_EQUAL, lease=7),
        ],
        success=[Op(request_delete_range=rpc_pb2.DeleteRangeRequest(key=b"k", prev_kv=True))],
    )
    result = await etcd.call("KV", "Txn", request)
    assert result.succeeded
    assert result.responses[0].response_delete_range.prev_kvs[0].value == b"abc"


@pytest.mark.parametrize(
    ("request_", "named"),
    [
        (
            rpc_pb2.TxnRequest(compare=[Compare(key=b"a", range_end=b"b", target=Compare.MOD)]),
            "compare with a range_end",
        ),
        (rpc_pb2.TxnRequest(success=[Op(request_txn=rpc_pb2.TxnRequest())]), "nested txn"),
        (rpc_pb2.TxnRequest(success=[Op()]), "empty request op"),
        (rpc_pb2.TxnRequest(success=[Op(request_range=Range(key=b"a", revision=3))]), "range at a revision"),
        (rpc_pb2.TxnRequest(success=[Op(request_put=Put(key=b"a", ignore_lease=True))]), "ignore_lease"),
        (
            rpc_pb2.TxnRequest(success=[Op(request_range=Range(key=b"a", sort_order=Range.DESCEND))]),
            "sort_order DESCEND",
        ),
    ],
)
async def test_txn_unsupported_shapes_are_invalid_argument(etcd, backend, request_, named):
    details = await expect_error(etcd.call("KV", "Txn", request_), grpc.StatusCode.INVALID_ARGUMENT)
    assert named in details
    assert backend.revision == 0


async def test_txn_too_many_ops(etcd):
    ops = [Op(request_put=Put(key=b"k%d" % i, value=b"")) for i in range(129)]
    details = await expect_error(
        etcd.call("KV", "Txn", rpc_pb2.TxnRequest(success=ops)), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert details == "etcdserver: too many operations in txn request"


async def test_unsupported_error_from_store_is_invalid_argument_in_txn_only(etcd, backend):
    backend.fail_with = types.UnsupportedError("kine: this txn shape")
    details = await expect_error(
        etcd.call("KV", "Txn", create_txn(b"k", b"v")), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert details == "kine: this txn shape"
    backend.fail_with = types.UnsupportedError("kine: this put")
    await expect_error(put(etcd, b"k", b"v"), grpc.StatusCode.UNIMPLEMENTED)


# -- Compact and store failures ----------------------------------------------------------------


async def test_compact(etcd, backend):
    for value in (b"1", b"2", b"3"):
        await put(etcd, b"k", value)
    response = await etcd.call("KV", "Compact", rpc_pb2.CompactionRequest(revision=2, physical=True))
    assert backend.compacted == 2
    assert response.header.revision == 3
    await expect_error(
        etcd.call("KV", "Compact", rpc_pb2.CompactionRequest(revision=1)), grpc.StatusCode.OUT_OF_RANGE
    )


async def test_datastore_error_is_unavailable(etcd, backend):
    backend.fail_with = types.DatastoreError("database is locked")
    details = await expect_error(etcd.call("KV", "Range", Range(key=b"k")), grpc.StatusCode.UNAVAILABLE)
    assert details == "database is locked"


async def test_unknown_error_is_internal_without_details(etcd, backend, caplog):
    backend.fail_with = RuntimeError("secret detail")
    details = await expect_error(etcd.call("KV", "Range", Range(key=b"k")), grpc.StatusCode.INTERNAL)
    assert "secret" not in details
    failures = [r for r in caplog.records if r.getMessage() == "etcdserverpb.KV/Range failed"]
    assert len(failures) == 1 and failures[0].exc_info is not None
