"""Workloads end to end: the scheduler and controllers under the supervisor, driven by real kubectl.

Each profile (``server``: one process per component; ``edge``: everything in one process) gets a
cluster of its own, started with ``k3s-supervisor start`` and a shortened node grace period, plus a
node agent in virtual mode (``k3s-supervisor run agent --virtual-nodes 3``, with the admin's
kubeconfig): three Ready nodes whose pods are reported Running without executing anything, and
whose run-to-completion pods (restartPolicy Never/OnFailure) succeed at once, as kwok's do.

A third cluster, ``server-agent``, has no virtual nodes: its one node is the server's own agent with
the process runtime, so pods really run (pause images as a shell that sleeps until SIGTERM, busybox
commands on the host) and their phase and readiness are the agent's. The core workload tests (deployment lifecycle,
Job, DaemonSet, StatefulSet) run there too; tests that need several nodes, nodes of their own making
or another agent are parametrized for the virtual clusters only, and say why.

What is checked is what a user sees through kubectl: rollouts finish (``rollout status``), image
changes keep ``maxUnavailable`` at every step, undo and scaling work, deletion cascades, Jobs
complete, DaemonSets cover every node, StatefulSets create in order, nodes that never report or
whose agent dies (a one-node virtual agent of their own, killed) turn NotReady and lose their pods,
namespaces empty out, placements follow requests, taints and affinity, manifests in
``server/manifests`` are applied, changed and removed with ``--disable``, and a rollout caught
midway (``minReadySeconds`` makes it take several steps) survives the controllers process being
killed. Waits use kubectl's ``--timeout`` or a polling deadline; nothing asserts how fast anything is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e import conftest as e2e

if TYPE_CHECKING:
    from tests.e2e.apiserver_fixtures import Cluster, Kubectl

pytest_plugins = ["tests.e2e.apiserver_fixtures"]


class _Fixtures:
    """``tests.e2e.apiserver_fixtures``, imported on first use: pytest must load it as a plugin first
    (to rewrite its asserts), which it does after importing this module."""

    def __getattr__(self, name: str) -> Any:
        from tests.e2e import apiserver_fixtures

        return getattr(apiserver_fixtures, name)


fixtures = _Fixtures()

GRACE = "6s"  # node-monitor-grace-period of these clusters (50 s by default)
VIRTUAL_NODES = 3
OWN_NODE = "wl-own"  # the node of the server-agent cluster: the server's own agent, process runtime
ON_VIRTUAL_NODES = ["server", "edge"]  # the clusters whose nodes are the virtual agent's
MIN_READY = 5  # minReadySeconds of the rollout killed midway: each step waits that long for its new pod


wait_for = e2e.wait_for


# -- clusters with nodes ---------------------------------------------------------------------------------


class VirtualAgent:
    """``k3s-supervisor run agent --virtual-nodes N`` joined to ``cluster`` with its token."""

    def __init__(
        self, cluster: Cluster, base: Path, *, count: int = VIRTUAL_NODES, name: str = "virt"
    ) -> None:
        self.cluster = cluster
        self.base = base
        self.count = count
        self.name = name
        self.log_path = base / f"agent-{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "supervisor", "run", "agent", "--config", "",
            "--data-dir", str(self.base / f"agent-{self.name}"),
            # Virtual nodes act for many nodes, which one node certificate may not: the admin's kubeconfig.
            "--agent-kubeconfig", str(self.cluster.kubeconfig),
            "--node-name", self.name,
            "--virtual-nodes", str(self.count),
            # Renewals every 2 s: well inside the shortened grace period, or nodes would flap.
            "--kubelet-arg", "node-lease-duration-seconds=8",
        ]  # fmt: skip

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=e2e.child_env(), start_new_session=True,
            )  # fmt: skip

    def kill(self) -> None:
        """SIGKILL, as a crashed or cut-off kubelet: no last status, its Leases simply stop."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(fixtures.STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        print(f"--- virtual agent {self.name} log ---\n{self.log_path.read_text(errors='replace')[-10_000:]}")


