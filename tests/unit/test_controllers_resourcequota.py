"""ResourceQuota usage from the caches: counts, compute sums, scopes, lazily watched kinds."""

from __future__ import annotations

import asyncio
import types
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.client import events, fake, informer, resources
from services.controllers import base, resourcequota

QUOTAS, PODS = resources.RESOURCEQUOTAS, resources.PODS
KEY = "default/q"


def quota(hard: dict[str, str], **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "q", "namespace": "default"}, "spec": {"hard": hard, **spec}}


def pod(name: str, *, cpu: str | None = None, memory: str | None = None, limit_cpu: str | None = None,
        phase: str = "Running", deadline: int | None = None, init_cpu: str | None = None) -> dict[str, Any]:  # fmt: skip
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v}
    limits = {"cpu": limit_cpu} if limit_cpu else {}
    spec: dict[str, Any] = {
        "containers": [{"name": "c", "image": "x", "resources": {"requests": requests, "limits": limits}}]
    }
    if init_cpu:
        spec["initContainers"] = [{"name": "i", "image": "x", "resources": {"requests": {"cpu": init_cpu}}}]
    if deadline is not None:
        spec["activeDeadlineSeconds"] = deadline
    return {"metadata": {"name": name, "namespace": "default"}, "spec": spec, "status": {"phase": phase}}


class Env:
    def __init__(self) -> None:
        self.api = fake.FakeApi()
        self.factory = informer.InformerFactory(self.api)
        self.controller = resourcequota.ResourceQuotaController()
        recorder = events.EventRecorder(self.api, component="test")
        self.controller.setup(
            base.ControllerContext(self.api, self.factory, recorder, types.SimpleNamespace())
        )

    async def sync(self) -> dict[str, Any]:
        for _ in range(50):
            await asyncio.sleep(0)
        await self.controller.reconcile(KEY)
        return self.api.objects[(QUOTAS, "default", "q")]["status"]


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    made = Env()
    try:
        yield made
    finally:
        await made.factory.stop()


@pytest.mark.parametrize(
    ("values", "expected"),
    [(["128Mi", "128Mi"], "256Mi"), (["500m", "500m"], "1"), (["1Gi", "512Mi"], "1536Mi"), (["100m", "1"], "1100m"),
     (["1.5"], "1500m"), (["1e3"], "1k"), ([], "0"), (["2000"], "2k"), (["512"], "512"), (["100k", "1Mi"], "1148576")],
)  # fmt: skip
def test_quantity_sums_print_canonically(values: list[str], expected: str) -> None:
    assert str(resourcequota.total(values)) == expected


async def test_counts_and_compute_of_running_pods(env: Env) -> None:
    hard = {"pods": "10", "requests.cpu": "4", "cpu": "4", "requests.memory": "4Gi", "limits.cpu": "8",
            "count/pods": "10", "configmaps": "5"}  # fmt: skip
    await env.api.create(QUOTAS, quota(hard))
    await env.api.create(PODS, pod("a", cpu="250m", memory="128Mi", limit_cpu="1"))
    await env.api.create(PODS, pod("b", cpu="250m", memory="128Mi", init_cpu="2"))
    await env.api.create(PODS, pod("c", limit_cpu="500m"))  # the request defaults to the limit
    await env.api.create(PODS, pod("done", cpu="8", phase="Succeeded"))
    await env.api.create(resources.CONFIGMAPS, {"metadata": {"name": "cm", "namespace": "default"}})
    await env.factory.start()
    status = await env.sync()
    assert status["hard"] == hard
    assert status["used"]["pods"] == status["used"]["count/pods"] == "3"
    assert status["used"]["requests.cpu"] == status["used"]["cpu"] == "2750m"
    assert status["used"]["requests.memory"] == "256Mi"
    assert status["used"]["limits.cpu"] == "1500m"
    assert status["used"]["configmaps"] == "1"  # from an informer opened for this quota
    assert resources.CONFIGMAPS in env.controller.watched and resources.SECRETS not in env.controller.watched


async def test_scopes_select_pods(env: Env) -> None:
    await env.api.create(QUOTAS, quota({"pods": "5"}, scopes=["Terminating", "NotBestEffort"]))
    await env.api.create(PODS, pod("a", cpu="1", deadline=30))
    await env.api.create(PODS, pod("b", cpu="1"))
    await env.api.create(PODS, pod("c", deadline=30))
    await env.factory.start()
    assert (await env.sync())["used"]["pods"] == "1"


