"""Filters: can this pod run on this node? Upstream's default filter plugins, in upstream's order.

``prefilter`` runs once per scheduling attempt and computes what every node's check shares (the
claims' volume node affinity, topology spread counts per domain, inter-pod affinity counts per
topology pair), like the PreFilter extension point; it may reject the pod outright (a missing
claim). ``filter_node`` then runs the node checks in upstream's order and stops at the first that
fails, as the framework does; one check may give several reasons (``Insufficient cpu`` and
``Insufficient memory``). Reasons are Kubernetes' own strings: users and tools grep for them.

Each result carries upstream's code: ``UNSCHEDULABLE`` (preempting lower-priority pods might
help) or ``UNRESOLVABLE`` (nothing on this node can change that: taints, affinity, a node that
is cordoned), which is how preemption picks the nodes worth a dry run.

Counts kept in the cycle state can be moved by ``CycleState.add_pod``/``remove_pod`` on a copy,
so preemption asks "and without these victims?" without recomputing from the cache.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from services.scheduler import cache as cache_
from services.scheduler import podinfo, terms, types
from services.scheduler.cache import NodeInfo
from services.scheduler.podinfo import PodInfo

UNSCHEDULABLE = "Unschedulable"
UNRESOLVABLE = "UnschedulableAndUnresolvable"

# Plugin names (as in upstream's configuration and in the queue's re-queueing decisions).
NODE_UNSCHEDULABLE = "NodeUnschedulable"
NODE_NAME = "NodeName"
TAINT_TOLERATION = "TaintToleration"
NODE_AFFINITY = "NodeAffinity"
NODE_PORTS = "NodePorts"
NODE_RESOURCES_FIT = "NodeResourcesFit"
VOLUME_BINDING = "VolumeBinding"
POD_TOPOLOGY_SPREAD = "PodTopologySpread"
INTER_POD_AFFINITY = "InterPodAffinity"

# Reasons, worded as upstream's plugins word them.
REASON_UNSCHEDULABLE = "node(s) were unschedulable"
REASON_NODE_NAME = "node(s) didn't match the requested node name"
REASON_NODE_AFFINITY = "node(s) didn't match Pod's node affinity/selector"
REASON_PORTS = "node(s) didn't have free ports for the requested pod ports"
REASON_TOO_MANY_PODS = "Too many pods"
REASON_VOLUME_NODE_CONFLICT = "node(s) had volume node affinity conflict"
REASON_UNBOUND_IMMEDIATE = "pod has unbound immediate PersistentVolumeClaims"
REASON_SPREAD = "node(s) didn't match pod topology spread constraints"
REASON_SPREAD_LABEL = REASON_SPREAD + " (missing required label)"
REASON_AFFINITY = "node(s) didn't match pod affinity rules"
REASON_ANTI_AFFINITY = "node(s) didn't match pod anti-affinity rules"
REASON_EXISTING_ANTI_AFFINITY = "node(s) didn't satisfy existing pods anti-affinity rules"
UNSCHEDULABLE_TAINT = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}


def untolerated_taint(taint: Mapping[str, Any]) -> str:
    return f"node(s) had untolerated taint {{{taint.get('key', '')}: {taint.get('value') or ''}}}"


def insufficient(resource: str) -> str:
    return f"Insufficient {resource}"


@dataclasses.dataclass(frozen=True, slots=True)
class Status:
    code: str  # UNSCHEDULABLE or UNRESOLVABLE
    reasons: tuple[str, ...]
    plugin: str


def _status(plugin: str, code: str, *reasons: str) -> Status:
    return Status(code, reasons, plugin)


# -- shared state of one attempt -----------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class SpreadState:
    """Matching pods per (topology key, value), over the nodes that count for the constraints."""

    constraints: tuple[terms.SpreadConstraint, ...]
    counts: dict[tuple[str, str], int]
    domains: dict[str, set[str]]  # topology key -> values seen on eligible nodes
    eligible: set[str]  # node names whose pods count

    def copy(self) -> SpreadState:
        return SpreadState(self.constraints, dict(self.counts), self.domains, self.eligible)

    def min_match(self, constraint: terms.SpreadConstraint) -> int:
        values = self.domains.get(constraint.topology_key) or set()
        if len(values) < constraint.min_domains:
            return 0
        return min((self.counts.get((constraint.topology_key, v), 0) for v in values), default=0)

    def update(self, pod: PodInfo, node: NodeInfo, incoming: PodInfo, delta: int) -> None:
        if node.name not in self.eligible or pod.namespace != incoming.namespace or pod.deleting:
            return
        for c in self.constraints:
            value = node.labels.get(c.topology_key)
            if value is not None and c.selector.matches(pod.labels):
                pair = (c.topology_key, value)
                self.counts[pair] = self.counts.get(pair, 0) + delta


@dataclasses.dataclass(slots=True)
class AffinityState:
    """Upstream's InterPodAffinity pre-filter state: counts per (topology key, value)."""

    existing_anti: collections.Counter[tuple[str, str]]  # existing pods' anti-affinity vs. us
    affinity: collections.Counter[tuple[str, str]]  # pods matching all our affinity terms
    anti: collections.Counter[tuple[str, str]]  # pods matching our anti-affinity terms
    namespace_labels: Callable[[str], Mapping[str, str] | None]

    def copy(self) -> AffinityState:
        return AffinityState(
            collections.Counter(self.existing_anti), collections.Counter(self.affinity),
            collections.Counter(self.anti), self.namespace_labels,
        )  # fmt: skip

    def update(self, pod: PodInfo, node: NodeInfo, incoming: PodInfo, delta: int) -> None:
        labels = node.labels
        for term in pod.pod_anti_affinity:
            value = labels.get(term.topology_key)
            if value is not None and term.matches(incoming, self.namespace_labels):
                self.existing_anti[(term.topology_key, value)] += delta
        if incoming.pod_affinity and all(
            t.matches(pod, self.namespace_labels) for t in incoming.pod_affinity
        ):
            for term in incoming.pod_affinity:
                value = labels.get(term.topology_key)
                if value is not None:
                    self.affinity[(term.topology_key, value)] += delta
        for term in incoming.pod_anti_affinity:
            value = labels.get(term.topology_key)
            if value is not None and term.matches(pod, self.namespace_labels):
                self.anti[(term.topology_key, value)] += delta


