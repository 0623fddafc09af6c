"""The StatefulSet controller against the in-memory API: order, storage, scale down, rolling update."""

from __future__ import annotations

import asyncio
import types
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.client import events, fake, informer, resources, store
from services.controllers import base, statefulset

PODS, STS, PVC = resources.PODS, resources.STATEFULSETS, resources.PERSISTENTVOLUMECLAIMS
KEY = "default/web"


def sts_body(replicas: int = 3, image: str = "web:1", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "serviceName": "web",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "c", "image": image}]}},
            **spec,
        },
    }  # fmt: skip


class Env:
    def __init__(self) -> None:
        self.api = fake.FakeApi()
        self.factory = informer.InformerFactory(self.api)
        self.controller = statefulset.StatefulSetController()
        recorder = events.EventRecorder(self.api, component="test")
        self.controller.setup(
            base.ControllerContext(self.api, self.factory, recorder, types.SimpleNamespace())
        )

    async def settle(self) -> None:
        for _ in range(50):
            await asyncio.sleep(0)

    async def sync(self, rounds: int = 1) -> None:
        for _ in range(rounds):
            await self.settle()
            await self.controller.reconcile(KEY)
            await self.settle()

    def pods(self) -> dict[str, dict[str, Any]]:
        return {n: o for (r, _ns, n), o in self.api.objects.items() if r == PODS}

    def sts(self) -> dict[str, Any]:
        return self.api.objects[(STS, "default", "web")]

    async def make_ready(self, *names: str) -> None:
        for name in names or list(self.pods()):
            pod = store.copy(self.pods()[name])
            pod["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
            await self.api.update_status(PODS, pod)
        await self.settle()

    async def update(self, **spec: Any) -> None:
        changed = store.copy(self.sts())
        changed["spec"].update(spec)
        await self.api.update(STS, changed)


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    made = Env()
    try:
        yield made
    finally:
        await made.factory.stop()


async def start(env: Env, body: dict[str, Any]) -> None:
    await env.api.create(STS, body)
    await env.factory.start()


async def test_ordered_ready_creates_one_at_a_time(env: Env) -> None:
    await start(env, sts_body())
    await env.sync(3)
    assert list(env.pods()) == ["web-0"]  # web-1 waits for web-0 to be Running and Ready
    pod = env.pods()["web-0"]
    assert pod["spec"]["hostname"] == "web-0" and pod["spec"]["subdomain"] == "web"
    labels = pod["metadata"]["labels"]
    assert labels["statefulset.kubernetes.io/pod-name"] == "web-0"
    assert labels["apps.kubernetes.io/pod-index"] == "0"
    assert labels["controller-revision-hash"].startswith("web-")
    await env.make_ready("web-0")
    await env.sync(2)
    assert sorted(env.pods()) == ["web-0", "web-1"]
    await env.make_ready("web-1")
    await env.sync(2)
    await env.make_ready("web-2")
    await env.sync()
    status = env.sts()["status"]
    assert status["replicas"] == 3 and status["readyReplicas"] == 3 and status["availableReplicas"] == 3
    assert status["currentRevision"] == status["updateRevision"] == labels["controller-revision-hash"]
    assert status["currentReplicas"] == 3 and status["updatedReplicas"] == 3


async def test_parallel_creates_all_at_once(env: Env) -> None:
    await start(env, sts_body(podManagementPolicy="Parallel"))
    await env.sync()
    assert sorted(env.pods()) == ["web-0", "web-1", "web-2"]


async def test_volume_claim_templates_make_claims_and_mounts(env: Env) -> None:
    claim = {"metadata": {"name": "data", "labels": {"tier": "db"}},
             "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}  # fmt: skip
    await start(env, sts_body(replicas=1, volumeClaimTemplates=[claim]))
    await env.sync()
    pvc = env.api.objects[(PVC, "default", "data-web-0")]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert pvc["metadata"]["labels"] == {"tier": "db", "app": "web"}
    volumes = env.pods()["web-0"]["spec"]["volumes"]
    assert volumes == [{"name": "data", "persistentVolumeClaim": {"claimName": "data-web-0"}}]


async def test_scale_down_goes_from_the_highest_ordinal(env: Env) -> None:
    await start(env, sts_body(podManagementPolicy="Parallel"))
    await env.sync()
    await env.make_ready()
    await env.update(replicas=1, podManagementPolicy="OrderedReady")
    await env.sync()
    assert sorted(env.pods()) == ["web-0", "web-1"]  # web-2 first, one at a time
    await env.sync()
    assert sorted(env.pods()) == ["web-0"]


async def test_rolling_update_goes_down_from_the_top_and_honours_the_partition(env: Env) -> None:
    body = sts_body(updateStrategy={"type": "RollingUpdate", "rollingUpdate": {"partition": 1}})
    await start(env, body)
    for _ in range(3):
        await env.sync()
        await env.make_ready()
    old = env.pods()["web-0"]["metadata"]["labels"]["controller-revision-hash"]
    template = store.copy(env.sts()["spec"]["template"])
    template["spec"]["containers"][0]["image"] = "web:2"
    await env.update(template=template)
    await env.sync()
    assert sorted(env.pods()) == ["web-0", "web-1"]  # web-2 replaced first
    for _ in range(4):
        await env.sync()
        await env.make_ready()
    revs = {n: p["metadata"]["labels"]["controller-revision-hash"] for n, p in env.pods().items()}
    assert revs["web-0"] == old  # below the partition
    assert revs["web-1"] == revs["web-2"] != old
    assert env.pods()["web-2"]["spec"]["containers"][0]["image"] == "web:2"
    status = env.sts()["status"]
    assert status["updatedReplicas"] == 2 and status["currentRevision"] == old
    assert status["updateRevision"] == revs["web-2"]


async def test_failed_pods_are_recreated(env: Env) -> None:
    await start(env, sts_body(replicas=1))
    await env.sync()
    failed = store.copy(env.pods()["web-0"])
    failed["status"] = {"phase": "Failed"}
    await env.api.update_status(PODS, failed)
    await env.sync(2)
    assert env.pods()["web-0"]["metadata"]["uid"] != failed["metadata"]["uid"]


def test_ordinal_of() -> None:
    assert statefulset.ordinal_of("web", {"metadata": {"name": "web-12"}}) == 12
    assert statefulset.ordinal_of("web", {"metadata": {"name": "web-x"}}) is None
    assert statefulset.ordinal_of("web", {"metadata": {"name": "webby-1"}}) is None
