"""The garbage collector against the in-memory API: Background, Orphan and Foreground propagation.

``FakeApi`` has no finalizers of its own: a delete removes at once. Owners being deleted with a
finalizer are therefore staged by hand (``deleting``), as the API server would leave them, and
the tests check what the collector does about them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from services.client import events, fake, informer, resources
from services.controllers import base, garbagecollector, podutil

PODS, RS, CM = resources.PODS, resources.REPLICASETS, resources.CONFIGMAPS
NS = "default"


@contextlib.asynccontextmanager
async def running(api: fake.FakeApi) -> AsyncIterator[garbagecollector.GarbageCollector]:
    factory = informer.InformerFactory(api)
    recorder = events.EventRecorder(api, component="garbage-collector-controller")
    controller = garbagecollector.GarbageCollector()
    controller.setup(base.ControllerContext(api=api, informers=factory, recorder=recorder, settings=None))
    await recorder.start()
    await factory.start()
    task = asyncio.create_task(controller.run())
    try:
        yield controller
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await factory.stop()
        await recorder.stop()


async def eventually(check: Callable[[], Any], *, within: float = 3.0) -> Any:
    deadline = time.monotonic() + within
    while not (result := check()):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)
    return result


def ref(
    owner: dict[str, Any], *, kind: str = "ReplicaSet", api_version: str = "apps/v1", block: bool = True
) -> dict[str, Any]:
    made = podutil.owner_reference(owner, api_version=api_version, kind=kind)
    made["blockOwnerDeletion"] = block
    return made


async def dependent(api: fake.FakeApi, name: str, *owners: dict[str, Any]) -> dict[str, Any]:
    return await api.create(
        PODS, {"metadata": {"name": name, "namespace": NS, "ownerReferences": list(owners)}}
    )


async def deleting(api: fake.FakeApi, resource: Any, name: str, finalizer: str) -> None:
    body = {"metadata": {"deletionTimestamp": podutil.format_time(podutil.now()), "finalizers": [finalizer]}}
    await api.patch(resource, name, body, namespace=NS)


def exists(api: fake.FakeApi, resource: Any, name: str) -> bool:
    return (resource, NS, name) in api.objects


async def test_dependents_of_a_deleted_owner_are_deleted() -> None:
    api = fake.FakeApi()
    owner = await api.create(RS, {"metadata": {"name": "rs", "namespace": NS}})
    await dependent(api, "a", ref(owner))
    await dependent(api, "b", ref(owner))
    async with running(api):
        await asyncio.sleep(0.05)
        assert exists(api, PODS, "a")  # the owner is there: nothing to do
        await api.delete(RS, "rs", namespace=NS)
        await eventually(lambda: not exists(api, PODS, "a") and not exists(api, PODS, "b"))


async def test_an_object_whose_owner_never_existed_is_deleted_at_start() -> None:
    api = fake.FakeApi()
    await dependent(
        api, "stray", {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "ghost", "uid": "no-such-uid"}
    )
    async with running(api):
        await eventually(lambda: not exists(api, PODS, "stray"))


async def test_a_remaining_solid_owner_keeps_the_object_and_loses_the_dangling_reference() -> None:
    api = fake.FakeApi()
    kept = await api.create(RS, {"metadata": {"name": "kept", "namespace": NS}})
    gone = await api.create(CM, {"metadata": {"name": "gone", "namespace": NS}})
    await dependent(
        api, "shared", ref(kept, block=False), ref(gone, kind="ConfigMap", api_version="v1", block=False)
    )
    async with running(api):
        await api.delete(CM, "gone", namespace=NS)

        def refs() -> list[str]:
            return [
                r["name"] for r in api.objects[(PODS, NS, "shared")]["metadata"].get("ownerReferences") or ()
            ]

        await eventually(lambda: refs() == ["kept"])


async def test_orphan_removes_owner_references_then_the_finalizer() -> None:
    api = fake.FakeApi()
    owner = await api.create(RS, {"metadata": {"name": "rs", "namespace": NS}})
    await dependent(api, "a", ref(owner))
    async with running(api):
        await deleting(api, RS, "rs", "orphan")
        await eventually(lambda: not api.objects[(RS, NS, "rs")]["metadata"].get("finalizers"))
        assert exists(api, PODS, "a")
        assert not api.objects[(PODS, NS, "a")]["metadata"].get("ownerReferences")


async def test_foreground_deletes_blocking_dependents_before_releasing_the_owner() -> None:
    api = fake.FakeApi()
    owner = await api.create(RS, {"metadata": {"name": "rs", "namespace": NS}})
    await dependent(api, "a", ref(owner))
    await dependent(api, "b", ref(owner))
    async with running(api):
        await deleting(api, RS, "rs", "foregroundDeletion")
        await eventually(lambda: not api.objects[(RS, NS, "rs")]["metadata"].get("finalizers"))
        assert not exists(api, PODS, "a") and not exists(api, PODS, "b")
        pods_gone = max(rv for rv, r, kind, _ in api.history if r == PODS and kind == "DELETED")
        released = min(rv for rv, r, kind, obj in api.history
                       if r == RS and kind == "MODIFIED" and not obj["metadata"].get("finalizers"))  # fmt: skip
        assert pods_gone < released


async def test_owners_of_unknown_kinds_are_never_guessed_away() -> None:
    api = fake.FakeApi()
    await dependent(
        api, "custom", {"apiVersion": "example.com/v1", "kind": "Widget", "name": "w", "uid": "w-uid"}
    )
    async with running(api):
        await asyncio.sleep(0.1)
        assert exists(api, PODS, "custom")
