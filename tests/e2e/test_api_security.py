"""Authentication and authorization at the API server's port, as clients meet them.

Runs against both the ``server`` profile (the API server in its own process) and the ``edge``
profile (everything in one process): the fold must not change who may do what. Requests are made
with httpx, so each test controls exactly which credentials go out: none, a client certificate
signed by the cluster's client CA (CN = user, O = groups), or a bearer token.
"""

from __future__ import annotations

import json
import ssl
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from supervisor import pki

if TYPE_CHECKING:
    from tests.e2e.apiserver_fixtures import Cluster, Kubectl

pytest_plugins = ["tests.e2e.apiserver_fixtures"]  # the cluster, kubectl and client fixtures


def unique() -> str:
    """A short random suffix: names that no other test (or earlier run on the cluster) uses."""
    return uuid.uuid4().hex[:8]


pytestmark = pytest.mark.parametrize("cluster", ["server", "edge"], indirect=True)

PUBLIC_HEALTH = ["/healthz", "/livez", "/readyz"]
PROTECTED = [
    "/api",
    "/apis",
    "/api/v1/pods",
    "/api/v1/namespaces/default/configmaps",
    "/apis/apps/v1/deployments",
    "/openapi/v3",
    "/openapi/v2",
    "/metrics",
    "/api/v1/namespaces/kube-system/secrets",
]


@pytest.fixture
def anonymous(cluster: Cluster) -> Iterator[httpx.Client]:
    with cluster.http(None) as client:
        yield client


def as_user(cluster: Cluster, name: str, *groups: str) -> httpx.Client:
    return cluster.http(cluster.issue_user(name, groups))


def assert_status(response: httpx.Response, code: int, reason: str) -> dict[str, Any]:
    assert response.status_code == code, f"{response.request.method} {response.request.url}: {response.text}"
    body = response.json()
    assert (body["kind"], body["apiVersion"], body["status"]) == ("Status", "v1", "Failure"), body
    assert (body["code"], body["reason"]) == (code, reason), body
    return body


def pod(name: str, node: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": "busybox:1.36"}]},
    }


# -- anonymous ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PROTECTED)
def test_no_credentials_is_401(anonymous: httpx.Client, path: str) -> None:
    assert_status(anonymous.get(path), 401, "Unauthorized")


def test_no_credentials_cannot_write(anonymous: httpx.Client) -> None:
    response = anonymous.post("/api/v1/namespaces/default/configmaps", json={"metadata": {"name": "anon"}})
    assert_status(response, 401, "Unauthorized")
    assert_status(anonymous.delete("/api/v1/namespaces/default/services/kubernetes"), 401, "Unauthorized")


@pytest.mark.parametrize("path", PUBLIC_HEALTH)
def test_health_is_public(anonymous: httpx.Client, path: str) -> None:
    response = anonymous.get(path)
    assert response.status_code == 200 and response.text == "ok"


def test_version_is_public(anonymous: httpx.Client) -> None:
    response = anonymous.get("/version")
    assert response.status_code == 200
    version = response.json()
    assert version["major"] == "1" and version["gitVersion"].startswith("v1.")
    assert {"minor", "gitCommit", "gitTreeState", "buildDate", "goVersion", "compiler", "platform"} <= set(
        version
    )


def test_cacerts_is_public_and_is_the_server_ca(cluster: Cluster, anonymous: httpx.Client) -> None:
    """K3s's /cacerts: agents fetch it before they have credentials, and check it against the token."""
    response = anonymous.get("/cacerts")
    assert response.status_code == 200, response.text
    assert response.text.strip() == cluster.tls.crt(pki.SERVER_CA).read_text().strip()


def test_ping_is_public(anonymous: httpx.Client) -> None:
    response = anonymous.get("/ping")
    assert response.status_code == 200, response.text
    assert response.text == "pong"


def test_bad_bearer_token_is_401(cluster: Cluster) -> None:
    with cluster.http(None) as client:
        response = client.get("/api/v1/pods", headers={"Authorization": "Bearer not-a-real-token"})
    assert_status(response, 401, "Unauthorized")


