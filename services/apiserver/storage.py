"""Objects in the store: JSON under kube-apiserver's keys, resourceVersion = mod revision.

Objects are stored as compact JSON without ``metadata.resourceVersion`` (the
revision of the row is the version; storing it too would make every write
carry a stale copy). Reads put it back. Writes use kube-apiserver's transaction
shapes: create if absent (mod == 0), update or delete if unchanged since the
revision the caller read (mod == rv), so a lost race is a 409, never a lost
update.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from services.kine import types
from services.machinery import errors


def decode(value: bytes, revision: int) -> dict[str, Any]:
    obj = orjson.loads(value)
    obj.setdefault("metadata", {})["resourceVersion"] = str(revision)
    return obj


def encode(obj: dict[str, Any]) -> bytes:
    meta = obj.get("metadata") or {}
    if "resourceVersion" in meta:
        meta = {k: v for k, v in meta.items() if k != "resourceVersion"}
        obj = {**obj, "metadata": meta}
    return orjson.dumps(obj)


@dataclasses.dataclass(frozen=True, slots=True)
class Stored:
    obj: dict[str, Any]
    revision: int


class ObjectStore:
    """Typed reads and compare-and-swap writes of API objects over a ``types.Backend``."""

    def __init__(self, backend: types.Backend) -> None:
        self.backend = backend

    async def get(self, key: str, *, revision: int = 0) -> Stored | None:
        result = await self.backend.range(key.encode(), revision=revision)
        if not result.kvs:
            return None
        kv = result.kvs[0]
        return Stored(decode(kv.value, kv.mod_revision), kv.mod_revision)

    async def list(
        self, prefix: str, *, revision: int = 0, limit: int = 0, start: str = ""
    ) -> tuple[list[Stored], int, bool, int]:
        """(objects, revision served, more, total count) of keys under ``prefix`` from ``start``."""
        begin = (start or prefix).encode()
        end = _prefix_end(prefix.encode())
        result = await self.backend.range(begin, end, revision=revision, limit=limit)
        items = [Stored(decode(kv.value, kv.mod_revision), kv.mod_revision) for kv in result.kvs]
        return items, result.revision, result.more, result.count

    async def create(self, key: str, obj: dict[str, Any], *, lease: int = 0) -> int | None:
        """Store a new object; return its revision, or None when the key exists."""
        k = key.encode()
        txn = types.Txn(
            compare=[types.Compare(k, "mod", "=", 0)],
            success=[types.PutOp(k, encode(obj), lease=lease)],
            failure=[],
        )
        result = await self.backend.txn(txn)
        return result.revision if result.succeeded else None

    async def update(self, key: str, obj: dict[str, Any], *, expected: int, lease: int = 0) -> int | None:
        """Replace the object if its revision is still ``expected``; None when it changed or vanished."""
        k = key.encode()
        txn = types.Txn(
            compare=[types.Compare(k, "mod", "=", expected)],
            success=[types.PutOp(k, encode(obj), lease=lease)],
            failure=[],
        )
        result = await self.backend.txn(txn)
        return result.revision if result.succeeded else None

    async def delete(self, key: str, *, expected: int) -> int | None:
        k = key.encode()
        txn = types.Txn(
            compare=[types.Compare(k, "mod", "=", expected)], success=[types.DeleteOp(k)], failure=[]
        )
        result = await self.backend.txn(txn)
        return result.revision if result.succeeded else None


def _prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key with this prefix."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return b"\x00"
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


def prefix_end(prefix: str) -> bytes:
    return _prefix_end(prefix.encode())


def store_unavailable(exc: types.StoreError) -> errors.ApiError:
    if isinstance(exc, types.CompactedError):
        return errors.gone(f"The resourceVersion for the provided list is too old. ({exc})")
    if isinstance(exc, types.FutureRevisionError):
        return errors.timeout("Too large resource version", retry_after=1)
    return errors.service_unavailable(f"the storage is unavailable: {exc}")
