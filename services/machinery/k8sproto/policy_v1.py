# fmt: off
"""Protobuf field tables for policy/v1 (package k8s.io.api.policy.v1)."""

from services.machinery.k8sproto.schema import F

_P = "k8s.io.api.policy.v1."
_META = "k8s.io.apimachinery.pkg.apis.meta.v1."
_INTSTR = "k8s.io.apimachinery.pkg.util.intstr.IntOrString"

MESSAGES: dict[str, tuple[F, ...]] = {
    _P + "Eviction": (
        F(1, "metadata", _META + "ObjectMeta"),
        F(2, "deleteOptions", _META + "DeleteOptions"),
    ),
    _P + "PodDisruptionBudget": (
        F(1, "metadata", _META + "ObjectMeta"),
        F(2, "spec", _P + "PodDisruptionBudgetSpec"),
        F(3, "status", _P + "PodDisruptionBudgetStatus"),
    ),
    _P + "PodDisruptionBudgetList": (
        F(1, "metadata", _META + "ListMeta"),
        F(2, "items", _P + "PodDisruptionBudget", repeated=True),
    ),
    _P + "PodDisruptionBudgetSpec": (
        F(1, "minAvailable", _INTSTR),
        F(2, "selector", _META + "LabelSelector"),
        F(3, "maxUnavailable", _INTSTR),
        F(4, "unhealthyPodEvictionPolicy", "string"),
    ),
    _P + "PodDisruptionBudgetStatus": (
        F(1, "observedGeneration", "int64"),
        F(2, "disruptedPods", "map<string," + _META + "Time>"),
        F(3, "disruptionsAllowed", "int32"),
        F(4, "currentHealthy", "int32"),
        F(5, "desiredHealthy", "int32"),
        F(6, "expectedPods", "int32"),
        F(7, "conditions", _META + "Condition", repeated=True),
    ),
}

# Scalars that are Go pointers, so a zero on the wire is an explicit value (see schema).
NULLABLE_FIELDS: frozenset[tuple[str, int]] = frozenset({
    (_P + "PodDisruptionBudgetSpec", 4),
})
