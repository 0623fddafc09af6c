"""GrpcServer lifecycle, the smaller services (lease, maintenance, cluster, health), metrics, and aetcd."""

from __future__ import annotations

import asyncio
import os
import stat

import aetcd
import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.kine import settings as kine_settings
from services.kine.proto import rpc_pb2
from services.kine.server import server
from tests.unit import fakes


@pytest.fixture
def backend() -> fakes.FakeBackend:
    return fakes.FakeBackend()


@pytest.fixture
def settings(tmp_path) -> kine_settings.KineSettings:
    return kine_settings.KineSettings(
        data_dir=tmp_path,
        listen_address="127.0.0.1:0",
        metrics_address="127.0.0.1:0",
        emulated_etcd_version="3.5.13",
    )


@pytest.fixture
async def served(backend, settings):
    async with fakes.serving(backend, settings) as (grpc_server, client):
        yield grpc_server, client


@pytest.fixture
def etcd(served) -> fakes.EtcdClient:
    return served[1]


async def expect_error(call, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    return info.value.details()


# -- lifecycle ---------------------------------------------------------------------------------


async def test_default_unix_socket_is_private(backend, tmp_path):
    settings = kine_settings.KineSettings(data_dir=tmp_path)
    async with fakes.serving(backend, settings) as (grpc_server, etcd):
        socket_path = tmp_path / "server" / "kine.sock"
        assert grpc_server.address == f"unix:{socket_path}"
        assert stat.S_IMODE(os.stat(socket_path).st_mode) == 0o600
        assert grpc_server.state is server.State.RUNNING
        response = await etcd.call("KV", "Put", rpc_pb2.PutRequest(key=b"k", value=b"v"))
        assert response.header.revision == 1
    assert grpc_server.state is server.State.STOPPED
    assert not socket_path.exists()


async def test_socket_served_by_another_server_is_refused(backend, tmp_path):
    settings = kine_settings.KineSettings(data_dir=tmp_path)
    async with server.GrpcServer(backend, settings):
        second = server.GrpcServer(backend, settings)
        with pytest.raises(server.ServerError, match="already being served"):
            await second.start()
        assert second.state is server.State.STOPPED


async def test_stale_socket_file_is_replaced(backend, tmp_path):
    (tmp_path / "server").mkdir()
    (tmp_path / "server" / "kine.sock").write_text("left over")
    async with server.GrpcServer(backend, kine_settings.KineSettings(data_dir=tmp_path)) as grpc_server:
        assert grpc_server.state is server.State.RUNNING


async def test_stop_is_idempotent_and_start_only_once(backend, settings):
    grpc_server = server.GrpcServer(backend, settings)
    await grpc_server.start()
    with pytest.raises(RuntimeError):
        await grpc_server.start()
    await asyncio.gather(grpc_server.stop(grace=0.1), grpc_server.stop(grace=0.1))
    await grpc_server.stop()
    assert grpc_server.state is server.State.STOPPED


async def test_stop_cancels_open_watch_streams(backend, settings):
    grpc_server = server.GrpcServer(backend, settings)
    await grpc_server.start()
    async with grpc.aio.insecure_channel(grpc_server.address) as channel:
        call = fakes.EtcdClient(channel).watch()
        await call.write(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"k")))
        assert (await fakes.read(call)).created
        await grpc_server.stop(grace=0.1)
        assert not backend.watches
        with pytest.raises(grpc.aio.AioRpcError):
            await fakes.read(call)


async def test_bad_listen_address(backend, tmp_path):
    settings = kine_settings.KineSettings(data_dir=tmp_path, listen_address="nowhere")
    with pytest.raises(ValueError, match="HOST:PORT"):
        await server.GrpcServer(backend, settings).start()


async def test_health(served):
    grpc_server, _ = served
    async with grpc.aio.insecure_channel(grpc_server.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "etcdserverpb.KV"):
            response = await stub.Check(health_pb2.HealthCheckRequest(service=service))
            assert response.status == health_pb2.HealthCheckResponse.SERVING


