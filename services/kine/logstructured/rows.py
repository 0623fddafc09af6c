"""Rows of the log as etcd sees them: key-values and events.

kine records no per-key version. Every live key reports version 1, which keeps
etcd's "version = 0 means absent" compares working. The one key whose version
matters, ``compact_rev_key`` (kube-apiserver's compactor compares its version), is
stored as ``compact_rev_key_apiserver`` with the value ``"<version>|<value>"``,
the way kine stores it, so its version counts up for real.

Lists turn thousands of rows into ``types.KeyValue`` per request, so ``key_value``
fills the frozen dataclass through its slot descriptors: the generated ``__init__``
goes through ``object.__setattr__`` by field name for each field, which costs twice
as much. The result is an ordinary ``KeyValue`` (same class, equal to one built
the usual way).
"""

from __future__ import annotations

import dataclasses

from services.kine import types
from services.kine.sqllog import log as sqllog

APISERVER_COMPACT_KEY = b"compact_rev_key"
STORED_COMPACT_KEY = b"compact_rev_key_apiserver"

_KV = types.KeyValue
# key_value below sets exactly these slots; fail at import if the contract's fields change.
assert tuple(f.name for f in dataclasses.fields(_KV)) == (
    "key", "value", "create_revision", "mod_revision", "version", "lease",
), "types.KeyValue changed: update rows.key_value"  # fmt: skip
_new = object.__new__
_set_key = _KV.key.__set__  # type: ignore[attr-defined]
_set_value = _KV.value.__set__  # type: ignore[attr-defined]
_set_create = _KV.create_revision.__set__  # type: ignore[attr-defined]
_set_mod = _KV.mod_revision.__set__  # type: ignore[attr-defined]
_set_version = _KV.version.__set__  # type: ignore[attr-defined]
_set_lease = _KV.lease.__set__  # type: ignore[attr-defined]


def key_value(
    key: bytes, value: bytes, create_revision: int, mod_revision: int, version: int, lease: int
) -> types.KeyValue:
    """``types.KeyValue(key, value, ...)``, built without the per-field setattr lookups."""
    kv = _new(_KV)
    _set_key(kv, key)
    _set_value(kv, value)
    _set_create(kv, create_revision)
    _set_mod(kv, mod_revision)
    _set_version(kv, version)
    _set_lease(kv, lease)
    return kv


def stored_name(key: bytes) -> bytes:
    return STORED_COMPACT_KEY if key == APISERVER_COMPACT_KEY else key


def to_kv(row: sqllog.Row, *, keys_only: bool = False) -> types.KeyValue:
    """The key-value a live row holds."""
    rid, name, created, _, create_revision, _, lease, value, _ = row
    if name == STORED_COMPACT_KEY:
        version, value = split_versioned(value or b"")
        return key_value(APISERVER_COMPACT_KEY, b"" if keys_only else value, rid if created else create_revision,
                         rid, version, lease)  # fmt: skip
    return key_value(name, b"" if keys_only or value is None else value, rid if created else create_revision,
                     rid, 1, lease)  # fmt: skip


def to_kvs(rows: list[sqllog.Row], *, keys_only: bool = False) -> list[types.KeyValue]:
    """``to_kv`` for each row, in one loop (the list path)."""
    out: list[types.KeyValue] = []
    append = out.append
    for row in rows:
        rid, name, created, _, create_revision, _, lease, value, _ = row
        if name == STORED_COMPACT_KEY:
            append(to_kv(row, keys_only=keys_only))
            continue
        kv = _new(_KV)
        _set_key(kv, name)
        _set_value(kv, b"" if keys_only or value is None else value)
        _set_create(kv, rid if created else create_revision)
        _set_mod(kv, rid)
        _set_version(kv, 1)
        _set_lease(kv, lease)
        append(kv)
    return out


def prev_kv(row: sqllog.Row) -> types.KeyValue | None:
    """The key-value this row replaced, rebuilt from the copy it carries."""
    if row.created or row.prev_revision == 0:
        return None
    return key_value(row.name, row.old_value or b"", row.create_revision, row.prev_revision, 1, row.lease)


def to_event(row: sqllog.Row) -> types.Event:
    if row.deleted:
        kv = key_value(row.name, b"", 0, row.id, 0, 0)
        return types.Event(types.EventType.DELETE, kv, prev_kv(row))
    return types.Event(types.EventType.PUT, to_kv(row), prev_kv(row))


def split_versioned(value: bytes) -> tuple[int, bytes]:
    head, sep, rest = value.partition(b"|")
    if sep and head.isdigit():
        return int(head), rest
    return 1, value


def versioned(version: int, value: bytes) -> bytes:
    return b"%d|%s" % (version, value)
