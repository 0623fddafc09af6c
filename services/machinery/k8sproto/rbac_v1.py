# fmt: off
"""Protobuf field tables for rbac.authorization.k8s.io/v1 (package k8s.io.api.rbac.v1)."""

from services.machinery.k8sproto.schema import F

_P = "k8s.io.api.rbac.v1."
_META = "k8s.io.apimachinery.pkg.apis.meta.v1."

MESSAGES: dict[str, tuple[F, ...]] = {
    _P + "AggregationRule": (
        F(1, "clusterRoleSelectors", _META + "LabelSelector", repeated=True),
    ),
    _P + "ClusterRole": (
        F(1, "metadata", _META + "ObjectMeta"),
        F(2, "rules", _P + "PolicyRule", repeated=True),
        F(3, "aggregationRule", _P + "AggregationRule"),
    ),
    _P + "ClusterRoleBinding": (
        F(1, "metadata", _META + "ObjectMeta"),
        F(2, "subjects", _P + "Subject", repeated=True),
        F(3, "roleRef", _P + "RoleRef"),
    ),
    _P + "ClusterRoleBindingList": (
        F(1, "metadata", _META + "ListMeta"),
        F(2, "items", _P + "ClusterRoleBinding", repeated=True),
    ),
    _P + "ClusterRoleList": (
        F(1, "metadata", _META + "ListMeta"),
        F(2, "items", _P + "ClusterRole", repeated=True),
    ),
    _P + "PolicyRule": (
        F(1, "verbs", "string", repeated=True),
        F(2, "apiGroups", "string", repeated=True),
        F(3, "resources", "string", repeated=True),
        F(4, "resourceNames", "string", repeated=True),
        F(5, "nonResourceURLs", "string", repeated=True),
    ),
    _P + "Role": (
        F(1, "metadata", _META + "ObjectMeta"),
        F(2, "rules", _P + "PolicyRule", repeated=True),
    ),
    _P + "RoleBinding": (
        F(1, "metadata", _META + "ObjectMeta"),
        F(2, "subjects", _P + "Subject", repeated=True),
        F(3, "roleRef", _P + "RoleRef"),
    ),
    _P + "RoleBindingList": (
        F(1, "metadata", _META + "ListMeta"),
        F(2, "items", _P + "RoleBinding", repeated=True),
    ),
    _P + "RoleList": (
        F(1, "metadata", _META + "ListMeta"),
        F(2, "items", _P + "Role", repeated=True),
    ),
    _P + "RoleRef": (
        F(1, "apiGroup", "string"),
        F(2, "kind", "string"),
        F(3, "name", "string"),
    ),
    _P + "Subject": (
        F(1, "kind", "string"),
        F(2, "apiGroup", "string"),
        F(3, "name", "string"),
        F(4, "namespace", "string"),
    ),
}

# Scalars that are Go pointers, so a zero on the wire is an explicit value (see schema).
# None here: every scalar of this group is a plain Go value.
NULLABLE_FIELDS: frozenset[tuple[str, int]] = frozenset()
