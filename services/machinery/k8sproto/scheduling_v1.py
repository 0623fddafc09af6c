# fmt: off
"""Protobuf field tables for scheduling.k8s.io/v1 (package k8s.io.api.scheduling.v1)."""

from services.machinery.k8sproto.schema import F

_P = "k8s.io.api.scheduling.v1."
_META = "k8s.io.apimachinery.pkg.apis.meta.v1."

MESSAGES: dict[str, tuple[F, ...]] = {
    _P + "PriorityClass": (
        F(1, "metadata", _META + "ObjectMeta"),
        F(2, "value", "int32"),
        F(3, "globalDefault", "bool"),
        F(4, "description", "string"),
        F(5, "preemptionPolicy", "string"),
    ),
    _P + "PriorityClassList": (
        F(1, "metadata", _META + "ListMeta"),
        F(2, "items", _P + "PriorityClass", repeated=True),
    ),
}

# Scalars that are Go pointers, so a zero on the wire is an explicit value (see schema).
NULLABLE_FIELDS: frozenset[tuple[str, int]] = frozenset({
    (_P + "PriorityClass", 5),
})
