"""``client.GrpcBackend`` against a real etcd: the store contract over etcd's own server.

Debian's ``/usr/bin/etcd`` runs on free loopback ports in the test's temporary directory and is
killed in ``finally``; without the binary these tests skip, saying so. etcd differs from kine in
what the Backend contract leaves open (per-key versions, one revision for a whole transaction,
compaction without a retained window), so only the contract is asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from services.kine import client
from services.kine import types as t

ETCD = Path("/usr/bin/etcd")
START_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Etcd:
    """One single-member etcd; ``url`` is its client URL."""

    def __init__(self, workdir: Path, *, tls: dict[str, Path] | None = None) -> None:
        self.workdir = workdir
        self.tls = tls
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{free_port()}"
        self.peer = f"http://127.0.0.1:{free_port()}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [
            str(ETCD),
            "--name=test",
            f"--data-dir={self.workdir / 'data'}",
            f"--listen-client-urls={self.url}",
            f"--advertise-client-urls={self.url}",
            f"--listen-peer-urls={self.peer}",
            f"--initial-advertise-peer-urls={self.peer}",
            f"--initial-cluster=test={self.peer}",
        ]
        if self.tls:
            args += [
                f"--cert-file={self.tls['server_cert']}",
                f"--key-file={self.tls['server_key']}",
                f"--trusted-ca-file={self.tls['ca']}",
                "--client-cert-auth",
            ]
        log = (self.workdir / "etcd.log").open("wb")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while b"ready to serve client requests" not in (self.workdir / "etcd.log").read_bytes():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"etcd did not start:\n{(self.workdir / 'etcd.log').read_text()[-2000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def require_etcd() -> None:
    if not ETCD.exists():
        reason = f"{ETCD} is not installed (Debian package etcd-server)"
        print(f"SKIP: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Etcd]:
    require_etcd()
    server = Etcd(tmp_path_factory.mktemp("etcd"))
    try:
        server.start()
        yield server
    finally:
        server.kill()


@pytest.fixture
async def kv(etcd: Etcd) -> AsyncIterator[client.GrpcBackend]:
    backend = client.GrpcBackend(etcd.url, timeout=10.0)
    await backend.start()
    try:
        yield backend
    finally:
        await backend.stop()


@pytest.fixture
def prefix() -> bytes:
    """Tests share one etcd: each works under its own prefix."""
    return b"/t/%s/" % uuid.uuid4().hex[:8].encode()


def end_of(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


async def next_events(watch: t.Watch, count: int, *, within: float = 10.0) -> list[t.Event]:
    events: list[t.Event] = []
    async with asyncio.timeout(within):
        while len(events) < count:
            events.extend(await watch.next_batch())
    return events


def create(key: bytes, value: bytes) -> t.Txn:
    return t.Txn(
        compare=[t.Compare(key, "mod", "=", 0)], success=[t.PutOp(key, value)], failure=[t.RangeOp(key)]
    )


def update(key: bytes, value: bytes, rev: int) -> t.Txn:
    return t.Txn(
        compare=[t.Compare(key, "mod", "=", rev)], success=[t.PutOp(key, value)], failure=[t.RangeOp(key)]
    )


# -- KV --------------------------------------------------------------------------------------------


async def test_put_get_and_past_revisions(kv: client.GrpcBackend, prefix: bytes) -> None:
    key = prefix + b"a"
    first = await kv.put(key, b"1")
    second = await kv.put(key, b"2", prev_kv=True)
    assert second.revision > first.revision
    assert second.prev_kv is not None and second.prev_kv.value == b"1"
    got = await kv.range(key)
    assert got.revision == second.revision == await kv.current_revision()
    assert [(x.value, x.create_revision, x.mod_revision) for x in got.kvs] == [
        (b"2", first.revision, second.revision)
    ]
    assert (await kv.range(key, revision=first.revision)).kvs[0].value == b"1"
    with pytest.raises(t.FutureRevisionError, match="future revision"):
        await kv.range(key, revision=second.revision + 100)


async def test_prefix_list_limit_count(kv: client.GrpcBackend, prefix: bytes) -> None:
    for i in range(10):
        await kv.put(prefix + b"%02d" % i, b"v%d" % i)
    end = end_of(prefix)
    full = await kv.range(prefix, end)
    assert [x.key for x in full.kvs] == [prefix + b"%02d" % i for i in range(10)]
    assert full.count == 10 and not full.more
    page = await kv.range(prefix, end, limit=3)
    assert [x.key for x in page.kvs] == [prefix + b"00", prefix + b"01", prefix + b"02"]
    assert page.count == 10 and page.more
    nxt = await kv.range(prefix + b"02\x00", end, limit=3)
    assert [x.key for x in nxt.kvs] == [prefix + b"03", prefix + b"04", prefix + b"05"]
    assert all(x.value == b"" for x in (await kv.range(prefix, end, keys_only=True)).kvs)
    counted = await kv.range(prefix, end, count_only=True)
    assert counted.count == 10 and counted.kvs == []
    assert prefix + b"09" in [x.key for x in (await kv.range(prefix, b"\x00")).kvs]


async def test_delete_single_and_range(kv: client.GrpcBackend, prefix: bytes) -> None:
    for name, value in ((b"1", b"x"), (b"2", b"y"), (b"3", b"z")):
        await kv.put(prefix + name, value)
    one = await kv.delete_range(prefix + b"1", prev_kv=True)
    assert one.deleted == 1 and one.prev_kvs[0].value == b"x"
    missing = await kv.delete_range(prefix + b"1")
    assert missing.deleted == 0 and missing.revision == one.revision
    rest = await kv.delete_range(prefix, end_of(prefix), prev_kv=True)
    assert rest.deleted == 2 and sorted(x.key for x in rest.prev_kvs) == [prefix + b"2", prefix + b"3"]
    assert (await kv.range(prefix, end_of(prefix))).count == 0
    recreated = await kv.put(prefix + b"1", b"again")
    assert (await kv.range(prefix + b"1")).kvs[0].create_revision == recreated.revision


async def test_apiserver_transaction_shapes(kv: client.GrpcBackend, prefix: bytes) -> None:
    key = prefix + b"pod"
    made = await kv.txn(create(key, b"v1"))
    assert made.succeeded and made.revision == made.responses[0].revision
    again = await kv.txn(create(key, b"v1"))
    assert not again.succeeded and again.responses[0].kvs[0].mod_revision == made.revision
    updated = await kv.txn(update(key, b"v2", made.revision))
    assert updated.succeeded and updated.revision > made.revision
    stale = await kv.txn(update(key, b"v3", made.revision))
    assert not stale.succeeded and stale.responses[0].kvs[0].value == b"v2"
    delete = t.Txn(
        compare=[t.Compare(key, "mod", "=", updated.revision)],
        success=[t.DeleteOp(key, prev_kv=True)],
        failure=[t.RangeOp(key)],
    )
    deleted = await kv.txn(delete)
    assert deleted.succeeded and deleted.responses[0].prev_kvs[0].value == b"v2"
    assert (await kv.range(key)).kvs == []


async def test_general_compares(kv: client.GrpcBackend, prefix: bytes) -> None:
    await kv.put(prefix + b"g", b"hello")
    ok = await kv.txn(
        t.Txn(
            compare=[
                t.Compare(prefix + b"g", "value", "=", b"hello"),
                t.Compare(prefix + b"n", "version", "=", 0),
            ],
            success=[
                t.PutOp(prefix + b"g", b"world"),
                t.PutOp(prefix + b"n", b"now"),
                t.RangeOp(prefix + b"g"),
            ],
        )
    )
    assert ok.succeeded and ok.responses[2].kvs[0].value == b"world"
    assert all(r.revision == ok.revision for r in ok.responses)
    no = await kv.txn(
        t.Txn(compare=[t.Compare(prefix + b"m", "value", "=", b"")], success=[t.PutOp(prefix, b"1")])
    )
    assert not no.succeeded and (await kv.range(prefix)).kvs == []
    gt = await kv.txn(
        t.Txn(compare=[t.Compare(prefix + b"g", "create", ">", 0)], success=[t.DeleteOp(prefix + b"g")])
    )
    assert gt.succeeded and (await kv.range(prefix + b"g")).kvs == []


async def test_concurrent_cas_only_one_wins(kv: client.GrpcBackend, prefix: bytes) -> None:
    made = await kv.put(prefix + b"race", b"0")
    results = await asyncio.gather(
        *[kv.txn(update(prefix + b"race", b"%d" % i, made.revision)) for i in range(30)]
    )
    assert sum(r.succeeded for r in results) == 1
    winner = next(r.revision for r in results if r.succeeded)
    assert (await kv.range(prefix + b"race")).kvs[0].mod_revision == winner


# -- watches ----------------------------------------------------------------------------------------


async def test_watch_from_now_and_from_past(kv: client.GrpcBackend, prefix: bytes) -> None:
    first = await kv.put(prefix + b"a", b"1")
    live = await kv.watch(prefix, end_of(prefix))
    past = await kv.watch(prefix, end_of(prefix), start_revision=first.revision)
    await kv.put(prefix + b"a", b"2")
    await kv.put(b"/elsewhere", b"x")
    await kv.delete_range(prefix + b"a")
    got_live = await next_events(live, 2)
    assert [(e.type, e.kv.value) for e in got_live] == [(t.EventType.PUT, b"2"), (t.EventType.DELETE, b"")]
    assert got_live[0].prev_kv is not None and got_live[0].prev_kv.value == b"1"
    assert got_live[1].prev_kv is not None and got_live[1].prev_kv.value == b"2"
    got_past = await next_events(past, 3)
    assert [e.kv.mod_revision for e in got_past] == sorted(e.kv.mod_revision for e in got_past)
    assert got_past[0].kv.mod_revision == first.revision and got_past[0].prev_kv is None
    live.close()
    past.close()
    with pytest.raises(t.WatchClosedError):
        await live.next_batch()


async def test_watch_single_key_and_future_start(kv: client.GrpcBackend, prefix: bytes) -> None:
    key = prefix + b"k"
    now = await kv.current_revision()
    single = await kv.watch(key)
    future = await kv.watch(key, start_revision=now + 3)
    await kv.put(prefix + b"k2", b"no")
    await kv.put(key, b"1")
    await kv.put(key, b"2")
    assert [e.kv.value for e in await next_events(single, 2)] == [b"1", b"2"]
    assert [e.kv.value for e in await next_events(future, 1)] == [b"2"]


async def test_synced_revision_follows_delivered_events(kv: client.GrpcBackend, prefix: bytes) -> None:
    assert await kv.synced_revision() >= await kv.current_revision() - 1  # no watch: the current revision
    watch = await kv.watch(prefix, end_of(prefix))
    written = [await kv.put(prefix + b"%d" % i, b"v") for i in range(5)]
    synced = await kv.synced_revision()
    assert synced >= written[-1].revision
    # Every event up to the synced revision is already queued: none has to be waited for.
    assert watch.pending()
    events: list[t.Event] = []
    while watch.pending():
        events.extend(await watch.next_batch())
    assert [e.kv.mod_revision for e in events] == [w.revision for w in written]


# -- compaction ------------------------------------------------------------------------------------


async def test_compaction_and_compacted_watch(kv: client.GrpcBackend, prefix: bytes) -> None:
    key = prefix + b"c"
    first = await kv.put(key, b"0")
    for i in range(10):
        await kv.put(key, b"%d" % i)
    target = (await kv.put(key, b"last")).revision - 3
    assert await kv.compact(target) == target  # etcd keeps no retained window
    assert await kv.compact_revision() == target
    with pytest.raises(t.CompactedError) as read:
        await kv.range(key, revision=first.revision)
    assert read.value.compact_revision == target
    with pytest.raises(t.CompactedError) as watched:
        await kv.watch(key, start_revision=first.revision)
    assert watched.value.compact_revision == target
    with pytest.raises(t.CompactedError):
        await kv.compact(target)
    # A fresh client (no floor learned yet) finds the same compact revision.
    async with client.GrpcBackend(kv.address) as other:
        assert await other.compact_revision() == target
    assert (await kv.range(key, revision=target + 1)).kvs
    watch = await kv.watch(key, start_revision=target + 1)
    assert [e.kv.value for e in await next_events(watch, 3)] == [b"8", b"9", b"last"]


# -- leases ------------------------------------------------------------------------------------------


async def test_leases(kv: client.GrpcBackend, prefix: bytes) -> None:
    lease = await kv.lease_grant(60)
    assert lease.id > 0 and lease.ttl == 60
    await kv.put(prefix + b"a", b"1", lease=lease.id)
    await kv.put(prefix + b"b", b"1", lease=lease.id)
    info = await kv.lease_time_to_live(lease.id, keys=True)
    assert sorted(info.keys) == [prefix + b"a", prefix + b"b"] and 58 <= info.ttl <= 60
    assert info.granted_ttl == 60
    assert lease.id in await kv.lease_list()
    assert (await kv.lease_keepalive(lease.id)).ttl == 60
    with pytest.raises(t.LeaseExistsError):
        await kv.lease_grant(5, lease_id=lease.id)
    with pytest.raises(t.LeaseNotFoundError):
        await kv.put(prefix + b"c", b"1", lease=12345)
    await kv.lease_revoke(lease.id)
    assert (await kv.range(prefix, end_of(prefix))).count == 0
    with pytest.raises(t.LeaseNotFoundError):
        await kv.lease_revoke(lease.id)
    with pytest.raises(t.LeaseNotFoundError):
        await kv.lease_keepalive(lease.id)
    assert (await kv.lease_time_to_live(lease.id)).ttl == -1


async def test_lease_expiry_deletes_keys(kv: client.GrpcBackend, prefix: bytes) -> None:
    lease = await kv.lease_grant(2)
    await kv.put(prefix + b"ttl", b"x", lease=lease.id)
    watch = await kv.watch(prefix + b"ttl")
    events = await next_events(watch, 1, within=15)
    assert events[0].type == t.EventType.DELETE and events[0].prev_kv is not None


async def test_status_reports_a_size(kv: client.GrpcBackend) -> None:
    assert await kv.db_size() > 0


# -- failures ------------------------------------------------------------------------------------------


async def test_unreachable_endpoint_fails_to_start() -> None:
    backend = client.GrpcBackend(f"http://127.0.0.1:{free_port()}", connect_timeout=0.5)
    with pytest.raises(t.DatastoreError, match="unreachable"):
        await backend.start()
    await backend.stop()


async def test_lost_stream_closes_every_watch_and_recovers(tmp_path: Path) -> None:
    require_etcd()
    server = Etcd(tmp_path)
    try:
        server.start()
        async with client.GrpcBackend(server.url, timeout=2.0) as kv:
            first = await kv.watch(b"/lost/a")
            second = await kv.watch(b"/lost/", b"/lost0")
            server.kill()
            for watch in (first, second):
                with pytest.raises(t.WatchClosedError, match="watch stream lost"):
                    await asyncio.wait_for(watch.next_batch(), 10)
            with pytest.raises(t.DatastoreError):
                await kv.put(b"/lost/a", b"1")
            # The same etcd back on the same address: calls and new watches work again.
            server.start()
            async with asyncio.timeout(20):
                while True:
                    with contextlib.suppress(t.DatastoreError):
                        again = await kv.watch(b"/lost/", b"/lost0", start_revision=1)
                        break
            put = await kv.put(b"/lost/a", b"2")
            assert [e.kv.mod_revision for e in await next_events(again, 1)] == [put.revision]
    finally:
        server.kill()


# -- TLS ---------------------------------------------------------------------------------------------------


def write_pki(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def issue(name: str, key, issuer_name, issuer_key, *, ca: bool = False, usage=None, ip: bool = False):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(issuer_name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if usage:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        if ip:
            san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
            builder = builder.add_extension(san, critical=False)
        return builder.sign(issuer_key or key, hashes.SHA256())

    files: dict[str, Path] = {}

    def save(stem: str, cert, key) -> None:
        files[stem] = directory / f"{stem}.crt"
        files[stem].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{stem}_key"] = directory / f"{stem}.key"
        files[f"{stem}_key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue("test-ca", ca_key, None, None, ca=True)
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    server_usage = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    save("ca", ca, ca_key)
    save("server", issue("etcd", server_key, ca.subject, ca_key, usage=server_usage, ip=True), server_key)
    client_usage = [ExtendedKeyUsageOID.CLIENT_AUTH]
    save("client", issue("apiserver", client_key, ca.subject, ca_key, usage=client_usage), client_key)
    files["server_cert"] = files["server"]
    return files


async def test_https_endpoint_with_client_certificates(tmp_path: Path) -> None:
    require_etcd()
    pki = write_pki(tmp_path)
    server = Etcd(tmp_path, tls=pki)
    try:
        server.start()
        assert server.url.startswith("https://")
        tls = client.TlsFiles(ca=pki["ca"], cert=pki["client"], key=pki["client_key"])
        async with client.GrpcBackend(server.url, tls=tls) as kv:
            put = await kv.put(b"/tls", b"yes")
            assert (await kv.range(b"/tls")).kvs[0].mod_revision == put.revision
        # Without a client certificate etcd refuses the handshake: starting fails, clearly.
        anonymous = client.GrpcBackend(server.url, tls=client.TlsFiles(ca=pki["ca"]), connect_timeout=2)
        with pytest.raises(t.DatastoreError):
            await anonymous.start()
        await anonymous.stop()
    finally:
        server.kill()


def test_address_forms() -> None:
    assert client.parse_address("unix:/run/kine.sock") == ("unix:/run/kine.sock", False)
    assert client.parse_address("unix:///run/kine.sock") == ("unix:///run/kine.sock", False)
    assert client.parse_address("127.0.0.1:2379") == ("127.0.0.1:2379", False)
    assert client.parse_address("http://127.0.0.1:2379") == ("127.0.0.1:2379", False)
    assert client.parse_address("https://etcd.local:2379/") == ("etcd.local:2379", True)
    assert client.parse_address("etcd:2379", tls=client.TlsFiles()) == ("etcd:2379", True)
    for bad in ("https://a:1,https://b:1", "http://", "unix:"):
        with pytest.raises(ValueError):
            client.parse_address(bad)
    with pytest.raises(ValueError, match="plain-text"):
        client.parse_address("http://a:1", tls=client.TlsFiles())


# -- the API server's compactor (kine compacts itself; a real etcd needs kube-apiserver's) --------------


async def test_the_compactor_compacts_one_round_behind_and_once_per_round(kv: client.GrpcBackend, prefix: bytes) -> None:
    from services.apiserver import compactor

    existing = (await kv.range(compactor.KEY)).kvs
    version = existing[0].version if existing else 0
    await kv.put(prefix + b"a", b"1")
    version, first = await compactor.compact_once(kv, version=version, previous=0)
    lost_version, _ = await compactor.compact_once(kv, version=version - 1, previous=first)  # a late server
    assert lost_version == version  # it only learned the version: no compaction by it
    await kv.put(prefix + b"a", b"2")
    version, second = await compactor.compact_once(kv, version=version, previous=first)
    assert second > first
    assert await kv.compact_revision() == first
    with pytest.raises(t.CompactedError):
        await kv.range(prefix + b"a", revision=first - 1)
