"""Real kubectl 1.20 (Debian bookworm's ``kubernetes-client``) against a supervisor-started server.

kubectl 1.20 is the oldest client the API server promises to serve, and it takes other paths than
1.37 (see test_kubectl.py): legacy discovery only, ``/openapi/v2`` as protobuf for client-side
validation (see test_kubectl_120_openapi.py), strategic merge
patches built from its compiled-in Go types, no ``fieldValidation`` query parameter, JSON request
bodies everywhere, a List (not a watch) to wait for deletions.

The binary is unpacked into ``.cache/kubectl-1.20/`` by ``tests/install_kubectl_120.sh``; if it is
missing, the first test runs that script, and every test skips (saying why) only if it cannot be
obtained. Every test runs in a namespace of its own with a ``--cache-dir`` of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from tests.e2e import conftest as e2e
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
    from tests.e2e.apiserver_fixtures import Cluster

pytest_plugins = ["tests.e2e.apiserver_fixtures"]  # the cluster and namespace fixtures

KUBECTL_120 = e2e.REPO_ROOT / ".cache" / "kubectl-1.20" / "usr" / "bin" / "kubectl"
INSTALL = e2e.REPO_ROOT / "tests" / "install_kubectl_120.sh"
INSTALL_TIMEOUT = 600.0  # seconds: apt-get update plus an 8 MB download on a slow mirror
COMMAND_TIMEOUT = 120.0  # seconds for one kubectl command (a hang fails the test, not the run)
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


# -- the binary and a helper to run it ---------------------------------------------------------------


def _runs(binary: Path) -> bool:
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        return False
    result = subprocess.run(
        [str(binary), "version", "--client", "--short"], capture_output=True, text=True, timeout=30
    )
    return result.returncode == 0 and "v1.20." in result.stdout


@pytest.fixture(scope="session")
def kubectl_120_binary() -> Path:
    """The kubectl 1.20 binary, installed by ``tests/install_kubectl_120.sh`` if it is not there yet."""
    if not _runs(KUBECTL_120):
        try:
            result = subprocess.run(
                ["bash", str(INSTALL)], capture_output=True, text=True, timeout=INSTALL_TIMEOUT
            )
            output = (result.stdout + result.stderr).strip()
        except subprocess.TimeoutExpired:
            output = f"{INSTALL} did not finish in {INSTALL_TIMEOUT}s"
        if not _runs(KUBECTL_120):
            reason = f"kubectl 1.20 could not be obtained ({KUBECTL_120} missing): {output or 'no output'}"
            print(f"SKIP: {reason}")
            pytest.skip(reason)
    return KUBECTL_120


class Kubectl120:
    """kubectl 1.20 against one kubeconfig, in one namespace, with a cache dir of its own."""

    def __init__(self, binary: Path, *, kubeconfig: Path, cache_dir: Path, namespace: str = "") -> None:
        self.binary = binary
        self.kubeconfig = kubeconfig
        self.cache_dir = cache_dir
        self.namespace = namespace
        self._background: list[e2e.Lines] = []

    def argv(self, *args: str) -> list[str]:
        base = [str(self.binary), f"--kubeconfig={self.kubeconfig}", f"--cache-dir={self.cache_dir}"]
        if self.namespace:
            base.append(f"--namespace={self.namespace}")
        return [*base, *args]

    @staticmethod
    def env() -> dict[str, str]:
        return {k: v for k, v in e2e.child_env().items() if k != "KUBECONFIG"}

    def run(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                self.argv(*args), input=input, capture_output=True, text=True, env=self.env(),
                timeout=COMMAND_TIMEOUT,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                f"kubectl 1.20 {' '.join(args)} did not finish in {COMMAND_TIMEOUT}s\n"
                f"stdout: {exc.stdout!r}\nstderr: {exc.stderr!r}"
            ) from None

    def __call__(self, *args: str, input: str | None = None) -> str:
        """Run kubectl, assert it succeeded, return its stdout."""
        result = self.run(*args, input=input)
        assert result.returncode == 0, (
            f"kubectl 1.20 {' '.join(args)} -> {result.returncode}\n"
            f"stderr: {result.stderr}\nstdout: {result.stdout}"
        )
        return result.stdout

    def fails(self, *args: str, input: str | None = None) -> str:
        """Run kubectl, assert it failed, return its stderr."""
        result = self.run(*args, input=input)
        assert result.returncode != 0, f"kubectl 1.20 {' '.join(args)} succeeded:\n{result.stdout}"
        return result.stderr

    def logged(self, *args: str, level: int = 8) -> tuple[str, str]:
        """Run kubectl at ``-v=<level>`` (8: requests, headers and bodies on stderr; 6: one line per
        request); return (stdout, stderr)."""
        result = self.run(*args, f"-v={level}")
        # a failure at this level dumps every goroutine: show only klog's error and warning lines
        errors = [line for line in result.stderr.splitlines() if line[:1] in "EFW" and line[1:5].isdigit()]
        assert result.returncode == 0, (
            f"kubectl 1.20 {' '.join(args)} -v={level} -> {result.returncode}\n" + "\n".join(errors)
        )
        return result.stdout, result.stderr

    def background(self, *args: str) -> e2e.Lines:
        """Start a long-running kubectl (``get -w``); it is stopped at the end of the test."""
        process = subprocess.Popen(
            self.argv(*args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, env=self.env(),
        )  # fmt: skip
        lines = e2e.Lines(process)
        self._background.append(lines)
        return lines

    def as_user(self, kubeconfig: Path, *, cache_dir: Path) -> Kubectl120:
        """kubectl 1.20 as someone else (another kubeconfig), in the same namespace."""
        other = Kubectl120(self.binary, kubeconfig=kubeconfig, cache_dir=cache_dir, namespace=self.namespace)
        other._background = self._background  # stopped with this one
        return other

    def close(self) -> None:
        for lines in self._background:
            lines.stop()


@pytest.fixture
def kubectl(
    kubectl_120_binary: Path, cluster: Cluster, namespace: str, tmp_path: Path
) -> Iterator[Kubectl120]:
    """kubectl 1.20 as the admin, in this test's namespace, with a fresh ``--cache-dir``."""
    ctl = Kubectl120(
        kubectl_120_binary,
        kubeconfig=cluster.kubeconfig,
        cache_dir=tmp_path / "kubectl-cache",
        namespace=namespace,
    )
    try:
        yield ctl
    finally:
        ctl.close()


