# fmt: off
"""Protobuf field tables for events.k8s.io/v1 (package k8s.io.api.events.v1)."""

from services.machinery.k8sproto.schema import F

_P = "k8s.io.api.events.v1."
_META = "k8s.io.apimachinery.pkg.apis.meta.v1."
_CORE = "k8s.io.api.core.v1."

MESSAGES: dict[str, tuple[F, ...]] = {
    _P + "Event": (
        F(1, "metadata", _META + "ObjectMeta"),
        F(2, "eventTime", _META + "MicroTime"),
        F(3, "series", _P + "EventSeries"),
        F(4, "reportingController", "string"),
        F(5, "reportingInstance", "string"),
        F(6, "action", "string"),
        F(7, "reason", "string"),
        F(8, "regarding", _CORE + "ObjectReference"),
        F(9, "related", _CORE + "ObjectReference"),
        F(10, "note", "string"),
        F(11, "type", "string"),
        F(12, "deprecatedSource", _CORE + "EventSource"),
        F(13, "deprecatedFirstTimestamp", _META + "Time"),
        F(14, "deprecatedLastTimestamp", _META + "Time"),
        F(15, "deprecatedCount", "int32"),
    ),
    _P + "EventList": (
        F(1, "metadata", _META + "ListMeta"),
        F(2, "items", _P + "Event", repeated=True),
    ),
    _P + "EventSeries": (
        F(1, "count", "int32"),
        F(2, "lastObservedTime", _META + "MicroTime"),
    ),
}

# Scalars that are Go pointers, so a zero on the wire is an explicit value (see schema).
# None here: every scalar of this group is a plain Go value.
NULLABLE_FIELDS: frozenset[tuple[str, int]] = frozenset()
