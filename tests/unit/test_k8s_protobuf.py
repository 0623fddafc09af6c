"""Protobuf request bodies: round trips through the tables, the wire's corner cases, bad input,
and bodies captured from the real kubectl compared with what it prints for --dry-run=client."""

from __future__ import annotations

import base64
import datetime
import http.server
import json
import random
import re
import shutil
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.machinery import errors, protobuf
from services.machinery.k8sproto import schema

META = "k8s.io.apimachinery.pkg.apis.meta.v1."
CORE = "k8s.io.api.core.v1."
SCALARS = {"string", "bytes", "int32", "int64", "bool", "double", "float"}
ZERO = {"string": "", "bytes": b"", "int32": 0, "int64": 0, "bool": False, "double": 0.0, "float": 0.0}
MAP_RE = re.compile(r"^map<string,(.+)>$")


# -- a test-only encoder, walking the same tables the way Go's generated code writes ---------


def varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        low, v = v & 0x7F, v >> 7
        out.append(low | (0x80 if v else 0))
        if not v:
            return bytes(out)


def tag(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def ld(number: int, payload: bytes) -> bytes:
    return tag(number, 2) + varint(len(payload)) + payload


def scalar(number: int, type_: str, value: Any) -> bytes:
    if type_ == "string":
        return ld(number, value.encode())
    if type_ == "bytes":
        return ld(number, value if isinstance(value, bytes) else base64.b64decode(value))
    if type_ == "double":
        return tag(number, 1) + struct.pack("<d", value)
    if type_ == "float":
        return tag(number, 5) + struct.pack("<f", value)
    return tag(number, 0) + varint(int(value))


def seconds(text: str) -> tuple[int, int]:
    moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int(moment.timestamp()), moment.microsecond * 1000


def time_message(text: str | None) -> bytes:
    if text is None:
        return b""  # Go writes the zero Time as an empty message
    s, ns = seconds(text)
    return scalar(1, "int64", s) + scalar(2, "int32", ns)


SPECIAL = {
    META + "Time": time_message,
    META + "MicroTime": time_message,
    META + "FieldsV1": lambda v: ld(1, json.dumps(v).encode()),
    "k8s.io.apimachinery.pkg.runtime.RawExtension": lambda v: ld(1, json.dumps(v).encode()),
    "k8s.io.apimachinery.pkg.api.resource.Quantity": lambda v: ld(1, v.encode()),
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString": lambda v: (
        scalar(1, "int64", 1) + scalar(2, "int32", 0) + ld(3, v.encode())
        if isinstance(v, str)
        else scalar(1, "int64", 0) + scalar(2, "int32", v) + ld(3, b"")
    ),
}


def encode(message: str, value: Any) -> bytes:
    tables = schema.tables()
    if message in SPECIAL:
        return SPECIAL[message](value)
    if message in tables.json_as_items:
        value = {"items": value}
    out = b""
    for f in tables.messages[message]:
        key = (message, f.number)
        if key in tables.inline:
            inner = {g.name for g in tables.messages[f.type]}
            out += ld(f.number, encode(f.type, {k: v for k, v in value.items() if k in inner}))
            continue
        if f.name not in value:
            if f.type in SCALARS and not f.repeated and key not in tables.nullable:
                out += scalar(f.number, f.type, ZERO[f.type])  # Go writes every non-pointer scalar
            continue
        out += encode_field(f, value[f.name])
    return out


def encode_field(f: schema.F, value: Any) -> bytes:
    one = (
        (lambda v: scalar(f.number, f.type, v))
        if f.type in SCALARS
        else (lambda v: ld(f.number, encode(f.type, v)))
    )
    if match := MAP_RE.match(f.type):
        vt = match.group(1)
        entry = (lambda v: scalar(2, vt, v)) if vt in SCALARS else (lambda v: ld(2, encode(vt, v)))
        return b"".join(ld(f.number, scalar(1, "string", k) + entry(v)) for k, v in value.items())
    if f.repeated:
        return b"".join(one(v) for v in value)
    return one(value)


