"""An in-memory API for unit tests: the ``types.Api`` surface with honest concurrency rules.

``FakeApi`` keeps objects per resource with one global resourceVersion counter and an event
history, so what informers, controllers and leader election rely on behaves as the API server
does: create answers 409 AlreadyExists, update with a stale resourceVersion answers 409 Conflict,
missing objects 404; lists carry their revision; watches replay history after a resourceVersion
and then stream live events, or answer 410 Expired (as an ERROR event) once ``compact`` dropped
that history. Tests steer it without patching anything: ``fail_next`` makes the next calls of a
verb raise, ``end_watches`` ends every open watch cleanly (a server-side timeout), and
``requests`` records every verb called.

It is a test double, not a second API server: no admission, no validation, no finalizers or
garbage collection, apply treated as a merge patch, watches without ``sendInitialEvents`` or
timeouts, and field selectors limited to what ``machinery.selectors.object_fields`` knows.
"""

from __future__ import annotations

import asyncio
import collections
import copy
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from services.client import errors, resources
from services.client.resources import Resource
from services.machinery import errors as apierrors
from services.machinery import meta, patch, selectors

Key = tuple[Resource, str, str]  # (resource, namespace, name)


class FakeApi:
    def __init__(self) -> None:
        self.revision = 1
        self.objects: dict[Key, dict[str, Any]] = {}
        self.history: list[tuple[int, Resource, str, dict[str, Any]]] = []  # (rv, resource, type, obj)
        self.compacted = 0  # watches from below this revision get 410
        self.requests: list[tuple[str, str]] = []  # (verb, resource)
        self._failures: dict[str, collections.deque[BaseException]] = collections.defaultdict(
            collections.deque
        )
        self._watches: set[FakeWatch] = set()

    # -- steering -------------------------------------------------------------------------------

    def fail_next(self, verb: str, exc: BaseException, *, times: int = 1) -> None:
        """Make the next ``times`` calls of ``verb`` (get, list, watch, create, ...) raise ``exc``."""
        self._failures[verb].extend([exc] * times)

    def compact(self) -> None:
        """Forget the history: a watch from any revision before now gets 410 Expired."""
        self.compacted = self.revision
        self.history.clear()

    def end_watches(self) -> None:
        for watch in list(self._watches):
            watch.end()

    def _enter(self, verb: str, resource: Resource) -> None:
        self.requests.append((verb, resource.plural))
        if self._failures[verb]:
            raise self._failures[verb].popleft()

    # -- reads ----------------------------------------------------------------------------------

    async def get(
        self, resource: Resource, name: str, *, namespace: str | None = None, subresource: str | None = None
    ) -> dict[str, Any]:
        self._enter("get", resource)
        return copy.deepcopy(self._existing(resource, namespace, name))

    async def list(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resource_version: str | None = None,
        resource_version_match: str | None = None,
        page_size: int | None = None,
    ) -> dict[str, Any]:
        self._enter("list", resource)
        match = _matcher(resource, label_selector, field_selector)
        items = [
            copy.deepcopy(obj)
            for (res, ns, _), obj in sorted(self.objects.items(), key=lambda kv: kv[0][1:])
            if res == resource and (not namespace or ns == namespace) and match(obj)
        ]
        return {"kind": resource.list_kind, "apiVersion": resource.api_version,
                "metadata": {"resourceVersion": str(self.revision)}, "items": items}  # fmt: skip

    def watch(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resource_version: str | None = None,
        allow_bookmarks: bool = True,
        timeout_seconds: int | None = None,
        send_initial_events: bool = False,
    ) -> FakeWatch:
        match = _matcher(resource, label_selector, field_selector)

        def wanted(res: Resource, obj: dict[str, Any]) -> bool:
            ns = (obj.get("metadata") or {}).get("namespace", "")
            return res == resource and (not namespace or ns == namespace) and match(obj)

        return FakeWatch(self, resource, wanted, resource_version or "")

    # -- writes ---------------------------------------------------------------------------------

    async def create(
        self, resource: Resource, obj: Mapping[str, Any], *, namespace: str | None = None,
        field_manager: str | None = None, dry_run: bool = False,
    ) -> dict[str, Any]:  # fmt: skip
        self._enter("create", resource)
        new = copy.deepcopy(dict(obj))
        md = new.setdefault("metadata", {})
        if resource.namespaced:
            md["namespace"] = namespace or md.get("namespace") or "default"
        if not md.get("name") and md.get("generateName"):
            md["name"] = meta.generate_name(md["generateName"])
        key = (resource, md.get("namespace", ""), md.get("name", ""))
        if key in self.objects:
            raise apierrors.already_exists(resource.plural, key[2], group=resource.group)
        md.update(uid=meta.new_uid(), creationTimestamp=meta.now_rfc3339(), generation=1)
        new.setdefault("apiVersion", resource.api_version)
        new.setdefault("kind", resource.kind)
        return self._store(key, new, "ADDED")

    async def update(
        self, resource: Resource, obj: Mapping[str, Any], *, namespace: str | None = None,
        subresource: str | None = None, field_manager: str | None = None, dry_run: bool = False,
    ) -> dict[str, Any]:  # fmt: skip
        self._enter("update", resource)
        md = obj.get("metadata") or {}
        ns = (namespace or md.get("namespace", "")) if resource.namespaced else ""
        current = self._existing(resource, ns, md.get("name", ""))
        if md.get("resourceVersion") and md["resourceVersion"] != current["metadata"]["resourceVersion"]:
            raise apierrors.stale(resource.plural, md["name"], group=resource.group)
        new = copy.deepcopy(dict(obj))
        if subresource == "status":
            new = {**copy.deepcopy(current), "status": new.get("status")}
        elif "status" in current:
            new["status"] = copy.deepcopy(current["status"])
        return self._replace(resource, current, new)

    async def update_status(
        self, resource: Resource, obj: Mapping[str, Any], **kwargs: Any
    ) -> dict[str, Any]:
        return await self.update(resource, obj, subresource="status", **kwargs)

    async def patch(
        self, resource: Resource, name: str, body: Mapping[str, Any] | Sequence[Any], *,
        namespace: str | None = None, patch_type: str = "merge", subresource: str | None = None,
        field_manager: str | None = None, force: bool = False, dry_run: bool = False,
    ) -> dict[str, Any]:  # fmt: skip
        self._enter("patch", resource)
        current = self._existing(resource, namespace, name)
        if patch_type == "json":
            new = patch.json_patch(current, body)
        elif patch_type == "strategic":
            new = patch.strategic_merge_patch(
                current, body, patch.patch_meta_for(resource.group, resource.kind)
            )
        elif patch_type in ("merge", "apply"):  # apply as a merge: close enough for a fake
            new = patch.merge_patch(current, body)
        else:
            raise ValueError(f"unknown patch type {patch_type!r}")
        return self._replace(resource, current, new)

    async def delete(
        self, resource: Resource, name: str, *, namespace: str | None = None, propagation_policy: Any = None,
        grace_period_seconds: int | None = None, preconditions: Mapping[str, str] | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:  # fmt: skip
        self._enter("delete", resource)
        current = self._existing(resource, namespace, name)
        for field, value in (preconditions or {}).items():
            if current["metadata"].get(field) != value:
                raise apierrors.conflict(
                    resource.plural, name, f"Precondition failed: {field} in precondition: {value}"
                )
        key = _key_of(resource, current)
        del self.objects[key]
        gone = copy.deepcopy(current)
        self.revision += 1
        gone["metadata"]["resourceVersion"] = str(self.revision)
        self._emit(resource, "DELETED", gone)
        return copy.deepcopy(gone)

    async def bind(self, namespace: str, pod: str, node: str, *, uid: str | None = None) -> dict[str, Any]:
        self._enter("bind", resources.PODS)
        current = self._existing(resources.PODS, namespace, pod)
        if (current.get("spec") or {}).get("nodeName"):
            raise apierrors.conflict(
                "pods", pod, f'pod {pod} is already assigned to node "{current["spec"]["nodeName"]}"'
            )
        new = copy.deepcopy(current)
        new.setdefault("spec", {})["nodeName"] = node
        self._replace(resources.PODS, current, new)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}

    # -- internals ------------------------------------------------------------------------------

    def _existing(self, resource: Resource, namespace: str | None, name: str) -> dict[str, Any]:
        found = self.objects.get((resource, (namespace or "") if resource.namespaced else "", name))
        if found is None:
            raise apierrors.not_found(resource.plural, name, group=resource.group)
        return found

    def _replace(self, resource: Resource, current: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        md = new.setdefault("metadata", {})
        for field in ("uid", "creationTimestamp", "namespace", "name"):
            if field in current["metadata"]:
                md[field] = current["metadata"][field]
        generation = current["metadata"].get("generation", 1)
        md["generation"] = generation + 1 if new.get("spec") != current.get("spec") else generation
        return self._store(_key_of(resource, current), new, "MODIFIED")

    def _store(self, key: Key, obj: dict[str, Any], kind: str) -> dict[str, Any]:
        self.revision += 1
        obj["metadata"]["resourceVersion"] = str(self.revision)
        self.objects[key] = obj
        self._emit(key[0], kind, obj)
        return copy.deepcopy(obj)

    def _emit(self, resource: Resource, kind: str, obj: dict[str, Any]) -> None:
        frozen = copy.deepcopy(obj)
        self.history.append((self.revision, resource, kind, frozen))
        for watch in list(self._watches):
            watch.offer(resource, kind, frozen)


class FakeWatch:
    """A watch on a ``FakeApi``: history after the resourceVersion, then live events."""

    def __init__(self, api: FakeApi, resource: Resource, wanted: Any, resource_version: str) -> None:
        self.api = api
        self.resource = resource
        self.resource_version = resource_version
        self._wanted = wanted
        self._events: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue()

    async def __aenter__(self) -> FakeWatch:
        self.api._enter("watch", self.resource)
        start = int(self.resource_version or self.api.revision)
        if start < self.api.compacted:
            gone = errors.ApiError(
                410, "Expired", f"too old resource version: {start} ({self.api.compacted})"
            )
            self._events.put_nowait(("ERROR", gone.status()))
        else:
            for rv, res, kind, obj in self.api.history:
                if rv > start:
                    self.offer(res, kind, obj)
            self.api._watches.add(self)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def offer(self, resource: Resource, kind: str, obj: dict[str, Any]) -> None:
        if self._wanted(resource, obj):
            self._events.put_nowait((kind, copy.deepcopy(obj)))

    def end(self) -> None:
        self._events.put_nowait(None)

    def __aiter__(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        while (event := await self._events.get()) is not None:
            kind, obj = event
            if kind == "ERROR":
                raise errors.from_status(obj["code"], obj)
            self.resource_version = obj["metadata"]["resourceVersion"]
            yield kind, obj

    async def aclose(self) -> None:
        self.api._watches.discard(self)


def _key_of(resource: Resource, obj: dict[str, Any]) -> Key:
    md = obj["metadata"]
    return (resource, md.get("namespace", "") if resource.namespaced else "", md["name"])


def _matcher(resource: Resource, label_selector: str | None, field_selector: str | None) -> Any:
    labels = selectors.parse_label_selector(label_selector) if label_selector else None
    fields = selectors.parse_field_selector(field_selector) if field_selector else None

    def match(obj: dict[str, Any]) -> bool:
        if labels is not None and not labels.matches((obj.get("metadata") or {}).get("labels") or {}):
            return False
        if fields is not None:
            values = selectors.object_fields(
                obj, kind=resource.kind, group=resource.group, namespaced=resource.namespaced,
                extra=tuple(r.field for r in fields.requirements),
            )  # fmt: skip
            return fields.matches(values)
        return True

    return match