# -- manifests ---------------------------------------------------------------------------------------


def write(path: Path, *objects: dict[str, Any]) -> str:
    """A manifest of ``objects`` as a stream of JSON objects, one after another.

    Not ``---``-separated JSON documents as test_kubectl.py writes for 1.37: 1.20 reads a file
    whose first document is JSON as one JSON stream, and fails at the first ``---``
    ("invalid character '-' in numeric literal") after creating the first object.
    """
    path.write_text("".join(json.dumps(obj, indent=1) + "\n" for obj in objects))
    return str(path)


def setup(kubectl: Kubectl120, manifest: str) -> str:
    """``apply`` the objects a test starts from, without client-side validation: it is tested (and
    fails alone, if it fails) in the create and apply tests."""
    return kubectl("apply", "--validate=false", "-f", manifest)


def requests(log: str) -> list[str]:
    """``METHOD /path?query STATUS`` of every request in a kubectl log, in order.

    At ``-v=6`` each request is one line; at ``-v=8`` its status comes on a later line (so only
    sequential requests pair up: use ``-v=6`` for concurrent ones, such as discovery's).
    """
    found, pending = [], ""
    for line in log.splitlines():
        words = line.split("] ", 1)[-1].split()
        if len(words) >= 2 and words[0] in METHODS and words[1].startswith("https://"):
            request = f"{words[0]} /{words[1].split('://', 1)[1].split('/', 1)[1]}"
            if len(words) >= 3 and words[2].isdigit():  # -v=6: "GET <url> 200 OK in 4 milliseconds"
                found.append(f"{request} {words[2]}")
            else:
                pending = request
        elif words[:2] == ["Response", "Status:"] and pending:
            found.append(f"{pending} {words[2]}")
            pending = ""
    return found


