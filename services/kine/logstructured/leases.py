"""Real leases: ids, TTLs, keep-alives and expiry, persisted in the database.

Each lease is a row of ``kine_leases`` with its TTL and its wall-clock expiry, so
a restart neither forgets a lease nor extends it. Keys carry their lease id in
the log's ``lease`` column. One expiry loop per process revokes due leases; when
several kine processes share a database they may race to revoke the same lease,
which is harmless: revoking deletes keys by compare-and-swap, and a lease that is
already gone is simply skipped.

A database written by K3s's kine stores a TTL (not an id) in the ``lease`` column
and has no lease table: on start such keys get a lease whose id is that TTL and
whose clock starts then, which is exactly what kine did.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from typing import TYPE_CHECKING

from services.kine import types
from services.kine.logstructured import rows
from services.kine.sqllog import log as sqllog

if TYPE_CHECKING:
    from services.kine.logstructured.store import LogStructured

log = logging.getLogger(__name__)

EXPIRY_TICK = 0.5
MAX_LEASE_ID = 2**31 - 1  # fits the 32-bit lease column of databases kine created


class Leases:
    def __init__(self, log_: sqllog.SqlLog, store: LogStructured) -> None:
        self._log = log_
        self._store = store

    @property
    def _d(self):  # noqa: ANN202 - the dialect, for its statements
        return self._log.dialect

    async def grant(self, ttl: int, *, lease_id: int = 0) -> types.LeaseInfo:
        if ttl <= 0:
            raise types.UnsupportedError("lease TTL must be positive")
        chosen = lease_id or secrets.randbelow(MAX_LEASE_ID) + 1

        async def job(tx: sqllog.LogTx) -> types.LeaseInfo:
            if await tx.query(self._d.lease_get, (chosen,)):
                raise types.LeaseExistsError()
            await tx.execute(self._d.lease_insert, (chosen, ttl, time.time() + ttl))
            return types.LeaseInfo(chosen, ttl, ttl)

        info = await self._log.write(job)
        log.debug("LEASE GRANT id=%d ttl=%d", chosen, ttl)
        return info

    async def check(self, tx: sqllog.LogTx, lease_id: int) -> None:
        """Raise LeaseNotFoundError unless the lease exists (inside a write job)."""
        if not await tx.query(self._d.lease_get, (lease_id,)):
            raise types.LeaseNotFoundError()

    async def revoke(self, lease_id: int) -> int:
        async def job(tx: sqllog.LogTx) -> int:
            if not await tx.query(self._d.lease_get, (lease_id,)):
                raise types.LeaseNotFoundError()
            revision = 0
            for raw in await tx.scan(self._d.lease_keys, (lease_id,)):
                row = self._log.row(raw)
                revision = await self._store._delete(tx, row)  # noqa: SLF001 - same layer
            await tx.execute(self._d.lease_delete, (lease_id,))
            return revision

        revision = await self._log.write(job, savepoint=True)
        log.debug("LEASE REVOKE id=%d => rev=%d", lease_id, revision)
        return revision or await self._log.current_revision()

    async def keepalive(self, lease_id: int) -> types.LeaseInfo:
        async def job(tx: sqllog.LogTx) -> types.LeaseInfo:
            found = await tx.query(self._d.lease_get, (lease_id,))
            if not found or found[0][2] <= time.time():
                raise types.LeaseNotFoundError()
            ttl = int(found[0][1])
            await tx.execute(self._d.lease_refresh, (time.time() + ttl, lease_id))
            return types.LeaseInfo(lease_id, ttl, ttl)

        return await self._log.write(job)

    async def time_to_live(self, lease_id: int, *, keys: bool = False) -> types.LeaseInfo:
        found = await self._log.db.query(self._d.lease_get, (lease_id,))
        if not found:
            return types.LeaseInfo(lease_id, -1, 0)
        _, ttl, expires_at = found[0]
        remaining = max(0, math.ceil(expires_at - time.time()))
        names: list[bytes] = []
        if keys:
            names = [
                rows.to_kv(self._log.row(r)).key
                for r in await self._log.db.scan(self._d.lease_keys, (lease_id,))
            ]
        return types.LeaseInfo(lease_id, remaining, int(ttl), names)

    async def list(self) -> list[int]:
        return [int(r[0]) for r in await self._log.db.query(self._d.lease_list)]

    async def adopt_orphans(self) -> None:
        orphans = [int(r[0]) for r in await self._log.db.scan(self._d.lease_orphans)]
        if not orphans:
            return

        async def job(tx: sqllog.LogTx) -> None:
            for ttl in orphans:
                if not await tx.query(self._d.lease_get, (ttl,)):
                    await tx.execute(self._d.lease_insert, (ttl, ttl, time.time() + ttl))

        await self._log.write(job)
        log.info("adopted %d leases from keys written without a lease table", len(orphans))

    async def expiry_loop(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_TICK)
            try:
                due = await self._log.db.query(self._d.lease_expired, (time.time(),))
            except Exception as exc:  # the database is briefly unavailable: try next tick
                log.warning("lease expiry check failed: %s: %s", type(exc).__name__, exc)
                continue
            for (lease_id,) in due:
                try:
                    await self.revoke(int(lease_id))
                    log.debug("LEASE EXPIRED id=%d", lease_id)
                except types.LeaseNotFoundError:
                    pass  # another kine process revoked it first
                except types.StoreError as exc:
                    log.warning("revoking expired lease %d failed: %s", lease_id, exc)