def test_certificate_from_another_ca_is_refused(cluster: Cluster) -> None:
    """A client certificate the cluster's client CA did not sign never authenticates."""
    stranger = pki.issue_client_cert(pki.generate_ca("stranger-ca"), "system:admin", ("system:masters",))
    try:
        with cluster.http(stranger) as client:
            response = client.get("/api/v1/pods")
    except (httpx.TransportError, ssl.SSLError):
        return  # refused by TLS (with TLS 1.3 the client sees the alert as a dropped connection)
    assert_status(response, 401, "Unauthorized")


# -- RBAC --------------------------------------------------------------------------------------------


def test_authenticated_user_without_bindings_gets_403(cluster: Cluster, namespace: str) -> None:
    user = f"nobody-{unique()}"
    with as_user(cluster, user) as client:
        body = assert_status(client.get(f"/api/v1/namespaces/{namespace}/pods"), 403, "Forbidden")
        assert f'User "{user}" cannot list resource "pods"' in body["message"]
        assert body["details"]["kind"] == "pods"
        # discovery and health are open to every authenticated user (system:discovery)
        assert client.get("/api").status_code == 200
        assert client.get("/apis").status_code == 200
        assert client.get("/version").status_code == 200


def test_view_bound_user_can_read_but_not_write(
    cluster: Cluster, admin_http: httpx.Client, namespace: str
) -> None:
    user = f"viewer-{unique()}"
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "viewer"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }
    base = f"/api/v1/namespaces/{namespace}"
    assert (
        admin_http.post(
            f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings", json=binding
        ).status_code
        == 201
    )
    configmap = {"metadata": {"name": "shared"}, "data": {"a": "1"}}
    assert admin_http.post(f"{base}/configmaps", json=configmap).status_code == 201
    secret = {"metadata": {"name": "hidden"}, "stringData": {"a": "1"}}
    assert admin_http.post(f"{base}/secrets", json=secret).status_code == 201

    with as_user(cluster, user) as client:
        assert client.get(f"{base}/configmaps/shared").json()["data"] == {"a": "1"}
        assert [i["metadata"]["name"] for i in client.get(f"{base}/configmaps").json()["items"]].count(
            "shared"
        ) == 1
        assert client.get(f"/apis/apps/v1/namespaces/{namespace}/deployments").status_code == 200

        body = assert_status(
            client.post(f"{base}/configmaps", json={"metadata": {"name": "mine"}}), 403, "Forbidden"
        )
        assert f'User "{user}" cannot create resource "configmaps"' in body["message"]
        assert_status(client.put(f"{base}/configmaps/shared", json=configmap), 403, "Forbidden")
        patch = client.patch(
            f"{base}/configmaps/shared",
            json={"data": {"a": "2"}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert_status(patch, 403, "Forbidden")
        assert_status(client.delete(f"{base}/configmaps/shared"), 403, "Forbidden")
        assert_status(client.get(f"{base}/secrets/hidden"), 403, "Forbidden")  # view excludes secrets
        assert_status(
            client.get("/api/v1/namespaces/kube-system/configmaps"), 403, "Forbidden"
        )  # other namespace

        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {"namespace": namespace, "verb": "create", "resource": "configmaps"}
            },
        }
        answer = client.post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", json=review)
        assert answer.status_code == 201 and answer.json()["status"]["allowed"] is False
        review["spec"]["resourceAttributes"]["verb"] = "list"
        assert (
            client.post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", json=review).json()[
                "status"
            ]["allowed"]
            is True
        )

    assert admin_http.get(f"{base}/configmaps/shared").json()["data"] == {"a": "1"}  # nothing changed


