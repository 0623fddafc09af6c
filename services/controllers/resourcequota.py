"""The resource quota controller: ``status.used`` of every ResourceQuota, from the caches.

For each quota, ``status.hard`` mirrors ``spec.hard`` and ``status.used`` holds, for each of
its keys, what the namespace uses now:

- object counts: ``pods``, ``services``, ``services.loadbalancers``, ``services.nodeports``,
  ``configmaps``, ``secrets``, ``persistentvolumeclaims``, ``replicationcontrollers``,
  ``resourcequotas``, and ``count/<plural>[.<group>]`` for the built-in kinds the client
  knows (custom resources are not counted);
- pod compute: ``requests.<r>`` / ``<r>`` and ``limits.<r>`` for cpu, memory,
  ephemeral-storage and extended resources, summed over pods that have not finished, each
  pod counting ``max(sum of containers, largest init container) + overhead`` as upstream's
  evaluator does (a missing request falls back to the limit, as the API defaults it);
- storage: ``requests.storage`` and the ``<class>.storageclass.storage.k8s.io/...`` forms.

A scoped quota (``spec.scopes``, ``spec.scopeSelector``: Terminating, NotTerminating, BestEffort,
NotBestEffort, PriorityClass, CrossNamespacePodAffinity) counts only the pods its scopes match, by
the rules admission applies too (``services.machinery.quotascope``); objects of other kinds match
no scope, so its other keys stay at 0, as upstream's object-count evaluators leave them. Sums keep the format of the first
quantity added and print canonically, so two pods of ``128Mi`` use ``256Mi`` and two of
``500m`` use ``1``.

Informers for secrets, config maps and other counted kinds are opened lazily, the first time
a quota names them: a cluster without quotas on secrets never caches its secrets here.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from typing import Any

from services.client import informer as informer_
from services.client import resources, store
from services.client.resources import Resource
from services.controllers import base, podutil
from services.machinery import quantity, quotascope

log = logging.getLogger(__name__)

STORAGE_CLASS_SUFFIX = ".storageclass.storage.k8s.io/"
POD_COMPUTE = ("cpu", "memory", "ephemeral-storage")
COUNTED = {  # standard names -> the resource whose objects they count or sum
    "pods": resources.PODS,
    "services": resources.SERVICES,
    "services.loadbalancers": resources.SERVICES,
    "services.nodeports": resources.SERVICES,
    "configmaps": resources.CONFIGMAPS,
    "secrets": resources.SECRETS,
    "persistentvolumeclaims": resources.PERSISTENTVOLUMECLAIMS,
    "requests.storage": resources.PERSISTENTVOLUMECLAIMS,
    "replicationcontrollers": resources.REPLICATIONCONTROLLERS,
    "resourcequotas": resources.RESOURCEQUOTAS,
}


# -- quantities --------------------------------------------------------------------------------


class Quantity:
    """An exact quantity that remembers how it was written (binary or decimal suffixes)."""

    __slots__ = ("binary", "value")

    def __init__(self, value: Fraction = Fraction(0), *, binary: bool = False) -> None:
        self.value = value
        self.binary = binary

    @classmethod
    def parse(cls, text: Any) -> Quantity:
        try:
            return cls(quantity.parse(text), binary=quantity.is_binary(text))
        except quantity.QuantityError as exc:
            raise ValueError(str(exc)) from None

    def add(self, other: Quantity) -> None:
        if self.value == 0 and other.value != 0:
            self.binary = other.binary  # the first quantity added sets the format
        self.value += other.value

    def __str__(self) -> str:
        return quantity.format(self.value, binary=self.binary)


def total(values: list[Any]) -> Quantity:
    summed = Quantity()
    for value in values:
        try:
            summed.add(Quantity.parse(value))
        except ValueError:
            continue  # the API server validated it; never fail a whole quota on one value
    return summed


# -- what pods use -----------------------------------------------------------------------------


def pod_amounts(pod: dict[str, Any], kind: str, resource: str) -> Quantity:
    """A pod's ``requests`` or ``limits`` of one resource (upstream's ``PodRequests``)."""
    spec = pod.get("spec") or {}

    def of(container: dict[str, Any]) -> Quantity:
        res = container.get("resources") or {}
        value = (res.get(kind) or {}).get(resource)
        if value is None and kind == "requests":
            value = (res.get("limits") or {}).get(resource)
        return total([value] if value is not None else [])

    summed = Quantity()
    for container in spec.get("containers") or ():
        summed.add(of(container))
    for container in spec.get("initContainers") or ():
        needed = of(container)
        if needed.value > summed.value:
            summed = needed
    overhead = (spec.get("overhead") or {}).get(resource)
    if overhead is not None:
        summed.add(total([overhead]))
    return summed


def count_resource(name: str) -> Resource | None:
    """The resource ``count/<plural>[.<group>]`` names, among the kinds the client knows."""
    plural, _, group = name.removeprefix("count/").partition(".")
    return next((r for r in resources.ALL if r.plural == plural and r.group == group and r.namespaced), None)


def watched_resource(name: str) -> Resource | None:
    if name.startswith("count/"):
        return count_resource(name)
    if STORAGE_CLASS_SUFFIX in name:
        return resources.PERSISTENTVOLUMECLAIMS
    return COUNTED.get(name)


class ResourceQuotaController(base.QueueController):
    name = "resourcequota"
    workers = 2

    def setup(self, ctx: base.ControllerContext) -> None:
        super().setup(ctx)
        self.quotas = ctx.informers.informer(resources.RESOURCEQUOTAS)
        self.quotas.add_handlers(on_add=self._quota_changed, on_update=lambda _o, n: self._quota_changed(n),
                                 on_delete=lambda q: self._namespace_changed(q))  # fmt: skip
        self.watched: dict[Resource, informer_.Informer] = {resources.RESOURCEQUOTAS: self.quotas}
        self._watch(resources.PODS)

    def _watch(self, resource: Resource) -> informer_.Informer:
        found = self.watched.get(resource)
        if found is None:
            assert self.ctx is not None
            found = self.watched[resource] = self.ctx.informers.informer(resource)
            update = (
                self._pod_updated if resource == resources.PODS else lambda _o, n: self._namespace_changed(n)
            )
            found.add_handlers(
                on_add=self._namespace_changed, on_update=update, on_delete=self._namespace_changed
            )
        return found

    # -- handlers ------------------------------------------------------------------------------

    def _quota_changed(self, quota: dict[str, Any]) -> None:
        self.enqueue(quota)

    def _namespace_changed(self, obj: dict[str, Any]) -> None:
        for quota in self.quotas.store.list_namespace(obj["metadata"].get("namespace", "")):
            self.enqueue(quota)

    def _pod_updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        # Status churn (readiness, IPs) does not change usage; finishing or being deleted does.
        if (podutil.is_terminal(old), podutil.is_deleting(old), old.get("spec")) != (
            podutil.is_terminal(new), podutil.is_deleting(new), new.get("spec")
        ):  # fmt: skip
            self._namespace_changed(new)

    # -- reconcile -----------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        quota = self.quotas.store.get(key)
        if quota is None or podutil.is_deleting(quota):
            return
        assert self.ctx is not None
        hard = dict((quota.get("spec") or {}).get("hard") or {})
        missing = [r for name in hard if (r := watched_resource(name)) is not None and r not in self.watched]
        if missing:
            for resource in missing:
                self._watch(resource)
            await self.ctx.informers.start()  # the new informers sync; their adds queue us again
        namespace = quota["metadata"]["namespace"]
        used = {name: str(self.usage(quota, name, namespace)) for name in hard}
        status = {**(quota.get("status") or {}), "hard": hard, "used": used}
        if status != (quota.get("status") or {}):
            changed = store.copy(quota)
            changed["status"] = status
            await self.ctx.api.update_status(resources.RESOURCEQUOTAS, changed)

    def _objects(self, resource: Resource, namespace: str) -> list[dict[str, Any]]:
        informer = self.watched.get(resource)
        return informer.store.list_namespace(namespace) if informer is not None else []

    def usage(self, quota: dict[str, Any], name: str, namespace: str) -> Quantity:
        scoped = (resources.PODS, resources.PERSISTENTVOLUMECLAIMS)
        if quotascope.is_scoped(quota.get("spec") or {}) and watched_resource(name) not in (None, *scoped):
            return Quantity()  # scopes match pods and claims only
        if name.startswith("count/") or name in ("pods", "configmaps", "secrets", "replicationcontrollers",
                                                 "resourcequotas", "services", "persistentvolumeclaims"):  # fmt: skip
            resource = watched_resource(name)
            if resource is None:
                return Quantity()
            objects = self._objects(resource, namespace)
            if resource == resources.PODS:
                objects = self._pods(quota, namespace)
            elif resource == resources.PERSISTENTVOLUMECLAIMS:
                objects = self._claimed(quota, namespace)
            return Quantity(Fraction(len(objects)))
        if name.startswith("services."):
            return self._services(name, namespace)
        if name == "requests.storage" or STORAGE_CLASS_SUFFIX in name:
            return self._claims(quota, name, namespace)
        kind, _, resource_name = name.partition(".")
        if kind not in ("requests", "limits") or not resource_name:
            kind, resource_name = "requests", name  # "cpu" is "requests.cpu"
        summed = Quantity()
        for pod in self._pods(quota, namespace):
            summed.add(pod_amounts(pod, kind, resource_name))
        return summed

    def _pods(self, quota: dict[str, Any], namespace: str) -> list[dict[str, Any]]:
        return [
            p
            for p in self._objects(resources.PODS, namespace)
            if not podutil.is_terminal(p) and quotascope.covers(quota.get("spec") or {}, p, is_pod=True)
        ]

    def _services(self, name: str, namespace: str) -> Quantity:
        count = 0
        for service in self._objects(resources.SERVICES, namespace):
            spec = service.get("spec") or {}
            kind = spec.get("type", "ClusterIP")
            if name == "services.loadbalancers":
                count += kind == "LoadBalancer"
            elif name == "services.nodeports" and kind in ("NodePort", "LoadBalancer"):
                count += len(spec.get("ports") or ())
        return Quantity(Fraction(count))

    def _claimed(self, quota: dict[str, Any], namespace: str) -> list[dict[str, Any]]:
        spec = quota.get("spec") or {}
        claims = self._objects(resources.PERSISTENTVOLUMECLAIMS, namespace)
        return [c for c in claims if quotascope.covers(spec, c, is_pod=False, is_claim=True)]

    def _claims(self, quota: dict[str, Any], name: str, namespace: str) -> Quantity:
        claims = self._claimed(quota, namespace)
        if STORAGE_CLASS_SUFFIX in name:
            storage_class, _, name = name.partition(STORAGE_CLASS_SUFFIX)
            claims = [c for c in claims if (c.get("spec") or {}).get("storageClassName") == storage_class]
            if name == "persistentvolumeclaims":
                return Quantity(Fraction(len(claims)))
        requests = [
            (((c.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage")
            for c in claims
        ]
        return total([r for r in requests if r is not None])


def new() -> base.Controller:
    return ResourceQuotaController()
