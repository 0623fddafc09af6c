"""PodDisruptionBudget status from pod readiness and controller scale, against the in-memory API."""

from __future__ import annotations

import asyncio
import types
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.client import events, fake, informer, resources
from services.controllers import base, disruption

PODS, PDB = resources.PODS, resources.PODDISRUPTIONBUDGETS
KEY = "default/web"


def pdb_body(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, **spec}}  # fmt: skip


def pod(
    name: str, *, ready: bool = True, owner: dict[str, Any] | None = None, app: str = "web"
) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name, "namespace": "default", "labels": {"app": app}}
    if owner is not None:
        md["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner["kind"], "name": owner["metadata"]["name"],
                                  "uid": owner["metadata"]["uid"], "controller": True}]  # fmt: skip
    status = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    return {"metadata": md, "spec": {}, "status": status}


class Env:
    def __init__(self) -> None:
        self.api = fake.FakeApi()
        self.factory = informer.InformerFactory(self.api)
        self.controller = disruption.DisruptionController()
        recorder = events.EventRecorder(self.api, component="test")
        self.controller.setup(
            base.ControllerContext(self.api, self.factory, recorder, types.SimpleNamespace())
        )

    async def sync(self) -> dict[str, Any]:
        for _ in range(50):
            await asyncio.sleep(0)
        await self.controller.reconcile(KEY)
        return self.api.objects[(PDB, "default", "web")]["status"]


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    made = Env()
    try:
        yield made
    finally:
        await made.factory.stop()


async def test_min_available_number(env: Env) -> None:
    await env.api.create(PDB, pdb_body(minAvailable=2))
    for name, ready in (("a", True), ("b", True), ("c", True), ("d", False)):
        await env.api.create(PODS, pod(name, ready=ready))
    await env.api.create(PODS, pod("other", app="db"))
    await env.factory.start()
    status = await env.sync()
    assert (status["currentHealthy"], status["desiredHealthy"], status["expectedPods"]) == (3, 2, 4)
    assert status["disruptionsAllowed"] == 1 and status["observedGeneration"] == 1
    [cond] = status["conditions"]
    assert (cond["type"], cond["status"], cond["reason"]) == ("DisruptionAllowed", "True", "SufficientPods")


async def test_no_disruption_when_short(env: Env) -> None:
    await env.api.create(PDB, pdb_body(minAvailable=2))
    await env.api.create(PODS, pod("a"))
    await env.api.create(PODS, pod("b", ready=False))
    await env.factory.start()
    status = await env.sync()
    assert status["disruptionsAllowed"] == 0
    assert (
        status["conditions"][0]["status"] == "False"
        and status["conditions"][0]["reason"] == "InsufficientPods"
    )


async def test_max_unavailable_uses_the_deployment_scale(env: Env) -> None:
    deployment = await env.api.create(resources.DEPLOYMENTS, {"metadata": {"name": "web", "namespace": "default"},
                                                              "spec": {"replicas": 4}})  # fmt: skip
    rs_body = {"metadata": {"name": "web-1", "namespace": "default", "ownerReferences": [
        {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": deployment["metadata"]["uid"],
         "controller": True}]}, "spec": {"replicas": 3}}  # fmt: skip
    rs = await env.api.create(resources.REPLICASETS, rs_body)
    rs["kind"] = "ReplicaSet"
    for name in ("a", "b", "c"):
        await env.api.create(PODS, pod(name, owner=rs))
    await env.api.create(PDB, pdb_body(maxUnavailable="25%"))
    await env.factory.start()
    status = await env.sync()
    assert status["expectedPods"] == 4  # the Deployment wants 4, though 3 exist
    assert (
        status["desiredHealthy"] == 3 and status["currentHealthy"] == 3 and status["disruptionsAllowed"] == 0
    )


async def test_min_available_percentage_rounds_up(env: Env) -> None:
    await env.api.create(PDB, pdb_body(minAvailable="50%"))
    for name in ("a", "b", "c"):
        await env.api.create(PODS, pod(name))
    await env.factory.start()
    status = await env.sync()
    assert (status["expectedPods"], status["desiredHealthy"], status["disruptionsAllowed"]) == (3, 2, 1)


async def test_pod_changes_queue_the_budget(env: Env) -> None:
    await env.api.create(PDB, pdb_body(minAvailable=1))
    await env.factory.start()
    await env.sync()
    while len(env.controller.queue):
        env.controller.queue.done(await env.controller.queue.get())
    await env.api.create(PODS, pod("a"))
    for _ in range(50):
        await asyncio.sleep(0)
    assert len(env.controller.queue) == 1


def test_scaled() -> None:
    assert (
        disruption.scaled("25%", 3) == 1
        and disruption.scaled("50%", 3) == 2
        and disruption.scaled(2, 10) == 2
    )
    with pytest.raises(ValueError):
        disruption.scaled("abc", 3)
