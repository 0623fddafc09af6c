# fmt: off
"""Protobuf field tables for authorization.k8s.io/v1 (package k8s.io.api.authorization.v1)."""

from services.machinery.k8sproto.schema import F

_P = "k8s.io.api.authorization.v1."
_META = "k8s.io.apimachinery.pkg.apis.meta.v1."

MESSAGES: dict[str, tuple[F, ...]] = {
    _P + "ExtraValue": (
        F(1, "items", "string", repeated=True),
    ),
    _P + "FieldSelectorAttributes": (
        F(1, "rawSelector", "string"),
        F(2, "requirements", _P + "FieldSelectorRequirement", repeated=True),
    ),
    _P + "FieldSelectorRequirement": (
        F(1, "key", "string"),
        F(2, "operator", "string"),
        F(3, "values", "string", repeated=True),
    ),
    _P + "LabelSelectorAttributes": (
        F(1, "rawSelector", "string"),
        F(2, "requirements", _META + "LabelSelectorRequirement", repeated=True),
    ),
    _P + "LocalSubjectAccessReview": (
        F(1, "metadata", _META + "ObjectMeta"),
        F(2, "spec", _P + "SubjectAccessReviewSpec"),
        F(3, "status", _P + "SubjectAccessReviewStatus"),
    ),
    _P + "NonResourceAttributes": (
        F(1, "path", "string"),
        F(2, "verb", "string"),
    ),
    _P + "NonResourceRule": (
        F(1, "verbs", "string", repeated=True),
        F(2, "nonResourceURLs", "string", repeated=True),
    ),
    _P + "ResourceAttributes": (
        F(1, "namespace", "string"),
        F(2, "verb", "string"),
        F(3, "group", "string"),
        F(4, "version", "string"),
        F(5, "resource", "string"),
        F(6, "subresource", "string"),
        F(7, "name", "string"),
        F(8, "fieldSelector", _P + "FieldSelectorAttributes"),
        F(9, "labelSelector", _P + "LabelSelectorAttributes"),
    ),
    _P + "ResourceRule": (
        F(1, "verbs", "string", repeated=True),
        F(2, "apiGroups", "string", repeated=True),
        F(3, "resources", "string", repeated=True),
        F(4, "resourceNames", "string", repeated=True),
    ),
    _P + "SelfSubjectAccessReview": (
        F(1, "metadata", _META + "ObjectMeta"),
        F(2, "spec", _P + "SelfSubjectAccessReviewSpec"),
        F(3, "status", _P + "SubjectAccessReviewStatus"),
    ),
    _P + "SelfSubjectAccessReviewSpec": (
        F(1, "resourceAttributes", _P + "ResourceAttributes"),
        F(2, "nonResourceAttributes", _P + "NonResourceAttributes"),
    ),
    _P + "SelfSubjectRulesReview": (
        F(1, "metadata", _META + "ObjectMeta"),
        F(2, "spec", _P + "SelfSubjectRulesReviewSpec"),
        F(3, "status", _P + "SubjectRulesReviewStatus"),
    ),
    _P + "SelfSubjectRulesReviewSpec": (
        F(1, "namespace", "string"),
    ),
    _P + "SubjectAccessReview": (
        F(1, "metadata", _META + "ObjectMeta"),
        F(2, "spec", _P + "SubjectAccessReviewSpec"),
        F(3, "status", _P + "SubjectAccessReviewStatus"),
    ),
    _P + "SubjectAccessReviewSpec": (
        F(1, "resourceAttributes", _P + "ResourceAttributes"),
        F(2, "nonResourceAttributes", _P + "NonResourceAttributes"),
        F(3, "user", "string"),
        F(4, "groups", "string", repeated=True),
        F(5, "extra", "map<string," + _P + "ExtraValue>"),
        F(6, "uid", "string"),
    ),
    _P + "SubjectAccessReviewStatus": (
        F(1, "allowed", "bool"),
        F(4, "denied", "bool"),
        F(2, "reason", "string"),
        F(3, "evaluationError", "string"),
    ),
    _P + "SubjectRulesReviewStatus": (
        F(1, "resourceRules", _P + "ResourceRule", repeated=True),
        F(2, "nonResourceRules", _P + "NonResourceRule", repeated=True),
        F(3, "incomplete", "bool"),
        F(4, "evaluationError", "string"),
    ),
}

# Scalars that are Go pointers, so a zero on the wire is an explicit value (see schema).
# None here: every scalar of this group is a plain Go value.
NULLABLE_FIELDS: frozenset[tuple[str, int]] = frozenset()

# Messages whose JSON form is the bare list held in their single repeated
# field "items" (Go: `type ExtraValue []string`). Decoded {"items": [...]}
# must be flattened to [...]; an absent/empty items field is [].
JSON_AS_ITEMS: frozenset[str] = frozenset({_P + "ExtraValue"})
