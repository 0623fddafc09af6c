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
from typing import Any

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
    # The header every response carries, revision 0; copied into each response (see fill_header).
    template: rpc_pb2.ResponseHeader = dataclasses.field(
        init=False, repr=False, compare=False, default_factory=rpc_pb2.ResponseHeader
    )

    def __post_init__(self) -> None:
        self.template.cluster_id = self.cluster_id
        self.template.member_id = self.member_id
        self.template.raft_term = RAFT_TERM

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
        header = rpc_pb2.ResponseHeader()
        self.fill_header(header, revision)
        return header

    def fill_header(self, header: rpc_pb2.ResponseHeader, revision: int) -> None:
        """Set a response's own header in place (cheaper than building one and copying it in)."""
        header.CopyFrom(self.template)
        header.revision = revision


# Messages are filled field by field: upb's attribute setters are about three times
# cheaper than its keyword constructor, and ``repeated.add()`` builds the element in
# place where ``Message(kvs=[...])`` copies each one. A list of 1000 keys spends most
# of its Python time here.


def fill_kv(pb: kv_pb2.KeyValue, kv: types.KeyValue) -> None:
    pb.key = kv.key
    pb.value = kv.value
    pb.create_revision = kv.create_revision
    pb.mod_revision = kv.mod_revision
    pb.version = kv.version
    if kv.lease:
        pb.lease = kv.lease


def add_kvs(field: Any, kvs: list[types.KeyValue]) -> None:
    """Append ``kvs`` to a repeated KeyValue field."""
    add = field.add
    for kv in kvs:
        pb = add()
        pb.key = kv.key
        pb.value = kv.value
        pb.create_revision = kv.create_revision
        pb.mod_revision = kv.mod_revision
        pb.version = kv.version
        if kv.lease:
            pb.lease = kv.lease


def add_events(field: Any, events: list[types.Event], *, prev_kv: bool) -> None:
    """Append ``events`` to a repeated Event field (prev_kv only when the watch asked for it)."""
    add = field.add
    for event in events:
        pb = add()
        if event.type:
            pb.type = event.type
        fill_kv(pb.kv, event.kv)
        if prev_kv and event.prev_kv is not None:
            fill_kv(pb.prev_kv, event.prev_kv)


def fill_range(pb: rpc_pb2.RangeResponse, result: types.RangeResult, identity: Identity) -> None:
    identity.fill_header(pb.header, result.revision)
    add_kvs(pb.kvs, result.kvs)
    if result.more:
        pb.more = True
    if result.count:
        pb.count = result.count


def fill_put(pb: rpc_pb2.PutResponse, result: types.PutResult, identity: Identity, *, prev_kv: bool) -> None:
    identity.fill_header(pb.header, result.revision)
    if prev_kv and result.prev_kv is not None:
        fill_kv(pb.prev_kv, result.prev_kv)


def fill_delete(
    pb: rpc_pb2.DeleteRangeResponse, result: types.DeleteResult, identity: Identity, *, prev_kv: bool
) -> None:
    identity.fill_header(pb.header, result.revision)
    if result.deleted:
        pb.deleted = result.deleted
    if prev_kv:
        add_kvs(pb.prev_kvs, result.prev_kvs)


def range_to_pb(result: types.RangeResult, identity: Identity) -> rpc_pb2.RangeResponse:
    pb = rpc_pb2.RangeResponse()
    fill_range(pb, result, identity)
    return pb


def put_to_pb(result: types.PutResult, identity: Identity, *, prev_kv: bool) -> rpc_pb2.PutResponse:
    pb = rpc_pb2.PutResponse()
    fill_put(pb, result, identity, prev_kv=prev_kv)
    return pb


def delete_to_pb(
    result: types.DeleteResult, identity: Identity, *, prev_kv: bool
) -> rpc_pb2.DeleteRangeResponse:
    pb = rpc_pb2.DeleteRangeResponse()
    fill_delete(pb, result, identity, prev_kv=prev_kv)
    return pb
