"""RBAC: rule matching, bindings, aggregation, the bootstrap policy and the forbidden messages."""

from __future__ import annotations

from typing import Any

import pytest

from services.apiserver.auth import rbac, types

ALICE = types.UserInfo(name="alice", groups=("dev", "system:authenticated"))


def attrs(
    verb: str,
    resource: str = "",
    *,
    user: types.UserInfo = ALICE,
    namespace: str = "",
    group: str = "",
    subresource: str = "",
    name: str = "",
    path: str = "",
) -> types.Attributes:
    return types.Attributes(
        user=user,
        verb=verb,
        resource_request=not path,
        namespace=namespace,
        api_group=group,
        resource=resource,
        subresource=subresource,
        name=name,
        path=path,
    )


def role(name: str, rules: list[dict[str, Any]], namespace: str = "") -> dict[str, Any]:
    kind = "Role" if namespace else "ClusterRole"
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": rbac.API_VERSION, "kind": kind, "metadata": meta, "rules": rules}


def binding(
    name: str,
    role_name: str,
    subjects: list[dict[str, str]],
    *,
    namespace: str = "",
    role_kind: str = "ClusterRole",
) -> dict[str, Any]:
    kind = "RoleBinding" if namespace else "ClusterRoleBinding"
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {
        "apiVersion": rbac.API_VERSION,
        "kind": kind,
        "metadata": meta,
        "roleRef": {"apiGroup": rbac.GROUP, "kind": role_kind, "name": role_name},
        "subjects": subjects,
    }


def user(name: str) -> dict[str, str]:
    return {"kind": "User", "name": name, "apiGroup": rbac.GROUP}


def authorizer(*objects: dict[str, Any], defaults: bool = True) -> rbac.RbacAuthorizer:
    return rbac.RbacAuthorizer(rbac.StaticRbacSource([*(rbac.default_rbac() if defaults else []), *objects]))


async def allowed(authz: rbac.RbacAuthorizer, a: types.Attributes) -> bool:
    return (await authz.authorize(a)).allowed


# -- the bootstrap roles -------------------------------------------------------------------------


async def test_view_reads_but_cannot_create() -> None:
    authz = authorizer(binding("alice-view", "view", [user("alice")], namespace="team"))
    assert await allowed(authz, attrs("list", "pods", namespace="team"))
    assert await allowed(authz, attrs("get", "deployments", namespace="team", group="apps", name="web"))
    assert await allowed(authz, attrs("get", "pods", namespace="team", subresource="log", name="web"))
    assert not await allowed(authz, attrs("create", "pods", namespace="team"))
    assert not await allowed(
        authz, attrs("delete", "deployments", namespace="team", group="apps", name="web")
    )
    assert not await allowed(authz, attrs("get", "secrets", namespace="team", name="token"))
    assert not await allowed(authz, attrs("list", "pods", namespace="other"))


async def test_edit_can_create_but_not_grant() -> None:
    authz = authorizer(binding("alice-edit", "edit", [user("alice")], namespace="team"))
    assert await allowed(authz, attrs("create", "pods", namespace="team"))
    assert await allowed(
        authz, attrs("patch", "deployments", namespace="team", group="apps", subresource="scale")
    )
    assert await allowed(authz, attrs("get", "secrets", namespace="team", name="token"))
    assert await allowed(authz, attrs("create", "pods", namespace="team", subresource="exec", name="web"))
    assert await allowed(authz, attrs("list", "pods", namespace="team"))  # gathered from view
    assert not await allowed(authz, attrs("create", "rolebindings", namespace="team", group=rbac.GROUP))


async def test_admin_gathers_edit_and_view_and_can_grant() -> None:
    authz = authorizer(binding("alice-admin", "admin", [user("alice")], namespace="team"))
    assert await allowed(authz, attrs("create", "rolebindings", namespace="team", group=rbac.GROUP))
    assert await allowed(authz, attrs("delete", "pods", namespace="team", name="x"))
    assert await allowed(authz, attrs("watch", "namespaces", namespace="team"))
    assert not await allowed(authz, attrs("create", "clusterroles", group=rbac.GROUP))


async def test_cluster_admin_through_system_masters() -> None:
    authz = authorizer()
    admin = types.UserInfo(name="system:admin", groups=("system:masters", "system:authenticated"))
    decision = await authz.authorize(attrs("delete", "nodes", user=admin, name="n1"))
    assert decision.allowed
    assert await allowed(authz, attrs("get", user=admin, path="/metrics"))