async def test_scoped_quotas_count_only_matching_pods(env: Env) -> None:
    selector = {"matchExpressions": [{"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}
    await env.api.create(QUOTAS, quota({"pods": "5", "requests.cpu": "4", "count/pods": "5", "configmaps": "5"},
                                       scopes=["NotBestEffort"], scopeSelector=selector))  # fmt: skip
    high = pod("a", cpu="1")
    high["spec"]["priorityClassName"] = "high"
    best_effort = pod("b")
    best_effort["spec"]["priorityClassName"] = "high"
    await env.api.create(PODS, high)
    await env.api.create(PODS, best_effort)
    await env.api.create(PODS, pod("c", cpu="2"))  # no class
    await env.api.create(resources.CONFIGMAPS, {"metadata": {"name": "cm", "namespace": "default"}})
    await env.factory.start()
    await env.sync()
    used = (await env.sync())["used"]
    # configmaps match no scope: a scoped quota tracks pods only, as upstream's object-count evaluators
    assert used == {"pods": "1", "count/pods": "1", "requests.cpu": "1", "configmaps": "0"}


async def test_best_effort_scope_counts_pods_without_requests(env: Env) -> None:
    await env.api.create(QUOTAS, quota({"pods": "5"}, scopes=["BestEffort"]))
    await env.api.create(PODS, pod("a"))
    await env.api.create(PODS, pod("b", init_cpu="1"))  # an init container's request makes it burstable
    await env.api.create(PODS, pod("c", limit_cpu="1"))
    await env.factory.start()
    assert (await env.sync())["used"]["pods"] == "1"


async def test_services_and_claims(env: Env) -> None:
    hard = {"services": "5", "services.nodeports": "5", "services.loadbalancers": "1", "persistentvolumeclaims": "5",
            "requests.storage": "10Gi", "fast.storageclass.storage.k8s.io/requests.storage": "5Gi"}  # fmt: skip
    await env.api.create(QUOTAS, quota(hard))
    for name, kind in (("a", "ClusterIP"), ("b", "NodePort"), ("c", "LoadBalancer")):
        await env.api.create(resources.SERVICES, {"metadata": {"name": name, "namespace": "default"},
                                                  "spec": {"type": kind, "ports": [{"port": 80}]}})  # fmt: skip
    for name, size, cls in (("d1", "1Gi", "fast"), ("d2", "2Gi", "slow")):
        await env.api.create(resources.PERSISTENTVOLUMECLAIMS, {"metadata": {"name": name, "namespace": "default"},
            "spec": {"storageClassName": cls, "resources": {"requests": {"storage": size}}}})  # fmt: skip
    await env.factory.start()
    await env.sync()
    used = (await env.sync())["used"]
    assert (
        used["services"] == "3"
        and used["services.nodeports"] == "2"
        and used["services.loadbalancers"] == "1"
    )
    assert used["persistentvolumeclaims"] == "2" and used["requests.storage"] == "3Gi"
    assert used["fast.storageclass.storage.k8s.io/requests.storage"] == "1Gi"


async def test_a_volume_attributes_class_scope_counts_the_claims_of_that_class(env: Env) -> None:
    selector = {"matchExpressions": [{"scopeName": "VolumeAttributesClass", "operator": "In", "values": ["gold"]}]}
    await env.api.create(QUOTAS, quota({"persistentvolumeclaims": "5", "requests.storage": "10Gi", "pods": "5"},
                                       scopeSelector=selector))  # fmt: skip
    for name, size, cls in (("d1", "1Gi", "gold"), ("d2", "2Gi", "silver"), ("d3", "4Gi", None)):
        spec: dict[str, Any] = {"resources": {"requests": {"storage": size}}}
        if cls:
            spec["volumeAttributesClassName"] = cls
        await env.api.create(resources.PERSISTENTVOLUMECLAIMS, {"metadata": {"name": name, "namespace": "default"},
                                                                "spec": spec})  # fmt: skip
    await env.api.create(PODS, pod("a"))  # pods match no claim scope
    await env.factory.start()
    await env.sync()
    used = (await env.sync())["used"]
    assert used == {"persistentvolumeclaims": "1", "requests.storage": "1Gi", "pods": "0"}


def test_count_names() -> None:
    assert resourcequota.count_resource("count/deployments.apps") == resources.DEPLOYMENTS
    assert resourcequota.count_resource("count/secrets") == resources.SECRETS
    assert resourcequota.count_resource("count/widgets.example.com") is None
