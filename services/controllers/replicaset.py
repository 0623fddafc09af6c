"""ReplicaSets and ReplicationControllers: keep ``spec.replicas`` pods running for each.

One controller class serves both kinds; they differ in resource, kind and selector form only
(a ReplicationController's selector is a plain map). A sync of one owner:

1. takes the active pods of its namespace (not finished, not being deleted), adopts the
   orphans its selector matches and releases the pods it owns that stopped matching;
2. if its expectations are met (every pod it created or deleted earlier has shown up in the
   cache), creates the missing pods in slow-start batches of 1, 2, 4, ... (at most
   ``BURST`` per sync), named ``<owner>-<5 random characters>`` and owned by it, or deletes the
   surplus, the least useful first (unscheduled, pending, not ready, newest);
3. writes ``status`` (replicas, fullyLabeledReplicas, readyReplicas, availableReplicas,
   observedGeneration, and a ReplicaFailure condition when creating failed) through the status
   subresource, counting the pods it just deleted as gone.

Expectations are what keep a lagging cache from causing a second round of creations: until
the informer has shown this controller its own writes, the owner's pod count is not trusted.
With ``minReadySeconds``, a pod that is ready but not yet available brings its owner back once
it becomes available.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from services.client import errors, resources, store
from services.client.resources import Resource
from services.controllers import base, podutil

log = logging.getLogger(__name__)

BURST = 500  # pods created or deleted per sync at most (upstream's burstReplicas)
Obj = dict[str, Any]


class ReplicaSetController(base.QueueController):
    workers = 5

    def __init__(self, *, resource: Resource = resources.REPLICASETS, name: str = "replicaset") -> None:
        self.name = name
        self.resource = resource
        super().__init__()
        self.expectations = podutil.Expectations()
        self.owners: Any = None
        self.pods: Any = None

    # -- wiring ---------------------------------------------------------------------------------

    def setup(self, ctx: base.ControllerContext) -> None:
        super().setup(ctx)
        self.owners = ctx.informers.informer(self.resource)
        self.pods = ctx.informers.informer(resources.PODS, indexers=podutil.INDEXERS)
        self.owners.add_handlers(
            on_add=self.enqueue, on_update=self._owner_updated, on_delete=self._owner_deleted
        )
        self.pods.add_handlers(
            on_add=self._pod_added, on_update=self._pod_updated, on_delete=self._pod_deleted
        )

    def _owner_updated(self, old: Obj, new: Obj) -> None:
        self.enqueue(new)

    def _owner_deleted(self, obj: Obj) -> None:
        self.expectations.forget(base.key_of(obj))
        self.enqueue(obj)

    def _owner_of(self, pod: Obj) -> Obj | None:
        """The owner of this kind that ``pod``'s controller reference names, if cached."""
        ref = podutil.controller_ref(pod)
        if ref is None or ref.get("kind") != self.resource.kind:
            return None
        owner = self.owners.store.get_by((pod.get("metadata") or {}).get("namespace"), ref.get("name", ""))
        if owner is None or owner["metadata"].get("uid") != ref.get("uid"):
            return None
        return owner

    def _matching_owners(self, pod: Obj) -> list[Obj]:
        namespace = (pod.get("metadata") or {}).get("namespace", "")
        labels = podutil.labels_of(pod)
        return [
            o
            for o in self.owners.store.list_namespace(namespace)
            if podutil.selector_of(o.get("spec") or {}).matches(labels)
        ]

    def _pod_added(self, pod: Obj) -> None:
        if podutil.is_deleting(pod):
            self._pod_deleted(pod)  # a restarted controller sees pods being deleted as new ones
            return
        owner = self._owner_of(pod)
        if owner is not None:
            key = base.key_of(owner)
            self.expectations.creation_observed(key)
            self.queue.add(key)
        elif podutil.controller_ref(pod) is None:
            for candidate in self._matching_owners(pod):
                self.enqueue(candidate)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        if podutil.is_deleting(new) and not podutil.is_deleting(old):
            self._pod_deleted(new)  # graceful deletion started: it no longer counts
            return
        old_owner, new_owner = self._owner_of(old), self._owner_of(new)
        if old_owner is not None and (new_owner is None or old_owner is not new_owner):
            self.enqueue(old_owner)
        if new_owner is not None:
            self.enqueue(new_owner)
            min_ready = int((new_owner.get("spec") or {}).get("minReadySeconds") or 0)
            if min_ready and podutil.is_ready(new) and not podutil.is_ready(old):
                self.queue.add_after(base.key_of(new_owner), min_ready + 1)
        elif podutil.controller_ref(new) is None and (
            podutil.labels_of(old) != podutil.labels_of(new) or podutil.controller_ref(old) is not None
        ):
            for candidate in self._matching_owners(new):
                self.enqueue(candidate)

    def _pod_deleted(self, pod: Obj) -> None:
        owner = self._owner_of(pod)
        if owner is not None:
            key = base.key_of(owner)
            self.expectations.deletion_observed(key, store.key_of(pod))
            self.queue.add(key)

    # -- the sync -------------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        owner = self.owners.store.get(key)
        if owner is None:
            self.expectations.forget(key)
            return
        needs_sync = self.expectations.satisfied(key)
        spec = owner.get("spec") or {}
        selector = podutil.selector_of(spec)
        active = [p for p in podutil.claim_candidates(self.pods.store, owner, selector) if podutil.is_active(p)]
        pods = await podutil.claim(
            self.ctx.api, resources.PODS, owner=owner, owner_ref=self._reference(owner), candidates=active,
            selector=selector, can_adopt=lambda: self._still_there(owner),
        )  # fmt: skip
        failure: Exception | None = None
        gone: set[str] = set()
        if needs_sync and not podutil.is_deleting(owner):
            failure, gone = await self._manage(owner, key, pods)
        remaining = [p for p in pods if store.key_of(p) not in gone]
        status = self._status(owner, remaining, failure)
        await self._write_status(owner, status)
        if failure is not None:
            raise failure
        min_ready = int(spec.get("minReadySeconds") or 0)
        if min_ready and status.get("readyReplicas", 0) != status.get("availableReplicas", 0):
            self.queue.add_after(key, min_ready)

    def _reference(self, owner: Obj) -> dict[str, Any]:
        return podutil.owner_reference(owner, api_version=self.resource.api_version, kind=self.resource.kind)

    async def _still_there(self, owner: Obj) -> bool:
        md = owner["metadata"]
        try:
            fresh = await self.ctx.api.get(self.resource, md["name"], namespace=md.get("namespace"))
        except errors.ApiError as exc:
            if exc.code == 404:
                return False
            raise
        return fresh["metadata"].get("uid") == md.get("uid") and not podutil.is_deleting(fresh)

    async def _manage(self, owner: Obj, key: str, pods: list[Obj]) -> tuple[Exception | None, set[str]]:
        """Create or delete pods towards ``spec.replicas``; the error, and the pods deleted."""
        wanted = int((owner.get("spec") or {}).get("replicas", 1) or 0)
        diff = len(pods) - wanted
        if diff < 0:
            return await self._create(owner, key, min(-diff, BURST)), set()
        if diff > 0:
            return await self._delete(owner, key, sorted(pods, key=podutil.deletion_rank)[: min(diff, BURST)])
        return None, set()

    async def _create(self, owner: Obj, key: str, count: int) -> Exception | None:
        self.expectations.expect(key, adds=count)
        attempts = 0

        async def create_one() -> None:
            nonlocal attempts
            attempts += 1
            try:
                created = await self.ctx.api.create(resources.PODS, self._pod_for(owner))
            except (errors.ApiError, errors.ClientError) as exc:
                self.expectations.creation_observed(key)
                if not _terminating_namespace(exc):
                    self.ctx.recorder.warning(owner, "FailedCreate", f"Error creating: {_message(exc)}")
                raise
            self.ctx.recorder.normal(owner, "SuccessfulCreate", f"Created pod: {created['metadata']['name']}")

        done, failure = await podutil.slow_start(count, create_one)
        for _ in range(count - attempts):  # never attempted: do not wait for them
            self.expectations.creation_observed(key)
        log.debug("%s %s: created %d of %d pods", self.name, key, done, count)
        return failure

    async def _delete(self, owner: Obj, key: str, victims: list[Obj]) -> tuple[Exception | None, set[str]]:
        self.expectations.expect(key, deletes=[store.key_of(p) for p in victims])

        async def delete_one(pod: Obj) -> str:
            md = pod["metadata"]
            try:
                await self.ctx.api.delete(resources.PODS, md["name"], namespace=md["namespace"])
            except errors.ApiError as exc:
                self.expectations.deletion_observed(key, store.key_of(pod))
                if exc.code == 404:
                    return store.key_of(pod)
                self.ctx.recorder.warning(owner, "FailedDelete", f"Error deleting: {_message(exc)}")
                raise
            self.ctx.recorder.normal(owner, "SuccessfulDelete", f"Deleted pod: {md['name']}")
            return store.key_of(pod)

        results = await asyncio.gather(*(delete_one(p) for p in victims), return_exceptions=True)
        gone = {r for r in results if isinstance(r, str)}
        failures = [r for r in results if isinstance(r, BaseException)]
        for failure in failures:
            if not isinstance(failure, Exception):
                raise failure
        return (failures[0] if failures else None), gone  # type: ignore[return-value]

    def _pod_for(self, owner: Obj) -> Obj:
        """A new pod from the owner's template (upstream's ``GetPodFromTemplate``)."""
        template = (owner.get("spec") or {}).get("template") or {}
        tmd = template.get("metadata") or {}
        md = owner["metadata"]
        metadata: dict[str, Any] = {
            "generateName": f"{md['name']}-",
            "namespace": md["namespace"],
            "labels": dict(tmd.get("labels") or {}),
            "ownerReferences": [self._reference(owner)],
        }
        if tmd.get("annotations"):
            metadata["annotations"] = dict(tmd["annotations"])
        if tmd.get("finalizers"):
            metadata["finalizers"] = list(tmd["finalizers"])
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata,
            "spec": store.copy(template.get("spec") or {}),
        }

    # -- status ---------------------------------------------------------------------------------

    def _status(self, owner: Obj, pods: list[Obj], failure: Exception | None) -> Obj:
        spec = owner.get("spec") or {}
        min_ready = int(spec.get("minReadySeconds") or 0)
        template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        at = podutil.now()
        fully = sum(1 for p in pods if template_labels.items() <= podutil.labels_of(p).items())
        counts = {
            "fullyLabeledReplicas": fully,
            "readyReplicas": sum(1 for p in pods if podutil.is_ready(p)),
            "availableReplicas": sum(1 for p in pods if podutil.is_available(p, min_ready, at)),
            "observedGeneration": owner["metadata"].get("generation", 0),
        }
        status: Obj = {"replicas": len(pods), **podutil.omit_zero(counts)}
        conditions = [
            c
            for c in (owner.get("status") or {}).get("conditions") or ()
            if c.get("type") != "ReplicaFailure"
        ]
        wanted = int(spec.get("replicas", 1) or 0)
        if failure is not None and len(pods) < wanted:
            previous = podutil.condition(owner, "ReplicaFailure")
            cond = {
                "type": "ReplicaFailure",
                "status": "True",
                "reason": "FailedCreate",
                "message": _message(failure),
            }
            same = previous is not None and previous.get("status") == "True"
            cond["lastTransitionTime"] = previous["lastTransitionTime"] if same else podutil.format_time(at)
            conditions.append(cond)
        if conditions:
            status["conditions"] = conditions
        return status

    async def _write_status(self, owner: Obj, status: Obj) -> None:
        if _same_status(owner.get("status") or {}, status):
            return
        updated = {**store.copy(owner), "status": status}
        try:
            await self.ctx.api.update_status(self.resource, updated)
        except errors.ApiError as exc:
            if exc.code == 404:
                return
            if not errors.is_conflict(exc):
                raise
            md = owner["metadata"]  # one retry on a fresh copy, as upstream does
            fresh = await self.ctx.api.get(self.resource, md["name"], namespace=md["namespace"])
            if fresh["metadata"].get("uid") == md.get("uid"):
                await self.ctx.api.update_status(self.resource, {**fresh, "status": status})


def _same_status(old: Obj, new: Obj) -> bool:
    return podutil.omit_zero(old) == podutil.omit_zero(new) and old.get("replicas", 0) == new.get(
        "replicas", 0
    )


def _message(exc: BaseException) -> str:
    return exc.message if isinstance(exc, errors.ApiError) else str(exc)


def _terminating_namespace(exc: BaseException) -> bool:
    return isinstance(exc, errors.ApiError) and exc.code == 403 and "being terminated" in exc.message


def new() -> base.Controller:
    return ReplicaSetController()


def new_replication_controller() -> base.Controller:
    return ReplicaSetController(resource=resources.REPLICATIONCONTROLLERS, name="replicationcontroller")
