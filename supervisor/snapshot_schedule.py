"""Scheduled snapshots: a small component the supervisor runs beside the server's components.

At each time ``--etcd-snapshot-schedule-cron`` names (K3s: ``0 */12 * * *``, in local time), it
saves ``<etcd-snapshot-name>-<node>-<unix time>`` and prunes that name down to
``--etcd-snapshot-retention`` (5). A snapshot that fails is logged and the next one is taken on
time: a full disk must not stop the server. ``--etcd-disable-snapshots`` turns it off; the agent
profile never runs it.

With ``--etcd-s3`` each snapshot is then uploaded and the bucket pruned to the same retention, as
K3s does. The bucket is a second copy, never the only one: an upload that fails (endpoint down,
bucket gone) is logged as an error and the local snapshot stays; pruning S3 is tried even then, as
K3s tries it (a full bucket may be what made the upload fail).

``attach`` wraps the server's root component (the ProcessManager, or the edge fold) so the
scheduler starts once the server is ready and stops before it. The schedule is parsed when the
server starts, so a bad cron line is a start error, not a silent lack of backups.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import enum
import logging
from typing import Any, Protocol

from services.client import clock as clock_
from services.machinery import cron, tasks
from supervisor import config, s3, snapshots

log = logging.getLogger(__name__)


class Clock(Protocol):
    def now(self) -> datetime.datetime: ...

    async def sleep(self, seconds: float) -> None: ...


class State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


def parse(settings: config.Settings) -> cron.Schedule:
    """The schedule, or a ConfigError naming the option.

    As K3s reads it: in the server's local time (its UTC offset now), unless the line names a
    zone (``CRON_TZ=Europe/Berlin 0 3 * * *``).
    """
    line = settings.snapshots.schedule_cron
    try:
        schedule = cron.parse_schedule(line)
    except cron.ScheduleError as exc:
        raise config.ConfigError(f"etcd-snapshot-schedule-cron {line!r}: {exc}") from None
    if not line.strip().startswith(("TZ=", "CRON_TZ=")):
        local = datetime.datetime.now().astimezone().tzinfo or datetime.UTC
        schedule = dataclasses.replace(schedule, tz=local)
    if schedule.next(datetime.datetime.now(datetime.UTC)) is None:
        raise config.ConfigError(f"etcd-snapshot-schedule-cron {line!r} never comes")
    return schedule


class Scheduler:
    """Takes the scheduled snapshots until stopped."""

    def __init__(self, settings: config.Settings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self.schedule = parse(settings)
        try:  # a configuration that cannot work is a start error, like a bad cron line
            self.store = snapshots.store_for(settings)
        except s3.S3Error as exc:
            raise config.ConfigError(str(exc)) from None
        self.state = State.NEW
        self.taken: list[str] = []  # names saved by this scheduler, for logs and tests
        self.uploaded: list[str] = []  # S3 locations uploaded by this scheduler, likewise
        self.took = asyncio.Event()  # set after each attempt (a test clears it to wait for the next)
        self._clock: Clock = clock or clock_.RealClock()
        self._tasks: list[asyncio.Task[Any]] = []

    async def start(self) -> None:
        self._tasks.append(tasks.guarded(self._loop(), name="scheduled snapshots"))
        self.state = State.RUNNING
        snapshot = self.settings.snapshots
        remote = f" and s3://{self.store.bucket}/{self.store.prefix}" if self.store is not None else ""
        log.info(
            "scheduled snapshots: %r, keeping %d, in %s%s",
            snapshot.schedule_cron, snapshot.retention, snapshots.snapshot_dir(self.settings), remote,
        )  # fmt: skip

    async def wait(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def stop(self) -> None:
        await tasks.cancel_all(self._tasks)
        self.state = State.STOPPED

    async def _loop(self) -> None:
        while True:
            due = self.schedule.next(self._clock.now())
            if due is None:
                log.warning("the snapshot schedule has no next time; no more scheduled snapshots")
                await asyncio.Event().wait()  # nothing left to do until stopped
            assert due is not None
            # Sleep until the due time; a clock that wakes early just sleeps the rest.
            while (left := (due - self._clock.now()).total_seconds()) > 0:
                await self._clock.sleep(left)
            await self.take(due)

    async def take(self, due: datetime.datetime) -> None:
        """Save one scheduled snapshot and prune; failures are logged, never raised."""
        snapshot = self.settings.snapshots
        try:
            saved = await snapshots.save(self.settings, name=snapshot.scheduled_name, now=due)
            self.taken.append(saved.name)
            pruned = snapshots.prune(
                self.settings, name=snapshot.scheduled_name, retention=snapshot.retention
            )
            if self.store is not None:
                await self._replicate(saved)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("scheduled snapshot failed: %s: %s", type(exc).__name__, exc)
            return
        finally:
            self.took.set()
        if pruned:
            log.info("pruned snapshots %s", ", ".join(pruned))

    async def _replicate(self, saved: snapshots.SnapshotFile) -> None:
        """Upload ``saved`` and prune the bucket; S3 failures are logged, the local file stays."""
        assert self.store is not None
        snapshot = self.settings.snapshots
        try:
            await self.store.check()
            self.uploaded.append(await snapshots.upload(self.store, saved))
        except s3.S3Error as exc:
            log.error("scheduled snapshot upload failed: %s", exc)
        try:
            pruned = await snapshots.prune_remote(
                self.settings, self.store, name=snapshot.scheduled_name, retention=snapshot.retention
            )
        except s3.S3Error as exc:
            log.error("pruning the S3 snapshots failed: %s", exc)
            return
        if pruned:
            log.info("pruned S3 snapshots %s", ", ".join(pruned))


class Component(Protocol):
    async def start(self) -> None: ...

    async def wait(self) -> None: ...

    async def stop(self) -> None: ...


class WithSnapshots:
    """The server's root component with the snapshot scheduler beside it."""

    def __init__(self, inner: Component, scheduler: Scheduler) -> None:
        self.inner = inner
        self.scheduler = scheduler

    async def start(self) -> None:
        await self.inner.start()
        await self.scheduler.start()

    async def wait(self) -> None:
        # The scheduler never ends the server: only the server's own end counts.
        await self.inner.wait()

    async def stop(self) -> None:
        await self.scheduler.stop()
        await self.inner.stop()


def attach(inner: Component, settings: config.Settings) -> Component:
    """``inner`` with scheduled snapshots, unless they are disabled."""
    if settings.snapshots.disable:
        return inner
    return WithSnapshots(inner, Scheduler(settings))
