"""kubectl 1.20 on the server's ``/openapi/v2`` protobuf document (``openapi_v2_proto``).

kubectl 1.20 reads ``/openapi/v2`` (a gnostic ``openapi_v2.Document``) for ``explain``, for
client-side validation (``create``/``apply`` with the default ``--validate=true``), for the strategic
merge keys ``apply`` computes its patch with, and for the dry-run check of ``diff`` and
``apply --dry-run=server`` (a PATCH operation with the kind's GVK that declares ``dryRun``).
An empty document breaks ``explain`` (``couldn't find resource for "/v1, Kind=Pod"``) and the dry-run
check (``doesn't support dry-run``), and validates nothing.

Same harness as test_kubectl_120.py (its binary, ``kubectl`` fixture and manifest helpers): a
supervisor-started cluster, a namespace and a ``--cache-dir`` per test.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

from tests.e2e import test_kubectl_120 as k120

pytest_plugins = ["tests.e2e.apiserver_fixtures"]  # the cluster and namespace fixtures

# the fixtures of test_kubectl_120.py: the binary (installed on first use) and kubectl 1.20 as admin
kubectl_120_binary = k120.kubectl_120_binary
kubectl = k120.kubectl

deployment, configmap, write, requests, get_json = (
    k120.deployment,
    k120.configmap,
    k120.write,
    k120.requests,
    k120.get_json,
)
Kubectl120 = k120.Kubectl120


def failed_requests(kubectl: Kubectl120, *args: str) -> tuple[str, list[str]]:
    """Run a kubectl command expected to fail at ``-v=6``: (its error line, the requests it made)."""
    result = kubectl.run(*args, "-v=6")
    assert result.returncode != 0, f"kubectl 1.20 {' '.join(args)} succeeded:\n{result.stdout}"
    # at -v=6 the error is klog's fatal line ("F1121 12:00:00.000000 1 helpers.go:115] error: ..."),
    # followed by a goroutine dump
    errors = [
        line.split("] ", 1)[1]
        for line in result.stderr.splitlines()
        if line[:1] == "F" and line[1:5].isdigit() and "] " in line
    ]
    assert errors, result.stderr[-3000:]
    return errors[0], requests(result.stderr)


def lines(output: str) -> list[str]:
    return [line.rstrip() for line in output.splitlines()]


# -- explain ----------------------------------------------------------------------------------------


def test_explain(kubectl: Kubectl120) -> None:
    out = lines(kubectl("explain", "pods"))
    assert out[:2] == ["KIND:     Pod", "VERSION:  v1"]
    assert "DESCRIPTION:" in out and "FIELDS:" in out
    fields = {line.split("\t")[0].strip(): line.split("\t")[1] for line in out if "\t" in line}
    assert fields == {
        "apiVersion": "<string>",
        "kind": "<string>",
        "metadata": "<Object>",
        "spec": "<Object>",
        "status": "<Object>",
    }

    out = lines(kubectl("explain", "pod.spec.containers.ports"))
    assert out[:2] == ["KIND:     Pod", "VERSION:  v1"]
    assert "RESOURCE: ports <[]Object>" in out
    assert "   containerPort\t<integer> -required-" in out
    assert "   protocol\t<string>" in out
    assert any("ContainerPort represents a network port in a single container." in line for line in out)

    out = kubectl("explain", "deployments.spec.strategy", "--api-version=apps/v1")
    assert "VERSION:  apps/v1" in out and "rollingUpdate\t<Object>" in out and "type\t<string>" in out
    # the whole graph of references, as explain walks it
    recursive = kubectl("explain", "deployments", "--recursive")
    assert "containers\t<[]Object>" in recursive and "containerPort\t<integer>" in recursive
    assert 'field "nope" does not exist' in kubectl.fails("explain", "pod.spec.nope")


# -- client-side validation ---------------------------------------------------------------------------


def test_create_validates_on_the_client(kubectl: Kubectl120, tmp_path: Path) -> None:
    web = deployment()
    container = web["spec"]["template"]["spec"]["containers"][0]
    container["resources"] = {"limits": {"cpu": 1, "memory": "64Mi"}}  # quantities: numbers or strings
    container["env"] = [{"name": "MODE", "value": "fast"}]
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"app": "web"},
            "ports": [  # targetPort is an int-or-string
                {"name": "http", "port": 80, "targetPort": 8080},
                {"name": "admin", "port": 81, "targetPort": "admin"},
            ],
        },
    }
    out, log = kubectl.logged(
        "create", "-f", write(tmp_path / "ok.yaml", web, service, configmap("c", a="1"))
    )
    assert (
        "deployment.apps/web created" in out and "service/web created" in out and "configmap/c created" in out
    )
    assert "GET /openapi/v2?timeout=32s 200" in requests(log)

    typo = deployment("typo")
    typo["spec"]["replicsa"] = 3
    error, sent = failed_requests(kubectl, "create", "-f", write(tmp_path / "typo.yaml", typo))
    assert 'unknown field "replicsa" in io.k8s.api.apps.v1.DeploymentSpec' in error
    assert "ValidationError(Deployment.spec)" in error and "--validate=false" in error
    assert not [line for line in sent if line.startswith("POST ")], sent  # rejected before sending

    wrong_type = deployment("wrong-type")
    wrong_type["spec"]["replicas"] = "two"
    error = kubectl.fails("create", "-f", write(tmp_path / "type.yaml", wrong_type))
    assert (
        'invalid type for io.k8s.api.apps.v1.DeploymentSpec.replicas: got "string", expected "integer"'
        in error
    )

    unnamed = deployment("unnamed")
    del unnamed["spec"]["template"]["spec"]["containers"][0]["name"]
    error = kubectl.fails("create", "-f", write(tmp_path / "unnamed.yaml", unnamed))
    assert 'missing required field "name" in io.k8s.api.core.v1.Container' in error

    nested = configmap("nested")
    nested["metadata"]["lables"] = {"a": "b"}
    error = kubectl.fails("apply", "-f", write(tmp_path / "nested.yaml", nested))
    assert 'unknown field "lables" in io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta' in error

    for name in ("typo", "wrong-type", "unnamed"):
        assert "NotFound" in kubectl.fails("get", "deployment", name)
    # --validate=false sends it: the server drops the unknown field, with a warning
    result = kubectl.run("create", "--validate=false", "-f", str(tmp_path / "typo.yaml"))
    assert result.returncode == 0 and "deployment.apps/typo created" in result.stdout, result.stderr
    assert 'unknown field "spec.replicsa"' in result.stderr


# -- apply: merge keys from the document ----------------------------------------------------------------


def test_apply_takes_merge_keys_from_the_document(kubectl: Kubectl120, tmp_path: Path) -> None:
    """1.20 computes apply's strategic merge patch from /openapi/v2 first, its compiled-in types
    only without it: shown with ``schedulingGates`` (Kubernetes 1.26), a list merged on ``name``
    that 1.20's types do not have."""
    path = tmp_path / "gated.yaml"
    gated = deployment("gated")
    gated["spec"]["template"]["spec"]["schedulingGates"] = [{"name": "a"}]
    assert "deployment.apps/gated created" in kubectl("apply", "-f", write(path, gated))

    gated["spec"]["template"]["spec"]["schedulingGates"] = [{"name": "a"}, {"name": "b"}]
    out, log = kubectl.logged("apply", "-f", write(path, gated))
    assert "deployment.apps/gated configured" in out
    bodies = [line for line in log.splitlines() if "Request Body:" in line]
    assert any(
        '"$setElementOrder/schedulingGates":[{"name":"a"},{"name":"b"}],"schedulingGates":[{"name":"b"}]' in b
        for b in bodies
    ), bodies  # only the added entry, keyed by name
    live = get_json(kubectl, "deployment", "gated")["spec"]["template"]["spec"]["schedulingGates"]
    assert live == [{"name": "a"}, {"name": "b"}]

    # without the document, the compiled-in types cannot patch the field at all
    gated["spec"]["template"]["spec"]["schedulingGates"] = [{"name": "b"}]
    err = kubectl.fails("apply", "--openapi-patch=false", "-f", write(path, gated))
    assert 'unable to find api field in struct PodSpec for the json field "schedulingGates"' in err
    kubectl("apply", "-f", str(path))
    live = get_json(kubectl, "deployment", "gated")["spec"]["template"]["spec"]["schedulingGates"]
    assert live == [{"name": "b"}]


