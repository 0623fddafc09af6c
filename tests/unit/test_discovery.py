"""Discovery documents as kubectl 1.20, kubectl 1.37 and the Python client read them."""

from __future__ import annotations

import orjson
import pytest

from services.apiserver import builtin, discovery, registry

KUBECTL_137_ACCEPT = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
KUBECTL_126_ACCEPT = (
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json;q=0.9"
)


@pytest.fixture
def reg() -> registry.Registry:
    return registry.Registry(builtin.builtin_resources())


def crontab() -> registry.ResourceInfo:
    return registry.ResourceInfo(
        group="stable.example.com",
        version="v1",
        kind="CronTab",
        plural="crontabs",
        singular="crontab",
        namespaced=True,
        verbs=builtin.CRUD,
        short_names=("ct",),
        categories=("all",),
        subresources=("status", "scale"),
        custom=True,
    )


def entry(resource_list: dict, name: str) -> dict:
    return next(r for r in resource_list["resources"] if r["name"] == name)


def test_version_has_every_field_the_python_client_requires() -> None:
    info = discovery.version_info(git_commit="abc")
    for field in (
        "major",
        "minor",
        "gitVersion",
        "gitCommit",
        "gitTreeState",
        "buildDate",
        "goVersion",
        "compiler",
        "platform",
    ):
        assert isinstance(info[field], str), field
    assert (info["major"], info["minor"]) == ("1", "37")
    assert info["gitVersion"] == "v1.37.0+k3spy"
    assert "/" in info["platform"]


def test_api_versions() -> None:
    doc = discovery.api_versions("10.0.0.1:6443")
    assert doc["kind"] == "APIVersions" and doc["versions"] == ["v1"]
    assert doc["serverAddressByClientCIDRs"] == [
        {"clientCIDR": "0.0.0.0/0", "serverAddress": "10.0.0.1:6443"}
    ]


def test_group_list_excludes_core_and_names_preferred(reg: registry.Registry) -> None:
    doc = discovery.api_group_list(reg)
    assert doc["kind"] == "APIGroupList" and doc["apiVersion"] == "v1"
    names = [g["name"] for g in doc["groups"]]
    assert "" not in names and "apps" in names and "k3s.cattle.io" in names
    apps = doc["groups"][names.index("apps")]
    assert apps["versions"] == [{"groupVersion": "apps/v1", "version": "v1"}]
    assert apps["preferredVersion"] == {"groupVersion": "apps/v1", "version": "v1"}
    assert discovery.api_group(reg, "apps")["kind"] == "APIGroup"
    assert discovery.api_group(reg, "nope") is None


def test_core_resource_list(reg: registry.Registry) -> None:
    doc = discovery.api_resource_list(reg, "", "v1")
    assert doc["groupVersion"] == "v1" and doc["kind"] == "APIResourceList"
    pods = entry(doc, "pods")
    assert pods["singularName"] == "pod" and pods["namespaced"] is True and pods["kind"] == "Pod"
    assert pods["shortNames"] == ["po"] and pods["categories"] == ["all"]
    assert set(pods["verbs"]) == set(builtin.CRUD)
    status = entry(doc, "pods/status")
    assert status["kind"] == "Pod" and status["verbs"] == ["get", "patch", "update"] and "group" not in status
    eviction = entry(doc, "pods/eviction")
    assert (eviction["group"], eviction["version"], eviction["kind"]) == ("policy", "v1", "Eviction")
    assert eviction["verbs"] == ["create"]
    binding = entry(doc, "pods/binding")
    assert binding["kind"] == "Binding" and binding["verbs"] == ["create"]
    token = entry(doc, "serviceaccounts/token")
    assert (token["group"], token["kind"]) == ("authentication.k8s.io", "TokenRequest")
    assert entry(doc, "pods/log")["verbs"] == ["get"]
    assert entry(doc, "pods/exec")["verbs"] == ["create", "get"]
    assert entry(doc, "namespaces/finalize")["verbs"] == ["update"]
    assert "deletecollection" not in entry(doc, "namespaces")["verbs"]
    assert entry(doc, "bindings")["verbs"] == ["create"]
    names = [r["name"] for r in doc["resources"]]
    assert names == sorted(names)


def test_scale_subresource_is_autoscaling_v1(reg: registry.Registry) -> None:
    doc = discovery.api_resource_list(reg, "apps", "v1")
    assert doc["groupVersion"] == "apps/v1"
    scale = entry(doc, "deployments/scale")
    assert (scale["group"], scale["version"], scale["kind"]) == ("autoscaling", "v1", "Scale")
    assert scale["verbs"] == ["get", "patch", "update"]
    assert entry(doc, "deployments")["shortNames"] == ["deploy"]
    assert discovery.api_resource_list(reg, "apps", "v9") is None


def test_aggregated_core(reg: registry.Registry) -> None:
    doc = discovery.aggregated(reg, core=True)
    assert doc["kind"] == "APIGroupDiscoveryList" and doc["apiVersion"] == "apidiscovery.k8s.io/v2"
    assert len(doc["items"]) == 1
    core = doc["items"][0]
    assert "name" not in core["metadata"]
    (v1,) = core["versions"]
    assert v1["version"] == "v1" and v1["freshness"] == "Current"
    pods = next(r for r in v1["resources"] if r["resource"] == "pods")
    assert pods["responseKind"] == {"group": "", "version": "v1", "kind": "Pod"}
    assert pods["scope"] == "Namespaced" and pods["singularResource"] == "pod"
    subs = {s["subresource"]: s for s in pods["subresources"]}
    assert subs["eviction"]["responseKind"] == {"group": "policy", "version": "v1", "kind": "Eviction"}
    nodes = next(r for r in v1["resources"] if r["resource"] == "nodes")
    assert nodes["scope"] == "Cluster" and nodes["shortNames"] == ["no"]


