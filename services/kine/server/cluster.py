"""etcd's Cluster service: a one-member cluster.

Every kine server is its own one-member "cluster" as far as etcd clients can tell;
several kine servers sharing a database do not know of each other. The member's
client URL is the address this server listens on, so a client that syncs its
endpoints from MemberList keeps talking to this server.
"""

from __future__ import annotations

from services.kine import types
from services.kine.proto import rpc_pb2
from services.kine.server import convert, errors


def _unsupported(rpc: str) -> errors.Unimplemented:
    return errors.Unimplemented(f"kine: Cluster.{rpc} is not supported: kine is a single-member cluster")


class ClusterService:
    """Handlers for ``etcdserverpb.Cluster``."""

    def __init__(self, backend: types.Backend, *, identity: convert.Identity, client_url: str) -> None:
        self._backend = backend
        self._identity = identity
        self._client_url = client_url

    def member(self) -> rpc_pb2.Member:
        return rpc_pb2.Member(
            ID=self._identity.member_id,
            name=self._identity.name,
            peerURLs=[self._client_url],
            clientURLs=[self._client_url],
            isLearner=False,
        )

    async def member_list(self, request: rpc_pb2.MemberListRequest) -> rpc_pb2.MemberListResponse:
        revision = await self._backend.current_revision()
        return rpc_pb2.MemberListResponse(header=self._identity.header(revision), members=[self.member()])

    async def member_add(self, request: rpc_pb2.MemberAddRequest) -> rpc_pb2.MemberAddResponse:
        raise _unsupported("MemberAdd")

    async def member_remove(self, request: rpc_pb2.MemberRemoveRequest) -> rpc_pb2.MemberRemoveResponse:
        raise _unsupported("MemberRemove")

    async def member_update(self, request: rpc_pb2.MemberUpdateRequest) -> rpc_pb2.MemberUpdateResponse:
        raise _unsupported("MemberUpdate")

    async def member_promote(self, request: rpc_pb2.MemberPromoteRequest) -> rpc_pb2.MemberPromoteResponse:
        raise _unsupported("MemberPromote")
