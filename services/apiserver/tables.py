"""Server-side printing: lists and watch events as ``meta.k8s.io/v1 Table``.

``kubectl get`` asks for a Table and prints its cells as they come, so the server computes
every cell, ages included ("5m", "3d4h", from creationTimestamp as of ``now``), exactly as
kube-apiserver's printers do. Each printer is a list of columns plus a function from an
object (a plain dict) to its cells; all columns are always filled and kubectl hides those
with ``priority > 0`` unless ``-o wide``. Custom resources print their
``additionalPrinterColumns`` (JSONPath, a simple subset); kinds without a printer get
Name / Created At, as upstream's default table does.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Callable
from typing import Any, Literal

import orjson

from services.apiserver import discovery, registry

Cells = list[Any]
NONE = "<none>"
UNKNOWN = "<unknown>"

# -- content negotiation ---------------------------------------------------------------------


def wants_table(accept_header: str | None) -> bool:
    """Whether the client's preferred acceptable answer is a ``meta.k8s.io/v1`` Table."""
    if not accept_header or "Table" not in accept_header:
        return False  # no Table asked for (nearly every request): no need to parse the header
    for media, params in discovery.parse_accept(accept_header):
        if media == "application/json" and params.get("as") == "Table":
            if params.get("g") == "meta.k8s.io" and params.get("v") == "v1":
                return True
            continue  # v1beta1 Tables are not served; the client's next choice is plain JSON
        if media in ("application/json", "application/*", "*/*", "application/yaml"):
            return False
    return False


# -- time --------------------------------------------------------------------------------------


def parse_time(value: str | None) -> datetime.datetime | None:
    if not value or not isinstance(value, str):
        return None
    try:
        ts = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=datetime.UTC)


def human_duration(seconds: float) -> str:
    """apimachinery's ``duration.HumanDuration``: two significant units at most."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m" if s % 60 == 0 else f"{minutes}m{s % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d" if hours % 24 == 0 else f"{hours // 24}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if days == 0 else f"{hours // 24 // 365}y{days}d"
    return f"{hours // 24 // 365}y"


def since(value: str | None, now: datetime.datetime) -> str:
    """Age of a timestamp, ``<unknown>`` when absent."""
    ts = parse_time(value)
    if ts is None:
        return UNKNOWN
    return human_duration((now - ts).total_seconds())


# -- helpers -------------------------------------------------------------------------------------


def _get(obj: Any, *path: str | int, default: Any = None) -> Any:
    for key in path:
        if isinstance(key, int):
            if not isinstance(obj, list) or len(obj) <= key:
                return default
        elif not isinstance(obj, dict):
            return default
        obj = obj[key] if isinstance(key, int) else obj.get(key)
        if obj is None:
            return default
    return obj


def format_labels(labels: dict | None) -> str:
    if not labels:
        return NONE
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def format_selector(selector: dict | None) -> str:
    """``metav1.LabelSelectorAsSelector(s).String()``: requirements sorted by key."""
    if not selector:
        return ""
    reqs: list[tuple[str, str]] = [(k, f"{k}={v}") for k, v in (selector.get("matchLabels") or {}).items()]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key", ""), expr.get("operator", ""), sorted(expr.get("values") or [])
        text = {
            "In": f"{key} in ({','.join(values)})",
            "NotIn": f"{key} notin ({','.join(values)})",
            "Exists": key,
            "DoesNotExist": f"!{key}",
        }.get(op, key)
        reqs.append((key, text))
    return ",".join(text for _, text in sorted(reqs, key=lambda r: r[0]))


def _containers(spec: dict | None) -> tuple[str, str]:
    containers = _get(spec, "containers", default=[])
    return ",".join(c.get("name", "") for c in containers), ",".join(c.get("image", "") for c in containers)


def _condition_true(conditions: list | None, kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions or [])


def _name(obj: dict) -> str:
    return _get(obj, "metadata", "name", default="")


def _age(obj: dict, now: datetime.datetime) -> str:
    return since(_get(obj, "metadata", "creationTimestamp"), now)


# -- printers ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str = "string"
    description: str = ""
    priority: int = 0
    format: str = ""

    def definition(self) -> dict:
        return {
            "name": self.name,
            "type": self.type,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        }


NAME = Column("Name", format="name", description="Name must be unique within a namespace.")
AGE = Column(
    "Age",
    description="CreationTimestamp is a timestamp representing the server time when this object was created.",
)


def _wide(name: str, description: str = "", type_: str = "string") -> Column:
    return Column(name, type=type_, description=description, priority=1)


Row = Callable[[dict, datetime.datetime], Cells]


@dataclasses.dataclass(frozen=True, slots=True)
class Printer:
    columns: tuple[Column, ...]
    row: Row


def _pod_restartable(spec: dict) -> set[str]:
    return {c.get("name") for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"}


def _last_termination(status: dict) -> datetime.datetime | None:
    return parse_time(_get(status, "lastState", "terminated", "finishedAt"))


def _later(a: datetime.datetime | None, b: datetime.datetime | None) -> datetime.datetime | None:
    if a is None or (b is not None and b > a):
        return b
    return a


@dataclasses.dataclass(slots=True)
class _Counts:
    ready: int = 0
    restarts: int = 0
    last: datetime.datetime | None = None  # when a container last terminated

    def restarted(self, cs: dict) -> None:
        self.restarts += cs.get("restartCount", 0)
        self.last = _later(self.last, _last_termination(cs))


def _init_status(spec: dict, status: dict, restartable: set[str]) -> tuple[str | None, _Counts, _Counts]:
    """(reason while initializing or None, all init containers' counts, sidecars' counts), up to
    the first init container that has not finished, as kubectl's pod printer counts them."""
    total_init = len(spec.get("initContainers") or [])
    every, sidecars = _Counts(), _Counts()
    for i, cs in enumerate(status.get("initContainerStatuses") or []):
        sidecar = cs.get("name") in restartable
        every.restarted(cs)
        if sidecar:
            sidecars.restarted(cs)
        terminated, waiting = _get(cs, "state", "terminated"), _get(cs, "state", "waiting")
        if terminated is not None and terminated.get("exitCode", 0) == 0:
            continue
        if sidecar and cs.get("started"):
            sidecars.ready += 1 if cs.get("ready") else 0
            continue
        if terminated is not None:
            if terminated.get("reason"):
                return "Init:" + terminated["reason"], every, sidecars
            if terminated.get("signal"):
                return f"Init:Signal:{terminated['signal']}", every, sidecars
            return f"Init:ExitCode:{terminated.get('exitCode', 0)}", every, sidecars
        if waiting is not None and waiting.get("reason") and waiting["reason"] != "PodInitializing":
            return "Init:" + waiting["reason"], every, sidecars
        return f"Init:{i}/{total_init}", every, sidecars
    return None, every, sidecars


