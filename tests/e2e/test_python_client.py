"""The official ``kubernetes`` Python client against the API server.

The client deserialises every answer into its typed models, which fail on a missing required
field, so a passing CRUD round trip also checks the shape of what the server returns. These
tests run against the in-process server (fast: the API server alone, on the in-memory store) and
against the ``edge`` profile started through the supervisor (everything folded into one process),
to show that the fold changes wiring only.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import kubernetes
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes import client as k8s
from kubernetes.client import ApiException

if TYPE_CHECKING:
    from tests.e2e.apiserver_fixtures import Cluster

pytest_plugins = ["tests.e2e.apiserver_fixtures"]  # the cluster, kubectl and client fixtures


def unique() -> str:
    """A short random suffix: names that no other test (or earlier run on the cluster) uses."""
    return uuid.uuid4().hex[:8]


pytestmark = pytest.mark.parametrize("cluster", ["inprocess", "edge"], indirect=True)

ESTABLISHED_DEADLINE = 30.0  # seconds for a new CRD to be served


def status_of(call: Callable[[], Any]) -> tuple[int, dict[str, Any]]:
    """Run a client call that must fail; return the HTTP status and the ``Status`` body."""
    with pytest.raises(ApiException) as caught:
        call()
    body = json.loads(caught.value.body) if caught.value.body else {}
    return caught.value.status, body


# -- manifests ---------------------------------------------------------------------------------------


def labels(app: str) -> dict[str, Any]:
    return {"matchLabels": {"app": app}}


def pod_template(app: str, *, restart: str = "Always") -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": app}},
        "spec": {"restartPolicy": restart, "containers": [{"name": "main", "image": "busybox:1.36"}]},
    }


def csr_pem(name: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
    )
    return base64.b64encode(request.public_bytes(serialization.Encoding.PEM)).decode()


@dataclasses.dataclass(frozen=True)
class Kind:
    """One served kind as the typed client reaches it: ``<verb>_[namespaced_]<method>`` on ``api``."""

    api: str
    method: str
    namespaced: bool
    body: Callable[[str], dict[str, Any]]
    check: Callable[[Any], None] = lambda obj: None

    def call(self, client: k8s.ApiClient, verb: str, namespace: str, *args: Any, **kwargs: Any) -> Any:
        api = getattr(k8s, self.api)(client)
        if self.namespaced:
            name = f"{verb}_namespaced_{self.method}"
            # create/list take the namespace first, the others the name and then the namespace
            args = (namespace, *args) if verb in ("create", "list") else (args[0], namespace, *args[1:])
        else:
            name = f"{verb}_{self.method}"
        return getattr(api, name)(*args, **kwargs)


def _service_check(obj: Any) -> None:
    assert obj.spec.cluster_ip.startswith("10.43.") and obj.spec.type == "ClusterIP"


def _secret_check(obj: Any) -> None:
    assert obj.data == {"password": base64.b64encode(b"s3cret").decode()}


KINDS: dict[str, Kind] = {
    "configmaps": Kind("CoreV1Api", "config_map", True, lambda n: {"metadata": {"name": n}, "data": {"a": "1"}}),
    "secrets": Kind(
        "CoreV1Api", "secret", True,
        lambda n: {"metadata": {"name": n}, "stringData": {"password": "s3cret"}}, _secret_check,
    ),
    "services": Kind(
        "CoreV1Api", "service", True,
        lambda n: {"metadata": {"name": n}, "spec": {"selector": {"app": n}, "ports": [{"port": 80}]}},
        _service_check,
    ),
    "namespaces": Kind("CoreV1Api", "namespace", False, lambda n: {"metadata": {"name": n}}),
    "pods": Kind(
        "CoreV1Api", "pod", True,
        lambda n: {"metadata": {"name": n}, "spec": pod_template(n)["spec"]},
        lambda obj: obj.status.phase == "Pending" or pytest.fail(f"pod phase {obj.status.phase}"),
    ),
    "nodes": Kind("CoreV1Api", "node", False, lambda n: {"metadata": {"name": n}}),
    "serviceaccounts": Kind("CoreV1Api", "service_account", True, lambda n: {"metadata": {"name": n}}),
    "events": Kind(
        "CoreV1Api", "event", True,
        lambda n: {
            "metadata": {"name": n},
            "involvedObject": {"kind": "Pod", "name": "somepod", "apiVersion": "v1"},
            "reason": "Testing", "message": "hello", "type": "Normal",
        },
    ),
    "endpoints": Kind(
        "CoreV1Api", "endpoints", True,
        lambda n: {
            "metadata": {"name": n},
            "subsets": [{"addresses": [{"ip": "10.42.0.5"}], "ports": [{"port": 80, "protocol": "TCP"}]}],
        },
    ),
    "limitranges": Kind(
        "CoreV1Api", "limit_range", True,
        lambda n: {
            "metadata": {"name": n},
            "spec": {"limits": [{"type": "Container", "defaultRequest": {"cpu": "100m"}}]},
        },
    ),
    "resourcequotas": Kind(
        "CoreV1Api", "resource_quota", True, lambda n: {"metadata": {"name": n}, "spec": {"hard": {"pods": "100"}}}
    ),
    "podtemplates": Kind("CoreV1Api", "pod_template", True, lambda n: {"metadata": {"name": n}, "template": pod_template(n)}),
    "persistentvolumes": Kind(
        "CoreV1Api", "persistent_volume", False,
        lambda n: {
            "metadata": {"name": n},
            "spec": {
                "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                "hostPath": {"path": f"/tmp/{n}"},
            },
        },
    ),
    "persistentvolumeclaims": Kind(
        "CoreV1Api", "persistent_volume_claim", True,
        lambda n: {
            "metadata": {"name": n},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        },
    ),
    "replicationcontrollers": Kind(
        "CoreV1Api", "replication_controller", True,
        lambda n: {"metadata": {"name": n}, "spec": {"replicas": 1, "selector": {"app": n}, "template": pod_template(n)}},
    ),
    "deployments": Kind(
        "AppsV1Api", "deployment", True,
        lambda n: {"metadata": {"name": n}, "spec": {"replicas": 1, "selector": labels(n), "template": pod_template(n)}},
    ),
    "replicasets": Kind(
        "AppsV1Api", "replica_set", True,
        lambda n: {"metadata": {"name": n}, "spec": {"replicas": 1, "selector": labels(n), "template": pod_template(n)}},
    ),
    "daemonsets": Kind(
        "AppsV1Api", "daemon_set", True,
        lambda n: {"metadata": {"name": n}, "spec": {"selector": labels(n), "template": pod_template(n)}},
    ),
    "statefulsets": Kind(
        "AppsV1Api", "stateful_set", True,
        lambda n: {
            "metadata": {"name": n},
            "spec": {"serviceName": n, "replicas": 1, "selector": labels(n), "template": pod_template(n)},
        },
    ),
    "controllerrevisions": Kind(
        "AppsV1Api", "controller_revision", True, lambda n: {"metadata": {"name": n}, "revision": 1, "data": {"a": 1}}
    ),
    "jobs": Kind(
        "BatchV1Api", "job", True,
        lambda n: {"metadata": {"name": n}, "spec": {"template": pod_template(n, restart="Never")}},
    ),
    "cronjobs": Kind(
        "BatchV1Api", "cron_job", True,
        lambda n: {
            "metadata": {"name": n},
            "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": pod_template(n, restart="OnFailure")}}},
        },
    ),
    "leases": Kind(
        "CoordinationV1Api", "lease", True,
        lambda n: {"metadata": {"name": n}, "spec": {"holderIdentity": "e2e", "leaseDurationSeconds": 40}},
    ),
    "endpointslices": Kind(
        "DiscoveryV1Api", "endpoint_slice", True,
        lambda n: {
            "metadata": {"name": n, "labels": {"kubernetes.io/service-name": n}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.42.0.7"], "conditions": {"ready": True}}],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
        },
    ),
    "events.events.k8s.io": Kind(
        "EventsV1Api", "event", True,
        lambda n: {
            "metadata": {"name": n},
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "reportingController": "e2e.example.com/tests", "reportingInstance": "e2e-1",
            "action": "Testing", "reason": "Testing", "type": "Normal", "note": "hello",
            "regarding": {"kind": "Pod", "name": "somepod", "apiVersion": "v1"},
        },
    ),
    "ingresses": Kind(
        "NetworkingV1Api", "ingress", True,
        lambda n: {
            "metadata": {"name": n},
            "spec": {
                "rules": [{
                    "host": "example.com",
                    "http": {"paths": [{
                        "path": "/", "pathType": "Prefix",
                        "backend": {"service": {"name": n, "port": {"number": 80}}},
                    }]},
                }],
            },
        },
    ),
    "ingressclasses": Kind(
        "NetworkingV1Api", "ingress_class", False,
        lambda n: {"metadata": {"name": n}, "spec": {"controller": "example.com/ingress"}},
    ),
    "networkpolicies": Kind(
        "NetworkingV1Api", "network_policy", True,
        lambda n: {"metadata": {"name": n}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}},
    ),
    "roles": Kind(
        "RbacAuthorizationV1Api", "role", True,
        lambda n: {"metadata": {"name": n}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]},
    ),
    "rolebindings": Kind(
        "RbacAuthorizationV1Api", "role_binding", True,
        lambda n: {
            "metadata": {"name": n},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": n},
            "subjects": [{"kind": "User", "name": n, "apiGroup": "rbac.authorization.k8s.io"}],
        },
    ),
    "clusterroles": Kind(
        "RbacAuthorizationV1Api", "cluster_role", False,
        lambda n: {"metadata": {"name": n}, "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]},
    ),
    "clusterrolebindings": Kind(
        "RbacAuthorizationV1Api", "cluster_role_binding", False,
        lambda n: {
            "metadata": {"name": n},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "Group", "name": n, "apiGroup": "rbac.authorization.k8s.io"}],
        },
    ),
    "storageclasses": Kind(
        "StorageV1Api", "storage_class", False,
        lambda n: {"metadata": {"name": n}, "provisioner": "rancher.io/local-path", "reclaimPolicy": "Delete"},
    ),
    "poddisruptionbudgets": Kind(
        "PolicyV1Api", "pod_disruption_budget", True,
        lambda n: {"metadata": {"name": n}, "spec": {"minAvailable": 1, "selector": labels(n)}},
    ),
    "priorityclasses": Kind(
        "SchedulingV1Api", "priority_class", False, lambda n: {"metadata": {"name": n}, "value": 1000, "description": "e2e"}
    ),
    "certificatesigningrequests": Kind(
        "CertificatesV1Api", "certificate_signing_request", False,
        lambda n: {
            "metadata": {"name": n},
            "spec": {
                "request": csr_pem(n), "signerName": "kubernetes.io/kube-apiserver-client",
                "usages": ["client auth"],
            },
        },
    ),
}  # fmt: skip


@pytest.mark.parametrize("resource", list(KINDS))
def test_crud(client: k8s.ApiClient, namespace: str, resource: str) -> None:
    kind = KINDS[resource]
    name = f"e2e-{unique()}"

    created = kind.call(client, "create", namespace, kind.body(name))
    assert created.metadata.name == name and created.metadata.uid and created.metadata.resource_version
    assert created.metadata.creation_timestamp is not None
    kind.check(created)

    read = kind.call(client, "read", namespace, name)
    assert read.metadata.uid == created.metadata.uid
    kind.check(read)

    # Controllers may write the object meanwhile (nodeipam gives a node its podCIDR): on a conflict,
    # re-read and replace again, as client-go's RetryOnConflict does.
    for attempt in range(5):
        read.metadata.labels = {**(read.metadata.labels or {}), "e2e": "replaced"}
        try:
            replaced = kind.call(client, "replace", namespace, name, read)
            break
        except ApiException as exc:
            if exc.status != 409 or attempt == 4:
                raise
            read = kind.call(client, "read", namespace, name)
    assert replaced.metadata.labels["e2e"] == "replaced"
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)

    patched = kind.call(client, "patch", namespace, name, {"metadata": {"annotations": {"e2e": "patched"}}})
    assert patched.metadata.annotations["e2e"] == "patched" and patched.metadata.labels["e2e"] == "replaced"

    listed = kind.call(client, "list", namespace, label_selector="e2e=replaced")
    assert [item.metadata.name for item in listed.items if item.metadata.name == name] == [name]
    assert int(listed.metadata.resource_version) >= int(patched.metadata.resource_version)

    kind.call(client, "delete", namespace, name)
    _assert_deleted(lambda: kind.call(client, "read", namespace, name))


def _assert_deleted(read: Callable[[], Any]) -> None:
    """Gone, or (namespaces, protected volumes) terminating with finalizers left for a controller."""
    try:
        obj = read()
    except ApiException as exc:
        assert exc.status == 404, exc.body
        return
    finalizers = (obj.metadata.finalizers or []) + (getattr(obj.spec, "finalizers", None) or [])
    assert obj.metadata.deletion_timestamp is not None and finalizers, (
        f"still there after delete: {obj.metadata}"
    )


def test_addons_are_served(client: k8s.ApiClient, namespace: str) -> None:
    custom = k8s.CustomObjectsApi(client)
    body = {
        "apiVersion": "k3s.cattle.io/v1",
        "kind": "Addon",
        "metadata": {"name": "extra"},
        "spec": {"source": "/var/lib/rancher/k3s/server/manifests/extra.yaml"},
    }
    created = custom.create_namespaced_custom_object("k3s.cattle.io", "v1", namespace, "addons", body)
    assert created["metadata"]["uid"]
    listed = custom.list_namespaced_custom_object("k3s.cattle.io", "v1", namespace, "addons")
    assert [i["metadata"]["name"] for i in listed["items"]] == ["extra"]
    custom.delete_namespaced_custom_object("k3s.cattle.io", "v1", namespace, "addons", "extra")


# -- lists and watches -------------------------------------------------------------------------------


def configmap(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}, "data": {"v": "0"}}


def test_watch_from_a_list_resource_version(client: k8s.ApiClient, namespace: str) -> None:
    core = k8s.CoreV1Api(client)
    core.create_namespaced_config_map(namespace, configmap("before"))
    listed = core.list_namespaced_config_map(namespace)
    rv = listed.metadata.resource_version
    assert "before" in [i.metadata.name for i in listed.items]

    core.create_namespaced_config_map(namespace, configmap("after"))
    core.patch_namespaced_config_map("before", namespace, {"data": {"v": "1"}})
    deleted = core.delete_namespaced_config_map("after", namespace)
    assert deleted  # the client returns the deleted object (or a Status)

    events = _watch(core.list_namespaced_config_map, namespace, count=3, resource_version=rv)
    assert [(e["type"], e["object"].metadata.name) for e in events] == [
        ("ADDED", "after"),
        ("MODIFIED", "before"),
        ("DELETED", "after"),
    ]
    assert events[1]["object"].data == {"v": "1"}
    revisions = [int(e["object"].metadata.resource_version) for e in events]
    assert revisions == sorted(revisions) and revisions[0] > int(rv)


def test_watch_without_a_resource_version_starts_with_the_current_state(
    client: k8s.ApiClient, namespace: str
) -> None:
    core = k8s.CoreV1Api(client)
    for name in ("a", "b"):
        core.create_namespaced_config_map(namespace, configmap(name, w="yes"))
    events = _watch(core.list_namespaced_config_map, namespace, count=2, label_selector="w=yes")
    assert sorted((e["type"], e["object"].metadata.name) for e in events) == [("ADDED", "a"), ("ADDED", "b")]


def test_watch_field_selector_and_bookmarks(client: k8s.ApiClient, namespace: str) -> None:
    core = k8s.CoreV1Api(client)
    core.create_namespaced_config_map(namespace, configmap("one"))
    rv = core.list_namespaced_config_map(namespace).metadata.resource_version
    core.create_namespaced_config_map(namespace, configmap("two"))
    core.patch_namespaced_config_map("one", namespace, {"data": {"v": "2"}})
    events = _watch(
        core.list_namespaced_config_map, namespace, count=1, resource_version=rv,
        field_selector="metadata.name=one", allow_watch_bookmarks=True,
    )  # fmt: skip
    assert [(e["type"], e["object"].metadata.name) for e in events] == [("MODIFIED", "one")]


def test_watch_list_sends_initial_events_then_the_bookmark(
    cluster: Cluster, admin_http: Any, namespace: str
) -> None:
    """What kubectl 1.37's wait and client-go's reflector send (KEP-3157), read raw."""
    for name in ("x", "y"):
        assert (
            admin_http.post(f"/api/v1/namespaces/{namespace}/configmaps", json=configmap(name)).status_code
            == 201
        )
    query = "watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=30"
    events = []
    with admin_http.stream("GET", f"/api/v1/namespaces/{namespace}/configmaps?{query}") as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            events.append(json.loads(line))
            if events[-1]["type"] == "BOOKMARK":
                break
    added = sorted(e["object"]["metadata"]["name"] for e in events if e["type"] == "ADDED")
    assert added == ["kube-root-ca.crt", "x", "y"] or added == ["x", "y"]
    bookmark = events[-1]["object"]["metadata"]
    assert bookmark["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert int(bookmark["resourceVersion"]) >= max(
        int(e["object"]["metadata"]["resourceVersion"]) for e in events[:-1]
    )


def test_watch_from_a_too_old_resource_version_gets_410_then_relists(
    client: k8s.ApiClient, namespace: str
) -> None:
    """A resourceVersion below the watch cache's window is expired (410 Gone); clients relist."""
    core = k8s.CoreV1Api(client)
    core.create_namespaced_config_map(namespace, configmap("old"))
    with pytest.raises(ApiException) as caught:
        _watch(core.list_namespaced_config_map, namespace, count=1, resource_version="1")
    assert caught.value.status == 410
    assert "too old resource version" in str(caught.value.reason)

    relisted = core.list_namespaced_config_map(namespace)  # the relist a client does next
    core.create_namespaced_config_map(namespace, configmap("new"))
    events = _watch(
        core.list_namespaced_config_map,
        namespace,
        count=1,
        resource_version=relisted.metadata.resource_version,
    )
    assert [(e["type"], e["object"].metadata.name) for e in events] == [("ADDED", "new")]


