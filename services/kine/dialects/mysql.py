"""MySQL and MariaDB through aiomysql.

Keys are VARBINARY so comparisons are byte order. Error 1062 (duplicate entry) is
the compare-and-swap conflict. InnoDB takes auto-increment values before commit,
so rows may appear out of id order; the poll loop fills gaps.
"""

from __future__ import annotations

import contextlib
import itertools
import urllib.parse
import warnings
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiomysql
import pymysql

from services.kine.dialects import base

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS kine (
        id BIGINT UNSIGNED AUTO_INCREMENT,
        name VARBINARY(630),
        created INTEGER,
        deleted INTEGER,
        create_revision BIGINT UNSIGNED,
        prev_revision BIGINT UNSIGNED,
        lease BIGINT,
        value MEDIUMBLOB,
        old_value MEDIUMBLOB,
        PRIMARY KEY (id))""",
    "CREATE INDEX kine_name_index ON kine (name)",
    "CREATE INDEX kine_name_id_index ON kine (name, id)",
    "CREATE INDEX kine_id_deleted_index ON kine (id, deleted)",
    "CREATE INDEX kine_prev_revision_index ON kine (prev_revision)",
    "CREATE UNIQUE INDEX kine_name_prev_revision_uindex ON kine (name, prev_revision)",
    """CREATE TABLE IF NOT EXISTS kine_leases (
        id BIGINT PRIMARY KEY,
        ttl BIGINT NOT NULL,
        expires_at DOUBLE NOT NULL)""",
)

DUPLICATE_ENTRY = 1062
# InnoDB rolls the whole transaction back on a deadlock; a lock wait timeout rolls back the
# statement, and kine's savepoint then the job: both are worth running again.
ROLLED_BACK = frozenset({1213, 1205})  # ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT
DUPLICATE_KEY_NAME = 1061

DIALECT = base.Dialect(
    name="mysql",
    schema=SCHEMA,
    shared=True,
    needs_savepoints=True,
    param=base.qmark_to_format,
    insert_returning=False,
    encode_key=lambda key: key,
    decode_key=bytes,
    compact_superseded=(
        "DELETE kv FROM kine AS kv INNER JOIN (SELECT prev_revision AS id FROM kine"
        " WHERE name != 'compact_rev_key' AND prev_revision != 0 AND id > ? AND id <= ?) AS ks"
        " ON kv.id = ks.id"
    ),
)


def _translate(exc: Exception) -> Exception:
    code = exc.args[0] if exc.args else None
    if isinstance(exc, pymysql.err.IntegrityError) and code == DUPLICATE_ENTRY:
        return base.UniqueViolation(str(exc.args[1]) if len(exc.args) > 1 else "duplicate entry")
    if code in ROLLED_BACK:
        return base.TransientError(str(exc.args[1]) if len(exc.args) > 1 else str(exc))
    return exc


class _Tx:
    def __init__(self, conn: aiomysql.Connection) -> None:
        self._conn = conn
        self._names = itertools.count()
        self.lastrowid = 0

    async def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        async with self._conn.cursor() as cur:
            try:
                await cur.execute(sql, tuple(args))
            except pymysql.err.MySQLError as exc:
                raise _translate(exc) from exc
            if cur.description is None:
                # An INSERT: report the new id the way RETURNING would.
                return [(cur.lastrowid,)]
            return [tuple(r) for r in await cur.fetchall()]

    async def scan(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        return await self.query(sql, args)  # the driver never blocks the loop

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        async with self._conn.cursor() as cur:
            try:
                return await cur.execute(sql, tuple(args))
            except pymysql.err.MySQLError as exc:
                raise _translate(exc) from exc

    @contextlib.asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        name = f"sp{next(self._names)}"
        await self.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException as exc:
            try:
                await self.execute(f"ROLLBACK TO SAVEPOINT {name}")
            except pymysql.err.MySQLError:
                # The savepoint went with the transaction (a deadlock rolls it all back): the
                # original error is what happened, and it says so.
                if isinstance(exc, base.TransientError):
                    raise exc from None
                raise base.TransientError(f"the transaction was rolled back: {exc}") from exc
            raise
        await self.execute(f"RELEASE SAVEPOINT {name}")


class MysqlDatabase:
    def __init__(self, pool: aiomysql.Pool, dbname: str) -> None:
        self._pool = pool
        self._dbname = dbname

    async def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        async with self._pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(sql, tuple(args))
            rows = [tuple(r) for r in await cur.fetchall()]
            # autocommit is on: each read sees the newest committed rows.
            return rows

    async def scan(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        return await self.query(sql, args)  # the driver never blocks the loop

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Tx]:
        async with self._pool.acquire() as conn:
            await conn.begin()
            try:
                yield _Tx(conn)
            except BaseException:
                await conn.rollback()
                raise
            await conn.commit()

    async def after_compaction(self) -> None:
        return None

    async def size(self) -> int:
        rows = await self.query(
            "SELECT COALESCE(SUM(data_length + index_length), 0) FROM information_schema.tables"
            " WHERE table_schema = %s",
            (self._dbname,),
        )
        return int(rows[0][0] or 0)

    async def close(self) -> None:
        self._pool.close()
        await self._pool.wait_closed()


def parse_dsn(dsn: str) -> dict[str, Any]:
    """``mysql://user:pass@tcp(host:port)/db`` (K3s's form) or ``mysql://user:pass@host:port/db``."""
    rest = dsn.split("://", 1)[1]
    userinfo, _, hostpart = rest.rpartition("@")
    user, _, password = userinfo.partition(":")
    if hostpart.startswith("tcp(") and ")" in hostpart:
        address, _, path = hostpart[4:].partition(")")
    else:
        address, _, path = hostpart.partition("/")
        path = "/" + path
    host, _, port = address.rpartition(":") if ":" in address else (address, "", "")
    dbname = path.lstrip("/").split("?", 1)[0] or "kubernetes"
    return {
        "host": host or "127.0.0.1",
        "port": int(port) if port else 3306,
        "user": urllib.parse.unquote(user) or "root",
        "password": urllib.parse.unquote(password),
        "db": dbname,
    }


