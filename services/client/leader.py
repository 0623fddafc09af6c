"""Leader election over a ``coordination.k8s.io/v1`` Lease, as client-go's ``leaderelection``.

Two servers may each run a scheduler and a controller manager; only the holder of the Lease
(``kube-system/<name>``) acts. A candidate reads the Lease and takes it when nobody holds it or
when the holder has not renewed it for ``leaseDurationSeconds`` as *this* candidate observed it
(the time it last saw the record change, on its own monotonic clock, so clock skew between
servers does not matter). The leader renews every ``retry_period``; if no renewal succeeds within
``renew_deadline`` it steps down before anyone else may take over (``lease_duration`` later).
Every write carries the ``resourceVersion`` just read: of two candidates racing for an expired
lease, the API server lets exactly one through and answers the other 409.

Defaults are Kubernetes': lease 15 s, renew deadline 10 s, retry 2 s. On a clean stop the leader
releases the Lease (empty holder, duration 1 s) so the next candidate takes over at once.

Use either
- ``async with elector.leading(): ...`` (the body runs only while leading; losing the lease
  cancels it and the ``async with`` raises ``LeadershipLost``), or
- ``await elector.start()`` with ``on_started_leading`` / ``on_stopped_leading`` callbacks
  (plain functions: they run inside the election loop, so they must return quickly). After a
  loss the elector campaigns again, so callbacks must tolerate several start/stop rounds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import enum
import logging
import random
import socket
import uuid
from collections.abc import Callable
from typing import Any

from services.client import clock as clock_
from services.client import errors, resources, types
from services.machinery import tasks
from services.machinery.lifecycle import State

log = logging.getLogger(__name__)

JITTER = 1.2  # client-go's JitterFactor: a retry waits retry_period * (1 + up to 1.2)


def default_identity() -> str:
    """``<hostname>_<uuid>``, as kube-scheduler and kube-controller-manager name themselves."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


