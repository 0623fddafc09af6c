"""Protobuf field tables of the non-core API groups: shape, cross-references, known field numbers."""

from __future__ import annotations

import importlib
import re

import pytest

from services.machinery.k8sproto import schema

GROUP_MODULES = (
    "apps_v1",
    "batch_v1",
    "rbac_v1",
    "authorization_v1",
    "authentication_v1",
    "policy_v1",
    "networking_v1",
    "coordination_v1",
    "storage_v1",
    "scheduling_v1",
    "discovery_v1",
    "events_v1",
    "autoscaling_v1",
    "apiextensions_v1",
)

SCALARS = {"string", "bytes", "int32", "int64", "bool", "double", "float"}
MAP_RE = re.compile(r"^map<string,(.+)>$")
NAME_RE = re.compile(r"^k8s\.io\.[A-Za-z0-9_.]+\.[A-Z][A-Za-z0-9]*$")

PACKAGES = {
    "apps_v1": "k8s.io.api.apps.v1.",
    "batch_v1": "k8s.io.api.batch.v1.",
    "rbac_v1": "k8s.io.api.rbac.v1.",
    "authorization_v1": "k8s.io.api.authorization.v1.",
    "authentication_v1": "k8s.io.api.authentication.v1.",
    "policy_v1": "k8s.io.api.policy.v1.",
    "networking_v1": "k8s.io.api.networking.v1.",
    "coordination_v1": "k8s.io.api.coordination.v1.",
    "storage_v1": "k8s.io.api.storage.v1.",
    "scheduling_v1": "k8s.io.api.scheduling.v1.",
    "discovery_v1": "k8s.io.api.discovery.v1.",
    "events_v1": "k8s.io.api.events.v1.",
    "autoscaling_v1": "k8s.io.api.autoscaling.v1.",
    "apiextensions_v1": "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.",
}


def load(name: str):
    return importlib.import_module(f"services.machinery.k8sproto.{name}")


@pytest.fixture(scope="module")
def group_tables() -> dict[str, dict]:
    return {name: load(name).MESSAGES for name in GROUP_MODULES}


@pytest.fixture(scope="module")
def merged(group_tables) -> dict:
    """The other engineer's merged tables, plus these modules (which must agree with them)."""
    tables = dict(schema.all_messages())
    for name, messages in group_tables.items():
        for full, fields in messages.items():
            if full in tables:
                assert tuple(tables[full]) == tuple(fields), f"{full}: all_messages() disagrees with {name}"
            tables[full] = fields
    return tables


def value_type(type_: str) -> str:
    match = MAP_RE.match(type_)
    return match.group(1) if match else type_


def message_refs(fields) -> set[str]:
    return {value_type(f.type) for f in fields} - SCALARS


def field(messages: dict, message: str, json_name: str):
    found = [f for f in messages[message] if f.json_name == json_name]
    assert len(found) == 1, f"{message}.{json_name}: {found}"
    return found[0]


@pytest.mark.parametrize("module", GROUP_MODULES)
def test_fields_well_formed(module, group_tables, merged):
    messages = group_tables[module]
    assert messages, module
    for full, fields in messages.items():
        assert full.startswith(PACKAGES[module]), full
        assert NAME_RE.match(full), full
        assert isinstance(fields, tuple), full
        numbers = [f.number for f in fields]
        names = [f.json_name for f in fields]
        assert len(set(numbers)) == len(numbers), f"{full}: duplicate field numbers {numbers}"
        assert len(set(names)) == len(names), f"{full}: duplicate JSON names {names}"
        for f in fields:
            where = f"{full}.{f.json_name}"
            assert isinstance(f.number, int) and 1 <= f.number < 19000, where
            assert isinstance(f.json_name, str) and f.json_name.strip() == f.json_name and f.json_name, where
            assert isinstance(f.repeated, bool), where
            map_value = MAP_RE.match(f.type)
            if map_value:
                assert not f.repeated, f"{where}: a map is never repeated"
                value = map_value.group(1)
                assert value in {"string", "bytes"} or value in merged, f"{where}: map value {value}"
            else:
                assert f.type in SCALARS or f.type in merged, f"{where}: unknown type {f.type!r}"


@pytest.mark.parametrize("module", GROUP_MODULES)
def test_references_resolve(module, group_tables, merged):
    missing = {
        (full, ref)
        for full, fields in group_tables[module].items()
        for ref in message_refs(fields)
        if ref not in merged
    }
    assert not missing, sorted(missing)


def test_merged_tables_are_closed(merged):
    missing = {
        (full, ref) for full, fields in merged.items() for ref in message_refs(fields) if ref not in merged
    }
    assert not missing, sorted(missing)


def test_every_object_kind_has_a_list(group_tables):
    for messages in group_tables.values():
        for full, fields in messages.items():
            if full.endswith("List"):
                items = [f for f in fields if f.json_name == "items"]
                assert items and items[0].number == 2 and items[0].repeated, full
                assert items[0].type in messages, full
                meta = [f for f in fields if f.json_name == "metadata"]
                assert meta and meta[0].type == "k8s.io.apimachinery.pkg.apis.meta.v1.ListMeta", full


# --- special cases for the decoder ------------------------------------------------------------


def test_extra_value_marshals_as_a_list():
    for module in ("authorization_v1", "authentication_v1"):
        mod = load(module)
        assert mod.JSON_AS_ITEMS, module
        for full in mod.JSON_AS_ITEMS:
            fields = mod.MESSAGES[full]
            assert len(fields) == 1
            (items,) = fields
            assert (items.number, items.json_name, items.type, items.repeated) == (1, "items", "string", True)
    authn = load("authentication_v1").MESSAGES
    extra = field(authn, "k8s.io.api.authentication.v1.UserInfo", "extra")
    assert extra.type == "map<string,k8s.io.api.authentication.v1.ExtraValue>"
    authz = load("authorization_v1").MESSAGES
    extra = field(authz, "k8s.io.api.authorization.v1.SubjectAccessReviewSpec", "extra")
    assert (extra.number, extra.type) == (5, "map<string,k8s.io.api.authorization.v1.ExtraValue>")


