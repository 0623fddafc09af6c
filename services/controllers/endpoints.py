"""Endpoints and EndpointSlices: where each Service's selected pods can be reached.

Two controllers share the pod and service informers and this module's helpers; both act only on
Services with a selector (the others' endpoints are someone else's, like ``kubernetes``'s) and
only on pods that have an IP and have not finished. A pod's port for a service port is the
``targetPort``: a number, or the name of one of the pod's container ports (a pod without it is
left out of that port).

- ``EndpointsController`` writes the ``Endpoints`` named after the Service: ``subsets`` group
  the addresses that share the same set of ports, ready pods in ``addresses`` and the others in
  ``notReadyAddresses`` (all in ``addresses`` with ``publishNotReadyAddresses``); pods being
  deleted are left out. kubectl 1.20 and older clients read these.
- ``EndpointSliceController`` writes ``discovery.k8s.io/v1`` EndpointSlices named
  ``<service>-<random>``, owned by the Service, labelled ``kubernetes.io/service-name`` and
  ``endpointslice.kubernetes.io/managed-by``: one group per address type and port set, at most
  ``max_endpoints_per_slice`` (100) endpoints each, with ``ready``, ``serving`` and
  ``terminating`` conditions, so terminating pods stay visible while they drain. A Service that
  selects no pod keeps one empty slice, as upstream does.

Slices have generated names, so a sync must not run on a cache that has not yet shown this
controller its previous writes (it would create the same slice twice): writes are remembered per
service by resourceVersion until the informer has caught up (``_Tracker``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from services.client import errors, resources, store
from services.controllers import base, podutil
from services.machinery import selectors

log = logging.getLogger(__name__)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "endpointslice-controller.k8s.io"
HEADLESS_LABEL = "service.kubernetes.io/headless"
SKIP_MIRROR_LABEL = "endpointslice.kubernetes.io/skip-mirror"
ZONE_LABEL = "topology.kubernetes.io/zone"
SERVICE_INDEX = "service-name"
MAX_ENDPOINTS_ADDRESSES = 1000  # upstream truncates an Endpoints object at this many addresses
TRACKER_PATIENCE = 30.0  # seconds a sync waits for its own writes to show before going ahead anyway

Obj = dict[str, Any]


# -- helpers shared by both ---------------------------------------------------------------------


def service_selector(svc: Obj) -> selectors.LabelSelector | None:
    selector = (svc.get("spec") or {}).get("selector")
    if not selector:
        return None
    return selectors.from_label_selector_dict({"matchLabels": selector})


def selected_pods(svc: Obj, pods: Any) -> list[Obj]:
    selector = service_selector(svc)
    if selector is None:
        return []
    namespace = svc["metadata"].get("namespace", "")
    return [p for p in pods.store.list_namespace(namespace) if selector.matches(podutil.labels_of(p))]


def servable(pod: Obj, *, include_terminating: bool) -> bool:
    if not pod_ips(pod) or podutil.is_terminal(pod):
        return False
    return include_terminating or not podutil.is_deleting(pod)


def pod_ips(pod: Obj) -> list[str]:
    status = pod.get("status") or {}
    ips = [entry.get("ip") for entry in status.get("podIPs") or () if entry.get("ip")]
    return ips or ([status["podIP"]] if status.get("podIP") else [])


def ip_for_family(pod: Obj, family: str) -> str | None:
    want_v6 = family == "IPv6"
    return next((ip for ip in pod_ips(pod) if (":" in ip) == want_v6), None)


def resolve_port(pod: Obj, port: Obj) -> int | None:
    """The pod's port for a service port: a numeric targetPort, or a named container port."""
    target = port.get("targetPort", port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    protocol = port.get("protocol", "TCP")
    for container in (pod.get("spec") or {}).get("containers") or ():
        for cport in container.get("ports") or ():
            if cport.get("name") == target and cport.get("protocol", "TCP") == protocol:
                return cport.get("containerPort")
    return None


def pod_ports(pod: Obj, svc: Obj, *, slice_form: bool) -> list[Obj]:
    ports = []
    for sp in (svc.get("spec") or {}).get("ports") or ():
        number = resolve_port(pod, sp)
        if number is None:
            continue
        port: Obj = {"port": number, "protocol": sp.get("protocol", "TCP")}
        if sp.get("name") or slice_form:
            port["name"] = sp.get("name", "")
        if sp.get("appProtocol"):
            port["appProtocol"] = sp["appProtocol"]
        ports.append(port)
    return sorted(ports, key=lambda p: (p.get("name", ""), p["port"], p["protocol"]))


def target_ref(pod: Obj) -> Obj:
    md = pod["metadata"]
    return {
        "kind": "Pod",
        "namespace": md.get("namespace", ""),
        "name": md.get("name", ""),
        "uid": md.get("uid", ""),
    }


def hostname_for(pod: Obj, svc: Obj) -> str | None:
    spec = pod.get("spec") or {}
    if spec.get("hostname") and spec.get("subdomain") == svc["metadata"]["name"]:
        return spec["hostname"]
    return None


def is_headless(svc: Obj) -> bool:
    return (svc.get("spec") or {}).get("clusterIP") == "None"


def _ports_key(ports: Iterable[Obj]) -> tuple[tuple[Any, ...], ...]:
    return tuple((p.get("name", ""), p["port"], p["protocol"], p.get("appProtocol", "")) for p in ports)


def _services_of(pod: Obj, services: Any) -> list[Obj]:
    namespace = (pod.get("metadata") or {}).get("namespace", "")
    labels = podutil.labels_of(pod)
    found = []
    for svc in services.store.list_namespace(namespace):
        selector = service_selector(svc)
        if selector is not None and selector.matches(labels):
            found.append(svc)
    return found


class _ServiceQueue(base.QueueController):
    """Keys are services; pod changes wake the services that select the pod (before or after)."""

    def _wire(self, ctx: base.ControllerContext) -> None:
        self.services = ctx.informers.informer(resources.SERVICES)
        self.pods = ctx.informers.informer(resources.PODS, indexers=podutil.INDEXERS)
        self.services.add_handlers(
            on_add=self.enqueue, on_update=lambda old, new: self.enqueue(new), on_delete=self.enqueue
        )
        self.pods.add_handlers(
            on_add=self._pod_changed, on_update=self._pod_updated, on_delete=self._pod_changed
        )

    def _pod_changed(self, pod: Obj) -> None:
        for svc in _services_of(pod, self.services):
            self.enqueue(svc)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        if podutil.labels_of(old) != podutil.labels_of(new):
            self._pod_changed(old)
        self._pod_changed(new)


# -- Endpoints ----------------------------------------------------------------------------------


def endpoint_subsets(svc: Obj, pods: list[Obj]) -> list[Obj]:
    spec = svc.get("spec") or {}
    publish = bool(spec.get("publishNotReadyAddresses"))
    family = (spec.get("ipFamilies") or ["IPv4"])[0]
    groups: dict[tuple[Any, ...], tuple[list[Obj], list[Obj], list[Obj]]] = {}
    for pod in pods:
        if not servable(pod, include_terminating=publish):
            continue
        ip = ip_for_family(pod, family)
        if ip is None:
            continue
        address: Obj = {"ip": ip, "targetRef": target_ref(pod)}
        if (pod.get("spec") or {}).get("nodeName"):
            address["nodeName"] = pod["spec"]["nodeName"]
        hostname = hostname_for(pod, svc)
        if hostname:
            address["hostname"] = hostname
        ports = pod_ports(pod, svc, slice_form=False)
        if not ports and not (is_headless(svc) and not spec.get("ports")):
            continue
        ready, not_ready, _ = groups.setdefault(_ports_key(ports), ([], [], ports))
        (ready if publish or podutil.is_ready(pod) else not_ready).append(address)
    subsets = []
    for key in sorted(groups):
        ready, not_ready, ports = groups[key]
        subset: Obj = {}
        if ready:
            subset["addresses"] = sorted(ready, key=lambda a: a["ip"])
        if not_ready:
            subset["notReadyAddresses"] = sorted(not_ready, key=lambda a: a["ip"])
        if ports:
            subset["ports"] = ports
        subsets.append(subset)
    return subsets


def _truncate(subsets: list[Obj]) -> tuple[list[Obj], bool]:
    """At most ``MAX_ENDPOINTS_ADDRESSES`` addresses, ready ones kept first, as upstream."""
    total = sum(len(s.get("addresses", ())) + len(s.get("notReadyAddresses", ())) for s in subsets)
    if total <= MAX_ENDPOINTS_ADDRESSES:
        return subsets, False
    budget = MAX_ENDPOINTS_ADDRESSES
    kept = []
    for field in ("addresses", "notReadyAddresses"):
        for subset in subsets:
            take = subset.get(field, [])[: max(0, budget)]
            budget -= len(take)
            subset[field] = take
    for subset in subsets:
        cleaned = {k: v for k, v in subset.items() if v}
        if cleaned.get("addresses") or cleaned.get("notReadyAddresses"):
            kept.append(cleaned)
    return kept, True


class EndpointsController(_ServiceQueue):
    name = "endpoints"
    workers = 5

    def setup(self, ctx: base.ControllerContext) -> None:
        super().setup(ctx)
        self._wire(ctx)
        self.endpoints = ctx.informers.informer(resources.ENDPOINTS)
        self.endpoints.add_handlers(on_update=self._endpoints_changed, on_delete=self._endpoints_gone)

    def _endpoints_changed(self, old: Obj, new: Obj) -> None:
        if self.services.store.get(store.key_of(new)) is not None:
            self.enqueue(new)

    def _endpoints_gone(self, obj: Obj) -> None:
        if self.services.store.get(store.key_of(obj)) is not None:
            self.enqueue(obj)

    async def reconcile(self, key: str) -> None:
        namespace, name = base.split_key(key)
        svc = self.services.store.get(key)
        current = self.endpoints.store.get(key)
        if svc is None:
            if current is not None:
                await self._delete(namespace, name)
            return
        if service_selector(svc) is None:
            return  # endpoints of a service without selector are managed by hand
        subsets, truncated = _truncate(endpoint_subsets(svc, selected_pods(svc, self.pods)))
        labels = dict(podutil.labels_of(svc))
        labels[SKIP_MIRROR_LABEL] = "true"
        if is_headless(svc):
            labels[HEADLESS_LABEL] = ""
        else:
            labels.pop(HEADLESS_LABEL, None)
        annotations = {"endpoints.kubernetes.io/over-capacity": "truncated"} if truncated else {}
        if current is None:
            endpoints: Obj = {"apiVersion": "v1", "kind": "Endpoints",
                              "metadata": {"name": name, "namespace": namespace, "labels": labels}}  # fmt: skip
            if annotations:
                endpoints["metadata"]["annotations"] = annotations
            if subsets:
                endpoints["subsets"] = subsets
            await self.ctx.api.create(resources.ENDPOINTS, endpoints)
            return
        current_annotations = current["metadata"].get("annotations") or {}
        same_annotations = current_annotations.get(
            "endpoints.kubernetes.io/over-capacity"
        ) == annotations.get("endpoints.kubernetes.io/over-capacity")
        if (
            (current.get("subsets") or []) == subsets
            and podutil.labels_of(current) == labels
            and same_annotations
        ):
            return
        updated = store.copy(current)
        updated["metadata"]["labels"] = labels
        kept = {k: v for k, v in current_annotations.items() if k != "endpoints.kubernetes.io/over-capacity"}
        updated["metadata"]["annotations"] = {**kept, **annotations}
        if not updated["metadata"]["annotations"]:
            updated["metadata"].pop("annotations")
        updated["subsets"] = subsets
        if not subsets:
            updated.pop("subsets")
        await self.ctx.api.update(resources.ENDPOINTS, updated)

    async def _delete(self, namespace: str, name: str) -> None:
        try:
            await self.ctx.api.delete(resources.ENDPOINTS, name, namespace=namespace)
        except errors.ApiError as exc:
            if exc.code != 404:
                raise


# -- EndpointSlices -----------------------------------------------------------------------------


def _by_service(obj: Obj) -> list[str]:
    labels = podutil.labels_of(obj)
    if labels.get(MANAGED_BY_LABEL) != MANAGED_BY or not labels.get(SERVICE_NAME_LABEL):
        return []
    return [f"{obj['metadata'].get('namespace', '')}/{labels[SERVICE_NAME_LABEL]}"]


class _Tracker:
    """Slice writes per service not yet seen in the cache: name -> resourceVersion ("" = deleted)."""

    def __init__(self) -> None:
        self._writes: dict[str, tuple[float, dict[str, str]]] = {}

    def wrote(self, key: str, name: str, resource_version: str) -> None:
        since, names = self._writes.setdefault(key, (time.monotonic(), {}))
        names[name] = resource_version

    def caught_up(self, key: str, cached: dict[str, Obj]) -> bool:
        entry = self._writes.get(key)
        if entry is None:
            return True
        since, names = entry
        for name, rv in names.items():
            obj = cached.get(name)
            if rv == "" and obj is not None:
                break
            if rv and (obj is None or int(obj["metadata"].get("resourceVersion") or 0) < int(rv)):
                break
        else:
            del self._writes[key]
            return True
        if time.monotonic() - since > TRACKER_PATIENCE:
            del self._writes[key]  # a lost event must not wedge the service
            return True
        return False

    def forget(self, key: str) -> None:
        self._writes.pop(key, None)


class EndpointSliceController(_ServiceQueue):
    name = "endpointslice"
    workers = 5

    def __init__(self) -> None:
        super().__init__()
        self.tracker = _Tracker()

    def setup(self, ctx: base.ControllerContext) -> None:
        super().setup(ctx)
        self._wire(ctx)
        self.max_per_slice = int(getattr(ctx.settings, "max_endpoints_per_slice", 100) or 100)
        self.slices = ctx.informers.informer(resources.ENDPOINTSLICES, indexers={SERVICE_INDEX: _by_service})
        self.nodes = ctx.informers.informer(resources.NODES)
        self.slices.add_handlers(
            on_add=self._slice_changed,
            on_update=lambda old, new: self._slice_changed(new),
            on_delete=self._slice_changed,
        )

    def _slice_changed(self, obj: Obj) -> None:
        for key in _by_service(obj):
            self.queue.add(key)

    async def reconcile(self, key: str) -> None:
        svc = self.services.store.get(key)
        if svc is None or service_selector(svc) is None:
            self.tracker.forget(key)
            return  # the slices are the Service's dependents: the garbage collector removes them
        existing = {s["metadata"]["name"]: s for s in self.slices.store.by_index(SERVICE_INDEX, key)}
        if not self.tracker.caught_up(key, existing):
            self.queue.add_after(key, 0.2)  # the informer will show our last writes soon
            return
        by_group: dict[tuple[Any, ...], list[Obj]] = {}
        for slc in sorted(existing.values(), key=lambda s: s["metadata"]["name"]):
            by_group.setdefault(_group_key(slc), []).append(slc)
        labels = self._labels(svc)
        for group, (ports, endpoints) in self._desired(svc).items():
            size = self.max_per_slice
            chunks = [endpoints[i : i + size] for i in range(0, len(endpoints), size)] or [[]]
            have = by_group.pop(group, [])
            for i, chunk in enumerate(chunks):
                if i < len(have):
                    await self._update(key, have[i], chunk, labels)
                else:
                    await self._create(key, svc, group[0], ports, chunk, labels)
            for extra in have[len(chunks) :]:
                await self._delete(key, extra)
        for leftovers in by_group.values():
            for extra in leftovers:
                await self._delete(key, extra)

    def _desired(self, svc: Obj) -> dict[tuple[Any, ...], tuple[list[Obj], list[Obj]]]:
        """(addressType, port set) -> (ports, endpoints); an empty placeholder when nothing is selected."""
        spec = svc.get("spec") or {}
        publish = bool(spec.get("publishNotReadyAddresses"))
        families = spec.get("ipFamilies") or ["IPv4"]
        groups: dict[tuple[Any, ...], tuple[list[Obj], list[Obj]]] = {}
        for pod in selected_pods(svc, self.pods):
            if not servable(pod, include_terminating=True):
                continue
            ports = pod_ports(pod, svc, slice_form=True)
            if not ports and spec.get("ports"):
                continue
            for family in families:
                ip = ip_for_family(pod, family)
                if ip is not None:
                    _, endpoints = groups.setdefault((family, _ports_key(ports)), (ports, []))
                    endpoints.append(self._endpoint(pod, svc, ip, publish))
        if not groups:
            groups[(families[0], ())] = ([], [])
        for _, endpoints in groups.values():
            endpoints.sort(key=lambda e: e["addresses"][0])
        return groups

    def _endpoint(self, pod: Obj, svc: Obj, ip: str, publish: bool) -> Obj:
        serving = publish or podutil.is_ready(pod)
        terminating = podutil.is_deleting(pod)
        endpoint: Obj = {
            "addresses": [ip],
            "conditions": {
                "ready": publish or (serving and not terminating),
                "serving": serving,
                "terminating": terminating,
            },
            "targetRef": target_ref(pod),
        }
        node_name = (pod.get("spec") or {}).get("nodeName")
        if node_name:
            endpoint["nodeName"] = node_name
            node = self.nodes.store.get(node_name)
            zone = podutil.labels_of(node).get(ZONE_LABEL) if node is not None else None
            if zone:
                endpoint["zone"] = zone
        hostname = hostname_for(pod, svc)
        if hostname:
            endpoint["hostname"] = hostname
        return endpoint

    def _labels(self, svc: Obj) -> dict[str, str]:
        labels = {
            k: v
            for k, v in podutil.labels_of(svc).items()
            if k not in (SERVICE_NAME_LABEL, MANAGED_BY_LABEL, HEADLESS_LABEL)
        }
        labels[SERVICE_NAME_LABEL] = svc["metadata"]["name"]
        labels[MANAGED_BY_LABEL] = MANAGED_BY
        if is_headless(svc):
            labels[HEADLESS_LABEL] = ""
        return labels

    async def _create(
        self,
        key: str,
        svc: Obj,
        address_type: str,
        ports: list[Obj],
        endpoints: list[Obj],
        labels: dict[str, str],
    ) -> None:
        md = svc["metadata"]
        slc = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "generateName": f"{md['name']}-",
                "namespace": md["namespace"],
                "labels": labels,
                "ownerReferences": [podutil.owner_reference(svc, api_version="v1", kind="Service")],
            },
            "addressType": address_type,
            "endpoints": endpoints,
            "ports": ports,
        }
        created = await self.ctx.api.create(resources.ENDPOINTSLICES, slc)
        self.tracker.wrote(key, created["metadata"]["name"], created["metadata"]["resourceVersion"])

    async def _update(self, key: str, slc: Obj, endpoints: list[Obj], labels: dict[str, str]) -> None:
        if (slc.get("endpoints") or []) == endpoints and podutil.labels_of(slc) == labels:
            return
        updated = store.copy(slc)
        updated["endpoints"] = endpoints
        updated["metadata"]["labels"] = labels
        written = await self.ctx.api.update(resources.ENDPOINTSLICES, updated)
        self.tracker.wrote(key, written["metadata"]["name"], written["metadata"]["resourceVersion"])

    async def _delete(self, key: str, slc: Obj) -> None:
        md = slc["metadata"]
        try:
            await self.ctx.api.delete(resources.ENDPOINTSLICES, md["name"], namespace=md["namespace"],
                                      preconditions={"uid": md["uid"]})  # fmt: skip
        except errors.ApiError as exc:
            if exc.code not in (404, 409):
                raise
        self.tracker.wrote(key, md["name"], "")


def _group_key(slc: Obj) -> tuple[Any, ...]:
    ports = [{**p, "protocol": p.get("protocol", "TCP")} for p in slc.get("ports") or ()]
    ports.sort(key=lambda p: (p.get("name", ""), p.get("port"), p["protocol"]))
    return (slc.get("addressType", "IPv4"), _ports_key(ports))


def new() -> base.Controller:
    return EndpointsController()


def new_endpointslice() -> base.Controller:
    return EndpointSliceController()
