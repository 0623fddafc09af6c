"""Priority admission through the official Python client: classes give pods their priority.

Runs against the shared supervisor-started server (its bootstrap creates the system classes).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client import ApiException

pytest_plugins = ["tests.e2e.apiserver_fixtures"]


def unique() -> str:
    return uuid.uuid4().hex[:8]


def test_pods_get_their_priority_from_their_class(client: k8s.ApiClient, namespace: str) -> None:
    scheduling, core = k8s.SchedulingV1Api(client), k8s.CoreV1Api(client)
    assert scheduling.read_priority_class("system-node-critical").value == 2000001000
    with pytest.raises(ApiException) as denied:
        scheduling.delete_priority_class("system-cluster-critical")
    assert denied.value.status == 403

    name = f"high-{unique()}"
    scheduling.create_priority_class({"metadata": {"name": name}, "value": 1000, "preemptionPolicy": "Never"})
    try:

        def pod(pod_name: str, **spec: Any) -> dict[str, Any]:
            return {"metadata": {"name": pod_name},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec}}  # fmt: skip

        high = core.create_namespaced_pod(namespace, pod("high", priorityClassName=name))
        assert (high.spec.priority, high.spec.preemption_policy) == (1000, "Never")
        plain = core.create_namespaced_pod(namespace, pod("plain"))
        assert (plain.spec.priority, plain.spec.preemption_policy) == (0, "PreemptLowerPriority")
        for bad, words in (
            (pod("unknown", priorityClassName="nope"), "no PriorityClass with name nope was found"),
            (pod("forged", priorityClassName=name, priority=5), "must not be provided in pod spec"),
        ):
            with pytest.raises(ApiException) as refused:
                core.create_namespaced_pod(namespace, bad)
            assert refused.value.status == 403 and words in refused.value.body
    finally:
        scheduling.delete_priority_class(name)
