"""LimitRange defaults and bounds, and ResourceQuota enforcement, through the official Python client
and real kubectl.

Runs against the shared supervisor-started server, which runs no controllers: admission alone is
checked there. Where ``status.used`` must show (``kubectl describe quota``), the test starts the
controller manager itself, as a user would on another machine (``k3s-supervisor run controllers``
with the admin's kubeconfig), with the resourcequota controller alone and no leader election, and
stops it at the end: the other tests on that cluster never see a controller.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from kubernetes import client as k8s
from kubernetes.client import ApiException

from tests.e2e import conftest as e2e

if TYPE_CHECKING:
    from tests.e2e.apiserver_fixtures import Cluster, Kubectl

pytest_plugins = ["tests.e2e.apiserver_fixtures"]
DEADLINE = 60.0  # seconds the controller may take to show usage before the test fails
STOP_DEADLINE = 15.0  # seconds between SIGTERM and SIGKILL


def pod(name: str, **resources: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "c", "image": "busybox"}
    if resources:
        container["resources"] = resources
    return {"metadata": {"name": name}, "spec": {"containers": [container]}}


def refused(call: Any, *args: Any) -> str:
    with pytest.raises(ApiException) as caught:
        call(*args)
    assert caught.value.status == 403, caught.value.body
    return str(caught.value.body)


def test_limit_ranges_default_and_bound_containers(client: k8s.ApiClient, namespace: str) -> None:
    core = k8s.CoreV1Api(client)
    core.create_namespaced_limit_range(namespace, {"metadata": {"name": "limits"}, "spec": {"limits": [{
        "type": "Container", "default": {"cpu": "500m", "memory": "128Mi"},
        "defaultRequest": {"cpu": "100m"}, "max": {"cpu": "1"}, "min": {"memory": "16Mi"}}]}})  # fmt: skip
    made = core.create_namespaced_pod(namespace, pod("defaulted"))
    resources = made.spec.containers[0].resources
    assert resources.requests == {"cpu": "100m", "memory": "128Mi"}
    assert resources.limits == {"cpu": "500m", "memory": "128Mi"}
    assert "LimitRanger plugin set" in made.metadata.annotations["kubernetes.io/limit-ranger"]
    body = refused(core.create_namespaced_pod, namespace, pod("greedy", limits={"cpu": "2"}))
    assert "maximum cpu usage per Container is 1, but limit is 2" in body
    body = refused(core.create_namespaced_pod, namespace, pod("tiny", requests={"memory": "8Mi"}))
    assert "minimum memory usage per Container is 16Mi, but request is 8Mi" in body


def test_resource_quotas_refuse_what_exceeds_them(client: k8s.ApiClient, namespace: str) -> None:
    core = k8s.CoreV1Api(client)
    core.create_namespaced_resource_quota(namespace, {"metadata": {"name": "count"},
                                                      "spec": {"hard": {"pods": "1", "configmaps": "2"}}})  # fmt: skip
    core.create_namespaced_pod(namespace, pod("first"))
    body = refused(core.create_namespaced_pod, namespace, pod("second"))
    assert "exceeded quota: count, requested: pods=1, used: pods=1, limited: pods=1" in body
    for i in range(2):
        core.create_namespaced_config_map(namespace, {"metadata": {"name": f"cm-{i}-{uuid.uuid4().hex[:6]}"}})
    body = refused(core.create_namespaced_config_map, namespace, {"metadata": {"name": "one-too-many"}})
    assert "exceeded quota: count" in body and "configmaps=2" in body

    core.delete_namespaced_resource_quota("count", namespace)
    core.create_namespaced_resource_quota(namespace, {"metadata": {"name": "compute"},
                                                      "spec": {"hard": {"requests.cpu": "1"}}})  # fmt: skip
    body = refused(core.create_namespaced_pod, namespace, pod("unstated"))
    assert "failed quota: compute: must specify requests.cpu for: c" in body
    core.create_namespaced_pod(namespace, pod("fits", requests={"cpu": "600m"}))
    body = refused(core.create_namespaced_pod, namespace, pod("over", requests={"cpu": "600m"}))
    assert (
        "exceeded quota: compute, requested: requests.cpu=600m, used: requests.cpu=600m, limited: requests.cpu=1"
        in body
    )


# -- scoped quotas with kubectl --------------------------------------------------------------------


@pytest.fixture
def quota_controller(cluster: Cluster, tmp_path: Path) -> Iterator[None]:
    """``k3s-supervisor run controllers`` with only the resourcequota controller, as the admin."""
    data_dir = tmp_path / "controllers"
    cred = data_dir / "server" / "cred"
    cred.mkdir(parents=True)
    shutil.copy(cluster.kubeconfig, cred / "controller.kubeconfig")  # where `run controllers` looks
    log_path = tmp_path / "controllers.log"
    command = [
        sys.executable, "-m", "supervisor", "run", "controllers", "--config", "", "--data-dir", str(data_dir),
        "--kube-controller-manager-arg", "controllers=resourcequota",
        "--kube-controller-manager-arg", "leader-elect=false",
    ]  # fmt: skip
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   env=e2e.child_env(), start_new_session=True)  # fmt: skip
    try:
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        print(f"--- controllers log ---\n{log_path.read_text(errors='replace')[-10_000:]}")


def manifest_pod(name: str, *, cpu: str | None = None) -> str:
    resources = f"\n      resources: {{requests: {{cpu: '{cpu}'}}}}" if cpu else ""
    return f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  containers:
    - name: c
      image: busybox{resources}
"""


