"""The controller manager: every enabled controller in one process, behind one leader lease.

``ControllerManager(settings, api=None)`` follows the component lifecycle: ``start()`` returns
once ``/healthz`` and ``/metrics`` answer on loopback and the campaign for Lease
``kube-system/kube-controller-manager`` has begun; ``wait()`` returns if it fails; ``stop()``
stops the controllers, then releases the lease, then closes what it opened. Without an ``api``
it connects with ``settings.kubeconfig`` (the server profile); the edge profile hands in an
in-process client instead.

Each time this process becomes the leader it starts a *term*: one ``InformerFactory`` shared by
all controllers (one watch per resource), an event recorder per controller (so events name
their source as upstream's do: ``deployment-controller``, ...), ``setup`` of every enabled
controller, the informers' initial sync, then each controller's ``run`` as a guarded task. A
term ends when the lease is lost (everything is torn down and the manager campaigns again, with
fresh caches) or when the manager stops. A controller or informer that dies is a bug: the
manager fails and the supervisor restarts it, as kube-controller-manager exits.

The registry: ``CONTROLLERS`` maps a controller name (``--controllers`` speaks these names)
to a factory. Every controller module exposes ``def new() -> base.Controller``; the ones listed
in ``OPTIONAL`` are imported when present (``services.controllers.<name>``) and skipped with a
debug line when not, so a controller is added by writing its module, nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import prometheus_client
from prometheus_client.core import GaugeMetricFamily

from services.client import api as api_
from services.client import events as events_
from services.client import informer as informer_
from services.client import leader
from services.controllers import (
    base,
    deployment,
    endpoints,
    garbagecollector,
    namespace,
    nodeipam,
    replicaset,
    serviceaccount,
)
from services.controllers import settings as settings_
from services.machinery import tasks
from services.machinery.lifecycle import State

log = logging.getLogger(__name__)

LEASE_NAME = "kube-controller-manager"
USER_AGENT = "kube-controller-manager"
STOP_DEADLINE = 5.0  # seconds the health server gets to close its connections
SYNC_WARNING = 30.0  # seconds between complaints about informers that have not synced yet

Factory = Callable[[], base.Controller]

BUILTIN: dict[str, Factory] = {
    "deployment": deployment.new,
    "replicaset": replicaset.new,
    "replicationcontroller": replicaset.new_replication_controller,
    "garbagecollector": garbagecollector.new,
    "namespace": namespace.new,
    "serviceaccount": serviceaccount.new,
    "endpoints": endpoints.new,
    "endpointslice": endpoints.new_endpointslice,
    "nodeipam": nodeipam.new,
}
# Controller modules written separately; each is services.controllers.<name> with a new().
OPTIONAL: tuple[str, ...] = (
    "daemonset",
    "statefulset",
    "job",
    "cronjob",
    "nodelifecycle",
    "disruption",
    "resourcequota",
    "eventttl",
    "addons",
    "nodepassword",
    "clusterroleaggregation",
)
DISABLED_BY_DEFAULT: frozenset[str] = frozenset()  # '*' enables every registered controller
# The event source of each controller, as upstream names them; others get "<name>-controller".
EVENT_SOURCES: dict[str, str] = {
    "replicationcontroller": "replication-controller",
    "endpoints": "endpoint-controller",
    "endpointslice": "endpoint-slice-controller",
    "garbagecollector": "garbage-collector-controller",
    "serviceaccount": "service-account-controller",
    "nodeipam": "node-controller",
    "nodelifecycle": "node-controller",
    "disruption": "controllermanager",
    "resourcequota": "resource-quota-controller",
    "addons": "deploy",
}


def _optional(module_name: str) -> Factory | None:
    qualified = f"{__package__}.{module_name}"
    try:
        module = importlib.import_module(qualified)
    except ModuleNotFoundError as exc:
        if exc.name != qualified:
            log.exception("controller module %s cannot be imported; skipping it", qualified)
        else:
            log.debug("controller module %s is not there; skipping it", qualified)
        return None
    except Exception:  # a broken module must not take the other controllers down with it
        log.exception("controller module %s cannot be imported; skipping it", qualified)
        return None
    factory = getattr(module, "new", None)
    if not callable(factory):
        log.warning("controller module %s has no new(); skipping it", qualified)
        return None
    return factory


def registry() -> dict[str, Factory]:
    """The built-in controllers and those optional modules that are present."""
    found = dict(BUILTIN)
    for name in OPTIONAL:
        factory = _optional(name)
        if factory is not None:
            found[name] = factory
    return found


CONTROLLERS: dict[str, Factory] = registry()


def canonical(name: str) -> str:
    """Accept upstream's spellings: ``deployment-controller``, ``endpoint``, ``garbage-collector``."""
    name = name.strip().removesuffix("-controller")
    return {"endpoint": "endpoints", "garbage-collector": "garbagecollector", "node-ipam": "nodeipam",
            "node-lifecycle": "nodelifecycle", "service-account": "serviceaccount",
            "replication": "replicationcontroller",
            "clusterrole-aggregation": "clusterroleaggregation"}.get(name, name)  # fmt: skip


