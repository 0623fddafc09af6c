"""No acknowledged write is lost: kill -9 kine mid-stream, restart it, find every write.

kine runs as users run it (the CLI, SQLite in a data dir). Several clients, each on
its own connection, send kube-apiserver's create transaction for distinct keys and
record every acknowledged write with the revision the server answered. After a set
number of acknowledgements kine gets SIGKILL while writes are still in flight;
kine restarts on the same data dir, and every acknowledged key must be there at
exactly its acknowledged revision. Writes that were in flight may or may not have
landed: only acknowledgements are promises.

The second test runs two kine processes on one PostgreSQL (and MariaDB) database,
as two K3s servers do: compare-and-swap must have one winner across both, and a watch on one
must see writes made through the other (through the change bus if wired, otherwise
the fallback poll).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import etcd_client
from tests.e2e import conftest as e2e

WRITERS = 8
# Acknowledged writes before each kill -9; each round writes under its own prefix.
KILL_POINTS = (1, 150, 600)
DEADLINE = 30.0  # seconds for an expected event or for writers to notice the kill
NO_COMPACTION = ("--compact-interval", "0")
# Two processes racing on one key: a lost race is timing-dependent, so run many rounds.
CAS_ROUNDS = 50
CAS_CONTENDERS = 16  # keep all history, so a watch from revision 1 sees it all


@dataclasses.dataclass
class Round:
    prefix: bytes
    kill_after: int
    acked: dict[bytes, int] = dataclasses.field(default_factory=dict)  # key -> acknowledged revision
    enough: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


async def write_until_failure(endpoint: str, round_: Round, writer: int) -> None:
    """Create distinct keys one after another until the server goes away."""
    async with etcd_client.EtcdClient(endpoint, timeout=DEADLINE) as client:
        for i in range(1_000_000):
            key = round_.prefix + b"%d/%d" % (writer, i)
            try:
                outcome = await client.create(key, b"value of " + key)
            except etcd_client.EtcdError:
                return  # killed: this write is unacknowledged
            assert outcome.succeeded, f"create of a fresh key {key!r} failed"
            round_.acked[key] = outcome.revision
            if len(round_.acked) >= round_.kill_after:
                round_.enough.set()


async def kill_mid_stream(kine: e2e.KineProcess, round_: Round) -> None:
    writers = [
        asyncio.create_task(write_until_failure(kine.endpoint, round_, n), name=f"writer {n}")
        for n in range(WRITERS)
    ]
    try:
        await asyncio.wait_for(round_.enough.wait(), DEADLINE)
        kine.kill()
        await asyncio.wait_for(asyncio.gather(*writers), DEADLINE)
    finally:
        for task in writers:
            task.cancel()


async def check_acknowledged(client: etcd_client.EtcdClient, rounds: list[Round]) -> None:
    listing = await client.prefix(b"/durable/")
    stored = {kv.key: kv.mod_revision for kv in listing.kvs}
    for round_ in rounds:
        assert len(round_.acked) >= round_.kill_after > 0
        lost = {key: rev for key, rev in round_.acked.items() if stored.get(key) != rev}
        assert not lost, (
            f"{len(lost)} of {len(round_.acked)} acknowledged writes lost or moved: {list(lost.items())[:5]}"
        )
    # Revisions only ever increase: the whole history, replayed by a watch from revision 1.
    async with client.watch(b"/durable/", etcd_client.prefix_end(b"/durable/"), start_revision=1) as watch:
        events: list[tuple[bytes, int]] = []
        async with asyncio.timeout(DEADLINE):
            async for event in watch:
                events.append((event.kv.key, event.kv.mod_revision))
                if len(events) == len(stored):
                    break
    revisions = [rev for _, rev in events]
    assert revisions == sorted(set(revisions)), "watch revisions must strictly increase"
    assert dict(events) == stored
    # A fresh write lands above everything acknowledged before the kill.
    fresh = await client.create(b"/fresh/%d" % len(rounds), b"after restart")
    assert fresh.succeeded
    assert fresh.revision > max(rev for round_ in rounds for rev in round_.acked.values())


async def test_kill_9_loses_no_acknowledged_write(tmp_path: Path) -> None:
    kine = e2e.KineProcess(
        data_dir=tmp_path / "kine", log_path=tmp_path / "kine.log", extra_args=NO_COMPACTION
    )
    rounds: list[Round] = []
    try:
        kine.start()
        for n, kill_after in enumerate(KILL_POINTS):
            rounds.append(Round(prefix=b"/durable/%d/" % n, kill_after=kill_after))
            await kill_mid_stream(kine, rounds[-1])
            kine.start()  # same data dir, as after a crash
            async with etcd_client.EtcdClient(kine.endpoint, timeout=DEADLINE) as client:
                await check_acknowledged(client, rounds)
        print("acknowledged writes per round:", [len(r.acked) for r in rounds])
    finally:
        kine.stop()
        kine.print_log()


# -- two kine processes on one SQL database ----------------------------------------------


@contextlib.contextmanager
def two_kines(tmp_path: Path, kind: str) -> Iterator[tuple[e2e.KineProcess, e2e.KineProcess]]:
    with e2e.datastore(kind) as endpoint:
        a, b = (
            e2e.KineProcess(
                name=f"kine-{n}",
                data_dir=tmp_path / n,
                datastore_endpoint=endpoint,
                log_path=tmp_path / f"kine-{n}.log",
                extra_args=NO_COMPACTION,
            )
            for n in ("a", "b")
        )
        with e2e.running(a), e2e.running(b):
            yield a, b


@pytest.mark.parametrize(
    "kind",
    [pytest.param("postgres", marks=pytest.mark.postgres), pytest.param("mysql", marks=pytest.mark.mysql)],
)
async def test_two_kines_on_one_database(tmp_path: Path, kind: str) -> None:
    with two_kines(tmp_path, kind) as (a, b):
        async with (
            etcd_client.EtcdClient(a.endpoint, timeout=DEADLINE) as via_a,
            etcd_client.EtcdClient(b.endpoint, timeout=DEADLINE) as via_b,
        ):
            await check_one_cas_winner(via_a, via_b)
            await check_watch_across(watcher=via_a, writer=via_b, key=b"/across/b-to-a")
            await check_watch_across(watcher=via_b, writer=via_a, key=b"/across/a-to-b")


async def check_one_cas_winner(via_a: etcd_client.EtcdClient, via_b: etcd_client.EtcdClient) -> None:
    """Every round: CAS_CONTENDERS updates expecting the same revision, half through each process."""
    for round_ in range(CAS_ROUNDS):
        key = b"/race/%d" % round_
        created = await via_a.create(key, b"initial")
        assert created.succeeded
        outcomes = await asyncio.gather(
            *(
                (via_a if n % 2 else via_b).update(key, b"winner %d" % n, mod_revision=created.revision)
                for n in range(CAS_CONTENDERS)
            )
        )
        winners = [n for n, outcome in enumerate(outcomes) if outcome.succeeded]
        assert len(winners) == 1, (
            f"round {round_}: {len(winners)} compare-and-swaps on revision {created.revision} succeeded: "
            f"{[(n, outcomes[n].revision) for n in winners]}"
        )
        (winner,) = winners
        expected = (b"winner %d" % winner, outcomes[winner].revision)
        for outcome in outcomes:
            if not outcome.succeeded:
                assert outcome.current is not None
                assert (outcome.current.value, outcome.current.mod_revision) == expected
        for client in (via_a, via_b):
            current = await client.get(key)
            assert current is not None
            assert (current.value, current.mod_revision) == expected


async def check_watch_across(
    *, watcher: etcd_client.EtcdClient, writer: etcd_client.EtcdClient, key: bytes
) -> None:
    start = (await watcher.range(key)).header.revision + 1
    async with watcher.watch(key, start_revision=start, prev_kv=True) as watch:
        written = await writer.put(key, b"written elsewhere")
        async with asyncio.timeout(DEADLINE):
            event = await anext(aiter(watch))
    assert (event.kv.key, event.kv.value) == (key, b"written elsewhere")
    assert event.kv.mod_revision == written.header.revision
