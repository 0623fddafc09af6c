"""From informer events to the cache and the queue, and the listers the filters read.

Pods: a bound pod goes into the cache (confirming an assumed one) and out of the queue; an
unbound pod for this scheduler goes into the queue (or is updated there) and records its
nomination; a finished or deleted pod leaves the cache. Nodes: added, updated or removed in
the cache. Each change that may let a parked pod fit *moves* the unschedulable pods it can help
(upstream's cluster events): a node added, or changed in what scheduling reads; an assigned pod
deleted (room freed); an assigned pod added (pod affinity and spreading may now be met); claims,
volumes and storage classes (volume binding); namespace labels (affinity namespace selectors).

Handlers are plain functions called by the informers on the event loop; they never await.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.client import informer as informer_
from services.client import resources, store
from services.scheduler import cache as cache_
from services.scheduler import filters, podinfo
from services.scheduler import queue as queue_

AFFINITY_PLUGINS = frozenset({filters.INTER_POD_AFFINITY, filters.POD_TOPOLOGY_SPREAD})
VOLUME_PLUGINS = frozenset({filters.VOLUME_BINDING})


class InformerListers:
    """``types.Listers`` over informer caches."""

    def __init__(
        self, *, claims: store.Store, volumes: store.Store, classes: store.Store, namespaces: store.Store
    ) -> None:
        self._claims, self._volumes, self._classes, self._namespaces = claims, volumes, classes, namespaces

    def claim(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._claims.get_by(namespace, name)

    def volume(self, name: str) -> dict[str, Any] | None:
        return self._volumes.get(name)

    def storage_class(self, name: str) -> dict[str, Any] | None:
        return self._classes.get(name)

    def namespace_labels(self, name: str) -> Mapping[str, str] | None:
        namespace = self._namespaces.get(name)
        return None if namespace is None else (namespace.get("metadata") or {}).get("labels") or {}


class Handlers:
    def __init__(self, *, cache: cache_.Cache, queue: queue_.SchedulingQueue, scheduler_name: str) -> None:
        self.cache = cache
        self.queue = queue
        self.scheduler_name = scheduler_name
        self._registered: list[tuple[informer_.Informer, informer_.Handlers]] = []

    def register(self, factory: informer_.InformerFactory) -> InformerListers:
        """Subscribe to the informers this scheduler needs; returns the listers over their caches."""

        def on(resource: resources.Resource, **callbacks: Any) -> store.Store:
            informer = factory.informer(resource)
            self._registered.append((informer, informer.add_handlers(**callbacks)))
            return informer.store

        moved = self._mover
        on(resources.NODES, on_add=self.node_added, on_update=self.node_updated, on_delete=self.node_deleted)
        on(resources.PODS, on_add=self.pod_added, on_update=self.pod_updated, on_delete=self.pod_deleted)
        volume_events = {
            "on_add": moved("VolumeChange", VOLUME_PLUGINS),
            "on_update": moved("VolumeChange", VOLUME_PLUGINS),
        }
        return InformerListers(
            claims=on(resources.PERSISTENTVOLUMECLAIMS, **volume_events),
            volumes=on(resources.PERSISTENTVOLUMES, **volume_events),
            classes=on(resources.STORAGECLASSES, **volume_events),
            namespaces=on(
                resources.NAMESPACES,
                on_add=moved("NamespaceAdd", {filters.INTER_POD_AFFINITY}),
                on_update=self.namespace_updated,
            ),
        )

    def unregister(self) -> None:
        for informer, handlers in self._registered:
            informer.remove_handlers(handlers)
        self._registered.clear()

    def _mover(self, event: str, plugins: frozenset[str] | set[str]) -> Any:
        def on_event(*objs: dict[str, Any]) -> None:
            self.queue.move(event, plugins)

        return on_event

    # -- nodes -----------------------------------------------------------------------------------

    def node_added(self, obj: dict[str, Any]) -> None:
        self.cache.set_node(obj)
        self.queue.move("NodeAdd")

    def node_updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        if self.cache.set_node(new):
            self.queue.move("NodeUpdate")

    def node_deleted(self, obj: dict[str, Any]) -> None:
        self.cache.remove_node((obj.get("metadata") or {}).get("name", ""))

    # -- pods ------------------------------------------------------------------------------------

    def pod_added(self, obj: dict[str, Any]) -> None:
        self._pod_changed(None, obj)

    def pod_updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        self._pod_changed(old, new)

    def _pod_changed(self, old: dict[str, Any] | None, obj: dict[str, Any]) -> None:
        refreshed = self.cache.refresh(store.key_of(obj), obj)
        if refreshed:
            if refreshed == "confirmed":  # our own binding, as we assumed it
                self.queue.move("AssignedPodAdd", AFFINITY_PLUGINS)
            return
        pod = podinfo.from_pod(obj)
        key = pod.key
        if pod.node_name:
            self.queue.delete(key)
            self.cache.clear_nominated(key)
            if pod.terminal:
                if self.cache.remove_pod(key) is not None:
                    self.queue.move("AssignedPodDelete")
                return
            known = self.cache.pods.get(key)
            news = (
                known is None
                or key in self.cache.assumed
                or known.node_name != pod.node_name
                or known.labels != pod.labels
            )
            self.cache.add_pod(pod)
            if news:  # a pod appeared on a node (or changed labels): affinity and spreading may change
                self.queue.move("AssignedPodAdd", AFFINITY_PLUGINS)
            return
        if pod.scheduler_name != self.scheduler_name or pod.terminal or pod.deleting:
            self.queue.delete(key)
            self.cache.clear_nominated(key)
            return
        if pod.nominated_node:
            self.cache.nominate(pod, pod.nominated_node)
        else:
            self.cache.clear_nominated(key)
        self.queue.add(pod)

    def pod_deleted(self, obj: dict[str, Any]) -> None:
        key = store.key_of(obj)
        self.queue.delete(key)
        self.cache.clear_nominated(key)
        if self.cache.remove_pod(key) is not None:
            self.queue.move("AssignedPodDelete")

    # -- namespaces ------------------------------------------------------------------------------

    def namespace_updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        if (old.get("metadata") or {}).get("labels") != (new.get("metadata") or {}).get("labels"):
            self.queue.move("NamespaceUpdate", {filters.INTER_POD_AFFINITY})