def _pod_status(spec: dict, status: dict, conditions: list) -> tuple[str, _Counts]:
    """The Status cell and the ready/restart counts (kubectl's ``printPod``)."""
    reason = status.get("reason") or status.get("phase") or ""
    if any(c.get("type") == "PodScheduled" and c.get("reason") == "SchedulingGated" for c in conditions):
        reason = "SchedulingGated"
    init_reason, counts, sidecars = _init_status(spec, status, _pod_restartable(spec))
    reason = init_reason or reason
    if init_reason is not None and not _condition_true(conditions, "Initialized"):
        counts.ready = sidecars.ready
        return reason, counts
    counts = sidecars
    running = False
    for cs in reversed(status.get("containerStatuses") or []):
        counts.restarted(cs)
        waiting, terminated = _get(cs, "state", "waiting"), _get(cs, "state", "terminated")
        if waiting and waiting.get("reason"):
            reason = waiting["reason"]
        elif terminated and terminated.get("reason"):
            reason = terminated["reason"]
        elif terminated is not None:
            signal = terminated.get("signal")
            reason = f"Signal:{signal}" if signal else f"ExitCode:{terminated.get('exitCode', 0)}"
        elif cs.get("ready") and _get(cs, "state", "running") is not None:
            running = True
            counts.ready += 1
    if reason == "Completed" and running:
        reason = "Running" if _condition_true(conditions, "Ready") else "NotReady"
    return reason, counts


def _pod_row(pod: dict, now: datetime.datetime) -> Cells:
    spec, status, meta = pod.get("spec") or {}, pod.get("status") or {}, pod.get("metadata") or {}
    total = len(spec.get("containers") or []) + len(_pod_restartable(spec))
    conditions = status.get("conditions") or []
    reason, counts = _pod_status(spec, status, conditions)
    if meta.get("deletionTimestamp") and status.get("reason") == "NodeLost":
        reason = "Unknown"
    elif meta.get("deletionTimestamp") and status.get("phase") not in ("Succeeded", "Failed"):
        reason = "Terminating"
    restarts = str(counts.restarts)
    if counts.restarts and counts.last is not None:
        restarts = f"{counts.restarts} ({human_duration((now - counts.last).total_seconds())} ago)"
    ips = status.get("podIPs") or []
    gates = spec.get("readinessGates") or []
    gates_cell = NONE
    if gates:
        by_type = {c.get("type"): c.get("status") for c in reversed(conditions)}
        true = sum(1 for g in gates if by_type.get(g.get("conditionType")) == "True")
        gates_cell = f"{true}/{len(gates)}"
    return [
        _name(pod),
        f"{counts.ready}/{total}",
        reason,
        restarts,
        _age(pod, now),
        (ips[0].get("ip") if ips else "") or NONE,
        spec.get("nodeName") or NONE,
        status.get("nominatedNodeName") or NONE,
        gates_cell,
    ]


def _pod_conditions(pod: dict) -> list[dict] | None:
    phase = _get(pod, "status", "phase")
    if phase == "Succeeded":
        return [
            {
                "type": "Completed",
                "status": "True",
                "reason": "Succeeded",
                "message": "The pod has completed successfully.",
            }
        ]
    if phase == "Failed":
        return [{"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."}]
    return None


