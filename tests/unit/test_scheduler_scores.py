"""Scores and node choice against plain dicts, and the plain-pod index against the full path."""

from __future__ import annotations

import collections
import random
from typing import Any

from services.scheduler import algorithm, cache, filters, index, podinfo, scores, types
from tests.unit.test_scheduler_filters import cluster, node, pod

HOST = "kubernetes.io/hostname"


def state_for(obj: dict[str, Any], made: cache.Cache) -> filters.CycleState:
    state, rejected = filters.prefilter(podinfo.from_pod(obj), made, types.MemoryListers())
    assert rejected is None
    return state


def totals(obj: dict[str, Any], made: cache.Cache) -> dict[str, int]:
    nodes = made.node_list
    return dict(zip([n.name for n in nodes], scores.score_nodes(state_for(obj, made), nodes), strict=True))


def test_least_allocated_and_balanced() -> None:
    made = cluster(node("empty", cpu="4", memory="4Gi"), node("half", cpu="4", memory="4Gi"),
                   pods=(pod("x", cpu="2", memory="2Gi", node_name="half"),))  # fmt: skip
    incoming = podinfo.from_pod(pod(cpu="1", memory="1Gi"))
    empty, half = made.node("empty"), made.node("half")
    assert empty is not None and half is not None
    assert scores.least_allocated(incoming, empty) == 75
    assert scores.least_allocated(incoming, half) == 25
    assert scores.balanced_allocation(incoming, empty) == 100
    lopsided = podinfo.from_pod(pod(cpu="2", memory="100Mi"))
    assert scores.balanced_allocation(lopsided, empty) < 100
    assert scores.resource_scores(incoming, [empty, half]) == [175, 125]
    best = totals(pod(cpu="1", memory="1Gi"), made)
    assert best["empty"] > best["half"]


def test_pods_without_requests_count_as_100m_and_200mi() -> None:
    incoming = podinfo.from_pod(pod())
    assert (incoming.cpu, incoming.memory) == (0, 0)
    assert (incoming.nonzero_cpu, incoming.nonzero_memory) == (100, 200 * 2**20)
    made = cluster(node("n", cpu="1", memory="1000Mi"))
    target = made.node("n")
    assert target is not None
    assert scores.least_allocated(incoming, target) == (90 + 80) // 2
    assert scores.resource_scores(incoming, [target]) == [85]  # no balancing for best-effort pods


def test_normalize() -> None:
    assert scores.normalize([0, 5, 10]) == [0, 50, 100]
    assert scores.normalize([0, 5, 10], reverse=True) == [100, 50, 0]
    assert scores.normalize([0, 0]) == [0, 0]
    assert scores.normalize([0, 0], reverse=True) == [100, 100]


def test_preferred_node_affinity_and_taint_preferences() -> None:
    made = cluster(node("ssd", labels={"disk": "ssd"}), node("hdd", labels={"disk": "hdd"}),
                   node("soft", taints=[{"key": "k", "value": "v", "effect": "PreferNoSchedule"}]))  # fmt: skip
    prefer = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 50, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}}]}}  # fmt: skip
    got = totals(pod(affinity=prefer), made)
    assert got["ssd"] - got["hdd"] == 2 * 100  # NodeAffinity, weight 2
    assert got["hdd"] - got["soft"] == 3 * 100  # TaintToleration, weight 3
    tolerant = pod(tolerations=[{"key": "k", "operator": "Exists", "effect": "PreferNoSchedule"}])
    got = totals(tolerant, made)
    assert got["soft"] == got["hdd"]


def test_preferred_pod_affinity_and_anti_affinity() -> None:
    made = cluster(node("a"), node("b"), pods=(pod("db", labels={"app": "db"}, node_name="a"),))

    def preferred(kind: str) -> dict[str, Any]:
        return {kind: {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 10, "podAffinityTerm": {
            "labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": HOST}}]}}  # fmt: skip

    base = totals(pod(), made)  # node a holds the db pod: its resource scores are a little lower
    got = totals(pod(affinity=preferred("podAffinity")), made)
    assert (got["a"] - base["a"], got["b"] - base["b"]) == (2 * 100, 0)
    got = totals(pod(affinity=preferred("podAntiAffinity")), made)
    assert (got["a"] - base["a"], got["b"] - base["b"]) == (0, 2 * 100)


def test_placed_pods_preferences_pull_the_incoming_pod() -> None:
    likes_web = {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 5, "podAffinityTerm": {
        "labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": HOST}}]}}  # fmt: skip
    made = cluster(node("a"), node("b"), pods=(pod("cache", node_name="b", affinity=likes_web),))
    got = totals(pod(labels={"app": "web"}), made)
    assert got["b"] > got["a"]
    assert not index.usable(podinfo.from_pod(pod(labels={"app": "web"})), made, types.MemoryListers())
    assert index.usable(podinfo.from_pod(pod(labels={"app": "other"})), made, types.MemoryListers())


