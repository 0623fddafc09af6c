"""The node authorizer: a kubelet touches only its own Node, Lease and pods, and what they reference."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from services.apiserver.auth import node, rbac, types

N1 = types.UserInfo(name="system:node:n1", groups=("system:nodes", "system:authenticated"))


class Pods:
    """A ``node.PodSource`` over a list of pod dicts."""

    def __init__(self, *pods: dict[str, Any]) -> None:
        self.pods = list(pods)

    async def node_of(self, namespace: str, name: str) -> str | None:
        for pod in self.pods:
            if pod["metadata"]["namespace"] == namespace and pod["metadata"]["name"] == name:
                return pod["spec"].get("nodeName") or None
        return None

    async def pods_on(self, node_name: str) -> list[Mapping[str, Any]]:
        return [p for p in self.pods if p["spec"].get("nodeName") == node_name]


def pod(name: str, node_name: str, namespace: str = "default", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}, "spec": {"nodeName": node_name, **spec}}


WEB = pod(
    "web",
    "n1",
    serviceAccountName="web-sa",
    imagePullSecrets=[{"name": "registry"}],
    volumes=[
        {"name": "cfg", "configMap": {"name": "web-config"}},
        {"name": "tls", "secret": {"secretName": "web-tls"}},
        {"name": "data", "persistentVolumeClaim": {"claimName": "web-data"}},
        {"name": "api", "projected": {"sources": [{"configMap": {"name": "kube-root-ca.crt"}},
                                                  {"serviceAccountToken": {"path": "token"}}]}},
        {"name": "csi", "csi": {"driver": "x", "nodePublishSecretRef": {"name": "csi-creds"}}},
    ],
    initContainers=[{"name": "init", "envFrom": [{"secretRef": {"name": "init-env"}}]}],
    containers=[
        {"name": "app", "env": [{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}},
                                {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "modes", "key": "m"}}}],
         "envFrom": [{"configMapRef": {"name": "env-cm"}}]},
    ],
)  # fmt: skip
OTHER = pod("db", "n2", volumes=[{"name": "s", "secret": {"secretName": "db-secret"}}])


def attrs(
    verb: str,
    resource: str,
    *,
    namespace: str = "",
    name: str = "",
    subresource: str = "",
    group: str = "",
    user: types.UserInfo = N1,
) -> types.Attributes:
    return types.Attributes(
        user=user,
        verb=verb,
        namespace=namespace,
        api_group=group,
        resource=resource,
        subresource=subresource,
        name=name,
    )


@pytest.fixture
def authz() -> node.ChainAuthorizer:
    return node.node_and_rbac(pods=Pods(WEB, OTHER), rbac_source=rbac.StaticRbacSource(rbac.default_rbac()))


async def allowed(authz: node.ChainAuthorizer, a: types.Attributes) -> bool:
    return (await authz.authorize(a)).allowed


def test_node_identity_needs_name_and_group() -> None:
    assert node.node_name(N1) == "n1"
    assert node.node_name(types.UserInfo(name="system:node:n1")) is None
    assert node.node_name(types.UserInfo(name="mallory", groups=("system:nodes",))) is None
    assert node.node_name(types.UserInfo(name="system:node:", groups=("system:nodes",))) is None


async def test_own_node_only(authz: node.ChainAuthorizer) -> None:
    assert await allowed(authz, attrs("get", "nodes", name="n2"))
    assert await allowed(authz, attrs("list", "nodes"))
    assert await allowed(authz, attrs("create", "nodes"))
    assert await allowed(authz, attrs("create", "nodes", name="n1"))
    assert await allowed(authz, attrs("patch", "nodes", name="n1", subresource="status"))
    assert await allowed(authz, attrs("update", "nodes", name="n1"))
    assert not await allowed(authz, attrs("patch", "nodes", name="n2", subresource="status"))
    assert not await allowed(authz, attrs("update", "nodes", name="n2"))
    assert not await allowed(authz, attrs("create", "nodes", name="n2"))
    assert not await allowed(authz, attrs("delete", "nodes", name="n2"))


async def test_own_lease_only(authz: node.ChainAuthorizer) -> None:
    lease = {"group": "coordination.k8s.io", "namespace": "kube-node-lease"}
    assert await allowed(authz, attrs("get", "leases", name="n1", **lease))
    assert await allowed(authz, attrs("update", "leases", name="n1", **lease))
    assert await allowed(authz, attrs("create", "leases", **lease))
    assert not await allowed(authz, attrs("update", "leases", name="n2", **lease))
    assert not await allowed(
        authz, attrs("update", "leases", name="n1", group="coordination.k8s.io", namespace="kube-system")
    )


async def test_pods_bound_to_the_node(authz: node.ChainAuthorizer) -> None:
    assert await allowed(authz, attrs("list", "pods"))
    assert await allowed(authz, attrs("watch", "pods"))
    assert await allowed(authz, attrs("get", "pods", namespace="default", name="web"))
    assert await allowed(authz, attrs("patch", "pods", namespace="default", name="web", subresource="status"))
    assert await allowed(authz, attrs("delete", "pods", namespace="default", name="web"))
    assert not await allowed(authz, attrs("get", "pods", namespace="default", name="db"))
    assert not await allowed(
        authz, attrs("patch", "pods", namespace="default", name="db", subresource="status")
    )
    assert not await allowed(authz, attrs("delete", "pods", namespace="default", name="db"))
    assert not await allowed(authz, attrs("get", "pods", namespace="default", name="missing"))
    assert not await allowed(
        authz, attrs("update", "pods", namespace="default", name="web")
    )  # spec is not the node's


async def test_get_of_a_pod_elsewhere_explains_why(authz: node.ChainAuthorizer) -> None:
    a = attrs("get", "pods", namespace="default", name="db")
    decision = await authz.authorize(a)
    assert decision == types.Decision(False, "no relationship found between node 'n1' and this object")
    assert rbac.forbidden_error(a, decision).message == (
        'pods "db" is forbidden: User "system:node:n1" cannot get resource "pods" in API group "" in the '
        "namespace \"default\": no relationship found between node 'n1' and this object"
    )


async def test_chain_joins_reasons_one_per_line() -> None:
    class Says:
        def __init__(self, reason: str) -> None:
            self.reason = reason

        async def authorize(self, attributes: types.Attributes) -> types.Decision:
            return types.Decision(False, self.reason)

    chain = node.ChainAuthorizer(Says("first"), Says(""), Says("second"))
    assert await chain.authorize(attrs("get", "pods")) == types.Decision(False, "first\nsecond")


@pytest.mark.parametrize(
    ("resource", "name"),
    [
        ("secrets", "web-tls"),
        ("secrets", "registry"),
        ("secrets", "db"),
        ("secrets", "init-env"),
        ("secrets", "csi-creds"),
        ("configmaps", "web-config"),
        ("configmaps", "kube-root-ca.crt"),
        ("configmaps", "modes"),
        ("configmaps", "env-cm"),
        ("persistentvolumeclaims", "web-data"),
    ],
)
async def test_referenced_objects_are_readable(authz: node.ChainAuthorizer, resource: str, name: str) -> None:
    assert await allowed(authz, attrs("get", resource, namespace="default", name=name))


async def test_unreferenced_secrets_are_not(authz: node.ChainAuthorizer) -> None:
    assert not await allowed(
        authz, attrs("get", "secrets", namespace="default", name="db-secret")
    )  # n2's pod
    assert not await allowed(
        authz, attrs("get", "secrets", namespace="other", name="web-tls")
    )  # wrong namespace
    assert not await allowed(
        authz, attrs("get", "secrets", namespace="default", name="web-config")
    )  # a configmap
    assert not await allowed(authz, attrs("list", "secrets", namespace="default"))
    assert not await allowed(authz, attrs("update", "secrets", namespace="default", name="web-tls"))
    assert await allowed(
        authz, attrs("watch", "secrets", namespace="default", name="web-tls")
    )  # one, by name


async def test_service_account_tokens_for_its_pods(authz: node.ChainAuthorizer) -> None:
    token = {"namespace": "default", "subresource": "token", "verb": "create", "resource": "serviceaccounts"}
    assert await allowed(authz, attrs(name="web-sa", **token))
    assert not await allowed(authz, attrs(name="default", **token))  # only OTHER (on n2) runs as default


async def test_system_node_rules_for_the_rest(authz: node.ChainAuthorizer) -> None:
    assert await allowed(authz, attrs("create", "events", namespace="default"))
    assert await allowed(authz, attrs("list", "services"))
    assert await allowed(authz, attrs("watch", "runtimeclasses", group="node.k8s.io"))
    assert await allowed(authz, attrs("get", "persistentvolumes", name="pv-1"))
    assert not await allowed(authz, attrs("create", "deployments", group="apps", namespace="default"))
    assert not await allowed(authz, attrs("list", "clusterroles", group=rbac.GROUP))


async def test_non_nodes_get_no_opinion_and_rbac_decides() -> None:
    pods = Pods(WEB)
    authz = node.NodeAuthorizer(pods)
    admin = types.UserInfo(name="system:admin", groups=("system:masters",))
    assert (
        await authz.authorize(attrs("get", "pods", namespace="default", name="web", user=admin))
        == node.NO_OPINION
    )
    chain = node.node_and_rbac(pods=pods, rbac_source=rbac.StaticRbacSource(rbac.default_rbac()))
    assert await allowed(chain, attrs("delete", "nodes", name="n1", user=admin))
    nobody = types.UserInfo(name="bob", groups=("system:authenticated",))
    decision = await chain.authorize(
        attrs("get", "secrets", namespace="default", name="web-tls", user=nobody)
    )
    assert decision == types.Decision(False, "")
    assert isinstance(chain, node.NodeThenRbac)
