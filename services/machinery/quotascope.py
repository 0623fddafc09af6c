"""Which objects a scoped ResourceQuota covers, as upstream's quota evaluators decide.

One module for both users of the rule, the ResourceQuota admission in the API server and the
resourcequota controller, so that what admission limits and what ``status.used`` shows never
disagree (upstream shares ``pkg/quota/v1/evaluator`` the same way).

A quota's ``spec.scopes`` (each one an ``Exists`` requirement) and the match expressions of its
``spec.scopeSelector`` all have to match. Pods match ``Terminating`` (``activeDeadlineSeconds``
set, not negative), ``NotTerminating``, ``BestEffort`` (no positive cpu or memory request or
limit anywhere: the QoS class), ``NotBestEffort``, ``PriorityClass`` (``spec.priorityClassName``,
read as a label selector would read a label of that name: ``NotIn`` and ``DoesNotExist`` match a
pod without a class) and ``CrossNamespacePodAffinity`` (an affinity or anti-affinity term that
names ``namespaces`` or has a ``namespaceSelector``). Persistent volume claims match only
``VolumeAttributesClass``: the class names a claim asks for, has, or is being modified to
(``spec.volumeAttributesClassName``, ``status.currentVolumeAttributesClassName``,
``status.modifyVolumeStatus.targetVolumeAttributesClassName``), any one of which may satisfy the
requirement, read as a label of that name. Objects of every other kind match no scope, as
upstream's object-count evaluators match none.

``allows`` is the other half of the contract, enforced when a quota is written: BestEffort
quotas may track only ``pods``, ``VolumeAttributesClass`` only ``persistentvolumeclaims`` and
``requests.storage``, the other scopes ``pods`` and cpu and memory requests and limits; names outside upstream's standard quota names (``count/...``, extended resources) are
not checked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from services.machinery import quantity

VOLUME_ATTRIBUTES_CLASS = "VolumeAttributesClass"
SCOPES = (
    "Terminating", "NotTerminating", "BestEffort", "NotBestEffort", "PriorityClass", "CrossNamespacePodAffinity",
    VOLUME_ATTRIBUTES_CLASS,
)  # fmt: skip
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
EXISTS_ONLY = frozenset(SCOPES) - {"PriorityClass", VOLUME_ATTRIBUTES_CLASS}  # scopes that take no values
CONFLICTING = (("BestEffort", "NotBestEffort"), ("Terminating", "NotTerminating"))

POD_COUNT = frozenset({"pods"})
POD_COMPUTE = frozenset({"cpu", "memory", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory"})
CLAIM_RESOURCES = frozenset({"persistentvolumeclaims", "requests.storage"})
STANDARD_NAMES = POD_COUNT | POD_COMPUTE | {
    "ephemeral-storage", "requests.ephemeral-storage", "limits.ephemeral-storage", "requests.storage",
    "resourcequotas", "services", "replicationcontrollers", "secrets", "persistentvolumeclaims", "configmaps",
    "services.nodeports", "services.loadbalancers",
}  # fmt: skip
HUGEPAGES_PREFIXES = ("hugepages-", "requests.hugepages-")
QOS_RESOURCES = ("cpu", "memory")

Obj = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Requirement:
    """One scope requirement: a ``scopes`` entry (operator ``Exists``) or a selector expression."""

    scope: str
    operator: str = "Exists"
    values: tuple[str, ...] = ()


def requirements(spec: Obj) -> list[Requirement]:
    """The requirements of a quota's spec, ``scopes`` first (upstream's GetScopeSelectorsFromQuota)."""
    found = [Requirement(str(scope)) for scope in _list(spec.get("scopes"))]
    selector = spec.get("scopeSelector")
    for expr in _list(selector.get("matchExpressions") if isinstance(selector, Mapping) else None):
        if isinstance(expr, Mapping):
            values = tuple(str(v) for v in _list(expr.get("values")))
            found.append(Requirement(str(expr.get("scopeName") or ""), str(expr.get("operator") or ""), values))
    return found


def is_scoped(spec: Obj) -> bool:
    return bool(requirements(spec))


def covers(spec: Obj, obj: Obj, *, is_pod: bool, is_claim: bool = False) -> bool:
    """Whether a quota with this spec counts ``obj`` (a pod when ``is_pod``, a persistent volume
    claim when ``is_claim``)."""
    wanted = requirements(spec)
    if not wanted:
        return True
    if is_pod:
        return all(pod_matches(requirement, obj) for requirement in wanted)
    if is_claim:
        return all(claim_matches(requirement, obj) for requirement in wanted)
    return False


def pod_matches(requirement: Requirement, pod: Obj) -> bool:
    spec = pod.get("spec") or {}
    scope = requirement.scope
    if scope in ("Terminating", "NotTerminating"):
        deadline = spec.get("activeDeadlineSeconds")
        terminating = isinstance(deadline, int) and deadline >= 0
        return terminating if scope == "Terminating" else not terminating
    if scope in ("BestEffort", "NotBestEffort"):
        return best_effort(pod) if scope == "BestEffort" else not best_effort(pod)
    if scope == "PriorityClass":
        return _label_matches(requirement, spec.get("priorityClassName") or None)
    if scope == "CrossNamespacePodAffinity":
        return cross_namespace_affinity(pod)
    return False


def claim_matches(requirement: Requirement, claim: Obj) -> bool:
    if requirement.scope != VOLUME_ATTRIBUTES_CLASS:
        return False
    classes = volume_attributes_classes(claim)
    if not classes:
        return _label_matches(requirement, None)
    return any(_label_matches(requirement, name) for name in classes)


def volume_attributes_classes(claim: Obj) -> list[str]:
    """The classes a claim asks for, has and is being modified to, each once."""
    spec, status = claim.get("spec") or {}, claim.get("status") or {}
    modify = status.get("modifyVolumeStatus") or {}
    names = (
        spec.get("volumeAttributesClassName"),
        status.get("currentVolumeAttributesClassName"),
        modify.get("targetVolumeAttributesClassName") if isinstance(modify, Mapping) else None,
    )
    return list(dict.fromkeys(str(name) for name in names if name))


def _label_matches(requirement: Requirement, value: str | None) -> bool:
    """A label selector requirement on one optional value (absent when None)."""
    operator = requirement.operator
    if operator == "Exists":
        return value is not None
    if operator == "DoesNotExist":
        return value is None
    if operator == "In":
        return value is not None and value in requirement.values
    if operator == "NotIn":
        return value is None or value not in requirement.values
    return False


def best_effort(pod: Obj) -> bool:
    """The BestEffort QoS class: no positive cpu or memory request or limit (upstream's ComputePodQOS;
    pod-level ``spec.resources``, where given, decide alone)."""
    spec = pod.get("spec") or {}
    if isinstance(spec.get("resources"), Mapping):
        sources: list[Any] = [spec["resources"]]
    else:
        containers = [*_list(spec.get("containers")), *_list(spec.get("initContainers"))]
        sources = [c.get("resources") for c in containers if isinstance(c, Mapping)]
    for resources in sources:
        if not isinstance(resources, Mapping):
            continue
        for kind in ("requests", "limits"):
            amounts = resources.get(kind)
            if isinstance(amounts, Mapping) and any(_positive(amounts.get(r)) for r in QOS_RESOURCES):
                return False
    return True


def cross_namespace_affinity(pod: Obj) -> bool:
    affinity = (pod.get("spec") or {}).get("affinity") or {}
    for kind in ("podAffinity", "podAntiAffinity"):
        terms = affinity.get(kind) or {}
        required = _list(terms.get("requiredDuringSchedulingIgnoredDuringExecution"))
        preferred = [
            t.get("podAffinityTerm")
            for t in _list(terms.get("preferredDuringSchedulingIgnoredDuringExecution"))
            if isinstance(t, Mapping)
        ]
        for term in (*required, *preferred):
            if isinstance(term, Mapping) and (term.get("namespaces") or term.get("namespaceSelector") is not None):
                return True
    return False


def is_standard(resource: str) -> bool:
    """Upstream's standard quota resource names (IsStandardQuotaResourceName)."""
    return resource in STANDARD_NAMES or resource.startswith(HUGEPAGES_PREFIXES)


def allows(scope: str, resource: str) -> bool:
    """Whether a quota of this scope may track ``resource`` (IsResourceQuotaScopeValidForResource)."""
    if scope == "BestEffort":
        return resource in POD_COUNT
    if scope == VOLUME_ATTRIBUTES_CLASS:
        return resource in CLAIM_RESOURCES
    if scope in SCOPES:
        return resource in POD_COUNT or resource in POD_COMPUTE
    return True


def _positive(value: Any) -> bool:
    if value is None:
        return False
    try:
        return quantity.parse(value if isinstance(value, str | int | float) else str(value)) > 0
    except (quantity.QuantityError, ValueError, ZeroDivisionError):
        return False


def _list(value: Any) -> Iterable[Any]:
    return value if isinstance(value, list) else ()
