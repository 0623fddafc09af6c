"""etcd's Lease service over the backend's lease model.

Lease ids are the backend's (independent of the TTL, unlike kine's ``ID = TTL``).
Two etcd behaviours clients rely on are kept: a keep-alive for a lease that no
longer exists answers TTL 0 instead of failing the stream, and a time-to-live for
one answers TTL -1 (etcdctl prints "already expired").
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from services.kine import types
from services.kine.proto import rpc_pb2
from services.kine.server import convert, errors

logger = logging.getLogger(__name__)

# etcd's MaxLeaseTTL (server/lease/lessor.go): about 285 years.
MAX_LEASE_TTL = 9_000_000_000
MIN_LEASE_TTL = 2  # etcd's minLeaseTTL with its default 100 ms heartbeat and 1 s election timeout

Write = Callable[[rpc_pb2.LeaseKeepAliveResponse], Awaitable[None]]


class LeaseService:
    """Handlers for ``etcdserverpb.Lease``."""

    def __init__(self, backend: types.Backend, *, identity: convert.Identity) -> None:
        self._backend = backend
        self._identity = identity

    async def _header(self) -> rpc_pb2.ResponseHeader:
        return self._identity.header(await self._backend.current_revision())

    async def grant(self, request: rpc_pb2.LeaseGrantRequest) -> rpc_pb2.LeaseGrantResponse:
        if request.TTL > MAX_LEASE_TTL:
            raise errors.OutOfRange(errors.LEASE_TTL_TOO_LARGE)
        # etcd raises a TTL below its minimum (1.5 election timeouts, 2 s by default) to that minimum.
        ttl = max(request.TTL, MIN_LEASE_TTL)
        info = await self._backend.lease_grant(ttl, lease_id=request.ID)
        logger.debug(
            "LEASE GRANT id=%d ttl=%d => id=%d ttl=%d", request.ID, request.TTL, info.id, info.granted_ttl
        )
        return rpc_pb2.LeaseGrantResponse(header=await self._header(), ID=info.id, TTL=info.granted_ttl)

    async def revoke(self, request: rpc_pb2.LeaseRevokeRequest) -> rpc_pb2.LeaseRevokeResponse:
        revision = await self._backend.lease_revoke(request.ID)
        logger.debug("LEASE REVOKE id=%d => rev=%d", request.ID, revision)
        return rpc_pb2.LeaseRevokeResponse(header=self._identity.header(revision))

    async def keep_alive(self, requests: AsyncIterator[rpc_pb2.LeaseKeepAliveRequest], write: Write) -> None:
        async for request in requests:
            try:
                ttl = max((await self._backend.lease_keepalive(request.ID)).ttl, 0)
            except types.LeaseNotFoundError:
                ttl = 0  # etcd: TTL 0 tells the client the lease is gone
            await write(rpc_pb2.LeaseKeepAliveResponse(header=await self._header(), ID=request.ID, TTL=ttl))

    async def time_to_live(self, request: rpc_pb2.LeaseTimeToLiveRequest) -> rpc_pb2.LeaseTimeToLiveResponse:
        try:
            info = await self._backend.lease_time_to_live(request.ID, keys=request.keys)
        except types.LeaseNotFoundError:
            info = types.LeaseInfo(id=request.ID, ttl=-1, granted_ttl=0)
        return rpc_pb2.LeaseTimeToLiveResponse(
            header=await self._header(),
            ID=request.ID,
            TTL=info.ttl,
            grantedTTL=info.granted_ttl,
            keys=info.keys if request.keys else [],
        )

    async def leases(self, request: rpc_pb2.LeaseLeasesRequest) -> rpc_pb2.LeaseLeasesResponse:
        ids = await self._backend.lease_list()
        return rpc_pb2.LeaseLeasesResponse(
            header=await self._header(), leases=[rpc_pb2.LeaseStatus(ID=lease_id) for lease_id in ids]
        )