def node_roles(labels: dict | None) -> list[str]:
    roles = set()
    for key, value in (labels or {}).items():
        if key.startswith("node-role.kubernetes.io/") and key != "node-role.kubernetes.io/":
            roles.add(key.removeprefix("node-role.kubernetes.io/"))
        elif key == "kubernetes.io/role" and value:
            roles.add(value)
    return sorted(roles)


def _node_address(node: dict, kind: str) -> str:
    for address in _get(node, "status", "addresses", default=[]):
        if address.get("type") == kind:
            return address.get("address", "")
    return NONE


def _node_row(node: dict, now: datetime.datetime) -> Cells:
    status = []
    for condition in _get(node, "status", "conditions", default=[]):
        if condition.get("type") == "Ready":
            status = ["Ready" if condition.get("status") == "True" else "NotReady"]
    status = status or ["Unknown"]
    if _get(node, "spec", "unschedulable"):
        status.append("SchedulingDisabled")
    info = _get(node, "status", "nodeInfo", default={})
    return [
        _name(node),
        ",".join(status),
        ",".join(node_roles(_get(node, "metadata", "labels"))) or NONE,
        _age(node, now),
        info.get("kubeletVersion", ""),
        _node_address(node, "InternalIP"),
        _node_address(node, "ExternalIP"),
        info.get("osImage") or UNKNOWN,
        info.get("kernelVersion") or UNKNOWN,
        info.get("containerRuntimeVersion") or UNKNOWN,
    ]


def _template_cells(obj: dict, *template_path: str) -> Cells:
    names, images = _containers(_get(obj, *template_path, "template", "spec"))
    return [names, images, format_selector(_get(obj, *template_path, "selector"))]


def _deployment_row(obj: dict, now: datetime.datetime) -> Cells:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return [
        _name(obj),
        f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
        status.get("updatedReplicas", 0),
        status.get("availableReplicas", 0),
        _age(obj, now),
        *_template_cells(obj, "spec"),
    ]


def _replicaset_row(obj: dict, now: datetime.datetime) -> Cells:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return [
        _name(obj),
        spec.get("replicas", 0),
        status.get("replicas", 0),
        status.get("readyReplicas", 0),
        _age(obj, now),
        *_template_cells(obj, "spec"),
    ]


def _rc_row(obj: dict, now: datetime.datetime) -> Cells:
    cells = _replicaset_row(obj, now)
    cells[-1] = format_labels(_get(obj, "spec", "selector"))  # an RC's selector is a plain map
    return cells


def _statefulset_row(obj: dict, now: datetime.datetime) -> Cells:
    ready, desired = _get(obj, "status", "readyReplicas", default=0), _get(obj, "spec", "replicas", default=0)
    return [_name(obj), f"{ready}/{desired}", _age(obj, now), *_template_cells(obj, "spec")[:2]]


def _daemonset_row(obj: dict, now: datetime.datetime) -> Cells:
    status = obj.get("status") or {}
    return [
        _name(obj),
        status.get("desiredNumberScheduled", 0),
        status.get("currentNumberScheduled", 0),
        status.get("numberReady", 0),
        status.get("updatedNumberScheduled", 0),
        status.get("numberAvailable", 0),
        format_labels(_get(obj, "spec", "template", "spec", "nodeSelector")),
        _age(obj, now),
        *_template_cells(obj, "spec"),
    ]


def _job_row(obj: dict, now: datetime.datetime) -> Cells:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    succeeded = status.get("succeeded", 0)
    if spec.get("completions") is not None:
        completions = f"{succeeded}/{spec['completions']}"
    elif (spec.get("parallelism") or 0) > 1:
        completions = f"{succeeded}/1 of {spec['parallelism']}"
    else:
        completions = f"{succeeded}/1"
    start, end = parse_time(status.get("startTime")), parse_time(status.get("completionTime"))
    duration = "" if start is None else human_duration(((end or now) - start).total_seconds())
    conditions = status.get("conditions")
    if _condition_true(conditions, "Complete"):
        state = "Complete"
    elif _condition_true(conditions, "Failed"):
        state = "Failed"
    elif _get(obj, "metadata", "deletionTimestamp"):
        state = "Terminating"
    else:
        state = next(
            (
                s
                for s in ("Suspended", "FailureTarget", "SuccessCriteriaMet")
                if _condition_true(conditions, s)
            ),
            "Running",
        )
    return [_name(obj), state, completions, duration, _age(obj, now), *_template_cells(obj, "spec")]


def _cronjob_row(obj: dict, now: datetime.datetime) -> Cells:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    suspend = spec.get("suspend")
    last = status.get("lastScheduleTime")
    return [
        _name(obj),
        spec.get("schedule", ""),
        spec.get("timeZone") or NONE,
        "<unset>" if suspend is None else str(bool(suspend)),
        len(status.get("active") or []),
        since(last, now) if last else NONE,
        _age(obj, now),
        *_template_cells(obj, "spec", "jobTemplate", "spec"),
    ]


