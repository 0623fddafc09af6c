"""The resource registry: every kind the API server serves, as data.

Built-in kinds come from ``services.apiserver.builtin`` (generated from the
Kubernetes 1.37 type metadata plus the facts discovery needs: short names,
categories, subresources, storage prefixes, field selectors). Custom resources
are added and removed at run time when CRDs change; listeners are told so that
discovery and OpenAPI documents are rebuilt.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

# Kubernetes' storage prefixes that differ from the plural (kube-apiserver's key layout).
SPECIAL_PREFIXES = {
    ("", "nodes"): "minions",
    ("", "services"): "services/specs",
    ("", "endpoints"): "services/endpoints",
    ("", "replicationcontrollers"): "controllers",
    ("networking.k8s.io", "ingresses"): "ingress",
}
# Groups whose objects are stored without the group in the key (kube-apiserver's built-ins);
# every other group (CRDs, aggregated APIs) stores under /registry/<group>/<plural>.
UNPREFIXED_GROUPS = frozenset(
    {
        "", "apps", "batch", "autoscaling", "policy", "coordination.k8s.io", "discovery.k8s.io",
        "events.k8s.io", "networking.k8s.io", "rbac.authorization.k8s.io", "storage.k8s.io",
        "scheduling.k8s.io", "authentication.k8s.io", "authorization.k8s.io", "node.k8s.io",
        "certificates.k8s.io", "admissionregistration.k8s.io", "flowcontrol.apiserver.k8s.io",
    }
)  # fmt: skip


@dataclasses.dataclass(frozen=True, slots=True)
class ResourceInfo:
    group: str  # "" for the core group
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    verbs: tuple[str, ...]
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    # Subresources served, e.g. ("status", "scale"); pods add binding, eviction, log, exec, ...
    subresources: tuple[str, ...] = ()
    # Field selectors beyond metadata.name / metadata.namespace, e.g. ("spec.nodeName", "status.phase").
    field_selectors: tuple[str, ...] = ()
    # Not stored (reviews): create returns the evaluated object; nothing is written.
    virtual: bool = False
    # Served from a CustomResourceDefinition (JSON schema in ``schema``) rather than built in.
    custom: bool = False
    schema: dict | None = None
    printer_columns: tuple[dict, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def storage_prefix(self) -> str:
        """The etcd key prefix of this resource's objects, ending in "/"."""
        special = SPECIAL_PREFIXES.get((self.group, self.plural))
        if special:
            return f"/registry/{special}/"
        if self.group in UNPREFIXED_GROUPS:
            return f"/registry/{self.plural}/"
        return f"/registry/{self.group}/{self.plural}/"

    def key(self, namespace: str, name: str) -> str:
        if self.namespaced:
            return f"{self.storage_prefix}{namespace}/{name}"
        return f"{self.storage_prefix}{name}"

    def collection_prefix(self, namespace: str) -> str:
        """Key prefix of all objects (namespace "") or of one namespace's objects."""
        if self.namespaced and namespace:
            return f"{self.storage_prefix}{namespace}/"
        return self.storage_prefix

    @property
    def resource_group(self) -> str:
        """``pods`` or ``deployments.apps``, as error messages name a resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


Listener = Callable[[], None]


class Registry:
    """All served resources, looked up by (group, version, plural) or by (group, kind)."""

    def __init__(self, infos: Iterable[ResourceInfo] = ()) -> None:
        self._by_path: dict[tuple[str, str, str], ResourceInfo] = {}
        self._by_kind: dict[tuple[str, str], ResourceInfo] = {}
        self._preferred: dict[str, list[str]] = {}  # group -> versions, preferred first
        self._listeners: list[Listener] = []
        for info in infos:
            self._add(info)

    def on_change(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    def _add(self, info: ResourceInfo) -> None:
        self._by_path[(info.group, info.version, info.plural)] = info
        self._by_kind.setdefault((info.group, info.kind), info)
        versions = self._preferred.setdefault(info.group, [])
        if info.version not in versions:
            versions.append(info.version)

    def add(self, infos: Iterable[ResourceInfo]) -> None:
        for info in infos:
            self._add(info)
        self._changed()

    def remove(self, group: str, plural: str) -> None:
        for key in [k for k in self._by_path if k[0] == group and k[2] == plural]:
            info = self._by_path.pop(key)
            if self._by_kind.get((group, info.kind)) is info:
                del self._by_kind[(group, info.kind)]
        if not any(k[0] == group for k in self._by_path):
            self._preferred.pop(group, None)
        else:
            self._preferred[group] = [v for v in self._preferred[group] if any(
                k[0] == group and k[1] == v for k in self._by_path)]
        self._changed()

    def lookup(self, group: str, version: str, plural: str) -> ResourceInfo | None:
        return self._by_path.get((group, version, plural))

    def by_kind(self, group: str, kind: str) -> ResourceInfo | None:
        return self._by_kind.get((group, kind))

    def groups(self) -> list[tuple[str, list[str]]]:
        """(group, versions with the preferred first), core group first."""
        return sorted(self._preferred.items(), key=lambda item: (item[0] != "", 0))

    def resources(self, group: str, version: str) -> list[ResourceInfo]:
        return [info for (g, v, _), info in self._by_path.items() if g == group and v == version]

    def all(self) -> list[ResourceInfo]:
        return list(self._by_path.values())
