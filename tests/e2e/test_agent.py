"""Node agents end to end: a server with its own node, a second agent process joining it, real pods.

The server is ``k3s-supervisor start`` (server profile, so its agent is a child process joined with
the server token, node ``e2e-server``), with a shortened node grace period. A second agent is
``k3s-supervisor run agent --server URL --token T`` in a data dir of its own (node ``e2e-agent``),
as on a second machine. Pods run for real with the process runtime: ``sh -c 'sleep ...'`` on the
host, each carrying a marker in its command line so the test can count the processes it caused,
and kill any left over at the end (containers outlive their agent by design, as with K3s).

Checked: the join with the right token, the refusals (wrong CA hash, wrong password, a taken name
with another password) with their messages and exit code 2, a deployment spread over both nodes,
and an agent killed with SIGKILL: its node turns NotReady after the grace period, and once the
agent is back it is Ready again with the same container processes (adopted, none started twice).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e import conftest as e2e

if TYPE_CHECKING:
    from tests.e2e.apiserver_fixtures import Cluster, Kubectl

pytest_plugins = ["tests.e2e.apiserver_fixtures"]

GRACE = "6s"  # node-monitor-grace-period of this cluster
LEASE = ("--kubelet-arg", "node-lease-duration-seconds=8")  # renewals every 2 s, inside the grace period
MARKER = f"k3spy-e2e-agent-{os.getpid()}"  # in every container's command line


def fixtures() -> Any:
    """``tests.e2e.apiserver_fixtures`` (loaded by pytest as a plugin before any test runs)."""
    from tests.e2e import apiserver_fixtures

    return apiserver_fixtures


wait_for = e2e.wait_for


class AgentProcess(e2e.Stoppable):
    """``k3s-supervisor run agent`` as a second machine would run it."""

    def __init__(self, cluster: Cluster, data_dir: Path, *, token: str, name: str) -> None:
        self.cluster, self.data_dir, self.token, self.name = cluster, data_dir, token, name
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "supervisor", "run", "agent", "--config", "", "--data-dir", str(self.data_dir),
            "--server", self.cluster.url, "--node-name", self.name, *LEASE,
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        return {**e2e.child_env(), "K3S_TOKEN": self.token}  # as K3s's install script passes it

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env(), start_new_session=True,
            )  # fmt: skip

    def run_to_exit(self, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(), capture_output=True, text=True, env=self.env(), timeout=timeout)



def marked_processes() -> list[int]:
    """Pids of the containers this module started (their command line carries MARKER)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (
                    MARKER.encode() in (entry / "cmdline").read_bytes()
                    and b"shim" not in (entry / "cmdline").read_bytes()
                ):
                    found.append(int(entry.name))
    return found


def kill_marked() -> None:
    for pid in marked_processes():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster_with_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, AgentProcess]]:
    base = tmp_path_factory.mktemp("agents")
    args = ("--node-name", "e2e-server", "--kube-controller-manager-arg", f"node-monitor-grace-period={GRACE}", *LEASE)
    try:
        with fixtures().running_cluster("server", base, extra_args=args) as cluster:
            token = (cluster.data_dir / "server" / "token").read_text().strip()
            agent = AgentProcess(cluster, base / "agent-b", token=token, name="e2e-agent")
            agent.start()
            try:
                yield cluster, agent
            finally:
                agent.stop()
                print(f"--- agent log ---\n{agent.log_path.read_text(errors='replace')[-20_000:]}")
    finally:
        kill_marked()


@pytest.fixture
def ctl(cluster_with_agent: tuple[Cluster, AgentProcess], tmp_path: Path) -> Iterator[Kubectl]:
    cluster, _ = cluster_with_agent
    made = fixtures().Kubectl(kubeconfig=cluster.kubeconfig, cache_dir=tmp_path / "cache")
    namespace = f"agent-{fixtures().random_suffix()}"
    made("create", "namespace", namespace)
    made.namespace = namespace
    try:
        yield made
    finally:
        made.run("delete", "namespace", namespace, "--wait=false")
        made.close()


def node_ready(ctl: Kubectl, name: str) -> str:
    result = ctl.run("get", "node", name, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}")
    return result.stdout if result.returncode == 0 else ""


def test_both_nodes_join_and_a_deployment_runs_on_both(ctl: Kubectl) -> None:
    wait_for(
        "both nodes Ready",
        lambda: node_ready(ctl, "e2e-server") == "True" and node_ready(ctl, "e2e-agent") == "True",
    )
    rows = {line.split()[0]: line.split() for line in ctl("get", "nodes", "--no-headers").splitlines()}
    assert rows["e2e-server"][2] == "control-plane,master" and rows["e2e-agent"][2] == "<none>"
    node = json.loads(ctl("get", "node", "e2e-agent", "-o", "json"))
    assert node["status"]["capacity"]["pods"] == "110"
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("process://")
    secret = json.loads(
        ctl("get", "secret", "-n", "kube-system", "e2e-agent.node-password.k3s", "-o", "json")
    )
    assert secret["immutable"] is True

    spread = {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
              "labelSelector": {"matchLabels": {"app": "spread"}}}  # fmt: skip
    ctl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "spread"},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "spread"}}, "template": {
            "metadata": {"labels": {"app": "spread"}},
            "spec": {"topologySpreadConstraints": [spread], "terminationGracePeriodSeconds": 1, "containers": [
                {"name": "main", "image": "busybox", "command": ["sh", "-c", f"sleep 3600; echo {MARKER}"]}]}}},
    }))  # fmt: skip
    ctl("rollout", "status", "deployment/spread", "--timeout=90s")
    pods = json.loads(ctl("get", "pods", "-l", "app=spread", "-o", "json"))["items"]
    assert {p["spec"]["nodeName"] for p in pods} == {"e2e-server", "e2e-agent"}
    assert all(p["status"]["phase"] == "Running" and p["status"]["podIP"].startswith("10.42.") for p in pods)
    assert len(marked_processes()) == 4
    # The second agent opened no port and has no NATS: logs and exec reach it through the API
    # server's bus relay (/v1-k3s/bus), dialled with its node certificate.
    remote = next(p["metadata"]["name"] for p in pods if p["spec"]["nodeName"] == "e2e-agent")
    assert ctl("exec", remote, "--", "sh", "-c", "echo from the agent node") == "from the agent node\n"
    assert ctl.run("logs", remote).returncode == 0
    ctl("delete", "deployment", "spread")
    wait_for("the containers stopped", lambda: not marked_processes())


