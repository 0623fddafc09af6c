"""Nullable scalars of the non-core protobuf tables: each names a real scalar field, the Go pointers
that matter are listed, their explicit zeros survive decoding, and real kubectl bodies agree with
what kubectl prints for --dry-run=client."""

from __future__ import annotations

import http.server
import importlib
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from services.machinery import protobuf
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
APPS = "k8s.io.api.apps.v1."
BATCH = "k8s.io.api.batch.v1."
CRD = "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1."

# Go pointer scalars upstream (`*int32`, `*bool`, `*string`, `*int64`, `*float64`, pointers to
# string enums), by (message, JSON name): a spot check that the important ones are listed.
POINTERS = {
    "k8s.io.api.apps.v1.": {
        "DeploymentSpec": ["replicas", "revisionHistoryLimit", "progressDeadlineSeconds"],
        "DeploymentStatus": ["collisionCount"],
        "ReplicaSetSpec": ["replicas"],
        "StatefulSetSpec": ["replicas", "revisionHistoryLimit"],
        "RollingUpdateStatefulSetStrategy": ["partition"],
        "DaemonSetSpec": ["revisionHistoryLimit"],
    },
    "k8s.io.api.batch.v1.": {
        "JobSpec": [
            "parallelism", "completions", "activeDeadlineSeconds", "backoffLimit", "backoffLimitPerIndex",
            "maxFailedIndexes", "ttlSecondsAfterFinished", "suspend", "manualSelector", "completionMode",
            "podReplacementPolicy", "managedBy",
        ],
        "CronJobSpec": [
            "startingDeadlineSeconds", "suspend", "successfulJobsHistoryLimit", "failedJobsHistoryLimit", "timeZone",
        ],
    },
    "k8s.io.api.authentication.v1.": {"TokenRequestSpec": ["expirationSeconds"]},
    "k8s.io.api.policy.v1.": {"PodDisruptionBudgetSpec": ["unhealthyPodEvictionPolicy"]},
    "k8s.io.api.networking.v1.": {"IngressSpec": ["ingressClassName"], "NetworkPolicyPort": ["protocol", "endPort"]},
    "k8s.io.api.discovery.v1.": {
        "Endpoint": ["hostname", "nodeName", "zone"],
        "EndpointConditions": ["ready", "serving", "terminating"],
        "EndpointPort": ["name", "protocol", "port", "appProtocol"],
    },
    "k8s.io.api.coordination.v1.": {
        "LeaseSpec": ["holderIdentity", "leaseDurationSeconds", "leaseTransitions", "strategy", "preferredHolder"],
    },
    "k8s.io.api.scheduling.v1.": {"PriorityClass": ["preemptionPolicy"]},
    "k8s.io.api.storage.v1.": {"StorageClass": ["reclaimPolicy", "allowVolumeExpansion", "volumeBindingMode"]},
    "k8s.io.api.autoscaling.v1.": {"HorizontalPodAutoscalerSpec": ["minReplicas", "targetCPUUtilizationPercentage"]},
    CRD: {
        "JSONSchemaProps": [
            "maximum", "minimum", "maxLength", "minLength", "maxItems", "minItems", "multipleOf",
            "maxProperties", "minProperties", "x-kubernetes-preserve-unknown-fields",
        ],
    },
}  # fmt: skip

# Plain Go values: Go writes their zeros on the wire, and they must stay dropped.
PLAIN = {
    APPS + "DeploymentSpec": ["minReadySeconds", "paused"],
    APPS + "StatefulSetOrdinals": ["start"],
    BATCH + "JobStatus": ["active", "succeeded", "failed", "completedIndexes"],
    "k8s.io.api.scheduling.v1.PriorityClass": ["value", "globalDefault"],
    "k8s.io.api.autoscaling.v1.ScaleSpec": ["replicas"],
    CRD + "JSONSchemaProps": ["nullable", "exclusiveMaximum", "x-kubernetes-int-or-string"],
    CRD + "CustomResourceDefinitionStatus": ["observedGeneration"],
}


