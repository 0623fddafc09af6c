"""What a resource is to the client: group, version, plural, scope and kind, and its URL paths.

A ``Resource`` is a small frozen value, so it can key dicts (one shared informer per
resource) and be declared once as a module constant. Paths follow the API server's layout:
``/api/v1/...`` for the core group, ``/apis/<group>/<version>/...`` for the others, then
``namespaces/<ns>/`` for namespaced resources, the plural, the name and a subresource.
The constants below are the kinds the scheduler, controllers and agent watch or write.
"""

from __future__ import annotations

import dataclasses
import urllib.parse


@dataclasses.dataclass(frozen=True, slots=True)
class Resource:
    group: str  # "" for the core group
    version: str
    plural: str
    namespaced: bool
    kind: str

    @property
    def api_version(self) -> str:
        """``v1`` for the core group, ``<group>/<version>`` otherwise (an object's ``apiVersion``)."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    def path(
        self, *, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        """The URL path of the collection (no name) or of one object (and its subresource).

        ``namespace`` is ignored for cluster-scoped resources; for namespaced ones, no namespace
        means the collection across all namespaces (lists and watches only).
        """
        parts = ["/api/v1" if not self.group else f"/apis/{self.group}/{self.version}"]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{_segment(namespace)}")
        parts.append(self.plural)
        if name is not None:  # "" is an error, never the collection: DELETE on it would delete them all
            parts.append(_segment(name))
            if subresource:
                parts.append(subresource)
        elif subresource:
            raise ValueError(f"subresource {subresource!r} of {self.plural} needs an object name")
        return "/".join(parts)

    def __str__(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


def _segment(text: str) -> str:
    if not text or text in (".", "..") or "/" in text:
        raise ValueError(f"invalid name or namespace in a path: {text!r}")
    return urllib.parse.quote(text, safe="")


def _core(plural: str, kind: str, *, namespaced: bool = True) -> Resource:
    return Resource("", "v1", plural, namespaced, kind)


# -- core/v1 --
PODS = _core("pods", "Pod")
NODES = _core("nodes", "Node", namespaced=False)
SERVICES = _core("services", "Service")
ENDPOINTS = _core("endpoints", "Endpoints")
CONFIGMAPS = _core("configmaps", "ConfigMap")
SECRETS = _core("secrets", "Secret")
SERVICEACCOUNTS = _core("serviceaccounts", "ServiceAccount")
NAMESPACES = _core("namespaces", "Namespace", namespaced=False)
EVENTS = _core("events", "Event")
RESOURCEQUOTAS = _core("resourcequotas", "ResourceQuota")
LIMITRANGES = _core("limitranges", "LimitRange")
PERSISTENTVOLUMES = _core("persistentvolumes", "PersistentVolume", namespaced=False)
PERSISTENTVOLUMECLAIMS = _core("persistentvolumeclaims", "PersistentVolumeClaim")
REPLICATIONCONTROLLERS = _core("replicationcontrollers", "ReplicationController")
# -- apps/v1 --
DEPLOYMENTS = Resource("apps", "v1", "deployments", True, "Deployment")
REPLICASETS = Resource("apps", "v1", "replicasets", True, "ReplicaSet")
DAEMONSETS = Resource("apps", "v1", "daemonsets", True, "DaemonSet")
STATEFULSETS = Resource("apps", "v1", "statefulsets", True, "StatefulSet")
CONTROLLERREVISIONS = Resource("apps", "v1", "controllerrevisions", True, "ControllerRevision")
# -- batch/v1 --
JOBS = Resource("batch", "v1", "jobs", True, "Job")
CRONJOBS = Resource("batch", "v1", "cronjobs", True, "CronJob")
# -- other groups --
LEASES = Resource("coordination.k8s.io", "v1", "leases", True, "Lease")
ENDPOINTSLICES = Resource("discovery.k8s.io", "v1", "endpointslices", True, "EndpointSlice")
EVENTS_V1 = Resource("events.k8s.io", "v1", "events", True, "Event")
PODDISRUPTIONBUDGETS = Resource("policy", "v1", "poddisruptionbudgets", True, "PodDisruptionBudget")
CLUSTERROLES = Resource("rbac.authorization.k8s.io", "v1", "clusterroles", False, "ClusterRole")
PRIORITYCLASSES = Resource("scheduling.k8s.io", "v1", "priorityclasses", False, "PriorityClass")
STORAGECLASSES = Resource("storage.k8s.io", "v1", "storageclasses", False, "StorageClass")
CUSTOMRESOURCEDEFINITIONS = Resource(
    "apiextensions.k8s.io", "v1", "customresourcedefinitions", False, "CustomResourceDefinition"
)
# -- K3s --
ADDONS = Resource("k3s.cattle.io", "v1", "addons", True, "Addon")

ALL: tuple[Resource, ...] = tuple(v for v in tuple(globals().values()) if isinstance(v, Resource))