@dataclasses.dataclass(frozen=True)
class WorkloadCluster:
    """A cluster, the nodes its tests' pods go to, and the runtime that reports those pods
    (the scheme of their ``containerID``: ``virtual`` or ``process``)."""

    cluster: Cluster
    nodes: list[str]
    runtime: str


def _virtual_cluster(kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkloadCluster]:
    base = tmp_path_factory.mktemp(f"workloads-{kind}")
    # The server's own node is left out (--disable-agent): pods land on the virtual nodes only.
    args = ("--disable-agent", "--kube-controller-manager-arg", f"node-monitor-grace-period={GRACE}")
    with fixtures.running_cluster(kind, base, extra_args=args) as cluster:
        agent = VirtualAgent(cluster, base)
        agent.start()
        try:
            ctl = fixtures.Kubectl(kubeconfig=cluster.kubeconfig, cache_dir=base / "kubectl-cache")
            wait_for(f"{VIRTUAL_NODES} Ready nodes", lambda: len(virtual_nodes(ctl)) >= VIRTUAL_NODES)
            yield WorkloadCluster(cluster, virtual_nodes(ctl), "virtual")
        finally:
            agent.stop()


def _own_node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkloadCluster]:
    base = tmp_path_factory.mktemp("workloads-server-agent")
    try:
        with fixtures.running_cluster("server", base, extra_args=("--node-name", OWN_NODE)) as cluster:
            ctl = fixtures.Kubectl(kubeconfig=cluster.kubeconfig, cache_dir=base / "kubectl-cache")
            wait_for(f"{OWN_NODE} Ready", lambda: OWN_NODE in ready_nodes(ctl))
            yield WorkloadCluster(cluster, [OWN_NODE], "process")
    finally:
        kill_containers(base)


def kill_containers(base: Path) -> None:
    """SIGKILL the containers the agents under ``base`` left running: containers outlive their
    agent by design (as with K3s), so stopping the cluster stops none of them. Each container is the
    process group its ``state.json`` names, if that pid still has the recorded start time."""
    from services.agent.runtimes import shim

    for state_path in base.rglob("containers/*/*/state.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            state = json.loads(state_path.read_text())
            if shim.start_ticks(state["pid"]) == state["start_ticks"]:
                os.killpg(state["pid"], signal.SIGKILL)


@pytest.fixture(scope="module", params=[*ON_VIRTUAL_NODES, "server-agent"])
def workload_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkloadCluster]:
    if request.param == "server-agent":
        yield from _own_node_cluster(tmp_path_factory)
    else:
        yield from _virtual_cluster(request.param, tmp_path_factory)


@pytest.fixture
def ctl(workload_cluster: WorkloadCluster, tmp_path: Path) -> Iterator[Kubectl]:
    cluster = workload_cluster.cluster
    namespace = f"wl-{fixtures.random_suffix()}"
    made = fixtures.Kubectl(kubeconfig=cluster.kubeconfig, cache_dir=tmp_path / "kubectl-cache")
    made("create", "namespace", namespace)
    made.namespace = namespace
    try:
        yield made
    finally:
        made.close()


def get_json(ctl: Kubectl, *args: str) -> Any:
    return json.loads(ctl("get", *args, "-o", "json"))


def ready_nodes(ctl: Kubectl) -> list[str]:
    nodes = json.loads(ctl.run("get", "nodes", "-o", "json").stdout or '{"items": []}')["items"]
    return [
        n["metadata"]["name"]
        for n in nodes
        if any(
            c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", [])
        )
    ]


def pods(ctl: Kubectl, selector: str = "") -> list[dict[str, Any]]:
    args = ["pods", *(["-l", selector] if selector else [])]
    return get_json(ctl, *args)["items"]