async def test_system_masters_allowed_even_without_any_policy() -> None:
    admin = types.UserInfo(name="someone", groups=("system:masters",))
    assert await allowed(
        authorizer(defaults=False), attrs("escalate", "clusterroles", user=admin, group=rbac.GROUP)
    )


async def test_discovery_for_everyone_authenticated_and_public_info_for_anonymous() -> None:
    authz = authorizer()
    assert await allowed(authz, attrs("get", path="/apis/apps/v1"))
    assert await allowed(authz, attrs("get", path="/version"))
    anonymous = types.UserInfo(name="system:anonymous", groups=("system:unauthenticated",))
    assert await allowed(authz, attrs("get", user=anonymous, path="/healthz"))
    assert not await allowed(authz, attrs("get", user=anonymous, path="/api"))
    assert not await allowed(authz, attrs("get", path="/metrics"))
    assert await allowed(authz, attrs("create", "selfsubjectaccessreviews", group="authorization.k8s.io"))


async def test_scheduler_and_controller_manager_identities() -> None:
    authz = authorizer()
    scheduler = types.UserInfo(name="system:kube-scheduler", groups=("system:authenticated",))
    assert await allowed(
        authz, attrs("create", "pods", user=scheduler, namespace="d", subresource="binding", name="p")
    )
    assert await allowed(authz, attrs("watch", "nodes", user=scheduler))
    assert not await allowed(authz, attrs("delete", "nodes", user=scheduler, name="n"))
    assert await allowed(
        authz, attrs("update", "leases", user=scheduler, namespace="kube-system", group="coordination.k8s.io",
                     name="kube-scheduler")
    )  # fmt: skip
    assert not await allowed(
        authz, attrs("update", "leases", user=scheduler, namespace="kube-system", group="coordination.k8s.io",
                     name="other")
    )  # fmt: skip
    controllers = types.UserInfo(name="system:kube-controller-manager", groups=("system:authenticated",))
    assert await allowed(authz, attrs("create", "replicasets", user=controllers, namespace="d", group="apps"))
    assert not await allowed(authz, attrs("escalate", "clusterroles", user=controllers, group=rbac.GROUP))


# -- rule matching ------------------------------------------------------------------------------------


async def test_non_resource_urls_exact_and_prefix() -> None:
    authz = authorizer(
        role("probe", [{"nonResourceURLs": ["/healthz", "/logs/*"], "verbs": ["get"]}]),
        binding("probe", "probe", [user("alice")]),
        defaults=False,
    )
    assert await allowed(authz, attrs("get", path="/healthz"))
    assert await allowed(authz, attrs("get", path="/logs/kube/a.log"))
    assert await allowed(authz, attrs("get", path="/logs/"))
    assert not await allowed(authz, attrs("get", path="/healthz/etcd"))
    assert not await allowed(authz, attrs("post", path="/healthz"))
    assert not await allowed(authz, attrs("get", "healthz"))  # a resource request never matches URLs


async def test_resource_names_limit_to_those_objects() -> None:
    authz = authorizer(
        role("one-cm", [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["app"], "verbs": ["*"]}],
             namespace="team"),
        binding("one-cm", "one-cm", [user("alice")], namespace="team", role_kind="Role"),
        defaults=False,
    )  # fmt: skip
    assert await allowed(authz, attrs("get", "configmaps", namespace="team", name="app"))
    assert await allowed(authz, attrs("update", "configmaps", namespace="team", name="app"))
    assert not await allowed(authz, attrs("get", "configmaps", namespace="team", name="other"))
    assert not await allowed(authz, attrs("list", "configmaps", namespace="team"))
    assert not await allowed(authz, attrs("create", "configmaps", namespace="team"))


async def test_subresources_and_wildcards() -> None:
    rules = [
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        {"apiGroups": ["*"], "resources": ["*/scale"], "verbs": ["update"]},
        {"apiGroups": ["batch"], "resources": ["*"], "verbs": ["list"]},
    ]
    authz = authorizer(role("r", rules), binding("r", "r", [user("alice")]), defaults=False)
    assert await allowed(authz, attrs("get", "pods", subresource="log", namespace="a", name="p"))
    assert not await allowed(authz, attrs("get", "pods", namespace="a", name="p"))
    assert not await allowed(authz, attrs("get", "pods", subresource="exec", namespace="a", name="p"))
    assert await allowed(
        authz, attrs("update", "deployments", group="apps", subresource="scale", namespace="a")
    )
    assert not await allowed(authz, attrs("update", "deployments", group="apps", namespace="a"))
    assert await allowed(authz, attrs("list", "jobs", group="batch", namespace="a"))
    assert await allowed(authz, attrs("list", "jobs", group="batch", subresource="status", namespace="a"))
    assert not await allowed(authz, attrs("list", "jobs", group="apps", namespace="a"))


