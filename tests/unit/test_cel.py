"""CEL validation rules of custom resources: evaluation, upstream's messages, CRD-time compilation."""

from __future__ import annotations

from typing import Any

import pytest

from services.apiserver import cel, crds, validation


def schema_with(spec_props: dict[str, Any], *rules: dict[str, Any]) -> dict[str, Any]:
    spec = {"type": "object", "properties": spec_props, "x-kubernetes-validations": list(rules)}
    return {"type": "object", "properties": {"spec": spec}}


def obj(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": spec}


def messages(schema: dict[str, Any], new: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    return [f"{c.field}: {c.message}" for c in validation._validate_custom(schema, new, old=old)]


REPLICAS = {"minReplicas": {"type": "integer"}, "replicas": {"type": "integer"}}


def test_failed_rule_without_and_with_message() -> None:
    schema = schema_with(REPLICAS, {"rule": "self.minReplicas <= self.replicas"})
    assert messages(schema, obj(minReplicas=1, replicas=3)) == []
    assert messages(schema, obj(minReplicas=5, replicas=3)) == [
        'spec: Invalid value: "object": failed rule: self.minReplicas <= self.replicas'
    ]
    schema = schema_with(REPLICAS, {"rule": "self.minReplicas <= self.replicas", "message": " too few "})
    assert messages(schema, obj(minReplicas=5, replicas=3)) == ['spec: Invalid value: "object": too few']


def test_reasons_and_field_path() -> None:
    props = {"name": {"type": "string"}}
    cases = {
        "FieldValueForbidden": "spec.name: Forbidden: bad name",
        "FieldValueRequired": "spec.name: Required value: bad name",
        "FieldValueDuplicate": 'spec.name: Duplicate value: "object"',
        "FieldValueInvalid": 'spec.name: Invalid value: "object": bad name',
    }
    for reason, expected in cases.items():
        rule = {"rule": "self.name != 'x'", "message": "bad name", "reason": reason, "fieldPath": ".name"}
        causes = validation._validate_custom(schema_with(props, rule), obj(name="x"))
        assert [f"{c.field}: {c.message}" for c in causes] == [expected]
        assert causes[0].reason == reason


def test_message_expression_and_its_fallback() -> None:
    props = {"replicas": {"type": "integer"}}
    rule = {"rule": "self.replicas < 10", "messageExpression": "'replicas is ' + string(self.replicas)"}
    assert messages(schema_with(props, rule), obj(replicas=12)) == ['spec: Invalid value: "object": replicas is 12']
    # An expression that fails at run time gives way to the message, then to the default.
    rule = {"rule": "self.replicas < 10", "messageExpression": "self.nope", "message": "fallback"}
    assert messages(schema_with(props, rule), obj(replicas=12)) == ['spec: Invalid value: "object": fallback']


def test_rules_at_every_kind_of_node() -> None:
    props = {
        "tags": {
            "type": "array",
            "x-kubernetes-validations": [{"rule": "self.all(t, t.size() <= 3)"}],
            "items": {"type": "string", "x-kubernetes-validations": [{"rule": "self.lowerAscii() == self"}]},
        },
        "limits": {
            "type": "object",
            "additionalProperties": {"type": "integer", "x-kubernetes-validations": [{"rule": "self >= 0"}]},
        },
        "ratio": {"type": "number", "x-kubernetes-validations": [{"rule": "self < 1.0"}]},
    }
    assert messages(schema_with(props), obj(tags=["ab"], limits={"cpu": 1}, ratio=0)) == []
    assert messages(schema_with(props), obj(tags=["abcd", "Ab"], limits={"cpu": -1}, ratio=2)) == [
        'spec.tags: Invalid value: "array": failed rule: self.all(t, t.size() <= 3)',
        'spec.tags[1]: Invalid value: "string": failed rule: self.lowerAscii() == self',
        'spec.limits[cpu]: Invalid value: "integer": failed rule: self >= 0',
        'spec.ratio: Invalid value: "number": failed rule: self < 1.0',
    ]


def test_root_rules_see_name_but_not_labels() -> None:
    schema = {"type": "object", "x-kubernetes-validations": [{"rule": "self.metadata.name.startsWith('w')"}]}
    assert messages(schema, obj()) == []
    assert messages(schema, {**obj(), "metadata": {"name": "x"}}) == [
        "<nil>: Invalid value: \"object\": failed rule: self.metadata.name.startsWith('w')"
    ]


@pytest.mark.parametrize(
    ("rule", "value"),
    [
        ("has(self.a) && !has(self.b)", {"a": 1}),
        ("self.l.exists(x, x == 2) && self.l.exists_one(x, x > 2) && self.l.map(x, x * 2) == [2, 4, 6]", {}),
        ("self.l.filter(x, x > 1).size() == 2 && size(self.l) == 3 && 2 in self.l", {}),
        ("self.s.startsWith('He') && self.s.endsWith('lo') && self.s.contains('ll') && self.s.matches('^H.*o$')", {}),
        ("self.a > 0 ? self.s == 'Hello' : false", {"a": 1}),
        ("int(self.n) == 42 && double(self.a) == 1.0 && string(self.a) == '1'", {"a": 1}),
        ("self.l.isSorted() && self.l.sum() == 6 && self.l.min() == 1 && self.l.max() == 3", {}),
        ("self.l.indexOf(2) == 1 && self.l.lastIndexOf(9) == -1 && self.s.indexOf('l') == 2", {}),
        ("self.s.lastIndexOf('l') == 3 && self.s.lowerAscii() == 'hello' && self.s.upperAscii() == 'HELLO'", {}),
        ("' x '.trim() == 'x' && 'a,b'.split(',') == ['a', 'b'] && ['a', 'b'].join('-') == 'a-b'", {}),
        ("self.s.replace('l', 'L') == 'HeLLo' && self.s.substring(1, 3) == 'el' && self.s.charAt(0) == 'H'", {}),
        ("self.__namespace__ == 'ns' && self.dash__dash__name == 'd'", {"namespace": "ns", "dash-name": "d"}),
    ],
)
def test_common_rules(rule: str, value: dict[str, Any]) -> None:
    props = {
        "a": {"type": "integer"},
        "b": {"type": "integer"},
        "l": {"type": "array", "items": {"type": "integer"}},
        "s": {"type": "string"},
        "n": {"type": "string"},
        "namespace": {"type": "string"},
        "dash-name": {"type": "string"},
    }
    spec = {"l": [1, 2, 3], "s": "Hello", "n": "42", **value}
    assert messages(schema_with(props, {"rule": rule}), obj(**spec)) == []
    negated = {"rule": f"!({rule})"}
    assert messages(schema_with(props, negated), obj(**spec)) == [f'spec: Invalid value: "object": failed rule: !({rule})']


def test_runtime_errors_are_causes() -> None:
    props = {"m": {"type": "object", "additionalProperties": {"type": "string"}}, "s": {"type": "string"}}
    schema = schema_with(props, {"rule": "self.m['missing'] == 'x'"}, {"rule": "self.s.substring(10) == ''"})
    assert messages(schema, obj(m={}, s="abc")) == [
        "spec: Invalid value: \"object\": no such key: missing evaluating rule: self.m['missing'] == 'x'",
        "spec: Invalid value: \"object\": index out of range: 10 evaluating rule: self.s.substring(10) == ''",
    ]


def test_transition_rules() -> None:
    props = {"name": {"type": "string", "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "Value is immutable"}]}}  # fmt: skip
    schema = schema_with(props)
    assert messages(schema, obj(name="a")) == []  # create: no oldSelf, the rule does not run
    assert messages(schema, obj(name="a"), old=obj(name="a")) == []
    assert messages(schema, obj(name="b"), old=obj(name="a")) == ['spec.name: Invalid value: "string": Value is immutable']
    assert messages(schema, obj(name="b"), old=obj()) == []  # no old value at that path

    optional = {"rule": "oldSelf.hasValue() || self == 'first'", "optionalOldSelf": True}
    schema = schema_with({"name": {"type": "string", "x-kubernetes-validations": [optional]}})
    assert messages(schema, obj(name="first")) == []
    assert messages(schema, obj(name="other")) == [
        "spec.name: Invalid value: \"string\": failed rule: oldSelf.hasValue() || self == 'first'"
    ]


def test_list_map_items_correlate_by_key() -> None:
    items = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "port": {"type": "integer"}},
             "x-kubernetes-validations": [{"rule": "self.port == oldSelf.port", "message": "port is fixed"}]}  # fmt: skip
    props = {"ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"], "items": items}}  # fmt: skip
    old = obj(ports=[{"name": "a", "port": 1}, {"name": "b", "port": 2}])
    new = obj(ports=[{"name": "b", "port": 2}, {"name": "a", "port": 3}, {"name": "c", "port": 9}])
    assert messages(schema_with(props), new, old=old) == ['spec.ports[1]: Invalid value: "object": port is fixed']


