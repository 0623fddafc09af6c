"""etcd's Maintenance service: Status, and an always-empty alarm list.

kine has no raft log, so Status reports the store revision as the raft index and
1 as the term, and this member as the leader: ``etcdctl endpoint status`` then
shows plausible values. The version is the emulated etcd version from settings;
kube-apiserver enables progress requests only from 3.5.13 on. The other RPCs
(defragment, hash, snapshot, leader moves, downgrades) have no meaning over SQL
and answer UNIMPLEMENTED, naming the RPC.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from services.kine import types
from services.kine.proto import rpc_pb2
from services.kine.server import convert, errors


def _unsupported(rpc: str) -> errors.Unimplemented:
    return errors.Unimplemented(f"kine: Maintenance.{rpc} is not supported")


class MaintenanceService:
    """Handlers for ``etcdserverpb.Maintenance``."""

    def __init__(self, backend: types.Backend, *, identity: convert.Identity, version: str) -> None:
        self._backend = backend
        self._identity = identity
        self._version = version

    async def status(self, request: rpc_pb2.StatusRequest) -> rpc_pb2.StatusResponse:
        revision = await self._backend.current_revision()
        size = await self._backend.db_size()
        return rpc_pb2.StatusResponse(
            header=self._identity.header(revision),
            version=self._version,
            dbSize=size,
            dbSizeInUse=size,
            leader=self._identity.member_id,
            raftIndex=revision,
            raftAppliedIndex=revision,
            raftTerm=convert.RAFT_TERM,
            isLearner=False,
        )

    async def alarm(self, request: rpc_pb2.AlarmRequest) -> rpc_pb2.AlarmResponse:
        if request.action != rpc_pb2.AlarmRequest.GET:
            raise _unsupported("Alarm (activate/deactivate)")
        # Nothing ever raises an alarm here: no space quota, no corruption check.
        return rpc_pb2.AlarmResponse(header=self._identity.header(await self._backend.current_revision()))

    async def defragment(self, request: rpc_pb2.DefragmentRequest) -> rpc_pb2.DefragmentResponse:
        raise _unsupported("Defragment")

    async def hash(self, request: rpc_pb2.HashRequest) -> rpc_pb2.HashResponse:
        raise _unsupported("Hash")

    async def hash_kv(self, request: rpc_pb2.HashKVRequest) -> rpc_pb2.HashKVResponse:
        raise _unsupported("HashKV")

    async def snapshot(
        self, request: rpc_pb2.SnapshotRequest, write: Callable[[rpc_pb2.SnapshotResponse], Awaitable[None]]
    ) -> None:
        raise _unsupported("Snapshot")

    async def move_leader(self, request: rpc_pb2.MoveLeaderRequest) -> rpc_pb2.MoveLeaderResponse:
        raise _unsupported("MoveLeader")

    async def downgrade(self, request: rpc_pb2.DowngradeRequest) -> rpc_pb2.DowngradeResponse:
        raise _unsupported("Downgrade")