@dataclasses.dataclass(slots=True)
class CycleState:
    pod: PodInfo
    cache: cache_.Cache
    listers: types.Listers
    volume_selectors: tuple[terms.NodeSelector, ...] = ()
    spread: SpreadState | None = None
    affinity: AffinityState | None = None
    checks: tuple[Callable[[CycleState, NodeInfo], Status | None], ...] = ()

    def copy(self) -> CycleState:
        return dataclasses.replace(
            self,
            spread=None if self.spread is None else self.spread.copy(),
            affinity=None if self.affinity is None else self.affinity.copy(),
        )

    def add_pod(self, pod: PodInfo, node: NodeInfo) -> None:
        self._update(pod, node, 1)

    def remove_pod(self, pod: PodInfo, node: NodeInfo) -> None:
        self._update(pod, node, -1)

    def _update(self, pod: PodInfo, node: NodeInfo, delta: int) -> None:
        if self.spread is not None:
            self.spread.update(pod, node, self.pod, delta)
        if self.affinity is not None:
            self.affinity.update(pod, node, self.pod, delta)


# -- the node checks -------------------------------------------------------------------------------


def node_unschedulable(state: CycleState, node: NodeInfo) -> Status | None:
    if node.unschedulable and not terms.tolerated(state.pod.tolerations, UNSCHEDULABLE_TAINT):
        return _status(NODE_UNSCHEDULABLE, UNRESOLVABLE, REASON_UNSCHEDULABLE)
    return None


