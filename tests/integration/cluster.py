"""One API server in the test's event loop: the cluster most integration tests start from.

``Cluster`` runs the real ``ApiServer`` over HTTPS on 127.0.0.1 with kine's in-memory backend, on a
data dir holding what the supervisor would put there: the PKI (``pki.ensure``), or everything
``supervisor.profiles.prepare`` writes for a server (PKI, join token, ``cred/passwd``), and in both
cases the component kubeconfigs, rewritten once the port is known. Components under test connect
as they do in a real server: over HTTPS with ``kubeconfig(component)``, or in process through the
API server's ASGI app (``inprocess_client``), as the edge profile folds them; the admin client
takes either path.

What differs between the test modules is an option, not a copy of this class: how the data dir is
prepared, a port fixed before start (the ``kubernetes`` Endpoints and the kubeconfigs written
before start carry it), and the bus for the agent tunnel. ``fixtures`` makes a module's
``data_dir``, ``cluster`` and ``admin`` fixtures from those options; ``eventually`` polls for
states the API offers no event for.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

import pytest

from services.apiserver import app as app_
from services.apiserver import server, tls
from services.apiserver import settings as apiserver_settings
from services.client import api, config
from services.kine import endpoint
from services.kine import settings as kine_settings
from services.kine.logstructured import store
from supervisor import config as supervisor_config
from supervisor import kubeconfig, pki, profiles

ADMIN = ("system:admin", ("system:masters",))
SERVER_NODE = "server-host"  # the node name a "profile" data dir is prepared for
POLL_INTERVAL = 0.05  # seconds between two checks of ``eventually``

Preparation = Literal["pki", "profile"]


def free_port() -> int:
    """A loopback port nobody listens on right now (for a port that must be known before start)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def eventually(
    check: Callable[[], Awaitable[Any]],
    *,
    within: float = 20.0,
    what: str = "",
    ignore: tuple[type[Exception], ...] = (),
) -> Any:
    """Poll ``check`` until it returns something true, and return that.

    ``within`` only ends a hung test (it is no performance threshold); exceptions of the ``ignore``
    types count as "not yet" (an object that does not exist yet, say) and are shown if time runs out.
    """
    deadline = time.monotonic() + within
    last: Any = None
    while True:
        try:
            last = await check()
        except ignore as exc:
            last = exc
        else:
            if last:
                return last
        assert time.monotonic() < deadline, f"{what or check} not met within {within}s (last: {last!r})"
        await asyncio.sleep(POLL_INTERVAL)


class Cluster:
    """An API server on the in-memory store, its data dir prepared as the supervisor does.

    ``prepare``: "pki" (only ``pki.ensure``: the quickest, for tests of the components) or
    "profile" (``profiles.prepare``, for agents that join with the server's token). ``port``: 0
    for an ephemeral one, chosen at start. ``bus_url``: the bus of the agent tunnel, empty for none.
    Works as ``async with``; ``stop()`` is idempotent and safe after a failed ``start()``.
    """

    def __init__(
        self, data_dir: Path, *, prepare: Preparation = "pki", port: int = 0, bus_url: str = ""
    ) -> None:
        self.data_dir = data_dir
        self.prepare = prepare
        self.bus_url = bus_url
        self._port = port
        self.backend: store.LogStructured | None = None
        self.server: server.ApiServer | None = None

    async def __aenter__(self) -> Cluster:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Prepare the data dir, start the store and the API server; return once it serves."""
        await asyncio.to_thread(self._prepare)
        self.backend = await endpoint.open_backend(
            kine_settings.KineSettings(data_dir=self.data_dir, datastore_endpoint="memory://")
        )
        await self.backend.start()
        options = apiserver_settings.ApiServerSettings(
            data_dir=self.data_dir, bind_address="127.0.0.1", https_listen_port=self._port, nats_url=self.bus_url
        )  # fmt: skip
        self.server = server.ApiServer(options, backend=self.backend)
        await self.server.start()
        # The kubeconfigs name the server's port, which an ephemeral port only has from now on.
        kubeconfig.write_components(self.data_dir, port=self.port)

    def _prepare(self) -> None:
        if self.prepare == "pki":
            pki.ensure(self.data_dir)
            return
        values = {"data-dir": str(self.data_dir), "https-listen-port": self._port, "node-name": SERVER_NODE}
        profiles.prepare(supervisor_config.build(values, is_root=False))

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
        if self.backend is not None:
            await self.backend.stop()

    @property
    def port(self) -> int:
        return self.server.port if self.server is not None and self.server.port else self._port

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        """The server's join token (a "profile" data dir only)."""
        return (self.data_dir / "server" / "token").read_text().strip()

    def kubeconfig(self, component: str) -> Path:
        """The kubeconfig the supervisor gives ``component`` ("admin", "controller", "scheduler", ...)."""
        return kubeconfig.component_path(self.data_dir, component)

    def inprocess_client(self, user: str, groups: tuple[str, ...] = ()) -> api.ApiClient:
        """A client of the API server's ASGI app, acting as ``user`` (the edge profile's wiring)."""
        assert self.server is not None and self.server.api is not None, "start the cluster first"
        made = self.server.api
        app = app_.ApiApp(
            made, authenticator=made.authenticator, authorizer=made.authorizer,
            credentials=tls.credentials_from_scope, server_address=f"127.0.0.1:{self.port}",
        )  # fmt: skip
        return api.ApiClient(app=app, user=user, groups=groups)

    def admin(self, *, inprocess: bool = False) -> api.ApiClient:
        """The cluster admin (``system:masters``): over HTTPS with the admin kubeconfig, or in process."""
        if inprocess:
            return self.inprocess_client(*ADMIN)
        return api.ApiClient(config.load_kubeconfig(self.kubeconfig("admin")))

    def admin_tls(self) -> ssl.SSLContext:
        """TLS for raw HTTPS and WebSocket requests: the server CA, the admin client certificate."""
        files = pki.TlsFiles(pki.tls_dir(self.data_dir))
        context = ssl.create_default_context(cafile=files.crt(pki.SERVER_CA))
        context.load_cert_chain(files.crt(pki.CLIENT_ADMIN), files.key(pki.CLIENT_ADMIN))
        return context


def fixtures(
    module_dir: str = "",
    *,
    prepare: Preparation = "pki",
    fixed_port: bool = False,
    inprocess_admin: bool = False,
) -> tuple[Any, Any, Any]:
    """The ``data_dir``, ``cluster`` and ``admin`` fixtures of a test module, from the options it needs.

    Use as ``data_dir, cluster, admin = fixtures(...)`` at module level (pytest finds them by name).
    ``module_dir``: one data dir of that name for the whole module, so its PKI is made once; empty:
    a fresh ``<tmp_path>/server`` for every test. ``fixed_port``: a free port chosen before start.
    ``inprocess_admin``: the admin client goes through the ASGI app instead of HTTPS.
    """

    if module_dir:

        @pytest.fixture(scope="module")
        def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
            return tmp_path_factory.mktemp(module_dir)

    else:

        @pytest.fixture
        def data_dir(tmp_path: Path) -> Path:
            return tmp_path / "server"

    @pytest.fixture
    async def cluster(data_dir: Path) -> AsyncIterator[Cluster]:
        port = free_port() if fixed_port else 0
        async with Cluster(data_dir, prepare=prepare, port=port) as made:
            yield made

    @pytest.fixture
    async def admin(cluster: Cluster) -> AsyncIterator[api.ApiClient]:
        async with cluster.admin(inprocess=inprocess_admin) as client:
            yield client

    return data_dir, cluster, admin
