"""The namespace controller against the in-memory API, with a small discovery document."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from services.client import errors, events, fake, informer, resources
from services.controllers import base, namespace, podutil

NSR, CM, DEP = resources.NAMESPACES, resources.CONFIGMAPS, resources.DEPLOYMENTS
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


class DiscoveringApi(fake.FakeApi):
    """``FakeApi`` plus the discovery documents ``namespace.discover`` reads."""

    def __init__(self, *, broken: bool = False) -> None:
        super().__init__()
        self.broken = broken  # also list a group whose discovery fails

    async def request(self, method: str, path: str, **_: Any) -> Any:
        if path == "/apis":
            groups = [{"name": "apps", "preferredVersion": {"groupVersion": "apps/v1"}}]
            if self.broken:
                groups.append({"name": "broken.example", "versions": [{"groupVersion": "broken.example/v1"}]})
            return {"groups": groups}
        if path == "/api/v1":
            return {"resources": [
                {"name": "configmaps", "namespaced": True, "kind": "ConfigMap", "verbs": VERBS},
                {"name": "namespaces", "namespaced": False, "kind": "Namespace", "verbs": VERBS},
                {"name": "namespaces/finalize", "namespaced": False, "kind": "Namespace", "verbs": ["update"]},
                {"name": "bindings", "namespaced": True, "kind": "Binding", "verbs": ["create"]},
            ]}  # fmt: skip
        if path == "/apis/apps/v1":
            return {
                "resources": [
                    {"name": "deployments", "namespaced": True, "kind": "Deployment", "verbs": VERBS}
                ]
            }
        raise errors.ApiError(503, "ServiceUnavailable", f"{path} is unavailable")


@contextlib.asynccontextmanager
async def running(api: fake.FakeApi) -> AsyncIterator[namespace.NamespaceController]:
    factory = informer.InformerFactory(api)
    recorder = events.EventRecorder(api, component="namespace-controller")
    controller = namespace.NamespaceController()
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


async def eventually(check: Callable[[], Any], *, within: float = 5.0) -> Any:
    deadline = time.monotonic() + within
    while not (result := check()):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)
    return result


async def terminating(api: fake.FakeApi, name: str) -> None:
    """What ``DELETE namespaces/<name>`` leaves behind: a namespace marked, and held by its finalizer."""
    await api.patch(NSR, name, {"metadata": {"deletionTimestamp": podutil.format_time(podutil.now())},
                                "status": {"phase": "Terminating"}})  # fmt: skip


async def test_discovery_lists_top_level_resources_and_reports_broken_groups() -> None:
    found, failed = await namespace.discover(DiscoveringApi(broken=True))
    names = {(d.resource.group, d.resource.plural, d.resource.namespaced) for d in found}
    assert names == {
        ("", "configmaps", True),
        ("", "namespaces", False),
        ("", "bindings", True),
        ("apps", "deployments", True),
    }
    assert failed == ["broken.example/v1"]


async def test_a_terminating_namespace_is_emptied_then_finalized() -> None:
    api = DiscoveringApi()
    for ns in ("doomed", "keep"):
        await api.create(NSR, {"metadata": {"name": ns}, "spec": {"finalizers": ["kubernetes"]}})
        await api.create(CM, {"metadata": {"name": "cfg", "namespace": ns}})
    await api.create(DEP, {"metadata": {"name": "web", "namespace": "doomed"}})
    async with running(api):
        await terminating(api, "doomed")
        await eventually(lambda: not api.objects[(NSR, "", "doomed")]["spec"].get("finalizers"))
        assert (CM, "doomed", "cfg") not in api.objects and (DEP, "doomed", "web") not in api.objects
        assert (CM, "keep", "cfg") in api.objects  # other namespaces untouched


async def test_what_is_left_is_recorded_and_retried() -> None:
    api = DiscoveringApi(broken=True)
    await api.create(NSR, {"metadata": {"name": "stuck"}, "spec": {"finalizers": ["kubernetes"]}})
    await api.create(CM, {"metadata": {"name": "cfg", "namespace": "stuck"}})
    api.fail_next("delete", errors.ApiError(500, "InternalError", "etcd is sad"))
    async with running(api):
        await terminating(api, "stuck")

        def reported() -> set[str]:
            """Every condition the namespace has shown (the next round may clear one at once)."""
            return {c["type"] for _, r, _, obj in api.history if r == NSR
                    for c in (obj.get("status") or {}).get("conditions") or ()}  # fmt: skip

        await eventually(lambda: "NamespaceDeletionContentFailure" in reported())
        assert "NamespaceDeletionDiscoveryFailure" in reported()  # the broken group
        await eventually(lambda: (CM, "stuck", "cfg") not in api.objects)
        # The broken group keeps the namespace from being finalized, as upstream does.
        assert api.objects[(NSR, "", "stuck")]["spec"]["finalizers"] == ["kubernetes"]
