"""Generated OpenAPI documents: what kubectl's validation check, apply and explain read.

The schemas are compared with upstream's (``kubernetes-validate``'s 1.37 definitions) when
that package is installed; the comparison is skipped, with the reason, when it is not.
"""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import Iterator

import orjson
import pytest

from services.apiserver import builtin, openapi, registry
from services.machinery import errors

ACTIONS = {
    "get",
    "list",
    "watch",
    "watchlist",
    "post",
    "put",
    "patch",
    "delete",
    "deletecollection",
    "connect",
}
METHODS = ("get", "put", "post", "delete", "patch")
POD = "io.k8s.api.core.v1.Pod"

CRONTAB_SCHEMA = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "properties": {
                "cronSpec": {"type": "string", "description": "When to run."},
                "replicas": {"type": "integer"},
            },
            "required": ["cronSpec"],
        },
        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    },
}


def crontab(schema: dict | None = CRONTAB_SCHEMA) -> registry.ResourceInfo:
    return registry.ResourceInfo(
        group="stable.example.com",
        version="v1",
        kind="CronTab",
        plural="crontabs",
        singular="crontab",
        namespaced=True,
        verbs=builtin.CRUD,
        subresources=("status", "scale"),
        custom=True,
        schema=schema,
    )


@pytest.fixture(scope="module")
def api() -> openapi.OpenAPI:
    return openapi.OpenAPI(registry.Registry(builtin.builtin_resources()))


def load(api: openapi.OpenAPI, path: str) -> dict:
    doc = api.document(path)
    assert doc is not None, path
    return orjson.loads(doc.body)


def operations(doc: dict) -> Iterator[tuple[str, str, dict]]:
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def refs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def patch_ops(doc: dict, kind: str) -> list[dict]:
    return [
        op
        for _, m, op in operations(doc)
        if m == "patch" and op["x-kubernetes-group-version-kind"]["kind"] == kind
    ]


# -- the index -----------------------------------------------------------------------------------


def test_index_lists_every_group_version(api: openapi.OpenAPI) -> None:
    index = orjson.loads(api.index())
    paths = index["paths"]
    assert {"api/v1", "apis/apps/v1", "apis/batch/v1", "apis/k3s.cattle.io/v1"} <= set(paths)
    url = paths["apis/apps/v1"]["serverRelativeURL"]
    assert url.startswith("/openapi/v3/apis/apps/v1?hash=")
    h = url.partition("hash=")[2]
    assert len(h) == 128 and h == h.upper()
    assert api.document("apis/apps/v1").hash == h
    assert api.document("apis/nope/v1") is None


def test_hashes_are_stable_and_follow_changes() -> None:
    reg = registry.Registry(builtin.builtin_resources())
    api = openapi.OpenAPI(reg)
    before = dict(api.hashes())
    assert openapi.OpenAPI(registry.Registry(builtin.builtin_resources())).hashes() == before
    apps = api.document("apis/apps/v1")
    reg.add([crontab()])
    after = api.hashes()
    assert after["apis/apps/v1"] == before["apis/apps/v1"]
    assert api.document("apis/apps/v1") is apps  # unchanged inputs: not rebuilt
    assert "apis/stable.example.com/v1" in after
    assert "apis/stable.example.com/v1" in orjson.loads(api.index())["paths"]
    reg.remove("stable.example.com", "crontabs")
    assert api.document("apis/stable.example.com/v1") is None


# -- structure -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["api/v1", "apis/apps/v1", "apis/batch/v1", "apis/k3s.cattle.io/v1", "apis/authentication.k8s.io/v1"],
)
def test_document_structure(api: openapi.OpenAPI, path: str) -> None:
    doc = load(api, path)
    assert doc["openapi"].startswith("3.0")
    assert doc["info"]["title"] == "Kubernetes"
    schemas = doc["components"]["schemas"]
    for ref in refs(doc):
        assert ref.startswith(openapi.REF_PREFIX), ref
        assert ref.removeprefix(openapi.REF_PREFIX) in schemas, ref
    op_ids = []
    for route, _, op in operations(doc):
        assert route.startswith("/api/v1/" if path == "api/v1" else f"/{path}/")
        assert op["x-kubernetes-action"] in ACTIONS
        assert set(op["x-kubernetes-group-version-kind"]) == {"group", "version", "kind"}
        assert "200" in op["responses"] or "201" in op["responses"]
        op_ids.append(op["operationId"])
    assert len(op_ids) == len(set(op_ids))
    for item in doc["paths"].values():
        for param in item.get("parameters", []):
            assert param["in"] in ("path", "query")


