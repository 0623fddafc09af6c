"""The agent component: join, register the node, keep it Ready, run its pods, serve its tunnel.

Lifecycle as every component: ``start()`` returns once the node is registered with its status
and Lease posted and its pod worker and tunnel run; ``stop()`` stops them in reverse order
(containers keep running: an agent restart must not kill pods); ``wait()`` returns when the
agent has stopped, also on its own after a root task died (see ``failure``).

How it reaches the API, in order of preference:

- an ``api`` client handed in: the edge profile, where the agent runs in the server's process
  (``ApiClient(app=..., user="system:node:<name>", groups=["system:nodes"])``); no join;
- ``settings.kubeconfig``: a ready credential (virtual nodes outside the server's process);
- ``settings.server`` and a token: the load balancer (``loadbalancer``) starts on loopback, the
  agent joins through it (``join``: CA check, node password, client certificate) and then talks
  to the API only with its node certificate. An unreachable server is retried every few seconds
  (K3s waits the same way); a refusal raises ``join.JoinError`` (one printable line;
  ``join.CaHashMismatch`` for a token whose CA hash does not match).

In virtual mode (``runtime="virtual"`` or ``virtual_nodes`` > 0) ``virtual.VirtualNodes`` runs
instead of the single node, its pod worker and tunnel. Virtual nodes act for many nodes, which one
node certificate may not: they need the ``api`` or ``kubeconfig`` forms.

The pod worker (``pods.PodManager``) and the tunnel (``tunnel.Tunnel``, only with a bus: the one handed
in, else the API server's relay at ``/v1-k3s/bus`` dialled with the node certificate) are
optional modules, imported when present. The runtime is ``runtime`` when given, else
``runtimes.process.ProcessRuntime`` under ``<data-dir>/agent/pods``; the agent opens it before the
pod worker starts and closes it after the pod worker stopped.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import logging
import urllib.parse
from typing import Any

from services.agent import host, join, loadbalancer, node, virtual
from services.agent import settings as settings_
from services.bus import relay
from services.bus import types as bus_types
from services.client import api as api_
from services.client import config as config_
from services.client import errors, resources
from services.machinery import lifecycle, tasks
from services.machinery.lifecycle import State

log = logging.getLogger(__name__)

USER_AGENT = "k3s-agent"
JOIN_RETRY = (1.0, 10.0)  # seconds: first and longest wait between join attempts on an unreachable server



def _optional(module: str) -> Any:
    """``services.agent.<module>`` when it exists (pod worker and tunnel are built separately)."""
    qualified = f"{__package__}.{module}"
    if importlib.util.find_spec(qualified) is None:
        return None
    try:
        return importlib.import_module(qualified)
    except ImportError:  # a broken module must not keep the node from registering
        log.exception("agent module %s cannot be imported; running without it", qualified)
        return None


class Agent(lifecycle.Component):
    def __init__(
        self, settings: settings_.AgentSettings, *, api: Any = None, bus: Any = None, runtime: Any = None
    ) -> None:
        self.settings = settings
        self.state = State.NEW
        self.failure: BaseException | None = None
        self.api = api
        self._own_api = api is None
        self.bus = bus
        self._own_bus: Any = None  # the relay this agent dialled itself (a remote agent)
        self.runtime = runtime
        self.node_name = ""
        self.node_ip = settings.node_ip
        self.lb: loadbalancer.LoadBalancer | None = None
        self.node: node.NodeAgent | None = None
        self.virtual: virtual.VirtualNodes | None = None
        self.pods: Any = None
        self.tunnel: Any = None
        self._runtime_open = False
        self._tasks: list[asyncio.Task[Any]] = []
        self._done = asyncio.Event()
        self._stopper: asyncio.Task[Any] | None = None

    @property
    def is_virtual(self) -> bool:
        return self.settings.runtime == "virtual" or self.settings.virtual_nodes > 0

    def _started(self) -> None:
        log.info("agent of node %s started", self.node_name)

    async def _start(self) -> None:
        settings = self.settings
        if self.is_virtual and self.api is None and settings.kubeconfig is None:
            raise join.JoinError("virtual nodes need a kubeconfig (or the server's process): a node "
                                 "certificate may act for one node only")  # fmt: skip
        if self.api is not None or settings.kubeconfig is not None:
            self.node_name = join.node_name(settings)
        await self._connect()
        if not self.node_ip:
            self.node_ip = await asyncio.to_thread(host.address_towards, _host_of(settings.server))
        if self.is_virtual:
            await self._start_virtual()
            return
        await self._start_node()

    async def _connect(self) -> None:
        settings = self.settings
        if self.api is not None:
            return
        if settings.kubeconfig is not None:
            self.api = api_.ApiClient(config_.load_kubeconfig(settings.kubeconfig), user_agent=USER_AGENT)
            return
        if not settings.server:
            raise join.JoinError("the agent needs --server (K3S_URL) to join a cluster")
        self.lb = loadbalancer.LoadBalancer(
            settings.server, agent_dir=settings.agent_dir, port=settings.lb_server_port
        )
        await self.lb.start()
        identity = await asyncio.to_thread(join.identity, settings)
        self.node_name = identity.name
        credentials = await self._join(identity)
        join.write_kubeconfig(credentials, server=self.lb.url)
        client = config_.ClientConfig(server=self.lb.url, ssl_context=credentials.ssl_context())
        self.api = api_.ApiClient(client, user_agent=USER_AGENT)
        if self.bus is None:
            await self._relay_bus(credentials)
        await self._refresh_servers()
        self._tasks.append(tasks.guarded(self._refresh_loop(), name="agent load balancer refresh",
                                         on_failure=self._root_failed))  # fmt: skip

    async def _relay_bus(self, credentials: join.Credentials) -> None:
        """Without a bus of our own (a remote agent), reach it through the API server's relay."""
        assert self.lb is not None
        url = self.lb.url.replace("https://", "wss://", 1) + "/v1-k3s/bus"
        remote = relay.RemoteBus(url, ssl_context=credentials.ssl_context())
        try:
            await remote.start()
        except bus_types.BusError as exc:
            log.warning("no bus: %s; logs, exec and port-forward will not reach this node", exc)
            return
        self.bus = self._own_bus = remote

    async def _join(self, identity: join.Identity) -> join.Credentials:
        assert self.lb is not None
        delay = JOIN_RETRY[0]
        while True:
            try:
                return await join.join(self.settings, server=self.lb.url, node=identity)
            except join.ServerUnreachable as exc:
                log.warning("waiting for the server to join: %s", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, JOIN_RETRY[1])

    async def _start_node(self) -> None:
        settings = self.settings
        await self._open_runtime()
        runtime_version = (
            f"{getattr(self.runtime, 'name', 'process')}://{getattr(self.runtime, 'version', '0')}"
        )
        spec = node.NodeSpec(
            name=self.node_name,
            node_ip=self.node_ip,
            labels=node.labels_for(
                self.node_name, extra=settings.node_labels, server_node=settings.server_node
            ),
            taints=[node.parse_taint(t) for t in settings.node_taints],
            runtime_version=runtime_version,
            status=lambda conditions: self._host_status(conditions, runtime_version=runtime_version),
        )
        self.node = node.NodeAgent(
            self.api, spec, lease_duration=settings.lease_duration, lease_renew_interval=settings.lease_renew_interval,
            status_update_interval=settings.status_update_interval,
            status_report_interval=settings.status_report_interval, on_failure=self._root_failed,
        )  # fmt: skip
        await self.node.start()
        pods = _optional("pods")
        if pods is not None and self.runtime is not None:
            self.pods = pods.PodManager(
                self.api, node_name=self.node_name, runtime=self.runtime, node_ip=self.node_ip
            )
            await self.pods.start()
        tunnel = _optional("tunnel")
        if tunnel is not None and self.bus is not None and self.runtime is not None:
            self.tunnel = tunnel.Tunnel(self.bus, node_name=self.node_name, runtime=self.runtime)
            await self.tunnel.start()

    async def _open_runtime(self) -> None:
        if self.runtime is None:
            process = _optional("runtimes.process")
            if process is None:
                log.warning("no container runtime is installed: node %s runs no pods", self.node_name)
                return
            self.runtime = process.ProcessRuntime(root_dir=self.settings.agent_dir / "pods")
        await self.runtime.start()
        self._runtime_open = True

    async def _start_virtual(self) -> None:
        settings = self.settings
        count = settings.virtual_nodes
        names = virtual.node_names(self.node_name, count) if count else [self.node_name]
        self.virtual = virtual.VirtualNodes(
            self.api, names=names, node_ip=self.node_ip, labels=dict(settings.node_labels),
            taints=[node.parse_taint(t) for t in settings.node_taints], max_pods=settings.max_pods,
            lease_duration=settings.lease_duration, lease_renew_interval=settings.lease_renew_interval,
            status_report_interval=settings.status_report_interval, on_failure=self._root_failed,
        )  # fmt: skip
        await self.virtual.start()

    def _host_status(self, conditions: node.Conditions, *, runtime_version: str) -> dict[str, Any]:
        settings = self.settings
        capacity = host.capacity(data_dir=settings.data_dir, max_pods=settings.max_pods)
        pressure = host.pressure(data_dir=settings.data_dir, memory_threshold=settings.memory_available_threshold,
                                 disk_percent=settings.disk_available_percent)  # fmt: skip
        return {
            "capacity": capacity,
            "allocatable": host.allocatable(
                capacity,
                memory_threshold=settings.memory_available_threshold,
                disk_percent=settings.disk_available_percent,
            ),  # fmt: skip
            "conditions": conditions.compute(pressure, ready=self.runtime is not None),
            "addresses": [
                {"type": "InternalIP", "address": self.node_ip},
                {"type": "Hostname", "address": self.node_name},
            ],  # fmt: skip
            "daemonEndpoints": {"kubeletEndpoint": {"Port": node.KUBELET_PORT}},
            "nodeInfo": host.node_info(runtime_version=runtime_version, kubelet_version=node.KUBELET_VERSION),
        }

    # -- the server list ---------------------------------------------------------------------------

    async def _refresh_servers(self) -> None:
        """Learn the API servers from the ``kubernetes`` Endpoints (a node may get it, not watch it)."""
        assert self.lb is not None and self.api is not None
        try:
            endpoints = await self.api.get(resources.ENDPOINTS, "kubernetes", namespace="default")
        except errors.ClientError as exc:
            log.info("cannot read the API server endpoints: %s", exc)
            return
        self.lb.update(loadbalancer.endpoint_addresses(endpoints))

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lb_refresh_interval)
            await self._refresh_servers()

    # -- stopping ----------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop the tunnel, the pod worker, the node loops, then close the API and the balancer."""
        if self.state in (State.STOPPING, State.STOPPED):
            return
        self.state = State.STOPPING
        for part in (self.tunnel, self.pods, self.node, self.virtual):
            if part is not None:
                await part.stop()
        if self._own_bus is not None:
            await self._own_bus.close()
        if self._runtime_open:
            await self.runtime.close()
        await tasks.cancel_all(self._tasks)
        if self._own_api and isinstance(self.api, api_.ApiClient):
            await self.api.aclose()
        if self.lb is not None:
            await self.lb.stop()
        self.state = State.STOPPED
        self._done.set()
        log.info("agent of node %s stopped", self.node_name or "(none)")

    async def wait(self) -> None:
        await self._done.wait()

    def _root_failed(self, exc: BaseException | None) -> None:
        if self.state in (State.STOPPING, State.STOPPED) or self._stopper is not None:
            return
        self.failure = exc or RuntimeError("an agent task exited unexpectedly")
        log.error("agent of node %s: a root task died; stopping", self.node_name)
        self._stopper = asyncio.get_running_loop().create_task(self.stop(), name="agent stop after failure")


def _host_of(server: str) -> str:
    return urllib.parse.urlsplit(server).hostname or "" if server else ""
