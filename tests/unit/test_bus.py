"""The in-memory bus: NATS subject semantics, delivery, isolation, and connect() by scheme."""

from __future__ import annotations

import asyncio
import logging

import pytest

import services.bus
from services.bus import memory, types


class Inbox:
    """A handler that records what it receives and lets a test wait for a count."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes]] = []
        self._changed = asyncio.Event()

    async def __call__(self, subject: str, payload: bytes) -> None:
        self.received.append((subject, payload))
        self._changed.set()

    async def wait_for(self, count: int, *, within: float = 2.0) -> list[tuple[str, bytes]]:
        async with asyncio.timeout(within):
            while len(self.received) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.received


async def settle() -> None:
    """Let delivery tasks run (they are the only other runnable tasks)."""
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("kine.changes", "kine.changes", True),
        ("kine.changes", "kine.change", False),
        ("kine.*", "kine.changes", True),
        ("kine.*", "kine", False),
        ("kine.*", "kine.a.b", False),
        ("*.changes", "kine.changes", True),
        ("kine.>", "kine.a", True),
        ("kine.>", "kine.a.b.c", True),
        ("kine.>", "kine", False),
        (">", "anything.at.all", True),
        ("node.*.exec.>", "node.n1.exec.abc.stdin", True),
        ("node.*.exec.>", "node.n1.logs.abc", False),
    ],
)
def test_subject_matching(pattern: str, subject: str, expected: bool) -> None:
    assert (
        memory.subject_matches(
            memory.split_subject(pattern, wildcards=True), memory.split_subject(subject, wildcards=False)
        )
        is expected
    )


@pytest.mark.parametrize("subject", ["", "a..b", ".a", "a.", "a b", "a.>.b"])
def test_invalid_subjects_are_refused(subject: str) -> None:
    with pytest.raises(types.BusError):
        memory.split_subject(subject, wildcards=True)


async def test_publishing_to_a_wildcard_is_refused() -> None:
    bus = memory.connect("memory://wild")
    with pytest.raises(types.BusError, match="wildcard"):
        await bus.publish("kine.*", b"x")
    await bus.close()


async def test_buses_on_one_url_share_a_broker_and_wildcards_route() -> None:
    publisher = await services.bus.connect("memory://shared-test")
    subscriber = await services.bus.connect("memory://shared-test")
    exact, star, tail = Inbox(), Inbox(), Inbox()
    await subscriber.subscribe("kine.changes", exact)
    await subscriber.subscribe("kine.*", star)
    await subscriber.subscribe("kine.>", tail)

    await publisher.publish("kine.changes", b"42")
    await publisher.publish("kine.x.y", b"deep")

    assert await exact.wait_for(1) == [("kine.changes", b"42")]
    assert await star.wait_for(1) == [("kine.changes", b"42")]
    assert await tail.wait_for(2) == [("kine.changes", b"42"), ("kine.x.y", b"deep")]
    await publisher.close()
    await subscriber.close()


async def test_different_names_are_isolated() -> None:
    one = await services.bus.connect("memory://one")
    two = await services.bus.connect("memory://two")
    inbox = Inbox()
    await two.subscribe(">", inbox)
    await one.publish("kine.changes", b"1")
    await settle()
    assert inbox.received == []
    await one.close()
    await two.close()


async def test_delivery_keeps_publish_order() -> None:
    bus = memory.connect("memory://order")
    inbox = Inbox()
    await bus.subscribe("n", inbox)
    for number in range(100):
        await bus.publish("n", str(number).encode())
    received = await inbox.wait_for(100)
    assert [payload for _, payload in received] == [str(n).encode() for n in range(100)]
    await bus.close()


async def test_unsubscribe_stops_delivery() -> None:
    bus = memory.connect("memory://unsub")
    inbox = Inbox()
    subscription = await bus.subscribe("a", inbox)
    await bus.publish("a", b"1")
    await inbox.wait_for(1)
    await subscription.unsubscribe()
    await bus.publish("a", b"2")
    await settle()
    assert inbox.received == [("a", b"1")]
    await bus.close()


async def test_a_handler_may_unsubscribe_itself() -> None:
    bus = memory.connect("memory://self-unsub")
    seen: list[bytes] = []
    subscription: types.Subscription | None = None

    async def once(subject: str, payload: bytes) -> None:
        seen.append(payload)
        assert subscription is not None
        await subscription.unsubscribe()

    subscription = await bus.subscribe("a", once)
    await bus.publish("a", b"1")
    await settle()
    await bus.publish("a", b"2")
    await settle()
    assert seen == [b"1"]
    await bus.close()


async def test_a_failing_handler_is_logged_and_delivery_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    bus = memory.connect("memory://failing")
    inbox = Inbox()

    async def flaky(subject: str, payload: bytes) -> None:
        if payload == b"bad":
            raise ValueError("boom")
        await inbox(subject, payload)

    await bus.subscribe("a", flaky)
    with caplog.at_level(logging.ERROR, logger="services.bus.memory"):
        await bus.publish("a", b"bad")
        await bus.publish("a", b"good")
        await inbox.wait_for(1)
    assert inbox.received == [("a", b"good")]
    assert "bus handler for a failed" in caplog.text
    await bus.close()


async def test_a_slow_subscriber_drops_instead_of_blocking_the_publisher() -> None:
    bus = memory.connect("memory://slow", max_pending=2)
    release = asyncio.Event()

    async def stuck(subject: str, payload: bytes) -> None:
        await release.wait()

    subscription = await bus.subscribe("a", stuck)
    for number in range(10):
        await bus.publish("a", str(number).encode())  # never blocks
    assert isinstance(subscription, memory.MemorySubscription)
    assert subscription.dropped >= 7  # two queued, at most one taken by the handler
    release.set()
    await bus.close()


async def test_a_closed_bus_refuses_and_stops_delivering() -> None:
    publisher = memory.connect("memory://closing")
    subscriber = memory.connect("memory://closing")
    inbox = Inbox()
    await subscriber.subscribe("a", inbox)
    await subscriber.close()
    await subscriber.close()  # idempotent
    await publisher.publish("a", b"1")
    await settle()
    assert inbox.received == []
    with pytest.raises(types.BusError, match="closed"):
        await subscriber.publish("a", b"2")
    await publisher.close()


async def test_connect_rejects_unknown_schemes_without_showing_credentials() -> None:
    with pytest.raises(types.BusError) as info:
        await services.bus.connect("redis://user:hunter2@localhost:6379")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        ("nats://k3s-server:s3cret@127.0.0.1:1234", "nats://k3s-server:***@127.0.0.1:1234"),
        ("nats://tok3n@127.0.0.1:1234", "nats://***@127.0.0.1:1234"),
        ("mysql://root:p@ss/w@tcp(db:3306)/k3s", "mysql://root:***@tcp(db:3306)/k3s"),
        ("failed on nats://u:pw@h:1 and tls://v:pw2@h:2", "failed on nats://u:***@h:1 and tls://v:***@h:2"),
    ],
)
def test_redact_url_hides_passwords_and_tokens(url: str, shown: str) -> None:
    assert services.bus.redact_url(url) == shown
