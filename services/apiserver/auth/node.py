"""The node authorizer: what a kubelet (user ``system:node:<name>``, group ``system:nodes``) may do.

As upstream, it grants a node the rules of the ``system:node`` ClusterRole (``rbac.NODE_RULES``),
narrowed by the node's relationship to the object, and gives no opinion on anything else (RBAC
decides next, and binds nothing to ``system:nodes`` by default):

- nodes: read any; create, update and patch only its own Node (and ``nodes/status``);
- leases: only its own Lease in ``kube-node-lease``;
- pods: list and watch (the request carries no field selector to check); ``get``, ``delete``,
  ``pods/status`` and ``pods/eviction`` only for pods bound to it; ``create`` for mirror pods;
- secrets, configmaps, persistentvolumeclaims: ``get`` (and a ``list``/``watch`` narrowed to one
  name) only when a pod bound to the node references the object: volumes (also projected sources
  and CSI/flex/etc. ``secretRef``\\s), ``env`` and ``envFrom`` of every container, and
  ``imagePullSecrets``;
- ``serviceaccounts/token``: only for a service account a pod on the node runs as;
- persistentvolumes: ``get`` of any (upstream follows pod -> claim -> volume; we do not yet);
- everything else in ``system:node`` (events, services, endpoints, CSR, runtime classes, ...).

The object's name in ``create`` requests (nodes, leases) is not known to the authorizer when the
handler leaves it empty; admission must then check the body's name against the node, as upstream's
NodeRestriction plugin does.

``ChainAuthorizer`` asks authorizers in turn (K3s runs ``--authorization-mode=Node,RBAC``, which is
``NodeThenRbac``); the first that allows wins, and a denial carries every non-empty reason, one per
line, as upstream's union authorizer does (e.g. "no relationship found between node 'n1' and this
object"), for the handler to append to the forbidden message (``rbac.forbidden_error``).

``PodSource`` is async (its implementation may have to open the pod cache first); the RBAC source
is read synchronously.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

from services.apiserver.auth import rbac, types

NODE_USER_PREFIX = "system:node:"
NODES_GROUP = "system:nodes"
NODE_LEASE_NAMESPACE = "kube-node-lease"
READ = frozenset({"get", "list", "watch"})
NO_OPINION = types.Decision(False, "")
_NODE_RULES = rbac.compile_rules(rbac.NODE_RULES)


class PodSource(Protocol):
    """Pods as the watch cache has them (plain dicts)."""

    async def node_of(self, namespace: str, name: str) -> str | None:
        """``spec.nodeName`` of the pod, or None when it does not exist or is not bound."""
        ...

    async def pods_on(self, node_name: str) -> Iterable[Mapping[str, Any]]:
        """Every pod bound to the node (e.g. the cache filtered by ``spec.nodeName``)."""
        ...


def node_name(user: types.UserInfo) -> str | None:
    """The node a user is, if it is one (both the name prefix and the group are required)."""
    if NODES_GROUP not in user.groups or not user.name.startswith(NODE_USER_PREFIX):
        return None
    return user.name.removeprefix(NODE_USER_PREFIX) or None


class NodeAuthorizer:
    def __init__(self, pods: PodSource) -> None:
        self._pods = pods

    async def authorize(self, attributes: types.Attributes) -> types.Decision:
        node = node_name(attributes.user)
        if node is None or not attributes.resource_request:
            return NO_OPINION
        check = _CHECKS.get((attributes.api_group, attributes.resource))
        if check is not None:
            return await check(self, node, attributes)
        return _allow("system:node rules") if rbac.rules_allow(_NODE_RULES, attributes) else NO_OPINION

    # -- per resource -----------------------------------------------------------------------

    async def _nodes(self, node: str, attrs: types.Attributes) -> types.Decision:
        if not rbac.rules_allow(_NODE_RULES, attrs):
            return NO_OPINION
        if attrs.verb in READ and not attrs.subresource:
            return _allow("nodes are readable by every node")
        if attrs.name == node or (attrs.verb == "create" and not attrs.name):
            return _allow("own node")
        return _deny(f'node "{node}" is not allowed to modify node "{attrs.name}"')

    async def _leases(self, node: str, attrs: types.Attributes) -> types.Decision:
        if not rbac.rules_allow(_NODE_RULES, attrs):
            return NO_OPINION
        own = attrs.name == node or (attrs.verb == "create" and not attrs.name)
        if attrs.namespace == NODE_LEASE_NAMESPACE and own:
            return _allow("own lease")
        return _deny(f'node "{node}" may only use its own lease in {NODE_LEASE_NAMESPACE}')

    async def _pods(self, node: str, attrs: types.Attributes) -> types.Decision:
        if not rbac.rules_allow(_NODE_RULES, attrs):
            return NO_OPINION
        if not attrs.subresource and attrs.verb in ("list", "watch", "create"):
            return _allow("pods may be listed, and mirror pods created, by nodes")
        if attrs.name and await self._pods.node_of(attrs.namespace, attrs.name) == node:
            return _allow("pod bound to the node")
        return _deny(_no_relationship(node))

    async def _referenced(self, node: str, attrs: types.Attributes) -> types.Decision:
        """Secrets, configmaps and claims: only those a pod on the node references, one by name."""
        if not rbac.rules_allow(_NODE_RULES, attrs):
            return NO_OPINION
        if not attrs.name:
            return _deny("can only read individual resources of this type")
        kind = _REFERENCE_KINDS[attrs.resource]
        for pod in await self._pods.pods_on(node):
            if _namespace(pod) == attrs.namespace and attrs.name in set(_references(pod, kind)):
                return _allow("referenced by a pod bound to the node")
        return _deny(_no_relationship(node))

    async def _service_accounts(self, node: str, attrs: types.Attributes) -> types.Decision:
        if attrs.subresource != "token" or attrs.verb != "create":
            return NO_OPINION
        for pod in await self._pods.pods_on(node):
            if _namespace(pod) == attrs.namespace and _service_account(pod) == attrs.name:
                return _allow("service account of a pod bound to the node")
        return _deny(_no_relationship(node))

    async def _volumes(self, node: str, attrs: types.Attributes) -> types.Decision:
        return _allow("persistent volumes are readable by nodes") if attrs.verb == "get" else NO_OPINION


_CHECKS = {
    ("", "nodes"): NodeAuthorizer._nodes,
    ("coordination.k8s.io", "leases"): NodeAuthorizer._leases,
    ("", "pods"): NodeAuthorizer._pods,
    ("", "secrets"): NodeAuthorizer._referenced,
    ("", "configmaps"): NodeAuthorizer._referenced,
    ("", "persistentvolumeclaims"): NodeAuthorizer._referenced,
    ("", "serviceaccounts"): NodeAuthorizer._service_accounts,
    ("", "persistentvolumes"): NodeAuthorizer._volumes,
}

_REFERENCE_KINDS = {"secrets": "secret", "configmaps": "configmap", "persistentvolumeclaims": "pvc"}


class ChainAuthorizer:
    """Ask each authorizer in turn; the first allow wins (``--authorization-mode=Node,RBAC``)."""

    def __init__(self, *authorizers: types.Authorizer) -> None:
        self._authorizers = authorizers

    async def authorize(self, attributes: types.Attributes) -> types.Decision:
        reasons = []
        for authorizer in self._authorizers:
            decision = await authorizer.authorize(attributes)
            if decision.allowed:
                return decision
            if decision.reason:
                reasons.append(decision.reason)
        return types.Decision(False, "\n".join(reasons))


class NodeThenRbac(ChainAuthorizer):
    """K3s's ``--authorization-mode=Node,RBAC``."""

    def __init__(self, nodes: NodeAuthorizer, rbac_authorizer: rbac.RbacAuthorizer) -> None:
        super().__init__(nodes, rbac_authorizer)