def _service_external_ip(svc: dict) -> str:
    spec = svc.get("spec") or {}
    external = spec.get("externalIPs") or []
    kind = spec.get("type", "ClusterIP")
    if kind in ("ClusterIP", "NodePort"):
        return ",".join(external) or NONE
    if kind == "LoadBalancer":
        ingress = _get(svc, "status", "loadBalancer", "ingress", default=[])
        lb = [i.get("ip") or i.get("hostname") for i in ingress if i.get("ip") or i.get("hostname")]
        return ",".join(lb + external) or "<pending>"
    if kind == "ExternalName":
        return spec.get("externalName", "")
    return UNKNOWN


def _service_row(svc: dict, now: datetime.datetime) -> Cells:
    spec = svc.get("spec") or {}
    ports = []
    for port in spec.get("ports") or []:
        node_port = port.get("nodePort")
        middle = f":{node_port}" if node_port else ""
        ports.append(f"{port.get('port')}{middle}/{port.get('protocol', 'TCP')}")
    cluster_ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    return [
        _name(svc),
        spec.get("type", "ClusterIP"),
        cluster_ips[0] if cluster_ips else NONE,
        _service_external_ip(svc),
        ",".join(ports) or NONE,
        _age(svc, now),
        format_labels(spec.get("selector")),
    ]


def format_endpoints(subsets: list | None, limit: int = 3) -> str:
    if not subsets:
        return NONE
    shown: list[str] = []
    count = 0
    for subset in subsets:
        addresses = subset.get("addresses") or []
        ports = subset.get("ports") or [None]
        for port in ports:
            count += len(addresses)
            for address in addresses:
                if len(shown) < limit:
                    ip = address.get("ip", "")
                    host = f"[{ip}]" if ":" in ip else ip
                    shown.append(ip if port is None else f"{host}:{port.get('port')}")
    text = ",".join(shown)
    return f"{text} + {count - limit} more..." if count > limit else text


def _endpoints_row(obj: dict, now: datetime.datetime) -> Cells:
    return [_name(obj), format_endpoints(obj.get("subsets")), _age(obj, now)]


def _namespace_row(obj: dict, now: datetime.datetime) -> Cells:
    return [_name(obj), _get(obj, "status", "phase", default=""), _age(obj, now)]


def _event_source(component: str, host: str) -> str:
    return f"{component}, {host}" if host else component


def _event_cells(
    obj: dict,
    now: datetime.datetime,
    *,
    first: str | None,
    last: str | None,
    event_time: str | None,
    series: dict | None,
    count: int,
    regarding: dict,
    source: str,
    message: str,
) -> Cells:
    first_cell = since(first, now) if first else since(event_time, now)
    last_cell = since(last, now) if last else first_cell
    if series:
        last_cell, count = since(series.get("lastObservedTime"), now), series.get("count", 0)
    elif not count:
        count = 1
    kind, name = (regarding.get("kind") or "").lower(), regarding.get("name")
    return [
        last_cell,
        obj.get("type", ""),
        obj.get("reason", ""),
        f"{kind}/{name}" if name else kind,
        regarding.get("fieldPath", ""),
        source,
        (message or "").strip(),
        first_cell,
        count,
        _name(obj),
    ]


def _event_row(obj: dict, now: datetime.datetime) -> Cells:
    source = obj.get("source") or {}
    return _event_cells(
        obj,
        now,
        first=obj.get("firstTimestamp"),
        last=obj.get("lastTimestamp"),
        event_time=obj.get("eventTime"),
        series=obj.get("series"),
        count=obj.get("count") or 0,
        regarding=obj.get("involvedObject") or {},
        source=_event_source(
            source.get("component") or obj.get("reportingComponent", ""),
            source.get("host") or obj.get("reportingInstance", ""),
        ),
        message=obj.get("message", ""),
    )


def _events_v1_row(obj: dict, now: datetime.datetime) -> Cells:
    source = obj.get("deprecatedSource") or {}
    return _event_cells(
        obj,
        now,
        first=obj.get("deprecatedFirstTimestamp"),
        last=obj.get("deprecatedLastTimestamp"),
        event_time=obj.get("eventTime"),
        series=obj.get("series"),
        count=obj.get("deprecatedCount") or 0,
        regarding=obj.get("regarding") or {},
        source=_event_source(
            source.get("component") or obj.get("reportingController", ""),
            source.get("host") or obj.get("reportingInstance", ""),
        ),
        message=obj.get("note", ""),
    )


_ACCESS_MODES = {
    "ReadWriteOnce": "RWO",
    "ReadOnlyMany": "ROX",
    "ReadWriteMany": "RWX",
    "ReadWriteOncePod": "RWOP",
}


def _access_modes(modes: list | None) -> str:
    return ",".join(_ACCESS_MODES.get(m, m) for m in modes or [])


def _phase(obj: dict) -> str:
    if _get(obj, "metadata", "deletionTimestamp"):
        return "Terminating"
    return _get(obj, "status", "phase", default="")


def _pv_row(pv: dict, now: datetime.datetime) -> Cells:
    spec = pv.get("spec") or {}
    claim = spec.get("claimRef")
    return [
        _name(pv),
        _get(spec, "capacity", "storage", default=""),
        _access_modes(spec.get("accessModes")),
        spec.get("persistentVolumeReclaimPolicy", ""),
        _phase(pv),
        f"{claim.get('namespace')}/{claim.get('name')}" if claim else "",
        spec.get("storageClassName", ""),
        spec.get("volumeAttributesClassName") or "<unset>",
        _get(pv, "status", "reason", default=""),
        _age(pv, now),
        spec.get("volumeMode") or "<unset>",
    ]


