"""The servers' NATS cluster: route TLS in nats.conf, the route certificate, and route records that
expire with their server.

Route records run against kine's in-memory store, whose leases expire for real (its expiry loop),
with a TTL of one second instead of the servers' 60.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from services.kine import endpoint
from services.kine import settings as kine_settings
from services.kine import types as kine_types
from supervisor import cluster_join, config, pki
from supervisor import nats as nats_server

EXPIRY_DEADLINE = 30.0  # seconds to wait for something that happens within about a second


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[kine_types.Backend]:
    backend = await endpoint.open_backend(
        kine_settings.KineSettings(data_dir=tmp_path, datastore_endpoint="memory://")
    )
    await backend.start()
    try:
        yield backend
    finally:
        await backend.stop()


# -- nats.conf --------------------------------------------------------------------------------------------


def write_cluster_file(data_dir: Path, **extra: object) -> None:
    directory = nats_server.nats_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    body = {"id": "x", "listen": "127.0.0.1:6222", "routes": ["127.0.0.1:6223"], "password": "pw", **extra}
    (directory / nats_server.CLUSTER_FILE).write_text(json.dumps(body))


def test_routes_are_tls_with_peers_verified_against_the_server_ca(tmp_path: Path) -> None:
    tls = {"cert": "/d/route.crt", "key": "/d/route.key", "ca": "/d/server-ca.crt"}
    write_cluster_file(tmp_path, tls=tls)
    cluster = nats_server.read_cluster(tmp_path)
    assert cluster is not None and cluster.tls == nats_server.RouteTls(**tls)
    credentials = nats_server.Credentials(user="k3s-server", password="pw")
    text = nats_server.render_config(port=4333, credentials=credentials, cluster=cluster)
    block = text[text.index("cluster {") :]
    tls_block = block[block.index("  tls {") : block.index("  }\n") + 4]
    assert 'cert_file: "/d/route.crt"' in tls_block
    assert 'key_file: "/d/route.key"' in tls_block
    assert 'ca_file: "/d/server-ca.crt"' in tls_block
    assert "verify: true" in tls_block
    assert text.index("tls {") > text.index("cluster {"), "the tls block belongs to the routes, not clients"


def test_a_cluster_file_without_tls_renders_no_tls_block(tmp_path: Path) -> None:
    write_cluster_file(tmp_path)
    cluster = nats_server.read_cluster(tmp_path)
    assert cluster is not None and cluster.tls is None
    credentials = nats_server.Credentials(user="k3s-server", password="pw")
    assert "tls" not in nats_server.render_config(port=4333, credentials=credentials, cluster=cluster)


# -- the route certificate ----------------------------------------------------------------------------------


def sans(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]
    return names.get_values_for_type(x509.DNSName), ips


def test_route_certificate_is_issued_from_the_server_ca_for_the_route_address(tmp_path: Path) -> None:
    with pytest.raises(pki.PkiError):  # no server CA yet: nothing to issue from
        pki.ensure_route_cert(tmp_path, host="10.0.0.11")
    pki.ensure(tmp_path)
    files = pki.ensure_route_cert(tmp_path, host="10.0.0.11")
    pair = pki.load(files, pki.NATS_ROUTE)
    ca = pki.load(files, pki.SERVER_CA).cert
    pair.cert.verify_directly_issued_by(ca)
    assert sans(pair.cert) == ([], ["10.0.0.11"])
    usages = pair.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    # nats-server presents it both when accepting a route and when dialling one.
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert (files.key(pki.NATS_ROUTE).stat().st_mode & 0o777) == pki.KEY_MODE

    before = files.crt(pki.NATS_ROUTE).read_bytes()
    pki.ensure_route_cert(tmp_path, host="10.0.0.11")
    assert files.crt(pki.NATS_ROUTE).read_bytes() == before, "an unchanged address keeps its certificate"
    pki.ensure_route_cert(tmp_path, host="nats-a.example")
    assert sans(pki.load(files, pki.NATS_ROUTE).cert) == (["nats-a.example"], [])


def test_route_certificate_follows_a_new_server_ca(tmp_path: Path) -> None:
    pki.ensure(tmp_path / "a")
    files = pki.ensure_route_cert(tmp_path / "a", host="127.0.0.1")
    other = pki.ensure(tmp_path / "b")
    for suffix in ("crt", "key"):  # a server that lost the first-server race installs the winner's CA
        source = other.directory / f"{pki.SERVER_CA}.{suffix}"
        pki.write_atomic(files.directory / source.name, source.read_bytes(), mode=pki.KEY_MODE)
    pki.ensure_route_cert(tmp_path / "a", host="127.0.0.1")
    pki.load(files, pki.NATS_ROUTE).cert.verify_directly_issued_by(pki.load(other, pki.SERVER_CA).cert)


# -- route records --------------------------------------------------------------------------------------------


async def listed(store: kine_types.Backend) -> set[bytes]:
    prefix = cluster_join.ROUTES_PREFIX
    return {kv.key for kv in (await store.range(prefix, prefix[:-1] + b"0")).kvs}


async def published(store: kine_types.Backend, server_id: str, *, ttl: int) -> cluster_join.RouteRecord:
    """A record as ``prepare`` writes it at start: on a lease of its own."""
    lease = await store.lease_grant(ttl)
    key, value = cluster_join.route_key(server_id), cluster_join.route_value(f"10.0.0.{len(server_id)}:6222")
    await store.put(key, value, lease=lease.id)
    return cluster_join.RouteRecord(store, key=key, value=value, lease=lease.id, ttl=ttl, interval=0.2)


async def test_a_dead_servers_record_expires_while_a_live_ones_stays(store: kine_types.Backend) -> None:
    live = await published(store, "live", ttl=1)
    dead = await published(store, "dead", ttl=1)  # its server died: nothing renews the lease
    await live.start()
    try:
        assert await listed(store) == {live.key, dead.key}
        deadline = time.monotonic() + EXPIRY_DEADLINE
        while dead.key in await listed(store):
            assert time.monotonic() < deadline, "the dead server's record never expired"
            await asyncio.sleep(0.1)
        # The live record has been renewed past several of its TTLs by now, and is still there.
        renewed = live.renewed
        while live.renewed < renewed + 5:
            assert time.monotonic() < deadline, "the live record is not being renewed"
            await asyncio.sleep(0.1)
        assert await listed(store) == {live.key}
        assert (await store.lease_time_to_live(live.lease, keys=True)).keys == [live.key]
    finally:
        await live.stop()


async def test_a_stopped_server_removes_its_record(store: kine_types.Backend) -> None:
    stopping = await published(store, "stopping", ttl=60)
    staying = await published(store, "staying", ttl=60)
    await stopping.start()
    await staying.start()
    try:
        await stopping.stop()
        assert await listed(store) == {staying.key}
        await stopping.stop()  # idempotent
    finally:
        await staying.stop()


async def test_a_lost_lease_is_granted_again_and_the_record_rewritten(store: kine_types.Backend) -> None:
    record = await published(store, "cut-off", ttl=60)
    first = record.lease
    await store.lease_revoke(first)  # the store was out of reach for longer than the TTL
    assert await listed(store) == set()
    await record.renew()
    assert record.lease != first
    assert await listed(store) == {record.key}
    found = await store.range(record.key)
    assert found.kvs[0].lease == record.lease and found.kvs[0].value == record.value


async def test_attach_keeps_only_a_published_record(tmp_path: Path) -> None:
    class Inner:
        async def start(self) -> None: ...

        async def wait(self) -> None: ...

        async def stop(self) -> None: ...

    inner = Inner()
    alone = config.load({"data-dir": str(tmp_path)}, environ={})
    assert cluster_join.attach(inner, alone, kine_address="unix:/nowhere") is inner
    shared = config.load(
        {"data-dir": str(tmp_path), "datastore-endpoint": "postgres://k3s@db/k3s"}, environ={}
    )
    assert cluster_join.attach(inner, shared, kine_address="unix:/nowhere") is inner  # not published
    write_cluster_file(tmp_path, lease=42)
    attached = cluster_join.attach(inner, shared, kine_address="unix:/nowhere")
    assert isinstance(attached, cluster_join.WithRouteRecord)
    assert attached.record.key == cluster_join.route_key("x") and attached.record.lease == 42
    assert attached.record.ttl == cluster_join.ROUTE_TTL