async def test_subjects_groups_and_service_accounts() -> None:
    reader = role("reader", [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}])
    authz = authorizer(
        reader,
        binding("devs", "reader", [{"kind": "Group", "name": "dev", "apiGroup": rbac.GROUP}], namespace="a"),
        binding("sa", "reader", [{"kind": "ServiceAccount", "name": "builder"}], namespace="b"),
        binding(
            "sa-other",
            "reader",
            [{"kind": "ServiceAccount", "name": "ci", "namespace": "tools"}],
            namespace="c",
        ),
        defaults=False,
    )
    assert await allowed(authz, attrs("get", "pods", namespace="a", name="p"))
    assert not await allowed(authz, attrs("get", "pods", namespace="b", name="p"))
    builder = types.UserInfo(name="system:serviceaccount:b:builder")
    assert await allowed(authz, attrs("get", "pods", user=builder, namespace="b", name="p"))
    other_builder = types.UserInfo(name="system:serviceaccount:x:builder")
    assert not await allowed(authz, attrs("get", "pods", user=other_builder, namespace="b", name="p"))
    ci = types.UserInfo(name="system:serviceaccount:tools:ci")
    assert await allowed(authz, attrs("get", "pods", user=ci, namespace="c", name="p"))


async def test_aggregation_picks_up_new_roles_at_once() -> None:
    source = rbac.StaticRbacSource(
        [
            *rbac.default_rbac(),
            binding("alice-view", "view", [user("alice")], namespace="team"),
        ]
    )
    authz = rbac.RbacAuthorizer(source)
    widgets = attrs("list", "widgets", group="example.com", namespace="team")
    assert not await allowed(authz, widgets)
    crd_viewer = role(
        "widgets-view", [{"apiGroups": ["example.com"], "resources": ["widgets"], "verbs": ["list"]}]
    )
    crd_viewer["metadata"]["labels"] = {"rbac.authorization.k8s.io/aggregate-to-view": "true"}
    source.put(crd_viewer)
    assert await allowed(authz, widgets)
    source.delete("ClusterRole", "widgets-view")
    assert not await allowed(authz, widgets)


async def test_aggregation_match_expressions_and_cycles() -> None:
    a = role("a", [])
    a["aggregationRule"] = {"clusterRoleSelectors": [{"matchExpressions": [{"key": "tier", "operator": "In", "values": ["x"]}]}]}  # fmt: skip
    a["metadata"]["labels"] = {"tier": "x"}
    b = role("b", [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}])
    b["metadata"]["labels"] = {"tier": "x"}
    authz = authorizer(a, b, binding("a", "a", [user("alice")]), defaults=False)
    assert await allowed(authz, attrs("get", "pods", namespace="n", name="p"))
    assert rbac.selector_matches({"matchExpressions": [{"key": "t", "operator": "DoesNotExist"}]}, {})
    assert not rbac.selector_matches({"matchExpressions": [{"key": "t", "operator": "Exists"}]}, {})
    assert not rbac.selector_matches({"matchExpressions": [{"key": "t", "operator": "Bogus"}]}, {"t": "1"})


# -- messages ------------------------------------------------------------------------------------


async def test_deny_has_no_reason_and_the_message_is_kubernetes_text() -> None:
    authz = authorizer()
    listing = attrs("list", "pods", namespace="default")
    assert await authz.authorize(listing) == types.Decision(False, "")
    assert rbac.forbidden_message(listing) == (
        'User "alice" cannot list resource "pods" in API group "" in the namespace "default"'
    )
    cluster = attrs("create", "deployments", group="apps", subresource="scale")
    assert rbac.forbidden_message(cluster, "why") == (
        'User "alice" cannot create resource "deployments/scale" in API group "apps" at the cluster scope: why'
    )
    assert rbac.forbidden_message(attrs("get", path="/metrics")) == 'User "alice" cannot get path "/metrics"'


