"""The scheduler component: informers -> cache and queue -> scheduling loop -> bindings.

Lifecycle as every component: ``start()`` returns once the health endpoint listens, every
informer has synced and the election (or, without it, the scheduling loop) is running;
``stop()`` stops taking pods, lets bindings in flight finish for up to ``drain_timeout``
seconds, releases the Lease, and closes everything in reverse order; ``wait()`` returns when the
component has stopped, including on its own after a root task died.

Informers run whether or not this instance leads, so a standby's cache and queue are warm and it
schedules at once when it takes over. Only the leader runs the scheduling loop; when the lease
is lost the loop is cancelled, bindings in flight are abandoned and their assumed pods forgotten,
and the instance campaigns again (kube-scheduler exits instead and lets its supervisor restart
it; here the supervisor need not).

Construct it with ``Scheduler(settings)`` (the kubeconfig in ``settings.kubeconfig``), or hand in
an in-process ``api`` (edge profile) and, optionally, a shared ``InformerFactory`` so the
scheduler and the controllers of one process share their pod and node caches.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from services.client import api as api_
from services.client import config as config_
from services.client import events, leader
from services.client import informer as informer_
from services.machinery import lifecycle, tasks
from services.machinery.lifecycle import State
from services.scheduler import algorithm, binder, cycle, handlers, health, metrics, types
from services.scheduler import cache as cache_
from services.scheduler import queue as queue_
from services.scheduler import settings as settings_

log = logging.getLogger(__name__)

USER_AGENT = "kube-scheduler"



class Scheduler(lifecycle.Component):
    def __init__(
        self,
        settings: settings_.SchedulerSettings,
        *,
        api: types.Api | None = None,
        informers: informer_.InformerFactory | None = None,
    ) -> None:
        if api is None and settings.kubeconfig is None:
            raise ValueError("the scheduler needs settings.kubeconfig or an api client")
        self.settings = settings
        self.state = State.NEW
        self.failure: BaseException | None = None
        self.api: types.Api | None = api
        self._own_api = api is None
        self._informers = informers
        self._own_informers = informers is None
        self.metrics = metrics.SchedulerMetrics()
        self.cache = cache_.Cache()
        self.queue = queue_.SchedulingQueue(
            initial_backoff=settings.pod_initial_backoff,
            max_backoff=settings.pod_max_backoff,
            max_unschedulable=settings.max_unschedulable,
        )
        self.algorithm = algorithm.Algorithm(
            percentage_of_nodes_to_score=settings.percentage_of_nodes_to_score
        )
        self.identity = settings.identity or leader.default_identity()
        self.elector: leader.LeaderElector | None = None
        self.loop: cycle.SchedulingLoop | None = None
        self._handlers = handlers.Handlers(
            cache=self.cache, queue=self.queue, scheduler_name=settings.scheduler_name
        )
        self._recorder: events.EventRecorder | None = None
        self._health: health.HealthServer | None = None
        self._roots: list[asyncio.Task[Any]] = []
        self._lost = asyncio.Event()
        self._done = asyncio.Event()
        self._stopper: asyncio.Task[Any] | None = None
        for queue_name in ("active", "backoff", "unschedulable", "gated"):
            self.metrics.pending.labels(queue_name).set_function(lambda q=queue_name: self.queue.counts()[q])

    @property
    def health_port(self) -> int:
        return self._health.port if self._health is not None else 0

    @property
    def is_leader(self) -> bool:
        return self.elector.is_leader if self.elector is not None else self.state is State.RUNNING

    # -- lifecycle -------------------------------------------------------------------------------

    def _started(self) -> None:
        log.info("scheduler %s started (leader election %s)", self.identity,
                 "on" if self.settings.leader_elect else "off")  # fmt: skip

    async def _start(self) -> None:
        settings = self.settings
        if self.api is None:
            assert settings.kubeconfig is not None
            self.api = api_.ApiClient(
                config_.load_kubeconfig(str(settings.kubeconfig)), user_agent=USER_AGENT
            )
        self._health = health.HealthServer(
            host=settings.health_host, port=settings.health_port, healthy=self._healthy, ready=self._ready,
            metrics=self.metrics.render, name="scheduler",
        )  # fmt: skip
        await self._health.start()
        self._recorder = events.EventRecorder(self.api, component=settings.scheduler_name)
        await self._recorder.start()
        if self._informers is None:
            self._informers = informer_.InformerFactory(self.api, on_failure=self._root_failed)
        listers = self._handlers.register(self._informers)
        await self._informers.start()
        self.loop = cycle.SchedulingLoop(
            settings=settings, cache=self.cache, queue=self.queue, algorithm_=self.algorithm,
            binder_=binder.Binder(self.api, self._recorder, scheduler_name=settings.scheduler_name,
                                  scheduled_events_per_second=settings.scheduled_events_per_second),
            listers=listers, metrics_=self.metrics,
        )  # fmt: skip
        if settings.leader_elect:
            self.elector = leader.LeaderElector(
                self.api,
                leader.ElectionConfig(
                    name=settings.leader_elect_resource_name,
                    namespace=settings.leader_elect_resource_namespace,
                    identity=self.identity,
                    lease_duration=settings.leader_elect_lease_duration,
                    renew_deadline=settings.leader_elect_renew_deadline,
                    retry_period=settings.leader_elect_retry_period,
                ),
                on_stopped_leading=self._lost.set,
            )  # fmt: skip
            await self.elector.start()
            self._roots.append(
                tasks.guarded(self._lead(), name="scheduler leadership", on_failure=self._root_failed)
            )
        else:
            self._roots.append(
                tasks.guarded(self.loop.run(), name="scheduling loop", on_failure=self._root_failed)
            )

    async def stop(self) -> None:
        """Stop taking pods, drain bindings, release the lease, close in reverse order (idempotent)."""
        if self.state in (State.STOPPING, State.STOPPED):
            return
        self.state = State.STOPPING
        await tasks.cancel_all(self._roots)
        self.queue.close()
        if self.loop is not None:
            await self.loop.drain(self.settings.drain_timeout)
        if self.elector is not None:
            await self.elector.stop()
        self.metrics.leader.labels(self.settings.leader_elect_resource_name).set(0)
        self._handlers.unregister()
        if self._own_informers and self._informers is not None:
            await self._informers.stop()
        if self._recorder is not None:
            await self._recorder.stop()
        if self._health is not None:
            await self._health.stop()
        if self._own_api and isinstance(self.api, api_.ApiClient):
            await self.api.aclose()
        self.state = State.STOPPED
        self._done.set()
        log.info("scheduler %s stopped", self.identity)

    async def wait(self) -> None:
        """Return once stopped (by ``stop()`` or because a root task died: see ``failure``)."""
        await self._done.wait()

    def _root_failed(self, exc: BaseException | None) -> None:
        if self.state in (State.STOPPING, State.STOPPED) or self._stopper is not None:
            return
        self.failure = exc or RuntimeError("a scheduler task exited unexpectedly")
        log.error("scheduler stopping: a root task died")
        # Owned: stop() runs to completion and wait() returns when it is done.
        self._stopper = asyncio.get_running_loop().create_task(self.stop(), name="scheduler stop")

    # -- leadership ------------------------------------------------------------------------------

    async def _lead(self) -> None:
        """Schedule while leading; on a loss drop what is in flight and campaign again."""
        assert self.elector is not None and self.loop is not None
        gauge = self.metrics.leader.labels(self.settings.leader_elect_resource_name)
        while True:
            await self.elector.wait_for_leadership()
            self._lost.clear()
            gauge.set(1)
            log.info("scheduler %s leads: scheduling", self.identity)
            work = tasks.guarded(self.loop.run(), name="scheduling loop", on_failure=self._root_failed)
            try:
                await self._lost.wait()
            finally:
                await tasks.cancel_all([work])
            gauge.set(0)
            log.warning("scheduler %s lost the lease: scheduling stops until it leads again", self.identity)
            await self.loop.drain(0)
            self.cache.forget_all_assumed()

    # -- probes ----------------------------------------------------------------------------------

    def _healthy(self) -> tuple[bool, str]:
        if self.state is State.RUNNING or self.state is State.STARTING:
            return True, ""
        return False, f"scheduler {self.state.value}"

    def _ready(self) -> tuple[bool, str]:
        if self.state is not State.RUNNING:
            return False, f"scheduler {self.state.value}"
        if self._informers is not None and not self._informers.has_synced:
            return False, "informers not synced"
        return True, ""
