"""Snapshots under a write load, restored into a fresh start, on SQLite, PostgreSQL, MariaDB; etcd.

The write load goes through kine's own backend, in this process: each write is one transaction
that creates ConfigMap ``snap-<n>`` and sets ConfigMap ``snap-counter`` to ``n``. A snapshot that
is consistent therefore holds exactly ``snap-1 .. snap-<counter>``: a torn one (some pages or rows
from before a write, some from after) shows a hole, an extra object or a counter that disagrees.
``etcd-snapshot save`` runs through the CLI, in its own process, while the load goes on. The
snapshot file itself is then read with plain ``sqlite3`` as the oracle, and the restore is the
real thing: ``start --profile edge --cluster-reset --cluster-reset-restore-path=FILE`` on the same
data dir and datastore, after which the API must list exactly the snapshot's objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from services.kine import client, endpoint, types
from services.kine import settings as kine_settings
from tests import conftest as shared
from tests.e2e import apiserver_fixtures as fixtures
from tests.e2e import conftest as e2e

PREFIX = "/registry/configmaps/default/snap-"
COUNTER = PREFIX + "counter"
CLUSTER_FLAGS = (
    "--disable-agent", "--disable-scheduler", "--disable-controller-manager", "--etcd-disable-snapshots",
)  # fmt: skip
ETCDCTL = Path("/usr/bin/etcdctl")
WARM_UP = 200  # writes before the save starts


def configmap(name: str, data: dict[str, str]) -> bytes:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": "default",
                "uid": f"uid-{name}",
                "creationTimestamp": "2026-01-01T00:00:00Z",
            },
            "data": data,
        }  # fmt: skip
    ).encode()


class Load:
    """One writer: create snap-<n> and set the counter to n, in one transaction, as fast as it goes."""

    def __init__(self, backend: types.Backend) -> None:
        self.backend = backend
        self.acknowledged = 0
        self.warm = asyncio.Event()  # set once WARM_UP writes are in
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            n = self.acknowledged + 1
            await self.backend.txn(
                types.Txn(
                    success=[
                        types.PutOp(key=f"{PREFIX}{n}".encode(), value=configmap(f"snap-{n}", {"n": str(n)})),
                        types.PutOp(key=COUNTER.encode(), value=configmap("snap-counter", {"count": str(n)})),
                    ]
                )
            )
            self.acknowledged = n
            if n >= WARM_UP:
                self.warm.set()

    def stop(self) -> None:
        self._stop.set()


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "supervisor", *args, "--config", ""]


async def save_during_load(data_dir: Path, datastore: str) -> tuple[Path, int, int, int]:
    """Start the load, save a snapshot through the CLI meanwhile.

    Returns the file and the writes acknowledged when the save started, when it returned, and in all.
    """
    settings = kine_settings.KineSettings(data_dir=data_dir, datastore_endpoint=datastore)
    backend = await endpoint.open_backend(settings)
    await backend.start()
    load = Load(backend)
    writer = asyncio.create_task(load.run(), name="snapshot test load")
    try:
        await load.warm.wait()
        before = load.acknowledged
        store = ["--datastore-endpoint", datastore] if datastore else []
        proc = await asyncio.create_subprocess_exec(
            *cli("etcd-snapshot", "save", "--data-dir", str(data_dir), "--name", "test", *store),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=e2e.child_env(),
        )  # fmt: skip
        out, err = await proc.communicate()
        after = load.acknowledged
    finally:
        load.stop()
        await writer
        await backend.stop()
    assert proc.returncode == 0, err.decode()
    name = out.decode().split()[1]  # "Snapshot <name> saved."
    return data_dir / "server" / "db" / "snapshots" / name, before, after, load.acknowledged


def snapshot_objects(path: Path) -> dict[str, dict[str, Any]]:
    """The live snap-* objects in a snapshot file, read with plain sqlite3 (the oracle)."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute(
            "SELECT kv.name, kv.value FROM kine AS kv JOIN (SELECT MAX(id) AS id FROM kine"
            " WHERE name LIKE ? GROUP BY name) AS newest ON newest.id = kv.id WHERE kv.deleted = 0",
            (PREFIX + "%",),
        ).fetchall()
    return {name.rsplit("/", 1)[1]: json.loads(value) for name, value in rows}


def assert_consistent(objects: dict[str, dict[str, Any]]) -> int:
    """snap-1 .. snap-N and a counter saying N; return N."""
    count = int(objects["snap-counter"]["data"]["count"])
    assert sorted(name for name in objects if name != "snap-counter") == sorted(
        f"snap-{n}" for n in range(1, count + 1)
    )
    return count


def restore_and_list(base: Path, snapshot: Path, datastore: str) -> dict[str, dict[str, Any]]:
    """Start an edge cluster with --cluster-reset on the snapshot; the snap-* objects the API lists."""
    store = ("--datastore-endpoint", datastore) if datastore else ()
    flags = ("--cluster-reset", "--cluster-reset-restore-path", str(snapshot), *store, *CLUSTER_FLAGS)
    with (
        fixtures.running_cluster("edge", base, extra_args=flags) as cluster,
        cluster.http(cluster.admin()) as http,
    ):
        response = http.get("/api/v1/namespaces/default/configmaps")
        assert response.status_code == 200, response.text
        items = response.json()["items"]
    return {item["metadata"]["name"]: item for item in items if item["metadata"]["name"].startswith("snap-")}