def test_list_at_an_exact_past_resource_version(client: k8s.ApiClient, namespace: str) -> None:
    core = k8s.CoreV1Api(client)
    core.create_namespaced_config_map(namespace, configmap("then"))
    past = core.list_namespaced_config_map(namespace).metadata.resource_version
    core.patch_namespaced_config_map("then", namespace, {"data": {"v": "later"}})
    core.create_namespaced_config_map(namespace, configmap("since"))

    exact = core.list_namespaced_config_map(namespace, resource_version=past, resource_version_match="Exact")
    assert exact.metadata.resource_version == past
    assert {i.metadata.name: i.data for i in exact.items if i.metadata.name != "kube-root-ca.crt"} == {
        "then": {"v": "0"}
    }
    status, body = status_of(
        lambda: core.list_namespaced_config_map(namespace, resource_version_match="Exact")
    )  # a match without a resourceVersion
    assert status == 422 and body["reason"] == "Invalid"


def _watch(func: Callable[..., Any], *args: Any, count: int, **kwargs: Any) -> list[dict[str, Any]]:
    """The first ``count`` events of a watch (bookmarks skipped); the server ends it after 30 s."""
    watch = kubernetes.watch.Watch()
    events: list[dict[str, Any]] = []
    try:
        for event in watch.stream(func, *args, timeout_seconds=30, **kwargs):
            if event["type"] == "BOOKMARK":
                continue
            events.append(event)
            if len(events) == count:
                break
    finally:
        watch.stop()
    assert len(events) == count, f"the watch ended after {events}"
    return events


