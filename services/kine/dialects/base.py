"""One generic dialect: SQL text and error hooks as data, specialised per database.

Like kine's ``generic`` driver, every database gets the same statements; a dialect
only fills in what differs (DDL, placeholders, how a key is bound, which
exception means "unique constraint violated"). The ``Database`` adapters hide the
driver (sqlite3, asyncpg, aiomysql) behind a few calls: ``query`` (and ``scan``
for whole-table reads) outside any transaction, ``transaction()`` for one write
transaction, ``close``.

Keys are bytes in the store and text in SQLite/PostgreSQL: they are mapped
byte-for-code-point (latin-1), so ASCII keys, all Kubernetes uses, are stored
exactly as K3s's kine stores them, and the byte order of keys is the order of
their text under binary collation.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

COLUMNS = "id, name, created, deleted, create_revision, prev_revision, lease, value, old_value"
COMPACT_KEY = "compact_rev_key"


class UniqueViolation(Exception):
    """An INSERT hit the (name, prev_revision) or primary key constraint: someone wrote first."""


class TransientError(Exception):
    """The database rolled the whole transaction back (a deadlock, a lock wait that timed out, a
    serialization failure): nothing of it was written, and running it again may well succeed."""


class Tx(Protocol):
    async def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]: ...

    async def scan(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        """A read inside the transaction that visits the whole table (no index serves it)."""
        ...

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Run a statement; return the affected row count."""
        ...

    def savepoint(self) -> contextlib.AbstractAsyncContextManager[None]: ...


