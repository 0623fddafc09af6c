"""MVCC over the append-only log: the ``types.Backend`` the gRPC server serves.

Every change is one appended row: a create (``created=1``, ``prev_revision`` = the
key's last tombstone or 0), an update (``prev_revision`` = the row it replaces) or
a delete (a tombstone). The unique (name, prev_revision) index makes each append
a compare-and-swap: two writers that read the same newest row cannot both
append after it. Reads take the newest row per key at a revision.

Writes run as jobs in the log's group commit, so a transaction's compares and
its writes see one consistent state; a failed compare is a normal result.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

from services.kine import settings as settings_
from services.kine import types
from services.kine.logstructured import leases as leases_
from services.kine.logstructured import rows, watch
from services.kine.sqllog import log as sqllog
from services.machinery import tasks

log = logging.getLogger(__name__)


class LogStructured:
    def __init__(self, log_: sqllog.SqlLog, settings: settings_.KineSettings) -> None:
        self.log = log_
        self.settings = settings
        self.hub = watch.WatchHub(log_, buffer=settings.watch_buffer)
        self.leases = leases_.Leases(log_, self)
        self.compactions = 0
        # Set by whoever wires kine: an object with compactions / compaction_failures
        # counters and a compaction_seconds histogram (prometheus-style, duck typed).
        self.metrics: Any = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopped = False

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        await self.log.start(subscriber=self.hub.on_rows)
        await self.leases.adopt_orphans()
        self._tasks.append(tasks.guarded(self.leases.expiry_loop(), name="kine lease expiry"))
        if self.settings.compact_interval > 0:
            self._tasks.append(tasks.guarded(self._compact_loop(), name="kine compactor"))

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        await tasks.cancel_all(self._tasks)
        self.hub.close_all("kine is stopping")
        await self.log.stop()
        await self.log.db.close()

    # -- reads -------------------------------------------------------------------------

    async def current_revision(self) -> int:
        return await self.log.current_revision()

    async def compact_revision(self) -> int:
        return await self.log.compact_revision()

    async def _read_revision(self, revision: int) -> int:
        current = await self.log.current_revision()
        if revision <= 0:
            return current
        if revision > current:
            raise types.FutureRevisionError()
        compacted = await self.log.compact_revision()
        if revision < compacted:
            raise types.CompactedError(compacted, current)
        return revision

    async def range(
        self,
        key: bytes,
        range_end: bytes = b"",
        *,
        revision: int = 0,
        limit: int = 0,
        keys_only: bool = False,
        count_only: bool = False,
    ) -> types.RangeResult:
        rev = await self._read_revision(revision)
        current = rev if revision <= 0 else await self.log.current_revision()
        if not range_end:
            row = await self.log.get(rows.stored_name(key), revision=rev)
            kvs = [] if row is None or row.deleted else [rows.to_kv(row, keys_only=keys_only)]
            log.debug("GET %r rev=%d => rev=%d kvs=%d", key, revision, current, len(kvs))
            return types.RangeResult(current, [] if count_only else kvs, len(kvs))
        if count_only:
            count = await self.log.count(key, range_end, revision=rev)
            return types.RangeResult(current, [], count)
        found = await self.log.list(key, range_end, revision=rev, limit=limit + 1 if limit else 0)
        more = bool(limit) and len(found) > limit
        found = found[:limit] if limit else found
        count = await self.log.count(key, range_end, revision=rev) if more else len(found)
        log.debug(
            "LIST %r..%r rev=%d limit=%d => rev=%d kvs=%d",
            key,
            range_end,
            revision,
            limit,
            current,
            len(found),
        )
        return types.RangeResult(current, rows.to_kvs(found, keys_only=keys_only), count, more)

    # -- writes ------------------------------------------------------------------------

    async def put(
        self, key: bytes, value: bytes, *, lease: int = 0, prev_kv: bool = False
    ) -> types.PutResult:
        async def job(tx: sqllog.LogTx) -> types.PutResult:
            if lease:
                await self.leases.check(tx, lease)
            return await self._put(tx, key, value, lease=lease, want_prev=prev_kv)

        result = await self.log.write(job)
        log.debug("PUT %r lease=%d => rev=%d", key, lease, result.revision)
        return result

    async def _put(
        self,
        tx: sqllog.LogTx,
        key: bytes,
        value: bytes,
        *,
        lease: int,
        want_prev: bool,
        latest: sqllog.Row | None | bool = False,
    ) -> types.PutResult:
        """Append a put after ``latest`` (read here unless the caller already holds it).

        A caller that compared against a row must pass that row: the append then
        names it as prev_revision, so if anyone wrote after it the unique index
        refuses the append, even when the database would let a second read see
        the newer row (READ COMMITTED).
        """
        name = rows.stored_name(key)
        if latest is False:
            latest = await tx.latest(name)
        assert latest is not True
        versioned = name == rows.STORED_COMPACT_KEY
        if latest is not None and not latest.deleted:
            prev = rows.to_kv(latest)
            stored = rows.versioned(prev.version + 1, value) if versioned else value
            rid = await tx.append(
                name,
                create_revision=prev.create_revision,
                prev_revision=latest.id,
                lease=lease,
                value=stored,
                old_value=latest.value,
            )
            return types.PutResult(rid, prev if want_prev else None)
        stored = rows.versioned(1, value) if versioned else value
        prev_revision = latest.id if latest is not None else 0
        rid = await tx.append(name, created=True, prev_revision=prev_revision, lease=lease, value=stored)
        return types.PutResult(rid, None)

    async def _delete(self, tx: sqllog.LogTx, row: sqllog.Row) -> int:
        kv = rows.to_kv(row)
        return await tx.append(
            row.name,
            deleted=True,
            create_revision=kv.create_revision,
            prev_revision=row.id,
            lease=row.lease,
            old_value=row.value,
        )

    async def _delete_range(
        self,
        tx: sqllog.LogTx,
        key: bytes,
        range_end: bytes,
        *,
        want_prev: bool,
        latest: sqllog.Row | None | bool = False,
    ) -> types.DeleteResult:
        if range_end:
            targets = await tx.list(key, range_end)
        else:
            if latest is False:
                latest = await tx.latest(rows.stored_name(key))
            assert latest is not True
            targets = [latest] if latest is not None and not latest.deleted else []
        revision = 0
        for row in targets:
            revision = await self._delete(tx, row)
        prevs = [rows.to_kv(r) for r in targets] if want_prev else []
        return types.DeleteResult(revision, len(targets), prevs)

    async def delete_range(
        self, key: bytes, range_end: bytes = b"", *, prev_kv: bool = False
    ) -> types.DeleteResult:
        async def job(tx: sqllog.LogTx) -> types.DeleteResult:
            return await self._delete_range(tx, key, range_end, want_prev=prev_kv)

        result = await self.log.write(job, savepoint=bool(range_end))
        if not result.revision:
            result = dataclasses.replace(result, revision=await self.log.current_revision())
        log.debug("DELETE %r..%r => rev=%d deleted=%d", key, range_end, result.revision, result.deleted)
        return result

    async def txn(self, txn: types.Txn) -> types.TxnResult:
        writes = sum(not isinstance(op, types.RangeOp) for op in (*txn.success, *txn.failure))
        multi = writes > 1 or any(isinstance(op, types.DeleteOp) and op.range_end for op in txn.success)

        async def job(tx: sqllog.LogTx) -> tuple[bool, list[Any], int]:
            return await self._txn(tx, txn)

        succeeded, responses, revision = await self.log.write(job, savepoint=multi)
        revision = revision or await self.log.current_revision()
        results = [_at_revision(r, revision) for r in responses]
        log.debug("TXN compares=%d => rev=%d succeeded=%s", len(txn.compare), revision, succeeded)
        return types.TxnResult(revision, succeeded, results)

    async def _txn(self, tx: sqllog.LogTx, txn: types.Txn) -> tuple[bool, list[Any], int]:
        seen: dict[bytes, sqllog.Row | None] = {}

        async def latest(key: bytes) -> sqllog.Row | None:
            if key not in seen:
                seen[key] = await tx.latest(rows.stored_name(key))
            return seen[key]

        succeeded = True
        for cmp in txn.compare:
            if not _compare(cmp, await latest(cmp.key)):
                succeeded = False
                break
        responses: list[Any] = []
        revision = 0
        for op in txn.success if succeeded else txn.failure:
            if isinstance(op, types.RangeOp):
                responses.append(await self._txn_range(tx, op, latest))
                continue
            if isinstance(op, types.PutOp):
                if op.lease:
                    await self.leases.check(tx, op.lease)
                result: Any = await self._put(
                    tx, op.key, op.value, lease=op.lease, want_prev=op.prev_kv, latest=await latest(op.key)
                )
            else:
                result = await self._delete_range(
                    tx,
                    op.key,
                    op.range_end,
                    want_prev=op.prev_kv,
                    latest=None if op.range_end else await latest(op.key),
                )
            seen.clear()  # later reads in this transaction see this write (re-read inside the transaction)
            revision = max(revision, result.revision)
            responses.append(result)
        return succeeded, responses, revision

    async def _txn_range(self, tx: sqllog.LogTx, op: types.RangeOp, latest: Any) -> types.RangeResult:
        if op.range_end:
            found = await tx.list(op.key, op.range_end)
        else:
            row = await latest(op.key)
            found = [row] if row is not None and not row.deleted else []
        count = len(found)
        more = bool(op.limit) and count > op.limit
        found = found[: op.limit] if op.limit else found
        kvs = [] if op.count_only else rows.to_kvs(found, keys_only=op.keys_only)
        return types.RangeResult(0, kvs, count, more)

    # -- compaction ------------------------------------------------------------------------

    async def compact(self, revision: int) -> int:
        current = await self.log.current_revision()
        if revision > current:
            raise types.FutureRevisionError()
        stored = await self.log.compact_revision()
        if revision == 0 and stored == 0:
            return 0  # etcd: a store never compacted accepts "compact to 0" (its mark starts at -1)
        if revision <= stored:
            raise types.CompactedError(stored, current)
        return await self._compact(revision)

    async def _compact(self, target: int) -> int:
        started = time.monotonic()
        try:
            compacted = await self.log.compact(
                target,
                batch_size=self.settings.compact_batch_size,
                min_retain=self.settings.compact_min_retain,
            )
        except types.StoreError:
            if self.metrics is not None:
                self.metrics.compaction_failures.inc()
            raise
        self.compactions += 1
        if self.metrics is not None:
            self.metrics.compactions.inc()
            self.metrics.compaction_seconds.observe(time.monotonic() - started)
        return compacted

    async def _compact_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.compact_interval)
            try:
                current = await self.log.current_revision()
                await self._compact(current - self.settings.compact_min_retain)
            except types.StoreError as exc:
                log.warning("compaction failed, will retry: %s", exc)

    # -- watch -------------------------------------------------------------------------------

    async def watch(self, key: bytes, range_end: bytes = b"", *, start_revision: int = 0) -> types.Watch:
        if start_revision <= 0:
            # etcd: "from now" is after every write acknowledged so far, even one
            # the poll loop has not delivered yet.
            start_revision = await self.log.current_revision() + 1
        else:
            compacted = await self.log.compact_revision()
            if start_revision - 1 < compacted:
                raise types.CompactedError(compacted, await self.log.current_revision())
        return self.hub.subscribe(rows.stored_name(key), range_end, start_revision=start_revision)

    async def synced_revision(self) -> int:
        return await self.log.wait_polled(await self.log.current_revision())

    async def db_size(self) -> int:
        return await self.log.size()

    # -- leases -------------------------------------------------------------------------------

    async def lease_grant(self, ttl: int, *, lease_id: int = 0) -> types.LeaseInfo:
        return await self.leases.grant(ttl, lease_id=lease_id)

    async def lease_revoke(self, lease_id: int) -> int:
        return await self.leases.revoke(lease_id)

    async def lease_keepalive(self, lease_id: int) -> types.LeaseInfo:
        return await self.leases.keepalive(lease_id)

    async def lease_time_to_live(self, lease_id: int, *, keys: bool = False) -> types.LeaseInfo:
        return await self.leases.time_to_live(lease_id, keys=keys)

    async def lease_list(self) -> list[int]:
        return await self.leases.list()


def _at_revision(result: types.OpResult, revision: int) -> types.OpResult:
    """``dataclasses.replace(result, revision=revision)``, without its per-call field introspection."""
    if isinstance(result, types.PutResult):
        return types.PutResult(revision, result.prev_kv)
    if isinstance(result, types.DeleteResult):
        return types.DeleteResult(revision, result.deleted, result.prev_kvs)
    return types.RangeResult(revision, result.kvs, result.count, result.more)


def _compare(cmp: types.Compare, row: sqllog.Row | None) -> bool:
    kv = rows.to_kv(row) if row is not None and not row.deleted else None
    if cmp.target == "value":
        if kv is None:
            return False  # etcd: a value compare on a missing key never holds
        actual: Any = kv.value
    elif cmp.target == "version":
        actual = kv.version if kv else 0
    elif cmp.target == "create":
        actual = kv.create_revision if kv else 0
    elif cmp.target == "mod":
        actual = kv.mod_revision if kv else 0
    else:
        actual = kv.lease if kv else 0
    expected = cmp.value
    match cmp.result:
        case "=":
            return actual == expected
        case "!=":
            return actual != expected
        case "<":
            return actual < expected
        case ">":
            return actual > expected
    raise types.UnsupportedError(f"unsupported compare result {cmp.result!r}")
