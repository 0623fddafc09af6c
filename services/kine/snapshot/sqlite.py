"""SQLite snapshots through SQLite's online backup, and restores by replacing the file.

``Connection.backup`` with ``pages=-1`` copies the whole database in one step, inside one read
transaction: in WAL mode that is a consistent view of the committed data at one instant, and
kine's writer (in this process or another) keeps committing meanwhile. The copy becomes the
snapshot once ``fileformat.finish`` has described it.

A restore never edits the live file. The snapshot is copied beside it, its leases are renewed
(their expiry is wall-clock time, which passed while the snapshot lay on disk: etcd, too, gives
restored leases a fresh TTL), then the old database and its ``-wal``/``-shm`` files move aside as
``state.db.bak-<unix time>`` (the WAL keeps its pairing, so the backup opens with every commit it
had) and the copy takes the database's name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
from collections.abc import Mapping
from pathlib import Path

from services.kine.snapshot import fileformat

log = logging.getLogger(__name__)

SIDE_FILES = ("-wal", "-shm")


def save(database: Path, target: Path, *, meta: Mapping[str, str]) -> fileformat.Info:
    """Back ``database`` up into ``target`` (blocking: run it in a thread)."""
    if not database.is_file():
        raise fileformat.SnapshotError(f"no SQLite datastore at {database} (has the server run here?)")
    source = sqlite3.connect(str(database), timeout=30)
    try:
        with contextlib.closing(fileformat.connect(target)) as copy:
            # One step: the whole copy is read inside a single read transaction (consistent).
            source.backup(copy, pages=-1)
            fileformat.finish(copy, {"source": "sqlite", **meta})
    except sqlite3.Error as exc:
        raise fileformat.SnapshotError(f"backup of {database} failed: {exc}") from exc
    finally:
        source.close()
    return fileformat.read_info(target)


def restore(database: Path, snapshot: Path, *, now: float) -> Path | None:
    """Replace ``database`` by ``snapshot``; return where the old database went (None if none)."""
    staged = database.with_name(database.name + ".restoring")
    database.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(snapshot, staged)
    try:
        with contextlib.closing(fileformat.connect(staged)) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {fileformat.META_TABLE}")
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'kine_leases'").fetchone():
                conn.execute("UPDATE kine_leases SET expires_at = ? + ttl", (now,))
    except sqlite3.Error as exc:
        staged.unlink(missing_ok=True)
        raise fileformat.SnapshotError(f"cannot prepare {snapshot} for restore: {exc}") from exc
    moved = move_aside(database, suffix=f".bak-{int(now)}")
    os.replace(staged, database)
    return moved


def move_aside(database: Path, *, suffix: str) -> Path | None:
    """Rename the database and its WAL files with ``suffix``; None when there is no database."""
    if not database.exists():
        for side in SIDE_FILES:  # stale leftovers would be applied to the new file
            Path(f"{database}{side}").unlink(missing_ok=True)
        return None
    backup = database.with_name(database.name + suffix)
    for side in SIDE_FILES:
        old = Path(f"{database}{side}")
        if old.exists():
            os.replace(old, Path(f"{backup}{side}"))
    os.replace(database, backup)
    log.info("moved the old database %s aside to %s", database, backup)
    return backup