def virtual_nodes(ctl: Kubectl) -> list[str]:
    return sorted(n for n in ready_nodes(ctl) if n.startswith("virt"))


def pod_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


# -- deployments ---------------------------------------------------------------------------------------------


class AvailabilityWatch:
    """The lowest ``status.availableReplicas`` a deployment reports while it rolls (a thread reading
    ``kubectl get -w``), to check that no step took more than ``maxUnavailable`` pods away."""

    def __init__(self, ctl: Kubectl, name: str) -> None:
        self.lines = ctl.background("get", "deployment", name, "-w", "-o", "json", "--output-watch-events")
        self.lowest: int | None = None
        self.generation = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        buffer = ""
        while not self._stop.is_set():
            for line in self.lines.poll(0.2):
                buffer += line + "\n"
                with contextlib.suppress(json.JSONDecodeError):
                    event = json.loads(buffer)
                    buffer = ""
                    self._observe(event.get("object") or {})

    def _observe(self, deployment: dict[str, Any]) -> None:
        if deployment.get("metadata", {}).get("generation", 0) < self.generation:
            return
        available = deployment.get("status", {}).get("availableReplicas", 0)
        self.lowest = available if self.lowest is None else min(self.lowest, available)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def test_deployment_lifecycle(ctl: Kubectl, workload_cluster: WorkloadCluster) -> None:
    ctl("create", "deployment", "web", "--image=registry.k8s.io/pause:3.9", "--replicas=4")
    ctl("rollout", "status", "deployment/web", "--timeout=90s")
    replica_sets = get_json(ctl, "replicasets", "-l", "app=web")["items"]
    assert len(replica_sets) == 1
    running = pods(ctl, "app=web")
    assert len(running) == 4
    assert all(p["spec"].get("nodeName") in workload_cluster.nodes for p in running)
    assert all(p["status"]["phase"] == "Running" and pod_ready(p) for p in running)
    # Running and Ready as the node's runtime reports them: on server-agent, processes that run.
    container_ids = [s["containerID"] for p in running for s in p["status"]["containerStatuses"]]
    assert all(c.startswith(f"{workload_cluster.runtime}://") for c in container_ids), container_ids
    assert {ref["kind"] for p in running for ref in p["metadata"]["ownerReferences"]} == {"ReplicaSet"}

    # maxUnavailable 25% of 4 = 1: at least 3 available at every step of the rollout.
    ctl(
        "patch",
        "deployment",
        "web",
        "-p",
        '{"spec":{"strategy":{"rollingUpdate":{"maxUnavailable":1,"maxSurge":1}}}}',
    )
    watch = AvailabilityWatch(ctl, "web")
    try:
        watch.generation = get_json(ctl, "deployment", "web")["metadata"]["generation"] + 1
        ctl("set", "image", "deployment/web", "pause=registry.k8s.io/pause:3.10")
        ctl("rollout", "status", "deployment/web", "--timeout=90s")
    finally:
        watch.stop()
    assert watch.lowest is not None and watch.lowest >= 3, f"availableReplicas fell to {watch.lowest}"
    images = {
        p["spec"]["containers"][0]["image"]
        for p in pods(ctl, "app=web")
        if not p["metadata"].get("deletionTimestamp")
    }
    assert images == {"registry.k8s.io/pause:3.10"}
    assert len(get_json(ctl, "replicasets", "-l", "app=web")["items"]) == 2

    ctl("rollout", "undo", "deployment/web")
    ctl("rollout", "status", "deployment/web", "--timeout=90s")
    image = ctl("get", "deployment", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image}")
    assert image == "registry.k8s.io/pause:3.9"
    assert "3" in ctl("rollout", "history", "deployment/web")

    ctl("scale", "deployment/web", "--replicas=0")
    wait_for("no pods at 0 replicas", lambda: not pods(ctl, "app=web"))
    ctl("scale", "deployment/web", "--replicas=2")
    ctl("rollout", "status", "deployment/web", "--timeout=90s")
    assert len(pods(ctl, "app=web")) == 2

    ctl("delete", "deployment", "web")
    wait_for("the ReplicaSets collected", lambda: not get_json(ctl, "replicasets", "-l", "app=web")["items"])
    wait_for("the pods collected", lambda: not pods(ctl, "app=web"))


