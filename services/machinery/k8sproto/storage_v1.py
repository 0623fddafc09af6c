# fmt: off
"""Protobuf field tables for storage.k8s.io/v1 (package k8s.io.api.storage.v1)."""

from services.machinery.k8sproto.schema import F

_P = "k8s.io.api.storage.v1."
_META = "k8s.io.apimachinery.pkg.apis.meta.v1."
_CORE = "k8s.io.api.core.v1."
_QTY = "k8s.io.apimachinery.pkg.api.resource.Quantity"

MESSAGES: dict[str, tuple[F, ...]] = {
    _P + "CSIDriver": (
        F(1, "metadata", _META + "ObjectMeta"),
        F(2, "spec", _P + "CSIDriverSpec"),
    ),
    _P + "CSIDriverList": (
        F(1, "metadata", _META + "ListMeta"),
        F(2, "items", _P + "CSIDriver", repeated=True),
    ),
    _P + "CSIDriverSpec": (
        F(1, "attachRequired", "bool"),
        F(2, "podInfoOnMount", "bool"),
        F(3, "volumeLifecycleModes", "string", repeated=True),
        F(4, "storageCapacity", "bool"),
        F(5, "fsGroupPolicy", "string"),
        F(6, "tokenRequests", _P + "TokenRequest", repeated=True),
        F(7, "requiresRepublish", "bool"),
        F(8, "seLinuxMount", "bool"),
        F(9, "nodeAllocatableUpdatePeriodSeconds", "int64"),
        F(10, "serviceAccountTokenInSecrets", "bool"),
    ),
    _P + "CSINode": (
        F(1, "metadata", _META + "ObjectMeta"),
        F(2, "spec", _P + "CSINodeSpec"),
    ),
    _P + "CSINodeDriver": (
        F(1, "name", "string"),
        F(2, "nodeID", "string"),
        F(3, "topologyKeys", "string", repeated=True),
        F(4, "allocatable", _P + "VolumeNodeResources"),
    ),
    _P + "CSINodeList": (
        F(1, "metadata", _META + "ListMeta"),
        F(2, "items", _P + "CSINode", repeated=True),
    ),
    _P + "CSINodeSpec": (
        F(1, "drivers", _P + "CSINodeDriver", repeated=True),
    ),
    _P + "CSIStorageCapacity": (
        F(1, "metadata", _META + "ObjectMeta"),
        F(2, "nodeTopology", _META + "LabelSelector"),
        F(3, "storageClassName", "string"),
        F(4, "capacity", _QTY),
        F(5, "maximumVolumeSize", _QTY),
    ),
    _P + "CSIStorageCapacityList": (
        F(1, "metadata", _META + "ListMeta"),
        F(2, "items", _P + "CSIStorageCapacity", repeated=True),
    ),
    _P + "StorageClass": (
        F(1, "metadata", _META + "ObjectMeta"),
        F(2, "provisioner", "string"),
        F(3, "parameters", "map<string,string>"),
        F(4, "reclaimPolicy", "string"),
        F(5, "mountOptions", "string", repeated=True),
        F(6, "allowVolumeExpansion", "bool"),
        F(7, "volumeBindingMode", "string"),
        F(8, "allowedTopologies", _CORE + "TopologySelectorTerm", repeated=True),
    ),
    _P + "StorageClassList": (
        F(1, "metadata", _META + "ListMeta"),
        F(2, "items", _P + "StorageClass", repeated=True),
    ),
    _P + "TokenRequest": (
        F(1, "audience", "string"),
        F(2, "expirationSeconds", "int64"),
    ),
    _P + "VolumeAttachment": (
        F(1, "metadata", _META + "ObjectMeta"),
        F(2, "spec", _P + "VolumeAttachmentSpec"),
        F(3, "status", _P + "VolumeAttachmentStatus"),
    ),
    _P + "VolumeAttachmentList": (
        F(1, "metadata", _META + "ListMeta"),
        F(2, "items", _P + "VolumeAttachment", repeated=True),
    ),
    _P + "VolumeAttachmentSource": (
        F(1, "persistentVolumeName", "string"),
        F(2, "inlineVolumeSpec", _CORE + "PersistentVolumeSpec"),
    ),
    _P + "VolumeAttachmentSpec": (
        F(1, "attacher", "string"),
        F(2, "source", _P + "VolumeAttachmentSource"),
        F(3, "nodeName", "string"),
    ),
    _P + "VolumeAttachmentStatus": (
        F(1, "attached", "bool"),
        F(2, "attachmentMetadata", "map<string,string>"),
        F(3, "attachError", _P + "VolumeError"),
        F(4, "detachError", _P + "VolumeError"),
    ),
    _P + "VolumeAttributesClass": (
        F(1, "metadata", _META + "ObjectMeta"),
        F(2, "driverName", "string"),
        F(3, "parameters", "map<string,string>"),
    ),
    _P + "VolumeAttributesClassList": (
        F(1, "metadata", _META + "ListMeta"),
        F(2, "items", _P + "VolumeAttributesClass", repeated=True),
    ),
    _P + "VolumeError": (
        F(1, "time", _META + "Time"),
        F(2, "message", "string"),
        F(3, "errorCode", "int32"),
    ),
    _P + "VolumeNodeResources": (
        F(1, "count", "int32"),
    ),
}

# Scalars that are Go pointers, so a zero on the wire is an explicit value (see schema).
NULLABLE_FIELDS: frozenset[tuple[str, int]] = frozenset({
    (_P + "CSIDriverSpec", 1),
    (_P + "CSIDriverSpec", 2),
    (_P + "CSIDriverSpec", 4),
    (_P + "CSIDriverSpec", 5),
    (_P + "CSIDriverSpec", 7),
    (_P + "CSIDriverSpec", 8),
    (_P + "CSIDriverSpec", 9),
    (_P + "CSIDriverSpec", 10),
    (_P + "StorageClass", 4),
    (_P + "StorageClass", 6),
    (_P + "StorageClass", 7),
    (_P + "TokenRequest", 2),
    (_P + "VolumeAttachmentSource", 1),
    (_P + "VolumeError", 3),
    (_P + "VolumeNodeResources", 1),
})
