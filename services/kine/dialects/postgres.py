"""PostgreSQL through asyncpg.

Keys are ``text COLLATE "C"`` so comparisons are byte order and use the indexes.
A failed statement aborts a PostgreSQL transaction, so every write in a group
commit runs under its own savepoint. Sequence values are taken before commit, so
rows become visible out of id order: the poll loop's gap filling handles that.
"""

from __future__ import annotations

import contextlib
import itertools
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg

from services.kine.dialects import base

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS kine (
        id BIGSERIAL PRIMARY KEY,
        name text COLLATE "C",
        created INTEGER,
        deleted INTEGER,
        create_revision BIGINT,
        prev_revision BIGINT,
        lease BIGINT,
        value bytea,
        old_value bytea)""",
    "CREATE INDEX IF NOT EXISTS kine_name_index ON kine (name)",
    "CREATE INDEX IF NOT EXISTS kine_name_id_index ON kine (name, id)",
    "CREATE INDEX IF NOT EXISTS kine_id_deleted_index ON kine (id, deleted)",
    "CREATE INDEX IF NOT EXISTS kine_prev_revision_index ON kine (prev_revision)",
    "CREATE UNIQUE INDEX IF NOT EXISTS kine_name_prev_revision_uindex ON kine (name, prev_revision)",
    "CREATE INDEX IF NOT EXISTS kine_list_query_index ON kine (name, id DESC, deleted)",
    """CREATE TABLE IF NOT EXISTS kine_leases (
        id BIGINT PRIMARY KEY,
        ttl BIGINT NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL)""",
)

DIALECT = base.Dialect(
    name="postgres",
    schema=SCHEMA,
    shared=True,
    needs_savepoints=True,
    nul_in_keys=False,
    param=base.qmark_to_dollar,
    compact_superseded=(
        "DELETE FROM kine AS kv USING (SELECT prev_revision AS id FROM kine"
        " WHERE name != 'compact_rev_key' AND prev_revision != 0 AND id > ? AND id <= ?) AS ks"
        " WHERE kv.id = ks.id"
    ),
)


def _translate(exc: Exception) -> Exception:
    if isinstance(exc, asyncpg.UniqueViolationError):
        return base.UniqueViolation(str(exc))
    if isinstance(exc, asyncpg.DeadlockDetectedError | asyncpg.SerializationError):
        return base.TransientError(str(exc))
    return exc


class _Tx:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self._names = itertools.count()

    async def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        try:
            return [tuple(r) for r in await self._conn.fetch(sql, *args)]
        except asyncpg.PostgresError as exc:
            raise _translate(exc) from exc

    async def scan(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        return await self.query(sql, args)  # the driver never blocks the loop

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        try:
            status = await self._conn.execute(sql, *args)
        except asyncpg.PostgresError as exc:
            raise _translate(exc) from exc
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    @contextlib.asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        name = f"sp{next(self._names)}"
        await self._conn.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            await self._conn.execute(f"ROLLBACK TO SAVEPOINT {name}")
            raise
        await self._conn.execute(f"RELEASE SAVEPOINT {name}")


class PostgresDatabase:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        return [tuple(r) for r in await self._pool.fetch(sql, *args)]

    async def scan(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        return await self.query(sql, args)  # the driver never blocks the loop

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Tx]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield _Tx(conn)

    async def after_compaction(self) -> None:
        return None

    async def size(self) -> int:
        rows = await self.query("SELECT pg_total_relation_size('kine')")
        return int(rows[0][0] or 0)

    async def close(self) -> None:
        await self._pool.close()


async def _ensure_database(dsn: str) -> None:
    """Create the database named in the DSN when it does not exist (as K3s does)."""
    parts = urllib.parse.urlsplit(dsn)
    dbname = parts.path.lstrip("/") or "kubernetes"
    admin = urllib.parse.urlunsplit(parts._replace(path="/postgres"))
    try:
        conn = await asyncpg.connect(dsn)
    except asyncpg.InvalidCatalogNameError:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'CREATE DATABASE "{dbname}"')
        except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):  # created meanwhile by another server
            pass
        finally:
            await conn.close()
        return
    await conn.close()


async def open_postgres(dsn: str) -> tuple[base.Dialect, PostgresDatabase]:
    await _ensure_database(dsn)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=10)
    try:
        async with pool.acquire() as conn:
            # Two kine processes may start at once: serialise schema creation.
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(7472394)")
                for stmt in SCHEMA:
                    await conn.execute(stmt)
    except BaseException:
        await pool.close()
        raise
    return DIALECT, PostgresDatabase(pool)