def test_pagination(client: k8s.ApiClient, namespace: str) -> None:
    core = k8s.CoreV1Api(client)
    names = [f"page-{i:02d}" for i in range(7)]
    for name in names:
        core.create_namespaced_config_map(namespace, configmap(name, paged="yes"))

    first = core.list_namespaced_config_map(namespace, label_selector="paged=yes", limit=3)
    assert [i.metadata.name for i in first.items] == names[:3]
    assert first.metadata._continue
    if first.metadata.remaining_item_count is not None:
        assert first.metadata.remaining_item_count == 4

    core.create_namespaced_config_map(namespace, configmap("page-03a", paged="yes"))  # after the first page
    second = core.list_namespaced_config_map(
        namespace, label_selector="paged=yes", limit=3, _continue=first.metadata._continue
    )
    assert [i.metadata.name for i in second.items] == names[3:6]  # served at the first page's revision
    assert second.metadata.resource_version == first.metadata.resource_version
    third = core.list_namespaced_config_map(
        namespace, label_selector="paged=yes", limit=3, _continue=second.metadata._continue
    )
    assert [i.metadata.name for i in third.items] == names[6:]
    assert not third.metadata._continue

    everything = core.list_namespaced_config_map(namespace, label_selector="paged=yes")
    assert len(everything.items) == 8 and not everything.metadata._continue

    status, body = status_of(lambda: core.list_namespaced_config_map(namespace, limit=3, _continue="garbage"))
    assert status in (400, 410) and body["kind"] == "Status"


