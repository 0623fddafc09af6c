"""Preemption against plain dicts: which node, which victims, and why not."""

from __future__ import annotations

import random
from typing import Any

from services.scheduler import algorithm, cache, podinfo, preemption, types
from tests.unit.test_scheduler_filters import cluster, node, pod

CONTROL_PLANE = [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]


def placed(
    name: str, on: str, *, priority: int, cpu: str = "1", started: str = "", **spec: Any
) -> dict[str, Any]:
    obj = pod(name, cpu=cpu, node_name=on, priority=priority, **spec)
    obj["status"] = {"phase": "Running", "startTime": started or "2026-01-01T00:00:00Z"}
    return obj


def attempt(obj: dict[str, Any], made: cache.Cache) -> tuple[algorithm.Decision, preemption.Outcome]:
    decision = algorithm.Algorithm(rng=random.Random(0)).schedule(
        podinfo.from_pod(obj), made, types.MemoryListers()
    )
    assert decision.error is not None and decision.state is not None, decision
    return decision, preemption.preempt(decision.state, decision.error, rng=random.Random(0))


def test_evicts_the_fewest_lowest_priority_pods() -> None:
    made = cluster(
        node("a", cpu="4"), node("b", cpu="4"),
        pods=(placed("a-low", "a", priority=10, cpu="2"), placed("a-mid", "a", priority=50, cpu="2"),
              placed("b-low1", "b", priority=10, cpu="1"), placed("b-low2", "b", priority=10, cpu="1"),
              placed("b-mid", "b", priority=50, cpu="2")),
    )  # fmt: skip
    _, outcome = attempt(pod("vip", cpu="2", priority=100), made)
    assert outcome.candidate is not None
    # a: one victim of priority 10 frees 2 CPUs; b would need both priority-10 pods: a wins on the sum
    assert outcome.candidate.node == "a"
    assert [v.name for v in outcome.candidate.victims] == ["a-low"]


def test_lower_highest_victim_priority_wins_over_fewer_victims() -> None:
    made = cluster(
        node("a", cpu="2"), node("b", cpu="2"),
        pods=(placed("a-mid", "a", priority=50, cpu="2"),
              placed("b-low1", "b", priority=1, cpu="1"), placed("b-low2", "b", priority=1, cpu="1")),
    )  # fmt: skip
    _, outcome = attempt(pod("vip", cpu="2", priority=100), made)
    assert outcome.candidate is not None and outcome.candidate.node == "b"
    assert sorted(v.name for v in outcome.candidate.victims) == ["b-low1", "b-low2"]


def test_only_what_is_needed_is_evicted_most_important_kept() -> None:
    made = cluster(node("a", cpu="3"), pods=(
        placed("old", "a", priority=10, started="2026-01-01T00:00:00Z"),
        placed("new", "a", priority=10, started="2026-01-02T00:00:00Z"),
        placed("higher", "a", priority=20),
    ))  # fmt: skip
    _, outcome = attempt(pod("vip", cpu="1", priority=100), made)
    assert outcome.candidate is not None
    assert [v.name for v in outcome.candidate.victims] == ["new"]  # the longer-running one stays


def test_preemption_frees_host_ports_and_anti_affinity() -> None:
    holder = placed("holder", "a", priority=0, cpu="100m", labels={"app": "db"})
    holder["spec"]["containers"][0]["ports"] = [{"containerPort": 1, "hostPort": 9000}]
    made = cluster(node("a"), pods=(holder,))
    wants = pod("vip", priority=100)
    wants["spec"]["containers"][0]["ports"] = [{"containerPort": 1, "hostPort": 9000}]
    _, outcome = attempt(wants, made)
    assert outcome.candidate is not None and [v.name for v in outcome.candidate.victims] == ["holder"]
    anti = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"}]}}  # fmt: skip
    _, outcome = attempt(pod("vip2", priority=100, affinity=anti), made)
    assert outcome.candidate is not None and [v.name for v in outcome.candidate.victims] == ["holder"]


def test_messages_when_preemption_cannot_help() -> None:
    made = cluster(
        node("cp", cpu="8", taints=CONTROL_PLANE), node("w1", cpu="1"), node("w2", cpu="1"),
        pods=(placed("important", "w1", priority=1000),),
    )  # fmt: skip
    decision, outcome = attempt(pod("big", cpu="2", priority=100), made)
    assert outcome.candidate is None and outcome.clear_nomination
    assert decision.error is not None
    assert decision.error.message(outcome.message) == (
        "0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, "
        "2 Insufficient cpu. preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, "
        "2 No preemption victims found for incoming pod.."
    )
    # even with every lower-priority pod gone it would not fit: the filter's own reason is given
    made = cluster(node("w", cpu="2"), pods=(placed("low", "w", priority=0, cpu="1"),))
    decision, outcome = attempt(pod("huge", cpu="3", priority=100), made)
    assert outcome.message == "preemption: 0/1 nodes are available: 1 Insufficient cpu."


def test_not_eligible() -> None:
    made = cluster(node("w", cpu="1"), pods=(placed("low", "w", priority=0),))
    _, outcome = attempt(pod("polite", cpu="1", priority=100, preemptionPolicy="Never"), made)
    assert outcome.candidate is None and not outcome.clear_nomination
    assert outcome.message == "preemption: not eligible due to preemptionPolicy=Never."
    going = placed("going", "w", priority=0)
    going["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    made = cluster(node("w", cpu="1"), pods=(going,))
    waiting = pod("waiting", cpu="1", priority=100)
    waiting["status"]["nominatedNodeName"] = "w"
    _, outcome = attempt(waiting, made)
    assert outcome.message == "preemption: not eligible due to a terminating pod on the nominated node."


def test_nominated_pods_keep_their_room() -> None:
    made = cluster(node("w", cpu="2"))
    nominated = podinfo.from_pod(pod("first", cpu="2", priority=100))
    made.nominate(nominated, "w")
    decision = algorithm.Algorithm().schedule(podinfo.from_pod(pod("lower", cpu="1", priority=10)), made,
                                              types.MemoryListers())  # fmt: skip
    assert decision.error is not None and decision.error.histogram() == "1 Insufficient cpu"
    decision = algorithm.Algorithm().schedule(podinfo.from_pod(pod("higher", cpu="1", priority=1000)), made,
                                              types.MemoryListers())  # fmt: skip
    assert decision.node == "w"
    # the nominated pod itself goes to its node first
    decision = algorithm.Algorithm().schedule(podinfo.from_pod(_nominated_to(pod("first", cpu="2", priority=100), "w")),
                                              made, types.MemoryListers())  # fmt: skip
    assert decision.node == "w" and decision.evaluated == 1


def _nominated_to(obj: dict[str, Any], node_name: str) -> dict[str, Any]:
    obj["status"]["nominatedNodeName"] = node_name
    return obj
