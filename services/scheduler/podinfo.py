"""What the scheduler needs from a pod, read once per pod version into a ``PodInfo``.

A pod is parsed when the informer hands it over (each new resourceVersion), never during a
scheduling cycle: requests summed into integers (init containers and sidecars counted as
``resourcehelper.PodRequests`` does), host ports, tolerations, node selector and node affinity
compiled into matchers (``terms``), pod (anti-)affinity terms and topology spread constraints
with their label selectors built. Filters and scores then only compare integers and look up dicts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from services.machinery import quantity
from services.scheduler import terms

# Upstream's defaults for pods that request nothing, used only when scoring (``schedutil``).
DEFAULT_MILLI_CPU_REQUEST = 100
DEFAULT_MEMORY_REQUEST = 200 * 1024 * 1024
IGNORED_RESOURCES = frozenset({"pods"})

Labels = Mapping[str, str]


# -- the pod -------------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True, eq=False)
class PodInfo:
    obj: dict[str, Any]
    key: str
    namespace: str
    name: str
    uid: str
    resource_version: str
    labels: Labels
    node_name: str
    scheduler_name: str
    priority: int
    preempt_never: bool
    deleting: bool
    terminal: bool
    gated: bool
    created: str
    nominated_node: str
    # resources: millicores, bytes, counts
    cpu: int
    memory: int
    ephemeral: int
    scalar: dict[str, int]
    nonzero_cpu: int
    nonzero_memory: int
    host_ports: tuple[tuple[str, str, int], ...]
    # placement
    tolerations: tuple[Mapping[str, Any], ...]
    node_selector: Mapping[str, str]
    required_affinity: terms.NodeSelector | None
    preferred_affinity: tuple[tuple[int, terms.NodeTerm], ...]
    pod_affinity: tuple[terms.AffinityTerm, ...]
    pod_anti_affinity: tuple[terms.AffinityTerm, ...]
    preferred_pod_affinity: tuple[terms.AffinityTerm, ...]  # anti-affinity ones carry negative weights
    spread: tuple[terms.SpreadConstraint, ...]
    claims: tuple[str, ...]
    _shape: tuple[Any, ...] | None = None

    @property
    def has_required_placement(self) -> bool:
        return bool(self.node_selector) or self.required_affinity is not None

    @property
    def plain(self) -> bool:
        """Only resources and tolerations decide where it fits and how nodes score."""
        return not (
            self.node_name
            or self.node_selector
            or self.required_affinity is not None
            or self.preferred_affinity
            or self.pod_affinity
            or self.pod_anti_affinity
            or self.preferred_pod_affinity
            or self.spread
            or self.host_ports
            or self.claims
        )

    @property
    def shape(self) -> tuple[Any, ...]:
        """What a plain pod's placement depends on: pods of one shape are interchangeable."""
        if self._shape is None:
            tolerations = tuple(tuple(sorted((k, str(v)) for k, v in t.items())) for t in self.tolerations)
            self._shape = (self.cpu, self.memory, self.ephemeral, tuple(sorted(self.scalar.items())),
                           self.nonzero_cpu, self.nonzero_memory, tolerations)  # fmt: skip
        return self._shape


def _container_requests(container: Mapping[str, Any]) -> dict[str, int]:
    """Requests, defaulted from limits where absent (as API defaulting does for containers)."""
    resources = container.get("resources") or {}
    merged = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
    return {
        name: quantity.safe_amount(name, v) for name, v in merged.items() if name not in IGNORED_RESOURCES
    }


def _add(total: dict[str, int], more: Mapping[str, int]) -> None:
    for name, amount in more.items():
        total[name] = total.get(name, 0) + amount


def _max_into(total: dict[str, int], more: Mapping[str, int]) -> None:
    for name, amount in more.items():
        if amount > total.get(name, 0):
            total[name] = amount


def pod_requests(spec: Mapping[str, Any], *, nonzero: bool = False) -> dict[str, int]:
    """``resourcehelper.PodRequests``: containers summed; restartable (sidecar) init containers run
    alongside them; each ordinary init container runs alone beside the sidecars started before it;
    the pod needs the larger of the two phases, plus its overhead. Pod-level requests win."""

    def requests(container: Mapping[str, Any]) -> dict[str, int]:
        got = _container_requests(container)
        if nonzero:
            got["cpu"] = got.get("cpu") or DEFAULT_MILLI_CPU_REQUEST
            got["memory"] = got.get("memory") or DEFAULT_MEMORY_REQUEST
        return got

    total: dict[str, int] = {}
    for c in spec.get("containers") or ():
        _add(total, requests(c))
    sidecars: dict[str, int] = {}
    init_peak: dict[str, int] = {}
    for c in spec.get("initContainers") or ():
        got = requests(c)
        if c.get("restartPolicy") == "Always":
            _add(sidecars, got)
            _max_into(init_peak, sidecars)
        else:
            phase = dict(sidecars)
            _add(phase, got)
            _max_into(init_peak, phase)
    _add(total, sidecars)
    _max_into(total, init_peak)
    pod_level = (spec.get("resources") or {}).get("requests") or {}
    for name in ("cpu", "memory"):
        if name in pod_level:
            total[name] = quantity.safe_amount(name, pod_level[name])
    _add(total, {n: quantity.safe_amount(n, v) for n, v in (spec.get("overhead") or {}).items()})
    return total