# -- lease ---------------------------------------------------------------------------------------


async def test_lease_lifecycle(etcd, backend):
    granted = await etcd.call("Lease", "LeaseGrant", rpc_pb2.LeaseGrantRequest(TTL=30))
    assert granted.TTL == 30 and granted.ID
    chosen = await etcd.call("Lease", "LeaseGrant", rpc_pb2.LeaseGrantRequest(TTL=5, ID=77))
    assert chosen.ID == 77
    await etcd.call("KV", "Put", rpc_pb2.PutRequest(key=b"leased", value=b"v", lease=granted.ID))

    ttl = await etcd.call(
        "Lease", "LeaseTimeToLive", rpc_pb2.LeaseTimeToLiveRequest(ID=granted.ID, keys=True)
    )
    assert (ttl.TTL, ttl.grantedTTL, list(ttl.keys)) == (30, 30, [b"leased"])

    listed = await etcd.call("Lease", "LeaseLeases", rpc_pb2.LeaseLeasesRequest())
    assert sorted(lease.ID for lease in listed.leases) == sorted([granted.ID, 77])

    revoked = await etcd.call("Lease", "LeaseRevoke", rpc_pb2.LeaseRevokeRequest(ID=granted.ID))
    assert revoked.header.revision == 2  # the put, then the delete of its key
    assert b"leased" not in backend.live


async def test_lease_errors(etcd):
    details = await expect_error(
        etcd.call("Lease", "LeaseRevoke", rpc_pb2.LeaseRevokeRequest(ID=5)), grpc.StatusCode.NOT_FOUND
    )
    assert details == "etcdserver: requested lease not found"
    await etcd.call("Lease", "LeaseGrant", rpc_pb2.LeaseGrantRequest(TTL=5, ID=9))
    details = await expect_error(
        etcd.call("Lease", "LeaseGrant", rpc_pb2.LeaseGrantRequest(TTL=5, ID=9)),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert details == "etcdserver: lease already exists"
    await expect_error(
        etcd.call("Lease", "LeaseGrant", rpc_pb2.LeaseGrantRequest(TTL=10**10)), grpc.StatusCode.OUT_OF_RANGE
    )
    expired = await etcd.call("Lease", "LeaseTimeToLive", rpc_pb2.LeaseTimeToLiveRequest(ID=5))
    assert expired.TTL == -1


async def test_lease_keepalive_stream(etcd):
    granted = await etcd.call("Lease", "LeaseGrant", rpc_pb2.LeaseGrantRequest(TTL=20))
    call = etcd.keep_alive()
    try:
        await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=granted.ID))
        alive = await fakes.read(call)
        assert (alive.ID, alive.TTL) == (granted.ID, 20)
        await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=123456))
        gone = await fakes.read(call)
        assert (gone.ID, gone.TTL) == (123456, 0)
    finally:
        call.cancel()


# -- maintenance and cluster ---------------------------------------------------------------------


async def test_status(etcd, backend):
    await etcd.call("KV", "Put", rpc_pb2.PutRequest(key=b"k", value=b"v"))
    status = await etcd.call("Maintenance", "Status", rpc_pb2.StatusRequest())
    assert status.version == "3.5.13"
    assert status.dbSize == status.dbSizeInUse == await backend.db_size()
    assert status.leader == status.header.member_id != 0
    assert (status.raftIndex, status.raftAppliedIndex, status.raftTerm) == (1, 1, 1)
    assert status.header.revision == 1 and status.header.cluster_id
    assert not status.isLearner


async def test_alarm_list_is_empty(etcd):
    alarms = await etcd.call("Maintenance", "Alarm", rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET))
    assert not alarms.alarms


