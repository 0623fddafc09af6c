# fmt: off
"""Protobuf field tables for authentication.k8s.io/v1 (package k8s.io.api.authentication.v1)."""

from services.machinery.k8sproto.schema import F

_P = "k8s.io.api.authentication.v1."
_META = "k8s.io.apimachinery.pkg.apis.meta.v1."

MESSAGES: dict[str, tuple[F, ...]] = {
    _P + "BoundObjectReference": (
        F(1, "kind", "string"),
        F(2, "apiVersion", "string"),
        F(3, "name", "string"),
        # proto field name is "uID"; the JSON name is "uid"
        F(4, "uid", "string"),
    ),
    _P + "ExtraValue": (
        F(1, "items", "string", repeated=True),
    ),
    _P + "SelfSubjectReview": (
        F(1, "metadata", _META + "ObjectMeta"),
        F(2, "status", _P + "SelfSubjectReviewStatus"),
    ),
    _P + "SelfSubjectReviewStatus": (
        F(1, "userInfo", _P + "UserInfo"),
    ),
    _P + "TokenRequest": (
        F(1, "metadata", _META + "ObjectMeta"),
        F(2, "spec", _P + "TokenRequestSpec"),
        F(3, "status", _P + "TokenRequestStatus"),
    ),
    _P + "TokenRequestSpec": (
        F(1, "audiences", "string", repeated=True),
        F(4, "expirationSeconds", "int64"),
        F(3, "boundObjectRef", _P + "BoundObjectReference"),
    ),
    _P + "TokenRequestStatus": (
        F(1, "token", "string"),
        F(2, "expirationTimestamp", _META + "Time"),
    ),
    _P + "TokenReview": (
        F(1, "metadata", _META + "ObjectMeta"),
        F(2, "spec", _P + "TokenReviewSpec"),
        F(3, "status", _P + "TokenReviewStatus"),
    ),
    _P + "TokenReviewSpec": (
        F(1, "token", "string"),
        F(2, "audiences", "string", repeated=True),
    ),
    _P + "TokenReviewStatus": (
        F(1, "authenticated", "bool"),
        F(2, "user", _P + "UserInfo"),
        F(4, "audiences", "string", repeated=True),
        F(3, "error", "string"),
    ),
    _P + "UserInfo": (
        F(1, "username", "string"),
        F(2, "uid", "string"),
        F(3, "groups", "string", repeated=True),
        F(4, "extra", "map<string," + _P + "ExtraValue>"),
    ),
}

# Scalars that are Go pointers, so a zero on the wire is an explicit value (see schema).
NULLABLE_FIELDS: frozenset[tuple[str, int]] = frozenset({
    (_P + "TokenRequestSpec", 4),
})

# Messages whose JSON form is the bare list held in their single repeated
# field "items" (Go: `type ExtraValue []string`). Decoded {"items": [...]}
# must be flattened to [...]; an absent/empty items field is [].
JSON_AS_ITEMS: frozenset[str] = frozenset({_P + "ExtraValue"})
