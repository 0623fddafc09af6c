"""CEL validation rules of a CRD, driven with real kubectl against the shared supervisor-started server.

A CRD with rules is created; objects that keep them are applied, objects that break them are
refused with the rule's message on kubectl's stderr, and so is an update that breaks a
transition rule (``self == oldSelf``). A CRD whose rule does not compile is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.e2e.kubectl_helpers import unique

if TYPE_CHECKING:
    from tests.e2e.apiserver_fixtures import Kubectl

pytest_plugins = ["tests.e2e.apiserver_fixtures"]  # the cluster, kubectl and client fixtures


def write(path: Path, obj: dict[str, Any]) -> str:
    path.write_text(json.dumps(obj, indent=1) + "\n")
    return str(path)


def crd(group: str, spec_schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"scalers.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "scalers", "singular": "scaler", "kind": "Scaler"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": spec_schema}}},
                }
            ],
        },
    }


SPEC = {
    "type": "object",
    "properties": {
        "minReplicas": {"type": "integer"},
        "replicas": {"type": "integer"},
        "zone": {
            "type": "string",
            "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "Value is immutable"}],
        },
    },
    "x-kubernetes-validations": [
        {"rule": "self.minReplicas <= self.replicas"},
        {
            "rule": "self.replicas <= 10",
            "messageExpression": "'replicas ' + string(self.replicas) + ' is over 10'",
        },
    ],
}


def scaler(group: str, name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{group}/v1", "kind": "Scaler", "metadata": {"name": name}, "spec": spec}


def test_crd_validation_rules(kubectl: Kubectl, tmp_path: Path) -> None:
    group = f"cel{unique()}.example.com"
    kubectl("apply", "-f", write(tmp_path / "crd.json", crd(group, SPEC)))
    try:
        kubectl("wait", "--for=condition=Established", f"crd/scalers.{group}", "--timeout=60s")
        path = tmp_path / "s.json"
        kubectl("apply", "-f", write(path, scaler(group, "ok", minReplicas=1, replicas=3, zone="a")))
        assert kubectl("get", f"scalers.{group}", "ok", "-o", "jsonpath={.spec.replicas}") == "3"

        err = kubectl.fails("apply", "-f", write(path, scaler(group, "bad", minReplicas=5, replicas=3)))
        assert 'spec: Invalid value: "object": failed rule: self.minReplicas <= self.replicas' in err
        err = kubectl.fails("apply", "-f", write(path, scaler(group, "big", minReplicas=1, replicas=12)))
        assert 'spec: Invalid value: "object": replicas 12 is over 10' in err
        assert "bad" not in kubectl("get", f"scalers.{group}", "-o", "name")

        # An update that keeps the transition rule passes; one that breaks it is refused.
        kubectl("apply", "-f", write(path, scaler(group, "ok", minReplicas=1, replicas=4, zone="a")))
        err = kubectl.fails(
            "apply", "-f", write(path, scaler(group, "ok", minReplicas=1, replicas=4, zone="b"))
        )
        assert 'spec.zone: Invalid value: "string": Value is immutable' in err
        assert (
            kubectl("get", f"scalers.{group}", "ok", "-o", "jsonpath={.spec.zone}/{.spec.replicas}") == "a/4"
        )
    finally:
        kubectl("delete", "crd", f"scalers.{group}")


def test_crd_whose_rule_does_not_compile_is_refused(kubectl: Kubectl, tmp_path: Path) -> None:
    group = f"cel{unique()}.example.com"
    bad = {**SPEC, "x-kubernetes-validations": [{"rule": "self.minReplicas <="}, {"rule": "self.nope > 0"}]}
    err = kubectl.fails("apply", "-f", write(tmp_path / "crd.json", crd(group, bad)))
    field = "spec.validation.openAPIV3Schema.properties[spec].x-kubernetes-validations"
    assert f'{field}[0].rule: Invalid value: apiextensions.ValidationRule{{Rule:"self.minReplicas <="' in err
    assert "compilation failed: ERROR: <input>:1:20: Syntax error:" in err
    assert f"{field}[1].rule: Invalid value:" in err and "undefined field 'nope'" in err
    assert f"scalers.{group}" in kubectl.fails("get", "crd", f"scalers.{group}")


LIBRARY_SPEC = {
    "type": "object",
    "properties": {
        "memory": {
            "type": "string",
            "x-kubernetes-validations": [
                {
                    "rule": "isQuantity(self) && quantity(self).isLessThan(quantity('1Gi'))",
                    "message": "must be under 1Gi",
                }
            ],
        },
        "address": {
            "type": "string",
            "x-kubernetes-validations": [
                {
                    "rule": "isIP(self) && cidr('10.43.0.0/16').containsIP(self)",
                    "message": "must be in 10.43.0.0/16",
                }
            ],
        },
    },
}


def test_crd_rules_with_quantity_and_ip_libraries(kubectl: Kubectl, tmp_path: Path) -> None:
    group = f"cellib{unique()}.example.com"
    kubectl("apply", "-f", write(tmp_path / "crd.json", crd(group, LIBRARY_SPEC)))
    try:
        kubectl("wait", "--for=condition=Established", f"crd/scalers.{group}", "--timeout=60s")
        path = tmp_path / "s.json"
        kubectl("apply", "-f", write(path, scaler(group, "ok", memory="512Mi", address="10.43.0.10")))
        assert kubectl("get", f"scalers.{group}", "ok", "-o", "jsonpath={.spec.memory}") == "512Mi"

        err = kubectl.fails(
            "apply", "-f", write(path, scaler(group, "big", memory="2Gi", address="10.43.0.10"))
        )
        assert 'spec.memory: Invalid value: "string": must be under 1Gi' in err
        err = kubectl.fails(
            "apply", "-f", write(path, scaler(group, "far", memory="1Mi", address="10.44.0.1"))
        )
        assert 'spec.address: Invalid value: "string": must be in 10.43.0.0/16' in err
        assert kubectl("get", f"scalers.{group}", "-o", "name").split() == [f"scaler.{group}/ok"]
    finally:
        kubectl("delete", "crd", f"scalers.{group}")