def request_headers(log: str, method: str) -> dict[str, str]:
    """The headers of the first ``method`` request in a ``-v=8`` log."""
    headers: dict[str, str] | None = None
    for line in log.splitlines():
        message = line.split("] ", 1)[-1]
        words = message.split()
        if headers is None:
            if len(words) == 2 and words[0] == method and words[1].startswith("https://"):
                headers = {}
        elif message.startswith("    ") and ": " in message:
            name, value = message.strip().split(": ", 1)
            headers[name] = value
        elif message.startswith("Response Status:"):
            return headers
    raise AssertionError(f"no {method} request in the log")


# -- version and discovery ---------------------------------------------------------------------------


def test_version(kubectl: Kubectl120) -> None:
    versions = json.loads(kubectl("version", "-o", "json"))
    assert versions["clientVersion"]["gitVersion"].startswith("v1.20.")
    server = versions["serverVersion"]
    assert server["major"] == "1" and server["minor"].rstrip("+").isdigit()
    assert server["gitVersion"].startswith(f"v1.{server['minor'].rstrip('+')}.")
    short = kubectl.run("version", "--short")
    assert short.returncode == 0, short.stderr
    assert short.stdout.splitlines() == [
        f"Client Version: {versions['clientVersion']['gitVersion']}",
        f"Server Version: {server['gitVersion']}",
    ]
    assert "WARNING" not in short.stderr  # 1.20 predates kubectl's client/server skew warning


def test_api_versions(kubectl: Kubectl120) -> None:
    assert set(kubectl("api-versions").split()) >= SERVED_GROUP_VERSIONS


def test_api_resources_over_legacy_discovery(kubectl: Kubectl120, tmp_path: Path) -> None:
    # 1.20 knows only legacy discovery: /api, /apis, then one APIResourceList per group/version,
    # every one of which must answer (a failing one is kubectl's partial-discovery error)
    out, log = kubectl.logged("api-resources", "--no-headers", "-o", "wide", level=6)
    fetched = requests(log)
    assert fetched[:2] == ["GET /api?timeout=32s 200", "GET /apis?timeout=32s 200"], fetched
    paths = {line.split()[1].split("?")[0] for line in fetched[2:]}
    assert {"/api/v1", "/apis/apps/v1", "/apis/batch/v1", "/apis/k3s.cattle.io/v1"} <= paths
    assert all(line.endswith(" 200") for line in fetched), fetched
    assert "unable to retrieve" not in log
    fresh = kubectl.as_user(kubectl.kubeconfig, cache_dir=tmp_path / "other-cache")
    _, headers = fresh.logged("api-versions")
    assert "Accept: application/json, */*" in headers and "apidiscovery.k8s.io" not in headers

    rows = {}
    for line in out.splitlines():
        name, rest = line.split(None, 1)
        verbs = rest[rest.index("[") :].strip()  # 1.20 prints verbs as a Go list, and no categories
        cells = rest[: rest.index("[")].split()
        rows[(name, cells[-3])] = (cells, verbs)
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
        assert (name, version) in rows, f"{name} ({version}) missing from api-resources"
    cells, verbs = rows[("pods", "v1")]
    assert cells == ["po", "v1", "true", "Pod"]
    assert verbs == "[create delete deletecollection get list patch update watch]"
    assert rows[("deployments", "apps/v1")][0] == ["deploy", "apps/v1", "true", "Deployment"]

    cluster_scoped = set(kubectl("api-resources", "--namespaced=false", "-o", "name").split())
    assert {"namespaces", "nodes", "persistentvolumes", "clusterroles.rbac.authorization.k8s.io"} <= (
        cluster_scoped
    )
    assert "pods" not in cluster_scoped
    apps = set(kubectl("api-resources", "--api-group=apps", "-o", "name").split())
    assert apps == {
        f"{r}.apps"
        for r in ("controllerrevisions", "daemonsets", "deployments", "replicasets", "statefulsets")
    }
    # short names resolve through the same lists
    assert kubectl.run("get", "po,deploy,cm,sa", "-o", "name").returncode == 0


# -- create and apply with default validation --------------------------------------------------------