@pytest.mark.parametrize(
    ("method", "request_"),
    [
        ("Defragment", rpc_pb2.DefragmentRequest()),
        ("Hash", rpc_pb2.HashRequest()),
        ("HashKV", rpc_pb2.HashKVRequest()),
        ("MoveLeader", rpc_pb2.MoveLeaderRequest(targetID=1)),
        ("Downgrade", rpc_pb2.DowngradeRequest()),
        ("Alarm", rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.ACTIVATE)),
    ],
)
async def test_other_maintenance_rpcs_are_unimplemented(etcd, method, request_):
    details = await expect_error(etcd.call("Maintenance", method, request_), grpc.StatusCode.UNIMPLEMENTED)
    assert f"Maintenance.{method}" in details


async def test_snapshot_is_unimplemented(etcd):
    call = etcd.snapshot()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call.read()
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_member_list(served):
    grpc_server, etcd = served
    members = await etcd.call("Cluster", "MemberList", rpc_pb2.MemberListRequest())
    (member,) = members.members
    assert member.ID == members.header.member_id
    assert list(member.clientURLs) == [f"http://{grpc_server.address}"] == [grpc_server.client_url]
    assert member.name and not member.isLearner
    details = await expect_error(
        etcd.call("Cluster", "MemberAdd", rpc_pb2.MemberAddRequest(peerURLs=["http://x:2380"])),
        grpc.StatusCode.UNIMPLEMENTED,
    )
    assert "Cluster.MemberAdd" in details


# -- metrics ------------------------------------------------------------------------------------------


async def scrape(address: str, path: str = "/metrics") -> tuple[str, str]:
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {address}\r\n\r\n".encode())
        await writer.drain()
        async with asyncio.timeout(fakes.RPC_TIMEOUT):
            raw = (await reader.read()).decode()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.partition("\r\n\r\n")
    return head.splitlines()[0], body


async def test_metrics_endpoint(served):
    grpc_server, etcd = served
    await etcd.call("KV", "Put", rpc_pb2.PutRequest(key=b"k", value=b"v"))
    await expect_error(etcd.call("KV", "Range", rpc_pb2.RangeRequest()), grpc.StatusCode.INVALID_ARGUMENT)

    status, body = await scrape(grpc_server.metrics_address)
    assert status == "HTTP/1.0 200 OK"
    assert (
        'grpc_server_handled_total{grpc_code="OK",grpc_method="Put",grpc_service="etcdserverpb.KV",'
        'grpc_type="unary"} 1.0' in body
    )
    assert 'grpc_code="InvalidArgument",grpc_method="Range"' in body
    assert 'grpc_server_handling_seconds_count{grpc_method="Put"' in body
    assert "etcd_mvcc_db_total_size_in_bytes 4098.0" in body
    assert "etcd_debugging_mvcc_current_revision 1.0" in body

    status, _ = await scrape(grpc_server.metrics_address, "/other")
    assert status == "HTTP/1.0 404 Not Found"


async def test_backend_hooks_reach_the_registry(served):
    grpc_server, _ = served
    grpc_server.metrics.compactions.inc()
    grpc_server.metrics.compaction_seconds.observe(0.2)
    _, body = await scrape(grpc_server.metrics_address)
    assert "kine_compactions_total 1.0" in body


# -- a real etcd client ---------------------------------------------------------------------------------


async def test_aetcd_interoperates(served):
    grpc_server, _ = served
    host, port = grpc_server.address.rsplit(":", 1)
    async with aetcd.Client(host=host, port=int(port)) as client:
        await client.put(b"/a/1", b"one")
        await client.put(b"/a/2", b"two")
        assert (await client.get(b"/a/1")).value == b"one"
        assert [kv.key for kv in await client.get_prefix(b"/a/")] == [b"/a/1", b"/a/2"]

        watch = await client.watch(b"/a/1")
        await client.put(b"/a/1", b"uno")
        async with asyncio.timeout(fakes.RPC_TIMEOUT):
            async for event in watch:
                assert event.kv.value == b"uno"
                break
        await watch.cancel()

        lease = await client.lease(10)
        assert lease.ttl == 10
        assert (await client.delete(b"/a/2")).deleted == 1
        status = await client.status()
        assert status.version == "3.5.13"