# Edge has no such process; server-agent's controllers are the same as server's.
@pytest.mark.parametrize("workload_cluster", ["server"], indirect=True)
def test_rollout_survives_the_controllers_being_killed(
    ctl: Kubectl, workload_cluster: WorkloadCluster
) -> None:
    cluster = workload_cluster.cluster
    # Virtual pods are Ready at once; minReadySeconds holds each step until its new pod has been
    # Ready that long, and with one pod replaced at a time the rollout takes three such steps.
    ctl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"},
        "spec": {"replicas": 3, "minReadySeconds": MIN_READY, "selector": {"matchLabels": {"app": "api"}},
                 "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                 "template": {"metadata": {"labels": {"app": "api"}},
                              "spec": {"containers": [{"name": "main", "image": "registry.k8s.io/pause:3.9"}]}}},
    }))  # fmt: skip
    ctl("rollout", "status", "deployment/api", "--timeout=90s")
    new_image = "registry.k8s.io/pause:3.10"
    ctl("set", "image", "deployment/api", f"main={new_image}")

    def under_way() -> bool:
        new, old = replica_counts(ctl, "api", new_image)
        return new >= 1 and old > 0

    wait_for("the new ReplicaSet scaled up beside the old one", under_way)
    victim = child_pid(cluster, "controllers")
    os.kill(victim, signal.SIGKILL)
    # A rollout only moves forward: unfinished now, it was unfinished when the process died.
    new, old = replica_counts(ctl, "api", new_image)
    assert old > 0, f"the rollout had already finished: {new} new, {old} old replicas"
    ctl("rollout", "status", "deployment/api", "--timeout=120s")
    assert child_pid(cluster, "controllers") != victim
    assert replica_counts(ctl, "api", new_image) == (3, 0)
    status = get_json(ctl, "deployment", "api")["status"]
    assert (status["updatedReplicas"], status["availableReplicas"]) == (3, 3)


def replica_counts(ctl: Kubectl, app: str, image: str) -> tuple[int, int]:
    """The replicas wanted of ``app``'s ReplicaSet running ``image``, and of its other ReplicaSets."""
    new = old = 0
    for rs in get_json(ctl, "replicasets", "-l", f"app={app}")["items"]:
        wanted = rs["spec"].get("replicas", 0)
        if rs["spec"]["template"]["spec"]["containers"][0]["image"] == image:
            new += wanted
        else:
            old += wanted
    return new, old


def child_pid(cluster: Cluster, component: str) -> int:
    """The pid of the supervisor's ``run <component>`` child serving ``cluster``."""
    marker = ["run", component]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            words = [a.decode(errors="replace") for a in argv]
            if (
                "supervisor" in words
                and words[words.index("supervisor") + 1 : words.index("supervisor") + 3] == marker
            ):
                if str(cluster.data_dir) in words:
                    return int(entry.name)
    raise AssertionError(f"no {component} process for {cluster.data_dir}")


# -- other workloads -----------------------------------------------------------------------------------------


def test_job_completes(ctl: Kubectl) -> None:
    ctl("create", "job", "once", "--image=busybox:1.36", "--", "true")
    ctl("wait", "--for=condition=complete", "job/once", "--timeout=90s")
    job = get_json(ctl, "job", "once")
    assert job["status"]["succeeded"] == 1


def test_daemonset_covers_every_node(ctl: Kubectl, workload_cluster: WorkloadCluster) -> None:
    nodes = workload_cluster.nodes
    with daemonset_on(ctl, nodes):
        ctl("rollout", "status", "daemonset/agent", "--timeout=90s")
        placed = pods(ctl, "app=ds")
        assert {p["spec"]["nodeName"] for p in placed} == set(nodes)
        assert len(placed) == len(nodes)
        assert all(p["status"]["phase"] == "Running" and pod_ready(p) for p in placed)