def envelope(api_version: str, kind: str, raw: bytes, *, encoding: str = "", content_type: str = "") -> bytes:
    type_meta = ld(1, api_version.encode()) + ld(2, kind.encode())
    return (
        b"k8s\x00" + ld(1, type_meta) + ld(2, raw) + ld(3, encoding.encode()) + ld(4, content_type.encode())
    )


def body(obj: dict[str, Any]) -> bytes:
    message = schema.kind_message(obj["apiVersion"], obj["kind"])
    assert message, (obj["apiVersion"], obj["kind"])
    fields = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    return envelope(obj["apiVersion"], obj["kind"], encode(message, fields))


def needs(api_version: str, kind: str) -> None:
    if schema.kind_message(api_version, kind) is None:
        reason = f"no protobuf table for {api_version} {kind} yet"
        print(f"SKIP: {reason}")
        pytest.skip(reason)


def status_code(raw: bytes) -> int:
    with pytest.raises(errors.ApiError) as caught:
        protobuf.decode(raw)
    return caught.value.code


# -- round trips ------------------------------------------------------------------------------

CONFIGMAP = {
    "kind": "ConfigMap",
    "apiVersion": "v1",
    "metadata": {
        "name": "settings",
        "namespace": "default",
        "labels": {"app": "web"},
        "annotations": {"note": ""},
        "creationTimestamp": "2024-01-01T00:00:00Z",
        "managedFields": [
            {
                "manager": "kubectl",
                "operation": "Update",
                "apiVersion": "v1",
                "time": "2024-01-01T00:00:00Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:data": {"f:a": {}}},
            }
        ],
    },
    "immutable": False,  # a Go pointer: an explicit false survives
    "data": {"a": "b", "empty": ""},
    "binaryData": {"blob": base64.b64encode(b"\x00\xff\xfe").decode()},
}

SECRET = {
    "kind": "Secret",
    "apiVersion": "v1",
    "metadata": {"name": "creds", "generateName": "creds-", "finalizers": ["x/y"]},
    "type": "Opaque",
    "data": {"password": base64.b64encode(b"s3cr3t\x00").decode()},
    "stringData": {"user": "admin"},
}

POD = {
    "kind": "Pod",
    "apiVersion": "v1",
    "metadata": {
        "name": "web-0",
        "namespace": "prod",
        "uid": "0b1c",
        "resourceVersion": "42",
        "generation": 3,
        "deletionTimestamp": "2024-05-06T07:08:09Z",
        "deletionGracePeriodSeconds": 0,
        "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "9", "controller": True}
        ],
    },
    "spec": {
        "volumes": [
            {
                "name": "config",
                "configMap": {
                    "name": "settings",
                    "items": [{"key": "a", "path": "a.txt"}],
                    "defaultMode": 420,
                },
            },
            {"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
            {"name": "creds", "secret": {"secretName": "creds", "optional": False}},
            {
                "name": "token",
                "projected": {
                    "sources": [{"serviceAccountToken": {"expirationSeconds": 3600, "path": "token"}}]
                },
            },
        ],
        "initContainers": [
            {"name": "init", "image": "busybox", "command": ["sh", "-c", "true"], "resources": {}}
        ],
        "containers": [
            {
                "name": "app",
                "image": "nginx:1.27",
                "args": ["--port", "8080"],
                "ports": [
                    {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                    {"containerPort": 9090},
                ],
                "env": [
                    {"name": "MODE", "value": "prod"},
                    {
                        "name": "A",
                        "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "a", "optional": True}},
                    },
                    {
                        "name": "NODE",
                        "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "spec.nodeName"}},
                    },
                ],
                "resources": {
                    "limits": {"cpu": "500m", "memory": "128Mi"},
                    "requests": {"cpu": "250m", "memory": "64Mi"},
                },
                "volumeMounts": [{"name": "config", "mountPath": "/etc/app", "readOnly": True}],
                "livenessProbe": {
                    "httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"},
                    "initialDelaySeconds": 5,
                    "periodSeconds": 10,
                    "failureThreshold": 3,
                },
                "readinessProbe": {"tcpSocket": {"port": 8080}, "timeoutSeconds": 1},
                "startupProbe": {"exec": {"command": ["cat", "/ready"]}, "terminationGracePeriodSeconds": 0},
                "imagePullPolicy": "IfNotPresent",
                "securityContext": {
                    "runAsUser": 0,
                    "runAsNonRoot": False,
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        ],
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 0,
        "automountServiceAccountToken": False,
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "serviceAccountName": "web",
        "tolerations": [
            {
                "key": "node.kubernetes.io/not-ready",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
            {"operator": "Exists"},
        ],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}
                    ]
                }
            }
        },
        "priority": 0,
        "enableServiceLinks": True,
    },
    "status": {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2024-01-02T03:04:05Z"}],
        "podIPs": [{"ip": "10.42.0.7"}],
        "startTime": "2024-01-02T03:04:00Z",
        "containerStatuses": [
            {
                "name": "app",
                "ready": True,
                "restartCount": 2,
                "started": False,
                "image": "nginx:1.27",
                "imageID": "sha256:abc",
                "state": {"running": {"startedAt": "2024-01-02T03:04:01Z"}},
                "lastState": {"terminated": {"exitCode": -1, "reason": "Error"}},
            }
        ],
    },
}

