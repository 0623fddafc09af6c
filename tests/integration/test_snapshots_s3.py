"""Snapshots kept in S3 (``--etcd-s3``): save, ls, delete, prune, the schedule, restore, errors.

The S3 server is real: moto's S3 API server (``moto_server``, installed by tests/install_moto.sh in
an environment of its own under .cache/moto) in its own process on 127.0.0.1, on an ephemeral port.
The commands run through the CLI in their own processes, as a user runs them; what they did to
the bucket is checked directly with the minio client, outside the code under test. The restore starts
an edge cluster on a fresh data dir with only the snapshot's name, and the API must list the
objects the snapshot holds.
"""

from __future__ import annotations

import asyncio
import datetime
import http.client
import http.server
import io
import logging
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import minio
import pytest

from services.client import clock as clock_
from services.kine import endpoint, types
from services.kine import settings as kine_settings
from supervisor import config, snapshot_schedule, snapshots
from tests.e2e import apiserver_fixtures as fixtures
from tests.e2e import conftest as e2e
from tests.integration import test_snapshots as plain
from tests.unit import test_snapshots as unit

MOTO_SERVER = Path(__file__).resolve().parents[2] / ".cache" / "moto" / "bin" / "moto_server"

NODE = "node1"
KEY, SECRET = "test-access-key", "test-secret-key"
FOLDER = "cluster-a"
T0 = 1_800_000_000


