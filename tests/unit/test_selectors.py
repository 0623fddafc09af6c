"""Label and field selectors: parsing, matching, canonical strings, errors, per-kind fields."""

from __future__ import annotations

import pytest

from services.machinery import errors, selectors


def bad_request(call, *args) -> str:
    with pytest.raises(errors.ApiError) as info:
        call(*args)
    assert info.value.code == 400
    assert info.value.reason == "BadRequest"
    return info.value.message


# --- label selectors: string form --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("app=web", {"app": "web"}, True),
        ("app==web", {"app": "web"}, True),
        ("app=web", {"app": "db"}, False),
        ("app!=web", {"app": "db"}, True),
        ("app!=web", {}, True),
        ("tier in (a, b)", {"tier": "b"}, True),
        ("tier in (a,b)", {"tier": "c"}, False),
        ("tier in (a,b)", {}, False),
        ("tier notin (a,b)", {}, True),
        ("tier notin (a,b)", {"tier": "a"}, False),
        ("canary", {"canary": ""}, True),
        ("canary", {}, False),
        ("!canary", {}, True),
        ("!canary", {"canary": "x"}, False),
        ("rank>3", {"rank": "4"}, True),
        ("rank>3", {"rank": "3"}, False),
        ("rank<3", {"rank": "-1"}, True),
        ("rank<3", {"rank": "two"}, False),
        ("rank<3", {}, False),
        ("app=web,!canary,tier in (a)", {"app": "web", "tier": "a"}, True),
        ("app=web,!canary", {"app": "web", "canary": "1"}, False),
        ("app=", {"app": ""}, True),
        ("app in (in,notin)", {"app": "notin"}, True),
        ("", {"anything": "x"}, True),
        ("  ", {}, True),
    ],
)
def test_label_selector_matches(text: str, labels: dict[str, str], expected: bool) -> None:
    assert selectors.parse_label_selector(text).matches(labels) is expected


def test_label_selector_matches_none_labels() -> None:
    assert selectors.parse_label_selector("!a").matches(None)
    assert not selectors.parse_label_selector("a").matches(None)


def test_label_selector_canonical_string_sorts_keys_and_values() -> None:
    sel = selectors.parse_label_selector("b in (y, x),a==1, !c,d notin (z),e>2,f<9,g!=h,k")
    assert str(sel) == "a==1,b in (x,y),!c,d notin (z),e>2,f<9,g!=h,k"


def test_empty_selector() -> None:
    assert selectors.parse_label_selector("").empty
    assert not selectors.parse_label_selector("a").empty
    assert str(selectors.parse_label_selector("")) == ""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a in", "unable to parse requirement: found '' expected: '('"),
        ("a in (b", "unable to parse requirement: found '', expected: ',' or ')'"),
        ("a=b c", "found 'c', expected: ',' or 'end of string'"),
        ("a=b,", "found '', expected: identifier after ','"),
        ("=b", "found '=', expected: !, identifier, or 'end of string'"),
        ("a b", "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"),
        ("!", "unable to parse requirement: found '', expected: identifier"),
        ("a>x", "unable to parse requirement: values[0]: Invalid value: \"x\": for 'Gt', 'Lt' operators, the value must be an integer"),
    ],
)  # fmt: skip
def test_label_selector_syntax_errors(text: str, message: str) -> None:
    assert bad_request(selectors.parse_label_selector, text) == message


def test_label_selector_bad_key_and_value() -> None:
    msg = bad_request(selectors.parse_label_selector, "-a=b")
    assert msg.startswith('unable to parse requirement: key: Invalid value: "-a": name part must consist of')
    msg = bad_request(selectors.parse_label_selector, "a=-b")
    assert msg.startswith(
        'unable to parse requirement: values[0][a]: Invalid value: "-b": a valid label must be'
    )
    msg = bad_request(selectors.parse_label_selector, "example.com/x/y")
    assert "a qualified name must consist of" in msg
    long_value = "v" * 64
    assert "must be no more than 63 characters" in bad_request(
        selectors.parse_label_selector, f"a={long_value}"
    )


def test_label_selector_prefixed_keys() -> None:
    sel = selectors.parse_label_selector("app.kubernetes.io/name=web")
    assert sel.matches({"app.kubernetes.io/name": "web"})


def test_empty_value_set_forms() -> None:
    assert selectors.parse_label_selector("a in ()").matches({"a": ""})
    assert selectors.parse_label_selector("a in (,b)").matches({"a": ""})
    assert selectors.parse_label_selector("a in (b,)").matches({"a": ""})


# --- label selectors: API form -------------------------------------------------------------------


