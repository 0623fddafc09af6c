"""The scheduler's view of the cluster: one ``NodeInfo`` per node, kept current by informer events.

A ``NodeInfo`` holds what filters and scores read, precomputed: allocatable and requested
resources as integers (millicores, bytes, counts), the host ports in use, labels and the taints
that block scheduling, and the pods on the node. Pods enter when the informer shows them bound to
a node (or when this scheduler *assumes* them right after choosing their node, before the
binding is written), and leave when they are deleted or finish (Succeeded/Failed); a pod that is
merely terminating still holds its resources, as upstream's cache counts it.

Scheduling reads this cache directly as its snapshot: one scheduling cycle runs without an await
from its first filter to ``assume``, and everything here is changed only by the informer's
handlers on the same event loop, so a cycle never sees a half-applied change.

An assumed pod stays until the informer confirms it (the bound pod arrives, on whatever node
the API server recorded), the binding fails (``forget``), or the pod is deleted. Pods bound to a
node the cache does not know yet are kept on a placeholder that becomes the real node when it
arrives. A node whose Ready condition is not True gets the taint the node lifecycle controller
would give it (``node.kubernetes.io/not-ready`` or ``unreachable``, NoSchedule), so a virtual or
silent node is avoided even before that controller runs.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

from services.machinery import quantity
from services.scheduler.podinfo import PodInfo

NOT_READY_TAINT = "node.kubernetes.io/not-ready"
UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"
BLOCKING_EFFECTS = ("NoSchedule", "NoExecute")


class NodeInfo:
    __slots__ = (
        "name", "obj", "labels", "blocking_taints", "prefer_taints", "unschedulable",
        "alloc_cpu", "alloc_memory", "alloc_ephemeral", "alloc_pods", "alloc_scalar",
        "req_cpu", "req_memory", "req_ephemeral", "req_scalar", "nonzero_cpu", "nonzero_memory",
        "pods", "ports", "generation",
    )  # fmt: skip

    def __init__(self, name: str) -> None:
        self.name = name
        self.obj: dict[str, Any] | None = None  # None: a placeholder for pods bound to an unknown node
        self.labels: Mapping[str, str] = {}
        self.blocking_taints: tuple[Mapping[str, Any], ...] = ()  # NoSchedule and NoExecute
        self.prefer_taints: tuple[Mapping[str, Any], ...] = ()  # PreferNoSchedule
        self.unschedulable = False
        self.alloc_cpu = self.alloc_memory = self.alloc_ephemeral = self.alloc_pods = 0
        self.alloc_scalar: dict[str, int] = {}
        self.req_cpu = self.req_memory = self.req_ephemeral = 0
        self.req_scalar: dict[str, int] = collections.defaultdict(int)
        self.nonzero_cpu = self.nonzero_memory = 0
        self.pods: dict[str, PodInfo] = {}
        self.ports: collections.Counter[tuple[str, str, int]] = collections.Counter()
        self.generation = 0  # bumped at every change (the plain-pod index compares it)

    def set_node(self, obj: dict[str, Any]) -> None:
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        self.obj = obj
        self.labels = (obj.get("metadata") or {}).get("labels") or {}
        self.unschedulable = bool(spec.get("unschedulable"))
        taints = [t for t in spec.get("taints") or () if isinstance(t, dict)]
        implied = readiness_taint(status)
        if implied is not None and not any(t.get("key") == implied["key"] for t in taints):
            taints.append(implied)
        self.blocking_taints = tuple(t for t in taints if t.get("effect") in BLOCKING_EFFECTS)
        self.prefer_taints = tuple(t for t in taints if t.get("effect") == "PreferNoSchedule")
        allocatable = status.get("allocatable") or status.get("capacity") or {}
        amounts = {name: quantity.safe_amount(name, v) for name, v in allocatable.items()}
        self.alloc_cpu = amounts.pop("cpu", 0)
        self.alloc_memory = amounts.pop("memory", 0)
        self.alloc_ephemeral = amounts.pop("ephemeral-storage", 0)
        self.alloc_pods = amounts.pop("pods", 0)
        self.alloc_scalar = amounts
        self.generation += 1

    def add_pod(self, pod: PodInfo) -> None:
        self.pods[pod.key] = pod
        self._account(pod, 1)

    def remove_pod(self, key: str) -> PodInfo | None:
        pod = self.pods.pop(key, None)
        if pod is not None:
            self._account(pod, -1)
        return pod

    def _account(self, pod: PodInfo, sign: int) -> None:
        self.req_cpu += sign * pod.cpu
        self.req_memory += sign * pod.memory
        self.req_ephemeral += sign * pod.ephemeral
        self.nonzero_cpu += sign * pod.nonzero_cpu
        self.nonzero_memory += sign * pod.nonzero_memory
        for name, amount in pod.scalar.items():
            self.req_scalar[name] += sign * amount
        for port in pod.host_ports:
            self.ports[port] += sign
            if self.ports[port] <= 0:
                del self.ports[port]
        self.generation += 1

    def clone(self) -> NodeInfo:
        """A copy whose pods can be added and removed freely (preemption's what-ifs)."""
        other = NodeInfo(self.name)
        for slot in NodeInfo.__slots__:
            setattr(other, slot, getattr(self, slot))
        other.req_scalar = collections.defaultdict(int, self.req_scalar)
        other.pods = dict(self.pods)
        other.ports = collections.Counter(self.ports)
        return other


def readiness_taint(status: Mapping[str, Any]) -> dict[str, str] | None:
    """The NoSchedule taint the node lifecycle controller puts on a node that is not Ready."""
    ready = next((c for c in status.get("conditions") or () if c.get("type") == "Ready"), None)
    if ready is not None and ready.get("status") == "True":
        return None
    key = NOT_READY_TAINT if ready is None or ready.get("status") == "False" else UNREACHABLE_TAINT
    return {"key": key, "effect": "NoSchedule"}


def scheduling_properties(obj: Mapping[str, Any]) -> tuple[Any, ...]:
    """What of a node can change a scheduling decision (a heartbeat changes none of it)."""
    md, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    return (
        md.get("labels"),
        spec.get("unschedulable"),
        spec.get("taints"),
        status.get("allocatable") or status.get("capacity"),
        readiness_taint(status),
    )


class Cache:
    def __init__(self) -> None:
        self._infos: dict[str, NodeInfo] = {}  # real nodes and placeholders
        self._order: list[NodeInfo] | None = []  # real nodes, in arrival order; None: rebuild
        self.pods: dict[str, PodInfo] = {}  # assigned (or assumed), not finished
        self.assumed: set[str] = set()
        self.nominated: dict[str, dict[str, PodInfo]] = {}  # node -> pods nominated to it
        self._nominated_of: dict[str, str] = {}
        # Assigned pods with required anti-affinity terms: they constrain every incoming pod.
        self.with_anti_affinity: dict[str, PodInfo] = {}
        # Assigned pods with any affinity terms (inter-pod affinity scoring is symmetric).
        self.with_affinity: dict[str, PodInfo] = {}
        self.affinity_version = 0  # bumped whenever with_affinity changes
        self.prefer_tainted_nodes = 0  # nodes with PreferNoSchedule taints (scoring needed at all)
        self._watchers: list[set[str]] = []  # sets that collect the names of changed nodes

    def watch_nodes(self) -> set[str]:
        """A set the cache adds every changed node's name to (``unwatch_nodes`` to stop)."""
        changed = {i.name for i in self.node_list}
        self._watchers.append(changed)
        return changed

    def unwatch_nodes(self, changed: set[str]) -> None:
        self._watchers = [w for w in self._watchers if w is not changed]

    def _touch(self, name: str) -> None:
        for changed in self._watchers:
            changed.add(name)

    # -- nodes ---------------------------------------------------------------------------------

    @property
    def node_list(self) -> list[NodeInfo]:
        if self._order is None:
            self._order = [i for i in self._infos.values() if i.obj is not None]
        return self._order

    def node(self, name: str) -> NodeInfo | None:
        info = self._infos.get(name)
        return info if info is not None and info.obj is not None else None

    def __len__(self) -> int:
        return len(self.node_list)

    def set_node(self, obj: dict[str, Any]) -> bool:
        """Add or update a node; True when it changed what scheduling can decide."""
        name = (obj.get("metadata") or {}).get("name", "")
        info = self._infos.get(name)
        if info is None:
            info = self._infos[name] = NodeInfo(name)
        before = None if info.obj is None else scheduling_properties(info.obj)
        if info.obj is None:
            self._order = None
        if info.prefer_taints:
            self.prefer_tainted_nodes -= 1
        info.set_node(obj)
        if info.prefer_taints:
            self.prefer_tainted_nodes += 1
        self._touch(name)
        return before != scheduling_properties(obj)

    def remove_node(self, name: str) -> None:
        info = self._infos.get(name)
        if info is None or info.obj is None:
            return
        if info.prefer_taints:
            self.prefer_tainted_nodes -= 1
        self._order = None
        self._touch(name)
        if info.pods:
            info.obj = None  # pods still name it: keep their accounting until they go
            info.prefer_taints = ()
        else:
            del self._infos[name]

    # -- pods ----------------------------------------------------------------------------------

    def add_pod(self, pod: PodInfo) -> None:
        """An assigned pod, as the informer shows it (confirms an assumed one)."""
        if pod.terminal:
            self.remove_pod(pod.key)
            return
        self.assumed.discard(pod.key)
        self._place(pod, pod.node_name)

    def refresh(self, key: str, obj: dict[str, Any]) -> str:
        """Take a newer version of a placed pod without parsing it again, when nothing scheduling
        reads has changed: ``"confirmed"`` (an assumed pod, bound where we put it), ``"unchanged"``
        (a status update, say), or ``""`` when the caller must parse it and ``add_pod``."""
        pod = self.pods.get(key)
        if pod is None:
            return ""
        md, spec = obj.get("metadata") or {}, obj.get("spec") or {}
        if (
            spec.get("nodeName") != pod.node_name
            or (md.get("labels") or {}) != pod.labels
            or bool(md.get("deletionTimestamp")) != pod.deleting
            or (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed")
        ):
            return ""
        assumed = key in self.assumed
        if not assumed and spec != (pod.obj.get("spec") or {}):
            return ""  # (an assumed pod's old spec lacks the nodeName: binding changes nothing else)
        self.assumed.discard(key)
        pod.obj = obj
        pod.resource_version = md.get("resourceVersion", "")
        return "confirmed" if assumed else "unchanged"

    def assume(self, pod: PodInfo, node: str) -> None:
        """Count ``pod`` on ``node`` now, before its binding is written."""
        self.assumed.add(pod.key)
        self.clear_nominated(pod.key)
        self._place(pod, node)

    def forget(self, key: str) -> None:
        """Undo ``assume`` (the binding failed); a confirmed pod is left alone."""
        if key in self.assumed:
            self.assumed.discard(key)
            self.remove_pod(key)

    def forget_all_assumed(self) -> None:
        for key in list(self.assumed):
            self.forget(key)

    def remove_pod(self, key: str) -> PodInfo | None:
        self.assumed.discard(key)
        return self._unplace(key)

    def _place(self, pod: PodInfo, node: str) -> None:
        self._unplace(pod.key)
        if pod.node_name != node:
            pod = dataclasses.replace(pod, node_name=node)
        info = self._infos.get(node)
        if info is None:
            info = self._infos[node] = NodeInfo(node)
        info.add_pod(pod)
        self._touch(node)
        self.pods[pod.key] = pod
        if pod.pod_anti_affinity:
            self.with_anti_affinity[pod.key] = pod
        if pod.pod_affinity or pod.pod_anti_affinity or pod.preferred_pod_affinity:
            self.with_affinity[pod.key] = pod
            self.affinity_version += 1

    def _unplace(self, key: str) -> PodInfo | None:
        pod = self.pods.pop(key, None)
        if pod is None:
            return None
        self.with_anti_affinity.pop(key, None)
        if self.with_affinity.pop(key, None) is not None:
            self.affinity_version += 1
        info = self._infos.get(pod.node_name)
        if info is not None:
            info.remove_pod(key)
            self._touch(info.name)
            if info.obj is None and not info.pods:
                del self._infos[info.name]
        return pod

    def pods_on(self, name: str) -> Iterator[PodInfo]:
        info = self._infos.get(name)
        return iter(()) if info is None else iter(list(info.pods.values()))

    # -- nominations (preemptors waiting for their victims to go) -------------------------------

    def nominate(self, pod: PodInfo, node: str) -> None:
        self.clear_nominated(pod.key)
        if node:
            self.nominated.setdefault(node, {})[pod.key] = pod
            self._nominated_of[pod.key] = node

    def clear_nominated(self, key: str) -> None:
        node = self._nominated_of.pop(key, None)
        if node is not None:
            pods = self.nominated.get(node, {})
            pods.pop(key, None)
            if not pods:
                self.nominated.pop(node, None)
