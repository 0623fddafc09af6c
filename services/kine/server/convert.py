"""Translation between the store's dataclasses (``types.py``) and etcd protobuf messages.

Also the server's identity: every etcd response header carries the cluster id,
member id, store revision and raft term. kine has no raft, so the term is always
1 and both ids are stable hashes: the cluster id of the datastore (so kine
servers sharing one database report one cluster) and the member id of this
host and listening address.
"""

from __future__ import annotations

import dataclasses
import hashlib
import socket

from services.kine import types
from services.kine.proto import kv_pb2, rpc_pb2

RAFT_TERM = 1


def _stable_id(*parts: str) -> int:
    """A nonzero 63-bit id from ``parts`` (positive, so int64-typed fields carry it too)."""
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return (int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF) or 1


@dataclasses.dataclass(frozen=True, slots=True)
class Identity:
    cluster_id: int
    member_id: int
    name: str

    @classmethod
    def for_server(cls, *, datastore: str, address: str) -> Identity:
        # The datastore string may hold a password; only its hash leaves this function.
        host = socket.gethostname() or "kine"
        return cls(
            cluster_id=_stable_id("cluster", datastore),
            member_id=_stable_id("member", host, address),
            name=host,
        )

    def header(self, revision: int) -> rpc_pb2.ResponseHeader:
        return rpc_pb2.ResponseHeader(
            cluster_id=self.cluster_id,
            member_id=self.member_id,
            revision=revision,
            raft_term=RAFT_TERM,
        )


def kv_to_pb(kv: types.KeyValue) -> kv_pb2.KeyValue:
    return kv_pb2.KeyValue(
        key=kv.key,
        value=kv.value,
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
        version=kv.version,
        lease=kv.lease,
    )


def event_to_pb(event: types.Event, *, prev_kv: bool) -> kv_pb2.Event:
    pb = kv_pb2.Event(type=int(event.type), kv=kv_to_pb(event.kv))
    if prev_kv and event.prev_kv is not None:
        pb.prev_kv.CopyFrom(kv_to_pb(event.prev_kv))
    return pb


def range_to_pb(result: types.RangeResult, header: rpc_pb2.ResponseHeader) -> rpc_pb2.RangeResponse:
    return rpc_pb2.RangeResponse(
        header=header,
        kvs=[kv_to_pb(kv) for kv in result.kvs],
        more=result.more,
        count=result.count,
    )


def put_to_pb(
    result: types.PutResult, header: rpc_pb2.ResponseHeader, *, prev_kv: bool
) -> rpc_pb2.PutResponse:
    response = rpc_pb2.PutResponse(header=header)
    if prev_kv and result.prev_kv is not None:
        response.prev_kv.CopyFrom(kv_to_pb(result.prev_kv))
    return response


def delete_to_pb(
    result: types.DeleteResult, header: rpc_pb2.ResponseHeader, *, prev_kv: bool
) -> rpc_pb2.DeleteRangeResponse:
    return rpc_pb2.DeleteRangeResponse(
        header=header,
        deleted=result.deleted,
        prev_kvs=[kv_to_pb(kv) for kv in result.prev_kvs] if prev_kv else [],
    )