def node_name(state: CycleState, node: NodeInfo) -> Status | None:
    if state.pod.node_name and state.pod.node_name != node.name:
        return _status(NODE_NAME, UNRESOLVABLE, REASON_NODE_NAME)
    return None


def taint_toleration(state: CycleState, node: NodeInfo) -> Status | None:
    tolerations = state.pod.tolerations
    for taint in node.blocking_taints:
        if not terms.tolerated(tolerations, taint):
            return _status(TAINT_TOLERATION, UNRESOLVABLE, untolerated_taint(taint))
    return None


def node_affinity(state: CycleState, node: NodeInfo) -> Status | None:
    if not podinfo.matches_node_selector(state.pod, node.name, node.labels):
        return _status(NODE_AFFINITY, UNRESOLVABLE, REASON_NODE_AFFINITY)
    return None


def _port_conflict(wanted: tuple[str, str, int], used: Mapping[tuple[str, str, int], int]) -> bool:
    ip, protocol, port = wanted
    for used_ip, used_protocol, used_port in used:
        if (
            used_port == port
            and used_protocol == protocol
            and (ip == used_ip or ip == "0.0.0.0" or used_ip == "0.0.0.0")
        ):
            return True
    return False


def node_ports(state: CycleState, node: NodeInfo) -> Status | None:
    used = node.ports
    nominated = _nominated(state, node)
    if nominated:
        used = collections.Counter(used)
        for other in nominated:
            used.update(other.host_ports)
    if any(_port_conflict(p, used) for p in state.pod.host_ports):
        return _status(NODE_PORTS, UNSCHEDULABLE, REASON_PORTS)
    return None


def _nominated(state: CycleState, node: NodeInfo) -> list[PodInfo]:
    """Pods nominated to ``node`` that outrank (or equal) this one: their room is reserved."""
    waiting = state.cache.nominated.get(node.name)
    if not waiting:
        return []
    pod = state.pod
    return [
        p
        for p in waiting.values()
        if p.key != pod.key and p.priority >= pod.priority and p.key not in node.pods
    ]


def resources_fit(state: CycleState, node: NodeInfo) -> Status | None:
    """``NodeResourcesFit``: pod count, cpu, memory, ephemeral storage, extended resources."""
    pod = state.pod
    extra_pods = cpu = memory = ephemeral = 0
    nominated = _nominated(state, node) if state.cache.nominated else ()
    for other in nominated:
        extra_pods += 1
        cpu += other.cpu
        memory += other.memory
        ephemeral += other.ephemeral
    reasons = []
    if len(node.pods) + extra_pods + 1 > node.alloc_pods:
        reasons.append(REASON_TOO_MANY_PODS)
    if pod.cpu and pod.cpu > node.alloc_cpu - node.req_cpu - cpu:
        reasons.append(insufficient("cpu"))
    if pod.memory and pod.memory > node.alloc_memory - node.req_memory - memory:
        reasons.append(insufficient("memory"))
    if pod.ephemeral and pod.ephemeral > node.alloc_ephemeral - node.req_ephemeral - ephemeral:
        reasons.append(insufficient("ephemeral-storage"))
    for name, amount in pod.scalar.items():
        used = node.req_scalar.get(name, 0) + sum(o.scalar.get(name, 0) for o in nominated)
        if amount > node.alloc_scalar.get(name, 0) - used:
            reasons.append(insufficient(name))
    if reasons:
        return _status(NODE_RESOURCES_FIT, UNSCHEDULABLE, *reasons)
    return None


def volume_binding(state: CycleState, node: NodeInfo) -> Status | None:
    for selector in state.volume_selectors:
        if not selector.matches(node.name, node.labels):
            return _status(VOLUME_BINDING, UNRESOLVABLE, REASON_VOLUME_NODE_CONFLICT)
    return None