def test_apiextensions_custom_json_wrappers():
    mod = load("apiextensions_v1")
    p = "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1."
    assert set(mod.CUSTOM_JSON) == {
        p + "JSON",
        p + "JSONSchemaPropsOrArray",
        p + "JSONSchemaPropsOrBool",
        p + "JSONSchemaPropsOrStringArray",
    }
    for full, how in mod.CUSTOM_JSON.items():
        assert full in mod.MESSAGES and how.strip(), full
    assert field(mod.MESSAGES, p + "JSON", "raw").type == "bytes"


def test_inline_fields_name_message_fields():
    mod = load("networking_v1")
    for full, number in mod.INLINE_FIELDS:
        (inline,) = [f for f in mod.MESSAGES[full] if f.number == number]
        assert inline.type in mod.MESSAGES and not inline.repeated


# --- known field numbers -------------------------------------------------------------------------


def test_apps_known_numbers():
    m = load("apps_v1").MESSAGES
    p = "k8s.io.api.apps.v1."
    spec = field(m, p + "Deployment", "spec")
    assert (spec.number, spec.type) == (2, p + "DeploymentSpec")
    replicas = field(m, p + "DeploymentSpec", "replicas")
    assert (replicas.number, replicas.type, replicas.repeated) == (1, "int32", False)
    assert field(m, p + "DeploymentSpec", "selector").number == 2
    template = field(m, p + "DeploymentSpec", "template")
    assert (template.number, template.type) == (3, "k8s.io.api.core.v1.PodTemplateSpec")
    assert field(m, p + "DeploymentSpec", "progressDeadlineSeconds").number == 9
    assert field(m, p + "DeploymentCondition", "lastUpdateTime").number == 6
    assert field(m, p + "RollingUpdateDeployment", "maxSurge").type == (
        "k8s.io.apimachinery.pkg.util.intstr.IntOrString"
    )
    claims = field(m, p + "StatefulSetSpec", "volumeClaimTemplates")
    assert (claims.number, claims.repeated) == (4, True)


def test_rbac_known_numbers():
    m = load("rbac_v1").MESSAGES
    p = "k8s.io.api.rbac.v1."
    role_ref = field(m, p + "RoleBinding", "roleRef")
    assert (role_ref.number, role_ref.type) == (3, p + "RoleRef")
    subjects = field(m, p + "RoleBinding", "subjects")
    assert (subjects.number, subjects.type, subjects.repeated) == (2, p + "Subject", True)
    assert field(m, p + "PolicyRule", "nonResourceURLs").number == 5


def test_authorization_known_numbers():
    m = load("authorization_v1").MESSAGES
    p = "k8s.io.api.authorization.v1."
    assert field(m, p + "SelfSubjectAccessReviewSpec", "resourceAttributes").number == 1
    assert field(m, p + "SelfSubjectAccessReviewSpec", "nonResourceAttributes").number == 2
    assert field(m, p + "SubjectAccessReviewStatus", "denied").number == 4
    assert field(m, p + "ResourceAttributes", "labelSelector").number == 9


def test_authentication_known_numbers():
    m = load("authentication_v1").MESSAGES
    p = "k8s.io.api.authentication.v1."
    audiences = field(m, p + "TokenRequestSpec", "audiences")
    assert (audiences.number, audiences.type, audiences.repeated) == (1, "string", True)
    expiration = field(m, p + "TokenRequestSpec", "expirationSeconds")
    assert (expiration.number, expiration.type) == (4, "int64")
    bound = field(m, p + "TokenRequestSpec", "boundObjectRef")
    assert (bound.number, bound.type) == (3, p + "BoundObjectReference")
    assert field(m, p + "BoundObjectReference", "uid").number == 4
    assert field(m, p + "TokenReviewStatus", "audiences").number == 4


def test_other_groups_known_numbers():
    batch = load("batch_v1").MESSAGES
    assert field(batch, "k8s.io.api.batch.v1.JobSpec", "template").number == 6
    assert field(batch, "k8s.io.api.batch.v1.CronJobSpec", "timeZone").number == 8
    lease = load("coordination_v1").MESSAGES
    renew = field(lease, "k8s.io.api.coordination.v1.LeaseSpec", "renewTime")
    assert renew.type == "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime"
    policy = load("policy_v1").MESSAGES
    disrupted = field(policy, "k8s.io.api.policy.v1.PodDisruptionBudgetStatus", "disruptedPods")
    assert disrupted.type == "map<string,k8s.io.apimachinery.pkg.apis.meta.v1.Time>"
    networking = load("networking_v1").MESSAGES
    parameters = "k8s.io.api.networking.v1.IngressClassParametersReference"
    assert field(networking, parameters, "apiGroup").number == 1
    assert field(networking, "k8s.io.api.networking.v1.IngressBackend", "service").number == 4
    slices = load("discovery_v1").MESSAGES
    assert field(slices, "k8s.io.api.discovery.v1.EndpointSlice", "addressType").number == 4
    crd = load("apiextensions_v1").MESSAGES
    p = "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1."
    assert field(crd, p + "JSONSchemaProps", "x-kubernetes-preserve-unknown-fields").number == 38
    assert field(crd, p + "JSONSchemaProps", "$ref").number == 3
    props = field(crd, p + "JSONSchemaProps", "properties")
    assert (props.number, props.type) == (29, f"map<string,{p}JSONSchemaProps>")