# A node added later is a Node object made here, which no real agent serves: virtual clusters only.
@pytest.mark.parametrize("workload_cluster", ON_VIRTUAL_NODES, indirect=True)
def test_daemonset_covers_a_node_added_later(ctl: Kubectl, workload_cluster: WorkloadCluster) -> None:
    with daemonset_on(ctl, workload_cluster.nodes):
        ctl("rollout", "status", "daemonset/agent", "--timeout=90s")
        late = f"late-{ctl.namespace}"
        ctl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": late, "labels": {"e2e-ds": ctl.namespace, "kubernetes.io/hostname": late}},
        }))  # fmt: skip
        try:
            wait_for("a pod for the new node", lambda: late in {target_node(p) for p in pods(ctl, "app=ds")})
        finally:
            ctl("delete", "node", late, "--wait=false")


@contextlib.contextmanager
def daemonset_on(ctl: Kubectl, nodes: list[str]) -> Iterator[None]:
    """DaemonSet ``agent`` (app=ds) for the nodes labelled ``e2e-ds=<namespace>``, and that label on
    ``nodes``, removed at the end: the DaemonSets of other tests' namespaces leave these nodes alone."""
    ctl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": {"app": "ds"}}, "template": {
            "metadata": {"labels": {"app": "ds"}},
            "spec": {"tolerations": [{"operator": "Exists"}],
                     "nodeSelector": {"e2e-ds": ctl.namespace},
                     "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.9"}]}}},
    }))  # fmt: skip
    for node in nodes:
        ctl("label", "node", node, f"e2e-ds={ctl.namespace}")
    try:
        yield
    finally:
        for node in nodes:
            ctl("label", "node", node, "e2e-ds-")


def target_node(pod: dict[str, Any]) -> str:
    """The node a DaemonSet pod is for: its nodeName once bound, else its node affinity's name field."""
    if pod["spec"].get("nodeName"):
        return str(pod["spec"]["nodeName"])
    required = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    for term in required["nodeSelectorTerms"]:
        for field in term.get("matchFields") or ():
            if field["key"] == "metadata.name":
                return str(field["values"][0])
    return ""


def test_statefulset_creates_in_order(ctl: Kubectl) -> None:
    ctl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web"},
        "spec": {"serviceName": "web", "replicas": 3, "selector": {"matchLabels": {"app": "sts"}},
                 "template": {"metadata": {"labels": {"app": "sts"}},
                              "spec": {"containers": [{"name": "main", "image": "registry.k8s.io/pause:3.9"}]}}},
    }))  # fmt: skip
    ctl("rollout", "status", "statefulset/web", "--timeout=90s")
    assert all(p["status"]["phase"] == "Running" and pod_ready(p) for p in pods(ctl, "app=sts"))
    created = sorted(
        pods(ctl, "app=sts"),
        key=lambda p: (p["metadata"]["creationTimestamp"], int(p["metadata"]["resourceVersion"])),
    )
    assert [p["metadata"]["name"] for p in created] == ["web-0", "web-1", "web-2"]


