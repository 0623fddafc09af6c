"""Manifests and output readers shared by the kubectl 1.37 and kubectl 1.20 end-to-end tests.

A plain module (no fixtures): ``test_kubectl.py`` and ``test_kubectl_120.py`` import it, while the
cluster fixtures come from ``apiserver_fixtures`` through ``pytest_plugins`` only. What differs
between the two kubectl versions (how a manifest file is written, how kubectl is run) stays in
their modules; these helpers take any kubectl runner that returns stdout when called.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from tests.e2e import conftest as e2e

# The group versions both kubectl versions must see in ``kubectl api-versions``.
SERVED_GROUP_VERSIONS = frozenset(
    {
        "v1",
        "apps/v1",
        "batch/v1",
        "coordination.k8s.io/v1",
        "discovery.k8s.io/v1",
        "events.k8s.io/v1",
        "networking.k8s.io/v1",
        "policy/v1",
        "rbac.authorization.k8s.io/v1",
        "scheduling.k8s.io/v1",
        "storage.k8s.io/v1",
        "authentication.k8s.io/v1",
        "authorization.k8s.io/v1",
        "apiextensions.k8s.io/v1",
        "k3s.cattle.io/v1",
    }
)


class KubectlRunner(Protocol):
    """kubectl as the tests call it: arguments in, stdout out (asserting it succeeded)."""

    def __call__(self, *args: str, input: str | None = None) -> str: ...


def unique() -> str:
    """A short random suffix: names that no other test (or earlier run on the cluster) uses."""
    return uuid.uuid4().hex[:8]


def deployment(
    name: str = "web", *, replicas: int = 2, image: str = "nginx:1.25", **labels: str
) -> dict[str, Any]:
    labels = {"app": name, **labels}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": image, "ports": [{"containerPort": 80}]}]},
            },
        },
    }


def configmap(name: str, labels: dict[str, str] | None = None, **data: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def view_binding(user: str) -> dict[str, Any]:
    """A RoleBinding "viewer" giving ``user`` the built-in ``view`` ClusterRole in the namespace."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "viewer"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }


def get_json(kubectl: KubectlRunner, *args: str) -> dict[str, Any]:
    return json.loads(kubectl("get", *args, "-o", "json"))


def table(output: str) -> list[list[str]]:
    """kubectl's column output as rows of cells (header first)."""
    return [line.split() for line in output.splitlines() if line.strip()]


def lines_until(watch: e2e.Lines, done: Callable[[str], bool], limit: int = 50) -> list[str]:
    """Read a watch's lines until ``done(line)`` holds for the latest; every line seen so far."""
    for _ in range(limit):
        watch.next()
        if done(watch.seen[-1]):
            return watch.seen
    raise AssertionError(f"not seen in {limit} lines: {watch.seen}")