def _pvc_row(pvc: dict, now: datetime.datetime) -> Cells:
    spec, status = pvc.get("spec") or {}, pvc.get("status") or {}
    bound = bool(spec.get("volumeName"))
    return [
        _name(pvc),
        _phase(pvc),
        spec.get("volumeName", ""),
        _get(status, "capacity", "storage", default="") if bound else "",
        _access_modes(status.get("accessModes")) if bound else "",
        spec.get("storageClassName", ""),
        spec.get("volumeAttributesClassName") or "<unset>",
        _age(pvc, now),
        spec.get("volumeMode") or "<unset>",
    ]


def _configmap_row(obj: dict, now: datetime.datetime) -> Cells:
    return [_name(obj), len(obj.get("data") or {}) + len(obj.get("binaryData") or {}), _age(obj, now)]


def _secret_row(obj: dict, now: datetime.datetime) -> Cells:
    return [_name(obj), obj.get("type", ""), len(obj.get("data") or {}), _age(obj, now)]


def _serviceaccount_row(obj: dict, now: datetime.datetime) -> Cells:
    return [_name(obj), len(obj.get("secrets") or []), _age(obj, now)]


def _lease_row(obj: dict, now: datetime.datetime) -> Cells:
    return [_name(obj), _get(obj, "spec", "holderIdentity", default=""), _age(obj, now)]


def _ingress_row(obj: dict, now: datetime.datetime) -> Cells:
    spec = obj.get("spec") or {}
    hosts = [r.get("host") for r in spec.get("rules") or [] if r.get("host")]
    ingress = _get(obj, "status", "loadBalancer", "ingress", default=[])
    addresses = [i.get("ip") or i.get("hostname") for i in ingress if i.get("ip") or i.get("hostname")]
    return [
        _name(obj),
        spec.get("ingressClassName") or NONE,
        ",".join(hosts) or "*",
        ",".join(addresses),
        "80, 443" if spec.get("tls") else "80",
        _age(obj, now),
    ]


def _storageclass_row(obj: dict, now: datetime.datetime) -> Cells:
    annotations = _get(obj, "metadata", "annotations", default={})
    default = annotations.get("storageclass.kubernetes.io/is-default-class") == "true"
    return [
        _name(obj) + (" (default)" if default else ""),
        obj.get("provisioner", ""),
        obj.get("reclaimPolicy") or "Delete",
        obj.get("volumeBindingMode") or "Immediate",
        bool(obj.get("allowVolumeExpansion")),
        _age(obj, now),
    ]


def _rolebinding_row(obj: dict, now: datetime.datetime) -> Cells:
    role = obj.get("roleRef") or {}
    subjects = obj.get("subjects") or []

    def of(kind: str) -> str:
        names = []
        for s in subjects:
            if s.get("kind") == kind:
                names.append(
                    f"{s.get('namespace', '')}/{s.get('name')}" if kind == "ServiceAccount" else s.get("name")
                )
        return ", ".join(names)

    return [
        _name(obj),
        f"{role.get('kind', '')}/{role.get('name', '')}",
        _age(obj, now),
        of("User"),
        of("Group"),
        of("ServiceAccount"),
    ]


def _pdb_row(obj: dict, now: datetime.datetime) -> Cells:
    spec = obj.get("spec") or {}
    return [
        _name(obj),
        str(spec["minAvailable"]) if "minAvailable" in spec else "N/A",
        str(spec["maxUnavailable"]) if "maxUnavailable" in spec else "N/A",
        _get(obj, "status", "disruptionsAllowed", default=0),
        _age(obj, now),
    ]


def _priorityclass_row(obj: dict, now: datetime.datetime) -> Cells:
    return [
        _name(obj),
        obj.get("value", 0),
        bool(obj.get("globalDefault")),
        _age(obj, now),
        obj.get("preemptionPolicy") or "PreemptLowerPriority",
    ]


def _endpointslice_row(obj: dict, now: datetime.datetime) -> Cells:
    ports = ",".join(str(p.get("port", "")) for p in obj.get("ports") or [] if p.get("port")) or "<unset>"
    addresses = [a for e in obj.get("endpoints") or [] for a in e.get("addresses") or []]
    shown = ",".join(addresses[:3]) + (f" + {len(addresses) - 3} more..." if len(addresses) > 3 else "")
    return [_name(obj), obj.get("addressType", ""), ports, shown or "<unset>", _age(obj, now)]


def _created_at(obj: dict, now: datetime.datetime) -> Cells:
    ts = parse_time(_get(obj, "metadata", "creationTimestamp"))
    return [_name(obj), ts.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if ts else None]


DEFAULT = Printer((NAME, Column("Created At", type="date", description=AGE.description)), _created_at)
_CONTAINERS = (
    _wide("Containers", "Names of each container in the template."),
    _wide("Images", "Images referenced by each container in the template."),
)
_SELECTOR = _wide("Selector", "The label selector of the resource.")
_INT = "integer"

