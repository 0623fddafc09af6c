"""The Priority admission plugin: a pod's ``spec.priority`` comes from its PriorityClass.

On pod create, ``spec.priorityClassName`` names a PriorityClass whose ``value`` (and
``preemptionPolicy``) the pod gets; without a name, the class marked ``globalDefault`` applies,
else priority 0. An unknown name is refused (403), and so is a ``spec.priority`` given by the
client that differs from what the class says, with upstream's wording. The two system classes
(``system-node-critical``, ``system-cluster-critical``) are created at bootstrap, as
kube-apiserver does, and may not be removed.
"""

from __future__ import annotations

from typing import Any

from services.apiserver import context
from services.machinery import errors

SYSTEM_CLASSES = {"system-node-critical": 2000001000, "system-cluster-critical": 2000000000}


def system_classes() -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": name},
            "value": value,
            "description": "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary."
            if name == "system-cluster-critical"
            else "Used for system critical pods that must not be moved from their current node.",
            "preemptionPolicy": "PreemptLowerPriority",
        }
        for name, value in SYSTEM_CLASSES.items()
    ]


async def admit(ctx: context.Request, pod: dict[str, Any]) -> None:
    """Resolve the pod's priority from its class (create only; the fields are immutable after)."""
    spec = pod.setdefault("spec", {})
    name = spec.get("priorityClassName") or ""
    classes = await _classes(ctx, synced=False)
    if name and name not in classes:  # created a moment ago? the cache may lag the store
        classes = await _classes(ctx, synced=True)
    if name:
        found = classes.get(name)
        if found is None:
            raise errors.forbidden(
                f'pods "{_name(pod)}" is forbidden: no PriorityClass with name {name} was found',
                resource="pods", name=_name(pod),
            )  # fmt: skip
    else:
        found = next((c for c in classes.values() if c.get("globalDefault")), None)
        if found is not None:
            spec["priorityClassName"] = found["metadata"]["name"]
    value = int(found.get("value", 0)) if found is not None else 0
    given = spec.get("priority")
    if given is not None and given != value:
        raise errors.forbidden(
            f'pods "{_name(pod)}" is forbidden: the integer value of priority ({given}) must not be provided in '
            f"pod spec; priority admission controller computed {value} from the given PriorityClass name",
            resource="pods", name=_name(pod),
        )  # fmt: skip
    spec["priority"] = value
    if found is not None and found.get("preemptionPolicy"):
        spec.setdefault("preemptionPolicy", found["preemptionPolicy"])
    elif found is None:
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")


def check_delete(obj: dict[str, Any]) -> None:
    name = (obj.get("metadata") or {}).get("name", "")
    if name in SYSTEM_CLASSES:
        raise errors.forbidden(
            f'priorityclasses.scheduling.k8s.io "{name}" is forbidden: cannot delete system priority class',
            resource="priorityclasses", name=name, group="scheduling.k8s.io",
        )  # fmt: skip


async def _classes(ctx: context.Request, *, synced: bool) -> dict[str, dict[str, Any]]:
    info = ctx.api.registry.lookup("scheduling.k8s.io", "v1", "priorityclasses")
    if info is None:
        return {}
    cache = await ctx.api.cache(info)
    if synced:
        await cache.sync()
    return {c["metadata"]["name"]: c for c in cache.list("", None)}


def _name(pod: dict[str, Any]) -> str:
    md = pod.get("metadata") or {}
    return md.get("name") or md.get("generateName") or ""