def test_list_across_namespaces(client: k8s.ApiClient, namespace: str) -> None:
    core = k8s.CoreV1Api(client)
    core.create_namespaced_config_map(namespace, configmap("everywhere", scope="all"))
    listed = core.list_config_map_for_all_namespaces(label_selector="scope=all")
    assert (namespace, "everywhere") in [(i.metadata.namespace, i.metadata.name) for i in listed.items]
    by_field = core.list_config_map_for_all_namespaces(field_selector=f"metadata.namespace={namespace}")
    assert {i.metadata.namespace for i in by_field.items} == {namespace}


# -- patches and server-side apply -------------------------------------------------------------------


def deployment(name: str) -> dict[str, Any]:
    spec = pod_template(name)
    spec["spec"]["containers"][0]["env"] = [{"name": "A", "value": "1"}]
    return {"metadata": {"name": name}, "spec": {"replicas": 1, "selector": labels(name), "template": spec}}


def test_strategic_merge_patch(client: k8s.ApiClient, namespace: str) -> None:
    apps = k8s.AppsV1Api(client)
    apps.create_namespaced_deployment(namespace, deployment("smp"))
    patch = {
        "spec": {"template": {"spec": {"containers": [
            {"name": "main", "env": [{"name": "B", "value": "2"}]},
            {"name": "side", "image": "busybox:1.36"},
        ]}}}
    }  # fmt: skip
    patched = apps.patch_namespaced_deployment("smp", namespace, patch)
    containers = {c.name: c for c in patched.spec.template.spec.containers}
    assert set(containers) == {"main", "side"}  # merged on the name key
    assert [(e.name, e.value) for e in containers["main"].env] == [("B", "2"), ("A", "1")] or [
        (e.name, e.value) for e in containers["main"].env
    ] == [("A", "1"), ("B", "2")]
    assert containers["main"].image == "busybox:1.36"

    delete = {"spec": {"template": {"spec": {"containers": [{"name": "side", "$patch": "delete"}]}}}}
    patched = apps.patch_namespaced_deployment("smp", namespace, delete)
    assert [c.name for c in patched.spec.template.spec.containers] == ["main"]


