"""How the server is put together: files first, then components, in the server and edge shapes.

``prepare`` makes what every server needs on disk before anything listens (the
PKI under ``server/tls``, the join token, the component kubeconfigs).
``server_children`` lists the child processes of the server profile in start
order (nats, kine, apiserver), each gated on its readiness probe; ``Edge`` runs
the same components in this process, wired through the in-process store and
bus. Both write the admin kubeconfig once the API answers.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from pathlib import Path
from typing import Any

from services.apiserver import settings as apiserver_settings
from services.machinery import tasks
from supervisor import config, kubeconfig, pki, process, tokens

log = logging.getLogger(__name__)

EDGE_BUS_URL = "memory://k3s-edge"


def prepare(settings: config.Settings) -> None:
    """PKI, tokens and component kubeconfigs (blocking file I/O, milliseconds; idempotent)."""
    data_dir = settings.supervisor.data_dir
    api = settings.apiserver
    node_ips = [ip for ip in {api.advertise_address, "127.0.0.1"} if ip]
    files = pki.ensure(
        data_dir,
        node_ips=node_ips,
        tls_sans=settings.supervisor.tls_san,
        node_name=settings.cluster.node_name,
    )
    token = settings.cluster.token.get_secret_value() if settings.cluster.token else None
    if token is None and settings.cluster.token_file is not None:
        token = tokens.read_token(settings.cluster.token_file)
    tokens.ensure(data_dir, ca_pem=files.crt(pki.SERVER_CA).read_bytes(), token=token)
    kubeconfig.write_components(data_dir, port=api.https_listen_port or 6443)


def write_admin_kubeconfig(settings: config.Settings, *, port: int) -> Path:
    path = kubeconfig.write_admin(
        settings.supervisor.data_dir,
        path=settings.supervisor.write_kubeconfig,
        mode=kubeconfig.parse_mode(settings.supervisor.write_kubeconfig_mode),
        host="127.0.0.1",
        port=port,
    )
    kubeconfig.write_components(settings.supervisor.data_dir, port=port)
    log.info("wrote kubeconfig %s", path)
    print(f"kubeconfig: {path}", flush=True)
    return path


def fixed_port(settings: config.Settings) -> config.Settings:
    """Settings whose API port is a real one: 0 becomes a free port, chosen once for restarts."""
    if settings.apiserver.https_listen_port:
        return settings
    with socket.socket() as sock:
        sock.bind(
            (
                settings.apiserver.bind_address
                if settings.apiserver.bind_address != "0.0.0.0"
                else "127.0.0.1",
                0,
            )
        )
        port = sock.getsockname()[1]
    api = settings.apiserver.model_copy(update={"https_listen_port": port})
    return settings.model_copy(update={"apiserver": api})


def readyz_probe(settings: config.Settings) -> process.Probe:
    """A probe asking the API server's /readyz over HTTPS, trusting only the cluster's CA."""
    ca = pki.TlsFiles(pki.tls_dir(settings.supervisor.data_dir)).crt(pki.SERVER_CA)
    port = settings.apiserver.https_listen_port

    async def probe() -> bool:
        context = ssl.create_default_context(cafile=str(ca))
        try:
            reader, writer = await tasks.wait_for(
                asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost"), 2
            )
        except (OSError, TimeoutError, ssl.SSLError):
            return False
        try:
            writer.write(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            await writer.drain()
            status = await tasks.wait_for(reader.readline(), 2)
            return b" 200 " in status
        except (OSError, TimeoutError, ssl.SSLError):
            return False
        finally:
            writer.close()

    return probe


def healthz_probe(port: int) -> process.Probe:
    """A probe asking a loopback component's plain-HTTP /healthz (scheduler, controllers)."""

    async def probe() -> bool:
        try:
            reader, writer = await tasks.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
        except (OSError, TimeoutError):
            return False
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            await writer.drain()
            status = await tasks.wait_for(reader.readline(), 2)
            return b" 200 " in status
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()

    return probe


async def always_ready() -> bool:
    """The agent's probe: it is up once it runs; it joins, retries and reports on its own."""
    return True


def server_agent_flags(settings: config.Settings) -> list[str]:
    """The server's own node: joined to the local API server with the server token."""
    agent = settings.agent
    flags = [
        "--server", f"https://127.0.0.1:{settings.apiserver.https_listen_port}",
        "--token-file", str(tokens.server_dir(settings.supervisor.data_dir) / "token"),
        "--server-node",
    ]  # fmt: skip
    if settings.cluster.node_name:
        flags += ["--node-name", settings.cluster.node_name]
    if agent.with_node_id:
        flags.append("--with-node-id")
    if agent.node_ip:
        flags += ["--node-ip", agent.node_ip]
    flags += [flag for key, value in agent.node_labels.items() for flag in ("--node-label", f"{key}={value}")]
    flags += [flag for taint in agent.node_taints for flag in ("--node-taint", taint)]
    if agent.virtual_nodes:
        flags += ["--virtual-nodes", str(agent.virtual_nodes)]
    if agent.lb_server_port:
        flags += ["--lb-server-port", str(agent.lb_server_port)]
    flags += [flag for arg in settings.supervisor.kubelet_arg for flag in ("--kubelet-arg", arg)]
    return flags


