# fmt: off
"""Protobuf field tables for coordination.k8s.io/v1 (package k8s.io.api.coordination.v1)."""

from services.machinery.k8sproto.schema import F

_P = "k8s.io.api.coordination.v1."
_META = "k8s.io.apimachinery.pkg.apis.meta.v1."

MESSAGES: dict[str, tuple[F, ...]] = {
    _P + "Lease": (
        F(1, "metadata", _META + "ObjectMeta"),
        F(2, "spec", _P + "LeaseSpec"),
    ),
    _P + "LeaseList": (
        F(1, "metadata", _META + "ListMeta"),
        F(2, "items", _P + "Lease", repeated=True),
    ),
    _P + "LeaseSpec": (
        F(1, "holderIdentity", "string"),
        F(2, "leaseDurationSeconds", "int32"),
        F(3, "acquireTime", _META + "MicroTime"),
        F(4, "renewTime", _META + "MicroTime"),
        F(5, "leaseTransitions", "int32"),
        F(6, "strategy", "string"),
        F(7, "preferredHolder", "string"),
    ),
}

# Scalars that are Go pointers, so a zero on the wire is an explicit value (see schema).
NULLABLE_FIELDS: frozenset[tuple[str, int]] = frozenset({
    (_P + "LeaseSpec", 1),
    (_P + "LeaseSpec", 2),
    (_P + "LeaseSpec", 5),
    (_P + "LeaseSpec", 6),
    (_P + "LeaseSpec", 7),
})