def test_create_from_file_with_default_validation(
    kubectl: Kubectl120, namespace: str, tmp_path: Path
) -> None:
    manifest = write(tmp_path / "web.yaml", deployment(), configmap("settings", mode="fast"))
    out, log = kubectl.logged("create", "-f", manifest)  # --validate=true is the default
    assert "deployment.apps/web created" in out and "configmap/settings created" in out
    # 1.20 fetched /openapi/v2 as protobuf to validate against, and sent no fieldValidation parameter
    assert "GET /openapi/v2?timeout=32s 200" in requests(log)
    assert "Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf" in log
    posts = [line for line in requests(log) if line.startswith("POST ")]
    assert len(posts) == 2 and all(
        "fieldManager=kubectl-create" in p and "fieldValidation" not in p and p.endswith(" 201")
        for p in posts
    ), posts

    live = get_json(kubectl, "deployment", "web")
    assert live["metadata"]["namespace"] == namespace and live["metadata"]["uid"]
    assert live["spec"]["replicas"] == 2
    assert live["spec"]["strategy"]["type"] == "RollingUpdate"  # defaulted by the server
    assert get_json(kubectl, "configmap", "settings")["data"] == {"mode": "fast"}
    err = kubectl.fails("create", "-f", manifest)
    assert 'deployments.apps "web" already exists' in err and "AlreadyExists" in err


