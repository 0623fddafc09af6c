# fmt: off
"""Protobuf field tables for discovery.k8s.io/v1 (package k8s.io.api.discovery.v1)."""

from services.machinery.k8sproto.schema import F

_P = "k8s.io.api.discovery.v1."
_META = "k8s.io.apimachinery.pkg.apis.meta.v1."
_CORE = "k8s.io.api.core.v1."

MESSAGES: dict[str, tuple[F, ...]] = {
    _P + "Endpoint": (
        F(1, "addresses", "string", repeated=True),
        F(2, "conditions", _P + "EndpointConditions"),
        F(3, "hostname", "string"),
        F(4, "targetRef", _CORE + "ObjectReference"),
        F(5, "deprecatedTopology", "map<string,string>"),
        F(6, "nodeName", "string"),
        F(7, "zone", "string"),
        F(8, "hints", _P + "EndpointHints"),
    ),
    _P + "EndpointConditions": (
        F(1, "ready", "bool"),
        F(2, "serving", "bool"),
        F(3, "terminating", "bool"),
    ),
    _P + "EndpointHints": (
        F(1, "forZones", _P + "ForZone", repeated=True),
        F(2, "forNodes", _P + "ForNode", repeated=True),
    ),
    _P + "EndpointPort": (
        F(1, "name", "string"),
        F(2, "protocol", "string"),
        F(3, "port", "int32"),
        F(4, "appProtocol", "string"),
    ),
    _P + "EndpointSlice": (
        F(1, "metadata", _META + "ObjectMeta"),
        F(4, "addressType", "string"),
        F(2, "endpoints", _P + "Endpoint", repeated=True),
        F(3, "ports", _P + "EndpointPort", repeated=True),
    ),
    _P + "EndpointSliceList": (
        F(1, "metadata", _META + "ListMeta"),
        F(2, "items", _P + "EndpointSlice", repeated=True),
    ),
    _P + "ForNode": (
        F(1, "name", "string"),
    ),
    _P + "ForZone": (
        F(1, "name", "string"),
    ),
}

# Scalars that are Go pointers, so a zero on the wire is an explicit value (see schema).
NULLABLE_FIELDS: frozenset[tuple[str, int]] = frozenset({
    (_P + "Endpoint", 3),
    (_P + "Endpoint", 6),
    (_P + "Endpoint", 7),
    (_P + "EndpointConditions", 1),
    (_P + "EndpointConditions", 2),
    (_P + "EndpointConditions", 3),
    (_P + "EndpointPort", 1),
    (_P + "EndpointPort", 2),
    (_P + "EndpointPort", 3),
    (_P + "EndpointPort", 4),
})