def test_spread_schedule_anyway_prefers_emptier_domains() -> None:
    placed = (
        pod("w0", labels={"app": "web"}, node_name="a1"),
        pod("w1", labels={"app": "web"}, node_name="a2"),
    )
    made = cluster(node("a1", labels={"zone": "a"}), node("a2", labels={"zone": "a"}), node("b1", labels={"zone": "b"}),
                   pods=placed)  # fmt: skip
    constraint = [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway",
                   "labelSelector": {"matchLabels": {"app": "web"}}}]  # fmt: skip
    got = totals(pod(labels={"app": "web"}, topologySpreadConstraints=constraint), made)
    assert got["b1"] > got["a1"] == got["a2"]


def test_select_host_breaks_ties_at_random() -> None:
    made = cluster(*(node(f"n{i}") for i in range(4)))
    rng = random.Random(7)
    picks = collections.Counter(
        scores.select_host(made.node_list, [5, 9, 9, 9], rng).name for _ in range(3000)
    )
    assert set(picks) == {"n1", "n2", "n3"}
    assert all(800 < count < 1200 for count in picks.values())


def test_num_feasible_nodes_to_find() -> None:
    assert algorithm.num_feasible_nodes_to_find(50, 0) == 50
    assert algorithm.num_feasible_nodes_to_find(1000, 0) == 420
    assert algorithm.num_feasible_nodes_to_find(5000, 0) == 500  # 50 - 40 = 10 %
    assert algorithm.num_feasible_nodes_to_find(100_000, 0) == 5000  # at least 5 %
    assert algorithm.num_feasible_nodes_to_find(300, 10) == 100  # at least 100 nodes
    assert algorithm.num_feasible_nodes_to_find(300, 100) == 300


def test_full_path_rotates_and_stops_at_enough_feasible_nodes() -> None:
    made = cluster(*(node(f"n{i:03d}") for i in range(200)))
    made.set_node(node("n000", unschedulable=True))
    chooser = algorithm.Algorithm(rng=random.Random(1))
    busy = pod(cpu="1")
    busy["spec"]["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": HOST, "operator": "Exists"}]}]}}}  # fmt: skip
    decision = chooser.schedule(podinfo.from_pod(busy), made, types.MemoryListers())
    assert decision.node and decision.feasible == 100 and decision.evaluated == 101
    assert chooser.next_start == 101


def test_index_agrees_with_scoring_every_node() -> None:
    rng = random.Random(3)
    made = cluster(*(node(f"n{i:02d}", cpu=str(rng.choice([2, 4, 8])), memory=f"{rng.choice([4, 8, 16])}Gi")
                     for i in range(30)))  # fmt: skip
    made.set_node(node("n00", unschedulable=True))
    made.set_node(node("n01", taints=[{"key": "k", "effect": "NoSchedule"}]))
    fast = index.Indexes(made, types.MemoryListers(), random.Random(5))
    for i in range(200):
        obj = pod(f"p{i}", cpu=rng.choice(["100m", "250m", "1"]), memory=rng.choice(["128Mi", "1Gi"]))
        incoming = podinfo.from_pod(obj)
        assert index.usable(incoming, made, types.MemoryListers())
        state = state_for(obj, made)
        feasible = [n for n in made.node_list if filters.filter_node(state, n) is None]
        chosen = fast.best(incoming)
        if not feasible:
            assert chosen is None
            break
        everything = dict(zip([n.name for n in feasible], scores.score_nodes(state, feasible), strict=True))
        assert chosen is not None and everything[chosen.name] == max(everything.values()), i
        made.assume(incoming, chosen.name)
    fast.close()


def test_index_forgets_nodes_that_stop_fitting_and_sees_new_ones() -> None:
    made = cluster(node("a", cpu="1"))
    fast = index.Indexes(made, types.MemoryListers(), random.Random(0))
    one = podinfo.from_pod(pod("one", cpu="600m"))
    assert fast.best(one).name == "a"  # type: ignore[union-attr]
    made.assume(one, "a")
    assert fast.best(podinfo.from_pod(pod("two", cpu="600m"))) is None
    made.set_node(node("b", cpu="1"))
    assert fast.best(podinfo.from_pod(pod("two", cpu="600m"))).name == "b"  # type: ignore[union-attr]
    made.forget(one.key)
    made.remove_node("b")
    assert fast.best(podinfo.from_pod(pod("two", cpu="600m"))).name == "a"  # type: ignore[union-attr]
    fast.close()
