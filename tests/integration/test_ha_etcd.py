"""Several servers on one real etcd (issue 6), started as users start them.

Debian's etcd runs over TLS with client certificates; each server is ``python -m supervisor start``
with the same ``--datastore-endpoint``/``--datastore-*file`` flags and ``--token``. One story,
because starting servers is the expensive part: the second server joins with the first one's CAs
and service key (the bootstrap record in etcd, sealed with the token); a third with a wrong token
is refused with exit code 2 and writes nothing; the two bundled NATS servers route to each other
over TLS (a message published through A's NATS reaches a subscriber on B's; the route port greets a
peer whose certificate the server CA signed, and refuses one without); each server's route record sits on a 60 s lease, and a server stopped gracefully takes its
record out while the other's stays. Without ``/usr/bin/etcd`` it skips, saying so.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import ssl
import time
from pathlib import Path

import nats.aio.client

from services.kine import client
from supervisor import cluster_join, pki
from supervisor import nats as nats_server
from tests.e2e import apiserver_fixtures as fixtures
from tests.e2e.apiserver_fixtures import SupervisorCluster
from tests.integration import test_ha as ha

TOKEN = "ha-etcd-token"
QUIET = ("--disable-agent", "--disable-controller-manager", "--disable-scheduler")
ROUTE_DEADLINE = 60.0  # seconds for two NATS servers to route a message once both run


def test_two_servers_on_one_etcd_share_one_cluster(tmp_path: Path) -> None:
    with fixtures.running_etcd(tmp_path, tls=True) as etcd:
        args = (*etcd.supervisor_args(), "--token", TOKEN, *QUIET)
        started: list[SupervisorCluster] = []
        try:
            for name in ("a", "b"):  # one after the other: the first one creates the cluster
                started.append(
                    SupervisorCluster(
                        kind="server",
                        data_dir=tmp_path / name,
                        kubeconfig=tmp_path / name / "kubeconfig.yaml",
                        log_path=tmp_path / f"{name}.log",
                        extra_args=args,
                    )
                )
                started[-1].start()
            a, b = started
            for stem in pki.CAS:
                assert a.tls.crt(stem).read_bytes() == b.tls.crt(stem).read_bytes()
            assert a.tls.service_key.read_bytes() == b.tls.service_key.read_bytes()
            check_wrong_token_refused(tmp_path, etcd)
            check_nats_routes_over_tls(a, b)
            asyncio.run(check_route_records(etcd, a, b))
        finally:
            for cluster in started:
                cluster.stop()
            for cluster in started:
                cluster.print_log()


def check_wrong_token_refused(base: Path, etcd: fixtures.EtcdServer) -> None:
    tls_flags = etcd.supervisor_args()[2:]  # everything after --datastore-endpoint <url>
    done, data_dir = ha.refused(base, etcd.url, *tls_flags, "--token", "not-the-token")
    assert done.returncode == 2, done.stderr
    assert "another token" in done.stderr and "--token" in done.stderr
    assert not list((data_dir / "server").rglob("*.crt")), "a refused server must write nothing"


# -- NATS routes --------------------------------------------------------------------------------------------


def nats_url(cluster: SupervisorCluster) -> str:
    """The client URL of the server's bundled NATS, from its nats.conf and credentials."""
    directory = nats_server.nats_dir(cluster.data_dir)
    conf = (directory / "nats.conf").read_text()
    port = int(re.search(r'^listen: "127\.0\.0\.1:(\d+)"', conf, re.MULTILINE)[1])  # type: ignore[index]
    return nats_server.client_url(port, nats_server.ensure_credentials(cluster.data_dir))


def check_nats_routes_over_tls(a: SupervisorCluster, b: SupervisorCluster) -> None:
    for cluster in (a, b):
        ha.assert_routes_use_tls(cluster)
    listen = json.loads(cluster_join.routes_path(a.data_dir).read_text())["listen"]
    info = route_info(listen, tls=a.tls, client_cert=True)
    assert info.startswith(b"INFO "), "a peer with a certificate from the server CA is greeted"
    try:
        refused = route_info(listen, tls=a.tls, client_cert=False)
    except ssl.SSLError as exc:
        refused = str(exc).encode()
    assert not refused.startswith(b"INFO "), "a peer without a certificate must be refused"
    took = asyncio.run(publish_through_a_receive_on_b(nats_url(a), nats_url(b)))
    print(f"NATS over TLS routes: a message published through A reached B's subscriber after {took:.2f} s")


def route_info(listen: str, *, tls: pki.TlsFiles, client_cert: bool) -> bytes:
    """The first line a route port sends after the TLS handshake (its INFO, to a peer it accepts).

    The route's certificate is checked against the server CA and the route address, as peers do.
    """
    host, _, port = listen.rpartition(":")
    context = ssl.create_default_context(cafile=str(tls.crt(pki.SERVER_CA)))
    if client_cert:  # this server's own route certificate: one the server CA signed
        context.load_cert_chain(str(tls.crt(pki.NATS_ROUTE)), str(tls.key(pki.NATS_ROUTE)))
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=host) as sock:
            return sock.makefile("rb").readline()


async def publish_through_a_receive_on_b(url_a: str, url_b: str) -> float:
    subscriber, publisher = nats.aio.client.Client(), nats.aio.client.Client()
    await subscriber.connect(url_b, allow_reconnect=False)
    await publisher.connect(url_a, allow_reconnect=False)
    try:
        received: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_message(message: nats.aio.client.Msg) -> None:
            await received.put(message.data)

        await subscriber.subscribe("ha.etcd.check", cb=on_message)
        await subscriber.flush()
        start = time.monotonic()
        # Interest crosses the route a moment after the subscription: publish until one arrives.
        while True:
            assert time.monotonic() - start < ROUTE_DEADLINE, "no message crossed from A's NATS to B's"
            await publisher.publish("ha.etcd.check", b"over tls")
            await publisher.flush()
            try:
                assert await asyncio.wait_for(received.get(), 0.5) == b"over tls"
                return time.monotonic() - start
            except TimeoutError:
                continue
    finally:
        await publisher.close()
        await subscriber.close()


# -- route records ------------------------------------------------------------------------------------------


def record_key(cluster: SupervisorCluster) -> bytes:
    return cluster_join.route_key(json.loads(cluster_join.routes_path(cluster.data_dir).read_text())["id"])


async def check_route_records(etcd: fixtures.EtcdServer, a: SupervisorCluster, b: SupervisorCluster) -> None:
    assert etcd.tls is not None
    tls = client.TlsFiles(ca=etcd.tls.ca, cert=etcd.tls.client_cert, key=etcd.tls.client_key)
    prefix = cluster_join.ROUTES_PREFIX
    async with client.GrpcBackend(etcd.url, tls=tls) as store:
        records = {kv.key: kv for kv in (await store.range(prefix, prefix[:-1] + b"0")).kvs}
        assert set(records) == {record_key(a), record_key(b)}
        for kv in records.values():
            lease = await store.lease_time_to_live(kv.lease, keys=True)
            assert lease.granted_ttl == cluster_join.ROUTE_TTL and lease.ttl > 0
            assert lease.keys == [kv.key]
        b.stop()  # gracefully: B takes its record out at once, A's stays
        left = [kv.key for kv in (await store.range(prefix, prefix[:-1] + b"0")).kvs]
        assert left == [record_key(a)]