# Node lifecycle on Node objects made here: the control plane's part, the same whatever serves the
# other nodes, so on the virtual clusters only (whose grace period is shortened for it).
@pytest.mark.parametrize("workload_cluster", ON_VIRTUAL_NODES, indirect=True)
def test_silent_node_turns_not_ready_and_loses_its_pods(ctl: Kubectl) -> None:
    node = f"silent-{ctl.namespace}"
    ctl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}})
    )
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    status = {"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                         "lastHeartbeatTime": now, "lastTransitionTime": now}]}}  # fmt: skip
    ctl("patch", "node", node, "--subresource=status", "--type=merge", "-p", json.dumps(status))
    try:
        ctl("apply", "-f", "-", input=stranded_pod(node))
        ctl("wait", f"node/{node}", "--for=condition=Ready=Unknown", "--timeout=90s")
        taints = json.loads(ctl("get", "node", node, "-o", "jsonpath={.spec.taints}") or "[]")
        assert ("node.kubernetes.io/unreachable", "NoExecute") in {(t["key"], t["effect"]) for t in taints}
        wait_for("the stranded pod evicted", lambda: evicted(ctl, "stranded"))
    finally:
        ctl("delete", "node", node, "--wait=false")


def stranded_pod(node: str) -> str:
    """A pod bound to ``node`` that tolerates its loss for 2 s only."""
    return json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "stranded"},
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.9"}],
                 "tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                                  "effect": "NoExecute", "tolerationSeconds": 2}]},
    })  # fmt: skip


# A node of its own, served by a virtual agent killed here (the real agent's own death is
# test_agent.py's): on the virtual clusters only, whose grace period is shortened for it.
@pytest.mark.parametrize("workload_cluster", ON_VIRTUAL_NODES, indirect=True)
def test_node_whose_heartbeats_stop_turns_not_ready_and_loses_its_pods(
    ctl: Kubectl, workload_cluster: WorkloadCluster, tmp_path: Path
) -> None:
    cluster = workload_cluster.cluster
    # An agent of its own for one node, so that this node alone falls silent when it is killed.
    agent = VirtualAgent(cluster, tmp_path, count=1, name=f"hush-{fixtures.random_suffix()}")
    node = f"{agent.name}-0"
    agent.start()
    try:
        wait_for(f"{node} Ready", lambda: node in ready_nodes(ctl))
        ctl("apply", "-f", "-", input=stranded_pod(node))
        ctl("wait", "pod/stranded", "--for=condition=Ready", "--timeout=90s")
        renewed = lease_renew_time(ctl, node)
        wait_for("the node's Lease renewed", lambda: lease_renew_time(ctl, node) != renewed)

        agent.kill()
        last_renewal = lease_renew_time(ctl, node)
        ctl("wait", f"node/{node}", "--for=condition=Ready=Unknown", "--timeout=90s")
        assert lease_renew_time(ctl, node) == last_renewal
        ready = next(c for c in get_json(ctl, "node", node)["status"]["conditions"] if c["type"] == "Ready")
        assert (ready["reason"], ready["message"]) == (
            "NodeStatusUnknown",
            "Kubelet stopped posting node status.",
        )
        taints = json.loads(ctl("get", "node", node, "-o", "jsonpath={.spec.taints}") or "[]")
        assert ("node.kubernetes.io/unreachable", "NoExecute") in {(t["key"], t["effect"]) for t in taints}
        wait_for("the stranded pod evicted", lambda: evicted(ctl, "stranded"))
        selector = "involvedObject.name=stranded,reason=TaintManagerEviction"
        wait_for(
            "the eviction's event", lambda: get_json(ctl, "events", "--field-selector", selector)["items"]
        )
    finally:
        agent.stop()
        ctl("delete", "node", node, "--ignore-not-found")


def evicted(ctl: Kubectl, name: str) -> bool:
    """Whether pod ``name`` is gone or being deleted."""
    result = ctl.run("get", "pod", name, "-o", "json", "--ignore-not-found")
    assert result.returncode == 0, result.stderr
    return not result.stdout.strip() or bool(json.loads(result.stdout)["metadata"].get("deletionTimestamp"))


def lease_renew_time(ctl: Kubectl, node: str) -> str:
    return ctl("get", "lease", node, "--namespace=kube-node-lease", "-o", "jsonpath={.spec.renewTime}")


