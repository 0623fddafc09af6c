"""RBAC authorization over an in-memory view of Roles, ClusterRoles and their bindings.

Kubernetes' algorithm: a request is allowed when some ClusterRoleBinding, or some RoleBinding in the
request's namespace, binds a subject the user matches to a role with a rule that covers the
request; the group ``system:masters`` is always allowed. There are no deny rules.

Rule matching is upstream's: verbs, API groups and resources match exactly or by ``*``; a resource
may name a subresource (``pods/log``) and ``*/scale`` matches that subresource of anything; a rule
with ``resourceNames`` matches only requests for one of those names (so never ``create`` or
``list``); ``nonResourceURLs`` match a path exactly, or by prefix when they end in ``*``.

ClusterRoles with an ``aggregationRule`` are evaluated at lookup: their rules are the union of the
rules of every other ClusterRole whose labels match one of the selectors, recursively (``admin``
gathers ``edit``, which gathers ``view``). Upstream's aggregation controller writes the same union
into the stored object; here nothing has to run first.

The authorizer reads through ``RbacSource``, which the API server backs with its watch cache. Roles
and bindings are compiled once per ``revision()`` of the source, so a request costs a walk over the
compiled bindings and nothing more.

As upstream, a denial's ``reason`` is only the detail that follows Kubernetes' forbidden text: empty,
or ``RBAC: ...`` naming roles that bindings refer to but do not exist. ``forbidden_message`` and
``forbidden_error`` compose the whole text (``pods is forbidden: User "u" cannot list resource "pods"
in API group "" in the namespace "default"``) and the ``Status`` body kubectl prints.
``default_rbac`` is the bootstrap policy created at start.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from services.apiserver.auth import types
from services.machinery import errors

GROUP = "rbac.authorization.k8s.io"
API_VERSION = f"{GROUP}/v1"
MASTERS = "system:masters"
SA_PREFIX = "system:serviceaccount:"


class RbacSource(Protocol):
    """The RBAC objects as plain dicts (their JSON form), read synchronously from memory."""

    def revision(self) -> Hashable:
        """Changes whenever any Role, ClusterRole or binding changes (e.g. their caches' revisions).

        Compiled rules are reused while it stays the same. A source without this method still
        works, but every check then compiles the roles afresh.
        """
        ...

    def cluster_roles(self) -> Iterable[Mapping[str, Any]]: ...

    def cluster_role_bindings(self) -> Iterable[Mapping[str, Any]]: ...

    def roles(self, namespace: str) -> Iterable[Mapping[str, Any]]: ...

    def role_bindings(self, namespace: str) -> Iterable[Mapping[str, Any]]: ...


class StaticRbacSource:
    """An ``RbacSource`` over a list of objects; for tests and for serving before the cache is up."""

    _KINDS = ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")

    def __init__(self, objects: Iterable[Mapping[str, Any]] = ()) -> None:
        self._objects: dict[tuple[str, str, str], Mapping[str, Any]] = {}
        self._revision = 0
        for obj in objects:
            self.put(obj)

    def put(self, obj: Mapping[str, Any]) -> None:
        kind = obj.get("kind", "")
        if kind not in self._KINDS:
            raise ValueError(f"not an RBAC object: {kind!r}")
        meta = obj.get("metadata", {})
        self._objects[(kind, meta.get("namespace", ""), meta["name"])] = obj
        self._revision += 1

    def delete(self, kind: str, name: str, namespace: str = "") -> None:
        self._objects.pop((kind, namespace, name), None)
        self._revision += 1

    def revision(self) -> int:
        return self._revision

    def cluster_roles(self) -> list[Mapping[str, Any]]:
        return self._of("ClusterRole", "")

    def cluster_role_bindings(self) -> list[Mapping[str, Any]]:
        return self._of("ClusterRoleBinding", "")

    def roles(self, namespace: str) -> list[Mapping[str, Any]]:
        return self._of("Role", namespace)

    def role_bindings(self, namespace: str) -> list[Mapping[str, Any]]:
        return self._of("RoleBinding", namespace)

    def _of(self, kind: str, namespace: str) -> list[Mapping[str, Any]]:
        return [o for (k, ns, _), o in self._objects.items() if k == kind and ns == namespace]


# -- rules ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    verbs: frozenset[str]
    api_groups: frozenset[str] = frozenset()
    resources: frozenset[str] = frozenset()
    resource_names: frozenset[str] = frozenset()
    non_resource_urls: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, rule: Mapping[str, Any]) -> Rule:
        return cls(
            verbs=frozenset(rule.get("verbs") or ()),
            api_groups=frozenset(rule.get("apiGroups") or ()),
            resources=frozenset(rule.get("resources") or ()),
            resource_names=frozenset(rule.get("resourceNames") or ()),
            non_resource_urls=tuple(rule.get("nonResourceURLs") or ()),
        )

    def allows(self, attrs: types.Attributes) -> bool:
        if attrs.verb not in self.verbs and "*" not in self.verbs:
            return False
        if not attrs.resource_request:
            return any(_url_matches(u, attrs.path) for u in self.non_resource_urls)
        return (
            (attrs.api_group in self.api_groups or "*" in self.api_groups)
            and self._resource_matches(attrs.resource, attrs.subresource)
            and (not self.resource_names or attrs.name in self.resource_names)
        )

    def _resource_matches(self, resource: str, subresource: str) -> bool:
        if "*" in self.resources:
            return True
        if subresource:
            return f"{resource}/{subresource}" in self.resources or f"*/{subresource}" in self.resources
        return resource in self.resources


def _url_matches(pattern: str, path: str) -> bool:
    if pattern == "*" or pattern == path:
        return True
    return pattern.endswith("*") and path.startswith(pattern[:-1])


def rules_allow(rules: Iterable[Rule], attrs: types.Attributes) -> bool:
    return any(r.allows(attrs) for r in rules)


def compile_rules(rules: Iterable[Mapping[str, Any]] | None) -> tuple[Rule, ...]:
    return tuple(Rule.from_dict(r) for r in rules or ())


# -- bindings -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Subject:
    kind: str  # User, Group or ServiceAccount
    name: str
    namespace: str = ""

    def applies_to(self, user: types.UserInfo, binding_namespace: str) -> bool:
        if self.kind == "User":
            return user.name == self.name
        if self.kind == "Group":
            return self.name in user.groups
        if self.kind == "ServiceAccount":
            # A RoleBinding may leave the namespace out to mean its own.
            namespace = self.namespace or binding_namespace
            return bool(namespace) and user.name == f"{SA_PREFIX}{namespace}:{self.name}"
        return False

    def describe(self) -> str:
        return (
            f'{self.kind} "{self.namespace}/{self.name}"' if self.namespace else f'{self.kind} "{self.name}"'
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Binding:
    kind: str  # ClusterRoleBinding or RoleBinding
    name: str
    namespace: str
    subjects: tuple[Subject, ...]
    role_kind: str  # ClusterRole or Role
    role_name: str

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> Binding:
        meta = obj.get("metadata", {})
        ref = obj.get("roleRef", {})
        subjects = tuple(
            Subject(kind=s.get("kind", ""), name=s.get("name", ""), namespace=s.get("namespace", ""))
            for s in obj.get("subjects") or ()
        )
        return cls(
            kind=obj.get("kind", ""),
            name=meta.get("name", ""),
            namespace=meta.get("namespace", ""),
            subjects=subjects,
            role_kind=ref.get("kind", ""),
            role_name=ref.get("name", ""),
        )

    def subject_for(self, user: types.UserInfo) -> Subject | None:
        return next((s for s in self.subjects if s.applies_to(user, self.namespace)), None)


# -- the authorizer -----------------------------------------------------------------------------


class _Compiled:
    """One revision of the source, compiled: ClusterRole rules (aggregated) and bindings."""

    def __init__(self, source: RbacSource) -> None:
        self.source = source
        self.revision = _revision(source)
        roles = {r["metadata"]["name"]: r for r in source.cluster_roles()}
        self.cluster_rules = {name: _aggregate(name, roles, set()) for name in roles}
        self.cluster_bindings = tuple(
            Binding.from_dict(b)
            for b in source.cluster_role_bindings()
            if b.get("roleRef", {}).get("kind") == "ClusterRole"
        )
        self._namespaces: dict[str, tuple[dict[str, tuple[Rule, ...]], tuple[Binding, ...]]] = {}

    def namespace(self, namespace: str) -> tuple[dict[str, tuple[Rule, ...]], tuple[Binding, ...]]:
        compiled = self._namespaces.get(namespace)
        if compiled is None:
            roles = {
                r["metadata"]["name"]: compile_rules(r.get("rules")) for r in self.source.roles(namespace)
            }
            bindings = tuple(Binding.from_dict(b) for b in self.source.role_bindings(namespace))
            compiled = self._namespaces[namespace] = (roles, bindings)
        return compiled


class RbacAuthorizer:
    """``types.Authorizer`` implementing Kubernetes RBAC over an ``RbacSource``."""

    def __init__(self, source: RbacSource) -> None:
        self._source = source
        self._compiled: _Compiled | None = None

    async def authorize(self, attributes: types.Attributes) -> types.Decision:
        return self.check(attributes)

    def check(self, attributes: types.Attributes) -> types.Decision:
        """``authorize`` without the coroutine, for callers that are not async."""
        user = attributes.user
        if MASTERS in user.groups:
            return types.Decision(True, f'RBAC: allowed by group "{MASTERS}"')
        compiled = self._current()
        missing: list[str] = []
        for binding, rules in self._bound_rules(compiled, user, attributes.namespace, missing):
            if rules_allow(rules, attributes):
                return types.Decision(True, _allowed_reason(binding, user))
        if not missing:
            return types.Decision(False, "")
        return types.Decision(
            False, "RBAC: " + (missing[0] if len(missing) == 1 else "[" + ", ".join(missing) + "]")
        )

    def rules_for(self, user: types.UserInfo, namespace: str = "") -> list[Rule]:
        """Every rule that applies to the user in the namespace (SelfSubjectRulesReview)."""
        if MASTERS in user.groups:
            return [Rule(verbs=frozenset("*"), api_groups=frozenset("*"), resources=frozenset("*")),
                    Rule(verbs=frozenset("*"), non_resource_urls=("*",))]  # fmt: skip
        return [
            rule for _, rules in self._bound_rules(self._current(), user, namespace, []) for rule in rules
        ]

    def _current(self) -> _Compiled:
        compiled = self._compiled
        if compiled is None or compiled.revision is None or compiled.revision != _revision(self._source):
            compiled = self._compiled = _Compiled(self._source)
        return compiled

    def _bound_rules(
        self, compiled: _Compiled, user: types.UserInfo, namespace: str, missing: list[str]
    ) -> Iterable[tuple[tuple[Binding, Subject], tuple[Rule, ...]]]:
        """(binding, subject) and the rules it grants the user, cluster-wide first; notes missing roles."""
        for binding in compiled.cluster_bindings:
            subject = binding.subject_for(user)
            if subject is None:
                continue
            rules = compiled.cluster_rules.get(binding.role_name)
            if rules is None:
                missing.append(f'clusterrole.{GROUP} "{binding.role_name}" not found')
                continue
            yield (binding, subject), rules
        if not namespace:
            return
        roles, bindings = compiled.namespace(namespace)
        for binding in bindings:
            subject = binding.subject_for(user)
            if subject is None:
                continue
            if binding.role_kind == "Role":
                rules = roles.get(binding.role_name)
                what = f'role.{GROUP} "{binding.role_name}" not found'
            else:
                rules = compiled.cluster_rules.get(binding.role_name)
                what = f'clusterrole.{GROUP} "{binding.role_name}" not found'
            if rules is None:
                missing.append(what)
                continue
            yield (binding, subject), rules


def _revision(source: RbacSource) -> Hashable | None:
    revision = getattr(source, "revision", None)
    return revision() if callable(revision) else None


def _aggregate(name: str, roles: Mapping[str, Mapping[str, Any]], seen: set[str]) -> tuple[Rule, ...]:
    """A ClusterRole's effective rules: its own, or the union gathered by its aggregationRule."""
    role = roles[name]
    selectors = (role.get("aggregationRule") or {}).get("clusterRoleSelectors")
    if not selectors:
        return compile_rules(role.get("rules"))
    seen = seen | {name}  # guards against selector cycles (a gathers b gathers a)
    out: list[Rule] = []
    for other, obj in sorted(roles.items()):
        if other in seen:
            continue
        labels = (obj.get("metadata") or {}).get("labels") or {}
        if any(selector_matches(s, labels) for s in selectors):
            out.extend(r for r in _aggregate(other, roles, seen) if r not in out)
    return tuple(out)


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A metav1.LabelSelector; an empty selector matches everything."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or ():
        key, op, values = expr.get("key", ""), expr.get("operator", ""), expr.get("values") or ()
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False
    return True


def _allowed_reason(found: tuple[Binding, Subject], user: types.UserInfo) -> str:
    binding, subject = found
    where = f' in namespace "{binding.namespace}"' if binding.namespace else ""
    return (
        f'RBAC: allowed by {binding.kind} "{binding.name}"{where} of {binding.role_kind} '
        f'"{binding.role_name}" to {subject.describe()}'
    )


# -- forbidden messages -------------------------------------------------------------------------


def forbidden_message(attributes: types.Attributes, detail: str = "") -> str:
    """Kubernetes' text after ``is forbidden:``, e.g. ``User "u" cannot get resource "pods" ...``.

    ``detail`` is a denying decision's reason, appended after a colon when there is one.
    """
    user = attributes.user.name
    if not attributes.resource_request:
        message = f'User "{user}" cannot {attributes.verb} path "{attributes.path}"'
    else:
        resource = attributes.resource + (f"/{attributes.subresource}" if attributes.subresource else "")
        where = (
            f'in the namespace "{attributes.namespace}"' if attributes.namespace else "at the cluster scope"
        )
        message = (
            f'User "{user}" cannot {attributes.verb} resource "{resource}" '
            f'in API group "{attributes.api_group}" {where}'
        )
    return f"{message}: {detail}" if detail else message


def forbidden_error(attributes: types.Attributes, decision: types.Decision) -> errors.ApiError:
    """The 403 ``Status`` for a denied request, worded as kube-apiserver words it."""
    reason = forbidden_message(attributes, decision.reason)
    if not attributes.resource_request:
        return errors.forbidden(f"forbidden: {reason}")
    qualified = (
        f"{attributes.resource}.{attributes.api_group}" if attributes.api_group else attributes.resource
    )
    subject = f'{qualified} "{attributes.name}"' if attributes.name else qualified
    return errors.forbidden(
        f"{subject} is forbidden: {reason}",
        resource=attributes.resource,
        name=attributes.name,
        group=attributes.api_group,
    )


# -- the bootstrap policy -----------------------------------------------------------------------

READ = ("get", "list", "watch")
WRITE = ("create", "delete", "deletecollection", "patch", "update")
ALL = (*READ, *WRITE)
AGGREGATE_TO = "rbac.authorization.k8s.io/aggregate-to-"


def rule(
    groups: Sequence[str], resources: Sequence[str], verbs: Sequence[str], names: Sequence[str] = ()
) -> dict[str, Any]:
    """A PolicyRule; each list sorted, as upstream's ``RuleOrDie`` stores it."""
    out: dict[str, Any] = {
        "apiGroups": sorted(groups),
        "resources": sorted(resources),
        "verbs": sorted(verbs),
    }
    if names:
        out["resourceNames"] = sorted(names)
    return out


def url_rule(urls: Sequence[str], verbs: Sequence[str] = ("get",)) -> dict[str, Any]:
    return {"nonResourceURLs": sorted(urls), "verbs": sorted(verbs)}


def users(*names: str) -> list[dict[str, str]]:
    return [{"apiGroup": GROUP, "kind": "User", "name": name} for name in names]


def groups(*names: str) -> list[dict[str, str]]:
    return [{"apiGroup": GROUP, "kind": "Group", "name": name} for name in names]


def service_accounts(namespace: str, *names: str) -> list[dict[str, str]]:
    """ServiceAccount subjects carry a namespace and, as upstream writes them, no apiGroup."""
    return [{"kind": "ServiceAccount", "name": name, "namespace": namespace} for name in names]


EVENT_WRITES = [rule(["", "events.k8s.io"], ["events"], ["create", "patch", "update"])]

# What `system:node` grants; the node authorizer (node.py) applies it to kubelets, as upstream does.
NODE_RULES: list[dict[str, Any]] = [
    rule(["authentication.k8s.io"], ["tokenreviews"], ["create"]),
    rule(["authorization.k8s.io"], ["subjectaccessreviews", "localsubjectaccessreviews"], ["create"]),
    rule([""], ["services"], READ),
    rule([""], ["nodes"], ["create", "get", "list", "watch", "patch", "update"]),
    rule([""], ["nodes/status"], ["patch", "update"]),
    *EVENT_WRITES,
    rule([""], ["pods"], READ),
    rule([""], ["pods"], ["create", "delete"]),
    rule([""], ["pods/status"], ["patch", "update"]),
    rule([""], ["pods/eviction"], ["create"]),
    rule([""], ["secrets", "configmaps"], READ),
    rule([""], ["persistentvolumeclaims", "persistentvolumes"], ["get"]),
    rule([""], ["persistentvolumeclaims/status"], ["get", "patch", "update"]),
    rule([""], ["endpoints"], ["get"]),
    rule(["discovery.k8s.io"], ["endpointslices"], READ),
    rule([""], ["serviceaccounts/token"], ["create"]),
    rule(["certificates.k8s.io"], ["certificatesigningrequests"], ["create", "get", "list", "watch"]),
    rule(["coordination.k8s.io"], ["leases"], ["create", "delete", "get", "patch", "update"]),
    rule(["storage.k8s.io"], ["volumeattachments"], ["get"]),
    rule(["storage.k8s.io"], ["csidrivers"], READ),
    rule(["storage.k8s.io"], ["csinodes"], ["create", "delete", "get", "patch", "update"]),
    rule(["node.k8s.io"], ["runtimeclasses"], READ),
]

_VIEW_RULES = [
    rule([""], ["configmaps", "endpoints", "persistentvolumeclaims", "persistentvolumeclaims/status", "pods",
                "replicationcontrollers", "replicationcontrollers/scale", "serviceaccounts", "services",
                "services/status"], READ),
    rule([""], ["bindings", "events", "limitranges", "namespaces/status", "pods/log", "pods/status",
                "replicationcontrollers/status", "resourcequotas", "resourcequotas/status"], READ),
    rule([""], ["namespaces"], READ),
    rule(["discovery.k8s.io"], ["endpointslices"], READ),
    rule(["apps"], ["controllerrevisions", "daemonsets", "daemonsets/status", "deployments", "deployments/scale",
                    "deployments/status", "replicasets", "replicasets/scale", "replicasets/status", "statefulsets",
                    "statefulsets/scale", "statefulsets/status"], READ),
    rule(["autoscaling"], ["horizontalpodautoscalers", "horizontalpodautoscalers/status"], READ),
    rule(["batch"], ["cronjobs", "cronjobs/status", "jobs", "jobs/status"], READ),
    rule(["extensions"], ["daemonsets", "daemonsets/status", "deployments", "deployments/scale", "deployments/status",
                          "ingresses", "ingresses/status", "networkpolicies", "replicasets", "replicasets/scale",
                          "replicasets/status", "replicationcontrollers/scale"], READ),
    rule(["policy"], ["poddisruptionbudgets", "poddisruptionbudgets/status"], READ),
    rule(["networking.k8s.io"], ["ingresses", "ingresses/status", "networkpolicies"], READ),
]  # fmt: skip

_EDIT_RULES = [
    rule([""], ["pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "secrets", "services/proxy"], READ),
    rule([""], ["serviceaccounts"], ["impersonate"]),
    rule([""], ["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy"], WRITE),
    rule([""], ["pods/eviction"], ["create"]),
    rule([""], ["configmaps", "events", "persistentvolumeclaims", "replicationcontrollers",
                "replicationcontrollers/scale", "secrets", "serviceaccounts", "services", "services/proxy"], WRITE),
    rule([""], ["serviceaccounts/token"], ["create"]),
    rule(["apps"], ["daemonsets", "deployments", "deployments/rollback", "deployments/scale", "replicasets",
                    "replicasets/scale", "statefulsets", "statefulsets/scale"], WRITE),
    rule(["autoscaling"], ["horizontalpodautoscalers"], WRITE),
    rule(["batch"], ["cronjobs", "jobs"], WRITE),
    rule(["extensions"], ["daemonsets", "deployments", "deployments/rollback", "deployments/scale", "ingresses",
                          "networkpolicies", "replicasets", "replicasets/scale", "replicationcontrollers/scale"], WRITE),
    rule(["policy"], ["poddisruptionbudgets"], WRITE),
    rule(["networking.k8s.io"], ["ingresses", "networkpolicies"], WRITE),
    rule(["coordination.k8s.io"], ["leases"], ALL),
]  # fmt: skip

_ADMIN_RULES = [
    rule(["authorization.k8s.io"], ["localsubjectaccessreviews"], ["create"]),
    rule([GROUP], ["rolebindings", "roles"], ALL),
]

_SCHEDULER_RULES = [
    *EVENT_WRITES,
    rule(["coordination.k8s.io"], ["leases"], ["create"]),
    rule(["coordination.k8s.io"], ["leases"], ["get", "update"], ["kube-scheduler"]),
    rule([""], ["endpoints"], ["create"]),
    rule([""], ["endpoints"], ["get", "update"], ["kube-scheduler"]),
    rule([""], ["nodes"], READ),
    rule([""], ["namespaces"], READ),
    rule([""], ["pods"], ["delete", "get", "list", "watch"]),
    rule([""], ["bindings", "pods/binding"], ["create"]),
    rule([""], ["pods/status"], ["patch", "update"]),
    rule([""], ["replicationcontrollers", "services"], READ),
    rule(["apps", "extensions"], ["replicasets"], READ),
    rule(["apps"], ["statefulsets"], READ),
    rule(["policy"], ["poddisruptionbudgets"], READ),
    rule([""], ["persistentvolumeclaims", "persistentvolumes"], READ),
    rule(["authentication.k8s.io"], ["tokenreviews"], ["create"]),
    rule(["authorization.k8s.io"], ["subjectaccessreviews"], ["create"]),
    rule(["storage.k8s.io"], ["csinodes", "csidrivers", "csistoragecapacities", "storageclasses"], READ),
]

_CONTROLLER_MANAGER_RULES = [
    *EVENT_WRITES,
    rule(["coordination.k8s.io"], ["leases"], ["create"]),
    rule(["coordination.k8s.io"], ["leases"], ["get", "update"], ["kube-controller-manager"]),
    rule([""], ["endpoints"], ["create"]),
    rule([""], ["endpoints"], ["get", "update"], ["kube-controller-manager"]),
    rule([""], ["secrets", "serviceaccounts"], ["create"]),
    rule([""], ["secrets"], ["delete"]),
    rule([""], ["configmaps", "namespaces", "secrets", "serviceaccounts"], ["get"]),
    rule([""], ["secrets", "serviceaccounts"], ["update"]),
    rule(["authentication.k8s.io"], ["tokenreviews"], ["create"]),
    rule(["authorization.k8s.io"], ["subjectaccessreviews"], ["create"]),
    rule(["*"], ["*"], ["list", "watch"]),
    rule([""], ["serviceaccounts/token"], ["create"]),
    # Upstream runs each controller under its own service account, bound to its own
    # system:controller:* role (controller_roles.py creates those roles and bindings too). Ours
    # still share this one identity, so it holds the union of what they need: every object verb
    # everywhere (the namespace and garbage collectors touch every kind), but not escalate, bind
    # or impersonate.
    rule(["*"], ["*"], ALL),
]

_NODE_PROXIER_RULES = [
    rule([""], ["endpoints", "services"], READ),
    rule([""], ["nodes"], READ),
    *EVENT_WRITES,
    rule(["discovery.k8s.io"], ["endpointslices"], READ),
]

# fmt: off
_DISCOVERY_URLS = ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*",
                   "/readyz", "/version", "/version/"]
_PUBLIC_INFO_URLS = ["/healthz", "/livez", "/readyz", "/version", "/version/"]
_MONITORING_URLS = ["/healthz", "/healthz/*", "/livez", "/livez/*", "/readyz", "/readyz/*", "/metrics",
                    "/metrics/slis"]
_ISSUER_DISCOVERY_URLS = ["/.well-known/openid-configuration", "/.well-known/openid-configuration/",
                          "/openid/v1/jwks", "/openid/v1/jwks/"]
_REVIEWS = [rule(["authentication.k8s.io"], ["tokenreviews"], ["create"]),
            rule(["authorization.k8s.io"], ["subjectaccessreviews"], ["create"])]
_CERTS = "certificates.k8s.io"
_CSRS = [rule([_CERTS], ["certificatesigningrequests"], ["create", "get", "list", "watch"])]


def _approve(signer: str) -> list[dict[str, Any]]:
    return [rule([_CERTS], ["signers"], ["approve"], [f"kubernetes.io/{signer}"])]


# ClusterRoles with plain rules; the per-controller system:controller:* ones are in controller_roles.py.
_CLUSTER_ROLES: dict[str, list[dict[str, Any]]] = {
    "cluster-admin": [rule(["*"], ["*"], ["*"]), url_rule(["*"], ["*"])],
    "system:discovery": [url_rule(_DISCOVERY_URLS)],
    "system:basic-user": [
        rule(["authorization.k8s.io"], ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], ["create"]),
        rule(["authentication.k8s.io"], ["selfsubjectreviews"], ["create"]),
    ],
    "system:public-info-viewer": [url_rule(_PUBLIC_INFO_URLS)],
    "system:monitoring": [url_rule(_MONITORING_URLS)],
    "system:service-account-issuer-discovery": [url_rule(_ISSUER_DISCOVERY_URLS)],
    "system:auth-delegator": _REVIEWS,
    "system:node": NODE_RULES,  # bound to nobody: the node authorizer applies it to kubelets
    "system:node-proxier": _NODE_PROXIER_RULES,
    "system:kube-scheduler": _SCHEDULER_RULES,
    "system:kube-controller-manager": _CONTROLLER_MANAGER_RULES,
    "system:volume-scheduler": [
        rule([""], ["persistentvolumes"], ["get", "list", "watch", "update", "patch"]),
        rule(["storage.k8s.io"], ["storageclasses"], READ),
        rule([""], ["persistentvolumeclaims"], ["get", "list", "watch", "update", "patch"]),
    ],
    "system:kube-dns": [rule([""], ["endpoints", "services"], ["list", "watch"])],
    "system:kube-aggregator": [rule([""], ["services", "endpoints"], READ)],
    "system:heapster": [rule([""], ["events", "pods", "nodes", "namespaces"], READ),
                        rule(["extensions"], ["deployments"], READ)],
    "system:kubelet-api-admin": [
        rule([""], ["nodes"], READ),
        rule([""], ["nodes"], ["proxy"]),
        rule([""], ["nodes/proxy", "nodes/stats", "nodes/log", "nodes/metrics"], ["*"]),
    ],
    "system:node-bootstrapper": _CSRS,  # kubelet TLS bootstrap: request a client certificate
    "system:node-problem-detector": [
        rule([""], ["nodes"], ["get"]),
        rule([""], ["nodes/status"], ["patch"]),
        *EVENT_WRITES,
    ],
    "system:persistent-volume-provisioner": [
        rule([""], ["persistentvolumes"], ["get", "list", "watch", "create", "delete"]),
        rule([""], ["persistentvolumeclaims"], ["get", "list", "watch", "update"]),
        rule(["storage.k8s.io"], ["storageclasses"], READ),
        rule([""], ["events"], ["watch"]),
        *EVENT_WRITES,
    ],
    f"system:{_CERTS}:certificatesigningrequests:nodeclient":
        [rule([_CERTS], ["certificatesigningrequests/nodeclient"], ["create"])],
    f"system:{_CERTS}:certificatesigningrequests:selfnodeclient":
        [rule([_CERTS], ["certificatesigningrequests/selfnodeclient"], ["create"])],
    f"system:{_CERTS}:kube-apiserver-client-approver": _approve("kube-apiserver-client"),
    f"system:{_CERTS}:kube-apiserver-client-kubelet-approver": _approve("kube-apiserver-client-kubelet"),
    f"system:{_CERTS}:kubelet-serving-approver": _approve("kubelet-serving"),
    f"system:{_CERTS}:legacy-unknown-approver": _approve("legacy-unknown"),
}

# ClusterRoleBindings, each named after the ClusterRole it grants, and their subjects.
_BINDINGS: dict[str, list[dict[str, str]]] = {
    "cluster-admin": groups(MASTERS),
    "system:discovery": groups("system:authenticated"),
    "system:basic-user": groups("system:authenticated"),
    "system:public-info-viewer": groups("system:authenticated", "system:unauthenticated"),
    "system:monitoring": groups("system:monitoring"),
    "system:service-account-issuer-discovery": groups("system:serviceaccounts"),
    "system:node-proxier": users("system:kube-proxy"),
    "system:kube-scheduler": users("system:kube-scheduler"),
    "system:volume-scheduler": users("system:kube-scheduler"),
    "system:kube-controller-manager": users("system:kube-controller-manager"),
    "system:kube-dns": service_accounts("kube-system", "kube-dns"),
    # Empty since the node authorizer took over (1.7); upstream keeps the object, without subjects.
    "system:node": [],
}

# Roles in the system namespaces: namespace -> name -> rules.
_LEADER_LOCKING = [rule(["coordination.k8s.io"], ["leases"], ["get", "watch", "list", "create", "update"]),
                   rule(["coordination.k8s.io"], ["leasecandidates"], ["get", "watch", "list", "create", "update"])]
_ROLES: dict[str, dict[str, list[dict[str, Any]]]] = {
    "kube-system": {
        "extension-apiserver-authentication-reader": [
            rule([""], ["configmaps"], READ, ["extension-apiserver-authentication"])],
        "system::leader-locking-kube-controller-manager": _LEADER_LOCKING,
        "system::leader-locking-kube-scheduler": _LEADER_LOCKING,
        "system:controller:bootstrap-signer": [rule([""], ["secrets"], READ)],
        "system:controller:cloud-provider": [rule([""], ["configmaps"], ["create", "get", "list", "watch"])],
        "system:controller:token-cleaner": [rule([""], ["secrets"], ["get", "list", "watch", "delete"]),
                                            *EVENT_WRITES],
    },
    "kube-public": {
        "system:controller:bootstrap-signer": [
            rule([""], ["configmaps"], READ),
            rule([""], ["configmaps"], ["update"], ["cluster-info"]),
            *EVENT_WRITES,
        ],
    },
}

# RoleBindings: namespace -> binding name -> (Role name, subjects).
_ROLE_BINDINGS: dict[str, dict[str, tuple[str, list[dict[str, str]]]]] = {
    "kube-system": {
        "system::extension-apiserver-authentication-reader": (
            "extension-apiserver-authentication-reader",
            users("system:kube-controller-manager", "system:kube-scheduler")),
        "system::leader-locking-kube-controller-manager": (
            "system::leader-locking-kube-controller-manager",
            [*users("system:kube-controller-manager"),
             *service_accounts("kube-system", "kube-controller-manager", "leader-election-controller")]),
        "system::leader-locking-kube-scheduler": (
            "system::leader-locking-kube-scheduler",
            [*users("system:kube-scheduler"), *service_accounts("kube-system", "kube-scheduler")]),
        "system:controller:bootstrap-signer": (
            "system:controller:bootstrap-signer", service_accounts("kube-system", "bootstrap-signer")),
        "system:controller:cloud-provider": (
            "system:controller:cloud-provider", service_accounts("kube-system", "cloud-provider")),
        "system:controller:token-cleaner": (
            "system:controller:token-cleaner", service_accounts("kube-system", "token-cleaner")),
    },
    "kube-public": {
        "system:controller:bootstrap-signer": (
            "system:controller:bootstrap-signer", service_accounts("kube-system", "bootstrap-signer")),
    },
}
# fmt: on


def cluster_role(
    name: str, rules: list[dict[str, Any]], *, labels: Mapping[str, str] | None = None, aggregate: str = ""
) -> dict[str, Any]:
    role: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "ClusterRole",
        "metadata": _bootstrap_meta(name, labels),
        "rules": rules,
    }
    if aggregate:
        role["aggregationRule"] = {
            "clusterRoleSelectors": [{"matchLabels": {AGGREGATE_TO + aggregate: "true"}}]
        }
    return role


