"""Several servers on one PostgreSQL/MySQL datastore or one etcd: join the cluster before anything
is generated.

``prepare`` replaces ``profiles.prepare`` for the server profile. On a datastore only this server
uses (SQLite, memory) it is exactly that. On a shared one it first opens the datastore: a SQL one
through kine's own store (the same table and key space the kine child serves, before that child
starts), an etcd through the project's etcd client (the keys the API server's etcd holds). Then:

1. the record ``/bootstrap/<token hash>`` (see ``bootstrap_data``) exists: it is decrypted with the
   token, the settings every server must share are compared (a mismatch names the setting and
   changes nothing), the CAs, service-account key and passwd are written into the data dir, and
   then ``profiles.prepare`` runs, which finds the CAs and only issues this server's leaves;
2. it does not, but another ``/bootstrap/`` record does: the datastore belongs to a cluster with
   another token; refused, nothing written;
3. nothing there: this is the first server. ``profiles.prepare`` generates everything, then the
   record is created if still absent (one transaction); a server that lost that race installs the
   winner's record and prepares again, so its leaves are re-issued under the winner's CAs.

Then, when the server runs the bundled NATS, its NATS cluster (route) address is published under
``/k3s/nats-routes/<server id>`` and the others' addresses are written with the route password
and the route TLS files into ``<data-dir>/server/nats/cluster.json`` for ``supervisor.nats`` (see
there). The route certificate is issued here, from the shared server CA, for the route address.

A route record is bound to a store lease (``ROUTE_TTL``), granted anew at every start, and
``attach`` keeps it alive beside the running server (``RouteRecord``, every ``ROUTE_RENEW``), so the
record of a server that died or was removed disappears by itself. The keep-alives go through the
kine child's socket or to the etcd: both serve etcd's Lease API, and kine persists leases in the
database, so the lease granted here before kine starts is the one kine keeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

import pydantic

from services.kine import client, endpoint
from services.kine import types as kine_types
from services.kine.dialects import base as dialect_base
from services.machinery import tasks
from supervisor import bootstrap_data, config, pki, profiles, snapshots, tokens
from supervisor import nats as nats_server

log = logging.getLogger(__name__)

SHARED_SCHEMES = frozenset({"postgres", "postgresql", "mysql", "http", "https"})
ROUTES_PREFIX = b"/k3s/nats-routes/"
ROUTE_TTL = 60  # seconds a route record outlives its server: long enough for a slow start
ROUTE_RENEW = 20.0  # seconds between keep-alives: two may fail before the record expires


def shared_datastore(endpoint_: str) -> bool:
    """Is this a datastore several servers can share (K3s's external SQL datastores, an etcd)?"""
    return endpoint_.partition("://")[0] in SHARED_SCHEMES


def cluster_settings(settings: config.Settings) -> dict[str, str]:
    """The settings that must be the same on every server, by option name."""
    api = settings.apiserver
    return {
        "cluster-cidr": api.cluster_cidr,
        "service-cidr": api.service_cidr,
        "cluster-domain": api.cluster_domain,
        "service-node-port-range": api.service_node_port_range,
        "disable": ",".join(sorted(settings.controllers.disabled_addons)),
    }


def token_secret(settings: config.Settings) -> str | None:
    """The secret of ``--token``/``--token-file``, else of the token this data dir keeps, else None."""
    cluster = settings.cluster
    if cluster.token is not None:
        return tokens.parse(cluster.token.get_secret_value()).password
    if cluster.token_file is not None:
        return tokens.read_token(cluster.token_file).password
    stored = tokens.server_dir(settings.supervisor.data_dir) / "token"
    return tokens.read_token(stored).password if stored.exists() else None


async def prepare(settings: config.Settings) -> config.Settings:
    """``profiles.prepare``, joined to the cluster on a shared datastore; the settings to run with."""
    if not shared_datastore(settings.kine.datastore_endpoint):
        _forget_routes(settings.supervisor.data_dir)
        profiles.prepare(settings)
        return settings
    secret = token_secret(settings)
    async with _store(settings) as store:
        record = await _find(store, secret)
        if record is None:
            settings, secret = _with_token(settings, secret)
            record = await _publish(store, settings, secret=secret)
        _join(settings, record)
        profiles.prepare(settings)
        await _publish_route(store, settings, password=record.nats_route_password)
    return settings


@contextlib.asynccontextmanager
async def _store(settings: config.Settings) -> AsyncIterator[kine_types.Backend]:
    backend = await _open_store(settings)
    try:
        yield backend
    finally:
        await backend.stop()


def etcd_client(settings: config.Settings) -> client.GrpcBackend:
    """A client of the etcd ``--datastore-endpoint`` names, with the ``--datastore-*file`` TLS files."""
    try:
        return client.GrpcBackend(settings.kine.datastore_endpoint, tls=snapshots.datastore_tls(settings))
    except ValueError as exc:  # a malformed endpoint list: the user's to fix
        raise kine_types.DatastoreError(str(exc)) from None


async def _open_store(settings: config.Settings, *, attempts: int = 3) -> kine_types.Backend:
    if config.is_etcd_endpoint(settings.kine.datastore_endpoint):
        etcd = etcd_client(settings)
        await etcd.start()  # a failed start has closed the client already
        return etcd
    # No compactor: this backend lives for the few statements of the join.
    kine = settings.kine.model_copy(update={"compact_interval": 0.0})
    for attempt in range(1, attempts + 1):
        try:
            backend = await endpoint.open_backend(kine)
        except kine_types.StoreError as exc:
            # The same words as when the kine child cannot open it: it is kine's store that failed.
            raise kine_types.StoreError(f"kine failed to start: {exc}") from None
        try:
            await backend.start()
            return backend
        except dialect_base.UniqueViolation as exc:
            # Another server set up the fresh table at the same moment: its rows are there now.
            await backend.stop()
            if attempt == attempts:
                raise kine_types.StoreError(f"kine failed to start: {exc}") from None
            await asyncio.sleep(0.1 * attempt)
        except BaseException:
            await backend.stop()
            raise
    raise AssertionError("unreachable")


async def _find(store: kine_types.Backend, secret: str | None) -> bootstrap_data.Bootstrap | None:
    """This token's record, decrypted; None on an empty datastore; refused for another token's."""
    prefix = bootstrap_data.PREFIX
    # One snapshot for both reads: a record written between two separate reads (another server
    # starting at the same moment with the same token) would otherwise look like another token's.
    found = await store.range(prefix, prefix[:-1] + b"0")
    if secret is not None:
        mine = [kv for kv in found.kvs if kv.key == bootstrap_data.storage_key(secret)]
        if mine:
            clear = bootstrap_data.unseal(mine[0].value, secret=secret)
            return bootstrap_data.Bootstrap.from_json(clear)
    if found.kvs:
        raise bootstrap_data.BootstrapError(
            "this datastore already holds a cluster whose bootstrap data was sealed with another token: "
            "start with the cluster's --token"
        )
    return None


def _with_token(settings: config.Settings, secret: str | None) -> tuple[config.Settings, str]:
    """The first server without a token generates one, as K3s does; it goes into server/token."""
    if secret is not None:
        return settings, secret
    secret = tokens.generate_secret()
    cluster = settings.cluster.model_copy(update={"token": pydantic.SecretStr(secret)})
    log.info(
        "no --token given: generated the cluster token (see %s)",
        tokens.server_dir(settings.supervisor.data_dir) / "token",
    )
    return settings.model_copy(update={"cluster": cluster}), secret


async def _publish(
    store: kine_types.Backend, settings: config.Settings, *, secret: str
) -> bootstrap_data.Bootstrap:
    """Generate as a first server and store the record; the winner's record if another was first."""
    profiles.prepare(settings)
    server_dir = tokens.server_dir(settings.supervisor.data_dir)
    record = bootstrap_data.collect(server_dir, settings=cluster_settings(settings))
    key = bootstrap_data.storage_key(secret)
    sealed = bootstrap_data.seal(record.to_json(), secret=secret)
    txn = kine_types.Txn(
        compare=[kine_types.Compare(key, "create", "=", 0)],
        success=[kine_types.PutOp(key, sealed)],
        failure=[kine_types.RangeOp(key)],
    )
    result = await store.txn(txn)
    if result.succeeded:
        log.info("first server on this datastore: stored the cluster's bootstrap data")
        return record
    log.info("another server stored the bootstrap data first: using its CAs and keys")
    found = result.responses[0]
    assert isinstance(found, kine_types.RangeResult) and found.kvs
    return bootstrap_data.Bootstrap.from_json(bootstrap_data.unseal(found.kvs[0].value, secret=secret))


def _join(settings: config.Settings, record: bootstrap_data.Bootstrap) -> None:
    """Refuse on differing settings, then write the cluster's files into the data dir."""
    wrong = bootstrap_data.mismatches(record.settings, cluster_settings(settings))
    if wrong:
        raise bootstrap_data.BootstrapError(
            "this server's settings differ from the cluster's, which must match on every server: "
            + "; ".join(wrong)
        )
    changed = bootstrap_data.install(tokens.server_dir(settings.supervisor.data_dir), record)
    if changed:
        log.info("joined the cluster: installed %s from the datastore", ", ".join(changed))


# -- the NATS cluster ---------------------------------------------------------------------------------


def routes_path(data_dir: Path) -> Path:
    return nats_server.nats_dir(data_dir) / nats_server.CLUSTER_FILE


def route_key(server_id: str) -> bytes:
    return ROUTES_PREFIX + server_id.encode()


def route_value(address: str) -> bytes:
    return json.dumps({"address": address}).encode()


def _forget_routes(data_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        routes_path(data_dir).unlink()


async def _publish_route(store: kine_types.Backend, settings: config.Settings, *, password: str) -> None:
    """Announce this server's NATS route address and write the others' for the bundled NATS."""
    data_dir = settings.supervisor.data_dir
    if settings.nats.url:  # an external NATS: every server already talks to the same one
        _forget_routes(data_dir)
        return
    host = settings.apiserver.advertise_address or nats_server.HOST
    mine = _own_route(data_dir, host=host)
    key = route_key(mine["id"])
    # A new lease at every start: the previous one may have expired while the server was down.
    lease = await store.lease_grant(ROUTE_TTL)
    await store.put(key, route_value(mine["listen"]), lease=lease.id)
    found = await store.range(ROUTES_PREFIX, ROUTES_PREFIX[:-1] + b"0")
    peers = sorted(_address(kv.value) for kv in found.kvs if kv.key != key)
    files = pki.ensure_route_cert(data_dir, host=host)
    tls = {
        "cert": str(files.crt(pki.NATS_ROUTE)),
        "key": str(files.key(pki.NATS_ROUTE)),
        "ca": str(files.crt(pki.SERVER_CA)),
    }
    routes = [peer for peer in peers if peer]
    cluster = {**mine, "password": password, "routes": routes, "lease": lease.id, "tls": tls}
    nats_server.nats_dir(data_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    pki.write_atomic(routes_path(data_dir), json.dumps(cluster).encode(), mode=0o600)
    log.info("NATS cluster: this server routes on %s (TLS); peers %s", mine["listen"], routes or "none yet")


def _stored_route(data_dir: Path) -> dict[str, Any]:
    try:
        stored = json.loads(routes_path(data_dir).read_text())
    except (OSError, ValueError):
        return {}
    return stored if isinstance(stored, dict) else {}


def _own_route(data_dir: Path, *, host: str) -> dict[str, str]:
    """This server's id and route address, chosen once and kept across restarts."""
    stored = _stored_route(data_dir)
    listen, server_id = str(stored.get("listen", "")), str(stored.get("id", ""))
    if listen.rpartition(":")[0] == host and server_id:
        return {"id": server_id, "listen": listen}
    port = nats_server.pick_free_port(host)
    return {"id": secrets.token_hex(8), "listen": f"{host}:{port}"}


def _address(value: bytes) -> str:
    try:
        return str(json.loads(value)["address"])
    except (ValueError, KeyError, TypeError):
        return ""


# -- keeping the route record alive -------------------------------------------------------------------


class State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


class RouteRecord:
    """Keeps one route record's lease alive: a keep-alive at start, then every ``interval`` seconds.

    A lease found gone (the store was out of reach for longer than the TTL) is granted anew and the
    record written again, so a server cut off for a while is listed again once it is back. Failed
    keep-alives are logged and retried: losing the record must never stop a running server.
    """

    def __init__(
        self,
        store: kine_types.Backend,
        *,
        key: bytes,
        value: bytes,
        lease: int,
        ttl: int = ROUTE_TTL,
        interval: float = ROUTE_RENEW,
        revoke_timeout: float = 5.0,
    ) -> None:
        self.store = store  # not owned: started and stopped by the caller
        self.key, self.value, self.lease = key, value, lease
        self.ttl, self.interval, self.revoke_timeout = ttl, interval, revoke_timeout
        self.state = State.NEW
        self.renewed = 0  # keep-alives that succeeded, for logs and tests
        self._tasks: list[asyncio.Task[Any]] = []

    async def start(self) -> None:
        self._tasks.append(tasks.guarded(self._loop(), name="NATS route record keep-alive"))
        self.state = State.RUNNING
        log.info("keeping the NATS route record %s alive (lease TTL %d s)", self.key.decode(), self.ttl)

    async def wait(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def stop(self) -> None:
        """Stop renewing and revoke the lease, so a server stopped for good is no route for anyone."""
        if self.state is not State.RUNNING:
            self.state = State.STOPPED
            return
        self.state = State.STOPPED
        await tasks.cancel_all(self._tasks)
        try:
            async with asyncio.timeout(self.revoke_timeout):
                await self.store.lease_revoke(self.lease)
        except (kine_types.StoreError, TimeoutError) as exc:
            # It expires within the TTL anyway.
            log.warning("could not remove the NATS route record %s: %s", self.key.decode(), exc)

    async def _loop(self) -> None:
        while True:
            await self.renew()
            await asyncio.sleep(self.interval)

    async def renew(self) -> None:
        """One keep-alive; the record written again under a new lease if the old one is gone."""
        try:
            try:
                await self.store.lease_keepalive(self.lease)
            except kine_types.LeaseNotFoundError:
                granted = await self.store.lease_grant(self.ttl)
                await self.store.put(self.key, self.value, lease=granted.id)
                self.lease = granted.id
                log.warning("the NATS route record's lease had expired: wrote %s again", self.key.decode())
            self.renewed += 1
        except kine_types.StoreError as exc:
            log.warning(
                "keeping the NATS route record alive failed (retrying in %g s): %s", self.interval, exc
            )


class Component(Protocol):
    async def start(self) -> None: ...

    async def wait(self) -> None: ...

    async def stop(self) -> None: ...


class WithRouteRecord:
    """The server's root component with its route record kept alive beside it, through ``store``."""

    def __init__(self, inner: Component, store: client.GrpcBackend, record: RouteRecord) -> None:
        self.inner, self.store, self.record = inner, store, record

    async def start(self) -> None:
        await self.inner.start()  # kine answers once this returns
        try:
            await self.store.start()
        except BaseException:
            await self.inner.stop()
            raise
        await self.record.start()

    async def wait(self) -> None:
        await self.inner.wait()  # the record never ends the server

    async def stop(self) -> None:
        await self.record.stop()
        await self.store.stop()
        await self.inner.stop()


def attach(inner: Component, settings: config.Settings, *, kine_address: str) -> Component:
    """``inner`` with this server's route record kept alive, when ``prepare`` published one.

    The keep-alives reach the store as the API server does: the etcd itself, or the kine child at
    ``kine_address``.
    """
    stored = _stored_route(settings.supervisor.data_dir)
    if not shared_datastore(settings.kine.datastore_endpoint) or "lease" not in stored:
        return inner
    if config.is_etcd_endpoint(settings.kine.datastore_endpoint):
        store = etcd_client(settings)
    else:
        store = client.GrpcBackend(kine_address)
    record = RouteRecord(
        store,
        key=route_key(str(stored["id"])),
        value=route_value(str(stored["listen"])),
        lease=int(stored["lease"]),
    )
    return WithRouteRecord(inner, store, record)
