"""Compaction of a real etcd, as kube-apiserver does it (kine compacts itself).

Every ``interval`` (5 minutes, kube-apiserver's ``--etcd-compaction-interval``) each API server
tries to bump the key ``compact_rev_key`` with a compare-and-swap on its version. The one that wins
compacts etcd to the revision it recorded in the round before, so history older than one interval
goes, watch caches that lag less than that lose nothing, and with several API servers exactly one
compacts per round (the others see the version moved and only learn it).
"""

from __future__ import annotations

import asyncio
import logging

from services.kine import types

log = logging.getLogger(__name__)

KEY = b"compact_rev_key"
INTERVAL = 300.0


async def run(backend: types.Backend, *, interval: float = INTERVAL) -> None:
    """Compact forever (a task the API server owns and cancels)."""
    version, revision = 0, 0
    while True:
        await asyncio.sleep(interval)
        try:
            version, revision = await compact_once(backend, version=version, previous=revision)
        except types.StoreError as exc:  # etcd away for a moment: try again next round
            log.warning("etcd compaction: %s", exc)


async def compact_once(backend: types.Backend, *, version: int, previous: int) -> tuple[int, int]:
    """One round: returns the (version, revision) to remember for the next one."""
    current = await backend.current_revision()
    result = await backend.txn(types.Txn(
        compare=[types.Compare(KEY, "version", "=", version)],
        success=[types.PutOp(KEY, str(current).encode())],
        failure=[types.RangeOp(KEY)],
    ))  # fmt: skip
    if not result.succeeded:
        kvs = result.responses[0].kvs if isinstance(result.responses[0], types.RangeResult) else []
        return (kvs[0].version if kvs else 0), current
    if previous:
        try:
            await backend.compact(previous)
            log.info("etcd compacted to revision %d", previous)
        except types.CompactedError:
            pass  # another server got there first
    return version + 1, current
