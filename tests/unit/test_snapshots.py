"""Snapshot files: names, ls, delete, prune, compression, restore, the reset marker, the schedule.

Everything runs on real SQLite files in the test's temporary directory (the datastore a server
uses by default); the schedule runs on a fake clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from services.client import clock as clock_
from services.kine import snapshot as kine_snapshot
from services.kine.dialects import sqlite as sqlite_dialect
from supervisor import cli, config, s3, snapshot_schedule, snapshots

NODE = "node1"
T0 = 1_800_000_000  # a Unix time for hand-made snapshot names


def settings_for(tmp_path: Path, **values: Any) -> config.Settings:
    base = {"data-dir": str(tmp_path / "data"), "node-name": NODE}
    return config.build({**base, **values}, is_root=True)


def make_database(settings: config.Settings, keys: int = 10) -> Path:
    """A kine SQLite database with ``keys`` live keys and one lease, as kine lays it out."""
    path = settings.supervisor.data_dir / "server" / "db" / "state.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        for statement in sqlite_dialect.SCHEMA:
            conn.execute(statement)
        conn.executemany(
            "INSERT INTO kine (name, created, deleted, create_revision, prev_revision, lease, value, old_value)"
            " VALUES (?, 1, 0, 0, 0, 0, ?, NULL)",
            [(f"/registry/test/{n}", f"value-{n}".encode()) for n in range(keys)],
        )
        conn.execute("INSERT INTO kine_leases (id, ttl, expires_at) VALUES (7, 60, 0)")
    return path


def keys_in(path: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return [row[0] for row in conn.execute("SELECT name FROM kine ORDER BY id")]


def journal_mode(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])


def touch_snapshots(settings: config.Settings, names: list[str]) -> None:
    directory = snapshots.snapshot_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        (directory / name).write_bytes(b"x")


# -- save, ls ------------------------------------------------------------------------------------


async def test_save_names_the_file_like_k3s_and_describes_it(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    make_database(settings)
    moment = datetime.datetime.fromtimestamp(T0, datetime.UTC)
    saved = await snapshots.save(settings, name="on-demand", now=moment)
    assert saved.name == f"on-demand-{NODE}-{T0}"
    assert saved.path == settings.supervisor.data_dir / "server" / "db" / "snapshots" / saved.name
    assert saved.path.stat().st_mode & 0o777 == 0o600
    info = kine_snapshot.read_info(saved.path)
    assert (info.kind, info.revision, info.rows) == ("kine", 10, 10)
    assert info.meta["format"] == "kine-snapshot/v1" and info.meta["node"] == NODE
    assert info.meta["source"] == "sqlite" and info.meta["created"] == str(T0)
    assert journal_mode(saved.path) == "delete"  # self-contained: no -wal file goes with it
    with pytest.raises(kine_snapshot.SnapshotError, match="already exists"):
        await snapshots.save(settings, name="on-demand", now=moment)


async def test_save_without_a_database_says_so(tmp_path: Path) -> None:
    with pytest.raises(kine_snapshot.SnapshotError, match="no SQLite datastore"):
        await snapshots.save(settings_for(tmp_path), name="on-demand")
    with pytest.raises(kine_snapshot.SnapshotError, match="memory"):
        await snapshots.save(settings_for(tmp_path, **{"datastore-endpoint": "memory://"}), name="x")


def test_ls_prints_k3s_columns_oldest_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = settings_for(tmp_path)
    touch_snapshots(settings, [f"etcd-snapshot-{NODE}-{T0 + 60}", f"on-demand-{NODE}-{T0}.zip", ".partial"])
    assert asyncio.run(snapshots.run_command(settings, "ls")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["Name", "Location", "Size", "Created"]
    first = lines[1].split()
    assert first[0] == f"on-demand-{NODE}-{T0}.zip"
    assert first[1] == (snapshots.snapshot_dir(settings) / first[0]).as_uri()
    assert first[2] == "1"
    created = datetime.datetime.fromisoformat(first[3].replace("Z", "+00:00"))
    assert created.timestamp() == T0
    assert lines[2].split()[0] == f"etcd-snapshot-{NODE}-{T0 + 60}" and len(lines) == 3
    # Columns line up as Go's tabwriter lays them out: each starts at the same offset in every row.
    assert len({line.index(line.split()[1]) for line in lines}) == 1


def test_ls_json_is_a_snapshot_file_list(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    touch_snapshots(settings, [f"on-demand-{NODE}-{T0}"])
    document = json.loads(snapshots.render(snapshots.list_snapshots(snapshots.snapshot_dir(settings)),
                                           fmt="json", settings=settings))  # fmt: skip
    assert document["kind"] == "ETCDSnapshotFileList"
    (item,) = document["items"]
    assert item["spec"]["snapshotName"] == f"on-demand-{NODE}-{T0}" and item["status"]["size"] == "1"


# -- delete, prune ---------------------------------------------------------------------------------


def test_delete_removes_named_snapshots_only(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    touch_snapshots(settings, ["a-node1-1", "b-node1-2"])
    outside = tmp_path / "data" / "server" / "db" / "keep"
    outside.write_bytes(b"x")
    deleted, missing = snapshots.delete(settings, ["a-node1-1", "nope", "../keep"])
    assert deleted == ["a-node1-1"] and missing == ["nope", "../keep"]
    assert outside.exists()
    assert [item.name for item in snapshots.list_snapshots(snapshots.snapshot_dir(settings))] == ["b-node1-2"]


def test_prune_keeps_the_newest_of_this_name_and_node(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    mine = [f"on-demand-{NODE}-{T0 + n}" for n in range(5)]
    others = [f"on-demand-other-{T0}", f"etcd-snapshot-{NODE}-{T0}"]
    touch_snapshots(settings, mine + others)
    assert snapshots.prune(settings, name="on-demand", retention=2) == mine[:3]
    left = {item.name for item in snapshots.list_snapshots(snapshots.snapshot_dir(settings))}
    assert left == set(mine[3:] + others)
    assert snapshots.prune(settings, name="on-demand", retention=0) == []  # 0 keeps everything


# -- restore ----------------------------------------------------------------------------------------


async def test_compressed_snapshot_restores_and_old_database_moves_aside(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, **{"etcd-snapshot-compress": True})
    database = make_database(settings, keys=5)
    saved = await snapshots.save(settings, name="on-demand")
    assert saved.name.endswith(".zip") and kine_snapshot.fileformat.kind(saved.path) == "zip"
    with contextlib.closing(sqlite3.connect(database, isolation_level=None)) as conn:
        conn.execute("DELETE FROM kine")  # what the restore must undo
    reset = settings_for(tmp_path, **{"cluster-reset": True, "cluster-reset-restore-path": str(saved.path)})
    await snapshots.reset(reset)
    assert keys_in(database) == [f"/registry/test/{n}" for n in range(5)]
    with contextlib.closing(sqlite3.connect(database)) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        (expires_at,) = conn.execute("SELECT expires_at FROM kine_leases WHERE id = 7").fetchone()
    assert kine_snapshot.fileformat.META_TABLE not in tables
    assert expires_at > 0  # renewed: its old expiry had passed
    (backup,) = database.parent.glob("state.db.bak-*")
    assert keys_in(backup) == []
    # The marker stops a second restore; a normal start clears it.
    with pytest.raises(config.ConfigError, match="already reset"):
        await snapshots.reset(reset)
    await snapshots.reset(settings)
    await snapshots.reset(reset)


async def test_restore_refuses_what_it_cannot_restore(tmp_path: Path) -> None:
    bolt = tmp_path / "etcd.db"
    bolt.write_bytes(bytes(16) + bytes.fromhex("edda0ced") + bytes(100))
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a snapshot")
    for path, match in ((bolt, "etcd snapshot"), (junk, "not a snapshot")):
        settings = settings_for(tmp_path, **{"cluster-reset": True, "cluster-reset-restore-path": str(path)})
        with pytest.raises(kine_snapshot.SnapshotError, match=match):
            await snapshots.reset(settings)
    missing = settings_for(
        tmp_path, **{"cluster-reset": True, "cluster-reset-restore-path": str(tmp_path / "x")}
    )
    with pytest.raises(config.ConfigError, match="does not exist"):
        await snapshots.reset(missing)
    alone = settings_for(tmp_path, **{"cluster-reset-restore-path": str(junk)})
    with pytest.raises(config.ConfigError, match="only used with cluster-reset"):
        await snapshots.reset(alone)
    with pytest.raises(kine_snapshot.SnapshotError, match="etcdutl"):
        await kine_snapshot.restore("https://127.0.0.1:2379", junk, data_dir=tmp_path)


# -- the schedule -----------------------------------------------------------------------------------


async def test_scheduled_snapshots_follow_the_cron_line_and_keep_the_retention(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path,
        **{"etcd-snapshot-schedule-cron": "CRON_TZ=UTC 0 */12 * * *", "etcd-snapshot-retention": "3"},
    )
    make_database(settings)
    clock = clock_.FakeClock(datetime.datetime(2026, 1, 1, 1, 0, tzinfo=datetime.UTC))
    scheduler = snapshot_schedule.Scheduler(settings, clock=clock)
    await scheduler.start()
    try:
        for taken in range(1, 6):
            scheduler.took.clear()
            await clock.advance(12 * 3600)
            async with asyncio.timeout(30):  # the save itself runs on a thread
                await scheduler.took.wait()
            assert len(scheduler.taken) == taken
    finally:
        await scheduler.stop()
    noon = int(datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC).timestamp())
    assert scheduler.taken[0] == f"etcd-snapshot-{NODE}-{noon}"
    assert [int(name.rsplit("-", 1)[1]) - noon for name in scheduler.taken] == [n * 43200 for n in range(5)]
    left = [item.name for item in snapshots.list_snapshots(snapshots.snapshot_dir(settings))]
    assert left == scheduler.taken[2:]


def test_bad_cron_line_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="etcd-snapshot-schedule-cron"):
        snapshot_schedule.parse(settings_for(tmp_path, **{"etcd-snapshot-schedule-cron": "61 * * * *"}))
    disabled = settings_for(tmp_path, **{"etcd-disable-snapshots": True})
    inner = object()
    assert snapshot_schedule.attach(inner, disabled) is inner  # type: ignore[arg-type]


# -- the command line -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["etcd-snapshot", "l", "-o", "json"], {"action": "ls", "list_format": "json"}),
        (["etcd-snapshot", "save", "--dir", "/snaps", "--snapshot-compress", "--name", "nightly"],
         {"action": "save", "dir": Path("/snaps"), "compress": True, "name": "nightly"}),
        (["etcd-snapshot", "prune", "--etcd-snapshot-retention", "2"], {"action": "prune", "retention": 2}),
        (["etcd-snapshot", "delete", "a", "b"], {"action": "delete", "names": ["a", "b"]}),
        (["etcd-snapshot", "prune", "--snapshot-retention", "3"], {"action": "prune", "retention": 3}),
        (["etcd-snapshot", "ls", "--s3", "--s3-bucket", "b", "--s3-folder", "f", "--s3-insecure", "--s3-timeout", "30s"],
         {"action": "ls", "s3": True, "s3_bucket": "b", "s3_folder": "f", "s3_insecure": True, "s3_timeout": 30.0,
          "s3_endpoint": "s3.amazonaws.com", "s3_region": "us-east-1"}),
        (["start", "--etcd-s3", "--etcd-s3-endpoint", "minio:9000", "--etcd-s3-region", "eu-west-1",
          "--etcd-s3-skip-ssl-verify", "--etcd-s3-endpoint-ca", "/ca.pem"],
         {"s3": True, "s3_endpoint": "minio:9000", "s3_region": "eu-west-1", "s3_skip_ssl_verify": True,
          "s3_endpoint_ca": "/ca.pem", "s3_timeout": 300.0}),
        (["start", "--cluster-reset", "--cluster-reset-restore-path", "/s", "--etcd-snapshot-schedule-cron",
          "0 3 * * *", "--etcd-snapshot-name", "nightly", "--etcd-disable-snapshots"],
         {"cluster_reset": True, "cluster_reset_restore_path": Path("/s"), "schedule_cron": "0 3 * * *",
          "scheduled_name": "nightly", "disable": True}),
    ],
)  # fmt: skip
def test_command_line(argv: list[str], expected: dict[str, Any]) -> None:
    args = cli.build_parser().parse_args([*argv, "--config", ""])
    loaded = config.load(config.flags_given(vars(args)), environ={}, is_root=True).snapshots
    for field, value in expected.items():
        if field == "action":
            assert args.snapshot_action == value
        elif field == "names":
            assert args.snapshots == value
        else:
            assert getattr(loaded, field) == value


def test_bad_snapshot_name_is_refused() -> None:
    with pytest.raises(config.ConfigError, match="name"):
        config.build({"data-dir": "/tmp/x", "name": "../escape"}, is_root=True)


def test_s3_keys_come_from_aws_variables_and_never_show(tmp_path: Path) -> None:
    environ = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "very-secret", "K3S_CONFIG_FILE": ""}
    loaded = config.load({"data-dir": str(tmp_path)}, environ=environ, is_root=True).snapshots
    assert loaded.s3_access_key.get_secret_value() == "AKIDEXAMPLE"
    assert loaded.s3_secret_key.get_secret_value() == "very-secret"
    assert "very-secret" not in repr(loaded) and "AKIDEXAMPLE" not in repr(loaded)
    flag = config.load({"data-dir": str(tmp_path), "etcd-s3-access-key": "other"}, environ=environ, is_root=True)
    assert flag.snapshots.s3_access_key.get_secret_value() == "other"  # the flag wins


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({}, "etcd-s3-bucket is required"),
        ({"etcd-s3-bucket": "x"}, "etcd-s3-bucket: invalid"),
        ({"etcd-s3-bucket": "bkt", "etcd-s3-endpoint": "https://s3.example.com"}, "no scheme"),
        ({"etcd-s3-bucket": "bkt", "etcd-s3-access-key": "k"}, "go together"),
        ({"etcd-s3-bucket": "bkt", "etcd-s3-endpoint-ca": "/no/such/ca.pem"}, "cannot read /no/such/ca.pem"),
    ],
)
def test_s3_configuration_that_cannot_work_is_refused_before_any_request(
    tmp_path: Path, values: dict[str, Any], match: str
) -> None:
    settings = settings_for(tmp_path, **{"etcd-s3": True, **values})
    with pytest.raises(s3.S3Error, match=match):
        snapshots.store_for(settings)
    with pytest.raises(config.ConfigError, match=match):  # the scheduler: a start error
        snapshot_schedule.Scheduler(settings)
    assert snapshots.store_for(settings_for(tmp_path)) is None  # without --etcd-s3: no bucket at all


def test_s3_store_keys_and_locations(tmp_path: Path) -> None:
    store = snapshots.store_for(
        settings_for(tmp_path, **{"etcd-s3": True, "etcd-s3-bucket": "bkt", "etcd-s3-folder": "/a/b/"})
    )
    assert store is not None
    assert store.key("x-node1-1") == "a/b/x-node1-1" and store.location("x") == "s3://bkt/a/b/x"
    assert store.endpoint_url == "https://s3.amazonaws.com"
