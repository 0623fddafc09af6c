"""The garbage collector: dependents follow their owners' ``ownerReferences``.

It watches every built-in kind that commonly has owners or is one (``WATCHED``) and keeps a map
from uid to cached object, so most owner lookups never leave the process. A work item is one
object, ``<resource>|<namespace>/<name>``; processing it does one of three things:

- the object is being deleted with the ``orphan`` finalizer: remove its uid from every
  dependent's ``ownerReferences``, then remove the finalizer (Orphan propagation);
- it is being deleted with ``foregroundDeletion``: queue its dependents (they see an owner
  waiting for them and delete themselves), and once no dependent with
  ``blockOwnerDeletion: true`` is left, remove the finalizer (Foreground propagation);
- it has owners: classify each as solid (exists), dangling (its uid exists nowhere) or waiting
  (being deleted in the foreground). Nothing dangling or waiting: nothing to do. A solid owner
  left: drop the references to the others. Otherwise delete the object, in the foreground if
  a waiting owner needs its dependents gone first, else as its own finalizers say, else in the
  background (Background propagation: the owner is already gone).

An owner missing from the cache is looked up in the API before anything is deleted: a fresh
owner may simply not have reached this process's informer yet. Owners of kinds outside
``WATCHED`` are resolved through discovery (custom resources too) and read from the API;
an owner whose kind cannot be resolved counts as solid, so nothing is deleted on a guess.
Custom resources are not watched as dependents: their owners' deletion does not reach them.
Every patch carries the object's ``uid`` and ``resourceVersion``; a conflict re-queues the item.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from services.client import errors, resources, store
from services.client.resources import Resource
from services.controllers import base, namespace, podutil

log = logging.getLogger(__name__)

ORPHAN = "orphan"
FOREGROUND = "foregroundDeletion"
GC_FINALIZERS = frozenset({ORPHAN, FOREGROUND})
REDISCOVER_AFTER = 30.0  # seconds between discovery refreshes for owner kinds we do not know

# Kinds watched as dependents and owners. Events are left out on purpose: many, short-lived,
# and never owners.
WATCHED: tuple[Resource, ...] = (
    resources.PODS,
    resources.REPLICASETS,
    resources.DEPLOYMENTS,
    resources.DAEMONSETS,
    resources.STATEFULSETS,
    resources.CONTROLLERREVISIONS,
    resources.REPLICATIONCONTROLLERS,
    resources.JOBS,
    resources.CRONJOBS,
    resources.SERVICES,
    resources.ENDPOINTSLICES,
    resources.CONFIGMAPS,
    resources.SECRETS,
    resources.SERVICEACCOUNTS,
    resources.PERSISTENTVOLUMECLAIMS,
    resources.PERSISTENTVOLUMES,
    resources.PODDISRUPTIONBUDGETS,
    resources.LEASES,
    resources.NODES,
    resources.NAMESPACES,
    resources.ADDONS,
)

Obj = dict[str, Any]


def _refs(obj: Obj) -> list[dict[str, Any]]:
    return list((obj.get("metadata") or {}).get("ownerReferences") or ())


def _finalizers(obj: Obj) -> list[str]:
    return list((obj.get("metadata") or {}).get("finalizers") or ())


def _group_of(api_version: str) -> str:
    return api_version.rpartition("/")[0]


class GarbageCollector(base.QueueController):
    name = "garbagecollector"
    workers = 20

    def __init__(self) -> None:
        super().__init__()
        self.informers: dict[Resource, Any] = {}
        self._by_name = {str(r): r for r in WATCHED}
        self._uids: dict[str, tuple[Resource, str]] = {}  # uid -> (resource, store key)
        self._kinds = {(r.group, r.kind): r for r in (*resources.ALL, *WATCHED)}
        self._discovered_at = float("-inf")

    def setup(self, ctx: base.ControllerContext) -> None:
        super().setup(ctx)
        for resource in WATCHED:
            informer = ctx.informers.informer(resource, indexers=podutil.INDEXERS)
            self.informers[resource] = informer
            informer.add_handlers(
                on_add=lambda obj, r=resource: self._added(r, obj),
                on_update=lambda old, new, r=resource: self._updated(r, old, new),
                on_delete=lambda obj, r=resource: self._deleted(r, obj),
            )

    # -- the graph, kept by the handlers ----------------------------------------------------------

    def _item(self, resource: Resource, obj: Obj) -> str:
        return f"{resource}|{store.key_of(obj)}"

    def _added(self, resource: Resource, obj: Obj) -> None:
        self._added_uid(resource, obj)
        if _refs(obj) or self._gc_deleting(obj):
            self.queue.add(self._item(resource, obj))

    def _updated(self, resource: Resource, old: Obj, new: Obj) -> None:
        self._added_uid(resource, new)
        if _refs(old) != _refs(new) or (self._gc_deleting(new) and _finalizers(old) != _finalizers(new)):
            self.queue.add(self._item(resource, new))
        elif self._gc_deleting(new) and not podutil.is_deleting(old):
            self.queue.add(self._item(resource, new))
        gone = {r.get("uid") for r in _refs(old)} - {r.get("uid") for r in _refs(new)}
        self._wake_owners(gone)  # an owner waiting for its dependents may have lost one

    def _added_uid(self, resource: Resource, obj: Obj) -> None:
        uid = (obj.get("metadata") or {}).get("uid")
        if uid:
            self._uids[uid] = (resource, store.key_of(obj))

    def _deleted(self, resource: Resource, obj: Obj) -> None:
        uid = (obj.get("metadata") or {}).get("uid", "")
        if self._uids.get(uid, (None, ""))[1] == store.key_of(obj):
            self._uids.pop(uid, None)
        for dep_resource, dep in self._dependents(uid):  # their owner is gone now
            self.queue.add(self._item(dep_resource, dep))
        self._wake_owners({r.get("uid") for r in _refs(obj)})

    def _wake_owners(self, uids: set[Any]) -> None:
        for uid in uids:
            owner = self._cached(uid)
            if owner is not None and self._gc_deleting(owner[1]):
                self.queue.add(self._item(owner[0], owner[1]))

    def _gc_deleting(self, obj: Obj) -> bool:
        return podutil.is_deleting(obj) and bool(GC_FINALIZERS & set(_finalizers(obj)))

    def _cached(self, uid: str) -> tuple[Resource, Obj] | None:
        found = self._uids.get(uid)
        if found is None:
            return None
        obj = self.informers[found[0]].store.get(found[1])
        if obj is None or obj["metadata"].get("uid") != uid:
            return None
        return found[0], obj

    def _dependents(self, uid: str) -> list[tuple[Resource, Obj]]:
        if not uid:
            return []
        return [
            (resource, dep)
            for resource, informer in self.informers.items()
            for dep in informer.store.by_index(podutil.OWNER_UID_INDEX, uid)
        ]

    # -- processing -----------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        name, _, obj_key = key.partition("|")
        resource = self._by_name.get(name)
        if resource is None:
            return
        obj = self.informers[resource].store.get(obj_key)
        if obj is None:
            return
        if podutil.is_deleting(obj):
            finalizers = _finalizers(obj)
            if ORPHAN in finalizers:
                await self._orphan_dependents(resource, obj)
            elif FOREGROUND in finalizers:
                await self._delete_dependents(resource, obj)
            return
        if _refs(obj):
            await self._collect(resource, obj)

    async def _orphan_dependents(self, resource: Resource, owner: Obj) -> None:
        uid = owner["metadata"]["uid"]
        for dep_resource, dep in self._dependents(uid):
            await self._patch_refs(dep_resource, dep, [r for r in _refs(dep) if r.get("uid") != uid])
        await self._remove_finalizer(resource, owner, ORPHAN)

    async def _delete_dependents(self, resource: Resource, owner: Obj) -> None:
        uid = owner["metadata"]["uid"]
        blocking = 0
        for dep_resource, dep in self._dependents(uid):
            if any(r.get("uid") == uid and r.get("blockOwnerDeletion") for r in _refs(dep)):
                blocking += 1
            if not podutil.is_deleting(dep):
                self.queue.add(self._item(dep_resource, dep))
        if blocking == 0:
            await self._remove_finalizer(resource, owner, FOREGROUND)

    async def _collect(self, resource: Resource, obj: Obj) -> None:
        solid, doomed, waiting = [], set(), False
        for ref in _refs(obj):
            state = await self._owner_state(obj, ref)
            if state == "solid":
                solid.append(ref)
            else:
                doomed.add(ref.get("uid"))
                waiting = waiting or state == "waiting"
        if not doomed:
            return
        if solid:
            await self._patch_refs(resource, obj, [r for r in _refs(obj) if r.get("uid") not in doomed])
            return
        finalizers = _finalizers(obj)
        if waiting and self._dependents(obj["metadata"]["uid"]):
            policy = "Foreground"
        elif ORPHAN in finalizers:
            policy = "Orphan"
        elif FOREGROUND in finalizers:
            policy = "Foreground"
        else:
            policy = "Background"
        md = obj["metadata"]
        log.debug("garbage collecting %s %s (policy %s)", resource, store.key_of(obj), policy)
        try:
            await self.ctx.api.delete(resource, md["name"], namespace=md.get("namespace"),
                                      propagation_policy=policy, preconditions={"uid": md["uid"]})  # fmt: skip
        except errors.ApiError as exc:
            if exc.code not in (404, 409):
                raise

    async def _owner_state(self, obj: Obj, ref: dict[str, Any]) -> str:
        """``solid``, ``dangling`` or ``waiting`` (being deleted in the foreground)."""
        uid = ref.get("uid", "")
        cached = self._cached(uid)
        if cached is not None:
            return "waiting" if self._waiting(cached[1]) else "solid"
        resource = await self._resource_for(ref)
        if resource is None:
            log.debug(
                "owner kind %s %s is unknown; keeping its dependents", ref.get("apiVersion"), ref.get("kind")
            )
            return "solid"
        obj_namespace = (obj.get("metadata") or {}).get("namespace")
        if resource.namespaced and not obj_namespace:
            self.ctx.recorder.warning(obj, "OwnerRefInvalidNamespace",
                                      f"ownerRef {ref} does not resolve to a cluster-scoped owner")  # fmt: skip
            return "dangling"
        try:
            live = await self.ctx.api.get(resource, ref.get("name", ""), namespace=obj_namespace)
        except errors.ApiError as exc:
            if exc.code == 404:
                return "dangling"
            raise
        if live["metadata"].get("uid") != uid:
            return "dangling"
        return "waiting" if self._waiting(live) else "solid"

    def _waiting(self, owner: Obj) -> bool:
        return podutil.is_deleting(owner) and FOREGROUND in _finalizers(owner)

    async def _resource_for(self, ref: dict[str, Any]) -> Resource | None:
        key = (_group_of(ref.get("apiVersion", "")), ref.get("kind", ""))
        found = self._kinds.get(key)
        if (
            found is None
            and time.monotonic() - self._discovered_at > REDISCOVER_AFTER
            and hasattr(self.ctx.api, "request")
        ):
            self._discovered_at = time.monotonic()
            discovered, _ = await namespace.discover(self.ctx.api)
            for entry in discovered:
                self._kinds.setdefault((entry.resource.group, entry.resource.kind), entry.resource)
            found = self._kinds.get(key)
        return found

    # -- writes ---------------------------------------------------------------------------------

    async def _patch_refs(self, resource: Resource, obj: Obj, refs: list[dict[str, Any]]) -> None:
        md = obj["metadata"]
        body = {
            "metadata": {
                "ownerReferences": refs or None,
                "uid": md["uid"],
                "resourceVersion": md["resourceVersion"],
            }
        }
        try:
            await self.ctx.api.patch(resource, md["name"], body, namespace=md.get("namespace"))
        except errors.ApiError as exc:
            if exc.code != 404:
                raise

    async def _remove_finalizer(self, resource: Resource, obj: Obj, finalizer: str) -> None:
        md = obj["metadata"]
        left = [f for f in _finalizers(obj) if f != finalizer]
        body = {
            "metadata": {
                "finalizers": left or None,
                "uid": md["uid"],
                "resourceVersion": md["resourceVersion"],
            }
        }
        try:
            await self.ctx.api.patch(resource, md["name"], body, namespace=md.get("namespace"))
        except errors.ApiError as exc:
            if exc.code != 404:
                raise


def new() -> base.Controller:
    return GarbageCollector()