def test_from_label_selector_dict() -> None:
    sel = selectors.from_label_selector_dict(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["b", "a"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "env", "operator": "Exists"},
                {"key": "zone", "operator": "NotIn", "values": ["x"]},
            ],
        }
    )
    assert str(sel) == "app=web,!canary,env,tier in (a,b),zone notin (x)"
    assert sel.matches({"app": "web", "tier": "a", "env": "prod"})
    assert not sel.matches({"app": "web", "tier": "a"})


def test_nil_and_empty_api_selectors() -> None:
    assert not selectors.from_label_selector_dict(None).matches({})
    assert not selectors.from_label_selector_dict(None).empty
    assert selectors.from_label_selector_dict({}).matches({"a": "b"})
    assert selectors.from_label_selector_dict({}).empty


def test_api_selector_errors() -> None:
    msg = bad_request(
        selectors.from_label_selector_dict, {"matchExpressions": [{"key": "a", "operator": "Gt"}]}
    )
    assert msg == '"Gt" is not a valid label selector operator'
    msg = bad_request(
        selectors.from_label_selector_dict, {"matchExpressions": [{"key": "a", "operator": "In"}]}
    )
    assert msg == "values: Invalid value: []string{}: for 'in', 'notin' operators, values set can't be empty"


def test_label_selector_causes() -> None:
    causes = selectors.label_selector_causes(
        {
            "matchLabels": {"-bad": "ok"},
            "matchExpressions": [
                {"key": "a", "operator": "In"},
                {"key": "b", "operator": "Exists", "values": ["x"]},
                {"key": "c", "operator": "Nope"},
            ],
        },
        "spec.selector",
    )
    fields = [c.field for c in causes]
    assert fields == [
        "spec.selector.matchLabels",
        "spec.selector.matchExpressions[0].values",
        "spec.selector.matchExpressions[1].values",
        "spec.selector.matchExpressions[2].operator",
    ]
    assert [c.reason for c in causes][1:] == [
        "FieldValueRequired",
        "FieldValueForbidden",
        "FieldValueNotSupported",
    ]


# --- field selectors -------------------------------------------------------------------------------


def test_field_selector_parse_and_match() -> None:
    sel = selectors.parse_field_selector("status.phase!=Running,spec.nodeName==n1,metadata.name=p")
    assert [(r.field, r.operator, r.value) for r in sel.requirements] == [
        ("metadata.name", "=", "p"),
        ("spec.nodeName", "=", "n1"),
        ("status.phase", "!=", "Running"),
    ]
    fields = {"metadata.name": "p", "spec.nodeName": "n1", "status.phase": "Pending"}
    assert sel.matches(fields)
    assert not sel.matches({**fields, "status.phase": "Running"})
    assert sel.exact("spec.nodeName") == "n1"
    assert sel.exact("status.phase") is None


def test_field_selector_missing_field_reads_empty() -> None:
    assert selectors.parse_field_selector("spec.nodeName=").matches({})
    assert selectors.parse_field_selector("spec.nodeName!=n1").matches({})


def test_field_selector_escaping() -> None:
    sel = selectors.parse_field_selector(r"metadata.name=a\,b\=c\\d,x=y")
    assert [r.value for r in sel.requirements] == ["a,b=c\\d", "y"]
    assert str(sel) == r"metadata.name=a\,b\=c\\d,x=y"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("abc", "invalid selector: 'abc'; can't understand 'abc'"),
        ("a=b=c", "invalid field selector: unescaped character in value: ="),
        (r"a=b\x", r"invalid field selector: invalid escape sequence: \x"),
        ("a=b\\", "invalid field selector: invalid escape sequence: \\"),
    ],
)
def test_field_selector_errors(text: str, message: str) -> None:
    assert bad_request(selectors.parse_field_selector, text) == message


def test_empty_field_selector() -> None:
    assert selectors.parse_field_selector("").empty
    assert selectors.parse_field_selector(",").empty


def test_check_field_selector() -> None:
    allowed = selectors.selectable_fields(kind="Pod", group="", namespaced=True)
    sel = selectors.check_field_selector(
        selectors.parse_field_selector("spec.host=n1"), allowed, "pods", kind="Pod", group=""
    )
    assert sel.exact("spec.nodeName") == "n1"
    msg = bad_request(
        selectors.check_field_selector, selectors.parse_field_selector("spec.foo=x"), allowed, "pods"
    )
    assert msg == "field label not supported: spec.foo"
    nodes = selectors.selectable_fields(kind="Node", group="", namespaced=False)
    assert nodes == {"metadata.name", "spec.unschedulable"}


