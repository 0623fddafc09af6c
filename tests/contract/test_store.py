"""One contract for every dialect: what the gRPC layer (and so etcd clients) rely on."""

from __future__ import annotations

import asyncio

import pytest

from services.kine import types as t
from services.kine.logstructured import store

pytestmark = pytest.mark.asyncio


async def next_events(watch: t.Watch, count: int) -> list[t.Event]:
    events: list[t.Event] = []
    async with asyncio.timeout(5):
        while len(events) < count:
            events.extend(await watch.next_batch())
    return events


def create(key: bytes, value: bytes) -> t.Txn:
    return t.Txn(compare=[t.Compare(key, "mod", "=", 0)], success=[t.PutOp(key, value)], failure=[t.RangeOp(key)])


def update(key: bytes, value: bytes, rev: int) -> t.Txn:
    return t.Txn(compare=[t.Compare(key, "mod", "=", rev)], success=[t.PutOp(key, value)], failure=[t.RangeOp(key)])


async def test_put_get_and_revisions(kv: store.LogStructured) -> None:
    first = await kv.put(b"/a", b"1")
    second = await kv.put(b"/a", b"2", prev_kv=True)
    assert second.revision > first.revision
    assert second.prev_kv is not None and second.prev_kv.value == b"1"
    got = await kv.range(b"/a")
    assert got.revision == second.revision
    assert [(x.value, x.create_revision, x.mod_revision) for x in got.kvs] == [(b"2", first.revision, second.revision)]
    old = await kv.range(b"/a", revision=first.revision)
    assert old.kvs[0].value == b"1"
    with pytest.raises(t.FutureRevisionError, match="future revision"):
        await kv.range(b"/a", revision=second.revision + 100)


async def test_prefix_list_limit_count(kv: store.LogStructured) -> None:
    for i in range(10):
        await kv.put(b"/p/%02d" % i, b"v%d" % i)
    await kv.put(b"/q", b"outside")
    full = await kv.range(b"/p/", b"/p0")
    assert [x.key for x in full.kvs] == [b"/p/%02d" % i for i in range(10)]
    assert full.count == 10 and not full.more
    page = await kv.range(b"/p/", b"/p0", limit=3)
    assert [x.key for x in page.kvs] == [b"/p/00", b"/p/01", b"/p/02"]
    assert page.count == 10 and page.more
    nxt = await kv.range(b"/p/02\x00", b"/p0", limit=3)
    assert [x.key for x in nxt.kvs] == [b"/p/03", b"/p/04", b"/p/05"]
    keys = await kv.range(b"/p/", b"/p0", keys_only=True)
    assert all(x.value == b"" for x in keys.kvs)
    counted = await kv.range(b"/p/", b"/p0", count_only=True)
    assert counted.count == 10 and counted.kvs == []
    everything = await kv.range(b"/", b"\x00")
    assert b"/q" in [x.key for x in everything.kvs]


async def test_list_at_past_revision_ignores_later_changes(kv: store.LogStructured) -> None:
    a = await kv.put(b"/r/a", b"1")
    await kv.put(b"/r/b", b"1")
    await kv.delete_range(b"/r/a")
    await kv.put(b"/r/b", b"2")
    past = await kv.range(b"/r/", b"/r0", revision=a.revision)
    assert [(x.key, x.value) for x in past.kvs] == [(b"/r/a", b"1")]
    now = await kv.range(b"/r/", b"/r0")
    assert [(x.key, x.value) for x in now.kvs] == [(b"/r/b", b"2")]


async def test_delete_single_and_range(kv: store.LogStructured) -> None:
    await kv.put(b"/d/1", b"x")
    await kv.put(b"/d/2", b"y")
    await kv.put(b"/d/3", b"z")
    one = await kv.delete_range(b"/d/1", prev_kv=True)
    assert one.deleted == 1 and one.prev_kvs[0].value == b"x"
    missing = await kv.delete_range(b"/d/1")
    assert missing.deleted == 0 and missing.revision == one.revision
    rest = await kv.delete_range(b"/d/", b"/d0", prev_kv=True)
    assert rest.deleted == 2 and sorted(x.key for x in rest.prev_kvs) == [b"/d/2", b"/d/3"]
    assert (await kv.range(b"/d/", b"/d0")).count == 0
    recreated = await kv.put(b"/d/1", b"again")
    got = (await kv.range(b"/d/1")).kvs[0]
    assert got.create_revision == recreated.revision