def test_json_and_merge_patches(client: k8s.ApiClient, namespace: str) -> None:
    core = k8s.CoreV1Api(client)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "jp"}, "data": {"a": "1", "b": "2"}})
    ops = [
        {"op": "test", "path": "/data/a", "value": "1"},
        {"op": "remove", "path": "/data/b"},
        {"op": "add", "path": "/data/c", "value": "3"},
        {"op": "add", "path": "/metadata/labels", "value": {"x": "y"}},
    ]
    patched = core.patch_namespaced_config_map("jp", namespace, ops)  # a list body: JSON patch
    assert patched.data == {"a": "1", "c": "3"} and patched.metadata.labels == {"x": "y"}

    status, body = status_of(
        lambda: core.patch_namespaced_config_map(
            "jp", namespace, [{"op": "test", "path": "/data/a", "value": "9"}]
        )
    )
    assert status == 422 and body["kind"] == "Status"  # a failed test operation
    status, body = status_of(
        lambda: core.patch_namespaced_config_map(
            "jp", namespace, [{"op": "replace", "path": "/nope/x", "value": 1}]
        )
    )
    assert status == 422 and body["kind"] == "Status"

    merged = core.patch_namespaced_config_map(
        "jp", namespace, {"data": {"a": None, "d": "4"}}, _content_type="application/merge-patch+json"
    )
    assert merged.data == {"c": "3", "d": "4"}