EVENT = {
    "kind": "Event",
    "apiVersion": "v1",
    "metadata": {"name": "web-0.1"},
    "involvedObject": {"kind": "Pod", "name": "web-0", "namespace": "prod"},
    "reason": "Pulled",
    "count": 2,
    "eventTime": "2024-01-01T00:00:00.123456Z",
    "series": {"count": 2, "lastObservedTime": "2024-01-01T00:00:05.000001Z"},
    "source": {},
}


@pytest.mark.parametrize("obj", [CONFIGMAP, SECRET, POD, EVENT], ids=lambda o: o["kind"])
def test_round_trip(obj):
    assert protobuf.decode(body(obj)) == obj


def test_zero_scalars_follow_go_json():
    """Plain zeros are left out as omitempty does; a pointer's zero is an explicit value."""
    got = protobuf.decode(
        body({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p"}, "spec": {"priority": 0}})
    )
    assert got["spec"] == {"priority": 0}
    assert got["metadata"] == {"name": "p"}  # uid "", generation 0 ... were all on the wire


def test_inline_structs_merge_into_their_parent():
    pod = protobuf.decode(body(POD))
    assert pod["spec"]["volumes"][0]["configMap"]["name"] == "settings"  # LocalObjectReference, inline
    assert "volumeSource" not in pod["spec"]["volumes"][0]
    assert "httpGet" in pod["spec"]["containers"][0]["livenessProbe"]  # ProbeHandler, inline


def test_core_objects_under_other_groups():
    needs("authorization.k8s.io/v1", "SelfSubjectAccessReview")
    needs("authentication.k8s.io/v1", "TokenRequest")
    review = {
        "kind": "SelfSubjectAccessReview",
        "apiVersion": "authorization.k8s.io/v1",
        "metadata": {},
        "spec": {"resourceAttributes": {"namespace": "prod", "verb": "get", "resource": "pods"}},
        "status": {},
    }
    assert protobuf.decode(body(review)) == review
    token = {
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": "web"},
        "spec": {
            "audiences": ["https://kubernetes.default.svc"],
            "expirationSeconds": 3600,
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web-0", "uid": "0b1c"},
        },
        "status": {},
    }
    assert protobuf.decode(body(token)) == token


def test_eviction_keeps_a_zero_grace_period():
    needs("policy/v1", "Eviction")
    eviction = {
        "kind": "Eviction",
        "apiVersion": "policy/v1",
        "metadata": {"name": "web-0", "namespace": "prod"},
        "deleteOptions": {"gracePeriodSeconds": 0, "propagationPolicy": "Background", "dryRun": ["All"]},
    }
    assert protobuf.decode(body(eviction)) == eviction


def test_delete_options_under_any_group_version():
    raw = encode(META + "DeleteOptions", {"gracePeriodSeconds": 30, "preconditions": {"uid": "u"}})
    for api_version in ("v1", "apps/v1", "meta.k8s.io/v1"):
        assert protobuf.decode(envelope(api_version, "DeleteOptions", raw)) == {
            "kind": "DeleteOptions",
            "apiVersion": api_version,
            "gracePeriodSeconds": 30,
            "preconditions": {"uid": "u"},
        }


# -- apimachinery value types -----------------------------------------------------------------


def test_times():
    t = scalar(1, "int64", 1704067200) + scalar(2, "int32", 999_999_999)
    assert protobuf.decode_message(t, META + "Time") == "2024-01-01T00:00:00Z"  # Go drops the nanos
    assert protobuf.decode_message(t, META + "MicroTime") == "2024-01-01T00:00:00.999999Z"
    assert protobuf.decode_message(b"", META + "Time") is None
    assert (
        protobuf.decode_message(scalar(1, "int64", 0) + scalar(2, "int32", 0), META + "Time")
        == "1970-01-01T00:00:00Z"
    )
    assert protobuf.decode_message(scalar(1, "int64", -62135596800), META + "Time") is None  # Go's zero time
    assert protobuf.decode_message(scalar(1, "int64", -1), META + "Time") == "1969-12-31T23:59:59Z"


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0s"),
        (3_600 * 10**9, "1h0m0s"),
        (30 * 10**9, "30s"),
        (1_500_000_000, "1.5s"),
        (90 * 10**9, "1m30s"),
        (26 * 3600 * 10**9 + 3 * 60 * 10**9 + 500_000_000, "26h3m0.5s"),
        (250_000_000, "250ms"),
        (1_500_000, "1.5ms"),
        (2_000, "2µs"),
        (7, "7ns"),
        (-1_500_000_000, "-1.5s"),
    ],
)
def test_durations(ns, text):
    assert protobuf.go_duration(ns) == text
    assert protobuf.decode_message(scalar(1, "int64", ns), META + "Duration") == text


