"""The Watch stream: create, events, cancel, compaction, filters, progress, store-ended watches."""

from __future__ import annotations

import pytest

from services.kine import settings as kine_settings
from services.kine import types
from services.kine.proto import kv_pb2, rpc_pb2
from tests.unit import fakes

Create = rpc_pb2.WatchCreateRequest
COMPACTED = "etcdserver: mvcc: required revision has been compacted"


@pytest.fixture
def backend() -> fakes.FakeBackend:
    return fakes.FakeBackend()


@pytest.fixture
async def served(backend, tmp_path):
    settings = kine_settings.KineSettings(
        data_dir=tmp_path, listen_address="127.0.0.1:0", watch_progress_notify_interval=0.1
    )
    async with fakes.serving(backend, settings) as (server, client):
        yield server, client


@pytest.fixture
def etcd(served) -> fakes.EtcdClient:
    return served[1]


@pytest.fixture
async def stream(etcd):
    call = etcd.watch()
    yield call
    call.cancel()


async def create(stream, **fields) -> rpc_pb2.WatchResponse:
    await stream.write(rpc_pb2.WatchRequest(create_request=Create(**fields)))
    return await fakes.read(stream)


async def put(backend: fakes.FakeBackend, key: bytes, value: bytes) -> None:
    await backend.put(key, value)


async def test_create_then_events(stream, backend):
    await put(backend, b"other", b"x")
    created = await create(stream, key=b"/a/", range_end=b"/a0")
    assert created.created and created.watch_id == 0
    assert created.header.revision == 1  # etcd: the current revision

    await put(backend, b"/a/1", b"v1")
    await put(backend, b"/b", b"ignored")
    await put(backend, b"/a/1", b"v2")
    # Queued events go out together, in one response whose header is the last event's.
    response = await fakes.read(stream)
    assert [e.kv.value for e in response.events] == [b"v1", b"v2"]
    assert response.header.revision == 4
    assert not response.events[1].HasField("prev_kv")  # not asked for


async def test_prev_kv_and_delete_events(stream, backend):
    await create(stream, key=b"k", prev_kv=True)
    await put(backend, b"k", b"1")
    await put(backend, b"k", b"2")
    await backend.delete_range(b"k")
    events = []
    while len(events) < 3:
        events.extend((await fakes.read(stream)).events)
    assert [e.type for e in events] == [kv_pb2.Event.PUT] * 2 + [kv_pb2.Event.DELETE]
    assert not events[0].HasField("prev_kv")
    assert events[1].prev_kv.value == b"1"
    assert events[2].prev_kv.value == b"2"


async def test_filters(stream, backend):
    await create(stream, key=b"k", filters=[Create.NOPUT])
    await put(backend, b"k", b"1")
    await backend.delete_range(b"k")
    response = await fakes.read(stream)
    assert [e.type for e in response.events] == [kv_pb2.Event.DELETE]


async def test_start_revision_replays_history_with_monotonic_headers(stream, backend):
    for value in (b"1", b"2", b"3"):
        await put(backend, b"k", value)
    created = await create(stream, key=b"k", start_revision=2)
    assert created.header.revision == 3
    replay = await fakes.read(stream)
    assert [e.kv.mod_revision for e in replay.events] == [2, 3]
    assert replay.header.revision >= created.header.revision


async def test_ids_counter_client_ids_and_duplicates(stream):
    assert (await create(stream, key=b"a")).watch_id == 0
    assert (await create(stream, key=b"b", watch_id=7)).watch_id == 7
    assert (await create(stream, key=b"c")).watch_id == 1
    duplicate = await create(stream, key=b"d", watch_id=7)
    assert duplicate.created and duplicate.canceled and duplicate.watch_id == -1
    assert "duplicate watch ID" in duplicate.cancel_reason


async def test_empty_range_is_refused(stream):
    refused = await create(stream, key=b"b", range_end=b"a")
    assert refused.created and refused.canceled and refused.watch_id == -1


