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
from supervisor import config, kubeconfig, pki, process, tokens

log = logging.getLogger(__name__)

EDGE_BUS_URL = "memory://k3s-edge"


def prepare(settings: config.Settings) -> None:
    """PKI, tokens and component kubeconfigs (blocking file I/O, milliseconds; idempotent)."""
    data_dir = settings.supervisor.data_dir
    api = settings.apiserver
    node_ips = [ip for ip in {api.advertise_address, "127.0.0.1"} if ip]
    files = pki.ensure(data_dir, node_ips=node_ips, tls_sans=settings.supervisor.tls_san, node_name=settings.cluster.node_name)
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
        sock.bind((settings.apiserver.bind_address if settings.apiserver.bind_address != "0.0.0.0" else "127.0.0.1", 0))
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
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost"), 2
            )
        except (OSError, TimeoutError, ssl.SSLError):
            return False
        try:
            writer.write(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            await writer.drain()
            status = await asyncio.wait_for(reader.readline(), 2)
            return b" 200 " in status
        except (OSError, TimeoutError, ssl.SSLError):
            return False
        finally:
            writer.close()

    return probe


def apiserver_flags(api: apiserver_settings.ApiServerSettings) -> list[str]:
    return [
        "--https-listen-port", str(api.https_listen_port), "--bind-address", api.bind_address,
        "--advertise-address", api.advertise_address, "--service-cidr", api.service_cidr,
        "--cluster-cidr", api.cluster_cidr, "--service-node-port-range", api.service_node_port_range,
        "--cluster-domain", api.cluster_domain,
    ]  # fmt: skip


class Edge:
    """kine and the API server in this process and event loop; the in-memory bus replaces NATS."""

    def __init__(self, settings: config.Settings) -> None:
        self.settings = settings
        self._kine: Any = None
        self._apiserver: Any = None
        self._tasks: list[asyncio.Task[Any]] = []

    async def start(self) -> None:
        from services.apiserver import server as apiserver
        from services.kine import component

        kine_settings = self.settings.kine.model_copy(update={"nats_url": EDGE_BUS_URL})
        self._kine = component.Kine(kine_settings)
        await self._kine.start()
        api_settings = self.settings.apiserver.model_copy(update={"nats_url": EDGE_BUS_URL})
        self._apiserver = apiserver.ApiServer(api_settings, backend=self._kine.backend)
        await self._apiserver.start()
        write_admin_kubeconfig(self.settings, port=self._apiserver.port)
        log.info("edge profile: kine and the API server in this process, bus %s", EDGE_BUS_URL)

    async def wait(self) -> None:
        waits = [asyncio.ensure_future(c.wait()) for c in (self._kine, self._apiserver) if c is not None]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()

    async def stop(self) -> None:
        if self._apiserver is not None:
            await self._apiserver.stop()
        if self._kine is not None:
            await self._kine.stop()