def number(message: str, name: str) -> int:
    return next(f.number for f in schema.tables().messages[message] if f.name == name)


# -- the tables -------------------------------------------------------------------------------


@pytest.mark.parametrize("module", GROUP_MODULES)
def test_every_group_module_declares_its_nullable_fields(module):
    mod = importlib.import_module(f"services.machinery.k8sproto.{module}")
    nullable = getattr(mod, "NULLABLE_FIELDS", None)
    assert isinstance(nullable, frozenset), f"{module} has no NULLABLE_FIELDS"
    for message, _ in nullable:
        assert message in mod.MESSAGES, f"{module}: {message} is not one of its own messages"


def test_every_nullable_entry_is_a_singular_scalar():
    tables = schema.tables()
    for message, field_number in tables.nullable:
        assert message in tables.messages, message
        fields = {f.number: f for f in tables.messages[message]}
        assert field_number in fields, (message, field_number)
        f = fields[field_number]
        assert f.type in SCALARS, f"{message}.{f.name} is a {f.type}, not a scalar"
        assert not f.repeated, f"{message}.{f.name} is repeated"


@pytest.mark.parametrize("package", list(POINTERS))
def test_go_pointers_are_listed(package):
    nullable = schema.tables().nullable
    missing = [
        f"{message}.{name}"
        for message, names in POINTERS[package].items()
        for name in names
        if (package + message, number(package + message, name)) not in nullable
    ]
    assert missing == [], f"Go pointer fields not marked nullable in {package}: {missing}"


def test_plain_values_are_not_listed():
    nullable = schema.tables().nullable
    listed = [
        f"{message}.{name}"
        for message, names in PLAIN.items()
        for name in names
        if (message, number(message, name)) in nullable
    ]
    assert listed == []


# -- decoding ---------------------------------------------------------------------------------


def varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        low, v = v & 0x7F, v >> 7
        out.append(low | (0x80 if v else 0))
        if not v:
            return bytes(out)


def ld(field_number: int, payload: bytes) -> bytes:
    return varint(field_number << 3 | 2) + varint(len(payload)) + payload


def vi(field_number: int, value: int) -> bytes:
    return varint(field_number << 3) + varint(value)


def fixed64(field_number: int, raw: bytes) -> bytes:
    return varint(field_number << 3 | 1) + raw


def envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    type_meta = ld(1, api_version.encode()) + ld(2, kind.encode())
    return b"k8s\x00" + ld(1, type_meta) + ld(2, raw) + ld(3, b"") + ld(4, b"")


def test_pointer_zeros_survive_and_plain_zeros_drop():
    spec = APPS + "DeploymentSpec"
    raw = b"".join(
        vi(number(spec, name), 0)
        for name in (
            "replicas",
            "minReadySeconds",
            "revisionHistoryLimit",
            "paused",
            "progressDeadlineSeconds",
        )
    )
    deployment = ld(1, ld(1, b"d")) + ld(2, raw)
    assert protobuf.decode(envelope("apps/v1", "Deployment", deployment)) == {
        "kind": "Deployment",
        "apiVersion": "apps/v1",
        "metadata": {"name": "d"},
        "spec": {"replicas": 0, "revisionHistoryLimit": 0, "progressDeadlineSeconds": 0},
    }