# -- diff and server-side dry run ------------------------------------------------------------------------


def test_diff(kubectl: Kubectl120, tmp_path: Path) -> None:
    path = tmp_path / "web.yaml"
    kubectl("apply", "-f", write(path, deployment(), configmap("settings", mode="fast")))
    same = kubectl.run("diff", "-f", str(path))
    assert (same.returncode, same.stdout) == (0, ""), same.stderr

    edited = deployment(replicas=3, image="nginx:1.26")
    result = kubectl.run(
        "diff",
        "-f",
        write(path, edited, configmap("settings", mode="slow"), configmap("fresh", a="1")),
        "-v=6",
    )
    assert result.returncode == 1, result.stderr  # 1: differences found
    diff = lines(result.stdout)
    assert "-  replicas: 2" in diff and "+  replicas: 3" in diff
    assert [line for line in diff if "image: nginx:" in line and line[0] in "+-"] == [
        "-      - image: nginx:1.25",
        "+      - image: nginx:1.26",
    ]
    assert "-  mode: fast" in diff and "+  mode: slow" in diff
    assert "+  name: fresh" in diff  # a new object: its whole dry-run creation
    sent = requests(result.stderr)
    dry = [line for line in sent if line.split()[0] in ("PATCH", "POST")]
    assert len(dry) == 3 and all("dryRun=All" in line for line in dry), sent

    # nothing changed on the server
    assert get_json(kubectl, "deployment", "web")["spec"]["replicas"] == 2
    assert get_json(kubectl, "configmap", "settings")["data"] == {"mode": "fast"}
    assert "NotFound" in kubectl.fails("get", "configmap", "fresh")


