"""RBAC: rule matching, bindings, aggregation, the bootstrap policy and the forbidden messages."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from services.apiserver.auth import controller_roles, rbac, types

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
    # Any lease in kube-system, through the Role system::leader-locking-kube-scheduler, as upstream;
    # elsewhere only the one named in its ClusterRole.
    assert await allowed(
        authz, attrs("update", "leases", user=scheduler, namespace="kube-system", group="coordination.k8s.io",
                     name="other")
    )  # fmt: skip
    assert not await allowed(
        authz, attrs("update", "leases", user=scheduler, namespace="default", group="coordination.k8s.io",
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
    names = {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in objects}
    for name in ("cluster-admin", "admin", "edit", "view", "system:discovery", "system:basic-user",
                 "system:public-info-viewer", "system:node", "system:kube-scheduler",
                 "system:kube-controller-manager", "system:node-proxier", "system:auth-delegator",
                 "system:monitoring"):  # fmt: skip
        assert ("ClusterRole", "", name) in names, name
    roles = {name for kind, _, name in names if kind == "ClusterRole"}
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


def _objects() -> dict[tuple[str, str, str], dict[str, Any]]:
    return {
        (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in rbac.default_rbac()
    }


def test_default_rbac_has_every_upstream_default_object() -> None:
    """The names a fresh Kubernetes cluster has (upstream's bootstrappolicy testdata)."""
    objects = _objects()
    cluster_roles = {name for kind, _, name in objects if kind == "ClusterRole"}
    for name in ("system:volume-scheduler", "system:kube-dns", "system:heapster", "system:kubelet-api-admin",
                 "system:node-bootstrapper", "system:node-problem-detector", "system:kube-aggregator",
                 "system:persistent-volume-provisioner",
                 "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
                 "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
                 "system:certificates.k8s.io:kube-apiserver-client-approver",
                 "system:certificates.k8s.io:kube-apiserver-client-kubelet-approver",
                 "system:certificates.k8s.io:kubelet-serving-approver",
                 "system:certificates.k8s.io:legacy-unknown-approver"):  # fmt: skip
        assert name in cluster_roles, name
    controllers = ("attachdetach-controller", "certificate-controller", "clusterrole-aggregation-controller",
                   "cronjob-controller", "daemon-set-controller", "deployment-controller", "disruption-controller",
                   "endpoint-controller", "endpointslice-controller", "endpointslicemirroring-controller",
                   "ephemeral-volume-controller", "expand-controller", "generic-garbage-collector",
                   "horizontal-pod-autoscaler", "job-controller", "legacy-service-account-token-cleaner",
                   "namespace-controller", "node-controller", "persistent-volume-binder", "pod-garbage-collector",
                   "pv-protection-controller", "pvc-protection-controller", "replicaset-controller",
                   "replication-controller", "resourcequota-controller", "root-ca-cert-publisher",
                   "route-controller", "service-account-controller", "service-controller",
                   "statefulset-controller", "ttl-after-finished-controller", "ttl-controller",
                   "validatingadmissionpolicy-status-controller",
                   # behind feature gates that are on by default
                   "device-taint-eviction-controller", "resource-claim-controller", "selinux-warning-controller",
                   "service-cidrs-controller", "volumeattributesclass-protection-controller")  # fmt: skip
    for controller in controllers:
        assert ("ClusterRole", "", f"system:controller:{controller}") in objects, controller
        assert ("ClusterRoleBinding", "", f"system:controller:{controller}") in objects, controller
    for namespace, name in (("kube-system", "extension-apiserver-authentication-reader"),
                            ("kube-system", "system::leader-locking-kube-controller-manager"),
                            ("kube-system", "system::leader-locking-kube-scheduler"),
                            ("kube-system", "system:controller:bootstrap-signer"),
                            ("kube-system", "system:controller:cloud-provider"),
                            ("kube-system", "system:controller:token-cleaner"),
                            ("kube-public", "system:controller:bootstrap-signer")):  # fmt: skip
        assert ("Role", namespace, name) in objects, (namespace, name)
    assert ("RoleBinding", "kube-system", "system::extension-apiserver-authentication-reader") in objects


def test_every_default_object_is_labelled_and_bound_to_an_existing_role() -> None:
    objects = _objects()
    for (kind, namespace, _), obj in objects.items():
        assert obj["metadata"]["labels"]["kubernetes.io/bootstrapping"] == "rbac-defaults"
        assert obj["metadata"]["annotations"] == {"rbac.authorization.kubernetes.io/autoupdate": "true"}
        if kind.endswith("Binding"):
            ref = obj["roleRef"]
            assert (ref["kind"], namespace if ref["kind"] == "Role" else "", ref["name"]) in objects
        for rule in obj.get("rules", ()):  # stored as upstream stores them: every list sorted
            assert all(rule[key] == sorted(rule[key]) for key in rule)


# Rules copied from upstream's bootstrappolicy testdata (controller-roles.yaml, cluster-roles.yaml,
# namespace-roles.yaml), word for word.
UPSTREAM_RULES: dict[tuple[str, str], list[dict[str, Any]]] = {
    ("", "system:controller:deployment-controller"): [
        {"apiGroups": ["apps", "extensions"], "resources": ["deployments"], "verbs": ["get", "list", "update", "watch"]},
        {"apiGroups": ["apps", "extensions"], "resources": ["deployments/status"], "verbs": ["update"]},
        {"apiGroups": ["apps", "extensions"], "resources": ["deployments/finalizers"], "verbs": ["update"]},
        {"apiGroups": ["apps", "extensions"], "resources": ["replicasets"],
         "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "update", "watch"]},
        {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch", "update"]},
    ],
    ("", "system:controller:certificate-controller"): [
        {"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests"],
         "verbs": ["delete", "get", "list", "watch"]},
        {"apiGroups": ["certificates.k8s.io"],
         "resources": ["certificatesigningrequests/approval", "certificatesigningrequests/status"], "verbs": ["update"]},
        {"apiGroups": ["certificates.k8s.io"], "resourceNames": ["kubernetes.io/kube-apiserver-client-kubelet"],
         "resources": ["signers"], "verbs": ["approve"]},
        {"apiGroups": ["certificates.k8s.io"],
         "resourceNames": ["kubernetes.io/kube-apiserver-client", "kubernetes.io/kube-apiserver-client-kubelet",
                           "kubernetes.io/kubelet-serving", "kubernetes.io/legacy-unknown"],
         "resources": ["signers"], "verbs": ["sign"]},
        {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
        {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch", "update"]},
    ],
    ("", "system:controller:namespace-controller"): [
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["delete", "get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["namespaces/finalize", "namespaces/status"], "verbs": ["update"]},
        {"apiGroups": ["*"], "resources": ["*"], "verbs": ["delete", "deletecollection", "get", "list", "watch"]},
    ],
    ("", "system:kubelet-api-admin"): [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["proxy"]},
        {"apiGroups": [""], "resources": ["nodes/log", "nodes/metrics", "nodes/proxy", "nodes/stats"], "verbs": ["*"]},
    ],
    ("", "system:volume-scheduler"): [
        {"apiGroups": [""], "resources": ["persistentvolumes"], "verbs": ["get", "list", "patch", "update", "watch"]},
        {"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["persistentvolumeclaims"],
         "verbs": ["get", "list", "patch", "update", "watch"]},
    ],
    ("", "system:certificates.k8s.io:kubelet-serving-approver"): [
        {"apiGroups": ["certificates.k8s.io"], "resourceNames": ["kubernetes.io/kubelet-serving"],
         "resources": ["signers"], "verbs": ["approve"]},
    ],
    ("kube-public", "system:controller:bootstrap-signer"): [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resourceNames": ["cluster-info"], "resources": ["configmaps"], "verbs": ["update"]},
        {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch", "update"]},
    ],
    ("kube-system", "system::leader-locking-kube-scheduler"): [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "verbs": ["create", "get", "list", "update", "watch"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leasecandidates"],
         "verbs": ["create", "get", "list", "update", "watch"]},
    ],
}  # fmt: skip


@pytest.mark.parametrize(("namespace", "name"), list(UPSTREAM_RULES))
def test_rules_match_upstream_word_for_word(namespace: str, name: str) -> None:
    kind = "Role" if namespace else "ClusterRole"
    assert _objects()[(kind, namespace, name)]["rules"] == UPSTREAM_RULES[(namespace, name)]


def test_bindings_name_their_subjects_as_upstream() -> None:
    objects = _objects()

    def subjects(kind: str, name: str, namespace: str = "") -> list[dict[str, str]] | None:
        return objects[(kind, namespace, name)].get("subjects")

    sa = {"kind": "ServiceAccount", "namespace": "kube-system"}
    assert subjects("ClusterRoleBinding", "system:controller:job-controller") == [
        {**sa, "name": "job-controller"}
    ]
    assert subjects("ClusterRoleBinding", "system:kube-dns") == [{**sa, "name": "kube-dns"}]
    assert subjects("ClusterRoleBinding", "system:volume-scheduler") == [
        {"apiGroup": rbac.GROUP, "kind": "User", "name": "system:kube-scheduler"}
    ]
    assert subjects("ClusterRoleBinding", "system:node") is None  # kept, empty, as upstream
    assert subjects("RoleBinding", "system::leader-locking-kube-controller-manager", "kube-system") == [
        {"apiGroup": rbac.GROUP, "kind": "User", "name": "system:kube-controller-manager"},
        {**sa, "name": "kube-controller-manager"},
        {**sa, "name": "leader-election-controller"},
    ]
    assert subjects("RoleBinding", "system:controller:bootstrap-signer", "kube-public") == [
        {**sa, "name": "bootstrap-signer"}
    ]
    extension = objects[("RoleBinding", "kube-system", "system::extension-apiserver-authentication-reader")]
    assert extension["roleRef"]["name"] == "extension-apiserver-authentication-reader"


async def test_controller_accounts_get_their_roles_and_no_more() -> None:
    authz = authorizer()
    deployments = types.UserInfo(name=controller_roles.service_account("deployment-controller"))
    assert await allowed(authz, attrs("create", "replicasets", user=deployments, namespace="a", group="apps"))
    assert await allowed(
        authz,
        attrs("update", "deployments", user=deployments, namespace="a", group="apps", subresource="status"),
    )
    assert not await allowed(
        authz, attrs("delete", "deployments", user=deployments, namespace="a", group="apps")
    )
    assert not await allowed(authz, attrs("get", "secrets", user=deployments, namespace="a", name="s"))
    gc = types.UserInfo(name=controller_roles.service_account("generic-garbage-collector"))
    assert await allowed(
        authz, attrs("delete", "widgets", user=gc, namespace="a", group="example.com", name="w")
    )
    assert not await allowed(authz, attrs("create", "pods", user=gc, namespace="a"))
    scheduler_sa = types.UserInfo(name="system:serviceaccount:kube-system:kube-scheduler")
    leases = attrs(
        "update", "leases", user=scheduler_sa, namespace="kube-system", group="coordination.k8s.io"
    )
    assert await allowed(authz, leases)
    assert not await allowed(authz, dataclasses.replace(leases, namespace="default"))
