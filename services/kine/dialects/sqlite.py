"""SQLite through the standard ``sqlite3`` module, WAL, one writer connection.

Statements run on the event loop itself. A point read or an INSERT on a warm
database takes 10-30 µs; handing it to a thread and back (what aiosqlite does for
every statement) costs the loop more than that, adds two context switches of
latency, and makes the worker thread fight the loop for the GIL once per row
(sqlite3 releases the GIL around each step). Measured on a 2-core machine, a
1000-key list costs less CPU and returns sooner inline than from a thread. So:

- the writer connection and one reader connection are used inline, on the loop;
- reads no index serves (``scan``: the lease scans) run on a small thread pool,
  each worker with its own connection, so they never stall the loop;
- nothing on the loop ever waits for a lock: the loop's connections have no busy
  timeout. ``BEGIN IMMEDIATE`` that finds the write lock taken (another process
  on the file, or our own checkpoint) is retried after an async sleep, and a
  loop read that gets SQLITE_BUSY is re-run on the pool, whose connections wait.
- SQLite's automatic checkpoint (which runs inside whichever COMMIT crosses 1000
  WAL pages, copies them and fsyncs the database: 10-20 ms here) is off on the
  writer. Instead, about every 1000 pages' worth of commits, a checkpoint runs on
  the pool while it holds the write lock: writes wait for it as they would for
  the automatic one, reads do not. Holding the lock lets it finish, so the next
  write starts the WAL over (a checkpoint racing the writer never catches up, and
  the WAL would grow without bound).

The writer opens every transaction with BEGIN IMMEDIATE, so it takes SQLite's
write lock up front and never has to upgrade a read lock (which is what yields
"database is locked" under concurrent load). Readers see committed snapshots
(WAL). No shared cache (it produces "database table is locked"). The in-memory
dialect is the same code with one connection for everything: reads wait for the
writer's lock, so they never see a batch that is not committed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from services.kine.dialects import base

log = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS kine (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT COLLATE BINARY,
        created INTEGER,
        deleted INTEGER,
        create_revision INTEGER,
        prev_revision INTEGER,
        lease INTEGER,
        value BLOB,
        old_value BLOB)""",
    "CREATE INDEX IF NOT EXISTS kine_name_index ON kine (name)",
    "CREATE INDEX IF NOT EXISTS kine_name_id_index ON kine (name, id)",
    "CREATE INDEX IF NOT EXISTS kine_id_deleted_index ON kine (id, deleted)",
    "CREATE INDEX IF NOT EXISTS kine_prev_revision_index ON kine (prev_revision)",
    "CREATE UNIQUE INDEX IF NOT EXISTS kine_name_prev_revision_uindex ON kine (name, prev_revision)",
    """CREATE TABLE IF NOT EXISTS kine_leases (
        id INTEGER PRIMARY KEY,
        ttl INTEGER NOT NULL,
        expires_at REAL NOT NULL)""",
)

DIALECT = base.Dialect(name="sqlite", schema=SCHEMA, shared=False, needs_savepoints=False)

# Seconds a writer keeps retrying BEGIN IMMEDIATE while another connection holds the lock
# (kine's _busy_timeout=30000), and what pool connections wait inside SQLite.
BUSY_TIMEOUT = 30.0
BUSY_RETRY_FIRST, BUSY_RETRY_MAX = 0.001, 0.05
# Checkpoint once the WAL holds about as much as SQLite's own auto-checkpoint lets it (pages).
CHECKPOINT_FRAMES = 1000
# Commits between checkpoints to start with, and the bounds of its adjustment.
CHECKPOINT_EVERY, CHECKPOINT_EVERY_MIN, CHECKPOINT_EVERY_MAX = 32, 4, 10_000
# Pool threads: scans, checkpoints, and reads that must wait out a lock.
SCAN_THREADS = 2
# SQLITE_BUSY and SQLITE_LOCKED, also as the low byte of their extended codes.
_BUSY_CODES = (5, 6)

PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    # NORMAL in WAL mode: a commit survives any process crash (the WAL is in the OS
    # page cache); only a power loss can drop the newest commits, as with K3s.
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=OFF",
)


def _translate(exc: sqlite3.Error) -> Exception:
    if isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc).upper():
        return base.UniqueViolation(str(exc))
    return exc


def _is_busy(exc: sqlite3.Error) -> bool:
    return (
        isinstance(exc, sqlite3.OperationalError)
        and (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in _BUSY_CODES
    )


def _connect(path: str, *, busy_timeout: float) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves. check_same_thread=False:
    # pool connections are closed by the loop thread, and the writer checkpoints on the pool
    # (always while the writer lock is held, so never two threads on one connection).
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy_timeout)
    for pragma in PRAGMAS:
        conn.execute(pragma)
    return conn


class _Tx:
    """The writer connection inside BEGIN IMMEDIATE: statements run inline, scans on the pool."""

    def __init__(self, conn: sqlite3.Connection, pool: _ScanPool | None) -> None:
        self._conn = conn
        self._pool = pool
        self._names = itertools.count()

    async def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        try:
            return self._conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise _translate(exc) from exc

    async def scan(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        if self._pool is None:
            return await self.query(sql, args)
        # The writer's own connection on a pool thread: the transaction holds the write lock,
        # so nothing else uses this connection until the scan returns.
        try:
            return await self._pool.submit(lambda: self._conn.execute(sql, args).fetchall())
        except sqlite3.Error as exc:
            raise _translate(exc) from exc

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        try:
            return self._conn.execute(sql, args).rowcount
        except sqlite3.Error as exc:
            raise _translate(exc) from exc

    @contextlib.asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        name = f"sp{next(self._names)}"
        self._conn.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self._conn.execute(f"ROLLBACK TO {name}")
            self._conn.execute(f"RELEASE {name}")
            raise
        self._conn.execute(f"RELEASE {name}")


class _ScanPool:
    """A few threads, each with its own reader connection: scans, checkpoints, reads that wait out a lock."""

    def __init__(self, path: str, *, threads: int) -> None:
        self._path = path
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._executor = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="kine-sqlite")

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = _connect(self._path, busy_timeout=BUSY_TIMEOUT)
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on a pool thread with that thread's connection."""
        return await self.submit(lambda: fn(self._conn()))

    async def submit(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on a pool thread (with whatever connection it brings)."""
        future = asyncio.get_running_loop().run_in_executor(self._executor, fn)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # The caller may use the connection as soon as we return: not while a thread still does.
            await asyncio.wait([future])
            raise

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()


class SqliteDatabase:
    def __init__(self, writer: sqlite3.Connection, reader: sqlite3.Connection | None, path: str) -> None:
        self._writer = writer
        # None in memory: the writer's connection is the only one, guarded by the lock.
        self._reader = reader
        self._pool = _ScanPool(path, threads=SCAN_THREADS) if reader is not None else None
        self._write_lock = asyncio.Lock()
        self._path = path
        self._commits = 0  # since the last checkpoint
        self._checkpoint_every = CHECKPOINT_EVERY  # commits, adjusted to about CHECKPOINT_FRAMES pages
        self._checkpoint: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, path: str) -> SqliteDatabase:
        memory = path == ":memory:"
        if not memory:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        writer = _connect(path, busy_timeout=0)
        reader: sqlite3.Connection | None = None
        try:
            # Our own checkpoints instead of the automatic one inside COMMIT (see the module docstring).
            writer.execute("PRAGMA wal_autocheckpoint=0")
            for stmt in SCHEMA:
                writer.execute(stmt)
            if not memory:
                reader = _connect(path, busy_timeout=0)
        except BaseException:
            writer.close()
            raise
        db = cls(writer, reader, path)
        if not memory:
            # Start from a small WAL: whatever a crash left is folded into the database.
            try:
                await db._checkpoint_now("TRUNCATE")
            except BaseException:
                await db.close()
                raise
        return db

    # -- reads --------------------------------------------------------------------------

    async def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        if self._reader is None:
            # One connection (in memory): a read must not see a batch that is not committed.
            async with self._write_lock:
                return self._writer.execute(sql, args).fetchall()
        try:
            return self._reader.execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise
        # Rare (WAL recovery by another process): let a pool connection wait for it.
        return await self._on_pool(sql, args)

    async def scan(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        if self._pool is None:
            return await self.query(sql, args)
        return await self._on_pool(sql, args)

    async def _on_pool(self, sql: str, args: Sequence[Any]) -> list[tuple]:
        assert self._pool is not None
        return await self._pool.run(lambda conn: conn.execute(sql, args).fetchall())

    # -- writes -------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Tx]:
        async with self._write_lock:
            await self._begin()
            try:
                yield _Tx(self._writer, self._pool)
                self._writer.execute("COMMIT")
            except BaseException:
                if self._writer.in_transaction:  # a failed COMMIT leaves it open
                    self._writer.execute("ROLLBACK")
                raise
        self._maybe_checkpoint()

    async def _begin(self) -> None:
        deadline = time.monotonic() + BUSY_TIMEOUT
        delay = BUSY_RETRY_FIRST
        while True:
            try:
                self._writer.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, BUSY_RETRY_MAX)

    # -- checkpoints --------------------------------------------------------------------

    def _maybe_checkpoint(self) -> None:
        self._commits += 1
        if self._pool is None or self._commits < self._checkpoint_every:
            return
        if self._checkpoint is not None and not self._checkpoint.done():
            return
        self._checkpoint = asyncio.get_running_loop().create_task(
            self._checkpoint_wal(), name="kine sqlite checkpoint"
        )

    async def _checkpoint_wal(self) -> None:
        commits = self._commits
        try:
            rows = await self._checkpoint_now("PASSIVE")
        except sqlite3.Error as exc:
            log.warning("WAL checkpoint failed: %s", exc)
            return
        self._commits -= commits
        _, frames, _ = rows[0]
        # Aim the next one at about CHECKPOINT_FRAMES pages, from the pages these commits wrote.
        per_commit = max(1.0, frames / max(commits, 1))
        every = int(CHECKPOINT_FRAMES / per_commit)
        self._checkpoint_every = min(CHECKPOINT_EVERY_MAX, max(CHECKPOINT_EVERY_MIN, every))
        log.debug(
            "WAL checkpoint after %d commits => %s; next after %d", commits, rows, self._checkpoint_every
        )

    async def _checkpoint_now(self, mode: str) -> list[tuple]:
        # On the writer's connection, off the loop, while no write transaction can start.
        assert self._pool is not None
        async with self._write_lock:
            return await self._pool.submit(
                lambda: self._writer.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
            )

    async def after_compaction(self) -> None:
        if self._pool is None:
            return
        rows = await self._checkpoint_now("TRUNCATE")
        log.debug("WAL checkpoint => %s", rows)

    async def size(self) -> int:
        rows = await self.query(
            "SELECT (SELECT page_count FROM pragma_page_count()) - (SELECT freelist_count FROM pragma_freelist_count()),"
            " (SELECT page_size FROM pragma_page_size())"
        )
        pages, page_size = rows[0]
        return int(pages) * int(page_size)

    async def close(self) -> None:
        if self._checkpoint is not None:
            await self._checkpoint
        if self._pool is not None:
            await self._pool.close()
        if self._reader is not None:
            self._reader.close()
        self._writer.close()


async def open_sqlite(dsn: str) -> tuple[base.Dialect, SqliteDatabase]:
    return DIALECT, await SqliteDatabase.open(dsn)


async def open_memory(dsn: str) -> tuple[base.Dialect, SqliteDatabase]:
    return DIALECT, await SqliteDatabase.open(":memory:")
