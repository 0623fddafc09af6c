"""CustomResourceDefinitions: a CRD written is a resource served, a CRD removed is not.

One background loop watches the CRD cache. For each CRD it registers a
``ResourceInfo`` per served version (with its schema, subresources and printer
columns), marks the CRD ``NamesAccepted`` and ``Established``, and tells the
registry (discovery and OpenAPI rebuild on that). When a CRD is deleted its
resources stop being served and its objects are removed from the store.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any

from services.apiserver import cache as cache_
from services.apiserver import context, registry
from services.kine import types
from services.machinery import meta

log = logging.getLogger(__name__)


def infos(crd: dict[str, Any]) -> list[registry.ResourceInfo]:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = spec.get("group", "")
    out = []
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        subs = version.get("subresources") or spec.get("subresources") or {}
        schema = ((version.get("schema") or spec.get("validation") or {}).get("openAPIV3Schema")) or None
        out.append(
            registry.ResourceInfo(
                group=group,
                version=version["name"],
                kind=names.get("kind", ""),
                plural=names.get("plural", ""),
                singular=names.get("singular") or names.get("kind", "").lower(),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                verbs=("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"),
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                subresources=tuple(k for k in ("status", "scale") if k in subs),
                field_selectors=tuple(f.get("jsonPath", "").lstrip(".") for f in version.get("selectableFields") or []),
                custom=True,
                schema=schema,
                printer_columns=tuple(version.get("additionalPrinterColumns") or ()),
            )
        )
    return out


class CrdController:
    def __init__(self, api: context.Api) -> None:
        self.api = api
        self._served: dict[str, tuple[str, str]] = {}  # CRD name -> (group, plural)
        self._task: asyncio.Task[Any] | None = None

    async def start(self) -> None:
        info = self.api.registry.lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        assert info is not None
        cache = await self.api.cache(info)
        await cache.sync()
        watcher = cache.watch(namespace="", predicate=None, after=None)
        for crd in cache.list("", None):
            await self._apply(crd)
        from services.machinery import tasks

        self._task = tasks.guarded(self._run(watcher), name="crd controller")

    async def stop(self) -> None:
        if self._task is not None:
            from services.machinery import tasks

            await tasks.cancel_all([self._task])

    async def _run(self, watcher: cache_.CacheWatcher) -> None:
        while True:
            try:
                batch = await watcher.next()
            except EOFError:
                await self.start()
                return
            for event in batch:
                if event.type == "DELETED":
                    await self._remove(event.obj)
                else:
                    await self._apply(event.obj)

    async def _apply(self, crd: dict[str, Any]) -> None:
        name = crd.get("metadata", {}).get("name", "")
        if crd.get("metadata", {}).get("deletionTimestamp"):
            await self._remove(crd)
            return
        served = infos(crd)
        old = self._served.get(name)
        if old is not None:
            self.api.registry.remove(*old)
        if served:
            self.api.registry.add(served)
            self._served[name] = (served[0].group, served[0].plural)
            log.info("serving custom resource %s.%s", served[0].plural, served[0].group)
        await self._establish(crd)

    async def _remove(self, crd: dict[str, Any]) -> None:
        name = crd.get("metadata", {}).get("name", "")
        served = self._served.pop(name, None)
        if served is None:
            return
        group, plural = served
        infos_ = [i for i in self.api.registry.all() if i.group == group and i.plural == plural]
        self.api.registry.remove(group, plural)
        await self.api.drop_cache(group, plural)
        if infos_:
            await self._delete_objects(infos_[0])
        log.info("stopped serving custom resource %s.%s", plural, group)

    async def _delete_objects(self, info: registry.ResourceInfo) -> None:
        prefix = info.storage_prefix
        try:
            items, _, _, _ = await self.api.store.list(prefix)
            for item in items:
                md = item.obj.get("metadata", {})
                await self.api.store.delete(info.key(md.get("namespace", ""), md.get("name", "")), expected=item.revision)
        except types.StoreError as exc:
            log.warning("could not remove the objects of %s: %s", info.resource_group, exc)

    async def _establish(self, crd: dict[str, Any]) -> None:
        conditions = (crd.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
            return
        info = self.api.registry.lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        assert info is not None
        key = info.key("", crd["metadata"]["name"])
        current = await self.api.store.get(key)
        if current is None:
            return
        new = copy.deepcopy(current.obj)
        now = meta.now_rfc3339()
        names = (new.get("spec") or {}).get("names") or {}
        new["status"] = {
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now},
            ],
            "acceptedNames": names,
            "storedVersions": [v["name"] for v in (new.get("spec") or {}).get("versions") or [] if v.get("storage")],
        }  # fmt: skip
        await self.api.store.update(key, new, expected=current.revision)