PRINTERS: dict[tuple[str, str], Printer] = {
    ("", "pods"): Printer(
        (
            NAME,
            Column("Ready", description="The aggregate readiness state of this pod for accepting traffic."),
            Column("Status", description="The aggregate status of the containers in this pod."),
            Column(
                "Restarts",
                description="The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            ),
            AGE,
            _wide("IP", "IP address allocated to the pod."),
            _wide("Node", "The node the pod is scheduled onto."),
            _wide("Nominated Node", "The node the pod is nominated to run on once preemption completes."),
            _wide("Readiness Gates", "The readiness gates of the pod that are true, of all."),
        ),
        _pod_row,
    ),
    ("", "nodes"): Printer(
        (
            NAME,
            Column("Status", description="The status of the node"),
            Column("Roles", description="The roles of the node"),
            AGE,
            Column("Version", description="Kubelet Version reported by the node."),
            _wide("Internal-IP", "List of addresses reachable to the node."),
            _wide("External-IP", "List of addresses reachable to the node."),
            _wide("OS-Image", "OS Image reported by the node from /etc/os-release."),
            _wide("Kernel-Version", "Kernel Version reported by the node."),
            _wide("Container-Runtime", "Container Runtime Version reported by the node."),
        ),
        _node_row,
    ),
    ("apps", "deployments"): Printer(
        (
            NAME,
            Column("Ready", description="Number of the pod with ready state"),
            Column(
                "Up-to-date",
                _INT,
                "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
            ),
            Column(
                "Available",
                _INT,
                "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
            ),
            AGE,
            *_CONTAINERS,
            _SELECTOR,
        ),
        _deployment_row,
    ),
    ("apps", "replicasets"): Printer(
        (
            NAME,
            Column("Desired", _INT, "Number of desired pods."),
            Column("Current", _INT, "Number of actual replicas."),
            Column("Ready", _INT, "The number of ready replicas for this replica set."),
            AGE,
            *_CONTAINERS,
            _SELECTOR,
        ),
        _replicaset_row,
    ),
    ("apps", "statefulsets"): Printer(
        (NAME, Column("Ready", description="Number of the pod with ready state"), AGE, *_CONTAINERS),
        _statefulset_row,
    ),
    ("apps", "daemonsets"): Printer(
        (
            NAME,
            Column("Desired", _INT, "The total number of nodes that should be running the daemon pod."),
            Column(
                "Current",
                _INT,
                "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod.",
            ),
            Column(
                "Ready",
                _INT,
                "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready.",
            ),
            Column("Up-to-date", _INT, "The total number of nodes that are running updated daemon pod."),
            Column(
                "Available",
                _INT,
                "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available.",
            ),
            Column(
                "Node Selector",
                description="NodeSelector is a selector which must be true for the pod to fit on a node.",
            ),
            AGE,
            *_CONTAINERS,
            _SELECTOR,
        ),
        _daemonset_row,
    ),
    ("batch", "jobs"): Printer(
        (
            NAME,
            Column("Status", description="Status of the job."),
            Column(
                "Completions",
                description="The desired number of successfully finished pods the job should be run with.",
            ),
            Column("Duration", description="Time required to complete the job."),
            AGE,
            *_CONTAINERS,
            _SELECTOR,
        ),
        _job_row,
    ),
    ("batch", "cronjobs"): Printer(
        (
            NAME,
            Column("Schedule", description="The schedule in Cron format."),
            Column("Timezone", description="The time zone name for the given schedule."),
            Column(
                "Suspend",
                "boolean",
                description="This flag tells the controller to suspend subsequent executions.",
            ),
            Column("Active", _INT, "A list of pointers to currently running jobs."),
            Column(
                "Last Schedule",
                description="Information when was the last time the job was successfully scheduled.",
            ),
            AGE,
            *_CONTAINERS,
            _SELECTOR,
        ),
        _cronjob_row,
    ),
    ("", "replicationcontrollers"): Printer(
        (
            NAME,
            Column("Desired", _INT, "Number of desired pods."),
            Column("Current", _INT, "Number of actual replicas."),
            Column("Ready", _INT, "The number of ready replicas for this replication controller."),
            AGE,
            *_CONTAINERS,
            _SELECTOR,
        ),
        _rc_row,
    ),
    ("", "services"): Printer(
        (
            NAME,
            Column("Type", description="The type of the service."),
            Column("Cluster-IP", description="The IP address of the service within the cluster."),
            Column(
                "External-IP",
                description="The IP addresses through which clients outside the cluster reach the service.",
            ),
            Column("Port(s)", description="The ports that are exposed by this service."),
            AGE,
            _wide(
                "Selector", "Route service traffic to pods with label keys and values matching this selector."
            ),
        ),
        _service_row,
    ),
    ("", "endpoints"): Printer(
        (NAME, Column("Endpoints", description="Endpoints of the service, up to three."), AGE), _endpoints_row
    ),
    ("", "namespaces"): Printer(
        (NAME, Column("Status", description="The status of the namespace"), AGE), _namespace_row
    ),
    ("", "configmaps"): Printer(
        (NAME, Column("Data", description="Number of keys in the configmap."), AGE), _configmap_row
    ),
    ("", "secrets"): Printer(
        (
            NAME,
            Column("Type", description="The type of the secret"),
            Column("Data", description="Number of keys in the secret."),
            AGE,
        ),
        _secret_row,
    ),
    ("", "serviceaccounts"): Printer(
        (NAME, Column("Secrets", description="Number of secrets listed by the service account."), AGE),
        _serviceaccount_row,
    ),
    ("", "persistentvolumes"): Printer(
        (
            NAME,
            Column("Capacity", description="The storage capacity of the volume."),
            Column("Access Modes", description="All the ways the volume can be mounted."),
            Column("Reclaim Policy", description="What happens to the volume when released from its claim."),
            Column("Status", description="The phase of the volume."),
            Column("Claim", description="The claim bound to the volume."),
            Column("StorageClass", description="The storage class of the volume."),
            Column("VolumeAttributesClass", description="The volume attributes class of the volume."),
            Column("Reason", description="Why the volume is in its phase."),
            AGE,
            _wide("VolumeMode", "Whether the volume is a filesystem or a raw block device."),
        ),
        _pv_row,
    ),
    ("", "persistentvolumeclaims"): Printer(
        (
            NAME,
            Column("Status", description="The phase of the claim."),
            Column("Volume", description="The volume bound to the claim."),
            Column("Capacity", description="The capacity of the bound volume."),
            Column("Access Modes", description="The access modes of the bound volume."),
            Column("StorageClass", description="The storage class the claim asks for."),
            Column("VolumeAttributesClass", description="The volume attributes class the claim asks for."),
            AGE,
            _wide("VolumeMode", "Whether the claim asks for a filesystem or a raw block device."),
        ),
        _pvc_row,
    ),
    ("coordination.k8s.io", "leases"): Printer(
        (NAME, Column("Holder", description="The holder of the lease."), AGE), _lease_row
    ),
    ("networking.k8s.io", "ingresses"): Printer(
        (
            NAME,
            Column("Class", description="The name of the IngressClass resource."),
            Column("Hosts", description="Hosts that incoming requests are matched against."),
            Column(
                "Address", description="Address is a list containing ingress points for the load-balancer"
            ),
            Column("Ports", description="Ports of TLS configurations that open"),
            AGE,
        ),
        _ingress_row,
    ),
    ("storage.k8s.io", "storageclasses"): Printer(
        (
            NAME,
            Column("Provisioner", description="The provisioner of the storage class."),
            Column("ReclaimPolicy", description="The reclaim policy of volumes it provisions."),
            Column("VolumeBindingMode", description="When volumes are bound and provisioned."),
            Column("AllowVolumeExpansion", "boolean", "Whether volumes can be expanded."),
            AGE,
        ),
        _storageclass_row,
    ),
    ("discovery.k8s.io", "endpointslices"): Printer(
        (
            NAME,
            Column("AddressType", description="The type of address carried by this EndpointSlice."),
            Column("Ports", description="Ports exposed by this EndpointSlice."),
            Column("Endpoints", description="Endpoints in this EndpointSlice, up to three."),
            AGE,
        ),
        _endpointslice_row,
    ),
    ("policy", "poddisruptionbudgets"): Printer(
        (
            NAME,
            Column("Min Available", description="The minimum number of pods that must be available."),
            Column("Max Unavailable", description="The maximum number of pods that may be unavailable."),
            Column("Allowed Disruptions", _INT, "Number of pod disruptions that are currently allowed."),
            AGE,
        ),
        _pdb_row,
    ),
    ("scheduling.k8s.io", "priorityclasses"): Printer(
        (
            NAME,
            Column("Value", _INT, "The priority value."),
            Column("Global-Default", "boolean", "Whether this is the default priority class."),
            AGE,
            _wide("PreemptionPolicy", "The policy for preempting pods with lower priority."),
        ),
        _priorityclass_row,
    ),
}
_EVENT_COLUMNS = (
    Column("Last Seen", description="Time when this event was last observed."),
    Column(
        "Type", description="Type of this event (Normal, Warning), new types could be added in the future."
    ),
    Column("Reason", description="The reason for the transition into the object's current status."),
    Column("Object", description="The object that this event is about."),
    _wide("Subobject", "The field of the object that this event is about, if any."),
    _wide("Source", "The component reporting this event."),
    Column("Message", description="A human-readable description of the status of this operation."),
    _wide("First Seen", "The time at which the event was first recorded."),
    _wide("Count", "The number of times this event has occurred."),
    Column("Name", description="Name of the event.", priority=1, format="name"),
)
PRINTERS[("", "events")] = Printer(_EVENT_COLUMNS, _event_row)
PRINTERS[("events.k8s.io", "events")] = Printer(_EVENT_COLUMNS, _events_v1_row)
_BINDING_COLUMNS = (
    NAME,
    Column("Role", description="Role referenced by this binding."),
    AGE,
    _wide("Users", "Users in the binding."),
    _wide("Groups", "Groups in the binding."),
    _wide("ServiceAccounts", "ServiceAccounts in the binding."),
)
PRINTERS[("rbac.authorization.k8s.io", "rolebindings")] = Printer(_BINDING_COLUMNS, _rolebinding_row)
PRINTERS[("rbac.authorization.k8s.io", "clusterrolebindings")] = Printer(_BINDING_COLUMNS, _rolebinding_row)

# -- custom resources: additionalPrinterColumns --------------------------------------------------

_TOKEN = re.compile(
    r"\.([A-Za-z0-9_$-]+)|\[(\*|-?\d+|'[^']*'|\"[^\"]*\"|\?\(@\.([\w.]+)\s*(==|!=)\s*(['\"]?)(.*?)\5\))\]"
)


def jsonpath(obj: Any, path: str) -> list[Any]:
    """Values at a JSONPath of the kind CRD printer columns use: ``.a.b``, ``.a[0]``, ``.a[*].b``,
    ``.a['x.y']``, ``.a[?(@.type=="Ready")].status``. An unsupported path finds nothing."""
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    path = path.removeprefix("$")
    values, pos = [obj], 0
    while pos < len(path):
        match = _TOKEN.match(path, pos)
        if match is None:
            return []
        pos = match.end()
        values = _step(values, match)
    return values


def _step(values: list[Any], match: re.Match) -> list[Any]:
    field, bracket, filter_field, op, _, literal = match.groups()
    out: list[Any] = []
    for value in values:
        if field is not None:
            if isinstance(value, dict) and field in value:
                out.append(value[field])
        elif filter_field is not None:
            for item in value if isinstance(value, list) else []:
                found = jsonpath(item, "." + filter_field)
                text = _cell_text(found[0]) if found else None
                if (text == literal) == (op == "=="):
                    out.append(item)
        elif bracket == "*":
            out.extend(
                value if isinstance(value, list) else (value.values() if isinstance(value, dict) else [])
            )
        elif bracket[0] in "'\"":
            key = bracket[1:-1]
            if isinstance(value, dict) and key in value:
                out.append(value[key])
        elif isinstance(value, list):
            index = int(bracket)
            if -len(value) <= index < len(value):
                out.append(value[index])
    return out


def _cell_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value).decode()