def is_enabled(name: str, selection: Iterable[str]) -> bool:
    """kube-controller-manager's rule: the first explicit ``name``/``-name`` wins, else ``*``."""
    star = False
    for item in selection:
        for part in item.split(","):
            part = part.strip()
            if part == "*":
                star = True
            elif part.startswith("-") and canonical(part[1:]) == name:
                return False
            elif part and canonical(part) == name:
                return True
    return star and name not in DISABLED_BY_DEFAULT


def enabled(selection: Iterable[str], available: Mapping[str, Factory]) -> list[str]:
    selection = list(selection)
    for item in selection:
        for part in item.split(","):
            part = part.strip().lstrip("-")
            if part and part != "*" and canonical(part) not in available:
                log.warning("--controllers names %r, which is not available here", part)
    return [name for name in available if is_enabled(name, selection)]


class ControllerManager:
    def __init__(
        self,
        settings: settings_.ControllersSettings,
        *,
        api: api_.ApiClient | None = None,
        controllers: Mapping[str, Factory] | None = None,
        identity: str | None = None,
    ) -> None:
        self.settings = settings
        self.state = State.NEW
        self.api = api
        self._own_api = api is None
        self.registry = dict(CONTROLLERS if controllers is None else controllers)
        self.enabled = enabled(settings.controllers, self.registry)
        self.identity = identity or leader.default_identity()
        self.term: _Term | None = None  # the controllers of the current leadership term
        self.elector: leader.LeaderElector | None = None
        self._health = _HealthServer(self)
        self._task: asyncio.Task[Any] | None = None
        self._active = asyncio.Event()
        self._done = asyncio.Event()

    @property
    def health_port(self) -> int:
        return self._health.port

    @property
    def controllers(self) -> dict[str, base.Controller]:
        return dict(self.term.controllers) if self.term is not None else {}

    @property
    def is_leader(self) -> bool:
        return self.elector.is_leader if self.elector is not None else self._active.is_set()

    async def __aenter__(self) -> ControllerManager:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Serve health and metrics and start campaigning; controllers start once leading."""
        if self.state is not State.NEW:
            return
        self.state = State.STARTING
        try:
            if self.api is None:
                if self.settings.kubeconfig is None:
                    raise ValueError("the controller manager needs a kubeconfig or an API client")
                self.api = api_.ApiClient.from_kubeconfig(
                    str(self.settings.kubeconfig), user_agent=USER_AGENT
                )
            await self._health.start(self.settings.health_host, self.settings.health_port)
        except BaseException:
            await self.stop()
            raise
        self._task = tasks.guarded(self._run(), name="controller manager", on_failure=self._failed)
        self.state = State.RUNNING
        log.info("controller manager started: %d controllers enabled (%s); health on %s:%d",
                 len(self.enabled), ", ".join(self.enabled), self.settings.health_host, self.health_port)  # fmt: skip

    async def wait_active(self) -> None:
        """Return once the controllers run (this process leads and every informer synced)."""
        active = asyncio.ensure_future(self._active.wait())
        done = asyncio.ensure_future(self._done.wait())
        try:
            await asyncio.wait({active, done}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await tasks.cancel_all([active, done])
        if not self._active.is_set():
            raise RuntimeError(f"the controller manager {self.state.value} before its controllers ran")

    async def wait(self) -> None:
        await self._done.wait()

    async def stop(self) -> None:
        if self.state in (State.STOPPING, State.STOPPED):
            return
        self.state = State.STOPPING
        if self._task is not None:
            await tasks.cancel_all([self._task])  # ends the term, then the campaign (lease released)
        await self._health.stop()
        if self._own_api and self.api is not None:
            await self.api.aclose()
        self.state = State.STOPPED
        self._done.set()
        log.info("controller manager stopped")

    def _failed(self, exc: BaseException | None) -> None:
        if self.state in (State.STOPPING, State.STOPPED):
            return
        self.state = State.FAILED
        self._done.set()

    # -- leadership -----------------------------------------------------------------------------

    async def _run(self) -> None:
        assert self.api is not None
        if not self.settings.leader_elect:
            await self._serve_term(asyncio.Event())
            return
        lost = asyncio.Event()
        config = leader.ElectionConfig(
            name=LEASE_NAME,
            identity=self.identity,
            lease_duration=self.settings.leader_elect_lease_duration,
            renew_deadline=self.settings.leader_elect_renew_deadline,
            retry_period=self.settings.leader_elect_retry_period,
        )
        self.elector = leader.LeaderElector(self.api, config, on_stopped_leading=lambda: lost.set())
        await self.elector.start()
        try:
            while True:
                await self.elector.wait_for_leadership()
                lost.clear()
                if not self.elector.is_leader:  # lost again while waking up: the clear hid it
                    continue
                await self._serve_term(lost)
                log.warning("controller manager: lost the lease; controllers stopped, campaigning again")
        finally:
            await self.elector.stop()

    async def _serve_term(self, lost: asyncio.Event) -> None:
        """Run every enabled controller until ``lost`` is set (or this task is cancelled)."""
        assert self.api is not None
        term = self.term = _Term(self, self.api)
        try:
            await term.start()
            self._active.set()
            await lost.wait()
        finally:
            self._active.clear()
            await term.stop()
            self.term = None


class _Term:
    """The controllers of one leadership term, their informers and their event recorders."""

    def __init__(self, manager: ControllerManager, api: api_.ApiClient) -> None:
        self.manager = manager
        self.api = api
        self.informers = informer_.InformerFactory(api, on_failure=manager._failed)
        self.controllers: dict[str, base.Controller] = {}
        self.recorders: list[events_.EventRecorder] = []
        self._tasks: list[asyncio.Task[Any]] = []

    async def start(self) -> None:
        settings = self.manager.settings
        for name in self.manager.enabled:
            controller = self.manager.registry[name]()
            if isinstance(getattr(controller, "workers", None), int):
                controller.workers = settings.workers_for(name, controller.workers)  # type: ignore[attr-defined]
            recorder = events_.EventRecorder(
                self.api, component=EVENT_SOURCES.get(name, f"{name}-controller")
            )
            self.recorders.append(recorder)
            controller.setup(base.ControllerContext(api=self.api, informers=self.informers, recorder=recorder,
                                                    settings=settings))  # fmt: skip
            self.controllers[name] = controller
        for recorder in self.recorders:
            await recorder.start()
        await self._sync()
        for name, controller in self.controllers.items():
            self._tasks.append(
                tasks.guarded(controller.run(), name=f"controller {name}", on_failure=self.manager._failed)
            )
        log.info("controller manager: leading; %d controllers running", len(self.controllers))

    async def _sync(self) -> None:
        """Start the informers and wait for their first lists, naming the laggards now and then
        (an informer that cannot list, say for lack of permission, retries forever)."""
        sync = asyncio.ensure_future(self.informers.start())
        try:
            while not (await asyncio.wait({sync}, timeout=SYNC_WARNING))[0]:
                waiting = [i.name for i in self.informers.informers if not i.has_synced]
                log.warning("controller manager: still waiting for %s to sync", ", ".join(waiting))
        finally:
            await tasks.cancel_all([sync])  # done already, unless we are being cancelled
        sync.result()

    async def stop(self) -> None:
        await tasks.cancel_all(self._tasks)
        await self.informers.stop()
        await asyncio.gather(*(recorder.stop() for recorder in self.recorders))

    def queues(self) -> dict[str, Any]:
        return {name: c.queue for name, c in self.controllers.items() if hasattr(c, "queue")}


# -- /healthz and /metrics ------------------------------------------------------------------------


class _Collector:
    """Gauges read at scrape time: leadership, work queues, informer caches."""

    def __init__(self, manager: ControllerManager) -> None:
        self.manager = manager

    def collect(self) -> Iterable[Any]:
        leading = GaugeMetricFamily(
            "leader_election_master_status", "1 while this process holds the lease.", labels=["name"]
        )
        leading.add_metric([LEASE_NAME], 1.0 if self.manager.is_leader else 0.0)
        yield leading
        depth = GaugeMetricFamily(
            "workqueue_depth", "Keys waiting in each controller's queue.", labels=["name"]
        )
        busy = GaugeMetricFamily("workqueue_unfinished_work", "Keys being processed now.", labels=["name"])
        cached = GaugeMetricFamily(
            "controller_manager_informer_objects",
            "Objects in each shared informer's cache.",
            labels=["resource"],
        )
        term = self.manager.term
        if term is not None:
            for name, queue in term.queues().items():
                depth.add_metric([name], float(len(queue)))
                busy.add_metric([name], float(queue.processing))
            for informer in term.informers.informers:
                cached.add_metric([informer.name.removeprefix("informer ")], float(len(informer.store)))
        yield depth
        yield busy
        yield cached


@dataclasses.dataclass(frozen=True)
class _Response:
    code: int
    reason: str
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


class _HealthServer:
    """A tiny HTTP/1.1 server on loopback: GET /healthz, /livez, /readyz and /metrics, one
    request per connection. Loopback only, hence no TLS (the settings refuse other hosts)."""

    def __init__(self, manager: ControllerManager) -> None:
        self.manager = manager
        self.port = 0
        self.registry = prometheus_client.CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(manager))  # type: ignore[arg-type]
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._handle, host, port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        with contextlib.suppress(TimeoutError):
            await tasks.wait_for(self._server.wait_closed(), STOP_DEADLINE)
        self._server = None

    def respond(self, method: str, path: str) -> _Response:
        if method not in ("GET", "HEAD"):
            return _Response(405, "Method Not Allowed", b"method not allowed\n")
        path = path.split("?", 1)[0]
        if path in ("/healthz", "/livez", "/readyz"):
            if self.manager.state in (State.FAILED, State.STOPPING, State.STOPPED):
                return _Response(500, "Internal Server Error", f"{self.manager.state.value}\n".encode())
            return _Response(200, "OK", b"ok")
        if path == "/metrics":
            return _Response(
                200,
                "OK",
                prometheus_client.generate_latest(self.registry),
                prometheus_client.CONTENT_TYPE_LATEST,
            )
        return _Response(404, "Not Found", b"404 page not found\n")

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await tasks.wait_for(reader.readline(), 5.0)
            for _ in range(100):  # headers: read and ignore
                line = await tasks.wait_for(reader.readline(), 5.0)
                if line in (b"\r\n", b"\n", b""):
                    break
            parts = request.decode("latin-1").split()
            if len(parts) != 3:
                response = _Response(400, "Bad Request", b"bad request\n")
            else:
                response = self.respond(parts[0], parts[1])
            head = (
                f"HTTP/1.1 {response.code} {response.reason}\r\nContent-Type: {response.content_type}\r\n"
                f"Content-Length: {len(response.body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + (b"" if parts[:1] == ["HEAD"] else response.body))
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError, ValueError):
            pass  # a client that hangs up or speaks nonsense gets nothing
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                await tasks.wait_for(writer.wait_closed(), 1.0)