def test_service_account_token(cluster: Cluster, admin_http: httpx.Client, namespace: str) -> None:
    base = f"/api/v1/namespaces/{namespace}"
    assert admin_http.post(f"{base}/serviceaccounts", json={"metadata": {"name": "robot"}}).status_code == 201
    request = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": 600},
    }
    issued = admin_http.post(f"{base}/serviceaccounts/robot/token", json=request)
    assert issued.status_code == 201, issued.text
    token = issued.json()["status"]["token"]
    headers = {"Authorization": f"Bearer {token}"}
    with cluster.http(None) as client:
        whoami = client.post(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
            headers=headers,
        )
        assert whoami.status_code == 201, whoami.text
        info = whoami.json()["status"]["userInfo"]
        assert info["username"] == f"system:serviceaccount:{namespace}:robot"
        assert {
            "system:serviceaccounts",
            f"system:serviceaccounts:{namespace}",
            "system:authenticated",
        } <= set(info["groups"])
        assert_status(client.get(f"{base}/configmaps", headers=headers), 403, "Forbidden")
        tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        assert_status(
            client.get(f"{base}/configmaps", headers={"Authorization": f"Bearer {tampered}"}),
            401,
            "Unauthorized",
        )


# -- the node authorizer -----------------------------------------------------------------------------


@pytest.fixture
def two_nodes(admin_http: httpx.Client) -> Iterator[tuple[str, str]]:
    """Two Node objects: the first is the one whose certificate the test uses."""
    names = (f"n1-{unique()}", f"n2-{unique()}")
    for node in names:
        assert admin_http.post("/api/v1/nodes", json={"metadata": {"name": node}}).status_code == 201
    try:
        yield names
    finally:
        for node in names:
            admin_http.delete(f"/api/v1/nodes/{node}")


def as_node(cluster: Cluster, node: str) -> httpx.Client:
    """A kubelet's identity: CN system:node:<name>, O system:nodes."""
    return as_user(cluster, f"system:node:{node}", "system:nodes")


MERGE = {"Content-Type": "application/merge-patch+json"}


def test_node_reads_only_its_own_pods(
    cluster: Cluster, admin_http: httpx.Client, namespace: str, two_nodes: tuple[str, str]
) -> None:
    mine, other = two_nodes
    base = f"/api/v1/namespaces/{namespace}/pods"
    for name, node in (("on-mine", mine), ("on-other", other)):
        assert admin_http.post(base, json=pod(name, node)).status_code == 201
    with as_node(cluster, mine) as node_client:
        own = node_client.get(f"{base}/on-mine")
        assert own.status_code == 200, own.text
        assert own.json()["spec"]["nodeName"] == mine
        body = assert_status(node_client.get(f"{base}/on-other"), 403, "Forbidden")
        assert f'User "system:node:{mine}" cannot get resource "pods"' in body["message"]

        # the status of its own pods only
        running = {"status": {"phase": "Running"}}
        assert node_client.patch(f"{base}/on-mine/status", json=running, headers=MERGE).status_code == 200
        assert_status(
            node_client.patch(f"{base}/on-other/status", json=running, headers=MERGE), 403, "Forbidden"
        )


