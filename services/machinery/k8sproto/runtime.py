# fmt: off
"""Protobuf field tables for k8s.io/apimachinery/pkg/runtime (the wire envelope and embedded objects)."""

from services.machinery.k8sproto.schema import F

_RUNTIME = "k8s.io.apimachinery.pkg.runtime."

MESSAGES: dict[str, tuple[F, ...]] = {
    _RUNTIME + "RawExtension": (
        F(1, "raw", "bytes"),
    ),
    # Not meta/v1's TypeMeta: here apiVersion comes first.
    _RUNTIME + "TypeMeta": (
        F(1, "apiVersion", "string"),
        F(2, "kind", "string"),
    ),
    _RUNTIME + "Unknown": (
        F(1, "typeMeta", _RUNTIME + "TypeMeta"),
        F(2, "raw", "bytes"),
        F(3, "contentEncoding", "string"),
        F(4, "contentType", "string"),
    ),
}
