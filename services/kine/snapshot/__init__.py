"""Snapshots of a datastore, and restores, chosen by the datastore endpoint's scheme.

- SQLite (the default): SQLite's online backup into the portable file (``sqlite.py``);
- PostgreSQL, MySQL/MariaDB: the kine tables dumped in one consistent read (``sql.py``);
- a real etcd (``http(s)://``): etcd's own snapshot through its Maintenance API (``etcd.py``).

Every kine snapshot has the same format (``fileformat.py``), so a snapshot of one kine datastore
restores into any other. Restores run while no kine uses the datastore (the supervisor does it
before starting anything); an etcd snapshot is restored with etcd's own tools.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from services.kine import dialects as dialects_
from services.kine import types
from services.kine.snapshot import fileformat, sqlite

if TYPE_CHECKING:
    from services.kine import client

# gRPC and the PostgreSQL/MySQL drivers load only when a snapshot of such a datastore is taken.

SnapshotError = fileformat.SnapshotError
Info = fileformat.Info
read_info = fileformat.read_info


@dataclasses.dataclass(frozen=True)
class Restored:
    """What a restore did."""

    info: fileformat.Info
    datastore: str  # the database restored into (path or redacted DSN)
    backup: str  # where the old data went ("" when there was none)


def is_etcd(endpoint: str) -> bool:
    return endpoint.startswith(("http://", "https://"))


async def save(
    endpoint: str,
    target: Path,
    *,
    data_dir: Path,
    meta: Mapping[str, str] = {},  # noqa: B006 - read only
    tls: client.TlsFiles | None = None,
) -> fileformat.Info:
    """Snapshot the datastore ``endpoint`` names into ``target`` (which must not exist yet)."""
    if is_etcd(endpoint):
        from services.kine.snapshot import etcd

        # Like etcdctl snapshot save, from one member: the first endpoint listed.
        return await etcd.save(endpoint.split(",", 1)[0].strip(), target, tls=tls)
    scheme, dsn = _resolve(endpoint, data_dir=data_dir)
    meta = {"created": str(int(time.time())), **meta}
    try:
        if scheme == "sqlite":
            return await asyncio.to_thread(sqlite.save, Path(dsn), target, meta=meta)
        from services.kine.snapshot import sql

        if scheme == "postgres":
            return await sql.save_postgres(dsn, target, meta=meta)
        return await sql.save_mysql(dsn, target, meta=meta)
    except (types.StoreError, OSError):
        raise
    except Exception as exc:  # the driver's own failure, translated without credentials
        raise _driver_error("snapshot", endpoint, exc) from exc


async def restore(endpoint: str, snapshot: Path, *, data_dir: Path, now: float | None = None) -> Restored:
    """Replace the datastore's contents by ``snapshot``'s, keeping the old data aside."""
    if is_etcd(endpoint):
        raise SnapshotError(
            "the datastore is a real etcd: restore its snapshot with etcdutl snapshot restore, "
            "then start etcd on the restored data dir"
        )
    info = fileformat.read_info(snapshot)
    if info.kind == "etcd":
        raise SnapshotError(f"{snapshot} is an etcd snapshot: it restores into etcd (etcdutl), not into kine")
    scheme, dsn = _resolve(endpoint, data_dir=data_dir)
    now = time.time() if now is None else now
    try:
        if scheme == "sqlite":
            moved = await asyncio.to_thread(sqlite.restore, Path(dsn), snapshot, now=now)
            return Restored(info=info, datastore=dsn, backup=str(moved or ""))
        # Creates the database and the schema when they do not exist yet, as kine would.
        _, db = await dialects_.open_database(endpoint, data_dir=data_dir)
        await db.close()
        from services.kine.snapshot import sql

        restore_sql = sql.restore_postgres if scheme == "postgres" else sql.restore_mysql
        backup = await restore_sql(dsn, snapshot, now=now)
        return Restored(info=info, datastore=dialects_.redact(endpoint), backup=backup)
    except (types.StoreError, OSError):
        raise
    except Exception as exc:
        raise _driver_error("restore", endpoint, exc) from exc


def _resolve(endpoint: str, *, data_dir: Path) -> tuple[str, str]:
    scheme, dsn = dialects_.resolve(endpoint, data_dir=data_dir)
    if scheme == "memory":
        raise SnapshotError("the memory:// datastore keeps nothing to snapshot or restore")
    return scheme, dsn


def _driver_error(what: str, endpoint: str, exc: Exception) -> SnapshotError:
    message = dialects_.redact(str(exc))
    return SnapshotError(
        f"{what} of {dialects_.redact(endpoint) or 'sqlite'} failed: {type(exc).__name__}: {message}"
    )