def test_apply_then_apply_after_edit(kubectl: Kubectl120, tmp_path: Path) -> None:
    path = tmp_path / "web.yaml"
    out = kubectl("apply", "-f", write(path, deployment(), configmap("settings", mode="fast")))
    assert "deployment.apps/web created" in out and "configmap/settings created" in out
    first = get_json(kubectl, "deployment", "web")
    applied = json.loads(first["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"])
    assert applied["spec"]["replicas"] == 2
    again = kubectl("apply", "-f", str(path))
    assert "deployment.apps/web unchanged" in again and "configmap/settings unchanged" in again

    edited = deployment(replicas=3, image="nginx:1.26")
    edited["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "MODE", "value": "edited"}]
    out, log = kubectl.logged("apply", "-f", write(path, edited, configmap("settings", mode="slow")))
    assert "deployment.apps/web configured" in out and "configmap/settings configured" in out
    # a three-way strategic merge patch (merge keys from the server's /openapi/v2 document)
    assert "Content-Type: application/strategic-merge-patch+json" in log
    assert any(
        line.startswith("PATCH ") and "fieldManager=kubectl-client-side-apply" in line
        for line in requests(log)
    )
    live = get_json(kubectl, "deployment", "web")
    container = live["spec"]["template"]["spec"]["containers"][0]
    assert live["spec"]["replicas"] == 3 and container["image"] == "nginx:1.26"
    assert container["env"] == [{"name": "MODE", "value": "edited"}]
    assert live["metadata"]["generation"] == 2
    assert get_json(kubectl, "configmap", "settings")["data"] == {"mode": "slow"}

    # a field dropped from the manifest is removed from the live object (the three-way merge)
    del edited["spec"]["template"]["spec"]["containers"][0]["env"]
    kubectl("apply", "-f", write(path, edited))
    container = get_json(kubectl, "deployment", "web")["spec"]["template"]["spec"]["containers"][0]
    assert "env" not in container and container["image"] == "nginx:1.26"


# -- get -------------------------------------------------------------------------------------------


def test_get_outputs(kubectl: Kubectl120, namespace: str, tmp_path: Path) -> None:
    setup(kubectl, write(tmp_path / "objs.yaml", deployment(), configmap("settings", mode="fast")))

    rows = table(kubectl("get", "deployments"))
    assert rows[0] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert rows[1][:4] == ["web", "0/2", "0", "0"]
    wide = table(kubectl("get", "deployments", "-o", "wide"))
    assert wide[0] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"]
    assert wide[1][0] == "web" and wide[1][5:] == ["main", "nginx:1.25", "app=web"]
    assert table(kubectl("get", "configmaps", "settings", "-o", "wide"))[1][:2] == ["settings", "1"]

    as_yaml = yaml.safe_load(kubectl("get", "deployment", "web", "-o", "yaml"))
    assert as_yaml["kind"] == "Deployment" and as_yaml["metadata"]["namespace"] == namespace
    assert "managedFields" in as_yaml["metadata"]  # 1.20 shows them; 1.21+ hide them by default
    listed = yaml.safe_load(kubectl("get", "deployments", "-o", "yaml"))
    assert listed["kind"] == "List" and [i["metadata"]["name"] for i in listed["items"]] == ["web"]

    image = kubectl("get", "deployment", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image}")
    assert image == "nginx:1.25"
    names = kubectl(
        "get", "deployments,configmaps", "-o", "jsonpath={range .items[*]}{.kind}/{.metadata.name} {end}"
    )
    assert [n for n in names.split() if n != "ConfigMap/kube-root-ca.crt"] == [
        "Deployment/web",
        "ConfigMap/settings",
    ]
    assert "deployment.apps/web" in kubectl("get", "all", "-o", "name").split()  # the "all" category


def test_get_watch(kubectl: Kubectl120, tmp_path: Path) -> None:
    setup(kubectl, write(tmp_path / "cm.yaml", configmap("watched", a="1")))
    watch = kubectl.background("get", "configmap", "watched", "--watch")
    header, row = table("\n".join(watch.next(2)))
    assert header == ["NAME", "DATA", "AGE"] and row[:2] == ["watched", "1"]
    kubectl("patch", "configmap", "watched", "--type=merge", "-p", '{"data":{"b":"2"}}')
    seen = lines_until(watch, lambda line: line.split()[:2] == ["watched", "2"])
    assert len(seen) >= 3

    events = kubectl.background("get", "configmaps", "--watch", "--output-watch-events", "-l", "w=1")
    setup(kubectl, write(tmp_path / "second.yaml", configmap("second", {"w": "1"}, a="1")))
    seen = lines_until(events, lambda line: line.split()[:2] == ["ADDED", "second"])
    assert seen[0].split()[:3] == ["EVENT", "NAME", "DATA"]
    kubectl("label", "configmap", "second", "x=y")
    lines_until(events, lambda line: line.split()[:2] == ["MODIFIED", "second"])
    kubectl("delete", "configmap", "second")
    lines_until(events, lambda line: line.split()[:2] == ["DELETED", "second"])


# -- label, annotate, patch, scale, delete -----------------------------------------------------------


def test_label_and_annotate(kubectl: Kubectl120, tmp_path: Path) -> None:
    setup(kubectl, write(tmp_path / "cm.yaml", configmap("tagged", {"keep": "yes"})))
    assert "configmap/tagged labeled" in kubectl("label", "configmap", "tagged", "env=prod")
    assert "already has a value (prod)" in kubectl.fails("label", "configmap", "tagged", "env=dev")
    kubectl("label", "configmap", "tagged", "env=dev", "--overwrite")
    assert get_json(kubectl, "configmap", "tagged")["metadata"]["labels"] == {"keep": "yes", "env": "dev"}
    kubectl("label", "configmap", "tagged", "keep-")
    assert get_json(kubectl, "configmap", "tagged")["metadata"]["labels"] == {"env": "dev"}
    shown = table(kubectl("get", "configmaps", "--show-labels"))
    assert shown[0][-1] == "LABELS" and ["tagged", "env=dev"] in [[row[0], row[-1]] for row in shown[1:]]
    assert kubectl("get", "configmaps", "-l", "env=dev", "-o", "name") == "configmap/tagged\n"

    assert "configmap/tagged annotated" in kubectl("annotate", "configmap", "tagged", "owner=team-a")
    assert "already has a value (team-a)" in kubectl.fails("annotate", "configmap", "tagged", "owner=team-b")
    kubectl("annotate", "configmap", "tagged", "owner=team-b", "--overwrite")
    assert get_json(kubectl, "configmap", "tagged")["metadata"]["annotations"]["owner"] == "team-b"
    kubectl("annotate", "configmap", "tagged", "owner-")
    assert "owner" not in (get_json(kubectl, "configmap", "tagged")["metadata"].get("annotations") or {})


def test_patch_strategic_merge_json(kubectl: Kubectl120, tmp_path: Path) -> None:
    setup(kubectl, write(tmp_path / "web.yaml", deployment()))

    # strategic (the default): containers merge on their name
    sidecar = {"spec": {"template": {"spec": {"containers": [{"name": "side", "image": "busybox:1.36"}]}}}}
    out, log = kubectl.logged("patch", "deployment", "web", "-p", json.dumps(sidecar))
    assert "deployment.apps/web patched" in out
    assert "Content-Type: application/strategic-merge-patch+json" in log
    containers = get_json(kubectl, "deployment", "web")["spec"]["template"]["spec"]["containers"]
    assert sorted(c["name"] for c in containers) == ["main", "side"]

    # merge: null removes a key
    merge = {"metadata": {"labels": {"tier": "front", "app": None}}}
    kubectl("patch", "deployment", "web", "--type=merge", "-p", json.dumps(merge))
    assert get_json(kubectl, "deployment", "web")["metadata"]["labels"] == {"tier": "front"}

    # json: RFC 6902 operations; a failing test op fails the whole patch
    ops = [
        {"op": "replace", "path": "/spec/replicas", "value": 7},
        {"op": "remove", "path": "/spec/template/spec/containers/1"},
    ]
    kubectl("patch", "deployment", "web", "--type=json", "-p", json.dumps(ops))
    live = get_json(kubectl, "deployment", "web")
    assert live["spec"]["replicas"] == 7 and len(live["spec"]["template"]["spec"]["containers"]) == 1
    test_op = (
        '[{"op":"test","path":"/spec/replicas","value":1},{"op":"replace","path":"/spec/replicas","value":2}]'
    )
    err = kubectl.fails("patch", "deployment", "web", "--type=json", "-p", test_op)
    assert "The request is invalid" in err
    assert get_json(kubectl, "deployment", "web")["spec"]["replicas"] == 7

    # a patch that changes nothing
    assert "patched (no change)" in kubectl(
        "patch", "deployment", "web", "--type=merge", "-p", json.dumps(merge)
    )


def test_scale(kubectl: Kubectl120, namespace: str, tmp_path: Path) -> None:
    setup(kubectl, write(tmp_path / "web.yaml", deployment(replicas=2)))
    out, log = kubectl.logged("scale", "deployment", "web", "--replicas=5")
    assert "deployment.apps/web scaled" in out
    assert [line for line in requests(log) if "/scale" in line] == [
        f"PATCH /apis/apps/v1/namespaces/{namespace}/deployments/web/scale 200"
    ]
    assert get_json(kubectl, "deployment", "web")["spec"]["replicas"] == 5
    # a precondition switches kubectl to GET + PUT of the scale subresource
    out, log = kubectl.logged("scale", "deployment", "web", "--current-replicas=5", "--replicas=1")
    assert [line.split()[0] for line in requests(log) if "/scale" in line] == ["GET", "PUT"]
    assert get_json(kubectl, "deployment", "web")["spec"]["replicas"] == 1
    err = kubectl.fails("scale", "deployment", "web", "--current-replicas=3", "--replicas=2")
    assert "Expected replicas to be 3, was 1" in err


def test_delete(kubectl: Kubectl120, tmp_path: Path) -> None:
    setup(kubectl, write(tmp_path / "cms.yaml", configmap("a"), configmap("b")))
    kubectl("run", "doomed", "--image=busybox:1.36", "--restart=Never")
    # 1.20 waits for a deletion by listing (not watching) with a metadata.name field selector
    out, log = kubectl.logged("delete", "configmap", "a", "--timeout=60s")
    assert 'configmap "a" deleted' in out
    assert any("fieldSelector=metadata.name%3Da" in line for line in requests(log)), requests(log)
    assert 'configmap "b" deleted' in kubectl("delete", "configmap", "b", "--wait=false")
    assert 'pod "doomed" deleted' in kubectl("delete", "pod", "doomed", "--timeout=60s")
    remaining = set(kubectl("get", "configmaps,pods", "-o", "name").split())
    assert not {"configmap/a", "configmap/b", "pod/doomed"} & remaining
    assert 'configmaps "a" not found' in kubectl.fails("delete", "configmap", "a")
    assert kubectl("delete", "configmap", "a", "--ignore-not-found") == ""

    objects = [configmap(f"c{i}", {"batch": "x" if i % 2 else "y"}) for i in range(4)]
    setup(kubectl, write(tmp_path / "batch.yaml", *objects))
    kubectl("delete", "configmaps", "-l", "batch=x")
    assert sorted(kubectl("get", "configmaps", "-l", "batch", "-o", "name").split()) == [
        "configmap/c0",
        "configmap/c2",
    ]


# -- auth --------------------------------------------------------------------------------------------


def test_auth_can_i(cluster: Cluster, kubectl: Kubectl120, tmp_path: Path) -> None:
    assert kubectl("auth", "can-i", "create", "pods").strip() == "yes"
    assert kubectl("auth", "can-i", "delete", "nodes").strip() == "yes"
    assert kubectl("auth", "can-i", "get", "/healthz").strip() == "yes"
    rules = table(kubectl("auth", "can-i", "--list"))
    assert rules[0][:2] == ["Resources", "Non-Resource"]
    assert ["*.*", "[]", "[]", "[*]"] in rules  # system:masters may do anything

    user = f"viewer-{unique()}"
    setup(kubectl, write(tmp_path / "rb.yaml", view_binding(user)))
    viewer = kubectl.as_user(
        cluster.write_kubeconfig(tmp_path / "user.kubeconfig", cluster.issue_user(user)),
        cache_dir=tmp_path / "user-cache",
    )
    assert viewer("auth", "can-i", "get", "pods").strip() == "yes"
    denied = viewer.run("auth", "can-i", "create", "pods")
    assert denied.returncode == 1 and denied.stdout.strip() == "no"
    assert viewer.run("auth", "can-i", "get", "pods", "-n", "kube-system").stdout.strip() == "no"
    err = viewer.fails("create", "configmap", "nope")
    assert "Forbidden" in err and f'User "{user}" cannot create resource "configmaps"' in err


# -- imperative create (typed clients) ---------------------------------------------------------------


def test_create_configmap_and_secret(kubectl: Kubectl120) -> None:
    """1.20's ``create configmap``/``secret``/``serviceaccount``/``namespace`` POST a JSON body
    with no Content-Type header at all (1.37's typed clients send protobuf): the server must read
    a body without a Content-Type as JSON, as upstream does."""
    out, log = kubectl.logged("create", "configmap", "literal", "--from-literal=a=1", "--from-literal=b=two")
    assert "configmap/literal created" in out
    assert 'Request Body: {"apiVersion":"v1","data":{"a":"1","b":"two"},"kind":"ConfigMap"' in log
    assert "Content-Type" not in request_headers(log, "POST")
    assert get_json(kubectl, "configmap", "literal")["data"] == {"a": "1", "b": "two"}

    out, log = kubectl.logged("create", "secret", "generic", "creds", "--from-literal=password=s3cret")
    assert "secret/creds created" in out
    assert 'Request Body: {"apiVersion":"v1","data":{"password":"czNjcmV0"},"kind":"Secret"' in log
    secret = get_json(kubectl, "secret", "creds")
    assert secret["data"] == {"password": "czNjcmV0"} and secret["type"] == "Opaque"

    kubectl("create", "serviceaccount", "builder")
    assert get_json(kubectl, "serviceaccount", "builder")["metadata"]["name"] == "builder"
    kubectl("create", "deployment", "imperative", "--image=nginx:1.25")
    assert get_json(kubectl, "deployment", "imperative")["spec"]["replicas"] == 1
    kubectl("expose", "deployment", "imperative", "--port=80")
    service = get_json(kubectl, "service", "imperative")
    assert service["spec"]["selector"] == {"app": "imperative"}
    assert service["spec"]["clusterIP"].startswith("10.43.")
    kubectl("run", "single", "--image=busybox:1.36", "--restart=Never")
    assert get_json(kubectl, "pod", "single")["status"]["phase"] == "Pending"
