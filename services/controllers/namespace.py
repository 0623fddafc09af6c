"""Namespaces: a namespace being deleted is emptied, then finalized.

``DELETE namespaces/<n>`` only marks the namespace (``deletionTimestamp``, phase Terminating),
because its ``spec.finalizers`` holds ``kubernetes``. This controller then deletes every
namespaced object in it, of every resource that discovery (``/api/v1`` and the preferred
version of each group under ``/apis``) says can be listed and deleted, custom resources
included: with one ``deletecollection`` per resource where it is offered, else one delete per
object. When nothing is left it PUTs ``namespaces/<n>/finalize`` without ``kubernetes``, and the
API server removes the namespace (once its metadata finalizers are gone too).

Pods on nodes terminate gracefully and other objects may wait for their own finalizers, so a
namespace usually needs a few rounds: each round that leaves something behind records it in the
namespace's conditions (NamespaceContentRemaining, NamespaceFinalizersRemaining, and the
discovery or deletion failures) and comes back after a delay that doubles from 1 s up to 15 s.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from services.client import errors, resources, store
from services.client.resources import Resource
from services.controllers import base, podutil

log = logging.getLogger(__name__)

FINALIZER = "kubernetes"
FIRST_RETRY = 1.0  # seconds before checking again on what is left
MAX_RETRY = 15.0
Obj = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Discovered:
    resource: Resource
    verbs: frozenset[str]


async def discover(api: Any) -> tuple[list[Discovered], list[str]]:
    """Every top-level resource of the core group and of each group's preferred version, and the
    group versions that could not be read (discovery goes on without them)."""
    found: list[Discovered] = []
    failed: list[str] = []
    versions = ["v1"]
    try:
        groups = await api.request("GET", "/apis")
    except (errors.ApiError, errors.ClientError) as exc:
        log.warning("discovery of /apis failed: %s", exc)
        groups, failed = {}, ["/apis"]
    for group in groups.get("groups") or ():
        preferred = (group.get("preferredVersion") or {}).get("groupVersion")
        if not preferred and group.get("versions"):
            preferred = group["versions"][0].get("groupVersion")
        if preferred:
            versions.append(preferred)
    for group_version in versions:
        path = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        try:
            listing = await api.request("GET", path)
        except (errors.ApiError, errors.ClientError) as exc:
            log.warning("discovery of %s failed: %s", group_version, exc)
            failed.append(group_version)
            continue
        group, _, version = group_version.rpartition("/")
        for entry in listing.get("resources") or ():
            name = entry.get("name", "")
            if not name or "/" in name:
                continue  # subresources
            resource = Resource(group, version, name, bool(entry.get("namespaced")), entry.get("kind", ""))
            found.append(Discovered(resource, frozenset(entry.get("verbs") or ())))
    return found, failed


def _condition(type_: str, status: str, reason: str, message: str) -> Obj:
    return {"type": type_, "status": status, "lastTransitionTime": podutil.format_time(podutil.now()),
            "reason": reason, "message": message}  # fmt: skip


class NamespaceController(base.QueueController):
    name = "namespace"
    workers = 10

    def __init__(self) -> None:
        super().__init__()
        self._rounds: dict[str, int] = {}

    def setup(self, ctx: base.ControllerContext) -> None:
        super().setup(ctx)
        self.namespaces = ctx.informers.informer(resources.NAMESPACES)
        self.namespaces.add_handlers(
            on_add=self._changed, on_update=lambda old, new: self._changed(new), on_delete=self._gone
        )

    def _changed(self, ns: Obj) -> None:
        if podutil.is_deleting(ns):
            self.enqueue(ns)

    def _gone(self, ns: Obj) -> None:
        self._rounds.pop(base.key_of(ns), None)

    async def reconcile(self, key: str) -> None:
        ns = self.namespaces.store.get(key)
        if ns is None or not podutil.is_deleting(ns):
            self._rounds.pop(key, None)
            return
        if FINALIZER not in ((ns.get("spec") or {}).get("finalizers") or ()):
            return  # finalized already; the API server removes it once metadata finalizers are gone
        found, failed = await discover(self.ctx.api)
        remaining, finalizers, failures = await self._delete_content(key, found)
        if remaining or failed or failures:
            await self._record(
                ns, remaining=remaining, finalizers=finalizers, failed=failed, failures=failures
            )
            rounds = self._rounds.get(key, 0)
            self._rounds[key] = rounds + 1
            self.queue.add_after(key, min(FIRST_RETRY * 2**rounds, MAX_RETRY))
            return
        await self._finalize(ns)
        self._rounds.pop(key, None)

    async def _delete_content(
        self, namespace: str, found: list[Discovered]
    ) -> tuple[dict[str, int], set[str], list[str]]:
        """Delete what is there; returns objects left per resource, their finalizers, and failures."""
        remaining: dict[str, int] = {}
        finalizers: set[str] = set()
        failures: list[str] = []
        for entry in found:
            if not entry.resource.namespaced or not {"list", "delete"} <= entry.verbs:
                continue
            try:
                left = await self._delete_all(namespace, entry)
            except (errors.ApiError, errors.ClientError) as exc:
                failures.append(f"{entry.resource}: {exc}")
                continue
            if left:
                remaining[str(entry.resource)] = len(left)
                for obj in left:
                    finalizers.update((obj.get("metadata") or {}).get("finalizers") or ())
        return remaining, finalizers, failures

    async def _delete_all(self, namespace: str, entry: Discovered) -> list[Obj]:
        """Delete every object of one resource in ``namespace``; returns what is still there."""
        api = self.ctx.api
        listed = (await api.list(entry.resource, namespace=namespace)).get("items") or []
        if not listed:
            return []
        if "deletecollection" in entry.verbs and hasattr(api, "delete_collection"):
            await api.delete_collection(entry.resource, namespace=namespace, propagation_policy="Background")
        else:
            for obj in listed:
                if podutil.is_deleting(obj):
                    continue
                try:
                    await api.delete(entry.resource, obj["metadata"]["name"], namespace=namespace,
                                     propagation_policy="Background")  # fmt: skip
                except errors.ApiError as exc:
                    if exc.code != 404:
                        raise
        return (await api.list(entry.resource, namespace=namespace)).get("items") or []

    async def _record(
        self,
        ns: Obj,
        *,
        remaining: dict[str, int],
        finalizers: set[str],
        failed: list[str],
        failures: list[str],
    ) -> None:
        """Say in the namespace's conditions why it is still there."""
        conditions = []
        if failed:
            message = "Discovery failed for some groups: " + ", ".join(sorted(failed))
            conditions.append(
                _condition("NamespaceDeletionDiscoveryFailure", "True", "DiscoveryFailed", message)
            )
        if failures:
            message = "Failed to delete all resource types: " + "; ".join(failures)
            conditions.append(
                _condition("NamespaceDeletionContentFailure", "True", "ContentDeletionFailed", message)
            )
        if remaining:
            message = "Some resources are remaining: " + ", ".join(
                f"{name} has {count} resource instances" for name, count in sorted(remaining.items())
            )
            conditions.append(_condition("NamespaceContentRemaining", "True", "SomeResourcesRemain", message))
        if finalizers:
            message = "Some content in the namespace has finalizers remaining: " + ", ".join(
                sorted(finalizers)
            )
            conditions.append(
                _condition("NamespaceFinalizersRemaining", "True", "SomeFinalizersRemain", message)
            )
        status = store.copy(ns.get("status") or {})
        old = {c.get("type"): c for c in status.get("conditions") or ()}
        for cond in conditions:  # an unchanged condition keeps its transition time
            previous = old.get(cond["type"])
            if previous is not None and previous.get("message") == cond["message"]:
                cond["lastTransitionTime"] = previous.get("lastTransitionTime", cond["lastTransitionTime"])
        if [(c["type"], c["message"]) for c in conditions] == [
            (c.get("type"), c.get("message")) for c in status.get("conditions") or ()
        ]:
            return
        status["conditions"] = conditions
        try:
            await self.ctx.api.update_status(resources.NAMESPACES, {**store.copy(ns), "status": status})
        except errors.ApiError as exc:
            if exc.code not in (404, 409):
                raise

    async def _finalize(self, ns: Obj) -> None:
        body = store.copy(ns)
        spec = body.setdefault("spec", {})
        spec["finalizers"] = [f for f in spec.get("finalizers") or () if f != FINALIZER]
        try:
            await self.ctx.api.update(resources.NAMESPACES, body, subresource="finalize")
        except errors.ApiError as exc:
            if exc.code != 404:
                raise
            return
        log.info("namespace %s: emptied and finalized", ns["metadata"]["name"])


def new() -> base.Controller:
    return NamespaceController()