def _custom_cell(kind: str, value: Any, now: datetime.datetime) -> Any:
    """apiextensions' ``cellForJSONValue``: the value in the column's type, or None."""
    if value is None:
        return None
    if kind == "integer" and isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if kind == "number" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind == "boolean" and isinstance(value, bool):
        return value
    if kind == "string":
        return _cell_text(value)
    if kind == "date" and isinstance(value, str):
        return since(value, now) if parse_time(value) else "<invalid>"
    return None


def custom_printer(columns: tuple[dict, ...]) -> Printer:
    """A Printer from a CRD version's ``additionalPrinterColumns`` (Name first; Age when none)."""
    if not columns:
        columns = ({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},)
    defs = tuple(
        Column(
            c.get("name", ""),
            type=c.get("type", "string"),
            description=c.get("description", ""),
            priority=c.get("priority", 0),
            format=c.get("format", ""),
        )
        for c in columns
    )

    def row(obj: dict, now: datetime.datetime) -> Cells:
        cells: Cells = [_name(obj)]
        for column, definition in zip(columns, defs, strict=True):
            found = jsonpath(obj, column.get("jsonPath", ""))
            cells.append(_custom_cell(definition.type, found[0], now) if found else None)
        return cells

    return Printer((NAME, *defs), row)


