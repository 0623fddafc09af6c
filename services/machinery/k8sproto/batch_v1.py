# fmt: off
"""Protobuf field tables for batch/v1 (package k8s.io.api.batch.v1)."""

from services.machinery.k8sproto.schema import F

_P = "k8s.io.api.batch.v1."
_META = "k8s.io.apimachinery.pkg.apis.meta.v1."
_CORE = "k8s.io.api.core.v1."

MESSAGES: dict[str, tuple[F, ...]] = {
    _P + "CronJob": (
        F(1, "metadata", _META + "ObjectMeta"),
        F(2, "spec", _P + "CronJobSpec"),
        F(3, "status", _P + "CronJobStatus"),
    ),
    _P + "CronJobList": (
        F(1, "metadata", _META + "ListMeta"),
        F(2, "items", _P + "CronJob", repeated=True),
    ),
    _P + "CronJobSpec": (
        F(1, "schedule", "string"),
        F(8, "timeZone", "string"),
        F(2, "startingDeadlineSeconds", "int64"),
        F(3, "concurrencyPolicy", "string"),
        F(4, "suspend", "bool"),
        F(5, "jobTemplate", _P + "JobTemplateSpec"),
        F(6, "successfulJobsHistoryLimit", "int32"),
        F(7, "failedJobsHistoryLimit", "int32"),
    ),
    _P + "CronJobStatus": (
        F(1, "active", _CORE + "ObjectReference", repeated=True),
        F(4, "lastScheduleTime", _META + "Time"),
        F(5, "lastSuccessfulTime", _META + "Time"),
    ),
    _P + "Job": (
        F(1, "metadata", _META + "ObjectMeta"),
        F(2, "spec", _P + "JobSpec"),
        F(3, "status", _P + "JobStatus"),
    ),
    _P + "JobCondition": (
        F(1, "type", "string"),
        F(2, "status", "string"),
        F(3, "lastProbeTime", _META + "Time"),
        F(4, "lastTransitionTime", _META + "Time"),
        F(5, "reason", "string"),
        F(6, "message", "string"),
    ),
    _P + "JobList": (
        F(1, "metadata", _META + "ListMeta"),
        F(2, "items", _P + "Job", repeated=True),
    ),
    _P + "JobSpec": (
        F(1, "parallelism", "int32"),
        F(2, "completions", "int32"),
        F(3, "activeDeadlineSeconds", "int64"),
        F(11, "podFailurePolicy", _P + "PodFailurePolicy"),
        F(16, "successPolicy", _P + "SuccessPolicy"),
        F(7, "backoffLimit", "int32"),
        F(12, "backoffLimitPerIndex", "int32"),
        F(13, "maxFailedIndexes", "int32"),
        F(4, "selector", _META + "LabelSelector"),
        F(5, "manualSelector", "bool"),
        F(6, "template", _CORE + "PodTemplateSpec"),
        F(8, "ttlSecondsAfterFinished", "int32"),
        F(9, "completionMode", "string"),
        F(10, "suspend", "bool"),
        F(14, "podReplacementPolicy", "string"),
        F(15, "managedBy", "string"),
    ),
    _P + "JobStatus": (
        F(1, "conditions", _P + "JobCondition", repeated=True),
        F(2, "startTime", _META + "Time"),
        F(3, "completionTime", _META + "Time"),
        F(4, "active", "int32"),
        F(5, "succeeded", "int32"),
        F(6, "failed", "int32"),
        F(11, "terminating", "int32"),
        F(7, "completedIndexes", "string"),
        F(10, "failedIndexes", "string"),
        F(8, "uncountedTerminatedPods", _P + "UncountedTerminatedPods"),
        F(9, "ready", "int32"),
    ),
    _P + "JobTemplateSpec": (
        F(1, "metadata", _META + "ObjectMeta"),
        F(2, "spec", _P + "JobSpec"),
    ),
    _P + "PodFailurePolicy": (
        F(1, "rules", _P + "PodFailurePolicyRule", repeated=True),
    ),
    _P + "PodFailurePolicyOnExitCodesRequirement": (
        F(1, "containerName", "string"),
        F(2, "operator", "string"),
        F(3, "values", "int32", repeated=True),
    ),
    _P + "PodFailurePolicyOnPodConditionsPattern": (
        F(1, "type", "string"),
        F(2, "status", "string"),
    ),
    _P + "PodFailurePolicyRule": (
        F(1, "action", "string"),
        F(2, "onExitCodes", _P + "PodFailurePolicyOnExitCodesRequirement"),
        F(3, "onPodConditions", _P + "PodFailurePolicyOnPodConditionsPattern", repeated=True),
    ),
    _P + "SuccessPolicy": (
        F(1, "rules", _P + "SuccessPolicyRule", repeated=True),
    ),
    _P + "SuccessPolicyRule": (
        F(1, "succeededIndexes", "string"),
        F(2, "succeededCount", "int32"),
    ),
    _P + "UncountedTerminatedPods": (
        F(1, "succeeded", "string", repeated=True),
        F(2, "failed", "string", repeated=True),
    ),
}

# Scalars that are Go pointers, so a zero on the wire is an explicit value (see schema).
NULLABLE_FIELDS: frozenset[tuple[str, int]] = frozenset({
    (_P + "CronJobSpec", 8),
    (_P + "CronJobSpec", 2),
    (_P + "CronJobSpec", 4),
    (_P + "CronJobSpec", 6),
    (_P + "CronJobSpec", 7),
    (_P + "JobSpec", 1),
    (_P + "JobSpec", 2),
    (_P + "JobSpec", 3),
    (_P + "JobSpec", 7),
    (_P + "JobSpec", 12),
    (_P + "JobSpec", 13),
    (_P + "JobSpec", 5),
    (_P + "JobSpec", 8),
    (_P + "JobSpec", 9),
    (_P + "JobSpec", 10),
    (_P + "JobSpec", 14),
    (_P + "JobSpec", 15),
    (_P + "JobStatus", 11),
    (_P + "JobStatus", 10),
    (_P + "JobStatus", 9),
    (_P + "PodFailurePolicyOnExitCodesRequirement", 1),
    (_P + "SuccessPolicyRule", 1),
    (_P + "SuccessPolicyRule", 2),
})