async def test_compacted_start(stream, backend):
    for value in (b"1", b"2", b"3"):
        await put(backend, b"k", value)
    await backend.compact(3)
    created = await create(stream, key=b"k", start_revision=1)
    assert created.created and created.watch_id == 0
    canceled = await fakes.read(stream)
    assert canceled.canceled and canceled.watch_id == 0
    assert canceled.compact_revision == 3
    assert canceled.cancel_reason == COMPACTED
    assert canceled.header.revision == 3


async def test_cancel(stream, backend):
    created = await create(stream, key=b"k")
    await stream.write(
        rpc_pb2.WatchRequest(cancel_request=rpc_pb2.WatchCancelRequest(watch_id=created.watch_id))
    )
    canceled = await fakes.read(stream)
    assert canceled.canceled and canceled.watch_id == created.watch_id
    assert not backend.watches  # the store's watch was closed
    # An unknown id is ignored, as in etcd: the next response is the next create's.
    await stream.write(rpc_pb2.WatchRequest(cancel_request=rpc_pb2.WatchCancelRequest(watch_id=99)))
    assert (await create(stream, key=b"j")).created


async def test_store_ended_watch_is_canceled_with_reason(stream, backend):
    created = await create(stream, key=b"k")
    (watch,) = backend.watches
    watch.end("kine: watch too slow")
    canceled = await fakes.read(stream)
    assert canceled.canceled and canceled.watch_id == created.watch_id
    assert canceled.cancel_reason == "kine: watch too slow"


async def test_progress_request_after_pending_events(stream, backend):
    await create(stream, key=b"k")
    await create(stream, key=b"other")
    for value in (b"1", b"2"):
        await put(backend, b"k", value)
    await stream.write(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))
    events = await fakes.read(stream)
    assert [e.kv.mod_revision for e in events.events] == [1, 2]
    progress = await fakes.read(stream)
    assert progress.watch_id == -1
    assert progress.header.revision == 2
    assert not (progress.events or progress.created or progress.canceled or progress.compact_revision)


async def test_periodic_progress_only_for_watches_that_asked(stream, backend):
    await put(backend, b"x", b"1")
    await create(stream, key=b"quiet")
    notified = await create(stream, key=b"k", progress_notify=True)
    progress = await fakes.read(stream)
    assert progress.watch_id == notified.watch_id
    assert progress.header.revision == 1 and not progress.events


async def test_stream_end_closes_watches(served, backend):
    server, etcd = served
    call = etcd.watch()
    await create(call, key=b"k")
    await create(call, key=b"j")
    assert server.metrics.registry.get_sample_value("etcd_debugging_mvcc_watcher_total") == 2
    call.cancel()
    await fakes.eventually(lambda: not backend.watches)
    assert server.metrics.registry.get_sample_value("etcd_debugging_mvcc_watcher_total") == 0


async def test_half_closed_stream_keeps_watching(etcd, backend):
    call = etcd.watch()
    try:
        await create(call, key=b"k")
        await call.done_writing()
        await put(backend, b"k", b"after")
        assert (await fakes.read(call)).events[0].kv.value == b"after"
    finally:
        call.cancel()


async def test_store_failure_on_create_refuses_that_watch_only(stream, backend):
    backend.fail_with = types.DatastoreError("database is locked")
    refused = await create(stream, key=b"k")
    assert refused.created and refused.canceled and refused.watch_id == -1
    assert refused.cancel_reason == "database is locked"
    assert (await create(stream, key=b"k")).watch_id == 0


async def test_progress_request_survives_a_store_hiccup(stream, backend):
    await put(backend, b"k", b"1")
    await create(stream, key=b"k")
    backend.fail_with = types.DatastoreError("database is locked")
    await stream.write(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))
    progress = await fakes.read(stream)
    assert progress.watch_id == -1 and progress.header.revision == 1
    assert backend.fail_with is None  # the failure was met, then retried