def test_int_or_string_and_quantity():
    ios = "k8s.io.apimachinery.pkg.util.intstr.IntOrString"
    assert protobuf.decode_message(SPECIAL[ios](8080), ios) == 8080
    assert protobuf.decode_message(SPECIAL[ios]("http"), ios) == "http"
    assert protobuf.decode_message(SPECIAL[ios]("25%"), ios) == "25%"
    qty = "k8s.io.apimachinery.pkg.api.resource.Quantity"
    assert protobuf.decode_message(ld(1, b"1536Mi"), qty) == "1536Mi"


def test_raw_extension_and_list_wrappers():
    raw = "k8s.io.apimachinery.pkg.runtime.RawExtension"
    assert protobuf.decode_message(ld(1, b'{"kind":"Pod","apiVersion":"v1"}'), raw) == {
        "kind": "Pod",
        "apiVersion": "v1",
    }
    assert protobuf.decode_message(ld(1, b"not json"), raw) == "not json"
    resource = encode(
        META + "APIResource", {"name": "pods", "namespaced": True, "kind": "Pod", "verbs": ["get", "list"]}
    )
    assert protobuf.decode_message(resource, META + "APIResource") == {
        "name": "pods",
        "namespaced": True,
        "kind": "Pod",
        "verbs": ["get", "list"],
    }


# -- the wire ---------------------------------------------------------------------------------


def test_unknown_fields_are_skipped():
    extra = tag(99, 0) + varint(7) + tag(98, 1) + b"\x00" * 8 + tag(97, 5) + b"\x00" * 4 + ld(96, b"\x01\x02")
    raw = extra + encode(CORE + "ConfigMap", {"metadata": {"name": "c"}, "data": {"k": "v"}}) + extra
    assert protobuf.decode(envelope("v1", "ConfigMap", raw)) == {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {"name": "c"},
        "data": {"k": "v"},
    }


def test_packed_and_negative_numbers():
    user = (
        ld(3, varint(1) + varint(2) + varint(300)) + tag(3, 0) + varint(4)
    )  # packed, then one more unpacked
    assert protobuf.decode_message(user, CORE + "LinuxContainerUser") == {
        "supplementalGroups": [1, 2, 300, 4]
    }
    codes = ld(2, varint(-1) + varint(137))
    assert protobuf.decode_message(codes, CORE + "ContainerRestartRuleOnExitCodes") == {"values": [-1, 137]}
    port = scalar(3, "int32", -1)
    assert len(port) == 11  # a negative int32 travels as a ten-byte varint
    assert protobuf.decode_message(port, CORE + "ContainerPort") == {"containerPort": -1}