class Database(Protocol):
    async def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        """A read an index serves (a key, a key range, an id range); on SQLite it runs inline."""
        ...

    async def scan(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        """A read that visits the whole table (no index serves it): never blocks the event loop."""
        ...

    def transaction(self) -> contextlib.AbstractAsyncContextManager[Tx]: ...

    async def after_compaction(self) -> None:
        """Housekeeping after a compaction pass (SQLite: a TRUNCATE checkpoint)."""
        ...

    async def size(self) -> int: ...

    async def close(self) -> None: ...


@dataclasses.dataclass(frozen=True)
class Dialect:
    """The statements of one database. ``?`` placeholders are rewritten by ``param``."""

    name: str
    schema: Sequence[str]
    # Whether other processes may write the same database (then revisions must be
    # read from the database, and gaps from in-flight transactions can appear).
    shared: bool
    # Whether a failed statement aborts the whole transaction (PostgreSQL), so each
    # write needs its own savepoint.
    needs_savepoints: bool
    # Whether keys may contain NUL (PostgreSQL text cannot).
    nul_in_keys: bool = True
    param: Callable[[str], str] = staticmethod(lambda sql: sql)
    insert_returning: bool = True  # INSERT ... RETURNING id (else the driver's last row id)
    encode_key: Callable[[bytes], Any] = staticmethod(lambda key: key.decode("latin-1"))
    decode_key: Callable[[Any], bytes] = staticmethod(lambda name: name.encode("latin-1"))
    # Statements whose text differs between databases.
    compact_superseded: str = (
        "DELETE FROM kine WHERE id IN (SELECT prev_revision FROM kine"
        " WHERE name != 'compact_rev_key' AND prev_revision != 0 AND id > ? AND id <= ?)"
    )
    fill_gap: str = f"INSERT INTO kine({COLUMNS}) VALUES (?, ?, 0, 1, 0, 0, 0, NULL, NULL)"

    def sql(self, text: str) -> str:
        return self.param(text)

    # -- statements --------------------------------------------------------------

    def latest(self, *, at_revision: bool) -> str:
        cond = " AND id <= ?" if at_revision else ""
        return self.sql(f"SELECT {COLUMNS} FROM kine WHERE name = ?{cond} ORDER BY id DESC LIMIT 1")

    def range(self, *, exclusive_start: bool, bounded: bool, count: bool, limit: bool) -> str:
        """Newest row per key in the range at a revision, live keys only, in key order.

        The rows carry no old_value (NULL): reads and deletes never use it.
        """
        where = "mkv.name > ?" if exclusive_start else "mkv.name >= ?"
        if bounded:
            where += " AND mkv.name < ?"
        inner = f"SELECT MAX(mkv.id) AS id FROM kine AS mkv WHERE {where} AND mkv.id <= ? GROUP BY mkv.name"
        if count:
            return self.sql(
                f"SELECT COUNT(*) FROM kine AS kv JOIN ({inner}) AS maxkv ON maxkv.id = kv.id"
                " WHERE kv.deleted = 0 AND kv.name != 'compact_rev_key'"
            )
        # old_value (the previous version of each object) is only needed for events, never
        # for a read: NULL spares copying it out for every key listed.
        cols = ", ".join(f"kv.{c.strip()}" for c in COLUMNS.split(",") if c.strip() != "old_value") + ", NULL"
        text = (
            f"SELECT {cols} FROM kine AS kv JOIN ({inner}) AS maxkv ON maxkv.id = kv.id"
            " WHERE kv.deleted = 0 AND kv.name != 'compact_rev_key' ORDER BY kv.name ASC"
        )
        return self.sql(text + (" LIMIT ?" if limit else ""))

    def after(self, *, ranged: bool, exclusive_start: bool = False, bounded: bool = False) -> str:
        """Rows with id in (after, upto], oldest first; optionally only a key range."""
        where = "id > ? AND id <= ?"
        if ranged:
            where += " AND name > ?" if exclusive_start else " AND name >= ?"
            if bounded:
                where += " AND name < ?"
        return self.sql(f"SELECT {COLUMNS} FROM kine WHERE {where} ORDER BY id ASC LIMIT ?")

    @property
    def insert(self) -> str:
        text = (
            "INSERT INTO kine(name, created, deleted, create_revision, prev_revision, lease, value, old_value)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        )
        return self.sql(text + (" RETURNING id" if self.insert_returning else ""))

    @property
    def current_revision(self) -> str:
        return "SELECT MAX(id) FROM kine"

    @property
    def compact_revision(self) -> str:
        return self.sql(
            "SELECT prev_revision FROM kine WHERE name = 'compact_rev_key' ORDER BY id DESC LIMIT 1"
        )

    @property
    def set_compact_revision(self) -> str:
        return self.sql("UPDATE kine SET prev_revision = ? WHERE name = 'compact_rev_key'")

    @property
    def compact_deleted(self) -> str:
        return self.sql("DELETE FROM kine WHERE deleted = 1 AND id > ? AND id <= ?")

    @property
    def gap_insert(self) -> str:
        return self.sql(self.fill_gap)

    @property
    def superseded(self) -> str:
        return self.sql(self.compact_superseded)

    # -- leases (a table of our own; kine stored a TTL as the lease id) ------------

    @property
    def lease_insert(self) -> str:
        return self.sql("INSERT INTO kine_leases(id, ttl, expires_at) VALUES (?, ?, ?)")

    @property
    def lease_get(self) -> str:
        return self.sql("SELECT id, ttl, expires_at FROM kine_leases WHERE id = ?")

    @property
    def lease_refresh(self) -> str:
        return self.sql("UPDATE kine_leases SET expires_at = ? WHERE id = ?")

    @property
    def lease_delete(self) -> str:
        return self.sql("DELETE FROM kine_leases WHERE id = ?")

    @property
    def lease_list(self) -> str:
        return "SELECT id FROM kine_leases ORDER BY id"

    @property
    def lease_expired(self) -> str:
        return self.sql("SELECT id FROM kine_leases WHERE expires_at <= ? ORDER BY expires_at LIMIT 100")

    @property
    def lease_keys(self) -> str:
        """Live keys whose newest row carries the lease."""
        return self.sql(
            f"SELECT {COLUMNS} FROM kine AS kv WHERE kv.lease = ? AND kv.deleted = 0"
            " AND kv.id = (SELECT MAX(m.id) FROM kine AS m WHERE m.name = kv.name)"
        )

    @property
    def lease_orphans(self) -> str:
        """Lease ids that live keys refer to but the lease table lacks (a database kine wrote)."""
        return (
            "SELECT DISTINCT kv.lease FROM kine AS kv WHERE kv.lease > 0 AND kv.deleted = 0"
            " AND NOT EXISTS (SELECT 1 FROM kine_leases AS l WHERE l.id = kv.lease)"
        )


def qmark_to_dollar(sql: str) -> str:
    """Rewrite ``?`` placeholders as PostgreSQL's ``$1, $2, ...`` (statements here never quote a ?)."""
    parts = sql.split("?")
    out = [parts[0]]
    for i, part in enumerate(parts[1:], start=1):
        out.append(f"${i}{part}")
    return "".join(out)


def qmark_to_format(sql: str) -> str:
    """Rewrite ``?`` placeholders as DB-API ``%s`` (aiomysql)."""
    return sql.replace("%", "%%").replace("?", "%s")


@contextlib.asynccontextmanager
async def no_savepoint() -> AsyncIterator[None]:
    yield
