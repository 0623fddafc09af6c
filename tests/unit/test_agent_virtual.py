"""Virtual nodes' pure parts: QoS class, the kubelet-like pod status, pod addresses."""

from __future__ import annotations

from typing import Any

from services.agent import virtual


def pod(*containers: dict[str, Any], init: tuple[dict[str, Any], ...] = (), **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "default", "uid": "u1"},
        "spec": {"nodeName": "n-0", "containers": list(containers), "initContainers": list(init)},
        "status": status,
    }


def container(name: str = "app", **resources: Any) -> dict[str, Any]:
    return {"name": name, "image": "nginx", "resources": resources}


def test_qos_class() -> None:
    assert virtual.qos_class(pod(container())) == "BestEffort"
    limits = {"cpu": "1", "memory": "1Gi"}
    assert virtual.qos_class(pod(container(limits=limits))) == "Guaranteed"
    assert virtual.qos_class(pod(container(limits=limits, requests=limits))) == "Guaranteed"
    assert virtual.qos_class(pod(container(limits=limits, requests={"cpu": "500m"}))) == "Burstable"
    assert virtual.qos_class(pod(container(requests={"cpu": "1"}))) == "Burstable"
    assert virtual.qos_class(pod(container(limits=limits), container("side"))) == "Burstable"


def test_pod_status_is_kubelet_like() -> None:
    scheduled = {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2000-01-01T00:00:00Z"}
    sidecar = {"name": "proxy", "image": "envoy", "restartPolicy": "Always"}
    status = virtual.pod_status(
        pod(container(), init=({"name": "setup", "image": "busybox"}, sidecar), conditions=[scheduled]),
        host_ip="192.0.2.1", pod_ip="10.42.0.2",
    )  # fmt: skip
    assert status["phase"] == "Running" and status["qosClass"] == "BestEffort"
    assert status["hostIP"] == "192.0.2.1" and status["hostIPs"] == [{"ip": "192.0.2.1"}]
    assert status["podIP"] == "10.42.0.2" and status["podIPs"] == [{"ip": "10.42.0.2"}]
    kinds = {c["type"]: c for c in status["conditions"]}
    assert {"Initialized", "Ready", "ContainersReady", "PodScheduled"} <= set(kinds)
    assert kinds["PodScheduled"] is scheduled  # the scheduler's condition is kept as it was
    (app,) = status["containerStatuses"]
    assert app["state"]["running"]["startedAt"] == status["startTime"]
    assert (app["ready"], app["started"], app["restartCount"], app["lastState"]) == (True, True, 0, {})
    assert app["imageID"].startswith("sha256:") and app["containerID"].startswith("virtual://")
    setup, proxy = status["initContainerStatuses"]
    assert setup["state"]["terminated"]["exitCode"] == 0 and setup["started"] is False
    assert "running" in proxy["state"]
    again = virtual.pod_status(pod(container(), startTime="2001-01-01T00:00:00Z"), host_ip="h", pod_ip="i")
    assert again["startTime"] == "2001-01-01T00:00:00Z"


def test_is_reported() -> None:
    assert not virtual.is_reported(pod(container()))
    done = virtual.pod_status(pod(container()), host_ip="h", pod_ip="i")
    assert virtual.is_reported(pod(container(), **done))


def test_pod_ips_from_the_cidr() -> None:
    ips = virtual.PodIPs()
    assert ips.assign("n", "a", "10.42.1.0/30") == "10.42.1.2"  # .1 is the bridge's
    assert ips.assign("n", "a", "10.42.1.0/30") == "10.42.1.2"  # stable for a pod
    assert ips.assign("n", "b", "10.42.1.0/30") is None  # a /30 has two hosts
    ips.release("a")
    assert ips.assign("n", "b", "10.42.1.0/30") == "10.42.1.2"
    ips.adopt("m", "c", "10.42.2.2")  # after a restart: keep what the pod has
    assert ips.assign("m", "d", "10.42.2.0/24") == "10.42.2.3"


def test_node_names() -> None:
    assert virtual.node_names("v", 3) == ["v-0", "v-1", "v-2"]