def test_unchanged_values_ratchet_to_warnings() -> None:
    schema = schema_with(REPLICAS, {"rule": "self.minReplicas <= self.replicas"})
    stored = obj(minReplicas=5, replicas=3)
    warnings: list[str] = []
    assert validation._validate_custom(schema, obj(minReplicas=5, replicas=3), old=stored, warnings=warnings) == []
    assert warnings == ['spec: Invalid value: "object": failed rule: self.minReplicas <= self.replicas']


def test_schema_errors_block_the_rules() -> None:
    schema = schema_with(REPLICAS, {"rule": "self.minReplicas <= self.replicas"})
    schema["properties"]["spec"]["required"] = ["replicas"]
    assert messages(schema, obj(minReplicas=5)) == [
        "spec.replicas: Required value",
        "<nil>: Invalid value: null: some validation rules were not checked because the object was invalid; "
        "correct the existing errors to complete validation",
    ]


def test_compiled_once_per_schema() -> None:
    schema = schema_with(REPLICAS, {"rule": "self.minReplicas <= self.replicas"})
    assert cel.validator_for(schema) is cel.validator_for(schema)
    assert cel.validator_for({"type": "object"}) is None


def crd(schema: dict[str, Any]) -> dict[str, Any]:
    return {"spec": {"versions": [{"name": "v1", "schema": {"openAPIV3Schema": schema}}]}}


