# fmt: off
"""Protobuf field tables for apps/v1 (package k8s.io.api.apps.v1)."""

from services.machinery.k8sproto.schema import F

_P = "k8s.io.api.apps.v1."
_META = "k8s.io.apimachinery.pkg.apis.meta.v1."
_CORE = "k8s.io.api.core.v1."
_INTSTR = "k8s.io.apimachinery.pkg.util.intstr.IntOrString"
_RAW = "k8s.io.apimachinery.pkg.runtime.RawExtension"

MESSAGES: dict[str, tuple[F, ...]] = {
    _P + "ControllerRevision": (
        F(1, "metadata", _META + "ObjectMeta"),
        F(2, "data", _RAW),
        F(3, "revision", "int64"),
    ),
    _P + "ControllerRevisionList": (
        F(1, "metadata", _META + "ListMeta"),
        F(2, "items", _P + "ControllerRevision", repeated=True),
    ),
    _P + "DaemonSet": (
        F(1, "metadata", _META + "ObjectMeta"),
        F(2, "spec", _P + "DaemonSetSpec"),
        F(3, "status", _P + "DaemonSetStatus"),
    ),
    _P + "DaemonSetCondition": (
        F(1, "type", "string"),
        F(2, "status", "string"),
        F(3, "lastTransitionTime", _META + "Time"),
        F(4, "reason", "string"),
        F(5, "message", "string"),
    ),
    _P + "DaemonSetList": (
        F(1, "metadata", _META + "ListMeta"),
        F(2, "items", _P + "DaemonSet", repeated=True),
    ),
    _P + "DaemonSetSpec": (
        F(1, "selector", _META + "LabelSelector"),
        F(2, "template", _CORE + "PodTemplateSpec"),
        F(3, "updateStrategy", _P + "DaemonSetUpdateStrategy"),
        F(4, "minReadySeconds", "int32"),
        F(6, "revisionHistoryLimit", "int32"),
    ),
    _P + "DaemonSetStatus": (
        F(1, "currentNumberScheduled", "int32"),
        F(2, "numberMisscheduled", "int32"),
        F(3, "desiredNumberScheduled", "int32"),
        F(4, "numberReady", "int32"),
        F(5, "observedGeneration", "int64"),
        F(6, "updatedNumberScheduled", "int32"),
        F(7, "numberAvailable", "int32"),
        F(8, "numberUnavailable", "int32"),
        F(9, "collisionCount", "int32"),
        F(10, "conditions", _P + "DaemonSetCondition", repeated=True),
    ),
    _P + "DaemonSetUpdateStrategy": (
        F(1, "type", "string"),
        F(2, "rollingUpdate", _P + "RollingUpdateDaemonSet"),
    ),
    _P + "Deployment": (
        F(1, "metadata", _META + "ObjectMeta"),
        F(2, "spec", _P + "DeploymentSpec"),
        F(3, "status", _P + "DeploymentStatus"),
    ),
    _P + "DeploymentCondition": (
        F(1, "type", "string"),
        F(2, "status", "string"),
        F(6, "lastUpdateTime", _META + "Time"),
        F(7, "lastTransitionTime", _META + "Time"),
        F(4, "reason", "string"),
        F(5, "message", "string"),
    ),
    _P + "DeploymentList": (
        F(1, "metadata", _META + "ListMeta"),
        F(2, "items", _P + "Deployment", repeated=True),
    ),
    _P + "DeploymentSpec": (
        F(1, "replicas", "int32"),
        F(2, "selector", _META + "LabelSelector"),
        F(3, "template", _CORE + "PodTemplateSpec"),
        F(4, "strategy", _P + "DeploymentStrategy"),
        F(5, "minReadySeconds", "int32"),
        F(6, "revisionHistoryLimit", "int32"),
        F(7, "paused", "bool"),
        F(9, "progressDeadlineSeconds", "int32"),
        F(10, "podReplacementPolicy", "string"),
    ),
    _P + "DeploymentStatus": (
        F(1, "observedGeneration", "int64"),
        F(2, "replicas", "int32"),
        F(3, "updatedReplicas", "int32"),
        F(7, "readyReplicas", "int32"),
        F(4, "availableReplicas", "int32"),
        F(5, "unavailableReplicas", "int32"),
        F(9, "terminatingReplicas", "int32"),
        F(6, "conditions", _P + "DeploymentCondition", repeated=True),
        F(8, "collisionCount", "int32"),
    ),
    _P + "DeploymentStrategy": (
        F(1, "type", "string"),
        F(2, "rollingUpdate", _P + "RollingUpdateDeployment"),
    ),
    _P + "ReplicaSet": (
        F(1, "metadata", _META + "ObjectMeta"),
        F(2, "spec", _P + "ReplicaSetSpec"),
        F(3, "status", _P + "ReplicaSetStatus"),
    ),
    _P + "ReplicaSetCondition": (
        F(1, "type", "string"),
        F(2, "status", "string"),
        F(3, "lastTransitionTime", _META + "Time"),
        F(4, "reason", "string"),
        F(5, "message", "string"),
    ),
    _P + "ReplicaSetList": (
        F(1, "metadata", _META + "ListMeta"),
        F(2, "items", _P + "ReplicaSet", repeated=True),
    ),
    _P + "ReplicaSetSpec": (
        F(1, "replicas", "int32"),
        F(4, "minReadySeconds", "int32"),
        F(2, "selector", _META + "LabelSelector"),
        F(3, "template", _CORE + "PodTemplateSpec"),
    ),
    _P + "ReplicaSetStatus": (
        F(1, "replicas", "int32"),
        F(2, "fullyLabeledReplicas", "int32"),
        F(4, "readyReplicas", "int32"),
        F(5, "availableReplicas", "int32"),
        F(7, "terminatingReplicas", "int32"),
        F(3, "observedGeneration", "int64"),
        F(6, "conditions", _P + "ReplicaSetCondition", repeated=True),
    ),
    _P + "RollingUpdateDaemonSet": (
        F(1, "maxUnavailable", _INTSTR),
        F(2, "maxSurge", _INTSTR),
    ),
    _P + "RollingUpdateDeployment": (
        F(1, "maxUnavailable", _INTSTR),
        F(2, "maxSurge", _INTSTR),
    ),
    _P + "RollingUpdateStatefulSetStrategy": (
        F(1, "partition", "int32"),
        F(2, "maxUnavailable", _INTSTR),
    ),
    _P + "StatefulSet": (
        F(1, "metadata", _META + "ObjectMeta"),
        F(2, "spec", _P + "StatefulSetSpec"),
        F(3, "status", _P + "StatefulSetStatus"),
    ),
    _P + "StatefulSetCondition": (
        F(1, "type", "string"),
        F(2, "status", "string"),
        F(3, "lastTransitionTime", _META + "Time"),
        F(4, "reason", "string"),
        F(5, "message", "string"),
    ),
    _P + "StatefulSetList": (
        F(1, "metadata", _META + "ListMeta"),
        F(2, "items", _P + "StatefulSet", repeated=True),
    ),
    _P + "StatefulSetOrdinals": (
        F(1, "start", "int32"),
    ),
    _P + "StatefulSetPersistentVolumeClaimRetentionPolicy": (
        F(1, "whenDeleted", "string"),
        F(2, "whenScaled", "string"),
    ),
    _P + "StatefulSetSpec": (
        F(1, "replicas", "int32"),
        F(2, "selector", _META + "LabelSelector"),
        F(3, "template", _CORE + "PodTemplateSpec"),
        F(4, "volumeClaimTemplates", _CORE + "PersistentVolumeClaim", repeated=True),
        F(5, "serviceName", "string"),
        F(6, "podManagementPolicy", "string"),
        F(7, "updateStrategy", _P + "StatefulSetUpdateStrategy"),
        F(8, "revisionHistoryLimit", "int32"),
        F(9, "minReadySeconds", "int32"),
        F(10, "persistentVolumeClaimRetentionPolicy", _P + "StatefulSetPersistentVolumeClaimRetentionPolicy"),
        F(11, "ordinals", _P + "StatefulSetOrdinals"),
    ),
    _P + "StatefulSetStatus": (
        F(1, "observedGeneration", "int64"),
        F(2, "replicas", "int32"),
        F(3, "readyReplicas", "int32"),
        F(4, "currentReplicas", "int32"),
        F(5, "updatedReplicas", "int32"),
        F(6, "currentRevision", "string"),
        F(7, "updateRevision", "string"),
        F(9, "collisionCount", "int32"),
        F(10, "conditions", _P + "StatefulSetCondition", repeated=True),
        F(11, "availableReplicas", "int32"),
    ),
    _P + "StatefulSetUpdateStrategy": (
        F(1, "type", "string"),
        F(2, "rollingUpdate", _P + "RollingUpdateStatefulSetStrategy"),
    ),
}

# Scalars that are Go pointers, so a zero on the wire is an explicit value (see schema).
NULLABLE_FIELDS: frozenset[tuple[str, int]] = frozenset({
    (_P + "DaemonSetSpec", 6),
    (_P + "DaemonSetStatus", 9),
    (_P + "DeploymentSpec", 1),
    (_P + "DeploymentSpec", 6),
    (_P + "DeploymentSpec", 9),
    (_P + "DeploymentSpec", 10),
    (_P + "DeploymentStatus", 9),
    (_P + "DeploymentStatus", 8),
    (_P + "ReplicaSetSpec", 1),
    (_P + "ReplicaSetStatus", 7),
    (_P + "RollingUpdateStatefulSetStrategy", 1),
    (_P + "StatefulSetSpec", 1),
    (_P + "StatefulSetSpec", 8),
    (_P + "StatefulSetStatus", 9),
})
