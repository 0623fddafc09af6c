"""Preemption: when no node fits, find one where evicting lower-priority pods makes room.

Upstream's DefaultPreemption, as a pure decision over the cache (the component performs it):

1. The pod must be eligible: not ``preemptionPolicy: Never``, and not already waiting for
   lower-priority pods it preempted earlier to terminate on its nominated node.
2. Only nodes that failed for a reason eviction can cure (``UNSCHEDULABLE``: resources, ports,
   anti-affinity, spreading) are tried; taints, node affinity or a cordon are not.
3. On each such node, dry run: remove every lower-priority pod and check the pod fits; then put
   the victims back one by one, most important first (higher priority, then longer running),
   keeping each one the pod still fits without. What could not go back are the victims.
   Up to ``max(10 % of those nodes, 100)`` candidates are found, from a random offset.
4. The candidate chosen has the lowest highest-victim priority, then the lowest sum of victim
   priorities, then the fewest victims (PodDisruptionBudgets are not consulted).

When nothing helps, the message is upstream's: ``preemption: 0/3 nodes are available: 1 No
preemption victims found for incoming pod, 2 Preemption is not helpful for scheduling.``
"""

from __future__ import annotations

import dataclasses
import random

from services.scheduler import algorithm, filters
from services.scheduler import cache as cache_
from services.scheduler.podinfo import PodInfo

NOT_HELPFUL = "Preemption is not helpful for scheduling"
NO_VICTIMS = "No preemption victims found for incoming pod"
NOT_ELIGIBLE_NEVER = "not eligible due to preemptionPolicy=Never."
NOT_ELIGIBLE_TERMINATING = "not eligible due to a terminating pod on the nominated node."
MIN_CANDIDATE_NODES_PERCENTAGE = 10
MIN_CANDIDATE_NODES_ABSOLUTE = 100
PREFIX = "preemption: "


@dataclasses.dataclass
class Candidate:
    node: str
    victims: list[PodInfo]


@dataclasses.dataclass
class Outcome:
    candidate: Candidate | None
    message: str = ""  # the post-filter message when no candidate was found ("preemption: ...")
    clear_nomination: bool = False  # no node helps any more: drop a nomination the pod had


def eligible(pod: PodInfo, cache: cache_.Cache, error: algorithm.FitError) -> tuple[bool, str]:
    if pod.preempt_never:
        return False, NOT_ELIGIBLE_NEVER
    nominated = pod.nominated_node
    if nominated and error.code_of(nominated) != filters.UNRESOLVABLE:
        for other in cache.pods_on(nominated):
            if other.priority < pod.priority and other.deleting:
                return False, NOT_ELIGIBLE_TERMINATING
    return True, ""


def preempt(
    state: filters.CycleState, error: algorithm.FitError, *, rng: random.Random | None = None
) -> Outcome:
    pod, cache = state.pod, state.cache
    ok, why = eligible(pod, cache, error)
    if not ok:
        return Outcome(None, PREFIX + why)
    nodes = cache.node_list
    potential = [n for n in nodes if error.code_of(n.name) == filters.UNSCHEDULABLE]
    statuses: dict[str, filters.Status] = {}
    candidates: list[Candidate] = []
    if potential:
        wanted = min(
            max(len(potential) * MIN_CANDIDATE_NODES_PERCENTAGE // 100, MIN_CANDIDATE_NODES_ABSOLUTE),
            len(potential),
        )
        offset = (rng or random).randrange(len(potential))
        for i in range(len(potential)):
            node = potential[(offset + i) % len(potential)]
            victims, status = select_victims(state, node)
            if status is not None:
                statuses[node.name] = status
                continue
            candidates.append(Candidate(node.name, victims or []))
            if len(candidates) >= wanted:
                break
    if candidates:
        return Outcome(pick(candidates))
    not_helpful = filters.Status(filters.UNRESOLVABLE, (NOT_HELPFUL,), "DefaultPreemption")
    for node in nodes:
        statuses.setdefault(node.name, not_helpful)
    return Outcome(None, PREFIX + algorithm.FitError(len(nodes), statuses).message(), clear_nomination=True)


def _importance(pod: PodInfo) -> tuple[int, str]:
    started = (pod.obj.get("status") or {}).get("startTime") or pod.created
    return (-pod.priority, started)  # sorts the most important first


def select_victims(
    state: filters.CycleState, node: cache_.NodeInfo
) -> tuple[list[PodInfo] | None, filters.Status | None]:
    """The fewest lower-priority pods to evict from ``node`` so the pod fits, or why none will do."""
    pod = state.pod
    lower = [p for p in node.pods.values() if p.priority < pod.priority]
    if not lower:
        return None, filters.Status(filters.UNRESOLVABLE, (NO_VICTIMS,), "DefaultPreemption")
    what_if = state.copy()
    clone = node.clone()
    for victim in lower:
        clone.remove_pod(victim.key)
        what_if.remove_pod(victim, clone)
    status = filters.filter_node(what_if, clone)
    if status is not None:
        return None, status
    victims = []
    for candidate in sorted(lower, key=_importance):
        clone.add_pod(candidate)
        what_if.add_pod(candidate, clone)
        if filters.filter_node(what_if, clone) is not None:
            clone.remove_pod(candidate.key)
            what_if.remove_pod(candidate, clone)
            victims.append(candidate)
    return victims, None


def pick(candidates: list[Candidate]) -> Candidate:
    """``pickOneNodeForPreemption`` without PodDisruptionBudgets: the cheapest eviction."""

    def cost(c: Candidate) -> tuple[int, int, int]:
        if not c.victims:
            return (-(2**63), 0, 0)
        highest = max(v.priority for v in c.victims)
        return (highest, sum(v.priority for v in c.victims), len(c.victims))

    return min(candidates, key=cost)
