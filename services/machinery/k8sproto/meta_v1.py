# fmt: off
"""Protobuf field tables for meta/v1 (package k8s.io.apimachinery.pkg.apis.meta.v1)."""

from services.machinery.k8sproto.schema import F

_META = "k8s.io.apimachinery.pkg.apis.meta.v1."
_RAW = "k8s.io.apimachinery.pkg.runtime.RawExtension"

MESSAGES: dict[str, tuple[F, ...]] = {
    _META + "APIGroup": (
        F(1, "name", "string"),
        F(2, "versions", _META + "GroupVersionForDiscovery", repeated=True),
        F(3, "preferredVersion", _META + "GroupVersionForDiscovery"),
        F(4, "serverAddressByClientCIDRs", _META + "ServerAddressByClientCIDR", repeated=True),
    ),
    _META + "APIGroupList": (
        F(1, "groups", _META + "APIGroup", repeated=True),
    ),
    _META + "APIResource": (
        F(1, "name", "string"),
        F(6, "singularName", "string"),
        F(2, "namespaced", "bool"),
        F(8, "group", "string"),
        F(9, "version", "string"),
        F(3, "kind", "string"),
        F(4, "verbs", _META + "Verbs"),
        F(5, "shortNames", "string", repeated=True),
        F(7, "categories", "string", repeated=True),
        F(10, "storageVersionHash", "string"),
    ),
    _META + "APIResourceList": (
        F(1, "groupVersion", "string"),
        F(2, "resources", _META + "APIResource", repeated=True),
    ),
    _META + "APIVersions": (
        F(1, "versions", "string", repeated=True),
        F(2, "serverAddressByClientCIDRs", _META + "ServerAddressByClientCIDR", repeated=True),
    ),
    _META + "ApplyOptions": (
        F(1, "dryRun", "string", repeated=True),
        F(2, "force", "bool"),
        F(3, "fieldManager", "string"),
    ),
    _META + "Condition": (
        F(1, "type", "string"),
        F(2, "status", "string"),
        F(3, "observedGeneration", "int64"),
        F(4, "lastTransitionTime", _META + "Time"),
        F(5, "reason", "string"),
        F(6, "message", "string"),
    ),
    _META + "CreateOptions": (
        F(1, "dryRun", "string", repeated=True),
        F(3, "fieldManager", "string"),
        F(4, "fieldValidation", "string"),
    ),
    _META + "DeleteOptions": (
        F(1, "gracePeriodSeconds", "int64"),
        F(2, "preconditions", _META + "Preconditions"),
        F(3, "orphanDependents", "bool"),
        F(4, "propagationPolicy", "string"),
        F(5, "dryRun", "string", repeated=True),
        F(6, "ignoreStoreReadErrorWithClusterBreakingPotential", "bool"),
    ),
    _META + "Duration": (
        F(1, "duration", "int64"),
    ),
    _META + "FieldSelectorRequirement": (
        F(1, "key", "string"),
        F(2, "operator", "string"),
        F(3, "values", "string", repeated=True),
    ),
    _META + "FieldsV1": (
        F(1, "Raw", "bytes"),
    ),
    _META + "GetOptions": (
        F(1, "resourceVersion", "string"),
    ),
    _META + "GroupKind": (
        F(1, "group", "string"),
        F(2, "kind", "string"),
    ),
    _META + "GroupResource": (
        F(1, "group", "string"),
        F(2, "resource", "string"),
    ),
    _META + "GroupVersion": (
        F(1, "group", "string"),
        F(2, "version", "string"),
    ),
    _META + "GroupVersionForDiscovery": (
        F(1, "groupVersion", "string"),
        F(2, "version", "string"),
    ),
    _META + "GroupVersionKind": (
        F(1, "group", "string"),
        F(2, "version", "string"),
        F(3, "kind", "string"),
    ),
    _META + "GroupVersionResource": (
        F(1, "group", "string"),
        F(2, "version", "string"),
        F(3, "resource", "string"),
    ),
    _META + "LabelSelector": (
        F(1, "matchLabels", "map<string,string>"),
        F(2, "matchExpressions", _META + "LabelSelectorRequirement", repeated=True),
    ),
    _META + "LabelSelectorRequirement": (
        F(1, "key", "string"),
        F(2, "operator", "string"),
        F(3, "values", "string", repeated=True),
    ),
    _META + "List": (
        F(1, "metadata", _META + "ListMeta"),
        F(2, "items", _RAW, repeated=True),
    ),
    _META + "ListMeta": (
        F(1, "selfLink", "string"),
        F(2, "resourceVersion", "string"),
        F(3, "continue", "string"),
        F(4, "remainingItemCount", "int64"),
        F(5, "shardInfo", _META + "ShardInfo"),
    ),
    _META + "ListOptions": (
        F(1, "labelSelector", "string"),
        F(2, "fieldSelector", "string"),
        F(3, "watch", "bool"),
        F(9, "allowWatchBookmarks", "bool"),
        F(4, "resourceVersion", "string"),
        F(10, "resourceVersionMatch", "string"),
        F(5, "timeoutSeconds", "int64"),
        F(7, "limit", "int64"),
        F(8, "continue", "string"),
        F(11, "sendInitialEvents", "bool"),
        F(15, "shardSelector", "string"),
    ),
    _META + "ManagedFieldsEntry": (
        F(1, "manager", "string"),
        F(2, "operation", "string"),
        F(3, "apiVersion", "string"),
        F(4, "time", _META + "Time"),
        F(6, "fieldsType", "string"),
        F(7, "fieldsV1", _META + "FieldsV1"),
        F(8, "subresource", "string"),
    ),
    _META + "MicroTime": (
        F(1, "seconds", "int64"),
        F(2, "nanos", "int32"),
    ),
    _META + "ObjectMeta": (
        F(1, "name", "string"),
        F(2, "generateName", "string"),
        F(3, "namespace", "string"),
        F(4, "selfLink", "string"),
        F(5, "uid", "string"),
        F(6, "resourceVersion", "string"),
        F(7, "generation", "int64"),
        F(8, "creationTimestamp", _META + "Time"),
        F(9, "deletionTimestamp", _META + "Time"),
        F(10, "deletionGracePeriodSeconds", "int64"),
        F(11, "labels", "map<string,string>"),
        F(12, "annotations", "map<string,string>"),
        F(13, "ownerReferences", _META + "OwnerReference", repeated=True),
        F(14, "finalizers", "string", repeated=True),
        F(17, "managedFields", _META + "ManagedFieldsEntry", repeated=True),
    ),
    _META + "OwnerReference": (
        F(5, "apiVersion", "string"),
        F(1, "kind", "string"),
        F(3, "name", "string"),
        F(4, "uid", "string"),
        F(6, "controller", "bool"),
        F(7, "blockOwnerDeletion", "bool"),
    ),
    _META + "PartialObjectMetadata": (
        F(1, "metadata", _META + "ObjectMeta"),
    ),
    _META + "PartialObjectMetadataList": (
        F(1, "metadata", _META + "ListMeta"),
        F(2, "items", _META + "PartialObjectMetadata", repeated=True),
    ),
    _META + "Patch": (
    ),
    _META + "PatchOptions": (
        F(1, "dryRun", "string", repeated=True),
        F(2, "force", "bool"),
        F(3, "fieldManager", "string"),
        F(4, "fieldValidation", "string"),
    ),
    _META + "Preconditions": (
        F(1, "uid", "string"),
        F(2, "resourceVersion", "string"),
    ),
    _META + "RootPaths": (
        F(1, "paths", "string", repeated=True),
    ),
    _META + "ServerAddressByClientCIDR": (
        F(1, "clientCIDR", "string"),
        F(2, "serverAddress", "string"),
    ),
    _META + "ShardInfo": (
        F(1, "selector", "string"),
    ),
    _META + "Status": (
        F(1, "metadata", _META + "ListMeta"),
        F(2, "status", "string"),
        F(3, "message", "string"),
        F(4, "reason", "string"),
        F(5, "details", _META + "StatusDetails"),
        F(6, "code", "int32"),
    ),
    _META + "StatusCause": (
        F(1, "reason", "string"),
        F(2, "message", "string"),
        F(3, "field", "string"),
    ),
    _META + "StatusDetails": (
        F(1, "name", "string"),
        F(2, "group", "string"),
        F(3, "kind", "string"),
        F(6, "uid", "string"),
        F(4, "causes", _META + "StatusCause", repeated=True),
        F(5, "retryAfterSeconds", "int32"),
    ),
    _META + "TableOptions": (
        F(1, "includeObject", "string"),
    ),
    _META + "Time": (
        F(1, "seconds", "int64"),
        F(2, "nanos", "int32"),
    ),
    _META + "Timestamp": (
        F(1, "seconds", "int64"),
        F(2, "nanos", "int32"),
    ),
    _META + "TypeMeta": (
        F(1, "kind", "string"),
        F(2, "apiVersion", "string"),
    ),
    _META + "UpdateOptions": (
        F(1, "dryRun", "string", repeated=True),
        F(2, "fieldManager", "string"),
        F(3, "fieldValidation", "string"),
    ),
    _META + "Verbs": (
        F(1, "items", "string", repeated=True),
    ),
    _META + "WatchEvent": (
        F(1, "type", "string"),
        F(2, "object", _RAW),
    ),
}

# Scalars that are Go pointers, so a zero on the wire is an explicit value (see schema).
NULLABLE_FIELDS: frozenset[tuple[str, int]] = frozenset({
    (_META + "DeleteOptions", 1),
    (_META + "DeleteOptions", 3),
    (_META + "DeleteOptions", 4),
    (_META + "DeleteOptions", 6),
    (_META + "ListMeta", 4),
    (_META + "ListOptions", 5),
    (_META + "ListOptions", 11),
    (_META + "ObjectMeta", 10),
    (_META + "OwnerReference", 6),
    (_META + "OwnerReference", 7),
    (_META + "PatchOptions", 2),
    (_META + "Preconditions", 1),
    (_META + "Preconditions", 2),
})

# `type Verbs []string` travels as a message whose only field is "items"; in JSON it is the bare list.
JSON_AS_ITEMS: frozenset[str] = frozenset({_META + "Verbs"})
