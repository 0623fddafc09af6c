"""ControllerRevision helpers against the in-memory API: hashing, reuse, rollback, collisions, history."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.client import fake, informer, resources
from services.controllers import revisions

CR = resources.CONTROLLERREVISIONS


def daemonset(image: str = "nginx:1", uid: str = "ds-uid") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": "default", "uid": uid, "generation": 1},
        "spec": {"template": {"metadata": {"labels": {"app": "agent"}},
                              "spec": {"containers": [{"name": "c", "image": image}]}}},
    }  # fmt: skip


async def settle() -> None:
    for _ in range(30):
        await asyncio.sleep(0)


@pytest.fixture
async def env() -> Any:
    api = fake.FakeApi()
    async with informer.Informer(api, CR) as inf:
        yield api, inf


def test_hash_is_stable_and_label_safe() -> None:
    data = revisions.template_patch(daemonset())
    first = revisions.compute_hash(data)
    assert first == revisions.compute_hash(revisions.template_patch(daemonset()))
    assert first != revisions.compute_hash(data, 1)
    assert first != revisions.compute_hash(revisions.template_patch(daemonset("nginx:2")))
    assert set(first) <= set("bcdfghjklmnpqrstvwxz2456789") and len(first) <= 10


def test_template_round_trip() -> None:
    owner = daemonset()
    data = revisions.template_patch(owner)
    assert data["spec"]["template"]["$patch"] == "replace"
    assert revisions.template_of({"data": data}) == owner["spec"]["template"]


async def test_sync_creates_then_reuses(env: Any) -> None:
    api, inf = env
    owner = daemonset()
    first = await revisions.sync(api, inf.store, owner)
    rev = first.update
    assert rev["revision"] == 1
    assert rev["metadata"]["name"] == f"agent-{first.update_hash}"
    assert rev["metadata"]["labels"] == {"app": "agent", "controller-revision-hash": first.update_hash}
    assert rev["metadata"]["ownerReferences"][0]["uid"] == "ds-uid"
    assert rev["metadata"]["ownerReferences"][0]["controller"] is True
    await settle()
    again = await revisions.sync(api, inf.store, owner)
    assert again.update["metadata"]["name"] == rev["metadata"]["name"]
    assert [v for v, r in api.requests if r == "controllerrevisions"].count("create") == 1


async def test_rollback_renumbers_the_old_revision(env: Any) -> None:
    api, inf = env
    one = await revisions.sync(api, inf.store, daemonset("nginx:1"))
    await settle()
    two = await revisions.sync(api, inf.store, daemonset("nginx:2"))
    await settle()
    assert two.update["revision"] == 2
    back = await revisions.sync(api, inf.store, daemonset("nginx:1"))
    assert back.update["metadata"]["name"] == one.update["metadata"]["name"]
    assert back.update["revision"] == 3


async def test_collision_is_reported(env: Any) -> None:
    api, inf = env
    owner = daemonset()
    data = revisions.template_patch(owner)
    clash = revisions.new_revision(owner, {"other": True}, number=1, hash_=revisions.compute_hash(data))
    await api.create(CR, clash)  # same name, other data, and not (yet) in the cache
    with pytest.raises(revisions.Collision):
        await revisions.sync(api, inf.store, owner)


async def test_truncate_keeps_the_newest_and_those_in_use(env: Any) -> None:
    api, inf = env
    history = []
    for i in range(5):
        history.append((await revisions.sync(api, inf.store, daemonset(f"nginx:{i}"))).update)
        await settle()
    in_use = history[0]["metadata"]["name"]
    await revisions.truncate(api, history, keep={in_use}, limit=2)
    left = sorted(name for (_r, _ns, name) in api.objects)
    expected = sorted([in_use, history[3]["metadata"]["name"], history[4]["metadata"]["name"]])
    assert left == expected
