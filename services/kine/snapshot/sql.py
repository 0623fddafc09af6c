"""PostgreSQL and MySQL/MariaDB snapshots: the kine tables dumped into the portable file.

A dump reads ``kine_leases`` and then every ``kine`` row by id inside ONE read-only transaction
at REPEATABLE READ (PostgreSQL's snapshot; InnoDB's ``WITH CONSISTENT SNAPSHOT``), so it sees
exactly the transactions committed when it began, however many servers keep writing. An id
taken by a transaction still open then is simply absent: that transaction is not part of the
snapshot, and kine never reads below its newest revision when it starts.

A restore keeps what it replaces: both tables are first copied to ``kine_bak_<unix time>`` and
``kine_leases_bak_<unix time>``, then emptied and loaded with the snapshot's rows, ids unchanged,
and the id counter is set after the newest one (TRUNCATE restarts it; the load moves it on). On
PostgreSQL all of that is one transaction. MySQL commits DDL implicitly, so there the copies and
the TRUNCATE come first and the load is one transaction after them; if it fails, the copies
still hold the data.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from services.kine.snapshot import fileformat

KINE_SELECT = f"SELECT {', '.join(fileformat.KINE_COLUMNS)} FROM kine ORDER BY id"
LEASE_SELECT = "SELECT id, ttl, expires_at FROM kine_leases ORDER BY id"


def _text_rows(rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """Rows with names as text (MySQL returns VARBINARY as bytes), as the file stores them."""
    return [
        (row[0], row[1].decode("latin-1") if isinstance(row[1], bytes) else row[1], *row[2:]) for row in rows
    ]


def backup_names(now: float) -> tuple[str, str]:
    return f"kine_bak_{int(now)}", f"kine_leases_bak_{int(now)}"


# -- PostgreSQL --------------------------------------------------------------------------------------


async def save_postgres(dsn: str, target: Path, *, meta: Mapping[str, str]) -> fileformat.Info:
    import asyncpg

    writer = fileformat.Writer(target)
    try:
        conn = await asyncpg.connect(dsn)
        try:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                if await conn.fetchval("SELECT to_regclass('kine_leases') IS NOT NULL"):
                    leases = [tuple(r) for r in await conn.fetch(LEASE_SELECT)]
                    await asyncio.to_thread(writer.add_leases, leases)
                batch: list[tuple[Any, ...]] = []
                async for record in conn.cursor(KINE_SELECT, prefetch=fileformat.BATCH):
                    batch.append(tuple(record))
                    if len(batch) >= fileformat.BATCH:
                        await asyncio.to_thread(writer.add_rows, batch)
                        batch = []
                await asyncio.to_thread(writer.add_rows, batch)
        finally:
            await conn.close()
    except BaseException:
        writer.abort()
        raise
    writer.close({"source": "postgres", **meta})
    return fileformat.read_info(target)


async def restore_postgres(dsn: str, snapshot: Path, *, now: float) -> str:
    """Load ``snapshot`` into the database; return the name of the copy of the old table."""
    import asyncpg

    kine_bak, leases_bak = backup_names(now)
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("LOCK TABLE kine, kine_leases IN ACCESS EXCLUSIVE MODE")
            await conn.execute(f'CREATE TABLE "{kine_bak}" AS TABLE kine')
            await conn.execute(f'CREATE TABLE "{leases_bak}" AS TABLE kine_leases')
            await conn.execute("TRUNCATE kine, kine_leases RESTART IDENTITY")
            for batch in fileformat.read_rows(snapshot):
                await conn.copy_records_to_table("kine", records=batch, columns=fileformat.KINE_COLUMNS)
            for batch in fileformat.read_rows(snapshot, table="kine_leases"):
                renewed = [(lease_id, ttl, now + ttl) for lease_id, ttl, _ in batch]
                await conn.copy_records_to_table(
                    "kine_leases", records=renewed, columns=fileformat.LEASE_COLUMNS
                )
            await conn.execute(
                "SELECT setval(pg_get_serial_sequence('kine', 'id'), COALESCE((SELECT MAX(id) FROM kine), 0) + 1, false)"
            )
    finally:
        await conn.close()
    return kine_bak


# -- MySQL / MariaDB ------------------------------------------------------------------------------


async def _mysql_connect(dsn: str, **options: Any) -> Any:
    import aiomysql

    from services.kine.dialects import mysql as mysql_dialect

    params = mysql_dialect.parse_dsn(dsn)
    return await aiomysql.connect(**params, **options)


async def save_mysql(dsn: str, target: Path, *, meta: Mapping[str, str]) -> fileformat.Info:
    import aiomysql

    writer = fileformat.Writer(target)
    try:
        conn = await _mysql_connect(dsn, autocommit=False)
        try:
            async with conn.cursor() as cur:
                await cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                await cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                await cur.execute(
                    "SELECT COUNT(*) FROM information_schema.tables"
                    " WHERE table_schema = DATABASE() AND table_name = 'kine_leases'"
                )
                if (await cur.fetchone())[0]:
                    await cur.execute(LEASE_SELECT)
                    await asyncio.to_thread(writer.add_leases, [tuple(r) for r in await cur.fetchall()])
            # An unbuffered cursor streams the rows instead of holding the whole table in memory.
            async with conn.cursor(aiomysql.SSCursor) as cur:
                await cur.execute(KINE_SELECT)
                while batch := await cur.fetchmany(fileformat.BATCH):
                    await asyncio.to_thread(writer.add_rows, _text_rows(batch))
            await conn.rollback()
        finally:
            conn.close()
    except BaseException:
        writer.abort()
        raise
    writer.close({"source": "mysql", **meta})
    return fileformat.read_info(target)


async def restore_mysql(dsn: str, snapshot: Path, *, now: float) -> str:
    kine_bak, leases_bak = backup_names(now)
    conn = await _mysql_connect(dsn, autocommit=True)
    try:
        async with conn.cursor() as cur:
            for table, copy in (("kine", kine_bak), ("kine_leases", leases_bak)):
                await cur.execute(f"CREATE TABLE `{copy}` LIKE `{table}`")
                await cur.execute(f"INSERT INTO `{copy}` SELECT * FROM `{table}`")
                await cur.execute(f"TRUNCATE TABLE `{table}`")
            await conn.begin()
            marks = ", ".join("%s" for _ in fileformat.KINE_COLUMNS)
            insert = f"INSERT INTO kine ({', '.join(fileformat.KINE_COLUMNS)}) VALUES ({marks})"
            for batch in fileformat.read_rows(snapshot):
                rows = [(row[0], row[1].encode("latin-1"), *row[2:]) for row in batch]
                await cur.executemany(insert, rows)
            for batch in fileformat.read_rows(snapshot, table="kine_leases"):
                renewed = [(lease_id, ttl, now + ttl) for lease_id, ttl, _ in batch]
                await cur.executemany(
                    "INSERT INTO kine_leases (id, ttl, expires_at) VALUES (%s, %s, %s)", renewed
                )
            await conn.commit()
    finally:
        conn.close()
    return kine_bak