def test_aliases_without_kind() -> None:
    # A caller that only knows the canonical labels still accepts the alias, and matching needs no rewrite.
    allowed = {"metadata.name", "metadata.namespace", "spec.nodeName"}
    sel = selectors.parse_field_selector("spec.host=n1")
    assert selectors.check_field_selector(sel, allowed, "pods").exact("spec.nodeName") == "n1"
    fields = selectors.object_fields({"spec": {"nodeName": "n1"}}, kind="Pod", group="", namespaced=True)
    assert sel.matches(fields)
    assert bad_request(selectors.check_field_selector, sel, {"metadata.name"}, "nodes") == (
        "field label not supported: spec.host"
    )


def test_builtin_labels_passed_as_extra_are_harmless() -> None:
    pod = {"spec": {}, "status": {"podIPs": [{"ip": "10.42.0.5"}]}}
    labels = tuple(selectors.KIND_FIELDS[("", "Pod")])
    fields = selectors.object_fields(pod, kind="Pod", group="", namespaced=True, extra=labels)
    assert fields["spec.hostNetwork"] == "false"
    assert fields["status.podIP"] == "10.42.0.5"
    assert fields["status.podIPs"] == ""
    job = selectors.object_fields(
        {"status": {"succeeded": 2}}, kind="Job", group="batch", namespaced=True, extra=("status.successful",)
    )
    assert job["status.successful"] == "2"


def test_pod_fields() -> None:
    pod = {
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {"nodeName": "n1", "restartPolicy": "Always", "schedulerName": "default-scheduler"},
        "status": {"phase": "Running", "podIP": "10.42.0.9", "podIPs": [{"ip": "10.42.0.5"}]},
    }
    fields = selectors.object_fields(pod, kind="Pod", group="", namespaced=True)
    assert fields["metadata.namespace"] == "ns"
    assert fields["spec.nodeName"] == "n1"
    assert fields["spec.hostNetwork"] == "false"
    assert fields["status.podIP"] == "10.42.0.5"
    assert fields["spec.serviceAccountName"] == ""
    assert set(fields) <= selectors.selectable_fields(kind="Pod", group="", namespaced=True)
    pod["spec"]["hostNetwork"] = True
    assert selectors.object_fields(pod, kind="Pod", group="", namespaced=True)["spec.hostNetwork"] == "true"


def test_other_kind_fields() -> None:
    node = selectors.object_fields({"metadata": {"name": "n"}}, kind="Node", group="", namespaced=False)
    assert node == {"metadata.name": "n", "spec.unschedulable": "false"}
    job = selectors.object_fields({"status": {"succeeded": 3}}, kind="Job", group="batch", namespaced=True)
    assert job["status.successful"] == "3"
    rc = selectors.object_fields({}, kind="ReplicationController", group="", namespaced=True)
    assert rc["status.replicas"] == "0"
    secret = selectors.object_fields({"type": "Opaque"}, kind="Secret", group="", namespaced=True)
    assert secret["type"] == "Opaque"


def test_event_fields() -> None:
    event = {
        "metadata": {"name": "e", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "p", "uid": "u1"},
        "reason": "Scheduled",
        "reportingComponent": "default-scheduler",
        "type": "Normal",
    }
    fields = selectors.object_fields(event, kind="Event", group="", namespaced=True)
    assert fields["involvedObject.kind"] == "Pod"
    assert fields["involvedObject.namespace"] == ""
    assert fields["source"] == "default-scheduler"  # falls back to the reporting controller
    modern = {"regarding": {"kind": "Pod"}, "reportingController": "kubelet", "type": "Warning"}
    fields = selectors.object_fields(modern, kind="Event", group="events.k8s.io", namespaced=True)
    assert fields["involvedObject.kind"] == "Pod"
    assert fields["reportingComponent"] == "kubelet"
    allowed = selectors.selectable_fields(kind="Event", group="events.k8s.io", namespaced=True)
    sel = selectors.check_field_selector(
        selectors.parse_field_selector("regarding.kind=Pod"),
        allowed,
        "events",
        kind="Event",
        group="events.k8s.io",
    )
    assert sel.matches(fields)


def test_custom_resource_selectable_fields() -> None:
    obj = {"metadata": {"name": "w"}, "spec": {"color": "blue", "size": 3, "on": True}}
    extra = (".spec.color", ".spec.size", ".spec.on", ".spec.missing")
    fields = selectors.object_fields(obj, kind="Widget", group="example.com", namespaced=False, extra=extra)
    assert fields == {
        "metadata.name": "w",
        "spec.color": "blue",
        "spec.size": "3",
        "spec.on": "true",
        "spec.missing": "",
    }
    allowed = selectors.selectable_fields(kind="Widget", group="example.com", namespaced=True, extra=extra)
    assert "spec.color" in allowed and "metadata.namespace" in allowed