def restart_refused(base: Path, snapshot: Path, datastore: str) -> str:
    """A second start with the same reset flags must refuse (it would drop everything written since)."""
    store = ["--datastore-endpoint", datastore] if datastore else []
    result = subprocess.run(
        [*cli("start", "--profile", "edge", "--data-dir", str(base / "data"), "--cluster-reset",
              "--cluster-reset-restore-path", str(snapshot), *store)],
        capture_output=True, text=True, timeout=60, env=e2e.child_env(),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    return result.stderr


async def test_sqlite_snapshot_during_writes_restores_consistently(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    snapshot, before, after, final = await save_during_load(data_dir, "")
    print(f"sqlite: {before} writes before the save, {after} when it returned")
    count = assert_consistent(snapshot_objects(snapshot))
    assert before <= count <= after

    restored = restore_and_list(tmp_path, snapshot, "")
    assert assert_consistent(restored) == count
    assert {name: item["data"] for name, item in restored.items()} == {
        name: item["data"] for name, item in snapshot_objects(snapshot).items()
    }
    # The old database went aside whole (with every write made after the snapshot).
    (backup,) = (data_dir / "server" / "db").glob("state.db.bak-*[0-9]")
    with contextlib.closing(sqlite3.connect(backup)) as conn:
        kept = conn.execute(
            "SELECT COUNT(DISTINCT name) FROM kine WHERE name LIKE ?", (PREFIX + "%",)
        ).fetchone()[0]
    assert kept == final + 1  # snap-1..snap-<final> and the counter
    assert "already reset" in restart_refused(tmp_path, snapshot, "")


@pytest.mark.parametrize("kind", ["postgres", "mysql"])
async def test_sql_snapshot_during_writes_restores_consistently(tmp_path: Path, kind: str) -> None:
    shared.require(shared.POSTGRES if kind == "postgres" else shared.MYSQL, kind)
    name = shared.unique_name("kine_snap")
    datastore = shared.endpoint_for(kind, name)
    try:
        snapshot, before, after, _ = await save_during_load(tmp_path / "data", datastore)
        print(f"{kind}: {before} writes before the save, {after} when it returned")
        count = assert_consistent(snapshot_objects(snapshot))
        assert before <= count <= after
        restored = await asyncio.to_thread(restore_and_list, tmp_path, snapshot, datastore)
        assert assert_consistent(restored) == count
        assert await backup_rows(kind, name) > 0  # the replaced table was kept as kine_bak_<time>
    finally:
        await shared.drop_database(kind, name)


async def backup_rows(kind: str, database: str) -> int:
    if kind == "postgres":
        import asyncpg

        conn = await asyncpg.connect(shared.endpoint_for(kind, database))
        try:
            table = await conn.fetchval("SELECT tablename FROM pg_tables WHERE tablename LIKE 'kine_bak_%'")
            return int(await conn.fetchval(f'SELECT COUNT(*) FROM "{table}"'))
        finally:
            await conn.close()
    import aiomysql

    conn = await aiomysql.connect(host=shared.MYSQL[0], port=shared.MYSQL[1], user="root", db=database)
    try:
        async with conn.cursor() as cur:
            await cur.execute("SHOW TABLES LIKE 'kine\\_bak\\_%'")
            (table,) = await cur.fetchone()
            await cur.execute(f"SELECT COUNT(*) FROM `{table}`")
            return int((await cur.fetchone())[0])
    finally:
        conn.close()


async def put_keys(url: str, count: int) -> None:
    async with client.GrpcBackend(url) as backend:
        for n in range(count):
            await backend.put(f"/registry/test/{n}".encode(), b"x" * 100)


def test_etcd_snapshot_is_etcds_own(tmp_path: Path) -> None:
    e2e.require_binary(e2e.ETCD)
    etcd = e2e.EtcdProcess(data_dir=tmp_path / "etcd", log_path=tmp_path / "etcd.log")
    with e2e.running(etcd):
        url = f"http://{etcd.endpoint}"
        e2e.run_async(lambda: put_keys(url, 20))
        result = subprocess.run(
            cli("etcd-snapshot", "save", "--data-dir", str(tmp_path / "data"), "--datastore-endpoint", url),
            capture_output=True, text=True, timeout=60, env=e2e.child_env(),
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (snapshot,) = (tmp_path / "data" / "server" / "db" / "snapshots").iterdir()
    assert snapshot.read_bytes()[16:20] == bytes.fromhex("edda0ced")  # bbolt's magic
    if not ETCDCTL.is_file():
        print(f"SKIP: {ETCDCTL} is not installed; the file's format was checked by its magic only")
        return
    status = subprocess.run(
        [str(ETCDCTL), "snapshot", "status", str(snapshot), "-w", "json"],
        capture_output=True, text=True, timeout=30, env={"ETCDCTL_API": "3"},
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    assert info["revision"] >= 20 and info["totalKey"] >= 20, info
