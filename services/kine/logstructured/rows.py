"""Rows of the log as etcd sees them: key-values and events.

kine records no per-key version. Every live key reports version 1, which keeps
etcd's "version = 0 means absent" compares working. The one key whose version
matters, ``compact_rev_key`` (kube-apiserver's compactor compares its version), is
stored as ``compact_rev_key_apiserver`` with the value ``"<version>|<value>"``,
the way kine stores it, so its version counts up for real.
"""

from __future__ import annotations

from services.kine import types
from services.kine.sqllog import log as sqllog

APISERVER_COMPACT_KEY = b"compact_rev_key"
STORED_COMPACT_KEY = b"compact_rev_key_apiserver"


def stored_name(key: bytes) -> bytes:
    return STORED_COMPACT_KEY if key == APISERVER_COMPACT_KEY else key


def to_kv(row: sqllog.Row, *, keys_only: bool = False) -> types.KeyValue:
    """The key-value a live row holds."""
    create = row.id if row.created else row.create_revision
    value = row.value or b""
    key, version = row.name, 1
    if row.name == STORED_COMPACT_KEY:
        key = APISERVER_COMPACT_KEY
        version, value = split_versioned(value)
    return types.KeyValue(
        key=key,
        value=b"" if keys_only else value,
        create_revision=create,
        mod_revision=row.id,
        version=version,
        lease=row.lease,
    )


def prev_kv(row: sqllog.Row) -> types.KeyValue | None:
    """The key-value this row replaced, rebuilt from the copy it carries."""
    if row.created or row.prev_revision == 0:
        return None
    return types.KeyValue(
        key=row.name,
        value=row.old_value or b"",
        create_revision=row.create_revision,
        mod_revision=row.prev_revision,
        version=1,
        lease=row.lease,
    )


def to_event(row: sqllog.Row) -> types.Event:
    if row.deleted:
        kv = types.KeyValue(key=row.name, value=b"", create_revision=0, mod_revision=row.id, version=0)
        return types.Event(types.EventType.DELETE, kv, prev_kv(row))
    return types.Event(types.EventType.PUT, to_kv(row), prev_kv(row))


def split_versioned(value: bytes) -> tuple[int, bytes]:
    head, sep, rest = value.partition(b"|")
    if sep and head.isdigit():
        return int(head), rest
    return 1, value


def versioned(version: int, value: bytes) -> bytes:
    return b"%d|%s" % (version, value)