def cluster_role_binding(name: str, role: str, subjects: Sequence[Mapping[str, str]]) -> dict[str, Any]:
    """``subjects`` from ``users``, ``groups`` and ``service_accounts``; none leaves the field out."""
    binding: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "ClusterRoleBinding",
        "metadata": _bootstrap_meta(name, None),
        "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role},
    }
    if subjects:
        binding["subjects"] = [dict(s) for s in subjects]
    return binding


def namespaced_role(name: str, namespace: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Role",
        "metadata": {**_bootstrap_meta(name, None), "namespace": namespace},
        "rules": rules,
    }


def role_binding(
    name: str, namespace: str, role: str, subjects: Sequence[Mapping[str, str]]
) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "RoleBinding",
        "metadata": {**_bootstrap_meta(name, None), "namespace": namespace},
        "roleRef": {"apiGroup": GROUP, "kind": "Role", "name": role},
        "subjects": [dict(s) for s in subjects],
    }


def default_rbac() -> list[dict[str, Any]]:
    """Kubernetes' bootstrap RBAC objects, to create at start if absent.

    The ClusterRoles and ClusterRoleBindings (the per-controller ones from ``controller_roles``),
    and the Roles and RoleBindings in kube-system and kube-public. ``admin`` gathers ``edit``
    gathers ``view`` by aggregation labels, as upstream, so custom resources' roles can join them;
    their own rules live in ``system:aggregate-to-*``.
    """
    # Imported here: controller_roles builds its roles with this module's helpers.
    from services.apiserver.auth import controller_roles

    to = AGGREGATE_TO
    aggregated = [
        cluster_role("admin", [], aggregate="admin"),
        cluster_role("edit", [], labels={to + "admin": "true"}, aggregate="edit"),
        cluster_role("view", [], labels={to + "edit": "true"}, aggregate="view"),
        cluster_role("system:aggregate-to-admin", _ADMIN_RULES, labels={to + "admin": "true"}),
        cluster_role("system:aggregate-to-edit", _EDIT_RULES, labels={to + "edit": "true"}),
        cluster_role("system:aggregate-to-view", _VIEW_RULES, labels={to + "view": "true"}),
    ]
    plain = [cluster_role(name, rules) for name, rules in _CLUSTER_ROLES.items()]
    bindings = [cluster_role_binding(name, name, subjects) for name, subjects in _BINDINGS.items()]
    namespaced = [
        namespaced_role(name, namespace, rules)
        for namespace, roles in _ROLES.items()
        for name, rules in roles.items()
    ]
    namespaced_bindings = [
        role_binding(name, namespace, role, subjects)
        for namespace, bindings_ in _ROLE_BINDINGS.items()
        for name, (role, subjects) in bindings_.items()
    ]
    return [*plain, *aggregated, *bindings, *controller_roles.objects(), *namespaced, *namespaced_bindings]


def _bootstrap_meta(name: str, labels: Mapping[str, str] | None) -> dict[str, Any]:
    return {
        "name": name,
        "labels": {"kubernetes.io/bootstrapping": "rbac-defaults", **(labels or {})},
        "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
    }
