"""Informers against the in-memory API: sync, ordered handlers, re-watch, relist on 410, backoff."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.client import errors, fake, informer, resources, store

CM = resources.CONFIGMAPS


def cm(name: str, namespace: str = "default", **data: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}, "data": dict(data)}


class Recorder:
    """Handlers that write down what they were told, in order."""

    def __init__(self, tag: str = "", log: list[tuple[str, ...]] | None = None) -> None:
        self.tag = tag
        self.log: list[tuple[str, ...]] = [] if log is None else log

    def on_add(self, obj: dict[str, Any]) -> None:
        self.log.append((self.tag + "add", obj["metadata"]["name"]))

    def on_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        self.log.append(
            (self.tag + "update", new["metadata"]["name"], old["data"].get("v", ""), new["data"].get("v", ""))
        )

    def on_delete(self, obj: dict[str, Any]) -> None:
        self.log.append((self.tag + "delete", obj["metadata"]["name"]))

    def register(self, inf: informer.Informer) -> informer.Handlers:
        return inf.add_handlers(on_add=self.on_add, on_update=self.on_update, on_delete=self.on_delete)


async def eventually(condition: Any, *, within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.001)


@pytest.fixture
async def api() -> fake.FakeApi:
    return fake.FakeApi()


@pytest.fixture
async def running(api: fake.FakeApi) -> AsyncIterator[informer.Informer]:
    inf = informer.Informer(api, CM, backoff=informer.Backoff(initial=0.001, cap=0.004))
    yield inf
    await inf.stop()


async def test_start_returns_synced_with_the_listed_objects(
    api: fake.FakeApi, running: informer.Informer
) -> None:
    await api.create(CM, cm("a"))
    await api.create(CM, cm("b", "other"))
    rec = Recorder()
    rec.register(running)
    assert not running.has_synced
    await running.start()
    assert running.has_synced and running.state is informer.State.RUNNING
    assert sorted(running.store.keys()) == ["default/a", "other/b"]
    assert sorted(rec.log) == [("add", "a"), ("add", "b")]
    assert running.resource_version == str(api.revision)


async def test_handlers_hear_add_update_delete_in_order(
    api: fake.FakeApi, running: informer.Informer
) -> None:
    log: list[tuple[str, ...]] = []
    Recorder("1:", log).register(running)
    Recorder("2:", log).register(running)
    await running.start()
    await api.create(CM, cm("a", v="1"))
    await api.patch(CM, "a", {"data": {"v": "2"}}, namespace="default")
    await api.delete(CM, "a", namespace="default")
    await eventually(lambda: len(log) == 6)
    assert log == [
        ("1:add", "a"), ("2:add", "a"),
        ("1:update", "a", "1", "2"), ("2:update", "a", "1", "2"),
        ("1:delete", "a"), ("2:delete", "a"),
    ]  # fmt: skip
    assert len(running.store) == 0


async def test_the_store_holds_the_change_when_handlers_run(
    api: fake.FakeApi, running: informer.Informer
) -> None:
    seen: list[str | None] = []

    def on_update(old: dict[str, Any], new: dict[str, Any]) -> None:
        cached = running.store.get("default/a")
        seen.append(cached["data"]["v"] if cached else None)

    running.add_handlers(on_update=on_update)
    await running.start()
    await api.create(CM, cm("a", v="1"))
    await api.patch(CM, "a", {"data": {"v": "2"}}, namespace="default")
    await eventually(lambda: seen)
    assert seen == ["2"]


async def test_a_handler_added_after_sync_is_told_about_cached_objects_first(
    api: fake.FakeApi, running: informer.Informer
) -> None:
    await api.create(CM, cm("a"))
    await running.start()
    rec = Recorder()
    registration = rec.register(running)
    assert rec.log == [("add", "a")]
    await api.create(CM, cm("b"))
    await eventually(lambda: len(rec.log) == 2)
    running.remove_handlers(registration)
    await api.create(CM, cm("c"))
    await eventually(lambda: "default/c" in running.store)
    assert rec.log == [("add", "a"), ("add", "b")]


async def test_a_failing_handler_does_not_stop_the_others(
    api: fake.FakeApi, running: informer.Informer
) -> None:
    def broken(obj: dict[str, Any]) -> None:
        raise RuntimeError("bug")

    running.add_handlers(on_add=broken)
    rec = Recorder()
    rec.register(running)
    await running.start()
    await api.create(CM, cm("a"))
    await api.create(CM, cm("b"))
    await eventually(lambda: len(rec.log) == 2)
    assert running.state is informer.State.RUNNING


async def test_a_watch_that_ends_is_resumed_from_the_last_resource_version(
    api: fake.FakeApi, running: informer.Informer
) -> None:
    rec = Recorder()
    rec.register(running)
    await running.start()
    await api.create(CM, cm("a"))
    await eventually(lambda: len(rec.log) == 1)
    api.end_watches()  # the server's timeout
    await api.create(CM, cm("b"))  # while no watch is open
    await eventually(lambda: len(rec.log) == 2)
    assert rec.log == [("add", "a"), ("add", "b")]
    assert [verb for verb, _ in api.requests].count("list") == 1, "a clean end re-watches, never relists"
    assert [verb for verb, _ in api.requests].count("watch") == 2


async def test_an_expired_resource_version_relists_and_reports_the_difference(
    api: fake.FakeApi, running: informer.Informer
) -> None:
    await api.create(CM, cm("stays", v="1"))
    await api.create(CM, cm("changes", v="1"))
    await api.create(CM, cm("goes"))
    rec = Recorder()
    rec.register(running)
    await running.start()
    rec.log.clear()
    # While the watch is down, things change and the history is compacted away.
    api.fail_next("watch", errors.TransportError("connection reset"))
    api.end_watches()
    await api.patch(CM, "changes", {"data": {"v": "2"}}, namespace="default")
    await api.delete(CM, "goes", namespace="default")
    await api.create(CM, cm("new"))
    api.compact()
    await eventually(lambda: len(rec.log) == 3)
    assert sorted(rec.log) == [("add", "new"), ("delete", "goes"), ("update", "changes", "1", "2")]
    assert sorted(running.store.keys()) == ["default/changes", "default/new", "default/stays"]
    assert [verb for verb, _ in api.requests].count("list") == 2


async def test_list_errors_are_retried_with_backoff(api: fake.FakeApi, running: informer.Informer) -> None:
    api.fail_next("list", errors.TransportError("refused"), times=2)
    api.fail_next("list", errors.ApiError(503, "ServiceUnavailable", "starting"))
    await api.create(CM, cm("a"))
    await asyncio.wait_for(running.start(), 2)
    assert [verb for verb, _ in api.requests].count("list") == 4
    assert "default/a" in running.store


async def test_a_namespaced_selected_informer_sees_only_its_objects(api: fake.FakeApi) -> None:
    inf = informer.Informer(api, CM, namespace="ns", label_selector="app=web")
    web = cm("web", "ns")
    web["metadata"]["labels"] = {"app": "web"}
    await api.create(CM, web)
    await api.create(CM, cm("other", "ns"))
    await api.create(CM, {**web, "metadata": {**web["metadata"], "namespace": "elsewhere"}})
    async with inf:
        assert inf.store.keys() == ["ns/web"]
        late = {**web, "metadata": {**web["metadata"], "name": "web2"}}
        await api.create(CM, late)
        await api.create(CM, cm("plain", "ns"))
        await eventually(lambda: len(inf.store) == 2)
        assert sorted(inf.store.keys()) == ["ns/web", "ns/web2"]


async def test_stop_ends_the_informer_and_wait_synced_reports_it(api: fake.FakeApi) -> None:
    api.fail_next("list", errors.TransportError("refused"), times=1000)
    inf = informer.Informer(api, CM, backoff=informer.Backoff(initial=0.001, cap=0.001))
    starting = asyncio.ensure_future(inf.start())
    await asyncio.sleep(0.01)
    await inf.stop()
    with pytest.raises(errors.ClientError):
        await starting
    await inf.stop()  # idempotent
    assert inf.state is informer.State.STOPPED


async def test_the_factory_shares_one_informer_per_resource(api: fake.FakeApi) -> None:
    await api.create(
        resources.PODS, {"metadata": {"name": "p", "namespace": "default"}, "spec": {"nodeName": "n1"}}
    )
    factory = informer.InformerFactory(api)
    pods_a = factory.informer(resources.PODS, indexers={"node": store.pods_by_node})
    pods_b = factory.informer(resources.PODS, indexers={"node": store.pods_by_node})
    nodes = factory.informer(resources.NODES)
    assert pods_a is pods_b and pods_a is not nodes
    assert factory.informer(resources.PODS, field_selector="spec.nodeName=n1") is not pods_a
    async with factory:
        assert factory.has_synced
        assert [p["metadata"]["name"] for p in pods_a.store.by_index("node", "n1")] == ["p"]
    assert all(i.state is informer.State.STOPPED for i in factory.informers)
    assert [verb for verb, res in api.requests if res == "pods"].count("list") == 2  # two selectors


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    backoff = informer.Backoff(initial=1.0, cap=4.0, jitter=0.0)
    assert [backoff.next() for _ in range(4)] == [1.0, 2.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next() == 1.0