def test_a_repeated_singular_field_keeps_the_last_value():
    raw = ld(1, b"first") + ld(1, b"second")
    assert protobuf.decode_message(raw, CORE + "LocalObjectReference") == {"name": "second"}


def test_media_type():
    assert protobuf.is_protobuf("application/vnd.kubernetes.protobuf")
    assert protobuf.is_protobuf("Application/Vnd.Kubernetes.Protobuf; charset=binary")
    assert not protobuf.is_protobuf("application/json")
    assert protobuf.is_protobuf("application/vnd.kubernetes.protobuf;stream=watch")


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{}",
        b"k8s\x01" + ld(2, b""),
        b"k8s\x00\x0a",  # a length with nothing after it
        b"k8s\x00\x0a\x05ab",  # a length past the end
        b"k8s\x00" + b"\xff" * 11,  # a varint too long
        b"k8s\x00" + tag(0, 0) + b"\x00",  # field number 0
        b"k8s\x00" + tag(5, 3),  # a group
        b"k8s\x00" + tag(1, 0) + varint(3),  # typeMeta as a number
        envelope("v1", "ConfigMap", tag(1, 0) + varint(1)),  # metadata as a number
        envelope("v1", "ConfigMap", tag(4, 2) + varint(1) + b"\x01"),  # immutable as bytes
        envelope("v1", "ConfigMap", ld(2, tag(2, 0) + varint(1))),  # a map value of the wrong type
        envelope("v1", "ConfigMap", ld(1, ld(17, ld(7, ld(1, b"{not json"))))),  # managedFields fieldsV1
        envelope("v1", "Pod", ld(1, ld(8, scalar(1, "int64", 10**15)))),  # a year past 9999
        envelope(
            "v1", "ConfigMap", ld(1, ld(17, ld(7, ld(1, b"[" * 100_000))))
        ),  # JSON nested past recursion
    ],
)
def test_malformed_input_is_a_bad_request(raw):
    assert status_code(raw) == 400


def test_unknown_kinds_and_encodings_are_unsupported():
    assert status_code(envelope("example.com/v1", "Widget", b"")) == 415
    assert status_code(envelope("v1", "Nonsense", b"")) == 415
    assert status_code(envelope("", "", b"")) == 415
    assert status_code(envelope("v1", "ConfigMap", b"", encoding="gzip")) == 415
    assert status_code(envelope("v1", "ConfigMap", b"{}", content_type="application/json")) == 415


def test_nesting_is_bounded():
    needs("apiextensions.k8s.io/v1", "CustomResourceDefinition")
    name = "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps"
    number = next(f.number for f in schema.tables().messages[name] if f.name == "not")
    raw = b""
    for _ in range(500):
        raw = ld(number, raw)
    with pytest.raises(errors.ApiError) as caught:
        protobuf.decode_message(raw, name)
    assert caught.value.code == 400


def test_fuzzed_bodies_never_escape_as_other_errors():
    rng = random.Random(1337)
    seeds = [body(obj) for obj in (CONFIGMAP, SECRET, POD, EVENT)]
    for _ in range(3000):
        raw = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            if len(raw) <= 4:
                break
            what, at = rng.random(), rng.randrange(4, len(raw))
            if what < 0.5:
                raw[at] = rng.randrange(256)
            elif what < 0.8:
                del raw[at:]
            else:
                raw[at:at] = rng.randbytes(rng.randint(1, 8))
        try:
            obj = protobuf.decode(bytes(raw))
        except errors.ApiError as exc:
            assert exc.code in (400, 415), exc.message
        else:
            json.dumps(obj, allow_nan=False)


# -- tables -----------------------------------------------------------------------------------


