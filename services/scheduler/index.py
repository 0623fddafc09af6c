"""An incremental best-node index for plain pods: the common case in O(log n) instead of O(n).

Most pods say nothing about placement beyond their requests and tolerations (``PodInfo.plain``):
no selectors, affinity, spreading, host ports or volumes. For them, whether a node fits and how
it scores depend only on the node and on the pod's *shape* (requests and tolerations), and when
the cluster holds no PreferNoSchedule taints, no pod whose affinity terms select this one and no
nominated pods, no score needs normalising across nodes: each node's score is a number of its own.

So for each shape seen recently, an ``Index`` keeps every feasible node in a max-heap by score,
each entry stamped with the node's ``generation``. The cache reports which nodes changed (a pod
assumed, bound or gone; a node updated); only those are re-checked and re-pushed, and stale
entries are dropped when they surface. Placing a pod then costs a heap pop or two and one node's
re-check, instead of filtering and scoring ~420 of 1,000 nodes.

It picks the node upstream would pick with ``percentageOfNodesToScore: 100``: the best score over
all nodes, ties broken at random (each entry carries a random tie-breaker drawn when it is
pushed, so among equal scores every node is equally likely). When no node fits, the caller falls
back to the full path, which also explains why.
"""

from __future__ import annotations

import collections
import heapq
import random
from typing import Any

from services.scheduler import cache as cache_
from services.scheduler import filters, scores, types
from services.scheduler.cache import NodeInfo
from services.scheduler.podinfo import PodInfo

MAX_SHAPES = 32  # indexes kept (least recently used dropped): one per workload shape in use
COMPACT_FACTOR = 4  # rebuild a heap holding more than this many entries per node


MEMO_SIZE = 4096  # (namespace, labels) verdicts of ``selected_by_placed_pods`` kept


def usable(pod: PodInfo, cache: cache_.Cache, listers: types.Listers) -> bool:
    """Whether the index gives the same answer the full filter-and-score path would: a plain pod,
    no nominations to honour, no PreferNoSchedule taints to weigh, and no placed pod whose
    affinity terms select this one (their anti-affinity would filter, their affinity would score)."""
    if not pod.plain or pod.nominated_node or cache.nominated or cache.prefer_tainted_nodes:
        return False
    return not cache.with_affinity or not selected_by_placed_pods(pod, cache, listers)


def selected_by_placed_pods(pod: PodInfo, cache: cache_.Cache, listers: types.Listers) -> bool:
    labels = listers.namespace_labels
    for other in cache.with_affinity.values():
        for term in (*other.pod_affinity, *other.pod_anti_affinity, *other.preferred_pod_affinity):
            if term.matches(pod, labels):
                return True
    return False


class Index:
    def __init__(self, pod: PodInfo, cache: cache_.Cache, listers: types.Listers, rng: random.Random) -> None:
        self.cache = cache
        self.rng = rng
        self._pod = pod  # a representative: every pod of the shape fits and scores alike
        self._listers = listers
        self._heap: list[tuple[int, float, int, str]] = []  # (-score, tie-breaker, generation, node)
        self._changed = cache.watch_nodes()  # starts with every node

    def close(self) -> None:
        self.cache.unwatch_nodes(self._changed)

    def best(self) -> NodeInfo | None:
        """The best feasible node now, or None when no node fits."""
        if self._changed:
            self._refresh()
        heap, cache = self._heap, self.cache
        while heap:
            _, _, generation, name = heap[0]
            node = cache.node(name)
            if node is not None and node.generation == generation:
                return node
            heapq.heappop(heap)  # superseded: a fresher entry (if it still fits) was pushed
        return None

    def _refresh(self) -> None:
        changed = list(self._changed)
        self._changed.clear()
        state, rejected = filters.prefilter(self._pod, self.cache, self._listers)
        if rejected is not None:
            self._heap.clear()
            return
        # usable() vouched that no placed pod's terms select the pods asking: the representative's
        # own labels must not decide for the whole shape.
        state.affinity = None
        state.checks = tuple(c for c in state.checks if c is not filters.inter_pod_affinity)
        nodes = [n for n in (self.cache.node(name) for name in changed) if n is not None]
        fits = [n for n in nodes if filters.filter_node(state, n) is None]
        random_ = self.rng.random
        for node, score in zip(fits, scores.resource_scores(self._pod, fits), strict=True):
            heapq.heappush(self._heap, (-score, random_(), node.generation, node.name))
        if len(self._heap) > COMPACT_FACTOR * max(len(self.cache), 1):
            self._compact()

    def _compact(self) -> None:
        live = {}
        for entry in self._heap:
            node = self.cache.node(entry[3])
            if node is not None and node.generation == entry[2]:
                live[entry[3]] = entry
        self._heap = list(live.values())
        heapq.heapify(self._heap)


class Indexes:
    """One ``Index`` per pod shape, the least recently used dropped beyond ``MAX_SHAPES``."""

    def __init__(self, cache: cache_.Cache, listers: types.Listers, rng: random.Random) -> None:
        self.cache, self.listers, self.rng = cache, listers, rng
        self._by_shape: collections.OrderedDict[tuple[Any, ...], Index] = collections.OrderedDict()
        self._selected: dict[tuple[Any, ...], tuple[int, bool]] = {}

    def usable(self, pod: PodInfo) -> bool:
        """``usable``, remembering per (namespace, labels) what the placed pods' terms say until
        those pods change: pods of one workload ask the same question thousands of times."""
        cache = self.cache
        if not pod.plain or pod.nominated_node or cache.nominated or cache.prefer_tainted_nodes:
            return False
        if not cache.with_affinity:
            return True
        key = (pod.namespace, tuple(sorted(pod.labels.items())))
        known = self._selected.get(key)
        if known is None or known[0] != cache.affinity_version:
            if len(self._selected) >= MEMO_SIZE:
                self._selected.clear()
            known = self._selected[key] = (
                cache.affinity_version,
                selected_by_placed_pods(pod, cache, self.listers),
            )
        return not known[1]

    def best(self, pod: PodInfo) -> NodeInfo | None:
        shape = pod.shape
        index = self._by_shape.get(shape)
        if index is None:
            index = self._by_shape[shape] = Index(pod, self.cache, self.listers, self.rng)
            while len(self._by_shape) > MAX_SHAPES:
                _, dropped = self._by_shape.popitem(last=False)
                dropped.close()
        else:
            self._by_shape.move_to_end(shape)
        return index.best()

    def close(self) -> None:
        for index in self._by_shape.values():
            index.close()
        self._by_shape.clear()