APPLY = "application/apply-patch+yaml"


def test_server_side_apply(client: k8s.ApiClient, namespace: str) -> None:
    core = k8s.CoreV1Api(client)
    desired = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "1"}}
    created = core.patch_namespaced_config_map(
        "ssa", namespace, desired, field_manager="alice", _content_type=APPLY
    )
    assert created.data == {"a": "1"}  # apply creates
    entries = [(m.manager, m.operation) for m in created.metadata.managed_fields]
    assert entries == [("alice", "Apply")]

    theirs = {**desired, "data": {"a": "2", "b": "x"}}
    status, body = status_of(
        lambda: core.patch_namespaced_config_map(
            "ssa", namespace, theirs, field_manager="bob", _content_type=APPLY
        )
    )
    assert status == 409 and body["reason"] == "Conflict"
    causes = body["details"]["causes"]
    assert causes == [
        {"reason": "FieldManagerConflict", "message": 'conflict with "alice"', "field": ".data.a"}
    ]

    forced = core.patch_namespaced_config_map(
        "ssa", namespace, theirs, field_manager="bob", force=True, _content_type=APPLY
    )
    assert forced.data == {"a": "2", "b": "x"}
    owners = {m.manager: m.operation for m in forced.metadata.managed_fields}
    assert owners["bob"] == "Apply"

    # alice applies without "a": she no longer owns it, and bob's value stays
    dropped = {**desired, "data": {}}
    after = core.patch_namespaced_config_map(
        "ssa", namespace, dropped, field_manager="alice", _content_type=APPLY
    )
    assert after.data == {"a": "2", "b": "x"}

    status, body = status_of(
        lambda: core.patch_namespaced_config_map("ssa", namespace, desired, _content_type=APPLY)
    )
    assert status == 422  # apply needs a field manager


def test_dry_run_writes_nothing(client: k8s.ApiClient, namespace: str) -> None:
    core = k8s.CoreV1Api(client)
    made = core.create_namespaced_config_map(namespace, configmap("dry"), dry_run="All")
    assert made.metadata.name == "dry"
    status, _ = status_of(lambda: core.read_namespaced_config_map("dry", namespace))
    assert status == 404