async def test_apiserver_transaction_shapes(kv: store.LogStructured) -> None:
    made = await kv.txn(create(b"/registry/pods/ns/p", b"v1"))
    assert made.succeeded and made.revision == made.responses[0].revision
    again = await kv.txn(create(b"/registry/pods/ns/p", b"v1"))
    assert not again.succeeded and again.responses[0].kvs[0].mod_revision == made.revision
    updated = await kv.txn(update(b"/registry/pods/ns/p", b"v2", made.revision))
    assert updated.succeeded and updated.revision > made.revision
    stale = await kv.txn(update(b"/registry/pods/ns/p", b"v3", made.revision))
    assert not stale.succeeded and stale.responses[0].kvs[0].value == b"v2"
    delete_stale = await kv.txn(
        t.Txn(
            compare=[t.Compare(b"/registry/pods/ns/p", "mod", "=", made.revision)],
            success=[t.DeleteOp(b"/registry/pods/ns/p")],
            failure=[t.RangeOp(b"/registry/pods/ns/p")],
        )
    )
    assert not delete_stale.succeeded
    deleted = await kv.txn(
        t.Txn(
            compare=[t.Compare(b"/registry/pods/ns/p", "mod", "=", updated.revision)],
            success=[t.DeleteOp(b"/registry/pods/ns/p", prev_kv=True)],
            failure=[t.RangeOp(b"/registry/pods/ns/p")],
        )
    )
    assert deleted.succeeded and deleted.responses[0].prev_kvs[0].value == b"v2"
    assert (await kv.range(b"/registry/pods/ns/p")).kvs == []


async def test_compactor_version_check(kv: store.LogStructured) -> None:
    key = b"compact_rev_key"

    def compactor(version: int, rev: int) -> t.Txn:
        return t.Txn(
            compare=[t.Compare(key, "version", "=", version)],
            success=[t.PutOp(key, str(rev).encode())],
            failure=[t.RangeOp(key)],
        )

    first = await kv.txn(compactor(0, 10))
    assert first.succeeded
    assert (await kv.range(key)).kvs[0].version == 1
    second = await kv.txn(compactor(1, 20))
    assert second.succeeded
    lost = await kv.txn(compactor(1, 30))
    assert not lost.succeeded and lost.responses[0].kvs[0].version == 2
    assert lost.responses[0].kvs[0].value == b"20"


async def test_general_compares(kv: store.LogStructured) -> None:
    await kv.put(b"/g", b"hello")
    ok = await kv.txn(
        t.Txn(
            compare=[t.Compare(b"/g", "value", "=", b"hello"), t.Compare(b"/absent", "version", "=", 0)],
            success=[t.PutOp(b"/g", b"world"), t.PutOp(b"/absent", b"now"), t.RangeOp(b"/g")],
        )
    )
    assert ok.succeeded and ok.responses[2].kvs[0].value == b"world"
    no = await kv.txn(t.Txn(compare=[t.Compare(b"/missing", "value", "=", b"")], success=[t.PutOp(b"/x", b"1")]))
    assert not no.succeeded and (await kv.range(b"/x")).kvs == []
    gt = await kv.txn(t.Txn(compare=[t.Compare(b"/g", "create", ">", 0)], success=[t.DeleteOp(b"/g")]))
    assert gt.succeeded and (await kv.range(b"/g")).kvs == []


async def test_concurrent_cas_only_one_wins(kv: store.LogStructured) -> None:
    made = await kv.put(b"/race", b"0")
    results = await asyncio.gather(*[kv.txn(update(b"/race", b"%d" % i, made.revision)) for i in range(30)])
    assert sum(r.succeeded for r in results) == 1
    revisions = [r.revision for r in results if r.succeeded]
    assert (await kv.range(b"/race")).kvs[0].mod_revision == revisions[0]


async def test_concurrent_writes_get_distinct_increasing_revisions(kv: store.LogStructured) -> None:
    results = await asyncio.gather(*[kv.put(b"/many/%d" % i, b"v") for i in range(200)])
    revisions = [r.revision for r in results]
    assert len(set(revisions)) == 200
    listed = await kv.range(b"/many/", b"/many0")
    assert listed.count == 200 and listed.revision >= max(revisions)


async def test_watch_from_now_and_from_past(kv: store.LogStructured) -> None:
    first = await kv.put(b"/w/a", b"1")
    live = await kv.watch(b"/w/", b"/w0")
    past = await kv.watch(b"/w/", b"/w0", start_revision=first.revision)
    await kv.put(b"/w/a", b"2")
    await kv.put(b"/other", b"x")
    await kv.delete_range(b"/w/a")
    got_live = await next_events(live, 2)
    assert [(e.type, e.kv.value) for e in got_live] == [(t.EventType.PUT, b"2"), (t.EventType.DELETE, b"")]
    assert got_live[0].prev_kv is not None and got_live[0].prev_kv.value == b"1"
    assert got_live[1].prev_kv is not None and got_live[1].prev_kv.value == b"2"
    got_past = await next_events(past, 3)
    assert [e.kv.mod_revision for e in got_past] == sorted(e.kv.mod_revision for e in got_past)
    assert got_past[0].kv.mod_revision == first.revision and got_past[0].prev_kv is None
    live.close()
    past.close()


