"""Endpoints and EndpointSlices from services and pods, against the in-memory API."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from services.client import events, fake, informer, resources
from services.controllers import base, endpoints, podutil
from services.controllers import settings as settings_

PODS, SVC, EP, SLICES = resources.PODS, resources.SERVICES, resources.ENDPOINTS, resources.ENDPOINTSLICES
NS = "default"


def a_pod(name: str, ip: str | None, *, ready: bool = True, labels: dict[str, str] | None = None,
          ports: list[dict[str, Any]] | None = None, deleting: bool = False, phase: str = "Running") -> dict[str, Any]:  # fmt: skip
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    if ip:
        status["podIP"], status["podIPs"] = ip, [{"ip": ip}]
    md: dict[str, Any] = {
        "name": name,
        "namespace": NS,
        "uid": f"uid-{name}",
        "labels": labels or {"app": "web"},
    }
    if deleting:
        md["deletionTimestamp"] = podutil.format_time(podutil.now())
    container = {"name": "c", "image": "x", "ports": ports or [{"name": "http", "containerPort": 8080}]}
    return {"metadata": md, "spec": {"nodeName": "n1", "containers": [container]}, "status": status}


def a_service(name: str = "web", **spec: Any) -> dict[str, Any]:
    ports = spec.pop("ports", [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}])
    return {"metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "labels": {"team": "a"}},
            "spec": {"selector": {"app": "web"}, "ports": ports, **spec}}  # fmt: skip


# -- pure ------------------------------------------------------------------------------------------


def test_subsets_split_ready_and_not_ready_and_resolve_named_ports() -> None:
    pods = [a_pod("a", "10.0.0.2"), a_pod("b", "10.0.0.1", ready=False), a_pod("c", None),
            a_pod("d", "10.0.0.4", deleting=True), a_pod("e", "10.0.0.5", phase="Succeeded")]  # fmt: skip
    [subset] = endpoints.endpoint_subsets(a_service(), pods)
    assert [a["ip"] for a in subset["addresses"]] == ["10.0.0.2"]
    assert [a["ip"] for a in subset["notReadyAddresses"]] == ["10.0.0.1"]
    assert subset["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    assert subset["addresses"][0]["targetRef"] == {
        "kind": "Pod",
        "namespace": NS,
        "name": "a",
        "uid": "uid-a",
    }
    assert subset["addresses"][0]["nodeName"] == "n1"


def test_pods_with_different_ports_land_in_different_subsets() -> None:
    pods = [a_pod("a", "10.0.0.1"), a_pod("b", "10.0.0.2", ports=[{"name": "http", "containerPort": 9090}]),
            a_pod("c", "10.0.0.3", ports=[{"name": "other", "containerPort": 1}])]  # fmt: skip
    subsets = endpoints.endpoint_subsets(a_service(), pods)
    assert sorted((s["ports"][0]["port"], [a["ip"] for a in s["addresses"]]) for s in subsets) == [
        (8080, ["10.0.0.1"]), (9090, ["10.0.0.2"])]  # fmt: skip


def test_publish_not_ready_addresses_counts_everyone_ready() -> None:
    pods = [a_pod("a", "10.0.0.1", ready=False), a_pod("b", "10.0.0.2", deleting=True)]
    [subset] = endpoints.endpoint_subsets(a_service(publishNotReadyAddresses=True), pods)
    assert [a["ip"] for a in subset["addresses"]] == ["10.0.0.1", "10.0.0.2"]


def test_numeric_and_missing_target_ports() -> None:
    pod = a_pod("a", "10.0.0.1")
    assert endpoints.resolve_port(pod, {"port": 80}) == 80
    assert endpoints.resolve_port(pod, {"port": 80, "targetPort": 8443}) == 8443
    assert endpoints.resolve_port(pod, {"port": 80, "targetPort": "nope"}) is None
    assert endpoints.resolve_port(pod, {"port": 80, "targetPort": "http", "protocol": "UDP"}) is None


# -- the controllers -----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running(api: fake.FakeApi, *controllers: Any, **settings: Any) -> AsyncIterator[None]:
    factory = informer.InformerFactory(api)
    recorder = events.EventRecorder(api, component="endpoint-controller")
    config = settings_.ControllersSettings(**settings)
    for controller in controllers:
        controller.setup(
            base.ControllerContext(api=api, informers=factory, recorder=recorder, settings=config)
        )
    await recorder.start()
    await factory.start()
    tasks = [asyncio.create_task(c.run()) for c in controllers]
    try:
        yield
    finally:
        for task in tasks:
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


def slices(api: fake.FakeApi, service: str = "web") -> list[dict[str, Any]]:
    return [o for (r, _, _), o in api.objects.items()
            if r == SLICES and o["metadata"]["labels"].get(endpoints.SERVICE_NAME_LABEL) == service]  # fmt: skip


async def test_endpoints_follow_pods_and_go_with_the_service() -> None:
    api = fake.FakeApi()
    async with running(api, endpoints.EndpointsController()):
        svc = await api.create(SVC, a_service())
        await eventually(lambda: (EP, NS, "web") in api.objects)
        assert not api.objects[(EP, NS, "web")].get("subsets")
        labels = api.objects[(EP, NS, "web")]["metadata"]["labels"]
        assert labels == {"team": "a", endpoints.SKIP_MIRROR_LABEL: "true"}
        await api.create(PODS, a_pod("a", "10.0.0.1"))

        def ready_ips() -> list[str]:
            subsets = api.objects[(EP, NS, "web")].get("subsets") or []
            return [a["ip"] for s in subsets for a in s.get("addresses") or ()]

        await eventually(lambda: ready_ips() == ["10.0.0.1"])
        await api.delete(SVC, "web", namespace=NS)
        await eventually(lambda: (EP, NS, "web") not in api.objects)
        assert svc


async def test_slices_hold_at_most_the_configured_endpoints_each() -> None:
    api = fake.FakeApi()
    for i in range(25):
        await api.create(PODS, a_pod(f"p{i}", f"10.0.1.{i + 1}", ready=i % 2 == 0))
    async with running(api, endpoints.EndpointSliceController(), max_endpoints_per_slice=10):
        svc = await api.create(SVC, a_service())
        made = await eventually(
            lambda: (
                len(slices(api)) == 3 and sum(len(s["endpoints"]) for s in slices(api)) == 25 and slices(api)
            )
        )
        await asyncio.sleep(0.1)
        assert len(slices(api)) == 3  # no duplicates from a lagging cache
        for slc in made:
            md = slc["metadata"]
            assert md["generateName"] == "web-" and len(slc["endpoints"]) <= 10
            assert (
                md["labels"][endpoints.MANAGED_BY_LABEL] == endpoints.MANAGED_BY
                and md["labels"]["team"] == "a"
            )
            assert md["ownerReferences"][0]["uid"] == svc["metadata"]["uid"]
            assert slc["addressType"] == "IPv4"
            assert slc["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
        every = {e["targetRef"]["name"]: e for s in made for e in s["endpoints"]}
        assert every["p0"]["conditions"] == {"ready": True, "serving": True, "terminating": False}
        assert every["p1"]["conditions"] == {"ready": False, "serving": False, "terminating": False}
        for i in range(5, 25):
            await api.delete(PODS, f"p{i}", namespace=NS)
        await eventually(lambda: len(slices(api)) == 1 and len(slices(api)[0]["endpoints"]) == 5)


async def test_terminating_pods_stay_in_slices_as_terminating() -> None:
    api = fake.FakeApi()
    await api.create(PODS, a_pod("going", "10.0.0.9", deleting=True))
    async with running(api, endpoints.EndpointSliceController()):
        await api.create(SVC, a_service())
        [slc] = await eventually(lambda: slices(api) and slices(api)[0]["endpoints"] and slices(api))
        assert slc["endpoints"][0]["conditions"] == {"ready": False, "serving": True, "terminating": True}


async def test_a_service_selecting_nothing_keeps_one_empty_slice() -> None:
    api = fake.FakeApi()
    async with running(api, endpoints.EndpointSliceController()):
        await api.create(SVC, a_service())
        [slc] = await eventually(lambda: slices(api))
        assert slc["endpoints"] == [] and slc["ports"] == []
        await api.create(
            SVC, {"metadata": {"name": "manual", "namespace": NS}, "spec": {"ports": [{"port": 1}]}}
        )
        await asyncio.sleep(0.05)
        assert not slices(api, "manual")  # no selector: not ours