# The namespace controller's work: the real agent stopping deleted pods is the deployment
# lifecycle's (scale to 0, delete), so on the virtual clusters only.
@pytest.mark.parametrize("workload_cluster", ON_VIRTUAL_NODES, indirect=True)
def test_deleting_a_namespace_removes_everything_in_it(ctl: Kubectl) -> None:
    ctl("create", "deployment", "doomed", "--image=registry.k8s.io/pause:3.9", "--replicas=2")
    ctl("create", "configmap", "doomed", "--from-literal=a=b")
    ctl("rollout", "status", "deployment/doomed", "--timeout=90s")
    namespace = ctl.namespace
    ctl.namespace = ""
    ctl("delete", "namespace", namespace, "--timeout=90s")
    assert ctl.run("get", "namespace", namespace).returncode != 0
    assert not get_json(ctl, "pods", "-n", namespace)["items"]


# Placement needs several nodes to choose from: the virtual clusters only.
@pytest.mark.parametrize("workload_cluster", ON_VIRTUAL_NODES, indirect=True)
def test_placement_and_failed_scheduling(ctl: Kubectl, workload_cluster: WorkloadCluster) -> None:
    nodes = workload_cluster.nodes
    target = nodes[0]
    ctl("apply", "-f", "-", input=json.dumps(pod_on("pinned", [target])))
    ctl("wait", "pod/pinned", "--for=condition=PodScheduled", "--timeout=90s")
    assert ctl("get", "pod", "pinned", "-o", "jsonpath={.spec.nodeName}") == target

    ctl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "huge"},
        "spec": {"containers": [{"name": "main", "image": "registry.k8s.io/pause:3.9",
                                 "resources": {"requests": {"cpu": "10000"}}}]},
    }))  # fmt: skip
    message = wait_for("a FailedScheduling event", lambda: failed_scheduling(ctl, "huge"))
    assert f"0/{len(ready_nodes(ctl))} nodes are available" in message
    assert "Insufficient cpu" in message
    condition = json.loads(ctl("get", "pod", "huge", "-o", "jsonpath={.status.conditions[0]}"))
    assert (condition["type"], condition["status"], condition["reason"]) == (
        "PodScheduled",
        "False",
        "Unschedulable",
    )


# A tainted node and an untainted one: the virtual clusters only.
@pytest.mark.parametrize("workload_cluster", ON_VIRTUAL_NODES, indirect=True)
def test_taints_keep_out_pods_without_the_toleration(ctl: Kubectl, workload_cluster: WorkloadCluster) -> None:
    nodes = workload_cluster.nodes
    tainted, other = nodes[1], nodes[2]
    key = "e2e-dedicated"
    ctl("taint", "nodes", tainted, f"{key}={ctl.namespace}:NoSchedule")
    try:
        toleration = {"key": key, "operator": "Equal", "value": ctl.namespace, "effect": "NoSchedule"}
        ctl("apply", "-f", "-", input=json.dumps(pod_on("avoider", [tainted, other])))
        ctl("apply", "-f", "-", input=json.dumps(pod_on("tolerant", [tainted], tolerations=[toleration])))
        ctl("apply", "-f", "-", input=json.dumps(pod_on("stuck", [tainted])))
        for name in ("avoider", "tolerant"):
            ctl("wait", f"pod/{name}", "--for=condition=PodScheduled", "--timeout=90s")
        assert ctl("get", "pod", "avoider", "-o", "jsonpath={.spec.nodeName}") == other
        assert ctl("get", "pod", "tolerant", "-o", "jsonpath={.spec.nodeName}") == tainted

        message = wait_for("a FailedScheduling event", lambda: failed_scheduling(ctl, "stuck"))
        assert f"1 node(s) had untolerated taint {{{key}: {ctl.namespace}}}" in message
        assert "2 node(s) didn't match Pod's node affinity/selector" in message
        assert not ctl("get", "pod", "stuck", "-o", "jsonpath={.spec.nodeName}")
    finally:
        ctl("delete", "pod", "stuck", "--ignore-not-found", "--wait=false")
        ctl("taint", "nodes", tainted, f"{key}:NoSchedule-")


