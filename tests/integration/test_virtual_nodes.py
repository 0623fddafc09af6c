"""``--virtual-nodes N`` against a real API server: N Ready nodes, their pods Running, deletes finished.

The API server runs as in ``test_agent_join`` (``tests/integration/cluster.py``: in-memory kine, data
dir prepared by the supervisor's ``profiles.prepare``). The agent gets the admin kubeconfig, as
virtual nodes outside the server's process do (one node certificate may act for one node only).
Pods are bound by ``spec.nodeName`` directly: no scheduler is needed to exercise the kubelet side.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from services.agent import component, virtual
from services.agent import settings as agent_settings
from services.client import api, errors, resources
from supervisor import kubeconfig
from tests.integration.cluster import Cluster, eventually, fixtures

NODES = 20
NS = "default"


data_dir, cluster, admin = fixtures(prepare="profile", fixed_port=True)


@pytest.fixture
async def agent(cluster: Cluster, tmp_path: Path) -> AsyncIterator[component.Agent]:
    settings = agent_settings.AgentSettings(
        kubeconfig=kubeconfig.component_path(cluster.data_dir, "admin"),
        data_dir=tmp_path / "agent",
        node_name="vnode",
        virtual_nodes=NODES,
        node_ip="192.0.2.10",
        lease_renew_interval=0.2,
        status_report_interval=0.5,
    )
    made = component.Agent(settings)
    try:
        await asyncio.wait_for(made.start(), 60)
        yield made
    finally:
        await made.stop()


def pod(name: str, node: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "nginx:1.27"}], **spec},
    }


async def test_virtual_nodes_are_ready_with_leases(admin: api.ApiClient, agent: component.Agent) -> None:
    nodes = (await admin.list(resources.NODES, label_selector=f"{virtual.VIRTUAL_LABEL}=true"))["items"]
    assert sorted(n["metadata"]["name"] for n in nodes) == sorted(f"vnode-{i}" for i in range(NODES))
    for node in nodes:
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True"
        assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("virtual://")
        assert node["status"]["capacity"]["pods"] == "110"
    first = await admin.get(resources.LEASES, "vnode-7", namespace="kube-node-lease")

    async def renewed() -> bool:
        lease = await admin.get(resources.LEASES, "vnode-7", namespace="kube-node-lease")
        return lease["spec"]["renewTime"] != first["spec"]["renewTime"]

    await eventually(renewed)


async def test_pods_run_with_kubelet_status(admin: api.ApiClient, agent: component.Agent) -> None:
    await admin.patch(
        resources.NODES, "vnode-3", {"spec": {"podCIDR": "10.42.3.0/24", "podCIDRs": ["10.42.3.0/24"]}}
    )
    await asyncio.sleep(0)  # the informer learns the podCIDR from its watch; the pod's sync may come first
    guaranteed = {"resources": {"limits": {"cpu": "100m", "memory": "64Mi"}}}
    body = pod("web", "vnode-3", initContainers=[{"name": "init", "image": "busybox", **guaranteed}])
    body["spec"]["containers"][0].update(guaranteed)
    await admin.create(resources.PODS, body)
    for i in range(10):
        await admin.create(resources.PODS, pod(f"many-{i}", f"vnode-{i}"))

    async def running(name: str) -> dict[str, Any] | None:
        found = await admin.get(resources.PODS, name, namespace=NS)
        return found if found.get("status", {}).get("phase") == "Running" else None

    web = await eventually(lambda: running("web"))
    status = web["status"]
    assert {c["type"] for c in status["conditions"] if c["status"] == "True"} >= {
        "PodScheduled", "Initialized", "ContainersReady", "Ready",
    }  # fmt: skip
    (container,) = status["containerStatuses"]
    assert container["ready"] is True and container["started"] is True and container["restartCount"] == 0
    assert "running" in container["state"] and container["image"] == "nginx:1.27" and container["imageID"]
    assert status["initContainerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    assert status["hostIP"] == "192.0.2.10" and status["qosClass"] == "Guaranteed"
    if ipaddress.ip_address(status["podIP"]) != ipaddress.ip_address("192.0.2.10"):
        assert ipaddress.ip_address(status["podIP"]) in ipaddress.ip_network("10.42.3.0/24")
    for i in range(10):
        many = await eventually(lambda i=i: running(f"many-{i}"))
        assert many["status"]["qosClass"] == "BestEffort"


async def test_pod_ip_comes_from_the_pod_cidr(admin: api.ApiClient, agent: component.Agent) -> None:
    await admin.patch(
        resources.NODES, "vnode-5", {"spec": {"podCIDR": "10.42.5.0/24", "podCIDRs": ["10.42.5.0/24"]}}
    )

    async def cidr_seen() -> bool:
        cached = agent.virtual._nodes.store.get("vnode-5")  # type: ignore[union-attr]
        return bool(cached and cached["spec"].get("podCIDR"))

    await eventually(cidr_seen)
    await admin.create(resources.PODS, pod("addressed", "vnode-5"))

    async def addressed() -> str:
        found = await admin.get(resources.PODS, "addressed", namespace=NS)
        return found.get("status", {}).get("podIP", "")

    ip = await eventually(addressed)
    assert ipaddress.ip_address(ip) in ipaddress.ip_network("10.42.5.0/24")
    assert ip != "10.42.5.1"  # the bridge's


async def test_graceful_delete_is_finished_by_the_agent(admin: api.ApiClient, agent: component.Agent) -> None:
    await admin.create(resources.PODS, pod("doomed", "vnode-1"))

    async def running() -> bool:
        found = await admin.get(resources.PODS, "doomed", namespace=NS)
        return found.get("status", {}).get("phase") == "Running"

    await eventually(running)
    await admin.delete(resources.PODS, "doomed", namespace=NS, grace_period_seconds=30)

    async def gone() -> bool:
        try:
            await admin.get(resources.PODS, "doomed", namespace=NS)
        except errors.ApiError as exc:
            return exc.code == 404
        return False

    await eventually(gone)


async def test_run_to_completion_pods_succeed(admin: api.ApiClient, agent: component.Agent) -> None:
    body = pod("batch", "vnode-2")
    body["spec"]["restartPolicy"] = "Never"
    await admin.create(resources.PODS, body)

    async def succeeded() -> dict[str, Any] | None:
        found = await admin.get(resources.PODS, "batch", namespace=NS)
        return found if found.get("status", {}).get("phase") == "Succeeded" else None

    done = await eventually(succeeded)
    (container,) = done["status"]["containerStatuses"]
    assert container["state"]["terminated"]["exitCode"] == 0 and container["ready"] is False
    ready = next(c for c in done["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "PodCompleted")
