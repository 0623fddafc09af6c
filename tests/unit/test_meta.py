"""Object metadata: identities, timestamps, generated names and ObjectMeta validation messages."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from services.machinery import errors, meta

SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    r"'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and "
    "end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)


def test_new_uid_is_uuid4() -> None:
    assert uuid.UUID(meta.new_uid()).version == 4


def test_timestamps() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta.now_rfc3339())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", meta.now_micro())
    later = meta.rfc3339_in(30)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", later)
    assert later > meta.now_rfc3339()


def test_generate_name() -> None:
    name = meta.generate_name("web-")
    assert re.fullmatch(r"web-[bcdfghjklmnpqrstvwxz2456789]{5}", name)
    long = meta.generate_name("x" * 100)
    assert len(long) == 63 and long.startswith("x" * 58)


def test_dns_checks() -> None:
    assert meta.is_dns1123_label("my-name")
    assert not meta.is_dns1123_label("my.name")
    assert not meta.is_dns1123_label("a" * 64)
    assert meta.is_dns1123_subdomain("example.com")
    assert not meta.is_dns1123_subdomain("Example.com")
    assert not meta.is_dns1123_subdomain("a" * 254)
    assert meta.dns1123_label_errors("my.name") == ["must not contain dots"]
    assert meta.dns1123_label_errors("-x") == [LABEL_MSG]
    assert meta.dns1123_subdomain_errors("Bad_Name") == [SUBDOMAIN_MSG]


def test_qualified_names() -> None:
    assert meta.qualified_name_errors("app") == []
    assert meta.qualified_name_errors("app.kubernetes.io/name") == []
    assert meta.qualified_name_errors("/x") == ["prefix part must be non-empty"]
    assert meta.qualified_name_errors("x/") == [
        "name part must be non-empty",
        "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
        "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
        "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
    ]
    assert meta.qualified_name_errors("a/b/c")[0].startswith("a qualified name must consist of")
    assert meta.qualified_name_errors("x" * 64) == ["name part must be no more than 63 characters"]
    assert meta.qualified_name_errors("Bad_Prefix/x")[0].startswith(
        "prefix part a lowercase RFC 1123 subdomain"
    )


def test_label_values() -> None:
    assert meta.label_value_errors("") == []
    assert meta.label_value_errors("My_Value.1") == []
    assert meta.label_value_errors("-x")[0].startswith("a valid label must be an empty string or consist of")
    assert meta.label_value_errors("v" * 64) == ["must be no more than 63 characters"]


def validate(md: Any, *, namespaced: bool = True, rule: meta.NameRule = "subdomain") -> list[errors.Cause]:
    return meta.validate_object_meta(
        {"metadata": md}, namespaced=namespaced, name_rule=rule, kind="ConfigMap"
    )


def test_valid_object_meta() -> None:
    md = {
        "name": "web.example",
        "namespace": "default",
        "labels": {"app.kubernetes.io/name": "web"},
        "annotations": {"Example.com/Note": "x"},
        "finalizers": ["kubernetes", "example.com/cleanup"],
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u"}],
    }
    assert validate(md) == []


def test_name_required_unless_generate_name() -> None:
    (cause,) = validate({"namespace": "default"})
    assert cause == errors.Cause(
        "FieldValueRequired", "Required value: name or generateName is required", "metadata.name"
    )
    assert validate({"generateName": "web-", "namespace": "default"}) == []


def test_invalid_names() -> None:
    (cause,) = validate({"name": "Bad_Name", "namespace": "default"})
    assert cause.reason == "FieldValueInvalid"
    assert cause.field == "metadata.name"
    assert cause.message == f'Invalid value: "Bad_Name": {SUBDOMAIN_MSG}'
    (cause,) = validate({"name": "a.b"}, namespaced=False, rule="label")
    assert cause.message == 'Invalid value: "a.b": must not contain dots'
    assert [c.message for c in validate({"name": "a/b"}, namespaced=False, rule="path")] == [
        "Invalid value: \"a/b\": may not contain '/'"
    ]
    assert validate({"name": "system:admin"}, namespaced=False, rule="path") == []
    (cause,) = validate({"generateName": "Bad-", "namespace": "default"})
    assert cause.field == "metadata.generateName"


def test_namespace_rules() -> None:
    (cause,) = validate({"name": "x"})
    assert (cause.reason, cause.field) == ("FieldValueRequired", "metadata.namespace")
    (cause,) = validate({"name": "x", "namespace": "a"}, namespaced=False)
    assert cause == errors.Cause(
        "FieldValueForbidden", "Forbidden: not allowed on this type", "metadata.namespace"
    )
    (cause,) = validate({"name": "x", "namespace": "Bad"})
    assert cause.field == "metadata.namespace"


def test_label_and_annotation_errors() -> None:
    causes = validate({"name": "x", "namespace": "d", "labels": {"-k": "v", "k": "-v"}})
    assert [c.field for c in causes] == ["metadata.labels", "metadata.labels"]
    assert causes[0].message.startswith('Invalid value: "-k": name part must consist of')
    assert causes[1].message.startswith('Invalid value: "-v": a valid label must be')
    big = {"a": "x" * (256 * 1024)}
    (cause,) = validate({"name": "x", "namespace": "d", "annotations": big})
    assert cause == errors.Cause(
        "FieldValueTooLong", "Too long: may not be more than 262144 bytes", "metadata.annotations"
    )


def test_finalizer_and_owner_errors() -> None:
    causes = validate(
        {"name": "x", "namespace": "d", "finalizers": ["custom", "orphan", "foregroundDeletion"]}
    )
    messages = [c.message for c in causes]
    assert (
        'Invalid value: "custom": name is neither a standard finalizer name nor is it fully qualified'
        in messages
    )
    assert any("cannot be both set" in m for m in messages)
    refs = [
        {"apiVersion": "v1", "kind": "A", "name": "a", "uid": "1", "controller": True},
        {"apiVersion": "v1", "kind": "B", "name": "b", "uid": "2", "controller": True},
        {"kind": "C", "name": "c", "uid": "3"},
    ]
    causes = validate({"name": "x", "namespace": "d", "ownerReferences": refs})
    assert {c.field for c in causes} == {"metadata.ownerReferences"}
    assert any("version must not be empty" in c.message for c in causes)
    assert any("Only one reference can have Controller set to true" in c.message for c in causes)


@pytest.mark.parametrize("generation", [-1])
def test_negative_generation(generation: int) -> None:
    (cause,) = validate({"name": "x", "namespace": "d", "generation": generation})
    assert cause.message == "Invalid value: -1: must be greater than or equal to 0"


def test_causes_feed_invalid_error() -> None:
    err = errors.invalid("ConfigMap", "Bad_Name", validate({"name": "Bad_Name", "namespace": "default"}))
    assert err.code == 422
    assert err.message.startswith(
        'ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": '
    )