class S3:
    """The moto server and one fresh bucket on it."""

    def __init__(self, endpoint: str, bucket: str) -> None:
        self.endpoint = endpoint
        self.bucket = bucket
        self.client = minio.Minio(endpoint, access_key=KEY, secret_key=SECRET, secure=False, region="us-east-1")

    def values(self, **more: Any) -> dict[str, Any]:
        """The ``--etcd-s3*`` options reaching this bucket, as option values for ``config.build``."""
        return {
            "etcd-s3": True, "etcd-s3-endpoint": self.endpoint, "etcd-s3-insecure": True,
            "etcd-s3-bucket": self.bucket, "etcd-s3-folder": FOLDER,
            "etcd-s3-access-key": KEY, "etcd-s3-secret-key": SECRET, **more,
        }  # fmt: skip

    def flags(self, *, bucket: str | None = None) -> list[str]:
        """The same options as flags."""
        values = self.values(**({"etcd-s3-bucket": bucket} if bucket else {}))
        return [part for key, value in values.items() for part in ([f"--{key}"] if value is True else [f"--{key}", value])]

    def names(self) -> list[str]:
        listed = self.client.list_objects(self.bucket, prefix=f"{FOLDER}/")
        return sorted(item.object_name.removeprefix(f"{FOLDER}/") for item in listed)

    def put(self, name: str, data: bytes) -> None:
        self.client.put_object(self.bucket, f"{FOLDER}/{name}", io.BytesIO(data), len(data))

    def remove(self, name: str) -> None:
        self.client.remove_object(self.bucket, f"{FOLDER}/{name}")


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not MOTO_SERVER.is_file():
        reason = f"{MOTO_SERVER} is not installed (tests/install_moto.sh installs it; tests/run.sh runs that)"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as out:
        server = subprocess.Popen([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, f"moto_server did not start: {log.read_text()}"
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture
def s3(moto_endpoint: str) -> S3:
    store = S3(moto_endpoint, f"snapshots-{uuid.uuid4().hex[:12]}")
    store.client.make_bucket(store.bucket)
    return store


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in e2e.child_env().items() if not k.startswith("AWS_")}
    return subprocess.run(
        [sys.executable, "-m", "supervisor", "etcd-snapshot", *args, "--data-dir", str(data_dir),
         "--node-name", NODE, "--config", ""],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


def settings_for(tmp_path: Path, s3: S3, **values: Any) -> config.Settings:
    return unit.settings_for(tmp_path, **s3.values(**values))


def ls_rows(data_dir: Path, s3: S3) -> list[tuple[str, str]]:
    result = cli(data_dir, "ls", *s3.flags())
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["Name", "Location", "Size", "Created"]
    return [(line.split()[0], line.split()[1]) for line in lines[1:]]


# -- save, ls, delete, prune ------------------------------------------------------------------------


def test_save_uploads_and_ls_lists_both_places(tmp_path: Path, s3: S3) -> None:
    settings = settings_for(tmp_path, s3)
    unit.make_database(settings)
    data_dir = settings.supervisor.data_dir
    result = cli(data_dir, "save", "--name", "test", *s3.flags())
    assert result.returncode == 0, result.stderr
    saved, uploaded = result.stdout.splitlines()
    name = saved.split()[1]
    location = f"s3://{s3.bucket}/{FOLDER}/{name}"
    assert saved == f"Snapshot {name} saved." and uploaded == f"Snapshot {name} uploaded to {location}."
    local = snapshots.snapshot_dir(settings) / name
    head = s3.client.stat_object(s3.bucket, f"{FOLDER}/{name}")
    assert head.size == local.stat().st_size  # K3s keeps the local copy too
    assert {k.lower(): v for k, v in (head.metadata or {}).items() if k.lower().startswith("x-amz-meta-")} == {
        "x-amz-meta-k3s-node-name": NODE
    }
    assert ls_rows(data_dir, s3) == [(name, local.as_uri()), (name, location)]
    # The short spellings etcd-snapshot takes, and the JSON list with K3s's "s3" node.
    short = cli(data_dir, "ls", "--s3", "--s3-endpoint", s3.endpoint, "--s3-insecure", "--s3-bucket", s3.bucket,
                "--s3-folder", FOLDER, "--s3-access-key", KEY, "--s3-secret-key", SECRET, "-o", "json")  # fmt: skip
    assert short.returncode == 0, short.stderr
    assert '"nodeName": "s3"' in short.stdout and location in short.stdout


async def test_delete_and_prune_work_on_both_places(tmp_path: Path, s3: S3) -> None:
    settings = settings_for(tmp_path, s3)
    unit.make_database(settings)
    store = snapshots.store_for(settings)
    assert store is not None
    names = []
    for n in range(5):
        saved = await snapshots.save(settings, name="nightly", now=datetime.datetime.fromtimestamp(T0 + n, datetime.UTC))
        await snapshots.upload(store, saved)
        names.append(saved.name)
    other = f"nightly-other-{T0}"  # another node's snapshot in the shared folder: never pruned here
    s3.put(other, b"x")
    (snapshots.snapshot_dir(settings) / names[4]).unlink()  # the two places now differ
    s3.remove(names[0])
    data_dir = settings.supervisor.data_dir

    result = cli(data_dir, "prune", "--name", "nightly", "--snapshot-retention", "2", *s3.flags())
    assert result.returncode == 0, result.stderr
    local_left = sorted(item.name for item in snapshots.list_snapshots(snapshots.snapshot_dir(settings)))
    assert local_left == names[2:4]  # of 0..3 locally, the newest two
    assert s3.names() == sorted([*names[3:5], other])  # of 1..4 in S3, the newest two
    assert f"Snapshot {names[1]} deleted from s3://{s3.bucket}/{FOLDER}/{names[1]}." in result.stdout

    result = cli(data_dir, "delete", names[3], "nope", *s3.flags())
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"Snapshot {names[3]} deleted.", f"Snapshot {names[3]} deleted from s3://{s3.bucket}/{FOLDER}/{names[3]}."
    ]
    assert "Snapshot nope not found." in result.stderr
    assert [row[0] for row in ls_rows(data_dir, s3)] == [other, names[2], names[4]]


# -- the schedule -------------------------------------------------------------------------------------


async def test_scheduled_snapshots_upload_prune_s3_and_survive_a_missing_bucket(
    tmp_path: Path, s3: S3, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(
        tmp_path, s3, **{"etcd-snapshot-schedule-cron": "CRON_TZ=UTC 0 * * * *", "etcd-snapshot-retention": "2"}
    )
    unit.make_database(settings)
    clock = clock_.FakeClock(datetime.datetime(2026, 1, 1, 0, 30, tzinfo=datetime.UTC))
    scheduler = snapshot_schedule.Scheduler(settings, clock=clock)
    await scheduler.start()
    try:
        for _ in range(3):
            await _next_snapshot(scheduler, clock)
        assert s3.names() == scheduler.taken[1:]  # uploaded, then pruned to the retention
        assert len(scheduler.uploaded) == 3
        for key in s3.names():
            s3.remove(key)
        s3.client.remove_bucket(s3.bucket)
        with caplog.at_level(logging.ERROR, logger="supervisor.snapshot_schedule"):
            await _next_snapshot(scheduler, clock)
    finally:
        await scheduler.stop()
    assert len(scheduler.taken) == 4 and len(scheduler.uploaded) == 3
    local = [item.name for item in snapshots.list_snapshots(snapshots.snapshot_dir(settings))]
    assert local == scheduler.taken[2:]  # the failed upload's snapshot is kept locally
    errors = [record.getMessage() for record in caplog.records if record.levelno == logging.ERROR]
    assert f"S3 bucket {s3.bucket} does not exist" in errors[0]


async def _next_snapshot(scheduler: snapshot_schedule.Scheduler, clock: clock_.FakeClock) -> None:
    scheduler.took.clear()
    await clock.advance(3600)
    async with asyncio.timeout(60):  # the save and the uploads run on threads
        await scheduler.took.wait()


# -- restore ------------------------------------------------------------------------------------------


async def write_configmaps(data_dir: Path, count: int) -> None:
    backend = await endpoint.open_backend(kine_settings.KineSettings(data_dir=data_dir, datastore_endpoint=""))
    await backend.start()
    try:
        await backend.txn(
            types.Txn(
                success=[
                    types.PutOp(key=f"{plain.PREFIX}{n}".encode(), value=plain.configmap(f"snap-{n}", {"n": str(n)}))
                    for n in range(1, count + 1)
                ]
            )
        )
    finally:
        await backend.stop()


def test_restore_downloads_the_named_snapshot_into_a_fresh_data_dir(tmp_path: Path, s3: S3) -> None:
    source = tmp_path / "source" / "data"
    e2e.run_async(lambda: write_configmaps(source, 5))
    result = cli(source, "save", *s3.flags())
    assert result.returncode == 0, result.stderr
    name = result.stdout.split()[1]

    fresh = tmp_path / "fresh"
    flags = ("--cluster-reset", "--cluster-reset-restore-path", name, *s3.flags(), *plain.CLUSTER_FLAGS)
    with (
        fixtures.running_cluster("edge", fresh, extra_args=flags) as cluster,
        cluster.http(cluster.admin()) as http,
    ):
        response = http.get("/api/v1/namespaces/default/configmaps")
        assert response.status_code == 200, response.text
        listed = sorted(item["metadata"]["name"] for item in response.json()["items"])
    assert [item for item in listed if item.startswith("snap-")] == [f"snap-{n}" for n in range(1, 6)]
    downloaded = fresh / "data" / "server" / "db" / "snapshots" / name
    assert downloaded.read_bytes() == (source / "server" / "db" / "snapshots" / name).read_bytes()
    assert downloaded.stat().st_mode & 0o777 == 0o600


# -- errors ---------------------------------------------------------------------------------------------


def test_missing_bucket_and_dead_endpoint_are_one_error_line(tmp_path: Path, s3: S3) -> None:
    settings = settings_for(tmp_path, s3)
    unit.make_database(settings)
    data_dir = settings.supervisor.data_dir
    result = cli(data_dir, "save", *s3.flags(bucket="no-such-bucket"))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"k3s-supervisor: error: S3 bucket no-such-bucket does not exist at http://{s3.endpoint}"
    ]
    assert not snapshots.snapshot_dir(settings).exists()  # checked before any work, as K3s does

    dead = S3(f"127.0.0.1:{e2e.free_port()}", s3.bucket)
    result = cli(data_dir, "ls", *dead.flags())
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"k3s-supervisor: error: checking bucket {s3.bucket}: cannot reach http://{dead.endpoint}: Connection refused"
    ]