def test_refused_joins_exit_2_with_their_message(
    cluster_with_agent: tuple[Cluster, AgentProcess], tmp_path: Path
) -> None:
    cluster, agent = cluster_with_agent
    secret = agent.token.rpartition(":")[2]

    wrong_hash = AgentProcess(
        cluster, tmp_path / "a", token=f"K10{'0' * 64}::server:{secret}", name="intruder"
    )
    result = wrong_hash.run_to_exit()
    assert result.returncode == 2, result.stderr
    assert "token CA hash does not match the cluster CA certificate" in result.stderr
    assert "Traceback" not in result.stderr

    ca_hash = agent.token[3:67]
    wrong_password = AgentProcess(
        cluster, tmp_path / "b", token=f"K10{ca_hash}::server:wrong", name="intruder"
    )
    result = wrong_password.run_to_exit()
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "401" in result.stderr or "token" in result.stderr.lower()

    impostor = AgentProcess(cluster, tmp_path / "c", token=agent.token, name="e2e-agent")  # another password
    result = impostor.run_to_exit()
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "e2e-agent" in result.stderr and "taken" in result.stderr


def test_killed_agent_goes_not_ready_and_comes_back_adopting_its_pods(
    ctl: Kubectl, cluster_with_agent: tuple[Cluster, AgentProcess]
) -> None:
    _, agent = cluster_with_agent
    wait_for("the agent's node Ready", lambda: node_ready(ctl, "e2e-agent") == "True")
    ctl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "survivor"},
        "spec": {"nodeName": "e2e-agent", "terminationGracePeriodSeconds": 1, "tolerations": [
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}],
            "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", f"sleep 3600; echo {MARKER}"]}]},
    }))  # fmt: skip
    ctl("wait", "pod/survivor", "--for=condition=Ready", "--timeout=90s")
    before = json.loads(ctl("get", "pod", "survivor", "-o", "json"))["status"]["containerStatuses"][0]
    processes = marked_processes()
    assert len(processes) == 1

    agent.kill()
    wait_for("the node NotReady", lambda: node_ready(ctl, "e2e-agent") == "Unknown")
    assert marked_processes() == processes  # containers outlive their agent

    agent.start()
    wait_for("the node Ready again", lambda: node_ready(ctl, "e2e-agent") == "True")
    ctl("wait", "pod/survivor", "--for=condition=Ready", "--timeout=90s")
    after = json.loads(ctl("get", "pod", "survivor", "-o", "json"))["status"]["containerStatuses"][0]
    assert (after["containerID"], after["restartCount"]) == (before["containerID"], 0)
    assert marked_processes() == processes  # adopted, not started twice
    ctl("delete", "pod", "survivor")
    wait_for("the container stopped", lambda: not marked_processes())


# -- the same deployment, logs and exec in both shapes ---------------------------------------------------


@pytest.fixture(scope="module", params=["server", "edge"])
def own_node_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """A cluster whose only node is its own agent (a child process, or in process for edge)."""
    base = tmp_path_factory.mktemp(f"own-node-{request.param}")
    try:
        with fixtures().running_cluster(request.param, base, extra_args=("--node-name", "solo")) as cluster:
            yield cluster
    finally:
        kill_marked()


def test_deployment_logs_and_exec_on_the_servers_own_node(own_node_cluster: Cluster, tmp_path: Path) -> None:
    ctl = fixtures().Kubectl(
        kubeconfig=own_node_cluster.kubeconfig, cache_dir=tmp_path / "cache", namespace="default"
    )
    try:
        wait_for("the node Ready", lambda: node_ready(ctl, "solo") == "True")
        script = f"echo hello from $HOSTNAME; sleep 3600; echo {MARKER}"
        ctl("create", "deployment", "talker", "--image=busybox", "--", "sh", "-c", script)
        ctl("rollout", "status", "deployment/talker", "--timeout=90s")
        pod = ctl("get", "pods", "-l", "app=talker", "-o", "jsonpath={.items[0].metadata.name}")
        wait_for("the pod's output", lambda: "hello from" in ctl.run("logs", pod).stdout)
        assert ctl("logs", pod, "--tail=1").startswith("hello from")
        result = ctl.run("exec", pod, "--", "sh", "-c", "echo out; echo err >&2; exit 3")
        assert (result.returncode, result.stdout, result.stderr.splitlines()[0]) == (3, "out\n", "err")
        assert ctl("exec", "-i", pod, "--", "cat", input="through stdin\n") == "through stdin\n"
        ctl("delete", "deployment", "talker")
        wait_for("the container stopped", lambda: not marked_processes())
    finally:
        ctl.close()