def topology_spread(state: CycleState, node: NodeInfo) -> Status | None:
    spread = state.spread
    assert spread is not None
    pod = state.pod
    for c in spread.constraints:
        value = node.labels.get(c.topology_key)
        if value is None:
            return _status(POD_TOPOLOGY_SPREAD, UNRESOLVABLE, REASON_SPREAD_LABEL)
        self_match = 1 if c.selector.matches(pod.labels) else 0
        skew = spread.counts.get((c.topology_key, value), 0) + self_match - spread.min_match(c)
        if skew > c.max_skew:
            return _status(POD_TOPOLOGY_SPREAD, UNSCHEDULABLE, REASON_SPREAD)
    return None


def inter_pod_affinity(state: CycleState, node: NodeInfo) -> Status | None:
    affinity = state.affinity
    assert affinity is not None
    pod, labels = state.pod, node.labels
    if pod.pod_affinity and not _affinity_satisfied(state, affinity, labels):
        return _status(INTER_POD_AFFINITY, UNRESOLVABLE, REASON_AFFINITY)
    for term in pod.pod_anti_affinity:
        value = labels.get(term.topology_key)
        if value is not None and affinity.anti[(term.topology_key, value)] > 0:
            return _status(INTER_POD_AFFINITY, UNSCHEDULABLE, REASON_ANTI_AFFINITY)
    if affinity.existing_anti:
        for key, value in labels.items():
            if affinity.existing_anti.get((key, value), 0) > 0:
                return _status(INTER_POD_AFFINITY, UNSCHEDULABLE, REASON_EXISTING_ANTI_AFFINITY)
    return None


def _affinity_satisfied(state: CycleState, affinity: AffinityState, labels: Mapping[str, str]) -> bool:
    pod = state.pod
    for term in pod.pod_affinity:
        value = labels.get(term.topology_key)
        if value is None or affinity.affinity[(term.topology_key, value)] <= 0:
            break
    else:
        return True
    # No pod anywhere matches yet: the first pod of a group that selects itself may go anywhere
    # its topology keys exist.
    if any(count > 0 for count in affinity.affinity.values()):
        return False
    if not all(t.matches(pod, affinity.namespace_labels) for t in pod.pod_affinity):
        return False
    return all(t.topology_key in labels for t in pod.pod_affinity)


# -- prefilter -------------------------------------------------------------------------------------


def prefilter(pod: PodInfo, cache: cache_.Cache, listers: types.Listers) -> tuple[CycleState, Status | None]:
    """Compute the attempt's shared state; a Status means no node can take the pod at all."""
    state = CycleState(pod, cache, listers)
    selectors_, problem = _volume_selectors(pod, listers)
    if problem is not None:
        return state, problem
    state.volume_selectors = selectors_
    hard = tuple(c for c in pod.spread if c.hard)
    if hard:
        state.spread = spread_state(pod, hard, cache)
    if pod.pod_affinity or pod.pod_anti_affinity or cache.with_anti_affinity:
        state.affinity = affinity_state(pod, cache, listers.namespace_labels)
    checks: list[Callable[[CycleState, NodeInfo], Status | None]] = [node_unschedulable]
    if pod.node_name:
        checks.append(node_name)
    checks.append(taint_toleration)
    if pod.has_required_placement:
        checks.append(node_affinity)
    if pod.host_ports:
        checks.append(node_ports)
    checks.append(resources_fit)
    if state.volume_selectors:
        checks.append(volume_binding)
    if state.spread is not None:
        checks.append(topology_spread)
    if state.affinity is not None:
        checks.append(inter_pod_affinity)
    state.checks = tuple(checks)
    return state, None


def filter_node(state: CycleState, node: NodeInfo) -> Status | None:
    for check in state.checks:
        status = check(state, node)
        if status is not None:
            return status
    return None