def _host_ports(spec: Mapping[str, Any]) -> tuple[tuple[str, str, int], ...]:
    ports = []
    sidecars = [c for c in spec.get("initContainers") or () if c.get("restartPolicy") == "Always"]
    for c in [*(spec.get("containers") or ()), *sidecars]:
        for p in c.get("ports") or ():
            host_port = int(p.get("hostPort") or 0)
            if host_port > 0:
                ports.append((p.get("hostIP") or "0.0.0.0", p.get("protocol") or "TCP", host_port))
    return tuple(ports)


def _preferred_node_terms(raw: Any) -> tuple[tuple[int, terms.NodeTerm], ...]:
    made = []
    for item in raw or ():
        if isinstance(item, dict) and int(item.get("weight") or 0):
            made.append((int(item["weight"]), terms.node_term(item.get("preference"))))
    return tuple(made)


def from_pod(obj: dict[str, Any]) -> PodInfo:
    md, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    namespace, name = md.get("namespace") or "default", md.get("name", "")
    labels = md.get("labels") or {}
    requests = pod_requests(spec)
    nonzero = pod_requests(spec, nonzero=True)
    affinity = spec.get("affinity") or {}
    node_aff = affinity.get("nodeAffinity") or {}
    pod_aff = affinity.get("podAffinity") or {}
    anti_aff = affinity.get("podAntiAffinity") or {}
    required_raw = node_aff.get("requiredDuringSchedulingIgnoredDuringExecution")
    phase = status.get("phase")
    spread = (terms.spread_constraint(c, labels) for c in spec.get("topologySpreadConstraints") or ())
    return PodInfo(
        obj=obj,
        key=f"{namespace}/{name}",
        namespace=namespace,
        name=name,
        uid=md.get("uid", ""),
        resource_version=md.get("resourceVersion", ""),
        labels=labels,
        node_name=spec.get("nodeName") or "",
        scheduler_name=spec.get("schedulerName") or "default-scheduler",
        priority=int(spec.get("priority") or 0),
        preempt_never=spec.get("preemptionPolicy") == "Never",
        deleting=bool(md.get("deletionTimestamp")),
        terminal=phase in ("Succeeded", "Failed"),
        gated=bool(spec.get("schedulingGates")),
        created=md.get("creationTimestamp") or "",
        nominated_node=status.get("nominatedNodeName") or "",
        cpu=requests.pop("cpu", 0),
        memory=requests.pop("memory", 0),
        ephemeral=requests.pop("ephemeral-storage", 0),
        scalar={k: v for k, v in requests.items() if v},
        nonzero_cpu=nonzero.get("cpu", 0),
        nonzero_memory=nonzero.get("memory", 0),
        host_ports=_host_ports(spec),
        tolerations=tuple(t for t in spec.get("tolerations") or () if isinstance(t, dict)),
        node_selector=spec.get("nodeSelector") or {},
        required_affinity=None if required_raw is None else terms.node_selector(required_raw),
        preferred_affinity=_preferred_node_terms(
            node_aff.get("preferredDuringSchedulingIgnoredDuringExecution")
        ),
        pod_affinity=terms.affinity_terms(
            pod_aff.get("requiredDuringSchedulingIgnoredDuringExecution"), namespace, labels
        ),
        pod_anti_affinity=terms.affinity_terms(
            anti_aff.get("requiredDuringSchedulingIgnoredDuringExecution"), namespace, labels
        ),
        preferred_pod_affinity=(
            terms.weighted_terms(
                pod_aff.get("preferredDuringSchedulingIgnoredDuringExecution"), namespace, labels, 1
            )
            + terms.weighted_terms(
                anti_aff.get("preferredDuringSchedulingIgnoredDuringExecution"), namespace, labels, -1
            )
        ),
        spread=tuple(c for c in spread if c is not None),
        claims=tuple(
            v["persistentVolumeClaim"]["claimName"]
            for v in spec.get("volumes") or ()
            if isinstance(v, dict) and (v.get("persistentVolumeClaim") or {}).get("claimName")
        ),
    )


def matches_node_selector(pod: PodInfo, name: str, labels: Labels) -> bool:
    """``nodeSelector`` and required node affinity together (``RequiredNodeAffinity.Match``)."""
    for key, want in pod.node_selector.items():
        if labels.get(key) != want:
            return False
    return pod.required_affinity is None or pod.required_affinity.matches(name, labels)