def test_kind_message():
    assert schema.kind_message("v1", "ConfigMap") == CORE + "ConfigMap"
    assert schema.kind_message("v1", "DeleteOptions") == META + "DeleteOptions"
    assert schema.kind_message("meta.k8s.io/v1", "Status") == META + "Status"
    assert schema.kind_message("v1", "Widget") is None
    assert schema.kind_message("", "Pod") is None
    assert schema.package("apps/v1") == "k8s.io.api.apps.v1"
    assert schema.package("rbac.authorization.k8s.io/v1") == "k8s.io.api.rbac.v1"
    assert schema.package("flowcontrol.apiserver.k8s.io/v1") == "k8s.io.api.flowcontrol.v1"
    assert (
        schema.package("apiextensions.k8s.io/v1")
        == "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1"
    )
    if schema.kind_message("apps/v1", "Deployment"):
        assert schema.kind_message("apps/v1", "Deployment") == "k8s.io.api.apps.v1.Deployment"


def test_tables_are_closed_and_consistent():
    tables = schema.tables()
    messages = tables.messages
    assert len([m for m in messages if m.startswith(CORE)]) > 230
    for name, fields in messages.items():
        assert len({f.number for f in fields}) == len(fields), name
        assert len({f.name for f in fields}) == len(fields), name
        for f in fields:
            value = MAP_RE.match(f.type)
            target = value.group(1) if value else f.type
            assert target in SCALARS or target in messages, f"{name}.{f.name}: {f.type}"
    by_key = {(name, f.number): f for name, fields in messages.items() for f in fields}
    for key in tables.inline:
        assert by_key[key].type in messages and not by_key[key].repeated, key
    for key in tables.nullable:
        assert by_key[key].type in SCALARS and not by_key[key].repeated, key
    assert protobuf.custom_json_unhandled() == set()


def test_known_field_numbers():
    def number(message: str, name: str) -> int:
        return next(f.number for f in schema.tables().messages[message] if f.name == name)

    assert number(META + "ObjectMeta", "managedFields") == 17
    assert number(META + "ObjectMeta", "creationTimestamp") == 8
    assert number(CORE + "PodSpec", "initContainers") == 20
    assert number(CORE + "PodSpec", "ephemeralContainers") == 34
    assert number(CORE + "Container", "envFrom") == 19
    assert number(CORE + "Secret", "immutable") == 5
    assert number(CORE + "ConfigMap", "binaryData") == 3
    assert number(CORE + "ServiceSpec", "clusterIPs") == 18
    assert number("k8s.io.apimachinery.pkg.runtime.Unknown", "contentType") == 4


# -- the real kubectl -------------------------------------------------------------------------

KUBECTL = shutil.which("kubectl")


class Recorder(http.server.BaseHTTPRequestHandler):
    """Records each POST and answers 415, so kubectl gives up after one request."""

    bodies: list[tuple[str, str, bytes]] = []

    def do_POST(self) -> None:
        size = int(self.headers.get("Content-Length", 0))
        self.bodies.append((self.path, self.headers.get("Content-Type", ""), self.rfile.read(size)))
        self.send_response(415)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps(errors.unsupported_media_type("recorded").status()).encode())

    def do_GET(self) -> None:
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    if KUBECTL is None:
        print("SKIP: kubectl is not installed")
        pytest.skip("kubectl is not installed")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=httpd.serve_forever, name="kubectl-recorder", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kubectl-files")
    (root / "blob.bin").write_bytes(b"\x00\xff\xfe binary")
    (root / "greeting.txt").write_text("hello\nworld\n")
    return root


def run_kubectl(args: list[str], *flags: str) -> subprocess.CompletedProcess[str]:
    cut = args.index("--") if "--" in args else len(args)
    command = [KUBECTL, *args[:cut], *flags, *args[cut:]]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def captured(server: str, args: list[str]) -> tuple[str, str, bytes]:
    Recorder.bodies.clear()
    run_kubectl(args, "-s", server, "--kubeconfig", "/dev/null")
    assert Recorder.bodies, f"kubectl {' '.join(args)} sent nothing"
    return Recorder.bodies[-1]


def without_printed_zeros(want: Any, got: Any) -> Any:
    """Go prints the zeros of fields without omitempty; the proto cannot say which those are, and a
    missing zero reads the same, so they are left out of the comparison (only where ``got`` lacks them)."""
    if isinstance(want, dict) and isinstance(got, dict):
        return {
            k: without_printed_zeros(v, got.get(k))
            for k, v in want.items()
            if k in got or v not in (0, "", False)
        }
    if isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        return [without_printed_zeros(w, g) for w, g in zip(want, got, strict=True)]
    return want