def test_every_kind_is_explainable_and_validated(api: openapi.OpenAPI) -> None:
    """kubectl explain finds the schema by GVK; kubectl's verifier wants a PATCH with fieldValidation."""
    reg = registry.Registry(builtin.builtin_resources())
    for group, versions in reg.groups():
        for version in versions:
            doc = load(api, openapi.document_path(group, version))
            kinds = [
                gvk
                for schema in doc["components"]["schemas"].values()
                for gvk in schema.get("x-kubernetes-group-version-kind", [])
            ]
            for info in reg.resources(group, version):
                gvk = {"group": group, "kind": info.kind, "version": version}
                assert gvk in kinds, gvk
                if "patch" in info.verbs:
                    ops = patch_ops(doc, info.kind)
                    assert ops, info.plural
                    for op in ops:
                        names = {p["name"] for p in op["parameters"] if p["in"] == "query"}
                        assert {"dryRun", "fieldManager", "fieldValidation", "force"} <= names


def test_patch_accepts_the_four_patch_types(api: openapi.OpenAPI) -> None:
    doc = load(api, "api/v1")
    op = doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"]
    assert set(op["requestBody"]["content"]) == set(openapi.PATCH_TYPES)
    assert op["x-kubernetes-action"] == "patch"
    assert op["x-kubernetes-group-version-kind"] == {"group": "", "kind": "Pod", "version": "v1"}
    status = doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/status"]["patch"]
    assert "application/strategic-merge-patch+json" in status["requestBody"]["content"]


def test_paths_of_a_namespaced_resource(api: openapi.OpenAPI) -> None:
    paths = load(api, "apis/apps/v1")["paths"]
    coll = paths["/apis/apps/v1/namespaces/{namespace}/deployments"]
    assert coll["get"]["x-kubernetes-action"] == "list"
    assert coll["post"]["operationId"] == "createAppsV1NamespacedDeployment"
    assert coll["delete"]["x-kubernetes-action"] == "deletecollection"
    item = paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]
    assert {"get", "put", "patch", "delete"} <= set(item)
    assert [p["name"] for p in item["parameters"]] == ["name", "namespace", "pretty"]
    assert paths["/apis/apps/v1/deployments"]["get"]["operationId"] == "listAppsV1DeploymentForAllNamespaces"
    assert (
        paths["/apis/apps/v1/watch/namespaces/{namespace}/deployments"]["get"]["x-kubernetes-action"]
        == "watchlist"
    )
    scale = paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]
    assert scale["patch"]["x-kubernetes-group-version-kind"] == {
        "group": "autoscaling",
        "kind": "Scale",
        "version": "v1",
    }
    schemas = load(api, "apis/apps/v1")["components"]["schemas"]
    assert "io.k8s.api.autoscaling.v1.Scale" in schemas


def test_core_subresources_and_virtual_resources(api: openapi.OpenAPI) -> None:
    paths = load(api, "api/v1")["paths"]
    pod = "/api/v1/namespaces/{namespace}/pods/{name}"
    assert paths[f"{pod}/binding"]["post"]["x-kubernetes-group-version-kind"]["kind"] == "Binding"
    assert paths[f"{pod}/eviction"]["post"]["x-kubernetes-group-version-kind"]["group"] == "policy"
    assert paths[f"{pod}/exec"]["get"]["x-kubernetes-action"] == "connect"
    assert {p["name"] for p in paths[f"{pod}/exec"]["post"]["parameters"]} >= {"command", "container", "tty"}
    assert "follow" in {p["name"] for p in paths[f"{pod}/log"]["get"]["parameters"]}
    token = paths["/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token"]["post"]
    assert token["x-kubernetes-group-version-kind"]["kind"] == "TokenRequest"
    assert set(paths["/api/v1/namespaces/{name}/finalize"]) == {"put", "parameters"}
    assert set(paths["/api/v1/namespaces/{namespace}/bindings"]) == {"post", "parameters"}
    reviews = load(api, "apis/authentication.k8s.io/v1")["paths"]
    assert set(reviews["/apis/authentication.k8s.io/v1/tokenreviews"]) == {"post", "parameters"}