def scheduler_flags(settings: config.Settings) -> list[str]:
    return [flag for arg in settings.supervisor.kube_scheduler_arg for flag in ("--kube-scheduler-arg", arg)]


def controllers_flags(settings: config.Settings) -> list[str]:
    flags = ["--cluster-cidr", settings.controllers.cluster_cidr]
    if settings.controllers.disabled_addons:
        flags += ["--disable", ",".join(settings.controllers.disabled_addons)]
    for arg in settings.supervisor.kube_controller_manager_arg:
        flags += ["--kube-controller-manager-arg", arg]
    return flags


def apiserver_flags(api: apiserver_settings.ApiServerSettings) -> list[str]:
    return [
        "--https-listen-port", str(api.https_listen_port), "--bind-address", api.bind_address,
        "--advertise-address", api.advertise_address, "--service-cidr", api.service_cidr,
        "--cluster-cidr", api.cluster_cidr, "--service-node-port-range", api.service_node_port_range,
        "--cluster-domain", api.cluster_domain,
    ] + [
        flag
        for name, path in (("cafile", api.store_cafile), ("certfile", api.store_certfile), ("keyfile", api.store_keyfile))
        if path is not None
        for flag in (f"--datastore-{name}", str(path))
    ]  # fmt: skip


class Edge:
    """Every component in this process and event loop: kine, the API server, the scheduler and the
    controllers. The in-memory bus replaces NATS; the scheduler and controllers reach the API through
    the in-process client (``ApiClient(app=...)``), authenticated as the users their kubeconfigs name."""

    def __init__(self, settings: config.Settings) -> None:
        self.settings = settings
        self._kine: Any = None
        self._apiserver: Any = None
        self._components: list[Any] = []  # started after the API server, stopped before it
        self._clients: list[Any] = []
        self._bus: Any = None

    async def start(self) -> None:
        from services.apiserver import server as apiserver
        from services.kine import component

        api_settings = self.settings.apiserver.model_copy(update={"nats_url": EDGE_BUS_URL})
        if api_settings.store_address:  # a real etcd: the API server dials it, no kine here
            self._apiserver = apiserver.ApiServer(api_settings)
        else:
            kine_settings = self.settings.kine.model_copy(update={"nats_url": EDGE_BUS_URL})
            self._kine = component.Kine(kine_settings)
            await self._kine.start()
            self._apiserver = apiserver.ApiServer(api_settings, backend=self._kine.backend)
        await self._apiserver.start()
        write_admin_kubeconfig(self.settings, port=self._apiserver.port)
        await self._start_control_plane()
        log.info("edge profile: every component in this process, bus %s", EDGE_BUS_URL)

    async def _start_control_plane(self) -> None:
        from services.client import api as api_client

        supervisor = self.settings.supervisor
        if not supervisor.disable_scheduler:
            from services.scheduler import component as scheduler

            client = api_client.ApiClient(app=self._apiserver.app, user="system:kube-scheduler")
            self._clients.append(client)
            self._components.append(scheduler.Scheduler(self.settings.scheduler, api=client))
            await self._components[-1].start()
        if not supervisor.disable_controller_manager:
            from services.controllers import component as controllers

            client = api_client.ApiClient(app=self._apiserver.app, user="system:kube-controller-manager")
            self._clients.append(client)
            self._components.append(controllers.ControllerManager(self.settings.controllers, api=client))
            await self._components[-1].start()
        if not supervisor.disable_agent:
            await self._start_agent()

    async def _start_agent(self) -> None:
        """This machine's node, in process: it acts as ``system:node:<name>``, as a joined agent would."""
        import services.bus
        from services.agent import component as agent_component
        from services.agent import join
        from services.client import api as api_client

        settings = self.settings.agent.model_copy(update={"server_node": True})
        if settings.virtual_nodes:  # they act for many nodes, which no node identity may
            identity = {"user": "system:k3s-virtual-nodes", "groups": ["system:masters"]}
        else:
            identity = {"user": f"system:node:{join.node_name(settings)}", "groups": ["system:nodes"]}
        client = api_client.ApiClient(app=self._apiserver.app, **identity)
        self._clients.append(client)
        self._bus = await services.bus.connect(EDGE_BUS_URL)
        self._components.append(agent_component.Agent(settings, api=client, bus=self._bus))
        await self._components[-1].start()

    async def wait(self) -> None:
        parts = [self._kine, self._apiserver, *self._components]
        waits = [asyncio.ensure_future(c.wait()) for c in parts if c is not None]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()

    async def stop(self) -> None:
        for component in reversed(self._components):
            await component.stop()
        for client in self._clients:
            await client.aclose()
        if self._bus is not None:
            await self._bus.close()
        if self._apiserver is not None:
            await self._apiserver.stop()
        if self._kine is not None:
            await self._kine.stop()