# -- custom resources --------------------------------------------------------------------------------


def crd(group: str) -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {"replicas": {"type": "integer", "minimum": 0}, "color": {"type": "string"}},
            },
            "status": {
                "type": "object",
                "properties": {"replicas": {"type": "integer"}, "phase": {"type": "string"}},
            },
        },
    }
    return {
        "metadata": {"name": f"gadgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget", "listKind": "GadgetList"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                        },
                    },
                }
            ],
        },
    }


@pytest.fixture
def crd_group(client: k8s.ApiClient) -> Iterator[str]:
    group = f"e2e{unique()}.example.com"
    ext = k8s.ApiextensionsV1Api(client)
    ext.create_custom_resource_definition(crd(group))
    deadline = time.monotonic() + ESTABLISHED_DEADLINE
    while True:
        found = ext.read_custom_resource_definition(f"gadgets.{group}")
        conditions = {c.type: c.status for c in (found.status.conditions or [])} if found.status else {}
        if conditions.get("Established") == "True":
            break
        assert time.monotonic() < deadline, f"CRD not established: {found.status}"
        time.sleep(0.05)
    try:
        yield group
    finally:
        try:
            ext.delete_custom_resource_definition(f"gadgets.{group}")
        except ApiException as exc:
            if exc.status != 404:
                raise


def test_custom_resource_round_trip(client: k8s.ApiClient, namespace: str, crd_group: str) -> None:
    custom = k8s.CustomObjectsApi(client)
    args = (crd_group, "v1", namespace, "gadgets")
    body = {
        "apiVersion": f"{crd_group}/v1",
        "kind": "Gadget",
        "metadata": {"name": "g1"},
        "spec": {"replicas": 1},
    }

    created = custom.create_namespaced_custom_object(*args, body)
    assert created["metadata"]["uid"] and created["spec"] == {"replicas": 1}
    assert custom.get_namespaced_custom_object(*args, "g1")["metadata"]["uid"] == created["metadata"]["uid"]
    listed = custom.list_namespaced_custom_object(*args)
    assert listed["kind"] == "GadgetList" and [i["metadata"]["name"] for i in listed["items"]] == ["g1"]

    patched = custom.patch_namespaced_custom_object(*args, "g1", {"spec": {"color": "red"}})  # merge patch
    assert patched["spec"] == {"replicas": 1, "color": "red"}
    patched["spec"]["replicas"] = 2
    replaced = custom.replace_namespaced_custom_object(*args, "g1", patched)
    assert replaced["spec"]["replicas"] == 2

    # status: written only through the subresource
    status = custom.patch_namespaced_custom_object_status(
        *args, "g1", {"status": {"phase": "Ready", "replicas": 2}}
    )
    assert status["status"]["phase"] == "Ready"
    ignored = custom.patch_namespaced_custom_object(*args, "g1", {"status": {"phase": "Broken"}})
    assert ignored["status"]["phase"] == "Ready"

    # scale
    scale = custom.get_namespaced_custom_object_scale(*args, "g1")
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 2 and scale["status"]["replicas"] == 2
    custom.patch_namespaced_custom_object_scale(*args, "g1", {"spec": {"replicas": 5}})
    assert custom.get_namespaced_custom_object(*args, "g1")["spec"]["replicas"] == 5

    # validation against the schema: 422 with the field named
    bad = {**body, "metadata": {"name": "bad"}, "spec": {"replicas": -1}}
    code, status_body = status_of(lambda: custom.create_namespaced_custom_object(*args, bad))
    assert code == 422 and "spec.replicas" in status_body["message"]

    # a watch sees custom objects change
    rv = custom.list_namespaced_custom_object(*args)["metadata"]["resourceVersion"]
    custom.delete_namespaced_custom_object(*args, "g1")
    events = _watch(custom.list_namespaced_custom_object, *args, count=1, resource_version=rv)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("DELETED", "g1")]

    # removing the CRD stops serving its resources
    custom.create_namespaced_custom_object(*args, {**body, "metadata": {"name": "g2"}})
    k8s.ApiextensionsV1Api(client).delete_custom_resource_definition(f"gadgets.{crd_group}")
    deadline = time.monotonic() + ESTABLISHED_DEADLINE
    while True:
        try:
            custom.list_namespaced_custom_object(*args)
        except ApiException as exc:
            assert exc.status == 404
            break
        assert time.monotonic() < deadline, "custom resources still served after their CRD was deleted"
        time.sleep(0.05)


# -- status codes ------------------------------------------------------------------------------------