def node_and_rbac(*, pods: PodSource, rbac_source: rbac.RbacSource) -> NodeThenRbac:
    """The API server's authorizer: the node authorizer, then RBAC."""
    return NodeThenRbac(NodeAuthorizer(pods), rbac.RbacAuthorizer(rbac_source))


# -- what a pod references ------------------------------------------------------------------------


def _references(pod: Mapping[str, Any], kind: str) -> Iterator[str]:
    """Names of the secrets, configmaps or claims (``kind``) a pod uses."""
    spec = pod.get("spec") or {}
    if kind == "secret":
        yield from (ref.get("name", "") for ref in spec.get("imagePullSecrets") or ())
    for volume in spec.get("volumes") or ():
        yield from _volume_references(volume, kind)
    for container in _containers(spec):
        for env in container.get("env") or ():
            source = (env.get("valueFrom") or {}).get(f"{_KEY_REF[kind]}KeyRef") if kind in _KEY_REF else None
            if source:
                yield source.get("name", "")
        for env_from in container.get("envFrom") or ():
            source = env_from.get(f"{_KEY_REF[kind]}Ref") if kind in _KEY_REF else None
            if source:
                yield source.get("name", "")


_KEY_REF = {"secret": "secret", "configmap": "configMap"}


def _volume_references(volume: Mapping[str, Any], kind: str) -> Iterator[str]:
    if kind == "pvc":
        if claim := volume.get("persistentVolumeClaim"):
            yield claim.get("claimName", "")
        return
    if kind == "secret" and (secret := volume.get("secret")):
        yield secret.get("secretName", "")
    if kind == "configmap" and (config_map := volume.get("configMap")):
        yield config_map.get("name", "")
    for source in (volume.get("projected") or {}).get("sources") or ():
        if ref := source.get(_KEY_REF[kind]):
            yield ref.get("name", "")
    if kind == "secret":
        # Volume plugins that read credentials from a secret (csi, flexVolume, cephfs, rbd, ...).
        for plugin in volume.values():
            if isinstance(plugin, Mapping):
                for key in ("secretRef", "nodePublishSecretRef"):
                    if isinstance(ref := plugin.get(key), Mapping):
                        yield ref.get("name", "")


def _containers(spec: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from spec.get(key) or ()


def _namespace(pod: Mapping[str, Any]) -> str:
    return (pod.get("metadata") or {}).get("namespace", "")


def _service_account(pod: Mapping[str, Any]) -> str:
    spec = pod.get("spec") or {}
    return spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"


def _allow(reason: str) -> types.Decision:
    return types.Decision(True, f"node authorizer: {reason}")


def _deny(detail: str) -> types.Decision:
    return types.Decision(False, detail)


def _no_relationship(node: str) -> str:
    return f"no relationship found between node '{node}' and this object"
