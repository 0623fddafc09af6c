"""Scores: which of the feasible nodes suits the pod best. Upstream's default score plugins.

Each plugin gives every feasible node 0..100, normalised as upstream normalises it, and the
total is the weighted sum with upstream's default weights (TaintToleration 3, NodeAffinity 2,
PodTopologySpread 2, InterPodAffinity 2, NodeResourcesFit 1, NodeResourcesBalancedAllocation 1).
The highest total wins; ties are broken at random, as ``selectHost`` does, which is what spreads
identical pods over identical nodes.

A plugin whose score is the same for every node cannot change the choice, so it is skipped:
node affinity for a pod without preferred terms, taint preferences when no node has a
PreferNoSchedule taint, inter-pod affinity when neither the pod nor any placed pod has terms,
spreading without ScheduleAnyway constraints. The resource scores are one tight loop; for the
common pod that is all the work there is. (ImageLocality and the system default spreading of
pods that belong to a Service or ReplicaSet are not implemented.)
"""

from __future__ import annotations

import collections
import math
import random
from collections.abc import Callable, Mapping, Sequence

from services.scheduler import cache as cache_
from services.scheduler import filters, terms
from services.scheduler.cache import NodeInfo
from services.scheduler.podinfo import PodInfo

MAX_SCORE = 100
HARD_POD_AFFINITY_WEIGHT = 1  # InterPodAffinityArgs.hardPodAffinityWeight default
WEIGHTS = {
    "TaintToleration": 3,
    "NodeAffinity": 2,
    "PodTopologySpread": 2,
    "InterPodAffinity": 2,
    "NodeResourcesFit": 1,
    "NodeResourcesBalancedAllocation": 1,
}


# -- normalisation ---------------------------------------------------------------------------------


