# fmt: off
"""Protobuf field tables for autoscaling/v1 (package k8s.io.api.autoscaling.v1)."""

from services.machinery.k8sproto.schema import F

_P = "k8s.io.api.autoscaling.v1."
_META = "k8s.io.apimachinery.pkg.apis.meta.v1."
_QTY = "k8s.io.apimachinery.pkg.api.resource.Quantity"

MESSAGES: dict[str, tuple[F, ...]] = {
    _P + "ContainerResourceMetricSource": (
        F(1, "name", "string"),
        F(2, "targetAverageUtilization", "int32"),
        F(3, "targetAverageValue", _QTY),
        F(5, "container", "string"),
    ),
    _P + "ContainerResourceMetricStatus": (
        F(1, "name", "string"),
        F(2, "currentAverageUtilization", "int32"),
        F(3, "currentAverageValue", _QTY),
        F(4, "container", "string"),
    ),
    _P + "CrossVersionObjectReference": (
        F(1, "kind", "string"),
        F(2, "name", "string"),
        F(3, "apiVersion", "string"),
    ),
    _P + "ExternalMetricSource": (
        F(1, "metricName", "string"),
        F(2, "metricSelector", _META + "LabelSelector"),
        F(3, "targetValue", _QTY),
        F(4, "targetAverageValue", _QTY),
    ),
    _P + "ExternalMetricStatus": (
        F(1, "metricName", "string"),
        F(2, "metricSelector", _META + "LabelSelector"),
        F(3, "currentValue", _QTY),
        F(4, "currentAverageValue", _QTY),
    ),
    _P + "HorizontalPodAutoscaler": (
        F(1, "metadata", _META + "ObjectMeta"),
        F(2, "spec", _P + "HorizontalPodAutoscalerSpec"),
        F(3, "status", _P + "HorizontalPodAutoscalerStatus"),
    ),
    _P + "HorizontalPodAutoscalerCondition": (
        F(1, "type", "string"),
        F(2, "status", "string"),
        F(3, "lastTransitionTime", _META + "Time"),
        F(4, "reason", "string"),
        F(5, "message", "string"),
        F(6, "observedGeneration", "int64"),
    ),
    _P + "HorizontalPodAutoscalerList": (
        F(1, "metadata", _META + "ListMeta"),
        F(2, "items", _P + "HorizontalPodAutoscaler", repeated=True),
    ),
    _P + "HorizontalPodAutoscalerSpec": (
        F(1, "scaleTargetRef", _P + "CrossVersionObjectReference"),
        F(2, "minReplicas", "int32"),
        F(3, "maxReplicas", "int32"),
        F(4, "targetCPUUtilizationPercentage", "int32"),
    ),
    _P + "HorizontalPodAutoscalerStatus": (
        F(1, "observedGeneration", "int64"),
        F(2, "lastScaleTime", _META + "Time"),
        F(3, "currentReplicas", "int32"),
        F(4, "desiredReplicas", "int32"),
        F(5, "currentCPUUtilizationPercentage", "int32"),
    ),
    _P + "MetricSpec": (
        F(1, "type", "string"),
        F(2, "object", _P + "ObjectMetricSource"),
        F(3, "pods", _P + "PodsMetricSource"),
        F(4, "resource", _P + "ResourceMetricSource"),
        F(7, "containerResource", _P + "ContainerResourceMetricSource"),
        F(5, "external", _P + "ExternalMetricSource"),
    ),
    _P + "MetricStatus": (
        F(1, "type", "string"),
        F(2, "object", _P + "ObjectMetricStatus"),
        F(3, "pods", _P + "PodsMetricStatus"),
        F(4, "resource", _P + "ResourceMetricStatus"),
        F(7, "containerResource", _P + "ContainerResourceMetricStatus"),
        F(5, "external", _P + "ExternalMetricStatus"),
    ),
    _P + "ObjectMetricSource": (
        F(1, "target", _P + "CrossVersionObjectReference"),
        F(2, "metricName", "string"),
        F(3, "targetValue", _QTY),
        F(4, "selector", _META + "LabelSelector"),
        F(5, "averageValue", _QTY),
    ),
    _P + "ObjectMetricStatus": (
        F(1, "target", _P + "CrossVersionObjectReference"),
        F(2, "metricName", "string"),
        F(3, "currentValue", _QTY),
        F(4, "selector", _META + "LabelSelector"),
        F(5, "averageValue", _QTY),
    ),
    _P + "PodsMetricSource": (
        F(1, "metricName", "string"),
        F(2, "targetAverageValue", _QTY),
        F(3, "selector", _META + "LabelSelector"),
    ),
    _P + "PodsMetricStatus": (
        F(1, "metricName", "string"),
        F(2, "currentAverageValue", _QTY),
        F(3, "selector", _META + "LabelSelector"),
    ),
    _P + "ResourceMetricSource": (
        F(1, "name", "string"),
        F(2, "targetAverageUtilization", "int32"),
        F(3, "targetAverageValue", _QTY),
    ),
    _P + "ResourceMetricStatus": (
        F(1, "name", "string"),
        F(2, "currentAverageUtilization", "int32"),
        F(3, "currentAverageValue", _QTY),
    ),
    _P + "Scale": (
        F(1, "metadata", _META + "ObjectMeta"),
        F(2, "spec", _P + "ScaleSpec"),
        F(3, "status", _P + "ScaleStatus"),
    ),
    _P + "ScaleSpec": (
        F(1, "replicas", "int32"),
    ),
    _P + "ScaleStatus": (
        F(1, "replicas", "int32"),
        F(2, "selector", "string"),
    ),
}

# Scalars that are Go pointers, so a zero on the wire is an explicit value (see schema).
NULLABLE_FIELDS: frozenset[tuple[str, int]] = frozenset({
    (_P + "ContainerResourceMetricSource", 2),
    (_P + "ContainerResourceMetricStatus", 2),
    (_P + "HorizontalPodAutoscalerSpec", 2),
    (_P + "HorizontalPodAutoscalerSpec", 4),
    (_P + "HorizontalPodAutoscalerStatus", 1),
    (_P + "HorizontalPodAutoscalerStatus", 5),
    (_P + "ResourceMetricSource", 2),
    (_P + "ResourceMetricStatus", 2),
})
