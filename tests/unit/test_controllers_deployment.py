"""The Deployment controller: rolling math, revisions, and syncs against the in-memory API.

The syncs run the real controller on ``fake.FakeApi`` without a ReplicaSet controller: the tests
play its part by writing ReplicaSet statuses (``settle`` makes every ReplicaSet fully available
at its size), so each step of a rollout can be checked on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from services.client import events, fake, informer, resources, store
from services.controllers import base, deployment, podutil

DEP, RS = resources.DEPLOYMENTS, resources.REPLICASETS
NS = "default"
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def a_deployment(
    name: str = "web", *, replicas: int = 4, image: str = "nginx:1", **spec: Any
) -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": NS},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "revisionHistoryLimit": 10,
                     "progressDeadlineSeconds": 600,
                     "strategy": spec.pop("strategy", {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}}),
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": image}]}},
                     **spec}}  # fmt: skip


@contextlib.asynccontextmanager
async def running(api: fake.FakeApi) -> AsyncIterator[deployment.DeploymentController]:
    factory = informer.InformerFactory(api)
    recorder = events.EventRecorder(api, component="deployment-controller")
    controller = deployment.DeploymentController()
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
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def owned(api: fake.FakeApi, name: str = "web") -> list[dict[str, Any]]:
    d = api.objects[(DEP, NS, name)]
    return sorted(
        (o for (r, _, _), o in api.objects.items() if r == RS and podutil.is_controlled_by(o, d)),
        key=deployment.revision_of,  # oldest first (creation times have one-second precision)
    )


async def settle(api: fake.FakeApi) -> None:
    """Play the ReplicaSet controller: every ReplicaSet has exactly its pods, all available."""
    for (r, _, _), rs in list(api.objects.items()):
        if r != RS:
            continue
        n = rs["spec"]["replicas"]
        status = {"replicas": n, "readyReplicas": n, "availableReplicas": n, "fullyLabeledReplicas": n,
                  "observedGeneration": rs["metadata"]["generation"]}  # fmt: skip
        if podutil.omit_zero(rs.get("status") or {}) != podutil.omit_zero(status):
            await api.update_status(RS, {**store.copy(rs), "status": status})


# -- pure helpers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value,total,up,expected",
    [("25%", 10, True, 3), ("25%", 10, False, 2), ("25%", 1, False, 0), ("25%", 1, True, 1), (2, 10, True, 2), ("3", 4, False, 3)],
)  # fmt: skip
def test_scaled_value_rounds_surge_up_and_unavailability_down(
    value: Any, total: int, up: bool, expected: int
) -> None:
    assert deployment.scaled_value(value, total, round_up=up) == expected


def test_fenceposts_never_both_zero_and_capped() -> None:
    d = a_deployment(
        replicas=1,
        strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "10%"}},
    )
    assert deployment.fenceposts(d) == (0, 1)
    d = a_deployment(
        replicas=2, strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 5}}
    )
    assert deployment.max_unavailable(d) == 2
    assert deployment.max_surge(a_deployment(strategy={"type": "Recreate"})) == 0
    assert deployment.max_unavailable(a_deployment(replicas=0)) == 0


def test_new_replicaset_size_respects_the_surge() -> None:
    d = a_deployment(replicas=4)  # surge 1
    old = {"spec": {"replicas": 4}}
    new = {"spec": {"replicas": 0}}
    assert deployment.new_rs_replicas(d, [old, new], new) == 1
    assert (
        deployment.new_rs_replicas(
            d, [{"spec": {"replicas": 2}}, {"spec": {"replicas": 2}}], {"spec": {"replicas": 2}}
        )
        == 3
    )
    recreate = a_deployment(replicas=4, strategy={"type": "Recreate"})
    assert deployment.new_rs_replicas(recreate, [old, new], new) == 4


def test_revision_history_is_kept_when_an_old_replicaset_comes_back() -> None:
    d = a_deployment()
    d["metadata"]["annotations"] = {"kubernetes.io/change-cause": "undo", deployment.REVISION: "9"}
    rs = {
        "metadata": {"annotations": {deployment.REVISION: "1", deployment.REVISION_HISTORY: ""}},
        "spec": {},
    }
    assert deployment.set_new_rs_annotations(d, rs, 3, exists=True)
    annotations = rs["metadata"]["annotations"]
    assert annotations[deployment.REVISION] == "3" and annotations[deployment.REVISION_HISTORY] == "1"
    assert annotations["kubernetes.io/change-cause"] == "undo"
    assert deployment.set_new_rs_annotations(d, rs, 5, exists=True)
    assert annotations[deployment.REVISION_HISTORY] == "1,3"
    assert not deployment.set_new_rs_annotations(d, rs, 5, exists=True)


def test_status_and_conditions_as_rollout_status_reads_them() -> None:
    d = a_deployment(replicas=3)
    d["metadata"]["generation"] = 2
    new_rs = {"spec": {"replicas": 2}, "status": {"replicas": 2, "readyReplicas": 2, "availableReplicas": 1}}
    old_rs = {"spec": {"replicas": 1}, "status": {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1}}
    status = deployment.calculate_status(d, [old_rs, new_rs], new_rs, T0)
    assert {k: v for k, v in status.items() if k != "conditions"} == {
        "observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "readyReplicas": 3,
        "availableReplicas": 2, "unavailableReplicas": 1}  # fmt: skip
    available = deployment.find_condition(status, "Available")
    assert (available["status"], available["reason"]) == ("True", "MinimumReplicasAvailable")  # 2 >= 3 - 1
    assert not deployment.complete(d, status)
    assert deployment.progressing(d, status)


def test_timed_out_after_the_deadline_without_progress() -> None:
    d = a_deployment(progressDeadlineSeconds=60)
    since = podutil.format_time(T0)
    status = {
        "conditions": [
            {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated", "lastUpdateTime": since}
        ]
    }
    assert not deployment.timed_out(d, status, T0 + datetime.timedelta(seconds=60))
    assert deployment.timed_out(d, status, T0 + datetime.timedelta(seconds=61))
    status["conditions"][0]["reason"] = "NewReplicaSetAvailable"
    assert not deployment.timed_out(d, status, T0 + datetime.timedelta(days=1))


# -- syncs -------------------------------------------------------------------------------------------


async def test_first_sync_creates_a_hashed_replicaset_at_full_size() -> None:
    api = fake.FakeApi()
    async with running(api):
        created = await api.create(DEP, a_deployment())
        [rs] = await eventually(lambda: owned(api) or None)
        pod_hash = podutil.template_hash(created["spec"]["template"])
        assert rs["metadata"]["name"] == f"web-{pod_hash}"
        assert rs["spec"]["template"]["metadata"]["labels"] == {"app": "web", "pod-template-hash": pod_hash}
        assert rs["spec"]["replicas"] == 4
        assert rs["metadata"]["annotations"][deployment.REVISION] == "1"

        def progressing_reason() -> str | None:
            return podutil.condition(api.objects[(DEP, NS, "web")], "Progressing") and \
                podutil.condition(api.objects[(DEP, NS, "web")], "Progressing")["reason"]  # fmt: skip

        assert await eventually(lambda: progressing_reason() == "NewReplicaSetCreated")
        await settle(api)
        assert await eventually(lambda: progressing_reason() == "NewReplicaSetAvailable")
        d = api.objects[(DEP, NS, "web")]
        assert d["metadata"]["annotations"][deployment.REVISION] == "1"
        assert (
            d["status"]["availableReplicas"] == 4
            and d["status"]["observedGeneration"] == d["metadata"]["generation"]
        )


async def test_rolling_update_moves_within_surge_and_unavailability() -> None:
    api = fake.FakeApi()
    async with running(api):
        await api.create(DEP, a_deployment(replicas=4))
        await eventually(lambda: owned(api))
        await settle(api)
        await api.patch(DEP, "web", {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:2"}]}}}},
                        namespace=NS, patch_type="strategic")  # fmt: skip
        steps: list[tuple[int, int]] = []
        deadline = time.monotonic() + 5
        while True:
            await asyncio.sleep(0.02)
            rss = owned(api)
            sizes = tuple(rs["spec"]["replicas"] for rs in rss)
            steps.append(sizes)  # type: ignore[arg-type]
            assert sum(sizes) <= 5, steps  # replicas + maxSurge
            available = sum(
                min(rs.get("status", {}).get("availableReplicas", 0), rs["spec"]["replicas"]) for rs in rss
            )
            assert available >= 3 or len(rss) == 1, steps  # replicas - maxUnavailable, once both exist
            if len(rss) == 2 and sizes == (0, 4):
                break
            assert time.monotonic() < deadline, steps
            await settle(api)
        old, new = owned(api)
        assert old["metadata"]["annotations"][deployment.REVISION] == "1"
        assert new["metadata"]["annotations"][deployment.REVISION] == "2"


async def test_recreate_scales_old_to_zero_before_creating_the_new_one() -> None:
    api = fake.FakeApi()
    async with running(api):
        await api.create(DEP, a_deployment(replicas=3, strategy={"type": "Recreate"}))
        await eventually(lambda: owned(api))
        await settle(api)
        await api.patch(DEP, "web", {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:2"}]}}}},
                        namespace=NS, patch_type="strategic")  # fmt: skip
        await eventually(lambda: owned(api)[0]["spec"]["replicas"] == 0)
        await asyncio.sleep(0.1)
        assert len(owned(api)) == 1  # old pods still reported: the new one must wait
        await settle(api)
        rss = await eventually(lambda: len(owned(api)) == 2 and owned(api))
        assert [rs["spec"]["replicas"] for rs in rss] == [0, 3]


async def test_paused_deployment_scales_but_does_not_roll() -> None:
    api = fake.FakeApi()
    async with running(api):
        await api.create(DEP, a_deployment(replicas=2))
        await eventually(lambda: owned(api))
        await settle(api)
        await api.patch(DEP, "web", {"spec": {"paused": True, "replicas": 3,
                                              "template": {"spec": {"containers": [{"name": "c", "image": "nginx:2"}]}}}},
                        namespace=NS, patch_type="strategic")  # fmt: skip
        await eventually(lambda: owned(api)[0]["spec"]["replicas"] == 3)
        cond = await eventually(lambda: podutil.condition(api.objects[(DEP, NS, "web")], "Progressing"))
        await eventually(
            lambda: (
                podutil.condition(api.objects[(DEP, NS, "web")], "Progressing")["reason"]
                == "DeploymentPaused"
            )
        )
        assert cond is not None and len(owned(api)) == 1
        await api.patch(DEP, "web", {"spec": {"paused": False}}, namespace=NS)
        await eventually(lambda: len(owned(api)) == 2)


async def test_scaling_during_a_rollout_is_proportional() -> None:
    api = fake.FakeApi()
    d = await api.create(DEP, a_deployment(replicas=10, paused=True,
                                           strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 2}}))  # fmt: skip
    ref = podutil.owner_reference(d, api_version="apps/v1", kind="Deployment")
    for name, size, image in (("web-old", 6, "nginx:0"), ("web-mid", 4, "nginx:0.5")):
        template = store.copy(d["spec"]["template"])
        template["spec"]["containers"][0]["image"] = image
        await api.create(RS, {"metadata": {"name": name, "namespace": NS, "labels": {"app": "web"}, "ownerReferences": [ref],
                                           "annotations": {deployment.DESIRED_REPLICAS: "10", deployment.MAX_REPLICAS: "13"}},
                              "spec": {"replicas": size, "selector": {"matchLabels": {"app": "web"}}, "template": template}})  # fmt: skip
    await settle(api)
    async with running(api):
        await api.patch(DEP, "web", {"spec": {"replicas": 20}}, namespace=NS)
        await eventually(lambda: sum(rs["spec"]["replicas"] for rs in owned(api)) == 23)
        sizes = {rs["metadata"]["name"]: rs["spec"]["replicas"] for rs in owned(api)}
        # 13 to add: 6*23/13 = 10.6 -> +5, 4*23/13 = 7.1 -> +3, the 5 left over to the biggest.
        assert sizes == {"web-old": 16, "web-mid": 7}
        assert all(rs["metadata"]["annotations"][deployment.DESIRED_REPLICAS] == "20" for rs in owned(api))


async def test_old_replicasets_beyond_the_history_limit_are_deleted() -> None:
    api = fake.FakeApi()
    async with running(api):
        await api.create(DEP, a_deployment(replicas=1, revisionHistoryLimit=1))
        for image in ("nginx:2", "nginx:3", "nginx:4"):
            await eventually(lambda: owned(api))
            await settle(api)
            await eventually(
                lambda: deployment.complete(
                    api.objects[(DEP, NS, "web")], api.objects[(DEP, NS, "web")].get("status") or {}
                )
            )
            await api.patch(DEP, "web", {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}},
                            namespace=NS, patch_type="strategic")  # fmt: skip
            await asyncio.sleep(0.05)

        async def converged() -> bool:
            await settle(api)
            return [rs["metadata"]["annotations"][deployment.REVISION] for rs in owned(api)] == ["3", "4"]

        await eventually(converged)


async def test_a_hash_collision_bumps_the_collision_count() -> None:
    api = fake.FakeApi()
    body = a_deployment(replicas=1)
    pod_hash = podutil.template_hash(body["spec"]["template"])
    squatter = {"metadata": {"name": f"web-{pod_hash}", "namespace": NS, "labels": {"other": "x"}},
                "spec": {"replicas": 0, "selector": {"matchLabels": {"other": "x"}},
                         "template": {"metadata": {"labels": {"other": "x"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}}  # fmt: skip
    await api.create(RS, squatter)
    async with running(api):
        await api.create(DEP, body)
        [rs] = await eventually(lambda: owned(api) or None)
        assert rs["metadata"]["name"] == f"web-{podutil.template_hash(body['spec']['template'], 1)}"
        assert api.objects[(DEP, NS, "web")]["status"]["collisionCount"] == 1