async def open_mysql(dsn: str) -> tuple[base.Dialect, MysqlDatabase]:
    # "IF NOT EXISTS" on something that exists is a server note, which the driver
    # raises as a Python warning: expected here, not worth one.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pymysql.Warning)
        return await _open(dsn)


async def _open(dsn: str) -> tuple[base.Dialect, MysqlDatabase]:
    params = parse_dsn(dsn)
    dbname = params.pop("db")
    conn = await aiomysql.connect(**params, autocommit=True)
    try:
        async with conn.cursor() as cur:
            await cur.execute(f"CREATE DATABASE IF NOT EXISTS `{dbname}`")
    finally:
        conn.close()
    # READ COMMITTED, as on PostgreSQL: a write job that lost a compare-and-swap race re-reads
    # the key inside its transaction, and under InnoDB's default REPEATABLE READ it would keep
    # seeing the snapshot where the key was still absent (and lose the race again, forever).
    pool = await aiomysql.create_pool(
        **params, db=dbname, autocommit=True, minsize=1, maxsize=10,
        init_command="SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
    )  # fmt: skip
    try:
        async with pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute("SELECT GET_LOCK('kine_schema', 30)")
            try:
                for stmt in SCHEMA:
                    try:
                        await cur.execute(stmt)
                    except pymysql.err.OperationalError as exc:
                        if exc.args[0] != DUPLICATE_KEY_NAME:
                            raise
            finally:
                await cur.execute("SELECT RELEASE_LOCK('kine_schema')")
    except BaseException:
        pool.close()
        await pool.wait_closed()
        raise
    return DIALECT, MysqlDatabase(pool, dbname)