def test_node_touches_only_its_own_node_object(cluster: Cluster, two_nodes: tuple[str, str]) -> None:
    mine, other = two_nodes
    ready = {"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}}
    with as_node(cluster, mine) as node_client:
        assert node_client.get(f"/api/v1/nodes/{mine}").status_code == 200
        assert node_client.patch(f"/api/v1/nodes/{mine}/status", json=ready, headers=MERGE).status_code == 200
        assert_status(
            node_client.patch(f"/api/v1/nodes/{other}/status", json=ready, headers=MERGE), 403, "Forbidden"
        )
        assert_status(node_client.delete(f"/api/v1/nodes/{other}"), 403, "Forbidden")


def test_node_touches_only_its_own_lease(cluster: Cluster, two_nodes: tuple[str, str]) -> None:
    mine, other = two_nodes
    leases = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
    with as_node(cluster, mine) as node_client:
        for node, expected in ((mine, 201), (other, 403)):
            lease = {"metadata": {"name": node}, "spec": {"holderIdentity": node, "leaseDurationSeconds": 40}}
            response = node_client.post(leases, json=lease)
            assert response.status_code == expected, response.text


def test_node_cannot_read_unrelated_secrets(
    cluster: Cluster, admin_http: httpx.Client, namespace: str, two_nodes: tuple[str, str]
) -> None:
    secret = {"metadata": {"name": "unrelated"}, "stringData": {"a": "1"}}
    assert admin_http.post(f"/api/v1/namespaces/{namespace}/secrets", json=secret).status_code == 201
    with as_node(cluster, two_nodes[0]) as node_client:
        assert_status(node_client.get(f"/api/v1/namespaces/{namespace}/secrets/unrelated"), 403, "Forbidden")


# -- impersonation (kubectl --as) ----------------------------------------------------------------


def test_kubectl_as_acts_with_the_impersonated_users_rights(
    cluster: Cluster, kubectl: Kubectl, admin_http: httpx.Client, namespace: str
) -> None:
    viewer = f"viewer-{unique()}"
    kubectl("create", "rolebinding", "viewer", "--clusterrole=view", f"--user={viewer}")
    kubectl("create", "configmap", "shared", "--from-literal=a=1")
    assert kubectl("get", "configmap", "shared", "-o", "jsonpath={.data.a}", f"--as={viewer}") == "1"
    refused = kubectl.fails("create", "configmap", "mine", f"--as={viewer}")
    assert f'User "{viewer}" cannot create resource "configmaps" in API group "" in the namespace "{namespace}"' in refused
    assert kubectl.run("auth", "can-i", "create", "configmaps", f"--as={viewer}").stdout.strip() == "no"
    assert kubectl("auth", "can-i", "list", "configmaps", f"--as={viewer}").strip() == "yes"
    # a group the impersonated user is given: system:masters is bound to cluster-admin
    assert kubectl("auth", "can-i", "create", "configmaps", f"--as={viewer}", "--as-group=system:masters").strip() == "yes"
    whoami = json.loads(kubectl("auth", "whoami", "-o", "json", f"--as={viewer}", "--as-group=team-a"))
    assert whoami["status"]["userInfo"]["username"] == viewer
    assert whoami["status"]["userInfo"]["groups"] == ["team-a", "system:authenticated"]


def test_impersonation_needs_the_impersonate_verb(cluster: Cluster, admin_http: httpx.Client, namespace: str) -> None:
    user = f"nobody-{unique()}"
    with as_user(cluster, user) as client:
        body = assert_status(
            client.get(f"/api/v1/namespaces/{namespace}/pods", headers={"Impersonate-User": "admin"}), 403, "Forbidden"
        )
        assert body["message"] == (
            f'users "admin" is forbidden: User "{user}" cannot impersonate resource "users" in API group "" '
            "at the cluster scope"
        )
        account = f"system:serviceaccount:{namespace}:default"
        body = assert_status(client.get("/api", headers={"Impersonate-User": account}), 403, "Forbidden")
        assert f'cannot impersonate resource "serviceaccounts" in API group "" in the namespace "{namespace}"' in body["message"]
        assert_status(client.get("/api", headers={"Impersonate-Group": "system:masters"}), 400, "BadRequest")
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": f"impersonator-{user}"},
        "rules": [{"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"], "resourceNames": ["admin"]}],
    }  # fmt: skip
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": f"impersonator-{user}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": f"impersonator-{user}"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }  # fmt: skip
    assert admin_http.post("/apis/rbac.authorization.k8s.io/v1/clusterroles", json=role).status_code == 201
    assert admin_http.post("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", json=binding).status_code == 201
    try:
        with as_user(cluster, user) as client:
            # allowed to be "admin" only; "admin" itself has no bindings here, so the read is still refused, as admin
            body = assert_status(
                client.get(f"/api/v1/namespaces/{namespace}/pods", headers={"Impersonate-User": "admin"}), 403, "Forbidden"
            )
            assert 'User "admin" cannot list resource "pods"' in body["message"]
            body = assert_status(client.get("/api", headers={"Impersonate-User": "root"}), 403, "Forbidden")
            assert 'users "root" is forbidden' in body["message"]
    finally:
        admin_http.delete(f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/impersonator-{user}")
        admin_http.delete(f"/apis/rbac.authorization.k8s.io/v1/clusterroles/impersonator-{user}")
