"""SQLite through aiosqlite: one writer connection, a few reader connections, WAL.

The writer opens every transaction with BEGIN IMMEDIATE, so it takes SQLite's
write lock up front and never has to upgrade a read lock (which is what yields
"database is locked" under concurrent load). Readers use their own connections:
WAL lets them read a consistent snapshot while the writer commits. No shared
cache (it produces "database table is locked"). The in-memory dialect is the same
code with one connection for everything, reads waiting for the writer's lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from services.kine.dialects import base

log = logging.getLogger(__name__)

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

PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    # NORMAL in WAL mode: a commit survives any process crash (the WAL is in the OS
    # page cache); only a power loss can drop the newest commits, as with K3s.
    "PRAGMA synchronous=NORMAL",
    "PRAGMA busy_timeout=30000",
    "PRAGMA foreign_keys=OFF",
)


def _translate(exc: sqlite3.Error) -> Exception:
    if isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc).upper():
        return base.UniqueViolation(str(exc))
    return exc


class _Tx:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self._names = itertools.count()

    async def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        try:
            return list(await self._conn.execute_fetchall(sql, args))
        except sqlite3.Error as exc:
            raise _translate(exc) from exc

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        try:
            cursor = await self._conn.execute(sql, args)
        except sqlite3.Error as exc:
            raise _translate(exc) from exc
        return cursor.rowcount

    @contextlib.asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        name = f"sp{next(self._names)}"
        await self._conn.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            await self._conn.execute(f"ROLLBACK TO {name}")
            await self._conn.execute(f"RELEASE {name}")
            raise
        await self._conn.execute(f"RELEASE {name}")


class SqliteDatabase:
    def __init__(self, writer: aiosqlite.Connection, readers: list[aiosqlite.Connection], path: str) -> None:
        self._writer = writer
        self._readers = readers
        self._next_reader = itertools.cycle(readers) if readers else None
        self._write_lock = asyncio.Lock()
        self._path = path

    @classmethod
    async def open(cls, path: str, *, readers: int = 2) -> SqliteDatabase:
        memory = path == ":memory:"
        if not memory:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        writer = await _connect(path)
        try:
            for stmt in SCHEMA:
                await writer.execute(stmt)
            await writer.commit()
            if not memory:
                # Start from a small WAL: whatever a crash left is folded into the database.
                await writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conns = [] if memory else [await _connect(path) for _ in range(readers)]
        except BaseException:
            await writer.close()
            raise
        return cls(writer, conns, path)

    async def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        if self._next_reader is None:
            # One connection (in memory): a read must not see a batch that is not committed.
            async with self._write_lock:
                return list(await self._writer.execute_fetchall(sql, args))
        return list(await next(self._next_reader).execute_fetchall(sql, args))

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Tx]:
        async with self._write_lock:
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield _Tx(self._writer)
            except BaseException:
                await self._writer.rollback()
                raise
            await self._writer.commit()

    async def after_compaction(self) -> None:
        if self._next_reader is None:
            return
        async with self._write_lock:
            rows = await self._writer.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")
        log.debug("WAL checkpoint => %s", list(rows))

    async def size(self) -> int:
        rows = await self.query(
            "SELECT (SELECT page_count FROM pragma_page_count()) - (SELECT freelist_count FROM pragma_freelist_count()),"
            " (SELECT page_size FROM pragma_page_size())"
        )
        pages, page_size = rows[0]
        return int(pages) * int(page_size)

    async def close(self) -> None:
        for conn in [*self._readers, self._writer]:
            await conn.close()


async def _connect(path: str) -> aiosqlite.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves.
    conn = await aiosqlite.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in PRAGMAS:
        await conn.execute(pragma)
    return conn


async def open_sqlite(dsn: str) -> tuple[base.Dialect, SqliteDatabase]:
    return DIALECT, await SqliteDatabase.open(dsn)


async def open_memory(dsn: str) -> tuple[base.Dialect, SqliteDatabase]:
    return DIALECT, await SqliteDatabase.open(":memory:")
