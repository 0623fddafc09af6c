"""Environment resolution (``services.agent.envvars``): envFrom, valueFrom, $(VAR) expansion, errors."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from services.agent import envvars
from services.client import resources

OBJECTS = {
    ("configmaps", "cfg"): {"data": {"a": "1", "b": "two", "bad key": "x"}},
    ("secrets", "sec"): {"data": {"token": base64.b64encode(b"t0k").decode()}},
}
POD = {"metadata": {"name": "web", "namespace": "ns", "uid": "u-1", "labels": {"app": "web"}},
       "spec": {"nodeName": "n1", "serviceAccountName": "sa",
                "containers": [{"name": "c", "resources": {"requests": {"cpu": "250m"}, "limits": {"memory": "128Mi"}}}]}}  # fmt: skip


async def fetch(resource: resources.Resource, namespace: str, name: str) -> dict[str, Any] | None:
    assert namespace == "ns"
    return OBJECTS.get((resource.plural, name))


async def resolve(container: dict[str, Any]) -> dict[str, str]:
    full = {**POD["spec"]["containers"][0], **container}
    return await envvars.resolve(POD, full, fetch=fetch, host_ip="192.168.0.9", pod_ip="10.42.0.3")


def test_expansion() -> None:
    env = {"A": "x", "B": "y"}
    assert envvars.expand("$(A)-$(B)", env) == "x-y"
    assert envvars.expand("$(MISSING) $$(A) $", env) == "$(MISSING) $(A) $"
    assert envvars.expand("$(A", env) == "$(A"


async def test_env_from_then_env_in_order() -> None:
    env = await resolve({
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "P_"}, {"secretRef": {"name": "sec"}}],
        "env": [{"name": "P_a", "value": "override"}, {"name": "C", "value": "$(P_b)/$(token)"}],
    })  # fmt: skip
    assert env == {"P_a": "override", "P_b": "two", "token": "t0k", "C": "two/t0k"}


async def test_value_from_sources() -> None:
    env = await resolve({"env": [
        {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "a"}}},
        {"name": "T", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "token"}}},
        {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
        {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
        {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}}},
        {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
        {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "a", "optional": True}}},
    ]})  # fmt: skip
    assert env == {"A": "1", "T": "t0k", "NAME": "web", "APP": "web", "IP": "10.42.0.3", "HOST": "192.168.0.9",
                   "SA": "sa", "CPU": "250", "MEM": "128"}  # fmt: skip


async def test_missing_references_fail_with_kubelet_wording() -> None:
    with pytest.raises(envvars.EnvError, match='configmap "nope" not found'):
        await resolve(
            {"env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "a"}}}]}
        )
    with pytest.raises(envvars.EnvError, match="couldn't find key zz in ConfigMap ns/cfg"):
        await resolve(
            {"env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "zz"}}}]}
        )
    with pytest.raises(envvars.EnvError, match='secret "gone" not found'):
        await resolve({"envFrom": [{"secretRef": {"name": "gone"}}]})
    assert await resolve({"envFrom": [{"secretRef": {"name": "gone", "optional": True}}]}) == {}


def test_command_expansion() -> None:
    container = {"command": ["echo", "$(A)"], "args": ["$(B)", "$$(A)"]}
    out = envvars.expand_command(container, {"A": "1", "B": "2"})
    assert out["command"] == ["echo", "1"] and out["args"] == ["2", "$(A)"]
    assert container["command"] == ["echo", "$(A)"]