# -- through a proxy (--etcd-s3-proxy) --------------------------------------------------------------


class ForwardProxy(http.server.ThreadingHTTPServer):
    """A plain HTTP forward proxy: each request names its absolute URL, which it fetches; it keeps
    the requests it relayed."""

    def __init__(self) -> None:
        self.relayed: list[str] = []
        super().__init__(("127.0.0.1", 0), _Relay)


class _Relay(http.server.BaseHTTPRequestHandler):
    server: ForwardProxy
    protocol_version = "HTTP/1.1"

    def _relay(self) -> None:
        target = urllib.parse.urlsplit(self.path)
        self.server.relayed.append(f"{self.command} {target.path}")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        upstream = http.client.HTTPConnection(target.netloc, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection", "connection")}
        upstream.request(self.command, urllib.parse.urlunsplit(("", "", target.path, target.query, "")), body, headers)
        answer = upstream.getresponse()
        data = answer.read()
        self.send_response(answer.status)
        for key, value in answer.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        upstream.close()

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _relay

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    server = ForwardProxy()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_save_and_ls_through_a_proxy(tmp_path: Path, s3: S3, proxy: ForwardProxy) -> None:
    settings = settings_for(tmp_path, s3)
    unit.make_database(settings)
    data_dir = settings.supervisor.data_dir
    via = ["--etcd-s3-proxy", f"http://127.0.0.1:{proxy.server_address[1]}"]
    result = cli(data_dir, "save", "--name", "proxied", *s3.flags(), *via)
    assert result.returncode == 0, result.stderr
    name = result.stdout.splitlines()[0].split()[1]
    assert s3.names() == [name]
    assert f"PUT /{s3.bucket}/{FOLDER}/{name}" in proxy.relayed  # the upload went through the proxy
    relayed = len(proxy.relayed)
    listed = cli(data_dir, "ls", *s3.flags(), *via)
    assert listed.returncode == 0 and f"s3://{s3.bucket}/{FOLDER}/{name}" in listed.stdout, listed.stderr
    assert len(proxy.relayed) > relayed  # so did the listing
    dead = cli(data_dir, "ls", *s3.flags(), "--etcd-s3-proxy", f"http://127.0.0.1:{e2e.free_port()}")
    assert dead.returncode == 2 and len(dead.stderr.splitlines()) == 1, dead.stderr
    bad = cli(data_dir, "ls", *s3.flags(), "--etcd-s3-proxy", "proxy:3128")
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == [
        "k3s-supervisor: error: etcd-s3-proxy 'proxy:3128': give http://host:port or https://host:port"
    ]
