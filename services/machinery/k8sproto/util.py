# fmt: off
"""Protobuf field tables for apimachinery's value types: IntOrString and Quantity."""

from services.machinery.k8sproto.schema import F

_INTSTR = "k8s.io.apimachinery.pkg.util.intstr."
_RESOURCE = "k8s.io.apimachinery.pkg.api.resource."

MESSAGES: dict[str, tuple[F, ...]] = {
    # type is 0 for an int (intVal), 1 for a string (strVal).
    _INTSTR + "IntOrString": (
        F(1, "type", "int64"),
        F(2, "intVal", "int32"),
        F(3, "strVal", "string"),
    ),
    # The canonical string form, e.g. "500m" or "1Gi".
    _RESOURCE + "Quantity": (
        F(1, "string", "string"),
    ),
    _RESOURCE + "QuantityValue": (
        F(1, "string", "string"),
    ),
}
