"""One scheduling decision: filter nodes, score the feasible ones, pick one, or say why none fits.

As upstream's ``schedulePod``: a pod with a nominated node (it preempted others and is waiting
for them to go) tries that node first. Otherwise nodes are filtered starting where the previous
attempt stopped, round-robin, until enough feasible ones are found (``percentageOfNodesToScore``,
adaptive by default: 50 % minus 1 % per 125 nodes, at least 5 % and at least 100 nodes), so a
1,000-node cluster filters and scores about 420 nodes per pod rather than all of them. One
feasible node is taken without scoring.

The whole decision is synchronous: it reads the cache with no await in between, which is what
makes the cache usable as the cycle's snapshot.

``FitError.message`` renders the reasons exactly as Kubernetes' ``FitError.Error()`` does:
``0/3 nodes are available: 1 node(s) had untolerated taint {k: v}, 2 Insufficient cpu.``, the
per-reason counts sorted as strings, then the preemption outcome after ``preemption: `` (whose
own message ends with a period, hence upstream's ``..``).
"""

from __future__ import annotations

import collections
import dataclasses
import random

from services.scheduler import cache as cache_
from services.scheduler import filters, index, scores, types
from services.scheduler.cache import NodeInfo
from services.scheduler.podinfo import PodInfo

MIN_FEASIBLE_NODES_TO_FIND = 100
MIN_FEASIBLE_NODES_PERCENTAGE = 5
NO_NODES = "no nodes available to schedule pods"


def num_feasible_nodes_to_find(num_nodes: int, percentage: int) -> int:
    """``numFeasibleNodesToFind`` (percentage 0 means adaptive)."""
    if num_nodes < MIN_FEASIBLE_NODES_TO_FIND:
        return num_nodes
    if percentage <= 0:
        percentage = max(50 - num_nodes // 125, MIN_FEASIBLE_NODES_PERCENTAGE)
    if percentage >= 100:
        return num_nodes
    return max(num_nodes * percentage // 100, MIN_FEASIBLE_NODES_TO_FIND)


@dataclasses.dataclass
class FitError:
    """No node fits: the status of every node that failed, or the pre-filter's verdict for all."""

    num_nodes: int
    statuses: dict[str, filters.Status]
    prefilter: filters.Status | None = None

    def histogram(self) -> str:
        return reasons_histogram(self.statuses.values())

    def message(self, post_filter: str = "") -> str:
        if self.num_nodes == 0 and self.prefilter is None:
            return NO_NODES
        text = f"0/{self.num_nodes} nodes are available:"
        if self.prefilter is not None:
            text += f" {', '.join(self.prefilter.reasons)}."
        else:
            histogram = self.histogram()
            if histogram:
                text += f" {histogram}."
        if post_filter:
            text += f" {post_filter}."
        return text

    @property
    def plugins(self) -> frozenset[str]:
        """The plugins that rejected the pod (what must change before it is worth retrying)."""
        if self.prefilter is not None:
            return frozenset({self.prefilter.plugin})
        return frozenset(s.plugin for s in self.statuses.values())

    def code_of(self, node: str) -> str:
        if self.prefilter is not None:
            return self.prefilter.code
        status = self.statuses.get(node)
        return filters.UNRESOLVABLE if status is None else status.code


def reasons_histogram(statuses: object) -> str:
    counts: collections.Counter[str] = collections.Counter()
    for status in statuses:  # type: ignore[attr-defined]
        counts.update(status.reasons)
    return ", ".join(sorted(f"{n} {reason}" for reason, n in counts.items()))


@dataclasses.dataclass
class Decision:
    node: str = ""
    error: FitError | None = None
    state: filters.CycleState | None = None
    evaluated: int = 0
    feasible: int = 0


class Algorithm:
    def __init__(self, *, percentage_of_nodes_to_score: int = 0, rng: random.Random | None = None) -> None:
        self.percentage = percentage_of_nodes_to_score
        self.rng = rng or random.Random()
        self.next_start = 0  # where the next attempt starts filtering (round-robin fairness)
        self._indexes: index.Indexes | None = None

    def schedule(self, pod: PodInfo, cache: cache_.Cache, listers: types.Listers) -> Decision:
        nodes = cache.node_list
        if not nodes:
            return Decision(error=FitError(0, {}))
        if self._indexes is None or self._indexes.cache is not cache:
            self.close()
            self._indexes = index.Indexes(cache, listers, self.rng)
        if self._indexes.usable(pod):
            best = self._indexes.best(pod)
            if best is not None:
                return Decision(node=best.name, feasible=1)
            # nothing fits: the full path below finds out why, node by node
        state, rejected = filters.prefilter(pod, cache, listers)
        if rejected is not None:
            return Decision(error=FitError(len(nodes), {}, rejected), state=state)
        if pod.nominated_node:
            nominated = cache.node(pod.nominated_node)
            if nominated is not None and filters.filter_node(state, nominated) is None:
                return Decision(node=nominated.name, state=state, evaluated=1, feasible=1)
        feasible, statuses, evaluated = self._find_feasible(state, nodes)
        if not feasible:
            return Decision(error=FitError(len(nodes), statuses), state=state, evaluated=evaluated)
        if len(feasible) == 1:
            chosen = feasible[0]
        else:
            chosen = scores.select_host(feasible, scores.score_nodes(state, feasible), self.rng)
        return Decision(node=chosen.name, state=state, evaluated=evaluated, feasible=len(feasible))

    def close(self) -> None:
        """Stop the indexes' node watching (the cache outlives this algorithm in tests)."""
        if self._indexes is not None:
            self._indexes.close()
            self._indexes = None

    def _find_feasible(
        self, state: filters.CycleState, nodes: list[NodeInfo]
    ) -> tuple[list[NodeInfo], dict[str, filters.Status], int]:
        total = len(nodes)
        wanted = num_feasible_nodes_to_find(total, self.percentage)
        start = self.next_start % total
        checks = state.checks
        feasible: list[NodeInfo] = []
        statuses: dict[str, filters.Status] = {}
        evaluated = 0
        for i in range(total):
            node = nodes[(start + i) % total]
            evaluated += 1
            for check in checks:
                status = check(state, node)
                if status is not None:
                    statuses[node.name] = status
                    break
            else:
                feasible.append(node)
                if len(feasible) >= wanted:
                    break
        self.next_start = (start + evaluated) % total
        return feasible, statuses, evaluated