def micro_time(moment: datetime.datetime) -> str:
    """A ``MicroTime``: RFC 3339 UTC with six fractional digits."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ElectionConfig:
    name: str  # the Lease's name, e.g. kube-scheduler
    identity: str  # this candidate, unique among candidates
    namespace: str = "kube-system"
    lease_duration: float = 15.0  # seconds a lease lasts unrenewed, as observed by the others
    renew_deadline: float = 10.0  # seconds the leader keeps trying to renew before it steps down
    retry_period: float = 2.0  # seconds between attempts (acquiring and renewing)
    release_on_stop: bool = True  # hand the lease back on a clean stop

    def __post_init__(self) -> None:
        if not self.lease_duration > self.renew_deadline:
            raise ValueError("lease_duration must be greater than renew_deadline")
        if not self.renew_deadline > JITTER * self.retry_period:
            raise ValueError(f"renew_deadline must be greater than retry_period * {JITTER}")
        if not self.name or not self.identity:
            raise ValueError("a leader election needs a lease name and an identity")


class LeadershipLost(Exception):
    """The lease could not be renewed (or was taken): whatever the leader was doing must stop."""


class _Attempt(enum.Enum):
    HELD = "held"  # we hold the lease now
    TAKEN = "taken"  # someone else holds a live lease
    FAILED = "failed"  # could not tell (error, conflict): try again


class LeaderElector:
    def __init__(
        self,
        api: types.Api,
        config: ElectionConfig,
        *,
        clock: types.Clock | None = None,
        on_started_leading: Callable[[], None] | None = None,
        on_stopped_leading: Callable[[], None] | None = None,
        on_new_leader: Callable[[str], None] | None = None,
    ) -> None:
        self.api = api
        self.config = config
        self.clock = clock or clock_.RealClock()
        self.state = State.NEW
        self.leader = ""  # the holder last observed ("" when free or unknown)
        self._callbacks = (on_started_leading, on_stopped_leading, on_new_leader)
        self._leading = asyncio.Event()
        self._ended = asyncio.Event()
        self._on_lost: list[Callable[[], None]] = []
        self._observed: dict[str, Any] = {}  # the lease spec last seen
        self._observed_at = 0.0  # when it last changed, on our clock
        self._task: asyncio.Task[Any] | None = None
        self._name = f"leader election {config.namespace}/{config.name}"

    @property
    def is_leader(self) -> bool:
        return self._leading.is_set()

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start campaigning (idempotent); returns at once, leadership comes later."""
        if self.state is State.NEW:
            self.state = State.RUNNING
            self._task = tasks.guarded(self._run(), name=self._name, on_failure=self._failed)

    async def stop(self) -> None:
        """Stop campaigning; a leader steps down and releases the lease (idempotent)."""
        if self.state in (State.STOPPING, State.STOPPED):
            return
        was = self.state
        self.state = State.STOPPING
        if self._task is not None:
            await tasks.cancel_all([self._task])
        if self.is_leader:
            self._step_down()
            if self.config.release_on_stop and was is State.RUNNING:
                await self._release()
        self.state = State.STOPPED
        self._ended.set()

    async def wait_for_leadership(self) -> None:
        """Return once leading; raise ``LeadershipLost`` if the elector ends first."""
        if self.is_leader:
            return
        leading = asyncio.ensure_future(self._leading.wait())
        ended = asyncio.ensure_future(self._ended.wait())
        try:
            await asyncio.wait({leading, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await tasks.cancel_all([leading, ended])
        if not self.is_leader:
            raise LeadershipLost(f"{self._name} {self.state.value} before it led")

    def leading(self) -> _Leading:
        """``async with elector.leading():`` runs its body only while this candidate leads."""
        return _Leading(self)

    def _failed(self, exc: BaseException | None) -> None:
        self.state = State.FAILED
        if self.is_leader:
            self._step_down()
        self._ended.set()

    # -- the election loop ----------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await self._acquire()
            log.info("%s: %s is the leader", self._name, self.config.identity)
            self._leading.set()
            self._call(self._callbacks[0])
            await self._renew()
            log.warning("%s: %s lost the lease", self._name, self.config.identity)
            self._step_down()

    def _step_down(self) -> None:
        self._leading.clear()
        for listener in list(self._on_lost):
            listener()
        self._call(self._callbacks[1])

    def _call(self, callback: Callable[..., None] | None, *args: str) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:  # a broken callback must not end the election (or keep a lost lease)
            log.exception("%s: callback %s failed", self._name, getattr(callback, "__qualname__", callback))

    async def _acquire(self) -> None:
        while await self._try() is not _Attempt.HELD:
            await self.clock.sleep(self.config.retry_period * (1 + random.uniform(0, JITTER)))

    async def _renew(self) -> None:
        """Return when leadership is lost: no renewal within the deadline, or the lease taken."""
        renewed = self.clock.monotonic()
        while True:
            await self.clock.sleep(self.config.retry_period)
            remaining = renewed + self.config.renew_deadline - self.clock.monotonic()
            try:
                outcome = await tasks.wait_for(self._try(), max(remaining, 0.001))
            except TimeoutError:
                outcome = _Attempt.FAILED
            if outcome is _Attempt.HELD:
                renewed = self.clock.monotonic()
            elif outcome is _Attempt.TAKEN or self.clock.monotonic() - renewed >= self.config.renew_deadline:
                return

    async def _try(self) -> _Attempt:
        """One read-check-write of the Lease (client-go's ``tryAcquireOrRenew``)."""
        try:
            lease = await self.api.get(resources.LEASES, self.config.name, namespace=self.config.namespace)
        except errors.ApiError as exc:
            if exc.code == 404:
                return await self._create()
            log.warning("%s: reading the lease failed: %s", self._name, exc)
            return _Attempt.FAILED
        except errors.TransportError as exc:
            log.warning("%s: reading the lease failed: %s", self._name, exc)
            return _Attempt.FAILED
        spec = lease.get("spec") or {}
        self._observe(spec)
        holder = spec.get("holderIdentity") or ""
        duration = spec.get("leaseDurationSeconds") or self.config.lease_duration
        if holder and holder != self.config.identity:
            if self._observed_at + duration > self.clock.monotonic():
                return _Attempt.TAKEN
            log.info("%s: the lease of %s expired; taking it", self._name, holder)
        new_spec = self._spec(previous=spec)
        updated = {**lease, "spec": new_spec}
        try:
            await self.api.update(resources.LEASES, updated, namespace=self.config.namespace)
        except (errors.ApiError, errors.TransportError) as exc:
            log.info("%s: writing the lease failed: %s", self._name, exc)
            return _Attempt.FAILED
        self._observe(new_spec)
        return _Attempt.HELD

    async def _create(self) -> _Attempt:
        spec = self._spec(previous=None)
        lease = {
            "apiVersion": resources.LEASES.api_version,
            "kind": resources.LEASES.kind,
            "metadata": {"name": self.config.name, "namespace": self.config.namespace},
            "spec": spec,
        }
        try:
            await self.api.create(resources.LEASES, lease, namespace=self.config.namespace)
        except (errors.ApiError, errors.TransportError) as exc:
            log.info("%s: creating the lease failed: %s", self._name, exc)
            return _Attempt.FAILED
        self._observe(spec)
        return _Attempt.HELD

    def _spec(self, *, previous: dict[str, Any] | None) -> dict[str, Any]:
        now = micro_time(self.clock.now())
        previous = previous or {}
        ours = previous.get("holderIdentity") == self.config.identity
        transitions = previous.get("leaseTransitions") or 0
        return {
            "holderIdentity": self.config.identity,
            "leaseDurationSeconds": int(self.config.lease_duration),
            "acquireTime": previous.get("acquireTime", now) if ours else now,
            "renewTime": now,
            "leaseTransitions": transitions if ours or not previous else transitions + 1,
        }

    def _observe(self, spec: dict[str, Any]) -> None:
        if spec != self._observed:
            self._observed = dict(spec)
            self._observed_at = self.clock.monotonic()
        holder = spec.get("holderIdentity") or ""
        if holder != self.leader:
            self.leader = holder
            if holder:
                self._call(self._callbacks[2], holder)

    async def _release(self) -> None:
        """Hand the lease back: empty holder, 1 s duration (client-go's ``release``)."""
        try:
            lease = await self.api.get(resources.LEASES, self.config.name, namespace=self.config.namespace)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.config.identity:
                return
            now = micro_time(self.clock.now())
            released = {
                **spec,
                "holderIdentity": "",
                "leaseDurationSeconds": 1,
                "acquireTime": now,
                "renewTime": now,
            }
            await self.api.update(
                resources.LEASES, {**lease, "spec": released}, namespace=self.config.namespace
            )
        except (errors.ApiError, errors.TransportError) as exc:
            log.warning("%s: releasing the lease failed (it will expire instead): %s", self._name, exc)
            return
        log.info("%s: %s released the lease", self._name, self.config.identity)


class _Leading:
    """The body of ``async with elector.leading()`` runs as the leader, and is cancelled on a loss
    (the CancelledError this causes is turned into ``LeadershipLost``, as ``asyncio.timeout``
    turns its own into ``TimeoutError``; anyone else's cancellation passes through)."""

    def __init__(self, elector: LeaderElector) -> None:
        self.elector = elector
        self._task: asyncio.Task[Any] | None = None
        self._lost = False

    async def __aenter__(self) -> LeaderElector:
        await self.elector.start()
        try:
            await self.elector.wait_for_leadership()
        except BaseException:
            await self.elector.stop()
            raise
        self._task = asyncio.current_task()
        # Registered with no await since wait_for_leadership returned: a loss cannot slip by.
        self.elector._on_lost.append(self._cancel_body)
        return self.elector

    def _cancel_body(self) -> None:
        self._lost = True
        assert self._task is not None
        self._task.cancel()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> bool:
        self.elector._on_lost.remove(self._cancel_body)
        if self._lost and exc_type is None:
            try:  # the body ended between the loss and the cancellation's delivery: take it now
                await asyncio.sleep(0)
            except asyncio.CancelledError:
                exc_type = asyncio.CancelledError
        await self.elector.stop()  # cancelled again meanwhile: the lease is not released, it expires
        assert self._task is not None
        if self._lost and exc_type is asyncio.CancelledError and self._task.uncancel() == 0:
            raise LeadershipLost(f"{self.elector._name}: {self.elector.config.identity} lost the lease")
        return False
