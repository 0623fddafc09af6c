"""The SQL log: rows in, rows out, one writer, one poller.

This layer knows rows and revisions, not keys' meaning (that is logstructured's
job). It provides:

- reads: the newest row of a key, the newest live rows of a range, counts, and
  rows after a revision (history) - each at a revision;
- group commit: write jobs (async functions over a ``LogTx``) queue up and one
  writer task runs everything queued in one SQL transaction. Each job keeps its
  own outcome: a job that hits the unique (name, prev_revision) constraint, i.e.
  lost a compare-and-swap race with another process, is retried alone. While
  several writers are active the writer lingers (at most LINGER) for as many
  jobs as the last batch held, so batches form even when a commit is quick;
- the poll loop: rows after the last seen revision, in id order, handed to one
  subscriber. Local commits wake it at once; a timer (and a bus notice from other
  kine processes) covers writes made elsewhere. Ids taken by transactions that
  are not committed yet show up as gaps: a gap is re-polled once, then filled
  with a ``gap-N`` tombstone so no event can ever arrive behind a later one;
- on a database no other process writes (``dialect.shared`` is False: SQLite),
  the writer hands the rows it just committed straight to the subscriber when
  they follow the last delivered revision without a hole, which is always the
  case there (one writer, ids from one counter). That is exactly what the poll
  loop would read back, without reading it back; the poll loop still runs on its
  timer and picks up anything the writer did not hand over;
- compaction in short batches through the same writer, so it never holds the
  database for long and never races a write for SQLite's lock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple, TypeVar

from services.kine import types
from services.kine.dialects import base
from services.machinery import tasks

log = logging.getLogger(__name__)

T = TypeVar("T")

POLL_BATCH = 500
MAX_BATCH = 500  # write jobs per group commit
CAS_RETRIES = 20
TRANSIENT_RETRIES = 5  # runs of a write the database rolled back whole (deadlocks between servers)
# Seconds the writer waits for the writers of the last batch to queue again (see _gather).
LINGER = 0.005
GAP_RETRY_DELAY = 0.002


class Row(NamedTuple):
    """One row of the log, as stored (a tuple: lists build thousands of these)."""

    id: int
    name: bytes
    created: int  # 1 on the row that creates a key (0/1, used as a truth value)
    deleted: int  # 1 on tombstones and gap fills
    create_revision: int
    prev_revision: int
    lease: int
    value: bytes | None
    old_value: bytes | None

    @property
    def is_gap(self) -> bool:
        return bool(self.deleted) and self.prev_revision == 0 and self.name.startswith(b"gap-")


# Row._make without its Python-level length check: the tuples built here always have 9 fields.
_make_row: Callable[[tuple[Any, ...]], Row] = functools.partial(tuple.__new__, Row)


class LogTx:
    """What a write job sees: reads and appends inside the group-commit transaction."""

    def __init__(self, log_: SqlLog, tx: base.Tx, appended: list[Row]) -> None:
        self._log = log_
        self._tx = tx
        self.last_id = 0
        # Every row this transaction appended, in id order (shared by the batch's jobs).
        self.appended = appended

    async def latest(self, key: bytes) -> Row | None:
        log_ = self._log
        rows = await self._tx.query(log_.sql_latest, (log_.dialect.encode_key(key),))
        return log_.row(rows[0]) if rows else None

    async def list(self, start: bytes, end: bytes, *, limit: int = 0) -> list[Row]:
        sql, args = self._log.range_query(start, end, revision=None, limit=limit, count=False)
        return self._log.rows(await self._tx.query(sql, args))

    async def append(
        self,
        name: bytes,
        *,
        created: bool = False,
        deleted: bool = False,
        create_revision: int = 0,
        prev_revision: int = 0,
        lease: int = 0,
        value: bytes | None = None,
        old_value: bytes | None = None,
    ) -> int:
        log_ = self._log
        args = (
            log_.dialect.encode_key(name),
            int(created),
            int(deleted),
            create_revision,
            prev_revision,
            lease,
            value,
            old_value,
        )
        rows = await self._tx.query(log_.sql_insert, args)
        row_id = int(rows[0][0])
        self.last_id = max(self.last_id, row_id)
        self.appended.append(_make_row((row_id, name, *args[1:])))
        return row_id

    async def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple]:
        return await self._tx.query(sql, args)

    async def scan(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple]:
        """A read that visits the whole table (see ``base.Tx.scan``)."""
        return await self._tx.scan(sql, args)

    async def execute(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        return await self._tx.execute(sql, args)

    def savepoint(self) -> Any:
        return self._tx.savepoint()


Job = Callable[[LogTx], Awaitable[Any]]


@dataclasses.dataclass(slots=True)
class _Pending:
    job: Job
    future: asyncio.Future[Any]
    savepoint: bool


class SqlLog:
    def __init__(self, dialect: base.Dialect, db: base.Database, *, poll_interval: float = 1.0) -> None:
        self.dialect = dialect
        self.db = db
        self._poll_interval = poll_interval
        self._queue: list[_Pending] = []
        self._queue_ready = asyncio.Event()
        self._poll_wake = asyncio.Event()
        self._current = 0  # newest revision known to exist (committed)
        self._polled = 0  # newest revision handed to the subscriber, gaps included
        # wait_polled callers: (revision, future), resolved once _polled reaches the revision.
        self._polled_waiters: list[tuple[int, asyncio.Future[None]]] = []
        # The writer may hand its rows to the subscriber only when no other process
        # writes the database: then nobody else can commit an id between ours.
        self._handoff = not dialect.shared
        # Statements used on every request, built once.
        self.sql_latest = dialect.latest(at_revision=False)
        self.sql_latest_at = dialect.latest(at_revision=True)
        self.sql_insert = dialect.insert
        self._sql_after = dialect.after(ranged=False)
        self._subscriber: Callable[[list[Row]], None] | None = None
        self._on_commit: list[Callable[[int], None]] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._failed: BaseException | None = None
        self._stopped = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------

    async def start(self, *, subscriber: Callable[[list[Row]], None]) -> None:
        self._subscriber = subscriber
        await self._setup_rows()
        self._current = await self._query_current()
        self._polled = self._current
        self._tasks = [
            tasks.guarded(self._writer_loop(), name="kine writer", on_failure=self._fail),
            tasks.guarded(self._poll_loop(), name="kine poll loop", on_failure=self._fail),
        ]

    async def stop(self) -> None:
        await tasks.cancel_all(self._tasks)
        for pending in self._queue:
            if not pending.future.done():
                pending.future.set_exception(types.DatastoreError("kine is stopping"))
        self._queue.clear()
        self._stopped.set()

    def _fail(self, exc: BaseException | None) -> None:
        self._failed = exc or RuntimeError("loop exited")
        self._stopped.set()

    async def wait_stopped(self) -> BaseException | None:
        await self._stopped.wait()
        return self._failed

    def on_commit(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(revision)`` after each local commit (e.g. to notify other processes)."""
        self._on_commit.append(callback)

    async def _setup_rows(self) -> None:
        async def setup(tx: LogTx) -> None:
            if not await tx.latest(base.COMPACT_KEY.encode()):
                await tx.append(base.COMPACT_KEY.encode(), created=True, value=b"", old_value=b"")
            if not await tx.latest(b"/registry/health"):
                await tx.append(b"/registry/health", created=True, value=b'{"health":"true"}')

        for attempt in range(CAS_RETRIES):
            try:
                async with self.db.transaction() as tx:
                    await setup(LogTx(self, tx, []))
                return
            except base.UniqueViolation:
                # Another kine on the same fresh database wrote them first: check again.
                if attempt == CAS_RETRIES - 1:
                    raise

    # -- reads ------------------------------------------------------------------------

    def row(self, raw: Sequence[Any]) -> Row:
        rid, name, created, deleted, create_rev, prev_rev, lease, value, old_value = raw
        # The drivers return ints and bytes already; NULLs (rows kine wrote) read as 0.
        return _make_row(
            (rid, self.dialect.decode_key(name), created, deleted, create_rev or 0, prev_rev or 0, lease or 0,
             value, old_value)
        )  # fmt: skip

    def rows(self, raws: list[Any]) -> list[Row]:
        decode = self.dialect.decode_key
        return [
            _make_row((rid, decode(name), created, deleted, crev or 0, prev or 0, lease or 0, value, old))
            for rid, name, created, deleted, crev, prev, lease, value, old in raws
        ]

    async def _query_current(self) -> int:
        rows = await self.db.query(self.dialect.current_revision)
        return int(rows[0][0] or 0)

    async def current_revision(self) -> int:
        if self.dialect.shared:
            self._current = max(self._current, await self._query_current())
        return self._current

    async def compact_revision(self) -> int:
        rows = await self.db.query(self.dialect.compact_revision)
        return int(rows[0][0] or 0) if rows else 0

    async def get(self, key: bytes, *, revision: int) -> Row | None:
        rows = await self.db.query(self.sql_latest_at, (self.dialect.encode_key(key), revision))
        return self.row(rows[0]) if rows else None

    def range_query(
        self, start: bytes, end: bytes, *, revision: int | None, limit: int, count: bool
    ) -> tuple[str, list[Any]]:
        """SQL and arguments for the newest live rows of [start, end) (end b"\\0": no upper bound)."""
        d = self.dialect
        start, end, exclusive = self._bounds(start, end)
        bounded = end != b"\x00"
        args: list[Any] = [d.encode_key(start)]
        if bounded:
            args.append(d.encode_key(end))
        args.append(revision if revision is not None else 2**62)
        sql = d.range(exclusive_start=exclusive, bounded=bounded, count=count, limit=limit > 0 and not count)
        if limit > 0 and not count:
            args.append(limit)
        return sql, args

    def _bounds(self, start: bytes, end: bytes) -> tuple[bytes, bytes, bool]:
        """(start, end, exclusive start) that a dialect whose keys cannot hold NUL can bind."""
        if self.dialect.nul_in_keys:
            return start, end, False
        exclusive = False
        if start.endswith(b"\x00"):
            start, exclusive = start[:-1], True  # ">= k\0" is "> k" when no key holds NUL
        if end != b"\x00" and end.endswith(b"\x00"):
            end = end[:-1] + b"\x01"  # "< k\0" is "< k\1" when no key holds NUL
        return start, end, exclusive

    async def list(self, start: bytes, end: bytes, *, revision: int, limit: int = 0) -> list[Row]:
        sql, args = self.range_query(start, end, revision=revision, limit=limit, count=False)
        return self.rows(await self.db.query(sql, args))

    async def count(self, start: bytes, end: bytes, *, revision: int) -> int:
        sql, args = self.range_query(start, end, revision=revision, limit=0, count=True)
        rows = await self.db.query(sql, args)
        return int(rows[0][0] or 0)

    async def history(
        self, start: bytes | None, end: bytes, *, after: int, upto: int, limit: int = POLL_BATCH
    ) -> list[Row]:
        """Rows with after < id <= upto, oldest first; only [start, end) unless start is None."""
        d = self.dialect
        if start is None:
            rows = await self.db.query(self._sql_after, (after, upto, limit))
        else:
            start, end, exclusive = self._bounds(start, end)
            bounded = end != b"\x00"
            args: list[Any] = [after, upto, d.encode_key(start)]
            if bounded:
                args.append(d.encode_key(end))
            args.append(limit)
            rows = await self.db.query(d.after(ranged=True, exclusive_start=exclusive, bounded=bounded), args)
        return self.rows(rows)

    async def size(self) -> int:
        return await self.db.size()

    # -- group commit -----------------------------------------------------------------

    async def write(self, job: Job, *, savepoint: bool = False) -> Any:
        """Run ``job`` in the next group commit; return its result or raise its error.

        ``savepoint`` asks for the job's writes to be undone as one if it fails
        halfway (jobs with several appends).
        """
        if self._stopped.is_set():
            raise types.DatastoreError("kine is not running")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(job, future, savepoint or self.dialect.needs_savepoints))
        self._queue_ready.set()
        return await future

    async def _writer_loop(self) -> None:
        # How many jobs the recent batches held: under concurrent load, about how many
        # writers take turns. 1 means nobody else is writing: commit at once.
        expected = 1
        while True:
            await self._queue_ready.wait()
            self._queue_ready.clear()
            complete = expected <= 1 or await self._gather(expected)
            taken = min(len(self._queue), MAX_BATCH)
            expected = max(expected, taken) if complete else max(1, taken)
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                await self._commit(batch)

    async def _gather(self, expected: int) -> bool:
        """Wait (at most LINGER) until ``expected`` jobs are queued; False if they did not come.

        A commit on SQLite takes the loop a few tens of µs, so without this every
        write would commit alone: no batching, and each answer leaving on its own
        costs the server and its clients a wakeup apiece. Waiting for the writers
        that took part in the last batch forms batches as a slow commit would, and
        only when several writers are active (a lone writer never waits).
        """
        deadline = time.monotonic() + LINGER
        while len(self._queue) < expected:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                async with asyncio.timeout(left):
                    await self._queue_ready.wait()
            except TimeoutError:
                return False
            self._queue_ready.clear()
        return True

    async def _commit(self, batch: list[_Pending], *, attempt: int = 0) -> None:
        outcomes: list[tuple[bool, Any]] = []
        appended: list[Row] = []
        last_id = 0
        try:
            async with self.db.transaction() as tx:
                for pending in batch:
                    ltx = LogTx(self, tx, appended)
                    outcomes.append(await self._run(ltx, pending))
                    last_id = max(last_id, ltx.last_id)
        except Exception as exc:
            if len(batch) > 1:
                # Something broke the shared transaction: give every job its own.
                log.debug("group commit of %d failed (%s); retrying one by one", len(batch), exc)
                for pending in batch:
                    await self._commit([pending])
                return
            if isinstance(exc, base.TransientError) and attempt < TRANSIENT_RETRIES:
                # Rolled back whole (a deadlock with another server's writes): nothing was written.
                log.debug("write rolled back by the database (%s); running it again", exc)
                await asyncio.sleep(0.01 * 2**attempt)
                await self._commit(batch, attempt=attempt + 1)
                return
            self._resolve(batch[0].future, False, self._datastore_error(exc))
            return
        if last_id:
            self._current = max(self._current, last_id)
            if not (self._handoff and self._hand_over(appended)):
                self._poll_wake.set()
            for callback in self._on_commit:
                callback(last_id)
        # Events first, then the answers: a watcher sees a write no later than its writer does.
        for pending, (ok, value) in zip(batch, outcomes, strict=True):
            self._resolve(pending.future, ok, value)

    def _hand_over(self, rows: list[Row]) -> bool:
        """Deliver just-committed rows if they continue the delivered sequence exactly."""
        if not rows or rows[0].id != self._polled + 1 or rows[-1].id != self._polled + len(rows):
            return False  # ids are increasing, so first/last/length pin down "no hole"
        self._deliver(rows)
        return True

    async def _run(self, ltx: LogTx, pending: _Pending) -> tuple[bool, Any]:
        for _attempt in range(CAS_RETRIES):
            mark = len(ltx.appended)
            try:
                if pending.savepoint:
                    async with ltx.savepoint():
                        return True, await pending.job(ltx)
                return True, await pending.job(ltx)
            except base.UniqueViolation:
                # Another process wrote the same key (or took the id) first: re-read and retry.
                self._undo(ltx, mark, pending)
                ltx.last_id = 0
                continue
            except types.StoreError as exc:
                self._undo(ltx, mark, pending)
                return False, exc
        return False, types.DatastoreError("too many conflicting writers on one key")

    @staticmethod
    def _undo(ltx: LogTx, mark: int, pending: _Pending) -> None:
        # A savepoint rolled the job's rows back; without one they stay in the transaction.
        if pending.savepoint:
            del ltx.appended[mark:]

    @staticmethod
    def _resolve(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
        if future.done():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def _datastore_error(self, exc: BaseException) -> types.StoreError:
        if isinstance(exc, types.StoreError):
            return exc
        log.warning("datastore write failed: %s: %s", type(exc).__name__, exc)
        return types.DatastoreError(f"datastore write failed: {type(exc).__name__}")

    # -- the poll loop ------------------------------------------------------------------

    def notify(self, revision: int = 0) -> None:
        """Wake the poll loop (a local or remote write at ``revision`` happened)."""
        if revision == 0 or revision > self._polled:
            self._poll_wake.set()

    async def _poll_loop(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self._poll_interval):
                    await self._poll_wake.wait()
            except TimeoutError:
                pass
            self._poll_wake.clear()
            try:
                await self._poll_once()
            except types.StoreError:
                raise
            except Exception as exc:
                log.warning("poll failed, retrying: %s: %s", type(exc).__name__, exc)

    async def _poll_once(self) -> None:
        gap_seen: int | None = None
        while True:
            rows = await self.history(None, b"", after=self._polled, upto=2**62, limit=POLL_BATCH)
            fetched = len(rows)
            # The writer may have handed some of these over while the query ran.
            rows = self._unseen(rows)
            if not rows:
                if fetched < POLL_BATCH:
                    return
                continue
            good = self._contiguous(rows)
            if good:
                self._deliver(good)
            if len(good) == len(rows):
                if fetched < POLL_BATCH:
                    return
                continue
            gap = self._polled + 1
            if gap_seen != gap:
                gap_seen = gap
                await asyncio.sleep(GAP_RETRY_DELAY)
                continue
            await self._fill_gap(gap)

    def _unseen(self, rows: list[Row]) -> list[Row]:
        polled = self._polled
        if rows and rows[0].id <= polled:
            return [r for r in rows if r.id > polled]
        return rows

    def _contiguous(self, rows: list[Row]) -> list[Row]:
        expected = self._polled + 1
        for i, row in enumerate(rows):
            if row.id != expected:
                return rows[:i]
            expected += 1
        return rows

    async def _fill_gap(self, gap: int) -> None:
        async def fill(tx: LogTx) -> None:
            await tx.execute(self.dialect.gap_insert, (gap, self.dialect.encode_key(f"gap-{gap}".encode())))

        try:
            async with self.db.transaction() as tx:
                await fill(LogTx(self, tx, []))
            log.debug("filled revision gap %d", gap)
        except base.UniqueViolation:
            pass  # the real row committed meanwhile; the next poll reads it

    def _deliver(self, rows: list[Row]) -> None:
        # Synchronous: the writer and the poll loop never interleave inside a delivery.
        self._polled = rows[-1].id
        self._current = max(self._current, self._polled)
        assert self._subscriber is not None
        self._subscriber([r for r in rows if not r.is_gap])
        if self._polled_waiters:
            self._wake_polled_waiters()

    def _wake_polled_waiters(self) -> None:
        waiting = []
        for revision, future in self._polled_waiters:
            if revision <= self._polled:
                if not future.done():
                    future.set_result(None)
            else:
                waiting.append((revision, future))
        self._polled_waiters = waiting

    @property
    def polled_revision(self) -> int:
        return self._polled

    async def wait_polled(self, revision: int) -> int:
        """Wait until every row up to ``revision`` has been handed to the subscriber."""
        self.notify()
        if self._polled < revision:
            future = asyncio.get_running_loop().create_future()
            self._polled_waiters.append((revision, future))
            await future
        return self._polled

    # -- compaction -------------------------------------------------------------------------

    async def compact(self, target: int, *, batch_size: int, min_retain: int) -> int:
        """Compact up to ``target`` in short batches, keeping the newest ``min_retain`` revisions."""
        started = time.monotonic()
        compacted = deleted = 0
        while True:
            step = await self.write(
                self._compaction_step(target, batch_size=batch_size, min_retain=min_retain)
            )
            compacted, rows, done = step
            deleted += rows
            if done:
                break
        await self.db.after_compaction()
        log.debug(
            "COMPACT target=%d => rev=%d deleted=%d in %.3fs",
            target,
            compacted,
            deleted,
            time.monotonic() - started,
        )
        return compacted

    def _compaction_step(self, target: int, *, batch_size: int, min_retain: int) -> Job:
        d = self.dialect

        async def step(tx: LogTx) -> tuple[int, int, bool]:
            current = int((await tx.query(d.current_revision))[0][0] or 0)
            rows = await tx.query(d.compact_revision)
            stored = int(rows[0][0] or 0) if rows else 0
            goal = min(target, current - min_retain)
            if goal <= stored:
                return stored, 0, True
            end = min(stored + batch_size, goal)
            deleted = await tx.execute(d.superseded, (stored, end))
            deleted += await tx.execute(d.compact_deleted, (stored, end))
            await tx.execute(d.set_compact_revision, (end,))
            return end, deleted, end >= goal

        return step