def test_job_pointer_zeros_and_empty_strings():
    spec = BATCH + "JobSpec"
    raw = (
        vi(number(spec, "parallelism"), 0)
        + vi(number(spec, "backoffLimit"), 0)
        + vi(number(spec, "suspend"), 0)
        + vi(number(spec, "manualSelector"), 0)
        + ld(number(spec, "managedBy"), b"")
    )
    status = BATCH + "JobStatus"
    raw_status = (
        vi(number(status, "active"), 0)
        + vi(number(status, "ready"), 0)
        + ld(number(status, "completedIndexes"), b"")
    )
    job = ld(1, ld(1, b"j")) + ld(2, raw) + ld(3, raw_status)
    assert protobuf.decode(envelope("batch/v1", "Job", job)) == {
        "kind": "Job",
        "apiVersion": "batch/v1",
        "metadata": {"name": "j"},
        "spec": {
            "parallelism": 0,
            "backoffLimit": 0,
            "manualSelector": False,
            "suspend": False,
            "managedBy": "",
        },
        "status": {"ready": 0},
    }


def test_schema_bounds_of_zero_are_kept():
    props = CRD + "JSONSchemaProps"
    zero = b"\x00" * 8
    raw = (
        ld(number(props, "type"), b"integer")
        + fixed64(number(props, "minimum"), zero)
        + fixed64(number(props, "maximum"), zero)
        + vi(number(props, "minLength"), 0)
        + vi(number(props, "nullable"), 0)
        + vi(number(props, "x-kubernetes-preserve-unknown-fields"), 0)
    )
    assert protobuf.decode_message(raw, props) == {
        "type": "integer",
        "maximum": 0.0,
        "minimum": 0.0,
        "minLength": 0,
        "x-kubernetes-preserve-unknown-fields": False,
    }


# -- the real kubectl -------------------------------------------------------------------------

KUBECTL = shutil.which("kubectl")


class Recorder(http.server.BaseHTTPRequestHandler):
    """Keeps each POST body and answers 415, so kubectl stops after one request."""

    bodies: list[tuple[str, bytes]] = []

    def do_POST(self) -> None:
        size = int(self.headers.get("Content-Length", 0))
        self.bodies.append((self.headers.get("Content-Type", ""), self.rfile.read(size)))
        payload = json.dumps(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "reason": "UnsupportedMediaType",
                "code": 415,
            }
        ).encode()
        self.send_response(415)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def recorder() -> Iterator[str]:
    if KUBECTL is None:
        print("SKIP: kubectl is not installed")
        pytest.skip("kubectl is not installed")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=httpd.serve_forever, name="kubectl-nullable-recorder", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
    assert KUBECTL is not None
    return subprocess.run([KUBECTL, *args], capture_output=True, text=True, timeout=60, check=False)


def sent(server: str, *args: str) -> bytes:
    Recorder.bodies.clear()
    kubectl(*args, "-s", server, "--kubeconfig", "/dev/null")
    assert Recorder.bodies, f"kubectl {' '.join(args)} sent nothing"
    content_type, raw = Recorder.bodies[-1]
    assert protobuf.is_protobuf(content_type), content_type
    return raw


def printed(*args: str) -> dict[str, Any]:
    done = kubectl(*args, "--dry-run=client", "-o", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def without_printed_zeros(want: Any, got: Any) -> Any:
    """Go prints the zeros of fields without omitempty, which the proto cannot tell apart from
    dropped ones; leave those out of the comparison, but only where the decoded object lacks them."""
    if isinstance(want, dict) and isinstance(got, dict):
        return {
            k: without_printed_zeros(v, got.get(k))
            for k, v in want.items()
            if k in got or v not in (0, "", False)
        }
    if isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        return [without_printed_zeros(w, g) for w, g in zip(want, got, strict=True)]
    return want


def test_kubectl_deployment_with_zero_replicas(recorder):
    args = ("create", "deployment", "d", "--image=nginx", "--replicas=0")
    got = protobuf.decode(sent(recorder, *args))
    assert got["spec"]["replicas"] == 0
    want = printed(*args)
    assert want["spec"]["replicas"] == 0
    assert got == without_printed_zeros(want, got)


def test_kubectl_job_matches_its_dry_run(recorder):
    args = ("create", "job", "j", "--image=busybox")
    got = protobuf.decode(sent(recorder, *args))
    assert got == without_printed_zeros(printed(*args), got)
