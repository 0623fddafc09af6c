"""The one table from store and request errors to gRPC status codes and messages.

Handlers never call ``context.abort`` themselves: they raise (a ``types.StoreError``
from the backend, or a ``RequestError`` for a request shape this server rejects),
and the RPC wrapper in ``server.py`` turns the exception into a status through
``to_status``. Messages for the store errors are etcd's own, because clients match
on them (the Go client maps "etcdserver: mvcc: required revision has been compacted"
back to ``rpctypes.ErrCompacted``).
"""

from __future__ import annotations

import dataclasses

import grpc

from services.kine import types

# etcd's messages, verbatim (etcd: api/v3rpc/rpctypes/error.go).
COMPACTED = "etcdserver: mvcc: required revision has been compacted"
FUTURE_REVISION = "etcdserver: mvcc: required revision is a future revision"
LEASE_NOT_FOUND = "etcdserver: requested lease not found"
LEASE_EXISTS = "etcdserver: lease already exists"
LEASE_TTL_TOO_LARGE = "etcdserver: too large lease TTL"
EMPTY_KEY = "etcdserver: key is not provided"
TOO_MANY_OPS = "etcdserver: too many operations in txn request"
INTERNAL = "kine: internal error"


class RequestError(Exception):
    """A request this server rejects before it reaches the store; the message says why."""


class InvalidArgument(RequestError):
    pass


class Unimplemented(RequestError):
    pass


class OutOfRange(RequestError):
    pass


@dataclasses.dataclass(frozen=True, slots=True)
class Status:
    code: grpc.StatusCode
    # None: use the exception's own message.
    message: str | None = None
    # The code inside a Txn, when it differs (kine answers unsupported txn shapes with InvalidArgument).
    txn_code: grpc.StatusCode | None = None


# Looked up along the exception's MRO, so a subclass inherits its base's row.
TABLE: dict[type[BaseException], Status] = {
    types.CompactedError: Status(grpc.StatusCode.OUT_OF_RANGE, COMPACTED),
    types.FutureRevisionError: Status(grpc.StatusCode.OUT_OF_RANGE, FUTURE_REVISION),
    types.LeaseNotFoundError: Status(grpc.StatusCode.NOT_FOUND, LEASE_NOT_FOUND),
    types.LeaseExistsError: Status(grpc.StatusCode.FAILED_PRECONDITION, LEASE_EXISTS),
    types.UnsupportedError: Status(grpc.StatusCode.UNIMPLEMENTED, txn_code=grpc.StatusCode.INVALID_ARGUMENT),
    types.DatastoreError: Status(grpc.StatusCode.UNAVAILABLE),
    types.WatchClosedError: Status(grpc.StatusCode.UNAVAILABLE),
    types.StoreError: Status(grpc.StatusCode.UNKNOWN),
    InvalidArgument: Status(grpc.StatusCode.INVALID_ARGUMENT),
    Unimplemented: Status(grpc.StatusCode.UNIMPLEMENTED),
    OutOfRange: Status(grpc.StatusCode.OUT_OF_RANGE),
}


def unwrap(exc: BaseException) -> BaseException:
    """The first leaf of an exception group (a TaskGroup reports a failed child that way)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def lookup(exc: BaseException) -> Status | None:
    for cls in type(exc).__mro__:
        if cls in TABLE:
            return TABLE[cls]
    return None


def to_status(exc: BaseException, *, txn: bool = False) -> tuple[grpc.StatusCode, str]:
    """The gRPC code and message for ``exc``; unknown exceptions map to INTERNAL."""
    exc = unwrap(exc)
    status = lookup(exc)
    if status is None:
        return grpc.StatusCode.INTERNAL, INTERNAL
    code = status.txn_code if txn and status.txn_code is not None else status.code
    return code, status.message if status.message is not None else str(exc)


def is_known(exc: BaseException) -> bool:
    """True for errors the table names; the others are bugs, logged with their traceback."""
    return lookup(unwrap(exc)) is not None