def pod_on(name: str, hosts: list[str], *, tolerations: Sequence[dict[str, str]] = ()) -> dict[str, Any]:
    """A pause pod whose required node affinity allows only ``hosts``."""
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": hosts}]}]}}}  # fmt: skip
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"affinity": affinity, "tolerations": list(tolerations),
                 "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.9"}]},
    }  # fmt: skip


def failed_scheduling(ctl: Kubectl, pod: str) -> str:
    """The messages of the FailedScheduling events of ``pod``, joined."""
    selector = f"involvedObject.name={pod},reason=FailedScheduling"
    return " ".join(
        e.get("message", "") for e in get_json(ctl, "events", "--field-selector", selector)["items"]
    )


# -- auto-deploy manifests -------------------------------------------------------------------------------------


def test_manifests_are_applied_changed_and_disabled(tmp_path_factory: pytest.TempPathFactory) -> None:
    base = tmp_path_factory.mktemp("manifests")
    manifests = base / "data" / "server" / "manifests"
    manifests.mkdir(parents=True)
    (manifests / "extra.yaml").write_text(configmap_yaml("one"))
    with fixtures.running_cluster("server", base, extra_args=("--disable-agent",)) as cluster:
        admin = fixtures.Kubectl(
            kubeconfig=cluster.kubeconfig, cache_dir=base / "cache", namespace="kube-system"
        )
        wait_for(
            "the manifest applied", lambda: admin.run("get", "configmap", "extra-config").returncode == 0
        )
        addon = get_json(admin, "addons.k3s.cattle.io", "extra")
        assert addon["spec"]["checksum"]
        (manifests / "extra.yaml").write_text(configmap_yaml("two"))
        wait_for("the change applied", lambda: admin.run(
            "get", "configmap", "extra-config", "-o", "jsonpath={.data.value}").stdout == "two")  # fmt: skip
    with fixtures.running_cluster(
        "server", base, extra_args=("--disable-agent", "--disable", "extra")
    ) as cluster:
        admin = fixtures.Kubectl(
            kubeconfig=cluster.kubeconfig, cache_dir=base / "cache", namespace="kube-system"
        )
        wait_for("the disabled addon's objects removed",
                 lambda: admin.run("get", "configmap", "extra-config").returncode != 0)  # fmt: skip
        wait_for("the disabled addon's file removed", lambda: not (manifests / "extra.yaml").exists())


def configmap_yaml(value: str) -> str:
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra-config\n  namespace: kube-system\ndata:\n  value: {value}\n"


# -- RBAC aggregation ---------------------------------------------------------------------------------------


# The API server's work, no node's: server-agent is the server profile again, so once per profile.
@pytest.mark.parametrize("workload_cluster", ON_VIRTUAL_NODES, indirect=True)
def test_aggregated_cluster_roles_show_their_rules(ctl: Kubectl) -> None:
    def rules(name: str) -> list[dict[str, Any]]:
        return get_json(ctl, "clusterrole", name).get("rules") or []

    wait_for("admin's aggregated rules", lambda: rules("admin"))
    assert {"get", "list", "watch"} <= {verb for rule in rules("view") for verb in rule.get("verbs", ())}
    extra = f"e2e-widgets-{ctl.namespace}"
    ctl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": extra, "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
        "rules": [{"apiGroups": ["example.com"], "resources": [extra], "verbs": ["get"]}],
    }))  # fmt: skip
    try:
        for role in ("view", "edit", "admin"):  # admin gathers edit, which gathers view
            wait_for(
                f"{role} to gather the new rule",
                lambda r=role: any(extra in rule.get("resources", ()) for rule in rules(r)),
            )
    finally:
        ctl("delete", "clusterrole", extra)
    wait_for(
        "view to drop it again", lambda: not any(extra in rule.get("resources", ()) for rule in rules("view"))
    )