def test_401_without_credentials(cluster: Cluster) -> None:
    config = k8s.Configuration(host=cluster.url)
    config.ssl_ca_cert = str(cluster.tls.crt("server-ca"))
    with k8s.ApiClient(config) as anonymous:
        status, body = status_of(lambda: k8s.CoreV1Api(anonymous).list_namespaced_pod("default"))
    assert status == 401 and body["reason"] == "Unauthorized" and body["kind"] == "Status"


def test_403_for_a_user_without_rights_and_with_view(
    cluster: Cluster, client: k8s.ApiClient, namespace: str, tmp_path: Path
) -> None:
    user = f"someone-{unique()}"
    kubeconfig = cluster.write_kubeconfig(
        tmp_path / "user.kubeconfig", cluster.issue_user(user, ("e2e-team",))
    )
    with cluster.api_client(kubeconfig) as as_user:
        core = k8s.CoreV1Api(as_user)
        status, body = status_of(lambda: core.list_namespaced_config_map(namespace))
        assert status == 403 and body["reason"] == "Forbidden"
        assert f'User "{user}" cannot list resource "configmaps"' in body["message"]
        assert body["details"]["kind"] == "configmaps"

        k8s.RbacAuthorizationV1Api(client).create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": "team-view"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                "subjects": [{"kind": "Group", "name": "e2e-team", "apiGroup": "rbac.authorization.k8s.io"}],
            },
        )
        k8s.CoreV1Api(client).create_namespaced_config_map(namespace, configmap("visible"))
        assert core.read_namespaced_config_map("visible", namespace).metadata.name == "visible"
        status, body = status_of(lambda: core.create_namespaced_config_map(namespace, configmap("mine")))
        assert status == 403 and f'User "{user}" cannot create resource "configmaps"' in body["message"]
        status, _ = status_of(lambda: core.read_namespaced_secret("anything", namespace))
        assert status == 403  # view does not include secrets
        status, _ = status_of(lambda: core.list_namespaced_config_map("kube-system"))
        assert status == 403  # the binding is for this namespace only


def test_404(client: k8s.ApiClient, namespace: str) -> None:
    core = k8s.CoreV1Api(client)
    status, body = status_of(lambda: core.read_namespaced_config_map("missing", namespace))
    assert (status, body["reason"]) == (404, "NotFound")
    assert body["message"] == 'configmaps "missing" not found'
    assert body["details"] == {"name": "missing", "kind": "configmaps"}
    status, body = status_of(lambda: core.create_namespaced_config_map("no-such-namespace", configmap("x")))
    assert (status, body["reason"]) == (404, "NotFound") and "no-such-namespace" in body["message"]
    status, _ = status_of(lambda: core.delete_namespaced_config_map("missing", namespace))
    assert status == 404


def test_409_conflicts(client: k8s.ApiClient, namespace: str) -> None:
    core = k8s.CoreV1Api(client)
    first = core.create_namespaced_config_map(namespace, configmap("contended"))
    status, body = status_of(lambda: core.create_namespaced_config_map(namespace, configmap("contended")))
    assert (status, body["reason"]) == (409, "AlreadyExists")
    assert body["message"] == 'configmaps "contended" already exists'

    core.patch_namespaced_config_map("contended", namespace, {"data": {"v": "moved on"}})
    stale = first  # still carries the first resourceVersion
    stale.data = {"v": "stale"}
    status, body = status_of(lambda: core.replace_namespaced_config_map("contended", namespace, stale))
    assert (status, body["reason"]) == (409, "Conflict")
    assert "the object has been modified" in body["message"]
    assert core.read_namespaced_config_map("contended", namespace).data == {"v": "moved on"}


def test_422_invalid(client: k8s.ApiClient, namespace: str) -> None:
    core = k8s.CoreV1Api(client)
    status, body = status_of(
        lambda: core.create_namespaced_config_map(namespace, configmap("Not_A_Valid_Name"))
    )
    assert (status, body["reason"]) == (422, "Invalid")
    assert body["details"]["name"] == "Not_A_Valid_Name" and body["details"]["kind"] == "ConfigMap"
    assert [c["field"] for c in body["details"]["causes"]] == ["metadata.name"]
    assert body["details"]["causes"][0]["reason"] == "FieldValueInvalid"

    pod = {"metadata": {"name": "nocontainers"}, "spec": {"containers": []}}
    status, body = status_of(lambda: core.create_namespaced_pod(namespace, pod))
    assert (status, body["reason"]) == (422, "Invalid")
    assert "spec.containers" in [c["field"] for c in body["details"]["causes"]]