def manifest_quota(name: str, hard: str, scopes: str) -> str:
    return f"""apiVersion: v1
kind: ResourceQuota
metadata: {{name: {name}}}
spec:
  hard: {hard}
  scopes: {scopes}
"""


def described(kubectl: Kubectl, name: str, *rows: tuple[str, str, str]) -> str:
    """``kubectl describe quota NAME`` once its table shows ``rows`` (resource, used, hard)."""
    end = time.monotonic() + DEADLINE
    text = ""
    while time.monotonic() < end:
        text = kubectl("describe", "quota", name)
        if all(re.search(rf"^{re.escape(r)}\s+{re.escape(u)}\s+{re.escape(h)}\s*$", text, re.M) for r, u, h in rows):
            return text
        time.sleep(0.2)
    raise AssertionError(f"kubectl describe quota {name} never showed {rows}:\n{text}")


def test_scoped_quotas_with_kubectl(kubectl: Kubectl, quota_controller: None) -> None:
    refused = kubectl.fails("apply", "-f", "-", input=manifest_quota("bad", "{requests.cpu: '1'}", "[BestEffort]"))
    assert (
        'The ResourceQuota "bad" is invalid: spec.scopes: Invalid value: []core.ResourceQuotaScope{"BestEffort"}: '
        "unsupported scope applied to resource" in refused
    )
    kubectl("apply", "-f", "-", input=manifest_quota("best-effort", "{pods: '1'}", "[BestEffort]"))
    kubectl("apply", "-f", "-", input=manifest_quota("not-best-effort", "{pods: '5', requests.cpu: '2'}", "[NotBestEffort]"))
    kubectl("apply", "-f", "-", input=manifest_pod("free-1"))
    refused = kubectl.fails("apply", "-f", "-", input=manifest_pod("free-2"))
    assert "exceeded quota: best-effort, requested: pods=1, used: pods=1, limited: pods=1" in refused
    kubectl("apply", "-f", "-", input=manifest_pod("burst-1", cpu="500m"))  # counted by the other quota only
    kubectl("apply", "-f", "-", input=manifest_pod("burst-2", cpu="500m"))
    text = described(kubectl, "best-effort", ("pods", "1", "1"))
    assert "Scopes:" in text and "BestEffort" in text
    described(kubectl, "not-best-effort", ("pods", "2", "5"), ("requests.cpu", "1", "2"))
    refused = kubectl.fails("apply", "-f", "-", input=manifest_pod("burst-3", cpu="1500m"))
    assert (
        "exceeded quota: not-best-effort, requested: requests.cpu=1500m, used: requests.cpu=1, "
        "limited: requests.cpu=2" in refused
    )


def manifest_claim(name: str, size: str, volume_class: str | None = None) -> str:
    chosen = f"\n  volumeAttributesClassName: {volume_class}" if volume_class else ""
    return f"""apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {name}}}
spec:
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: {size}}}}}{chosen}
"""


def test_a_volume_attributes_class_quota_with_kubectl(kubectl: Kubectl, quota_controller: None) -> None:
    refused = kubectl.fails("apply", "-f", "-", input=manifest_quota("bad", "{pods: '1'}", "[VolumeAttributesClass]"))
    assert "unsupported scope applied to resource" in refused
    kubectl("apply", "-f", "-", input="""apiVersion: v1
kind: ResourceQuota
metadata: {name: gold}
spec:
  hard: {persistentvolumeclaims: '1', requests.storage: 2Gi}
  scopeSelector:
    matchExpressions: [{scopeName: VolumeAttributesClass, operator: In, values: [gold]}]
""")
    kubectl("apply", "-f", "-", input=manifest_claim("gold-1", "1Gi", "gold"))
    kubectl("apply", "-f", "-", input=manifest_claim("plain-1", "5Gi"))  # no class: not this quota's
    kubectl("apply", "-f", "-", input=manifest_claim("silver-1", "5Gi", "silver"))
    refused = kubectl.fails("apply", "-f", "-", input=manifest_claim("gold-2", "1Gi", "gold"))
    assert (
        "exceeded quota: gold, requested: persistentvolumeclaims=1, used: persistentvolumeclaims=1, "
        "limited: persistentvolumeclaims=1" in refused
    )
    described(kubectl, "gold", ("persistentvolumeclaims", "1", "1"), ("requests.storage", "1Gi", "2Gi"))
