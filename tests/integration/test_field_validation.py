"""Field validation through a real API server: ``fieldValidation`` Strict / Warn / Ignore, pruning of
unknown fields, duplicate JSON fields, custom resources' schemas, and real kubectl's typo error.

The server is the in-process ``ApiServer`` on the in-memory kine backend (``tests.e2e.apiserver_fixtures``,
started once per session); every test works in a namespace of its own. Expected messages are
upstream's, from kube-apiserver's handlers and ``test/integration/apiserver/field_validation_test.go``.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from tests.e2e.apiserver_fixtures import Kubectl

pytest_plugins = ["tests.e2e.apiserver_fixtures"]
pytestmark = pytest.mark.parametrize("cluster", ["inprocess"], indirect=True)

STRICT = {"fieldValidation": "Strict"}
WARN = {"fieldValidation": "Warn"}
IGNORE = {"fieldValidation": "Ignore"}
CRD_READY_DEADLINE = 15.0  # seconds for a new CRD's resource to be served


def configmaps(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/configmaps"


def warnings_of(response: httpx.Response) -> list[str]:
    """The texts of the ``Warning: 299 - "<text>"`` headers, in order."""
    out = []
    for value in response.headers.get_list("warning"):
        assert value.startswith('299 - "') and value.endswith('"'), value
        out.append(value[len('299 - "') : -1].replace('\\"', '"').replace("\\\\", "\\"))
    return out


def configmap_with_unknowns(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labelz": {"a": "b"}},
        "data": {"k": "v"},
        "spec": {"replicas": 1},
    }


# -- built-in kinds -------------------------------------------------------------------------------


def test_strict_rejects_unknown_fields_with_upstreams_message(
    admin_http: httpx.Client, namespace: str
) -> None:
    response = admin_http.post(configmaps(namespace), params=STRICT, json=configmap_with_unknowns("strict"))
    assert response.status_code == 400, response.text
    status = response.json()
    assert status["reason"] == "BadRequest"
    assert status["message"] == (
        'ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: '
        'unknown field "metadata.labelz", unknown field "spec"'
    )
    assert admin_http.get(f"{configmaps(namespace)}/strict").status_code == 404


@pytest.mark.parametrize("params", [WARN, {}], ids=["Warn", "default"])
def test_warn_creates_drops_and_warns(
    admin_http: httpx.Client, namespace: str, params: dict[str, str]
) -> None:
    response = admin_http.post(configmaps(namespace), params=params, json=configmap_with_unknowns("warned"))
    assert response.status_code == 201, response.text
    assert warnings_of(response) == ['unknown field "metadata.labelz"', 'unknown field "spec"']
    stored = admin_http.get(f"{configmaps(namespace)}/warned").json()
    assert "spec" not in stored and "labelz" not in stored["metadata"]
    assert stored["data"] == {"k": "v"}


def test_ignore_drops_silently(admin_http: httpx.Client, namespace: str) -> None:
    response = admin_http.post(configmaps(namespace), params=IGNORE, json=configmap_with_unknowns("ignored"))
    assert response.status_code == 201, response.text
    assert warnings_of(response) == []
    assert "spec" not in response.json()
    assert "spec" not in admin_http.get(f"{configmaps(namespace)}/ignored").json()


def test_unknown_directive_is_invalid(admin_http: httpx.Client, namespace: str) -> None:
    response = admin_http.post(
        configmaps(namespace), params={"fieldValidation": "strict"}, json=configmap_with_unknowns("x")
    )
    assert response.status_code == 422, response.text
    assert response.json()["message"] == (
        'CreateOptions.meta.k8s.io "" is invalid: fieldValidation: Unsupported value: "strict": '
        'supported values: "", "Ignore", "Strict", "Warn"'
    )


def pod(name: str, **container: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "web", "image": "nginx", **container}]},
    }


def test_nested_unknown_field_in_a_pod_container(admin_http: httpx.Client, namespace: str) -> None:
    url = f"/api/v1/namespaces/{namespace}/pods"
    strict = admin_http.post(url, params=STRICT, json=pod("typo", imagee="nginx:1.25"))
    assert strict.status_code == 400, strict.text
    assert strict.json()["message"] == (
        'Pod in version "v1" cannot be handled as a Pod: strict decoding error: '
        'unknown field "spec.containers[0].imagee"'
    )
    warned = admin_http.post(url, json=pod("typo", imagee="nginx:1.25"))
    assert warned.status_code == 201, warned.text
    assert warnings_of(warned) == ['unknown field "spec.containers[0].imagee"']
    assert "imagee" not in warned.json()["spec"]["containers"][0]


def test_duplicate_fields_are_reported_in_document_order(admin_http: httpx.Client, namespace: str) -> None:
    body = (
        '{"apiVersion": "apps/v1", "kind": "Deployment",'
        ' "metadata": {"name": "dupes", "name": "dupes", "unknownMeta": 1},'
        ' "spec": {"unknown1": "v", "paused": true, "paused": false,'
        '  "selector": {"matchLabels": {"app": "web"}},'
        '  "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web",'
        '   "image": "nginx", "imagePullPolicy": "Always", "imagePullPolicy": "Never"}]}}}}'
    )
    url = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    headers = {"content-type": "application/json"}
    expected = [
        'duplicate field "metadata.name"',
        'unknown field "metadata.unknownMeta"',
        'unknown field "spec.unknown1"',
        'duplicate field "spec.paused"',
        'duplicate field "spec.template.spec.containers[0].imagePullPolicy"',
    ]
    strict = admin_http.post(url, params=STRICT, content=body, headers=headers)
    assert strict.status_code == 400, strict.text
    assert strict.json()["message"].endswith("strict decoding error: " + ", ".join(expected))
    warned = admin_http.post(url, params=WARN, content=body, headers=headers)
    assert warned.status_code == 201, warned.text
    assert warnings_of(warned) == expected
    assert warned.json()["spec"]["paused"] is False  # the last one wins, as in Go


def test_patches_check_the_patched_object(admin_http: httpx.Client, namespace: str) -> None:
    url = configmaps(namespace)
    assert admin_http.post(url, json={"metadata": {"name": "patched"}, "data": {"k": "v"}}).status_code == 201
    merge = {"content-type": "application/merge-patch+json"}
    patch = json.dumps({"data": {"k": "w"}, "spec": {"x": 1}})
    strict = admin_http.patch(f"{url}/patched", params=STRICT, content=patch, headers=merge)
    # handlers/patch.go: an Invalid error of no kind, its cause on the field "patch".
    assert strict.status_code == 422, strict.text
    status = strict.json()
    assert status["message"].startswith(' "" is invalid: patch: Invalid value: "{')
    assert status["message"].endswith('": strict decoding error: unknown field "spec"')
    assert status["details"]["causes"][0]["field"] == "patch"
    warned = admin_http.patch(f"{url}/patched", content=patch, headers=merge)
    assert warned.status_code == 200, warned.text
    assert warnings_of(warned) == ['unknown field "spec"']
    assert "spec" not in warned.json() and warned.json()["data"] == {"k": "w"}


def test_json_patch_operations_are_checked(admin_http: httpx.Client, namespace: str) -> None:
    url = configmaps(namespace)
    assert admin_http.post(url, json={"metadata": {"name": "ops"}}).status_code == 201
    ops = '[{"op": "add", "path": "/spec", "value": {"x": 1}, "foo": "bar"}]'
    response = admin_http.patch(
        f"{url}/ops", params=WARN, content=ops, headers={"content-type": "application/json-patch+json"}
    )
    assert response.status_code == 200, response.text
    assert warnings_of(response) == ['json patch unknown field "[0].foo"', 'unknown field "spec"']


def deployment(name: str, replicas: Any) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]},
            },
        },
    }


def test_deployment_replicas_must_be_a_non_negative_integer(admin_http: httpx.Client, namespace: str) -> None:
    url = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    wrong_type = admin_http.post(url, json=deployment("typed", "abc"))
    assert wrong_type.status_code == 422, wrong_type.text
    assert wrong_type.json()["message"] == (
        'Deployment.apps "typed" is invalid: spec.replicas: Invalid value: "string": '
        'spec.replicas in body must be of type integer: "string"'
    )
    negative = admin_http.post(url, json=deployment("negative", -1))
    assert negative.status_code == 422, negative.text
    assert negative.json()["details"]["causes"] == [
        {
            "reason": "FieldValueInvalid",
            "message": "Invalid value: -1: must be greater than or equal to 0",
            "field": "spec.replicas",
        }
    ]
    assert admin_http.post(url, json=deployment("fine", 2)).status_code == 201
    scale = admin_http.patch(
        f"{url}/fine/scale",
        content='{"spec": {"replicas": -3}}',
        headers={"content-type": "application/merge-patch+json"},
    )
    assert scale.status_code == 422, scale.text


# -- custom resources ---------------------------------------------------------------------------------


WIDGET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "maxLength": 10},
                "size": {"type": "integer", "minimum": 0, "default": 3},
                "color": {"type": "string", "enum": ["red", "blue"]},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
            },
        },
        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    },
}


@pytest.fixture(scope="module")
def widgets(admin_http_module: httpx.Client) -> str:
    """A namespaced custom resource with a structural schema; its group is unique to this run."""
    group = f"fv{uuid.uuid4().hex[:8]}.example.com"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [
                {"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": WIDGET_SCHEMA}}
            ],
        },
    }
    response = admin_http_module.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd)
    assert response.status_code == 201, response.text
    deadline = time.monotonic() + CRD_READY_DEADLINE
    while admin_http_module.get(f"/apis/{group}/v1/widgets").status_code != 200:
        assert time.monotonic() < deadline, "the CRD's resource was never served"
        time.sleep(0.05)
    return group


@pytest.fixture(scope="module")
def admin_http_module(request: pytest.FixtureRequest) -> Any:
    cluster = request.getfixturevalue("inprocess_cluster")
    with cluster.http(cluster.admin()) as client:
        yield client


def widget(group: str, object_name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": object_name}, "spec": spec}


def test_custom_resource_unknown_fields(admin_http: httpx.Client, namespace: str, widgets: str) -> None:
    url = f"/apis/{widgets}/v1/namespaces/{namespace}/widgets"
    body = widget(widgets, "w1", name="a", typo=1, free={"anything": {"goes": True}})
    body["metadata"]["unknownMeta"] = "x"
    strict = admin_http.post(url, params=STRICT, json=body)
    assert strict.status_code == 400, strict.text
    assert strict.json()["message"] == (
        'Widget in version "v1" cannot be handled as a Widget: strict decoding error: '
        'unknown field "metadata.unknownMeta", unknown field "spec.typo"'
    )
    warned = admin_http.post(url, json=body)
    assert warned.status_code == 201, warned.text
    assert warnings_of(warned) == ['unknown field "metadata.unknownMeta"', 'unknown field "spec.typo"']
    stored = admin_http.get(f"{url}/w1").json()
    assert "typo" not in stored["spec"] and "unknownMeta" not in stored["metadata"]
    assert stored["spec"]["free"] == {"anything": {"goes": True}}  # x-kubernetes-preserve-unknown-fields
    assert stored["spec"]["size"] == 3  # the schema's default


def test_custom_resource_schema_violations(admin_http: httpx.Client, namespace: str, widgets: str) -> None:
    url = f"/apis/{widgets}/v1/namespaces/{namespace}/widgets"
    response = admin_http.post(url, json=widget(widgets, "w2", size="string", color="pink", tags=["a", "a"]))
    assert response.status_code == 422, response.text
    causes = response.json()["details"]["causes"]
    assert {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.name"} in causes
    assert {
        "reason": "FieldValueTypeInvalid",
        "message": 'Invalid value: "string": spec.size in body must be of type integer: "string"',
        "field": "spec.size",
    } in causes
    assert {
        "reason": "FieldValueNotSupported",
        "message": 'Unsupported value: "pink": supported values: "red", "blue"',
        "field": "spec.color",
    } in causes
    assert {
        "reason": "FieldValueDuplicate",
        "message": 'Duplicate value: "a"',
        "field": "spec.tags[1]",
    } in causes
    assert response.json()["message"].startswith(f'Widget.{widgets} "w2" is invalid: ')
    minimum = admin_http.post(url, json=widget(widgets, "w3", name="a", size=-1))
    assert minimum.status_code == 422, minimum.text
    assert minimum.json()["details"]["causes"] == [
        {
            "reason": "FieldValueInvalid",
            "message": "Invalid value: -1: spec.size in body should be greater than or equal to 0",
            "field": "spec.size",
        }
    ]


# -- real kubectl ---------------------------------------------------------------------------------------


def test_kubectl_create_with_a_typo_fails_like_upstream(kubectl: Kubectl, tmp_path: Path) -> None:
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: typo\nspec:\n  containers:\n  - name: web\n    imagee: nginx\n"
    )
    stderr = kubectl.fails("create", "-f", str(manifest))
    assert "Error from server (BadRequest)" in stderr, stderr
    assert 'strict decoding error: unknown field "spec.containers[0].imagee"' in stderr, stderr
    assert kubectl.run("get", "pod", "typo").returncode != 0