async def test_missing_role_is_named_in_the_reason() -> None:
    authz = authorizer(binding("dangling", "nope", [user("alice")], namespace="team"), defaults=False)
    decision = await authz.authorize(attrs("get", "pods", namespace="team", name="p"))
    assert decision == types.Decision(False, 'RBAC: clusterrole.rbac.authorization.k8s.io "nope" not found')
    authz = authorizer(
        binding("a", "nope", [user("alice")], namespace="team"),
        binding("b", "gone", [user("alice")], namespace="team", role_kind="Role"),
        defaults=False,
    )
    decision = await authz.authorize(attrs("get", "pods", namespace="team", name="p"))
    assert decision.reason == (
        'RBAC: [clusterrole.rbac.authorization.k8s.io "nope" not found, role.rbac.authorization.k8s.io "gone" not found]'
    )


async def test_allow_reason_names_the_binding() -> None:
    authz = authorizer(binding("alice-view", "view", [user("alice")], namespace="team"))
    decision = await authz.authorize(attrs("get", "pods", namespace="team", name="p"))
    assert decision.reason == (
        'RBAC: allowed by RoleBinding "alice-view" in namespace "team" of ClusterRole "view" to User "alice"'
    )


def test_forbidden_error_status() -> None:
    a = attrs("get", "deployments", group="apps", namespace="team", name="web")
    status = rbac.forbidden_error(a, types.Decision(False, "")).status()
    assert status["code"] == 403 and status["reason"] == "Forbidden"
    assert status["message"] == (
        'deployments.apps "web" is forbidden: User "alice" cannot get resource "deployments" in API group "apps" '
        'in the namespace "team"'
    )
    assert status["details"] == {"name": "web", "group": "apps", "kind": "deployments"}
    listing = rbac.forbidden_error(attrs("list", "pods", namespace="a"), types.Decision(False, ""))
    assert listing.message.startswith('pods is forbidden: User "alice" cannot list resource "pods"')
    url = rbac.forbidden_error(attrs("get", path="/x"), types.Decision(False, ""))
    assert url.message == 'forbidden: User "alice" cannot get path "/x"'
    detailed = rbac.forbidden_error(
        attrs("get", "pods", namespace="a", name="p"), types.Decision(False, "RBAC: x")
    )
    assert detailed.message.endswith('in the namespace "a": RBAC: x')


async def test_source_without_revision_still_sees_changes() -> None:
    class Plain:
        def __init__(self) -> None:
            self.bindings: list[dict[str, Any]] = []

        def cluster_roles(self) -> list[dict[str, Any]]:
            return [o for o in rbac.default_rbac() if o["kind"] == "ClusterRole"]

        def cluster_role_bindings(self) -> list[dict[str, Any]]:
            return self.bindings

        def roles(self, namespace: str) -> list[dict[str, Any]]:
            return []

        def role_bindings(self, namespace: str) -> list[dict[str, Any]]:
            return []

    source = Plain()
    authz = rbac.RbacAuthorizer(source)
    assert not await allowed(authz, attrs("list", "pods"))
    source.bindings.append(binding("alice-view", "view", [user("alice")]))
    assert await allowed(authz, attrs("list", "pods"))


# -- the policy itself --------------------------------------------------------------------------------


def test_default_rbac_objects_are_well_formed() -> None:
    objects = rbac.default_rbac()
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for name in ("cluster-admin", "admin", "edit", "view", "system:discovery", "system:basic-user",
                 "system:public-info-viewer", "system:node", "system:kube-scheduler",
                 "system:kube-controller-manager", "system:node-proxier", "system:auth-delegator",
                 "system:monitoring"):  # fmt: skip
        assert ("ClusterRole", name) in names, name
    roles = {name for kind, name in names if kind == "ClusterRole"}
    for obj in objects:
        assert obj["apiVersion"] == "rbac.authorization.k8s.io/v1"
        assert obj["metadata"]["annotations"] == {"rbac.authorization.kubernetes.io/autoupdate": "true"}
        if obj["kind"] == "ClusterRoleBinding":
            assert obj["roleRef"]["name"] in roles
    assert len(names) == len(objects)


@pytest.mark.parametrize(
    ("verb", "resource", "ok"), [("get", "pods", True), ("list", "secrets", True), ("create", "pods", False)]
)
def test_rules_for_lists_what_applies(verb: str, resource: str, ok: bool) -> None:
    authz = authorizer(binding("alice-edit", "view", [user("alice")], namespace="team"),
                       binding("alice-secrets", "secret-reader", [user("alice")], namespace="team"),
                       role("secret-reader", [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}]))  # fmt: skip
    rules = authz.rules_for(ALICE, "team")
    assert rbac.rules_allow(rules, attrs(verb, resource, namespace="team")) is ok