async def test_watch_single_key_and_future_start(kv: store.LogStructured) -> None:
    now = await kv.current_revision()
    single = await kv.watch(b"/k")
    future = await kv.watch(b"/k", start_revision=now + 3)
    await kv.put(b"/k2", b"no")
    await kv.put(b"/k", b"1")
    await kv.put(b"/k", b"2")
    assert [e.kv.value for e in await next_events(single, 2)] == [b"1", b"2"]
    assert [e.kv.value for e in await next_events(future, 1)] == [b"2"]


async def test_watch_below_compaction_is_refused(open_store) -> None:
    kv = await open_store(compact_min_retain=5, compact_batch_size=100)
    first = await kv.put(b"/c", b"0")
    for i in range(30):
        await kv.put(b"/c", b"%d" % i)
    current = await kv.current_revision()
    compacted = await kv.compact(current)
    assert compacted == current - 5
    with pytest.raises(t.CompactedError) as info:
        await kv.watch(b"/c", start_revision=first.revision)
    assert info.value.compact_revision == compacted
    with pytest.raises(t.CompactedError):
        await kv.range(b"/c", revision=first.revision)
    with pytest.raises(t.CompactedError):
        await kv.compact(compacted)
    # Revisions above the compaction point still read and watch.
    assert (await kv.range(b"/c", revision=compacted + 1)).kvs
    w = await kv.watch(b"/c", start_revision=compacted + 1)
    assert len(await next_events(w, 4)) >= 4


async def test_compaction_removes_superseded_rows_in_batches(open_store, backing) -> None:
    kv = await open_store(compact_min_retain=0, compact_batch_size=100)
    for i in range(450):
        await kv.put(b"/churn", b"%d" % i)
    await kv.put(b"/gone", b"x")
    await kv.delete_range(b"/gone")
    current = await kv.current_revision()
    assert await kv.compact(current) == current
    # The rows themselves: MVCC hides superseded ones from every read, so ask the log behind the store.
    rows = await backing(kv).log.history(None, b"", after=0, upto=current, limit=10_000)
    names = [r.name for r in rows]
    assert names.count(b"/churn") == 1 and b"/gone" not in names
    assert (await kv.range(b"/churn")).kvs[0].value == b"449"


async def test_slow_watcher_is_cancelled_not_blocking(open_store) -> None:
    kv = await open_store(watch_buffer=3)
    slow = await kv.watch(b"/s/", b"/s0")
    fast = await kv.watch(b"/s/", b"/s0")
    received: list[t.Event] = []
    for i in range(20):
        await kv.put(b"/s/%d" % i, b"v")
        received.extend(await asyncio.wait_for(fast.next_batch(), 5))
    assert len(received) == 20
    with pytest.raises(t.WatchClosedError, match="too slow"):
        for _ in range(20):
            await asyncio.wait_for(slow.next_batch(), 5)


async def test_leases(open_store) -> None:
    kv = await open_store()
    lease = await kv.lease_grant(60)
    assert lease.id > 0 and lease.ttl == 60
    await kv.put(b"/lease/a", b"1", lease=lease.id)
    await kv.put(b"/lease/b", b"1", lease=lease.id)
    info = await kv.lease_time_to_live(lease.id, keys=True)
    assert sorted(info.keys) == [b"/lease/a", b"/lease/b"] and 58 <= info.ttl <= 60
    assert lease.id in await kv.lease_list()
    assert (await kv.lease_keepalive(lease.id)).ttl == 60
    with pytest.raises(t.LeaseExistsError):
        await kv.lease_grant(5, lease_id=lease.id)
    with pytest.raises(t.LeaseNotFoundError):
        await kv.put(b"/lease/c", b"1", lease=12345)
    await kv.lease_revoke(lease.id)
    assert (await kv.range(b"/lease/", b"/lease0")).count == 0
    with pytest.raises(t.LeaseNotFoundError):
        await kv.lease_revoke(lease.id)
    assert (await kv.lease_time_to_live(lease.id)).ttl == -1


async def test_lease_expiry_deletes_keys(open_store) -> None:
    kv = await open_store()
    lease = await kv.lease_grant(1)
    await kv.put(b"/ttl", b"x", lease=lease.id)
    watch = await kv.watch(b"/ttl")
    events = await next_events(watch, 1)
    assert events[0].type == t.EventType.DELETE
    with pytest.raises(t.LeaseNotFoundError):
        await kv.lease_keepalive(lease.id)


async def test_state_survives_restart(open_store, scheme: str) -> None:
    first = await open_store()
    lease = await first.lease_grant(100)
    put = await first.put(b"/keep", b"1", lease=lease.id)
    await first.stop()
    second = await open_store()
    got = await second.range(b"/keep")
    if scheme == "memory":
        assert got.kvs == []  # the memory dialect keeps nothing, by design
        return
    assert got.kvs[0].mod_revision == put.revision and got.kvs[0].lease == lease.id
    ttl = await second.lease_time_to_live(lease.id)
    assert 0 < ttl.ttl <= 100  # the clock kept running; a restart does not extend it
    assert (await second.put(b"/keep", b"2")).revision > put.revision
