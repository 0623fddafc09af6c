"""Leader election on the in-memory API with a hand-driven clock.

Each candidate reaches the shared ``FakeApi`` through a ``Link`` that can be cut (a partition)
or made to yield between read and write (so two candidates really race on the same
resourceVersion).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.client import clock, errors, fake, leader, resources

LEASE = "kube-scheduler"


class Link:
    def __init__(self, api: fake.FakeApi) -> None:
        self.api = api
        self.down = False
        self.yield_after_get = False

    def _check(self) -> None:
        if self.down:
            raise errors.TransportError("connection refused")

    async def get(self, resource: Any, name: str, **kwargs: Any) -> dict[str, Any]:
        self._check()
        found = await self.api.get(resource, name, **kwargs)
        if self.yield_after_get:
            await asyncio.sleep(0)
        return found

    async def create(self, resource: Any, obj: Any, **kwargs: Any) -> dict[str, Any]:
        self._check()
        return await self.api.create(resource, obj, **kwargs)

    async def update(self, resource: Any, obj: Any, **kwargs: Any) -> dict[str, Any]:
        self._check()
        return await self.api.update(resource, obj, **kwargs)


class Candidate:
    def __init__(self, api: fake.FakeApi, fake_clock: clock.FakeClock, identity: str) -> None:
        self.link = Link(api)
        self.events: list[str] = []
        self.elector = leader.LeaderElector(
            self.link,  # type: ignore[arg-type]
            leader.ElectionConfig(name=LEASE, identity=identity),
            clock=fake_clock,
            on_started_leading=lambda: self.events.append("started"),
            on_stopped_leading=lambda: self.events.append("stopped"),
            on_new_leader=lambda who: self.events.append(f"leader {who}"),
        )


@pytest.fixture
def api() -> fake.FakeApi:
    return fake.FakeApi()


@pytest.fixture
def fake_clock() -> clock.FakeClock:
    return clock.FakeClock()


@pytest.fixture
async def pair(api: fake.FakeApi, fake_clock: clock.FakeClock) -> AsyncIterator[tuple[Candidate, Candidate]]:
    a, b = Candidate(api, fake_clock, "a"), Candidate(api, fake_clock, "b")
    yield a, b
    await a.elector.stop()
    await b.elector.stop()


async def lease(api: fake.FakeApi) -> dict[str, Any]:
    return (await api.get(resources.LEASES, LEASE, namespace="kube-system"))["spec"]


async def test_the_first_candidate_creates_the_lease_and_leads(
    api: fake.FakeApi, fake_clock: clock.FakeClock, pair: tuple[Candidate, Candidate]
) -> None:
    a, _ = pair
    await a.elector.start()
    await fake_clock.advance(0)
    assert a.elector.is_leader
    assert a.events == ["leader a", "started"]
    spec = await lease(api)
    assert spec["holderIdentity"] == "a"
    assert spec["leaseDurationSeconds"] == 15
    assert spec["leaseTransitions"] == 0
    assert spec["acquireTime"] == spec["renewTime"] == "2026-01-01T00:00:00.000000Z"


async def test_the_leader_renews_every_retry_period(
    api: fake.FakeApi, fake_clock: clock.FakeClock, pair: tuple[Candidate, Candidate]
) -> None:
    a, _ = pair
    await a.elector.start()
    await fake_clock.advance(2.5)
    spec = await lease(api)
    assert spec["renewTime"] == "2026-01-01T00:00:02.000000Z"
    assert spec["acquireTime"] == "2026-01-01T00:00:00.000000Z"
    assert spec["leaseTransitions"] == 0


async def test_a_second_candidate_waits_while_the_lease_is_renewed(
    fake_clock: clock.FakeClock, pair: tuple[Candidate, Candidate]
) -> None:
    a, b = pair
    await a.elector.start()
    await fake_clock.advance(0)
    await b.elector.start()
    await fake_clock.advance(120)
    assert a.elector.is_leader and not b.elector.is_leader
    assert b.elector.leader == "a"
    assert b.events == ["leader a"]


async def test_a_stopped_leader_releases_and_the_other_takes_over_at_once(
    api: fake.FakeApi, fake_clock: clock.FakeClock, pair: tuple[Candidate, Candidate]
) -> None:
    a, b = pair
    await a.elector.start()
    await fake_clock.advance(0)
    await b.elector.start()
    await fake_clock.advance(30)
    await a.elector.stop()
    assert a.events == ["leader a", "started", "stopped"]
    assert (await lease(api))["holderIdentity"] == ""
    await fake_clock.advance(leader.ElectionConfig(name="x", identity="y").retry_period * (1 + leader.JITTER))
    assert b.elector.is_leader
    spec = await lease(api)
    assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1


async def test_a_partitioned_leader_steps_down_before_the_other_takes_over(
    fake_clock: clock.FakeClock, pair: tuple[Candidate, Candidate]
) -> None:
    a, b = pair
    await a.elector.start()
    await fake_clock.advance(0)
    await b.elector.start()
    await fake_clock.advance(10)
    a.link.down = True
    cut = fake_clock.monotonic()
    stepped_down = took_over = None
    while took_over is None and fake_clock.monotonic() - cut < 60:
        await fake_clock.advance(0.25, step=0.25)
        assert not (a.elector.is_leader and b.elector.is_leader), "two leaders at once"
        if stepped_down is None and not a.elector.is_leader:
            stepped_down = fake_clock.monotonic() - cut
        if b.elector.is_leader:
            took_over = fake_clock.monotonic() - cut
    assert stepped_down is not None and stepped_down <= 10.0 + 2.0  # the renew deadline (+ one retry)
    # b counts the lease duration from when *it* saw the last renewal (one jittered poll late at
    # most), and notices the expiry at its next poll.
    poll = 2.0 * (1 + leader.JITTER)
    assert took_over is not None and 13.0 <= took_over <= 15.0 + 2 * poll
    assert a.events[-1] == "stopped"
    assert b.events[-1] == "started"


async def test_a_leader_that_lost_campaigns_again(
    fake_clock: clock.FakeClock, pair: tuple[Candidate, Candidate]
) -> None:
    a, _ = pair
    await a.elector.start()
    await fake_clock.advance(0)
    a.link.down = True
    await fake_clock.advance(15)
    assert not a.elector.is_leader
    a.link.down = False
    await fake_clock.advance(5)
    assert a.elector.is_leader
    assert a.events.count("started") == 2 and a.events.count("stopped") == 1


async def test_racing_candidates_for_an_expired_lease_yield_one_leader(
    api: fake.FakeApi, fake_clock: clock.FakeClock, pair: tuple[Candidate, Candidate]
) -> None:
    ghost = {"metadata": {"name": LEASE, "namespace": "kube-system"},
             "spec": {"holderIdentity": "ghost", "leaseDurationSeconds": 15, "leaseTransitions": 3}}  # fmt: skip
    await api.create(resources.LEASES, ghost)
    a, b = pair
    for c in pair:
        c.link.yield_after_get = True  # both read the same resourceVersion before either writes
        await c.elector.start()
    await fake_clock.advance(0)
    assert not a.elector.is_leader and not b.elector.is_leader, (
        "the ghost's lease is live until observed expired"
    )
    await fake_clock.advance(20)
    assert a.elector.is_leader != b.elector.is_leader
    spec = await lease(api)
    assert spec["holderIdentity"] in ("a", "b") and spec["leaseTransitions"] == 4
    conflicts = [verb for verb, res in api.requests if res == "leases" and verb == "update"]
    assert len(conflicts) >= 2


async def test_leading_runs_the_body_and_releases_on_exit(
    api: fake.FakeApi, fake_clock: clock.FakeClock
) -> None:
    elector = leader.LeaderElector(api, leader.ElectionConfig(name=LEASE, identity="a"), clock=fake_clock)
    async with elector.leading() as led:
        assert led is elector and elector.is_leader
        await fake_clock.advance(5)
    assert not elector.is_leader and elector.state is leader.State.STOPPED
    assert (await lease(api))["holderIdentity"] == ""


async def test_losing_the_lease_cancels_the_body_with_leadership_lost(
    fake_clock: clock.FakeClock, pair: tuple[Candidate, Candidate]
) -> None:
    a, _ = pair
    progress: list[str] = []

    async def lead() -> None:
        async with a.elector.leading():
            progress.append("leading")
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                progress.append("cancelled")
                raise

    body = asyncio.ensure_future(lead())
    await fake_clock.advance(1)
    assert progress == ["leading"]
    a.link.down = True
    await fake_clock.advance(12)
    with pytest.raises(leader.LeadershipLost):
        await asyncio.wait_for(body, 1)
    assert progress == ["leading", "cancelled"]


async def test_someone_elses_cancellation_passes_through_leading(
    fake_clock: clock.FakeClock, api: fake.FakeApi
) -> None:
    elector = leader.LeaderElector(api, leader.ElectionConfig(name=LEASE, identity="a"), clock=fake_clock)

    async def lead() -> None:
        async with elector.leading():
            await asyncio.sleep(3600)

    body = asyncio.ensure_future(lead())
    await fake_clock.advance(1)
    assert elector.is_leader
    body.cancel()
    with pytest.raises(asyncio.CancelledError):
        await body
    assert (await lease(api))["holderIdentity"] == ""


def test_the_timing_must_leave_room_to_step_down() -> None:
    with pytest.raises(ValueError):
        leader.ElectionConfig(name="x", identity="a", lease_duration=10, renew_deadline=10)
    with pytest.raises(ValueError):
        leader.ElectionConfig(name="x", identity="a", renew_deadline=2, retry_period=2)
    with pytest.raises(ValueError):
        leader.ElectionConfig(name="", identity="a")
    assert leader.default_identity().count("_") >= 1