def test_aggregated_groups(reg: registry.Registry) -> None:
    doc = discovery.aggregated(reg, core=False)
    names = [item["metadata"]["name"] for item in doc["items"]]
    assert "" not in names and names[0] == "apps"
    apps = doc["items"][0]["versions"][0]["resources"]
    deployments = next(r for r in apps if r["resource"] == "deployments")
    scale = next(s for s in deployments["subresources"] if s["subresource"] == "scale")
    assert scale["responseKind"] == {"group": "autoscaling", "version": "v1", "kind": "Scale"}
    assert deployments["categories"] == ["all"]


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (KUBECTL_137_ACCEPT, "v2"),
        (KUBECTL_126_ACCEPT, "legacy"),
        ("application/json", "legacy"),
        ("", "legacy"),
        ("*/*", "legacy"),
        ("application/json, application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList", "legacy"),
        (
            "application/json;q=0.5, application/json;as=APIGroupDiscoveryList;v=v2;g=apidiscovery.k8s.io",
            "v2",
        ),
        ("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;q=0", "legacy"),
    ],
)
def test_negotiate(accept: str, expected: str) -> None:
    assert discovery.negotiate(accept) == expected


def test_served_documents_carry_content_type_and_etag(reg: registry.Registry) -> None:
    disc = discovery.Discovery(reg, server_address="127.0.0.1:6443")
    v2 = disc.apis(KUBECTL_137_ACCEPT)
    assert v2.content_type == discovery.V2_CONTENT_TYPE
    assert v2.etag.startswith('"') and v2.etag.endswith('"')
    assert orjson.loads(v2.body)["kind"] == "APIGroupDiscoveryList"
    legacy = disc.apis("application/json")
    assert legacy.content_type == "application/json"
    assert orjson.loads(legacy.body)["kind"] == "APIGroupList"
    assert orjson.loads(disc.api("application/json").body)["kind"] == "APIVersions"
    assert orjson.loads(disc.api(KUBECTL_137_ACCEPT).body)["items"][0]["versions"][0]["version"] == "v1"
    assert orjson.loads(disc.version().body)["minor"] == "37"
    assert disc.resources("", "v1") is disc.resources("", "v1")  # cached
    assert disc.resources("nope", "v1") is None
    assert disc.group("apps") is not None and disc.group("nope") is None


def test_cache_follows_registry_changes(reg: registry.Registry) -> None:
    disc = discovery.Discovery(reg, server_address="127.0.0.1:6443")
    before = disc.apis(KUBECTL_137_ACCEPT)
    assert disc.apis(KUBECTL_137_ACCEPT) is before
    assert disc.resources("stable.example.com", "v1") is None
    reg.add([crontab()])
    after = disc.apis(KUBECTL_137_ACCEPT)
    assert after.etag != before.etag
    assert "stable.example.com" in [i["metadata"]["name"] for i in orjson.loads(after.body)["items"]]
    crontabs = orjson.loads(disc.resources("stable.example.com", "v1").body)
    assert entry(crontabs, "crontabs")["shortNames"] == ["ct"]
    assert entry(crontabs, "crontabs/status")["kind"] == "CronTab"
    assert entry(crontabs, "crontabs/scale")["kind"] == "Scale"
    reg.remove("stable.example.com", "crontabs")
    assert disc.resources("stable.example.com", "v1") is None
    assert disc.apis(KUBECTL_137_ACCEPT).etag == before.etag


def test_etag_matches() -> None:
    assert discovery.etag_matches('"abc"', '"abc"')
    assert discovery.etag_matches('"abc"', 'W/"abc", "def"')
    assert discovery.etag_matches('"abc"', "*")
    assert not discovery.etag_matches('"abc"', '"def"')
    assert not discovery.etag_matches('"abc"', None)


def test_respond(reg: registry.Registry) -> None:
    v2 = discovery.respond(reg, "/apis", accept=KUBECTL_137_ACCEPT)
    assert v2 is not None and v2.status == 200 and v2.content_type == discovery.V2_CONTENT_TYPE
    headers = dict(v2.headers)
    assert headers["vary"] == "Accept" and headers["cache-control"] == "public"
    again = discovery.respond(reg, "/apis", accept=KUBECTL_137_ACCEPT, if_none_match=headers["etag"])
    assert again is not None and again.status == 304 and again.body == b""
    api = discovery.respond(reg, "/api", accept="application/json", server_address="10.0.0.1:6443")
    assert orjson.loads(api.body)["serverAddressByClientCIDRs"][0]["serverAddress"] == "10.0.0.1:6443"
    assert orjson.loads(discovery.respond(reg, "/api/v1").body)["groupVersion"] == "v1"
    assert orjson.loads(discovery.respond(reg, "/apis/apps").body)["kind"] == "APIGroup"
    assert orjson.loads(discovery.respond(reg, "/apis/apps/v1").body)["groupVersion"] == "apps/v1"
    for missing in ("/apis/nope", "/apis/apps/v2", "/api/v2", "/apis/apps/v1/x/y"):
        assert discovery.respond(reg, missing) is None, missing
