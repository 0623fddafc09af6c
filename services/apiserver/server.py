"""The API server component: store -> registry, caches, auth -> HTTPS.

Lifecycle as every component: ``start()`` returns when HTTPS accepts requests
and the bootstrap objects exist; ``stop()`` stops accepting, ends watches,
closes the store connection; ``wait()`` returns when it ends on its own.
In the edge profile the caller hands in the in-process kine backend; otherwise
the API server dials kine (or a real etcd) over gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import uvicorn

from services.apiserver import (
    allocators,
    bootstrap,
    builtin,
    compactor,
    context,
    crds,
    endpoints_reconciler,
    metrics,
    registry,
    storage,
    tls,
    tunnel,
)
from services.apiserver import app as app_
from services.apiserver import settings as settings_
from services.apiserver.auth import authn, node, rbac
from services.kine import types
from services.machinery import tasks
from services.machinery.lifecycle import State

log = logging.getLogger(__name__)


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the process's entry point owns signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ApiServer:
    def __init__(
        self,
        settings: settings_.ApiServerSettings,
        *,
        backend: types.Backend | None = None,
        extra: app_.ASGIApp | None = None,
    ) -> None:
        self.settings = settings
        self.state = State.NEW
        self._backend = backend
        self._own_backend = backend is None
        self._extra = extra
        self.api: context.Api | None = None
        self.app: app_.ApiApp | None = None  # the ASGI app, for in-process clients (edge profile)
        self._crds: crds.CrdController | None = None
        self._endpoints: endpoints_reconciler.Reconciler | None = None
        self._compactor: asyncio.Task[Any] | None = None
        self._repair: asyncio.Task[Any] | None = None
        self._server: _Uvicorn | None = None
        self._serve: asyncio.Task[Any] | None = None
        self._done = asyncio.Event()
        self.port = 0

    @property
    def url(self) -> str:
        host = self.settings.advertise_address or "127.0.0.1"
        return f"https://{host}:{self.port}"

    async def __aenter__(self) -> ApiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self.state = State.STARTING
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise
        self.state = State.RUNNING
        log.info("API server listening on https://%s:%d", self.settings.bind_address, self.port)

    def _store_backend(self) -> types.Backend:
        if self._backend is not None:
            return self._backend
        from services.kine import client

        settings = self.settings
        address = settings.store_address or f"unix:{settings.data_dir / 'server' / 'kine.sock'}"
        files = (settings.store_cafile, settings.store_certfile, settings.store_keyfile)
        tls = client.TlsFiles(*files) if any(files) else None
        try:
            self._backend = client.GrpcBackend(address, tls=tls)
        except ValueError as exc:  # a malformed endpoint: the user's to fix, not a crash
            raise types.DatastoreError(str(exc)) from None
        return self._backend

    async def _start(self) -> None:
        backend = self._store_backend()
        if self._own_backend:
            await backend.start()
        reg = registry.Registry(builtin.builtin_resources())
        tls_dir = self.settings.data_dir / "server" / "tls"
        api = context.Api(
            registry_=reg,
            store=storage.ObjectStore(backend),
            settings=self.settings,
            authenticator=None,  # set below: both read the API's own caches
            authorizer=None,
        )
        api.authenticator = authn.Authenticator.from_data_dir(self.settings.data_dir, lookup=_Lookup(api))
        api.rbac = rbac.RbacAuthorizer(await _rbac_source(api))
        api.authorizer = node.NodeThenRbac(node.NodeAuthorizer(_PodSource(api)), api.rbac)
        self.api = api
        await bootstrap.run(
            api,
            service_cidr=self.settings.service_cidr,
            address=self.settings.advertise_address,
            port=self.settings.https_listen_port or 6443,
            rbac=rbac.default_rbac(),
        )
        if self.settings.store_address.startswith(("http://", "https://")):  # a real etcd: kine is not there to compact
            self._compactor = tasks.guarded(compactor.run(backend), name="etcd compaction")
        # Before serving: Services stored without allocation keys get them (older stores, leaks).
        await allocators.repair(api)
        # A failed repair only delays cleanup: it must not stop the API server.
        self._repair = tasks.guarded(allocators.repair_loop(api), name="service allocation repair")
        self._crds = crds.CrdController(api)
        await self._crds.start()
        application = self.app = app_.ApiApp(
            api,
            authenticator=api.authenticator,
            authorizer=api.authorizer,
            credentials=tls.credentials_from_scope,
            server_address=f"{self.settings.advertise_address}:{self.settings.https_listen_port}",
            extra=self._extra,
            metrics=metrics.ApiMetrics(),
        )
        context_ = tls.server_context(
            cert_file=tls_dir / "serving-kube-apiserver.crt",
            key_file=tls_dir / "serving-kube-apiserver.key",
            client_ca_file=tls_dir / "client-ca.crt",
        )
        config = tls.uvicorn_config_for(
            application,
            context=context_,
            host=self.settings.bind_address,
            port=self.settings.https_listen_port,
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        self._server = _Uvicorn(config)
        self._serve = asyncio.get_running_loop().create_task(self._run_https(), name="apiserver https")
        while not self._server.started:
            if self._serve.done():
                raise OSError(f"the API server could not listen on {self.settings.bind_address}:{self.settings.https_listen_port}")
            await asyncio.sleep(0.01)
        sockets = [s for server in self._server.servers for s in server.sockets]
        self.port = sockets[0].getsockname()[1]
        # This server's entry in the `kubernetes` Endpoints, kept while it lives (several servers).
        self._endpoints = endpoints_reconciler.Reconciler(api, address=self.settings.advertise_address, port=self.port)
        await self._endpoints.start()

    async def _run_https(self) -> None:
        assert self._server is not None
        try:
            await self._server.serve()
        finally:
            if self.state is State.RUNNING:  # not a stop we asked for
                log.error("the HTTPS server ended unexpectedly")
                self._done.set()

    async def wait(self) -> None:
        await self._done.wait()

    async def stop(self) -> None:
        if self.state in (State.STOPPING, State.STOPPED):
            return
        self.state = State.STOPPING
        if self._endpoints is not None:
            await self._endpoints.stop()  # out of the `kubernetes` Endpoints before we stop answering
        if self._server is not None:
            self._server.should_exit = True
        if self._crds is not None:
            await self._crds.stop()
        if self._repair is not None:
            await tasks.cancel_all([self._repair])
        if self._compactor is not None:
            await tasks.cancel_all([self._compactor])
        if self.api is not None:
            await self.api.stop()  # ends every watch, so uvicorn's drain is short
        if self._serve is not None:
            try:
                await tasks.wait_for(asyncio.shield(self._serve), 5)
            except TimeoutError:
                self._server.force_exit = True  # type: ignore[union-attr]
                await tasks.cancel_all([self._serve])
        if self.api is not None:
            await tunnel.close(self.api)  # the bus connection the agent tunnel opened, if any
        if self._own_backend and self._backend is not None:
            await self._backend.stop()
        self.state = State.STOPPED
        self._done.set()
        log.info("API server stopped")


class _PodSource:
    """Pods by node, from the pod cache (for the node authorizer)."""

    def __init__(self, api: context.Api) -> None:
        self.api = api

    async def _pods(self) -> Any:
        info = self.api.registry.lookup("", "v1", "pods")
        assert info is not None
        return await self.api.cache(info)

    async def node_of(self, namespace: str, name: str) -> str | None:
        pod = (await self._pods()).get(namespace, name)
        return ((pod or {}).get("spec") or {}).get("nodeName") if pod else None

    async def pods_on(self, node_name: str) -> list[dict[str, Any]]:
        cache = await self._pods()
        return [p for p in cache.list("", None) if (p.get("spec") or {}).get("nodeName") == node_name]


class _Lookup:
    """Service accounts and pods that exist now, so a token outlives neither (authn's lookup)."""

    def __init__(self, api: context.Api) -> None:
        self.api = api

    async def _uid(self, plural: str, namespace: str, name: str) -> str | None:
        info = self.api.registry.lookup("", "v1", plural)
        assert info is not None
        cache = await self.api.cache(info)
        obj = cache.get(namespace, name)
        if obj is None:
            await cache.sync()
            obj = cache.get(namespace, name)
        return obj["metadata"].get("uid") if obj else None

    async def service_account_uid(self, namespace: str, name: str) -> str | None:
        return await self._uid("serviceaccounts", namespace, name)

    async def pod_uid(self, namespace: str, name: str) -> str | None:
        return await self._uid("pods", namespace, name)


async def _rbac_source(api: context.Api) -> Any:
    """RBAC objects straight from the watch caches (always current, never copied)."""
    caches = {}
    for plural in ("roles", "rolebindings", "clusterroles", "clusterrolebindings"):
        info = api.registry.lookup("rbac.authorization.k8s.io", "v1", plural)
        assert info is not None
        caches[plural] = await api.cache(info)

    class Source:
        def revision(self) -> tuple[int, ...]:
            return tuple(c.revision for c in caches.values())

        def cluster_roles(self) -> list[dict[str, Any]]:
            return caches["clusterroles"].list("", None)

        def cluster_role_bindings(self) -> list[dict[str, Any]]:
            return caches["clusterrolebindings"].list("", None)

        def roles(self, namespace: str) -> list[dict[str, Any]]:
            return caches["roles"].list(namespace, None)

        def role_bindings(self, namespace: str) -> list[dict[str, Any]]:
            return caches["rolebindings"].list(namespace, None)

    return Source()
