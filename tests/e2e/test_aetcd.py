"""aetcd, a maintained asyncio etcd client, round-tripping through kine started by the CLI.

aetcd registers etcd's own protos (package ``etcdserverpb``) in protobuf's default
descriptor pool; kine's generated modules use ``kine.etcdserverpb`` so both load in
one process. This module imports both, which is the proof.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aetcd
import aetcd.rpc
import pytest
from google.protobuf import descriptor_pool

from services.kine.proto import kv_pb2, rpc_pb2
from tests.e2e import conftest as e2e

EVENT_DEADLINE = 30.0  # seconds for an expected watch event


@pytest.fixture
async def client(kine_server: e2e.KineProcess) -> AsyncIterator[aetcd.Client]:
    async with aetcd.Client(host="127.0.0.1", port=kine_server.port, timeout=30) as client:
        yield client


def test_both_proto_sets_share_one_process() -> None:
    pool = descriptor_pool.Default()
    ours = pool.FindMessageTypeByName("kine.etcdserverpb.PutRequest")
    theirs = pool.FindMessageTypeByName("etcdserverpb.PutRequest")
    assert ours is rpc_pb2.PutRequest.DESCRIPTOR
    assert theirs is aetcd.rpc.PutRequest.DESCRIPTOR
    assert ours.file.name != theirs.file.name
    # Only field numbers travel on the wire, so the two are interchangeable there.
    wire = aetcd.rpc.PutRequest(key=b"k", value=b"v", lease=7, prev_kv=True).SerializeToString()
    assert rpc_pb2.PutRequest.FromString(wire) == rpc_pb2.PutRequest(
        key=b"k", value=b"v", lease=7, prev_kv=True
    )
    event = kv_pb2.Event(type=kv_pb2.Event.DELETE, kv=kv_pb2.KeyValue(key=b"k", mod_revision=9))
    assert aetcd.rpc.Event.FromString(event.SerializeToString()).kv.mod_revision == 9


async def test_get_put_delete(client: aetcd.Client) -> None:
    assert await client.get(b"rt/missing") is None
    put = await client.put(b"rt/k", b"v1")
    got = await client.get(b"rt/k")
    assert got is not None
    assert (got.key, got.value) == (b"rt/k", b"v1")
    assert got.mod_revision == got.create_revision == put.header.revision
    replaced = await client.put(b"rt/k", b"v2", prev_kv=True)
    assert replaced.prev_kv is not None and replaced.prev_kv.value == b"v1"
    assert replaced.header.revision > put.header.revision
    deleted = await client.delete(b"rt/k", prev_kv=True)
    assert deleted is not None and deleted.deleted == 1
    assert deleted.prev_kv is not None and deleted.prev_kv.value == b"v2"
    assert await client.get(b"rt/k") is None
    assert await client.delete(b"rt/k") is None


async def test_prefix_get_and_delete(client: aetcd.Client) -> None:
    for name in (b"b", b"a", b"c"):
        await client.put(b"pre/" + name, name * 3)
    await client.put(b"pre", b"not in the prefix")
    await client.put(b"prf/x", b"not in the prefix")
    listed = await client.get_prefix(b"pre/")
    assert listed.count == 3
    assert [(kv.key, kv.value) for kv in listed] == [
        (b"pre/a", b"aaa"),
        (b"pre/b", b"bbb"),
        (b"pre/c", b"ccc"),
    ]
    keys = await client.get_prefix(b"pre/", keys_only=True)
    assert [kv.value for kv in keys] == [b"", b"", b""]
    removed = await client.delete_prefix(b"pre/", prev_kv=True)
    assert removed.deleted == 3
    assert sorted(kv.key for kv in removed) == [b"pre/a", b"pre/b", b"pre/c"]
    assert (await client.get_prefix(b"pre/")).count == 0
    assert (await client.get(b"pre")) is not None
    assert (await client.get(b"prf/x")) is not None


async def next_event(events: AsyncIterator[aetcd.rtypes.Event]) -> aetcd.rtypes.Event:
    return await asyncio.wait_for(anext(events), EVENT_DEADLINE)


async def test_watch_events(client: aetcd.Client) -> None:
    first = await client.put(b"watched/k", b"1")
    await client.put(b"watched/k", b"2")
    await client.delete(b"watched/k")
    watch = await client.watch_prefix(b"watched/", start_revision=first.header.revision, prev_kv=True)
    events = aiter(watch)
    try:
        replayed = [await next_event(events) for _ in range(3)]
        assert [(e.kind, e.kv.key, e.kv.value) for e in replayed] == [
            ("PUT", b"watched/k", b"1"),
            ("PUT", b"watched/k", b"2"),
            ("DELETE", b"watched/k", b""),
        ]
        # aetcd wraps even an absent prev_kv (an empty message): a create has no previous key.
        assert replayed[0].prev_kv is None or replayed[0].prev_kv.key == b""
        assert [e.prev_kv.value for e in replayed[1:]] == [b"1", b"2"]
        revisions = [e.kv.mod_revision for e in replayed]
        assert revisions[0] == first.header.revision and revisions == sorted(set(revisions))
        # Live events follow the replay.
        live = await client.put(b"watched/other", b"3")
        event = await next_event(events)
        assert (event.kind, event.kv.key, event.kv.value) == ("PUT", b"watched/other", b"3")
        assert event.kv.mod_revision == live.header.revision
        await client.put(b"unwatched/k", b"x")
        await client.put(b"watched/last", b"4")
        assert (await next_event(events)).kv.key == b"watched/last"
    finally:
        await watch.cancel()


async def test_lease_grant_refresh_revoke(client: aetcd.Client) -> None:
    lease = await client.lease(60)
    assert lease.id != 0 and lease.ttl == 60
    await client.put(b"leased/k", b"v", lease=lease)
    got = await client.get(b"leased/k")
    assert got is not None and got.lease == lease.id
    refreshed = await lease.refresh()
    assert refreshed.ID == lease.id and refreshed.TTL == 60
    assert await lease.keys() == [b"leased/k"]
    assert await lease.granted_ttl() == 60
    assert 0 < await lease.remaining_ttl() <= 60
    await lease.revoke()
    assert await client.get(b"leased/k") is None
    assert await lease.remaining_ttl() == -1
    gone = await lease.refresh()
    assert gone.TTL == 0  # etcd's answer for a lease that no longer exists


async def test_transaction(client: aetcd.Client) -> None:
    t = client.transactions
    # The create shape: only if the key has never been written.
    created, responses = await client.transaction(
        compare=[t.mod(b"txn/k") == 0], success=[t.put(b"txn/k", b"v1")], failure=[t.get(b"txn/k")]
    )
    assert created is True
    assert len(responses) == 1 and responses[0].WhichOneof("response") == "response_put"
    current = await client.get(b"txn/k")
    assert current is not None
    again, responses = await client.transaction(
        compare=[t.mod(b"txn/k") == 0], success=[t.put(b"txn/k", b"v1")], failure=[t.get(b"txn/k")]
    )
    assert again is False
    ((value, _),) = responses[0]
    assert value == b"v1"
    # Compare-and-swap on the mod revision, then on the value, with a delete in the failure branch.
    swapped, _ = await client.transaction(
        compare=[t.mod(b"txn/k") == current.mod_revision], success=[t.put(b"txn/k", b"v2")], failure=[]
    )
    assert swapped is True
    stale, _ = await client.transaction(
        compare=[t.mod(b"txn/k") == current.mod_revision], success=[t.put(b"txn/k", b"v3")], failure=[]
    )
    assert stale is False
    matched, _ = await client.transaction(
        compare=[t.value(b"txn/k") == b"v1"], success=[t.put(b"txn/k", b"v4")], failure=[t.delete(b"txn/k")]
    )
    assert matched is False
    assert await client.get(b"txn/k") is None