def _volume_selectors(
    pod: PodInfo, listers: types.Listers
) -> tuple[tuple[terms.NodeSelector, ...], Status | None]:
    """Node affinity of the volumes bound to the pod's claims (local PVs pin their pods)."""
    found: list[terms.NodeSelector] = []
    for name in pod.claims:
        claim = listers.claim(pod.namespace, name)
        if claim is None:
            return (), _status(VOLUME_BINDING, UNRESOLVABLE, f'persistentvolumeclaim "{name}" not found')
        if (claim.get("metadata") or {}).get("deletionTimestamp"):
            return (), _status(
                VOLUME_BINDING, UNRESOLVABLE, f'persistentvolumeclaim "{name}" is being deleted'
            )
        volume_name = (claim.get("spec") or {}).get("volumeName")
        if not volume_name:
            if _binding_mode(claim, listers) != "WaitForFirstConsumer":
                return (), _status(VOLUME_BINDING, UNRESOLVABLE, REASON_UNBOUND_IMMEDIATE)
            continue  # provisioned for the node we pick (binder annotates the claim)
        volume = listers.volume(volume_name)
        if volume is None:
            return (), _status(VOLUME_BINDING, UNRESOLVABLE, f'persistentvolume "{volume_name}" not found')
        required = ((volume.get("spec") or {}).get("nodeAffinity") or {}).get("required")
        if required is not None:
            found.append(terms.node_selector(required))
    return tuple(found), None


def _binding_mode(claim: Mapping[str, Any], listers: types.Listers) -> str:
    class_name = (claim.get("spec") or {}).get("storageClassName") or ""
    storage_class = listers.storage_class(class_name) if class_name else None
    return (storage_class or {}).get("volumeBindingMode") or "Immediate"


def unbound_delayed_claims(pod: PodInfo, listers: types.Listers) -> list[dict[str, Any]]:
    """The pod's unbound WaitForFirstConsumer claims (the binder names the chosen node on them)."""
    claims = []
    for name in pod.claims:
        claim = listers.claim(pod.namespace, name)
        if claim is not None and not (claim.get("spec") or {}).get("volumeName"):
            if _binding_mode(claim, listers) == "WaitForFirstConsumer":
                claims.append(claim)
    return claims


def eligible_for_spread(
    pod: PodInfo, node: NodeInfo, constraints: tuple[terms.SpreadConstraint, ...]
) -> bool:
    """Whether ``node``'s pods count towards the constraints (nodeAffinityPolicy/nodeTaintsPolicy)."""
    if any(c.topology_key not in node.labels for c in constraints):
        return False
    if any(c.honor_affinity for c in constraints) and not podinfo.matches_node_selector(
        pod, node.name, node.labels
    ):
        return False
    if any(c.honor_taints for c in constraints):
        if any(not terms.tolerated(pod.tolerations, t) for t in node.blocking_taints):
            return False
    return True


def spread_state(
    pod: PodInfo, constraints: tuple[terms.SpreadConstraint, ...], cache: cache_.Cache
) -> SpreadState:
    state = SpreadState(constraints, {}, collections.defaultdict(set), set())
    for node in cache.node_list:
        if not eligible_for_spread(pod, node, constraints):
            continue
        state.eligible.add(node.name)
        for c in constraints:
            value = node.labels[c.topology_key]
            state.domains[c.topology_key].add(value)
            pair = (c.topology_key, value)
            matched = sum(
                1
                for other in node.pods.values()
                if other.namespace == pod.namespace
                and not other.deleting
                and c.selector.matches(other.labels)
            )
            state.counts[pair] = state.counts.get(pair, 0) + matched
    return state


def affinity_state(
    pod: PodInfo, cache: cache_.Cache, namespace_labels: Callable[[str], Mapping[str, str] | None]
) -> AffinityState:
    state = AffinityState(
        collections.Counter(), collections.Counter(), collections.Counter(), namespace_labels
    )
    if pod.pod_affinity or pod.pod_anti_affinity:
        candidates = cache.pods.values()
    else:
        candidates = cache.with_anti_affinity.values()  # only their terms can constrain us
    for other in candidates:
        node = cache.node(other.node_name)
        if node is not None and other.key != pod.key:
            state.update(other, node, pod, 1)
    return state
