"""The ``kubernetes`` Endpoints: every live API server, as kube-apiserver's "lease" reconciler keeps it.

Each API server owns one key ``/registry/masterleases/<ip>:<port>`` attached to a store lease of
``ttl`` seconds and renews it every ``interval``; a server that dies stops renewing, and the store
deletes its key when the lease runs out. After each renewal the server lists the keys and, when
the ``default/kubernetes`` Endpoints differ from them, rewrites them (compare-and-swap on the
revision read, so two servers reconciling at once cannot lose each other's address: the loser
re-reads next round). On a graceful stop the server revokes its lease and takes itself out at once.

Upstream keys the leases by IP only, because every server serves on one port; the port is part of
the key here so that several servers on one host (tests, a laptop) each count. Addresses sharing a
port are one subset, as upstream writes them.

The loop is a named task owned by the reconciler; a store that is down only delays a round.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import uuid
from typing import Any

from services.apiserver import context, storage
from services.kine import types
from services.machinery import tasks

log = logging.getLogger(__name__)

LEASE_PREFIX = "/registry/masterleases/"
TTL = 15  # seconds a dead server stays listed at most before its lease runs out (upstream: 15 s)
INTERVAL = 10.0  # seconds between renewals and reconciliations (upstream: 10 s)


def endpoints_object(members: list[tuple[str, int]]) -> dict[str, Any]:
    """The ``default/kubernetes`` Endpoints for these (ip, port) API servers."""
    ports: dict[int, list[str]] = {}
    for ip, port in sorted(set(members)):
        ports.setdefault(port, []).append(ip)
    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"},
        },
        "subsets": [
            {
                "addresses": [{"ip": ip} for ip in ips],
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
            }
            for port, ips in sorted(ports.items())
        ],
    }


class Reconciler:
    """Keeps this server's lease and the ``kubernetes`` Endpoints: ``start``, ``stop``."""

    def __init__(
        self, api: context.Api, *, address: str, port: int, ttl: int = TTL, interval: float = INTERVAL
    ) -> None:
        self.api = api
        self.address = address
        self.port = port
        self.ttl = ttl
        self.interval = interval
        self._lease = 0
        self._task: asyncio.Task[Any] | None = None

    @property
    def _key(self) -> bytes:
        return f"{LEASE_PREFIX}{self.address}:{self.port}".encode()

    @property
    def _backend(self) -> types.Backend:
        return self.api.store.backend

    async def start(self) -> None:
        """Publish this server and reconcile once, then keep doing it in the background."""
        await self.renew()
        await self.reconcile()
        self._task = tasks.guarded(self._loop(), name="kubernetes endpoints reconciler")
        log.info(
            "kubernetes endpoints: this server is %s:%d (lease ttl %ds)", self.address, self.port, self.ttl
        )

    async def stop(self) -> None:
        """Stop renewing and take this server out of the endpoints now (best effort); idempotent."""
        if self._task is not None:
            await tasks.cancel_all([self._task])
            self._task = None
        if not self._lease:
            return
        lease, self._lease = self._lease, 0
        try:
            await self._backend.lease_revoke(lease)
            await self.reconcile()
        except types.StoreError as exc:
            log.warning("kubernetes endpoints: could not remove this server at stop: %s", exc)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.renew()
                await self.reconcile()
            except types.StoreError as exc:
                log.warning("kubernetes endpoints: reconcile failed, retrying in %gs: %s", self.interval, exc)

    async def renew(self) -> None:
        """Keep this server's lease alive; a lost one (the store expired it) is granted again."""
        if self._lease:
            info = await self._backend.lease_keepalive(self._lease)
            if info.ttl > 0:
                return
        self._lease = (await self._backend.lease_grant(self.ttl)).id
        value = json.dumps({"ip": self.address, "port": self.port}).encode()
        await self._backend.put(self._key, value, lease=self._lease)

    async def members(self) -> list[tuple[str, int]]:
        """The (ip, port) of every API server whose lease is alive."""
        found = await self._backend.range(LEASE_PREFIX.encode(), storage.prefix_end(LEASE_PREFIX))
        members = []
        for kv in found.kvs:
            try:
                data = json.loads(kv.value)
                members.append((str(data["ip"]), int(data["port"])))
            except (ValueError, KeyError, TypeError):
                log.warning("kubernetes endpoints: ignoring malformed lease %r", kv.key)
        return members

    async def reconcile(self) -> bool:
        """Rewrite the endpoints when they differ from the live servers; True when they were written."""
        info = self.api.registry.by_kind("", "Endpoints")
        assert info is not None, "Endpoints is a built-in kind"
        key = info.key("default", "kubernetes")
        members = await self.members()
        wanted = endpoints_object(members)
        stored = await self.api.store.get(key)
        if stored is None:
            return await self.api.store.create(key, _with_identity(wanted)) is not None
        if stored.obj.get("subsets") == wanted["subsets"]:
            return False
        updated = {**stored.obj, "subsets": wanted["subsets"]}
        written = await self.api.store.update(key, updated, expected=stored.revision) is not None
        if written:
            addresses = [f"{ip}:{port}" for ip, port in sorted(members)]
            log.info("kubernetes endpoints now list %s", ", ".join(addresses) or "no server")
        return written


def _with_identity(obj: dict[str, Any]) -> dict[str, Any]:
    """Metadata a stored object always has (the write path would add it; this writes directly)."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    meta = {**obj["metadata"], "uid": str(uuid.uuid4()), "creationTimestamp": now}
    return {**obj, "metadata": meta}