def printer_for(info: registry.ResourceInfo) -> Printer:
    if info.custom or info.printer_columns:
        return custom_printer(info.printer_columns)
    return PRINTERS.get((info.group, info.plural), DEFAULT)


# -- the Table ----------------------------------------------------------------------------------


def _row_object(info: registry.ResourceInfo, obj: dict, include_object: str) -> dict | None:
    if include_object == "Object":
        return {"apiVersion": info.api_version, "kind": info.kind, **obj}
    if include_object == "Metadata":
        return {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata") or {},
        }
    return None


def to_table(
    info: registry.ResourceInfo,
    objects: list[dict],
    *,
    include_object: Literal["None", "Metadata", "Object"],
    list_meta: dict,
    with_columns: bool = True,
    now: datetime.datetime | None = None,
) -> dict:
    """A ``meta.k8s.io/v1`` Table of ``objects``. ``with_columns=False`` for watch events after
    the first; ``list_meta`` carries resourceVersion / continue / remainingItemCount."""
    now = now or datetime.datetime.now(datetime.UTC)
    printer = printer_for(info)
    rows = []
    for obj in objects:
        row: dict = {"cells": printer.row(obj, now)}
        if printer.row is _pod_row:
            conditions = _pod_conditions(obj)
            if conditions:
                row["conditions"] = conditions
        row_object = _row_object(info, obj, include_object)
        if row_object is not None:
            row["object"] = row_object
        rows.append(row)
    columns = [c.definition() for c in printer.columns] if with_columns else []
    metadata = {
        k: list_meta[k] for k in ("resourceVersion", "continue", "remainingItemCount") if list_meta.get(k)
    }
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns,
        "rows": rows,
    }