# -- schemas -------------------------------------------------------------------------------------


def test_pod_schema(api: openapi.OpenAPI) -> None:
    schemas = load(api, "api/v1")["components"]["schemas"]
    pod = schemas[POD]
    assert pod["x-kubernetes-group-version-kind"] == [{"group": "", "kind": "Pod", "version": "v1"}]
    assert pod["description"].startswith("Pod is a collection of containers")
    assert pod["properties"]["spec"]["allOf"] == [{"$ref": openapi.REF_PREFIX + "io.k8s.api.core.v1.PodSpec"}]
    containers = schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
    assert containers["type"] == "array"
    assert containers["items"] == {"$ref": openapi.REF_PREFIX + "io.k8s.api.core.v1.Container"}
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    assert containers["x-kubernetes-patch-strategy"] == "merge"
    assert containers["x-kubernetes-list-type"] == "map"
    assert containers["x-kubernetes-list-map-keys"] == ["name"]
    assert "containers" in schemas["io.k8s.api.core.v1.PodSpec"]["required"]
    volumes = schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["volumes"]
    assert volumes["x-kubernetes-patch-strategy"] == "merge,retainKeys"
    container = schemas["io.k8s.api.core.v1.Container"]
    assert container["required"] == ["name"]
    assert container["properties"]["ports"]["x-kubernetes-list-map-keys"] == ["containerPort", "protocol"]
    assert container["properties"]["args"] == {
        "type": "array",
        "items": {"type": "string"},
        "description": container["properties"]["args"]["description"],
    }
    limits = schemas["io.k8s.api.core.v1.ResourceRequirements"]["properties"]["limits"]
    assert limits["additionalProperties"] == {
        "$ref": openapi.REF_PREFIX + "io.k8s.apimachinery.pkg.api.resource.Quantity"
    }
    meta = schemas["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["properties"]
    assert meta["labels"]["additionalProperties"] == {"type": "string"}
    assert meta["finalizers"]["x-kubernetes-list-type"] == "set"
    assert meta["ownerReferences"]["x-kubernetes-patch-merge-key"] == "uid"
    assert schemas["io.k8s.apimachinery.pkg.apis.meta.v1.Time"] == {
        "description": schemas["io.k8s.apimachinery.pkg.apis.meta.v1.Time"]["description"],
        "type": "string",
        "format": "date-time",
    }
    assert schemas["io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"]["x-kubernetes-map-type"] == "atomic"


def test_scalar_types(api: openapi.OpenAPI) -> None:
    schemas = load(api, "api/v1")["components"]["schemas"]
    ios = schemas["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]
    assert ios["format"] == "int-or-string" and ios["x-kubernetes-int-or-string"] is True
    assert {"type": "integer"} in ios["oneOf"] and {"type": "string"} in ios["oneOf"]
    quantity = schemas["io.k8s.apimachinery.pkg.api.resource.Quantity"]
    assert {"type": "string"} in quantity["oneOf"]
    secret = schemas["io.k8s.api.core.v1.Secret"]["properties"]["data"]
    assert secret["additionalProperties"] == {"type": "string", "format": "byte"}
    port = schemas["io.k8s.api.core.v1.ServicePort"]["properties"]["targetPort"]
    assert port["allOf"] == [{"$ref": openapi.REF_PREFIX + "io.k8s.apimachinery.pkg.util.intstr.IntOrString"}]


def test_custom_resource_document() -> None:
    reg = registry.Registry(builtin.builtin_resources())
    reg.add([crontab()])
    doc = load(openapi.OpenAPI(reg), "apis/stable.example.com/v1")
    schemas = doc["components"]["schemas"]
    schema = schemas["com.example.stable.v1.CronTab"]
    assert schema["x-kubernetes-group-version-kind"] == [
        {"group": "stable.example.com", "kind": "CronTab", "version": "v1"}
    ]
    assert schema["properties"]["spec"]["properties"]["cronSpec"]["description"] == "When to run."
    assert schema["properties"]["metadata"]["allOf"][0]["$ref"].endswith("meta.v1.ObjectMeta")
    assert "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta" in schemas
    listed = schemas["com.example.stable.v1.CronTabList"]
    assert listed["x-kubernetes-group-version-kind"][0]["kind"] == "CronTabList"
    item = doc["paths"]["/apis/stable.example.com/v1/namespaces/{namespace}/crontabs/{name}"]
    # No strategic merge patch for custom resources: kubectl apply sends a JSON merge patch.
    assert "application/strategic-merge-patch+json" not in item["patch"]["requestBody"]["content"]
    assert "application/apply-patch+yaml" in item["patch"]["requestBody"]["content"]
    assert "fieldValidation" in {p["name"] for p in item["patch"]["parameters"]}
    status = doc["paths"]["/apis/stable.example.com/v1/namespaces/{namespace}/crontabs/{name}/status"]
    assert status["patch"]["x-kubernetes-group-version-kind"]["kind"] == "CronTab"
    assert "io.k8s.api.autoscaling.v1.Scale" in schemas
    for ref in refs(doc):
        assert ref.removeprefix(openapi.REF_PREFIX) in schemas


def test_custom_resource_without_schema() -> None:
    reg = registry.Registry(builtin.builtin_resources())
    reg.add([crontab(schema=None)])
    schemas = load(openapi.OpenAPI(reg), "apis/stable.example.com/v1")["components"]["schemas"]
    schema = schemas["com.example.stable.v1.CronTab"]
    assert schema["x-kubernetes-preserve-unknown-fields"] is True
    assert schema["x-kubernetes-group-version-kind"][0]["kind"] == "CronTab"


def test_addon_document(api: openapi.OpenAPI) -> None:
    schemas = load(api, "apis/k3s.cattle.io/v1")["components"]["schemas"]
    addon = schemas["io.cattle.k3s.v1.Addon"]
    assert set(addon["properties"]["spec"]["properties"]) == {"source", "checksum"}


# -- v2 ------------------------------------------------------------------------------------------


def test_v2_json(api: openapi.OpenAPI) -> None:
    doc = orjson.loads(api.v2_json())
    assert doc["swagger"] == "2.0"
    definitions = doc["definitions"]
    for ref in refs(doc):
        assert ref.startswith("#/definitions/"), ref
        assert ref.removeprefix("#/definitions/") in definitions, ref
    for scalar in (
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
        "io.k8s.apimachinery.pkg.api.resource.Quantity",
    ):
        assert "oneOf" not in definitions[scalar]  # Swagger 2.0 has no oneOf
    assert definitions["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["type"] == "string"
    spec = definitions["io.k8s.api.core.v1.Pod"]["properties"]["spec"]
    assert spec["$ref"] == "#/definitions/io.k8s.api.core.v1.PodSpec"
    patch = doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"]
    assert set(patch["consumes"]) == set(openapi.PATCH_TYPES)
    names = {p["name"] for p in patch["parameters"]}
    assert {"body", "fieldValidation", "fieldManager", "dryRun", "force"} <= names
    assert patch["x-kubernetes-group-version-kind"]["kind"] == "Pod"
    assert "/apis/apps/v1/namespaces/{namespace}/deployments" in doc["paths"]


def test_v2_protobuf_is_a_gnostic_document(api: openapi.OpenAPI) -> None:
    # field 1 (swagger) = "2.0": the full document is in tests/unit/test_openapi_v2_proto.py
    assert api.v2_protobuf()[:5] == b"\x0a\x032.0"


# -- cost ----------------------------------------------------------------------------------------


def test_generation_is_lazy_and_cached() -> None:
    openapi.load_module.cache_clear()
    openapi.model_schema.cache_clear()
    started = time.perf_counter()
    api = openapi.OpenAPI(registry.Registry(builtin.builtin_resources()))
    api.index()
    index_time = time.perf_counter() - started
    assert openapi.load_module.cache_info().currsize == 0  # the index builds no document
    started = time.perf_counter()
    first = api.document("api/v1")
    first_time = time.perf_counter() - started
    started = time.perf_counter()
    assert api.document("api/v1") is first
    cached_time = time.perf_counter() - started
    print(
        f"index {index_time * 1000:.1f} ms, api/v1 {first_time * 1000:.1f} ms, cached {cached_time * 1e6:.1f} us"
    )


# -- upstream ------------------------------------------------------------------------------------


def upstream_definitions() -> dict:
    try:
        import kubernetes_validate
    except ImportError:
        pytest.skip("kubernetes-validate is not installed: cannot compare with upstream's schemas")
    base = pathlib.Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    path = base / "v1.37.0-local" / "_definitions.json"
    if not path.exists():
        pytest.skip(f"kubernetes-validate has no 1.37 schemas at {path}")
    data = json.loads(path.read_text())
    return data.get("$defs") or data.get("definitions") or {}


def upstream_type(schema: dict) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    return kind


def test_schemas_match_upstream(api: openapi.OpenAPI) -> None:
    upstream = upstream_definitions()
    ours: dict[str, dict] = {}
    for path in api.hashes():
        ours.update(load(api, path)["components"]["schemas"])
    compared = 0
    for name, schema in ours.items():
        theirs = upstream.get(name)
        if theirs is None:
            assert name.startswith("io.cattle.k3s."), f"{name} is not an upstream type"
            continue
        compared += 1
        props, their_props = schema.get("properties") or {}, theirs.get("properties") or {}
        assert set(props) == set(their_props), name
        assert set(schema.get("required", [])) == set(theirs.get("required", [])), name
        assert schema.get("x-kubernetes-map-type") == theirs.get("x-kubernetes-map-type"), name
        for field, prop in props.items():
            their = their_props[field]
            where = f"{name}.{field}"
            for ext in ("x-kubernetes-patch-merge-key", "x-kubernetes-patch-strategy"):
                assert prop.get(ext) == their.get(ext), f"{where} {ext}"
            if their.get("x-kubernetes-list-type") in ("map", "set"):
                assert prop.get("x-kubernetes-list-type") == their["x-kubernetes-list-type"], where
                assert prop.get("x-kubernetes-list-map-keys") == their.get("x-kubernetes-list-map-keys"), (
                    where
                )
            if prop.get("type") and upstream_type(their):
                assert prop["type"] == upstream_type(their), where
    assert compared > 300


def test_respond() -> None:
    reg = registry.Registry(builtin.builtin_resources())
    index = openapi.respond(reg, "/openapi/v3")
    url = orjson.loads(index.body)["paths"]["apis/apps/v1"]["serverRelativeURL"]
    path, _, h = url.partition("?hash=")
    current = openapi.respond(reg, path, query={"hash": [h]})
    assert current.status == 200 and ("cache-control", "public, immutable") in current.headers
    assert orjson.loads(current.body)["openapi"].startswith("3.0")
    stale = openapi.respond(reg, path, query={"hash": ["0" * 128]})
    assert stale.status == 301 and ("location", url) in stale.headers
    unhashed = openapi.respond(reg, path)
    assert unhashed.status == 200 and ("cache-control", "no-cache, private") in unhashed.headers
    proto = openapi.respond(reg, "/openapi/v2", accept=openapi.PROTOBUF_V2)
    assert (proto.status, proto.content_type) == (200, openapi.PROTOBUF_V2) and proto.body
    v2 = openapi.respond(reg, "/openapi/v2", accept="application/json")
    assert orjson.loads(v2.body)["swagger"] == "2.0"
    with pytest.raises(errors.ApiError) as caught:
        openapi.respond(reg, "/openapi/v3/apis/nope/v1")
    assert caught.value.code == 404