def normalize(scores: list[int], *, reverse: bool = False) -> list[int]:
    """``helper.DefaultNormalizeScore``: scale so the highest is 100 (reversed: the lowest)."""
    top = max(scores, default=0)
    if top <= 0:
        return [MAX_SCORE if reverse else 0 for _ in scores]
    scaled = [MAX_SCORE * s // top for s in scores]
    return [MAX_SCORE - s for s in scaled] if reverse else scaled


# -- resources ------------------------------------------------------------------------------------


def least_allocated(pod: PodInfo, node: NodeInfo) -> int:
    """``LeastAllocated`` over cpu and memory (weight 1 each), counting the pod itself."""
    total = weights = 0
    for requested, allocatable in (
        (node.nonzero_cpu + pod.nonzero_cpu, node.alloc_cpu),
        (node.nonzero_memory + pod.nonzero_memory, node.alloc_memory),
    ):
        if allocatable == 0:
            continue
        weights += 1
        if requested <= allocatable:
            total += (allocatable - requested) * MAX_SCORE // allocatable
    return total // weights if weights else 0


def balanced_allocation(pod: PodInfo, node: NodeInfo) -> int:
    """``NodeResourcesBalancedAllocation``: 100 when cpu and memory are used in equal shares."""
    fractions = []
    for requested, allocatable in (
        (node.req_cpu + pod.cpu, node.alloc_cpu),
        (node.req_memory + pod.memory, node.alloc_memory),
    ):
        if allocatable:
            fractions.append(min(requested / allocatable, 1.0))
    if len(fractions) < 2:
        return MAX_SCORE
    std = abs(fractions[0] - fractions[1]) / 2
    return int((1 - std) * MAX_SCORE)


def resource_scores(pod: PodInfo, nodes: Sequence[NodeInfo]) -> list[int]:
    """Least allocated plus balanced allocation, for every node (the hot loop, kept inline)."""
    pod_cpu, pod_mem = pod.nonzero_cpu, pod.nonzero_memory
    balance = bool(pod.cpu or pod.memory)  # upstream skips balancing for pods that request nothing
    out = []
    for n in nodes:
        ac, am = n.alloc_cpu, n.alloc_memory
        least = weights = 0
        if ac:
            weights += 1
            used = n.nonzero_cpu + pod_cpu
            if used <= ac:
                least += (ac - used) * MAX_SCORE // ac
        if am:
            weights += 1
            used = n.nonzero_memory + pod_mem
            if used <= am:
                least += (am - used) * MAX_SCORE // am
        score = least // weights if weights else 0
        if balance:
            if ac and am:
                fc = min((n.req_cpu + pod.cpu) / ac, 1.0)
                fm = min((n.req_memory + pod.memory) / am, 1.0)
                score += int((1 - abs(fc - fm) / 2) * MAX_SCORE)
            else:
                score += MAX_SCORE
        out.append(score)
    return out


# -- node affinity and taints ----------------------------------------------------------------------


def node_affinity_scores(pod: PodInfo, nodes: Sequence[NodeInfo]) -> list[int]:
    raw = [
        sum(weight for weight, term in pod.preferred_affinity if term.matches(n.name, n.labels))
        for n in nodes
    ]
    return normalize(raw)


def intolerable_prefer_taints(pod: PodInfo, node: NodeInfo) -> int:
    tolerations = tuple(
        t for t in pod.tolerations if (t.get("effect") or "PreferNoSchedule") == "PreferNoSchedule"
    )
    return sum(1 for taint in node.prefer_taints if not terms.tolerated(tolerations, taint))


def taint_toleration_scores(pod: PodInfo, nodes: Sequence[NodeInfo]) -> list[int]:
    return normalize([intolerable_prefer_taints(pod, n) for n in nodes], reverse=True)


# -- topology spread (ScheduleAnyway) --------------------------------------------------------------


def spread_scores(pod: PodInfo, nodes: Sequence[NodeInfo], cache: cache_.Cache) -> list[int]:
    constraints = tuple(c for c in pod.spread if not c.hard)
    ignored = [any(c.topology_key not in n.labels for c in constraints) for n in nodes]
    domains: dict[str, set[str]] = collections.defaultdict(set)
    for n, skip in zip(nodes, ignored, strict=True):
        if not skip:
            for c in constraints:
                domains[c.topology_key].add(n.labels[c.topology_key])
    weights = [math.log(len(domains[c.topology_key]) + 2) for c in constraints]
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    for n in cache.node_list:
        if not filters.eligible_for_spread(pod, n, constraints):
            continue
        for c in constraints:
            value = n.labels[c.topology_key]
            if c.topology_key != terms.HOSTNAME_LABEL and value in domains[c.topology_key]:
                counts[(c.topology_key, value)] += _matching(pod, c, n)
    raw: list[float | None] = []
    for n, skip in zip(nodes, ignored, strict=True):
        if skip:
            raw.append(None)
            continue
        score = 0.0
        for c, weight in zip(constraints, weights, strict=True):
            if c.topology_key == terms.HOSTNAME_LABEL:
                count = _matching(pod, c, n)
            else:
                count = counts[(c.topology_key, n.labels[c.topology_key])]
            score += count * weight + (c.max_skew - 1)
        raw.append(round(score))
    valid = [s for s in raw if s is not None]
    low, high = min(valid, default=0), max(valid, default=0)
    out = []
    for s in raw:
        if s is None:
            out.append(0)
        elif high == 0:
            out.append(MAX_SCORE)
        else:
            out.append(int(MAX_SCORE * (high + low - s) // high))
    return out


def _matching(pod: PodInfo, constraint: terms.SpreadConstraint, node: NodeInfo) -> int:
    return sum(
        1
        for other in node.pods.values()
        if other.namespace == pod.namespace
        and not other.deleting
        and constraint.selector.matches(other.labels)
    )


# -- inter-pod affinity ----------------------------------------------------------------------------


def pod_affinity_topology_scores(
    pod: PodInfo, cache: cache_.Cache, namespace_labels: Callable[[str], Mapping[str, str] | None]
) -> dict[tuple[str, str], int]:
    """Weight per (topology key, value): the pod's preferred terms against placed pods, and placed
    pods' required and preferred terms against the pod (upstream's symmetric ``processExistingPod``)."""
    scores: collections.Counter[tuple[str, str]] = collections.Counter()
    candidates = cache.pods.values() if pod.preferred_pod_affinity else cache.with_affinity.values()
    for other in candidates:
        node = cache.node(other.node_name)
        if node is None or other.key == pod.key:
            continue
        labels = node.labels
        for term in pod.preferred_pod_affinity:
            value = labels.get(term.topology_key)
            if value is not None and term.matches(other, namespace_labels):
                scores[(term.topology_key, value)] += term.weight
        for term in other.pod_affinity:
            value = labels.get(term.topology_key)
            if value is not None and term.matches(pod, namespace_labels):
                scores[(term.topology_key, value)] += HARD_POD_AFFINITY_WEIGHT
        for term in other.preferred_pod_affinity:
            value = labels.get(term.topology_key)
            if value is not None and term.matches(pod, namespace_labels):
                scores[(term.topology_key, value)] += term.weight
    return scores


def pod_affinity_scores(
    pod: PodInfo,
    nodes: Sequence[NodeInfo],
    cache: cache_.Cache,
    namespace_labels: Callable[[str], Mapping[str, str] | None],
) -> list[int]:
    topology = pod_affinity_topology_scores(pod, cache, namespace_labels)
    if not topology:
        return [0] * len(nodes)
    raw = [sum(w for (key, value), w in topology.items() if n.labels.get(key) == value) for n in nodes]
    low, high = min(raw), max(raw)
    if high == low:
        return [0] * len(nodes)
    return [int(MAX_SCORE * (s - low) / (high - low)) for s in raw]


# -- all together ------------------------------------------------------------------------------------


def score_nodes(state: filters.CycleState, nodes: Sequence[NodeInfo]) -> list[int]:
    """The weighted total for every node, skipping plugins that score every node alike."""
    pod, cache = state.pod, state.cache
    totals = resource_scores(pod, nodes)  # NodeResourcesFit and BalancedAllocation, weight 1 each

    def add(weight: int, scores: list[int]) -> None:
        for i, s in enumerate(scores):
            totals[i] += weight * s

    if pod.preferred_affinity:
        add(WEIGHTS["NodeAffinity"], node_affinity_scores(pod, nodes))
    if cache.prefer_tainted_nodes:
        add(WEIGHTS["TaintToleration"], taint_toleration_scores(pod, nodes))
    if any(not c.hard for c in pod.spread):
        add(WEIGHTS["PodTopologySpread"], spread_scores(pod, nodes, cache))
    if pod.preferred_pod_affinity or cache.with_affinity:
        add(
            WEIGHTS["InterPodAffinity"],
            pod_affinity_scores(pod, nodes, cache, state.listers.namespace_labels),
        )
    return totals


def select_host(nodes: Sequence[NodeInfo], totals: Sequence[int], rng: random.Random) -> NodeInfo:
    """The node with the highest total; among equals, each is equally likely (reservoir sampling)."""
    best, chosen, ties = -math.inf, nodes[0], 0
    for node, score in zip(nodes, totals, strict=True):
        if score > best:
            best, chosen, ties = score, node, 1
        elif score == best:
            ties += 1
            if rng.randrange(ties) == 0:
                chosen = node
    return chosen
