"""The ReplicaSet (and ReplicationController) controller against the in-memory API."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from services.client import errors, events, fake, informer, resources, store
from services.controllers import base, podutil, replicaset

PODS, RS, RC = resources.PODS, resources.REPLICASETS, resources.REPLICATIONCONTROLLERS
NS = "default"
NOW = podutil.format_time(podutil.now())


@contextlib.asynccontextmanager
async def running(
    api: fake.FakeApi, controller: Any = None
) -> AsyncIterator[replicaset.ReplicaSetController]:
    controller = controller or replicaset.ReplicaSetController()
    factory = informer.InformerFactory(api)
    recorder = events.EventRecorder(api, component="replicaset-controller")
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


def a_replicaset(name: str = "rs", replicas: int = 3, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name, "namespace": NS},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name, "tier": "x"}},
                                  "spec": {"containers": [{"name": "c", "image": "pause"}]}}, **spec}}  # fmt: skip


def pods_of(api: fake.FakeApi, label: str = "rs") -> list[dict[str, Any]]:
    return [
        o for (r, _, _), o in api.objects.items() if r == PODS and podutil.labels_of(o).get("app") == label
    ]


async def make_ready(api: fake.FakeApi, label: str = "rs") -> None:
    now = podutil.format_time(podutil.now())
    for pod in pods_of(api, label):
        status = {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}],
        }
        await api.update_status(
            PODS, {**store.copy(pod), "spec": {**pod["spec"], "nodeName": "n"}, "status": status}
        )


async def test_creates_missing_pods_owned_and_generated_from_the_template() -> None:
    api = fake.FakeApi()
    async with running(api):
        rs = await api.create(RS, a_replicaset(replicas=3))
        pods = await eventually(lambda: len(pods_of(api)) == 3 and pods_of(api))
        for pod in pods:
            md = pod["metadata"]
            assert md["generateName"] == "rs-" and md["name"].startswith("rs-")
            assert md["labels"] == {"app": "rs", "tier": "x"}
            assert md["ownerReferences"] == [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
                                              "uid": rs["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]  # fmt: skip
        await make_ready(api)

        def status() -> dict[str, Any]:
            return api.objects[(RS, NS, "rs")].get("status") or {}

        await eventually(lambda: status().get("availableReplicas") == 3)
        assert status() == {"replicas": 3, "fullyLabeledReplicas": 3, "readyReplicas": 3, "availableReplicas": 3,
                            "observedGeneration": 1}  # fmt: skip
        await asyncio.sleep(0.1)
        assert len(pods_of(api)) == 3  # no second round of creations


async def test_scale_down_deletes_unscheduled_and_unready_pods_first() -> None:
    api = fake.FakeApi()
    owner = await api.create(RS, a_replicaset(replicas=3))
    ref = podutil.owner_reference(owner, api_version="apps/v1", kind="ReplicaSet")
    specs = {"ready": ("n", "True"), "unready": ("n", "False"), "unscheduled": ("", None)}
    for name, (node, ready) in specs.items():
        status: dict[str, Any] = {"phase": "Running" if node else "Pending"}
        if ready:
            status["conditions"] = [{"type": "Ready", "status": ready, "lastTransitionTime": NOW}]
        await api.create(PODS, {"metadata": {"name": name, "namespace": NS, "labels": {"app": "rs"}, "ownerReferences": [ref]},
                                "spec": {"nodeName": node} if node else {}, "status": status})  # fmt: skip
    async with running(api):
        await api.patch(RS, "rs", {"spec": {"replicas": 1}}, namespace=NS)
        remaining = await eventually(lambda: len(pods_of(api)) == 1 and pods_of(api))
        assert remaining[0]["metadata"]["name"] == "ready"


async def test_adopts_orphans_and_releases_pods_that_stop_matching() -> None:
    api = fake.FakeApi()
    await api.create(
        PODS, {"metadata": {"name": "orphan", "namespace": NS, "labels": {"app": "rs"}}, "spec": {}}
    )
    async with running(api):
        rs = await api.create(RS, a_replicaset(replicas=1))
        await eventually(lambda: podutil.is_controlled_by(api.objects[(PODS, NS, "orphan")], rs))
        await asyncio.sleep(0.05)
        assert len(pods_of(api)) == 1  # adopted, so nothing created
        await api.patch(PODS, "orphan", {"metadata": {"labels": {"app": "gone"}}}, namespace=NS)
        await eventually(lambda: podutil.controller_ref(api.objects[(PODS, NS, "orphan")]) is None)
        await eventually(lambda: len(pods_of(api)) == 1 and pods_of(api)[0]["metadata"]["name"] != "orphan")


async def test_failed_creations_are_reported_and_retried() -> None:
    api = fake.FakeApi()
    async with running(api):
        await api.create(RS, a_replicaset(replicas=2))
        # No await since the ReplicaSet was created: this failure meets the controller's first pod.
        api.fail_next("create", errors.ApiError(403, "Forbidden", 'pods "rs-x" is forbidden: exceeded quota'))

        def reported() -> dict[str, Any] | None:
            """The ReplicaFailure condition the ReplicaSet showed (the retry may clear it at once)."""
            shown = (podutil.condition(obj, "ReplicaFailure") for _, r, _, obj in api.history if r == RS)
            return next((c for c in shown if c), None)

        cond = await eventually(reported)
        assert (cond["status"], cond["reason"]) == ("True", "FailedCreate")
        assert "exceeded quota" in cond["message"]
        await eventually(lambda: len(pods_of(api)) == 2)
        await eventually(lambda: podutil.condition(api.objects[(RS, NS, "rs")], "ReplicaFailure") is None)
        reasons = {o["reason"] for (r, _, _), o in api.objects.items() if r == resources.EVENTS}
        assert {"FailedCreate", "SuccessfulCreate"} <= reasons


async def test_min_ready_seconds_delays_availability() -> None:
    api = fake.FakeApi()
    async with running(api):
        await api.create(RS, a_replicaset(replicas=1, minReadySeconds=2))
        await eventually(lambda: pods_of(api))
        await make_ready(api)
        status = await eventually(lambda: (api.objects[(RS, NS, "rs")].get("status") or {}).get("readyReplicas") == 1
                                  and api.objects[(RS, NS, "rs")]["status"])  # fmt: skip
        assert not status.get("availableReplicas")
        await eventually(
            lambda: api.objects[(RS, NS, "rs")]["status"].get("availableReplicas") == 1, within=5
        )


async def test_replication_controllers_use_their_map_selector() -> None:
    api = fake.FakeApi()
    async with running(api, replicaset.new_replication_controller()):
        template = {
            "metadata": {"labels": {"app": "rc"}},
            "spec": {"containers": [{"name": "c", "image": "pause"}]},
        }
        await api.create(
            RC, {"metadata": {"name": "rc", "namespace": NS}, "spec": {"replicas": 2, "template": template}}
        )
        pods = await eventually(lambda: len(pods_of(api, "rc")) == 2 and pods_of(api, "rc"))
        assert {podutil.controller_ref(p)["kind"] for p in pods} == {"ReplicationController"}
        await eventually(lambda: (api.objects[(RC, NS, "rc")].get("status") or {}).get("replicas") == 2)
