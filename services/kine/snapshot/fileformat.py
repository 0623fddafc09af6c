"""The portable snapshot file: a SQLite database holding kine's tables as they were.

Whatever kine datastore a snapshot comes from (SQLite, PostgreSQL, MySQL/MariaDB), the file is
one self-contained SQLite database (rollback journal, no ``-wal`` beside it) with:

- ``kine``: every row of the log table at one consistent point, columns and ids unchanged
  (``id, name, created, deleted, create_revision, prev_revision, lease, value, old_value``), names
  as text mapped byte-for-code-point (latin-1), exactly as the SQLite dialect stores them;
- ``kine_leases``: the lease table (``id, ttl, expires_at``), when the source had one;
- ``kine_snapshot``: ``key -> value`` text pairs describing the file: ``format``
  (``kine-snapshot/v1``), ``source`` (the dialect it came from), ``revision`` (the newest id),
  ``created`` (Unix seconds) and whatever the caller adds (the node name).

A SQLite snapshot *is* the backed-up database plus ``kine_snapshot``, so restoring one into SQLite
is a file copy, and any snapshot can be read with the ``sqlite3`` shell. Real etcd snapshots are
etcd's own bbolt files; ``kind`` tells the two apart by their first bytes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from services.kine import types
from services.kine.dialects import base
from services.kine.dialects import sqlite as sqlite_dialect

FORMAT = "kine-snapshot/v1"
META_TABLE = "kine_snapshot"
BATCH = 2000  # rows per read or write batch
KINE_COLUMNS = tuple(column.strip() for column in base.COLUMNS.split(","))
LEASE_COLUMNS = ("id", "ttl", "expires_at")
_SQLITE_MAGIC = b"SQLite format 3\x00"
_ZIP_MAGIC = b"PK\x03\x04"
# bbolt's meta page: the magic 0xED0CDAED (little-endian) after the 16-byte page header.
_BOLT_MAGIC = bytes.fromhex("EDDA0CED")


class SnapshotError(types.StoreError):
    """A snapshot that cannot be taken, read or restored; the message says why (no secrets)."""


@dataclasses.dataclass(frozen=True)
class Info:
    """What a snapshot file holds."""

    kind: str  # "kine" or "etcd"
    revision: int = 0  # the newest revision in it (0 when unknown)
    rows: int = 0  # kine rows (0 for etcd)
    meta: Mapping[str, str] = dataclasses.field(default_factory=dict)


def kind(path: Path) -> str:
    """``kine``, ``etcd``, ``zip`` or ``unknown``, from the file's first bytes."""
    with path.open("rb") as file:
        head = file.read(32)
    if head.startswith(_SQLITE_MAGIC):
        return "kine"
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    if head[16:20] == _BOLT_MAGIC:
        return "etcd"
    return "unknown"


def connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: transactions are explicit. Batches are written from worker threads, one
    # at a time (each awaited before the next), so the connection is never used concurrently.
    return sqlite3.connect(str(path), isolation_level=None, timeout=30, check_same_thread=False)


def finish(conn: sqlite3.Connection, meta: Mapping[str, str]) -> None:
    """Add the description table and make the file self-contained (no WAL beside it)."""
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute(f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    revision = conn.execute("SELECT COALESCE(MAX(id), 0) FROM kine").fetchone()[0]
    entries = {"format": FORMAT, "revision": str(revision), **meta}
    conn.execute("BEGIN")
    conn.executemany(f"INSERT OR REPLACE INTO {META_TABLE} (key, value) VALUES (?, ?)", entries.items())
    conn.execute("COMMIT")


class Writer:
    """Builds a snapshot file from rows read out of another database."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = 0
        self._conn = connect(path)
        for statement in sqlite_dialect.SCHEMA:
            self._conn.execute(statement)

    def add_rows(self, rows: Sequence[Sequence[Any]]) -> None:
        """Rows of ``kine`` (KINE_COLUMNS order, names already text)."""
        self._insert("kine", KINE_COLUMNS, rows)
        self.rows += len(rows)

    def add_leases(self, rows: Sequence[Sequence[Any]]) -> None:
        self._insert("kine_leases", LEASE_COLUMNS, rows)

    def _insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        marks = ", ".join("?" for _ in columns)
        self._conn.execute("BEGIN")
        self._conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)
        self._conn.execute("COMMIT")

    def close(self, meta: Mapping[str, str]) -> None:
        try:
            finish(self._conn, meta)
        finally:
            self._conn.close()

    def abort(self) -> None:
        self._conn.close()


def read_info(path: Path) -> Info:
    """The description of a snapshot file; SnapshotError when it is not one we can restore."""
    found = kind(path)
    if found == "etcd":
        return Info(kind="etcd")
    if found != "kine":
        raise SnapshotError(f"{path} is not a snapshot (neither a kine snapshot nor an etcd one)")
    with contextlib.closing(connect(path)) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "kine" not in tables:
            raise SnapshotError(f"{path} is a SQLite database without a kine table, not a snapshot")
        meta = dict(conn.execute(f"SELECT key, value FROM {META_TABLE}")) if META_TABLE in tables else {}
        revision, rows = conn.execute("SELECT COALESCE(MAX(id), 0), COUNT(*) FROM kine").fetchone()
    return Info(kind="kine", revision=int(revision), rows=int(rows), meta=meta)


def read_rows(path: Path, *, table: str = "kine") -> Iterator[list[tuple[Any, ...]]]:
    """The rows of ``kine`` (by id) or ``kine_leases`` in batches; nothing for a missing table."""
    columns = KINE_COLUMNS if table == "kine" else LEASE_COLUMNS
    with contextlib.closing(connect(path)) as conn:
        exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
        if exists.fetchone() is None:
            return
        cursor = conn.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY id")
        while batch := cursor.fetchmany(BATCH):
            yield batch
