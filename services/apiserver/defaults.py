"""Per-kind defaults, validation and immutable fields, as Kubernetes applies them.

Defaults fill what clients leave out (so objects read back as they do from a
real cluster, and controllers can rely on the fields); validation returns
field causes for a 422; ``immutable_changes`` names fields an update may not
change. Kinds not listed get no special treatment.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from services.apiserver import registry
from services.machinery import errors

Obj = dict[str, Any]

NOT_READY_TOLERATIONS = [
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
]


def _container(c: Obj) -> None:
    image = c.get("image", "")
    tag = image.rsplit("/", 1)[-1]
    latest = "@" not in tag and (":" not in tag or tag.endswith(":latest"))
    c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    c.setdefault("resources", {})
    for port in c.get("ports") or []:
        port.setdefault("protocol", "TCP")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        p = c.get(probe)
        if isinstance(p, dict):
            p.setdefault("timeoutSeconds", 1)
            p.setdefault("periodSeconds", 10)
            p.setdefault("successThreshold", 1)
            p.setdefault("failureThreshold", 3)


def pod_spec(spec: Obj, *, template: bool = False) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for c in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        if isinstance(c, dict):
            _container(c)
    if not template:
        spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
        spec.setdefault("serviceAccount", spec["serviceAccountName"])
        spec.setdefault("enableServiceLinks", True)
        # priority and preemptionPolicy come from the pod's PriorityClass (priority.admit).
        tolerations = spec.setdefault("tolerations", [])
        for default in NOT_READY_TOLERATIONS:
            if not any(t.get("key") == default["key"] and t.get("effect") in (None, "", "NoExecute") for t in tolerations):
                tolerations.append(dict(default))


def _pod(obj: Obj, old: Obj | None) -> None:
    pod_spec(obj.setdefault("spec", {}))
    if old is None:
        status = obj.setdefault("status", {})
        status.setdefault("phase", "Pending")
        status.setdefault("qosClass", _qos(obj["spec"]))


def _qos(spec: Obj) -> str:
    containers = spec.get("containers") or []
    reqs = [((c.get("resources") or {}).get("requests") or {}, (c.get("resources") or {}).get("limits") or {}) for c in containers]
    if not any(r or lim for r, lim in reqs):
        return "BestEffort"
    guaranteed = all(
        lim.get("cpu") and lim.get("memory") and r.get("cpu", lim["cpu"]) == lim["cpu"] and r.get("memory", lim["memory"]) == lim["memory"]
        for r, lim in reqs
    )
    return "Guaranteed" if guaranteed else "Burstable"


def _template(obj: Obj) -> None:
    template = obj.setdefault("spec", {}).setdefault("template", {})
    pod_spec(template.setdefault("spec", {}), template=True)


def _deployment(obj: Obj, old: Obj | None) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
    if strategy.get("type", "RollingUpdate") == "RollingUpdate":
        strategy.setdefault("type", "RollingUpdate")
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxUnavailable", "25%")
        rolling.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    _template(obj)


def _replicaset(obj: Obj, old: Obj | None) -> None:
    obj.setdefault("spec", {}).setdefault("replicas", 1)
    _template(obj)


def _statefulset(obj: Obj, old: Obj | None) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("podManagementPolicy", "OrderedReady")
    spec.setdefault("updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("persistentVolumeClaimRetentionPolicy", {"whenDeleted": "Retain", "whenScaled": "Retain"})
    _template(obj)


def _daemonset(obj: Obj, old: Obj | None) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
    spec.setdefault("revisionHistoryLimit", 10)
    _template(obj)


def _job(obj: Obj, old: Obj | None) -> None:
    _job_spec(obj.setdefault("spec", {}))


def _job_spec(spec: Obj) -> None:
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    pod = spec.setdefault("template", {}).setdefault("spec", {})
    given = "restartPolicy" in pod
    pod_spec(pod, template=True)
    if not given:
        pod.pop("restartPolicy")  # a Job's pods must say OnFailure or Never: no default


def _cronjob(obj: Obj, old: Obj | None) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("concurrencyPolicy", "Allow")
    spec.setdefault("suspend", False)
    spec.setdefault("successfulJobsHistoryLimit", 3)
    spec.setdefault("failedJobsHistoryLimit", 1)
    _job_spec(spec.setdefault("jobTemplate", {}).setdefault("spec", {}))


def _service(obj: Obj, old: Obj | None) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec["type"] != "ExternalName":
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    if spec["type"] in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))


def _namespace(obj: Obj, old: Obj | None) -> None:
    if old is None:
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        obj.setdefault("status", {}).setdefault("phase", "Active")
    labels = obj.setdefault("metadata", {}).setdefault("labels", {})
    labels["kubernetes.io/metadata.name"] = obj["metadata"].get("name", "")


def _secret(obj: Obj, old: Obj | None) -> None:
    obj.setdefault("type", "Opaque")
    # stringData is write-only: merged into data (base64), never stored.
    string_data = obj.pop("stringData", None)
    if isinstance(string_data, dict) and string_data:
        data = obj.get("data") or {}
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        obj["data"] = data


def _pvc(obj: Obj, old: Obj | None) -> None:
    obj.setdefault("spec", {}).setdefault("volumeMode", "Filesystem")
    if old is None:
        obj.setdefault("status", {}).setdefault("phase", "Pending")


def _pv(obj: Obj, old: Obj | None) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("persistentVolumeReclaimPolicy", "Retain")
    spec.setdefault("volumeMode", "Filesystem")
    if old is None:
        obj.setdefault("status", {}).setdefault("phase", "Pending")


DEFAULTERS: dict[tuple[str, str], Callable[[Obj, Obj | None], None]] = {
    ("", "Pod"): _pod,
    ("", "Service"): _service,
    ("", "Namespace"): _namespace,
    ("", "Secret"): _secret,
    ("", "PersistentVolumeClaim"): _pvc,
    ("", "PersistentVolume"): _pv,
    ("", "ReplicationController"): _replicaset,
    ("apps", "Deployment"): _deployment,
    ("apps", "ReplicaSet"): _replicaset,
    ("apps", "StatefulSet"): _statefulset,
    ("apps", "DaemonSet"): _daemonset,
    ("batch", "Job"): _job,
    ("batch", "CronJob"): _cronjob,
}


def apply(info: registry.ResourceInfo, obj: Obj, old: Obj | None) -> None:
    defaulter = DEFAULTERS.get((info.group, info.kind))
    if defaulter is not None:
        defaulter(obj, old)


# -- validation --------------------------------------------------------------------------------


def _required(value: Any, field: str) -> list[errors.Cause]:
    return [] if value else [errors.Cause("FieldValueRequired", "Required value", field)]


def _containers(spec: Obj, base: str) -> list[errors.Cause]:
    causes: list[errors.Cause] = []
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        return [errors.Cause("FieldValueRequired", "Required value", f"{base}.containers")]
    seen: set[str] = set()
    for i, c in enumerate(containers):
        if not isinstance(c, dict):
            causes.append(errors.Cause("FieldValueInvalid", "must be an object", f"{base}.containers[{i}]"))
            continue
        causes += _required(c.get("name"), f"{base}.containers[{i}].name")
        causes += _required(c.get("image"), f"{base}.containers[{i}].image")
        if c.get("name") in seen:
            causes.append(errors.Cause("FieldValueDuplicate", f'Duplicate value: "{c["name"]}"', f"{base}.containers[{i}].name"))
        seen.add(c.get("name", ""))
    policy = spec.get("restartPolicy")
    if policy not in (None, "Always", "OnFailure", "Never"):
        causes.append(errors.Cause("FieldValueNotSupported", f'Unsupported value: "{policy}": supported values: "Always", "OnFailure", "Never"', f"{base}.restartPolicy"))
    return causes


def _selector_matches_template(obj: Obj) -> list[errors.Cause]:
    spec = obj.get("spec") or {}
    selector = spec.get("selector")
    if not isinstance(selector, dict) or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        return [errors.Cause("FieldValueRequired", "Required value", "spec.selector")]
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    from services.machinery import selectors

    if not selectors.from_label_selector_dict(selector).matches(labels):
        return [errors.Cause("FieldValueInvalid", "`selector` does not match template `labels`", "spec.template.metadata.labels")]
    return []


def validate(info: registry.ResourceInfo, obj: Obj) -> list[errors.Cause]:
    kind = (info.group, info.kind)
    spec = obj.get("spec") or {}
    if kind == ("", "Pod"):
        return _containers(spec, "spec")
    if kind in (("apps", "Deployment"), ("apps", "ReplicaSet"), ("apps", "StatefulSet"), ("apps", "DaemonSet")):
        return _selector_matches_template(obj) + _containers((spec.get("template") or {}).get("spec") or {}, "spec.template.spec")
    if kind == ("batch", "Job"):
        pod = ((spec.get("template") or {}).get("spec")) or {}
        causes = _containers(pod, "spec.template.spec")
        if pod.get("restartPolicy") not in ("OnFailure", "Never"):
            causes.append(errors.Cause("FieldValueRequired" if not pod.get("restartPolicy") else "FieldValueNotSupported",
                                       'Unsupported value: supported values: "OnFailure", "Never"', "spec.template.spec.restartPolicy"))  # fmt: skip
        return causes
    if kind == ("", "Service"):
        causes: list[errors.Cause] = []
        if spec.get("type") not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
            causes.append(errors.Cause("FieldValueNotSupported", f'Unsupported value: "{spec.get("type")}"', "spec.type"))
        for i, port in enumerate(spec.get("ports") or []):
            if not isinstance(port.get("port"), int) or not 0 < port["port"] < 65536:
                causes.append(errors.Cause("FieldValueInvalid", "must be between 1 and 65535, inclusive", f"spec.ports[{i}].port"))
        return causes
    return []


IMMUTABLE: dict[tuple[str, str], tuple[str, ...]] = {
    ("apps", "Deployment"): ("spec.selector",),
    ("apps", "ReplicaSet"): ("spec.selector",),
    ("apps", "StatefulSet"): ("spec.selector", "spec.serviceName", "spec.volumeClaimTemplates"),
    ("apps", "DaemonSet"): ("spec.selector",),
    ("batch", "Job"): ("spec.selector", "spec.template", "spec.completions"),
    ("", "PersistentVolumeClaim"): ("spec.storageClassName", "spec.volumeName"),
}


def _get(obj: Obj, path: str) -> Any:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def immutable_changes(info: registry.ResourceInfo, old: Obj, new: Obj) -> list[errors.Cause]:
    causes = [
        errors.Cause("FieldValueInvalid", "field is immutable", path)
        for path in IMMUTABLE.get((info.group, info.kind), ())
        if _get(old, path) is not None and _get(old, path) != _get(new, path)
    ]
    if (info.group, info.kind) == ("", "Service"):
        before, after = _get(old, "spec.clusterIP"), _get(new, "spec.clusterIP")
        if before and after != before and after is not None:
            causes.append(errors.Cause("FieldValueInvalid", "field is immutable", "spec.clusterIP"))
    if (info.group, info.kind) == ("", "Pod"):
        causes += _pod_spec_changes(old.get("spec") or {}, new.get("spec") or {})
    if (info.group, info.kind) in (("", "Secret"), ("", "ConfigMap")) and old.get("immutable"):
        if any(old.get(k) != new.get(k) for k in ("data", "binaryData", "stringData", "immutable")):
            causes.append(errors.Cause("FieldValueForbidden", "field is immutable when `immutable` is set", "data"))
    return causes


# Pod spec fields an update may change (upstream: images, activeDeadlineSeconds, added tolerations, ...).
MUTABLE_POD_FIELDS = frozenset({"activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds",
                                "schedulingGates", "nodeName"})  # fmt: skip


def _pod_spec_changes(old: Obj, new: Obj) -> list[errors.Cause]:
    for key in set(old) | set(new):
        if key in MUTABLE_POD_FIELDS or old.get(key) == new.get(key):
            continue
        if key in ("containers", "initContainers") and _only_images_changed(old.get(key), new.get(key)):
            continue
        return [errors.Cause("FieldValueForbidden", "pod updates may not change fields other than `spec.containers[*].image`, "
                             "`spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations), "
                             "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)", "spec")]  # fmt: skip
    return []


def _only_images_changed(old: Any, new: Any) -> bool:
    if not isinstance(old, list) or not isinstance(new, list) or len(old) != len(new):
        return False
    return all({**a, "image": None} == {**b, "image": None} for a, b in zip(old, new, strict=True))