CASES = {
    "configmap": ["create", "configmap", "cm", "--from-literal=a=b", "--from-file=bin={files}/blob.bin", "--from-file={files}/greeting.txt"],
    "secret-generic": ["create", "secret", "generic", "s", "--from-literal=user=admin", "--from-file=key={files}/blob.bin"],
    "secret-docker-registry": ["create", "secret", "docker-registry", "reg", "--docker-server=r.example", "--docker-username=u", "--docker-password=p"],
    "serviceaccount": ["create", "serviceaccount", "sa"],
    "namespace": ["create", "namespace", "ns"],
    "deployment": ["create", "deployment", "web", "--image=nginx", "--replicas=2", "--port=80"],
    "job": ["create", "job", "j", "--image=busybox", "--", "echo", "hi"],
    "service-clusterip": ["create", "service", "clusterip", "svc", "--tcp=80:8080"],
    "service-nodeport": ["create", "service", "nodeport", "np", "--tcp=80:http", "--node-port=30080"],
    "service-externalname": ["create", "service", "externalname", "ext", "--external-name=example.com"],
    "cronjob": ["create", "cronjob", "cj", "--image=busybox", "--schedule=*/5 * * * *"],
    "rolebinding": ["create", "rolebinding", "rb", "--clusterrole=view", "--user=u", "--serviceaccount=default:sa"],
    "clusterrolebinding": ["create", "clusterrolebinding", "crb", "--clusterrole=view", "--group=g"],
    "priorityclass": ["create", "priorityclass", "pc", "--value=1000", "--description=d", "--preemption-policy=Never"],
    "quota": ["create", "quota", "q", "--hard=pods=10,cpu=2,memory=1Gi"],
    "pdb": ["create", "pdb", "pdb", "--selector=app=x", "--min-available=50%"],
    "ingress": ["create", "ingress", "ing", "--rule=foo.com/bar=svc:80", "--class=nginx"],
    "deployment-zero-replicas": ["create", "deployment", "zero", "--image=nginx", "--replicas=0"],
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_kubectl_bodies_decode_to_what_it_prints(case, server, files):
    args = [a.format(files=files) for a in CASES[case]]
    path, content_type, raw = captured(server, args)
    assert protobuf.is_protobuf(content_type), content_type
    printed = run_kubectl(args, "--dry-run=client", "-o", "json")
    assert printed.returncode == 0, printed.stderr
    want = json.loads(printed.stdout)
    needs(want["apiVersion"], want["kind"])
    if (
        case == "deployment-zero-replicas"
        and ("k8s.io.api.apps.v1.DeploymentSpec", 1) not in schema.tables().nullable
    ):
        reason = "apps_v1 does not mark DeploymentSpec.replicas as nullable (a Go pointer) yet"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    got = protobuf.decode(raw)
    assert got == without_printed_zeros(want, got), path


def test_kubectl_auth_can_i(server):
    needs("authorization.k8s.io/v1", "SelfSubjectAccessReview")
    path, _, raw = captured(server, ["auth", "can-i", "get", "pods", "-n", "prod", "--subresource=log"])
    assert path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
    assert protobuf.decode(raw) == {
        "kind": "SelfSubjectAccessReview",
        "apiVersion": "authorization.k8s.io/v1",
        "metadata": {},
        "spec": {
            "resourceAttributes": {
                "namespace": "prod",
                "verb": "get",
                "resource": "pods",
                "subresource": "log",
            }
        },
        "status": {},
    }


def test_kubectl_create_token(server):
    needs("authentication.k8s.io/v1", "TokenRequest")
    args = ["create", "token", "builder", "-n", "ci", "--duration=1h", "--audience=a", "--audience=b"]
    args += ["--bound-object-kind=Pod", "--bound-object-name=p", "--bound-object-uid=123"]
    path, _, raw = captured(server, args)
    assert path == "/api/v1/namespaces/ci/serviceaccounts/builder/token"
    assert protobuf.decode(raw) == {
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {},
        "spec": {
            "audiences": ["a", "b"],
            "expirationSeconds": 3600,
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": "123"},
        },
        "status": {},
    }
