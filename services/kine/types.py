"""The contract between kine's gRPC server and its storage backend.

Like kine's ``pkg/server/types.go``: the server layer consumes a ``Backend``; the
log-structured layer provides one. Everything that crosses that seam lives here:
the key-value and event types, the transaction model, the lease model and the
store errors. The server translates these into etcd protobuf messages and gRPC
status codes; the backend never sees protobuf.

Revisions are kine's: every row written to the log gets its own id, and that id
is the revision. A write's revision is the id of the row it created.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from typing import Literal, Protocol

# -- values -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int = 0
    lease: int = 0


class EventType(enum.IntEnum):
    PUT = 0
    DELETE = 1


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    type: EventType
    kv: KeyValue
    # The key's previous value, when it had one (None for a create).
    prev_kv: KeyValue | None = None


# -- results ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class RangeResult:
    revision: int  # the store revision the read was served at
    kvs: list[KeyValue]
    count: int  # keys in the range at that revision, ignoring limit
    more: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class PutResult:
    revision: int
    prev_kv: KeyValue | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class DeleteResult:
    revision: int
    deleted: int
    prev_kvs: list[KeyValue] = dataclasses.field(default_factory=list)


# -- transactions ---------------------------------------------------------------

CompareTarget = Literal["version", "create", "mod", "value", "lease"]
CompareResult = Literal["=", "!=", "<", ">"]


@dataclasses.dataclass(frozen=True, slots=True)
class Compare:
    """One etcd compare on a single key (a range_end is not supported)."""

    key: bytes
    target: CompareTarget
    result: CompareResult
    value: int | bytes  # bytes for target "value", int otherwise


@dataclasses.dataclass(frozen=True, slots=True)
class RangeOp:
    key: bytes
    range_end: bytes = b""
    limit: int = 0
    keys_only: bool = False
    count_only: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class PutOp:
    key: bytes
    value: bytes
    lease: int = 0
    prev_kv: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class DeleteOp:
    key: bytes
    range_end: bytes = b""
    prev_kv: bool = False


Op = RangeOp | PutOp | DeleteOp
OpResult = RangeResult | PutResult | DeleteResult


@dataclasses.dataclass(frozen=True, slots=True)
class Txn:
    compare: Sequence[Compare] = ()
    success: Sequence[Op] = ()
    failure: Sequence[Op] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class TxnResult:
    revision: int
    succeeded: bool
    responses: list[OpResult]


# -- leases -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class LeaseInfo:
    id: int
    ttl: int  # seconds remaining; -1 when the lease does not exist or expired
    granted_ttl: int
    keys: list[bytes] = dataclasses.field(default_factory=list)


# -- errors -----------------------------------------------------------------------


class StoreError(Exception):
    """Base of every error the backend raises to the server layer."""


class CompactedError(StoreError):
    """The requested revision is below the compaction point."""

    def __init__(self, compact_revision: int, current_revision: int = 0) -> None:
        super().__init__("etcdserver: mvcc: required revision has been compacted")
        self.compact_revision = compact_revision
        self.current_revision = current_revision


class FutureRevisionError(StoreError):
    def __init__(self) -> None:
        super().__init__("etcdserver: mvcc: required revision is a future revision")


class LeaseNotFoundError(StoreError):
    def __init__(self) -> None:
        super().__init__("etcdserver: requested lease not found")


class LeaseExistsError(StoreError):
    def __init__(self) -> None:
        super().__init__("etcdserver: lease already exists")


class UnsupportedError(StoreError):
    """A request shape the store cannot honour; the message names what."""


class DatastoreError(StoreError):
    """The database failed or is unreachable (never carries credentials)."""


class WatchClosedError(StoreError):
    """A watch ended by the store: too slow to keep up, or the store stopping."""


# -- the seam -----------------------------------------------------------------------


class Watch(Protocol):
    """One watch on a key range, fed by the backend's single poll/notify loop."""

    async def next_batch(self) -> list[Event]:
        """Wait for the next batch of events, in revision order.

        Raises WatchClosedError (with the reason) when the store ended the watch.
        """
        ...

    def pending(self) -> bool:
        """True when events are queued and not yet taken."""
        ...

    def close(self) -> None: ...


class Backend(Protocol):
    """What the gRPC server (and, folded, the API server) needs from the store."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def current_revision(self) -> int: ...

    async def compact_revision(self) -> int: ...

    async def range(
        self,
        key: bytes,
        range_end: bytes = b"",
        *,
        revision: int = 0,
        limit: int = 0,
        keys_only: bool = False,
        count_only: bool = False,
    ) -> RangeResult:
        """Read one key (empty range_end) or [key, range_end); b"\\0" as range_end means all keys >= key."""
        ...

    async def put(self, key: bytes, value: bytes, *, lease: int = 0, prev_kv: bool = False) -> PutResult: ...

    async def delete_range(
        self, key: bytes, range_end: bytes = b"", *, prev_kv: bool = False
    ) -> DeleteResult: ...

    async def txn(self, txn: Txn) -> TxnResult:
        """Evaluate compares and apply one branch atomically.

        A failed compare is the normal ``succeeded=False`` result, not an error.
        """
        ...

    async def compact(self, revision: int) -> int:
        """Compact up to ``revision`` (bounded to keep the newest revisions); return the compact revision."""
        ...

    async def watch(self, key: bytes, range_end: bytes = b"", *, start_revision: int = 0) -> Watch:
        """Watch [key, range_end) from ``start_revision`` (0 = from now, etcd semantics).

        Raises CompactedError when start_revision is below the compaction point.
        """
        ...

    async def synced_revision(self) -> int:
        """Wait until every committed write is delivered to watches; return that revision (for progress notifies)."""
        ...

    async def db_size(self) -> int: ...

    async def lease_grant(self, ttl: int, *, lease_id: int = 0) -> LeaseInfo: ...

    async def lease_revoke(self, lease_id: int) -> int:
        """Delete the lease and its keys; return the store revision after."""
        ...

    async def lease_keepalive(self, lease_id: int) -> LeaseInfo: ...

    async def lease_time_to_live(self, lease_id: int, *, keys: bool = False) -> LeaseInfo: ...

    async def lease_list(self) -> list[int]: ...