def crd_errors(schema: dict[str, Any]) -> list[str]:
    return [f"{c.field}: {c.message}" for c in crds.validate_rules(crd(schema))]


def test_crd_rule_that_does_not_compile() -> None:
    base = "spec.validation.openAPIV3Schema.properties[spec].x-kubernetes-validations[0]"
    found = crd_errors(schema_with(REPLICAS, {"rule": "self.replicas >"}))
    assert len(found) == 1
    assert found[0].startswith(
        f'{base}.rule: Invalid value: apiextensions.ValidationRule{{Rule:"self.replicas >", Message:"", '
        'MessageExpression:"", Reason:(*apiextensions.FieldValueErrorReason)(nil), FieldPath:"", '
        "OptionalOldSelf:(*bool)(nil)}: compilation failed: ERROR: <input>:1:16: Syntax error:"
    )
    assert found[0].endswith("\n | self.replicas >\n | ...............^")
    found = crd_errors(schema_with(REPLICAS, {"rule": "self.replicaz > 0 && self.replicas > 0"}))
    assert found[0].endswith(
        "compilation failed: ERROR: <input>:1:5: undefined field 'replicaz'\n"
        " | self.replicaz > 0 && self.replicas > 0\n | ....^"
    )
    found = crd_errors(schema_with(REPLICAS, {"rule": "nope(self.replicas)"}))
    assert "undeclared reference to 'nope' (in container '')" in found[0]
    assert crd_errors(schema_with(REPLICAS, {"rule": "self.minReplicas <= self.replicas"})) == []


def test_crd_rule_fields() -> None:
    base = "spec.validation.openAPIV3Schema.properties[spec].x-kubernetes-validations"
    props = {"a": {"type": "integer"}, "l": {"type": "array", "items": {"type": "integer", "x-kubernetes-validations": [{"rule": "self == oldSelf"}]}}}  # fmt: skip
    rules = [
        {"rule": ""},
        {"rule": "self.a > 0", "reason": "Wrong"},
        {"rule": "self.a > 0", "fieldPath": ".b"},
        {"rule": "self.a > 0", "optionalOldSelf": True},
    ]
    assert crd_errors(schema_with(props, *rules)) == [
        f"{base}[0].rule: Required value: rule is not specified",
        f'{base}[1].reason: Unsupported value: "Wrong": supported values: "FieldValueDuplicate", "FieldValueForbidden", '
        '"FieldValueInvalid", "FieldValueRequired"',
        f'{base}[2].fieldPath: Invalid value: ".b": fieldPath must be a valid path',
        f"{base}[3].optionalOldSelf: Invalid value: true: may not be set if oldSelf is not used in rule",
        "spec.validation.openAPIV3Schema.properties[spec].properties[l].items.x-kubernetes-validations[0].rule: "
        'Invalid value: "self == oldSelf": oldSelf cannot be used on the uncorrelatable portion of the schema '
        "within spec.validation.openAPIV3Schema.properties[spec].properties[l].items",
    ]


def test_crd_versions_with_different_schemas_are_named_by_version() -> None:
    good, bad = schema_with(REPLICAS), schema_with(REPLICAS, {"rule": "self.x == 1"})
    spec = {"versions": [{"name": "v1", "schema": {"openAPIV3Schema": good}}, {"name": "v2", "schema": {"openAPIV3Schema": bad}}]}  # fmt: skip
    found = [c.field for c in crds.validate_rules({"spec": spec})]
    assert found == ["spec.versions[1].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule"]