def test_apply_server_dry_run(kubectl: Kubectl120, tmp_path: Path) -> None:
    path = tmp_path / "web.yaml"
    kubectl("apply", "-f", write(path, deployment()))
    out, log = kubectl.logged(
        "apply",
        "--dry-run=server",
        "-f",
        write(path, deployment(replicas=5), configmap("new", a="1")),
        level=6,
    )
    assert "deployment.apps/web configured (server dry run)" in out
    assert "configmap/new created (server dry run)" in out
    writes = [line for line in requests(log) if line.split()[0] in ("PATCH", "POST")]
    assert len(writes) == 2 and all("dryRun=All" in line for line in writes), writes
    assert get_json(kubectl, "deployment", "web")["spec"]["replicas"] == 2
    assert "NotFound" in kubectl.fails("get", "configmap", "new")

    single = write(tmp_path / "single.yaml", deployment(replicas=7))
    out = kubectl("apply", "--dry-run=server", "-f", single, "-o", "jsonpath={.spec.replicas}")
    assert out == "7"  # the server's answer to the dry run


# -- custom resources ---------------------------------------------------------------------------------


def widget_crd(group: str) -> dict[str, Any]:
    spec = {
        "type": "object",
        "description": "What the widget should be.",
        "required": ["size"],
        "properties": {
            "size": {"type": "integer", "description": "How big."},
            "port": {"x-kubernetes-int-or-string": True},
            "color": {"type": "string", "nullable": True},
            "extra": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
                "properties": {"known": {"type": "string"}},
            },
            "tags": {"type": "array", "items": {"type": "string"}},
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": spec,
                                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                            },
                        }
                    },
                }
            ],
        },
    }


def test_custom_resource(kubectl: Kubectl120, tmp_path: Path) -> None:
    group = f"e{k120.unique()}.example.com"
    kubectl("apply", "-f", write(tmp_path / "crd.yaml", widget_crd(group)))
    deadline = time.monotonic() + 30
    while (explained := kubectl.run("explain", "widgets.spec")).returncode != 0:
        assert time.monotonic() < deadline, explained.stderr
        time.sleep(0.5)
    out = lines(explained.stdout)
    assert f"VERSION:  {group}/v1" in out and "RESOURCE: spec <Object>" in out
    assert "   size\t<integer> -required-" in out and "   tags\t<[]string>" in out

    widget = {
        "apiVersion": f"{group}/v1",
        "kind": "Widget",
        "metadata": {"name": "w"},
        # unknown fields under preserve-unknown-fields, an int-or-string, a null nullable
        "spec": {"size": 3, "port": "http", "color": None, "extra": {"known": "k", "other": {"x": 1}}},
    }
    path = tmp_path / "widget.yaml"
    assert f"widget.{group}/w created" in kubectl("create", "-f", write(path, widget))

    typo = copy.deepcopy(widget)
    typo["metadata"]["name"] = "typo"
    typo["spec"]["sise"] = 1
    error = kubectl.fails("create", "-f", write(tmp_path / "typo.yaml", typo))
    assert 'unknown field "sise"' in error and "ValidationError(Widget.spec)" in error

    # the dry-run check for a custom resource: Namespace's PATCH declares dryRun, and the CRD exists
    widget["spec"]["size"] = 4
    write(path, widget)
    result = kubectl.run("diff", "-f", str(path))
    assert result.returncode == 1, result.stderr
    assert "-  size: 3" in lines(result.stdout) and "+  size: 4" in lines(result.stdout)
    assert f"widget.{group}/w configured (server dry run)" in kubectl(
        "apply", "--dry-run=server", "-f", str(path)
    )
    assert get_json(kubectl, f"widgets.{group}", "w")["spec"]["size"] == 3
