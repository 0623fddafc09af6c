"""kubectl 1.20's exec and port-forward: SPDY/3.1 over a plain HTTP upgrade, against a real cluster.

kubectl 1.20 knows no WebSocket: it POSTs to pods/exec (and portforward) with ``Upgrade: SPDY/3.1``
and runs SPDY on the connection once the server answers 101 (``services/apiserver/spdyupgrade.py``).
The cluster is ``k3s-supervisor start`` with its own node, in the server and the edge profile; its
agent runs pods as host processes (as in test_agent.py, whose marker and cleanup these pods share); the binary is
test_kubectl_120.py's.
"""

from __future__ import annotations

import concurrent.futures
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.e2e import test_agent as agent_tests
from tests.e2e import test_exec_logs as exec_tests
from tests.e2e import test_kubectl_120 as k120

if TYPE_CHECKING:
    from tests.e2e.apiserver_fixtures import Cluster

kubectl_120_binary = k120.kubectl_120_binary  # the binary (installed on first use)
NODE = "spdy-node"
TIMEOUT = 90.0  # seconds for kubectl and the forwarded connections


@pytest.fixture(scope="module", params=["server", "edge"])
def node_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """Both shapes: the API server as a child process, and folded into one process with its agent."""
    base = tmp_path_factory.mktemp(f"kubectl-120-exec-{request.param}")
    running = agent_tests.fixtures().running_cluster
    try:
        with running(request.param, base, extra_args=("--node-name", NODE)) as cluster:
            yield cluster
    finally:
        agent_tests.kill_marked()


@pytest.fixture
def kubectl(kubectl_120_binary: Path, node_cluster: Cluster, tmp_path: Path) -> Iterator[k120.Kubectl120]:
    ctl = k120.Kubectl120(
        kubectl_120_binary,
        kubeconfig=node_cluster.kubeconfig,
        cache_dir=tmp_path / "cache",
        namespace="default",
    )
    try:
        yield ctl
    finally:
        ctl.close()


@pytest.fixture(scope="module")
def pod(kubectl_120_binary: Path, node_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A running pod on the cluster's node (a ``sleep`` on the host)."""
    ctl = k120.Kubectl120(
        kubectl_120_binary, kubeconfig=node_cluster.kubeconfig, cache_dir=tmp_path_factory.mktemp("cache"),
        namespace="default",
    )  # fmt: skip
    agent_tests.wait_for("the node Ready", lambda: agent_tests.node_ready(ctl, NODE) == "True")  # type: ignore[arg-type]
    script = f"sleep 3600; echo {agent_tests.MARKER}"
    ctl("run", "spdy", "--image=busybox", "--restart=Never", "--command", "--", "sh", "-c", script)
    phase = "jsonpath={.status.phase}"
    agent_tests.wait_for(
        "the pod Running", lambda: ctl.run("get", "pod", "spdy", "-o", phase).stdout == "Running"
    )
    return "spdy"


def test_exec_prints_the_output_and_exits_with_the_commands_code(kubectl: k120.Kubectl120, pod: str) -> None:
    assert kubectl("exec", pod, "--", "echo", "hi") == "hi\n"
    result = kubectl.run("exec", pod, "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (result.returncode, result.stdout) == (3, "out\n"), result.stderr
    assert result.stderr.startswith("err\n"), result.stderr
    assert kubectl.run("exec", pod, "--", "sh", "-c", "exit 3").returncode == 3


def test_exec_with_stdin(kubectl: k120.Kubectl120, pod: str) -> None:
    assert kubectl("exec", "-i", pod, "--", "sh", "-c", "cat; echo done", input="hello\n") == "hello\ndone\n"
    big = "abcdefghijklmnopqrstuvwxyz\n" * 20_000  # 540 kB: past every SPDY window
    assert kubectl("exec", "-i", pod, "--", "cat", input=big) == big


def test_exec_upgrades_to_spdy_and_refusals_are_statuses(kubectl: k120.Kubectl120, pod: str) -> None:
    result = kubectl.run("-v=8", "exec", pod, "--", "true")  # -v before "--": it is kubectl's
    assert result.returncode == 0, result.stderr
    assert "Response Status: 101 Switching Protocols" in result.stderr
    assert 'pods "nope" not found' in kubectl.fails("exec", "nope", "--", "true")
    assert "container nah is not valid for pod spdy" in kubectl.fails("exec", pod, "-c", "nah", "--", "true")


def test_port_forward_to_a_pod_port(kubectl: k120.Kubectl120, pod: str) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    remote = server.getsockname()[1]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        answered = [pool.submit(exec_tests.echo_upper, server) for _ in range(2)]
        try:
            forward = kubectl.background("port-forward", f"pod/{pod}", f":{remote}")
            port = exec_tests.local_port(forward, remote)
            assert exec_tests.exchange(port, b"hello through kubectl 1.20") == b"HELLO THROUGH KUBECTL 1.20"
            assert exec_tests.exchange(port, b"and again") == b"AND AGAIN"  # the session goes on
            for done in answered:
                done.result(TIMEOUT)
            assert forward.process.poll() is None, forward.seen
        finally:
            exec_tests.stop_listening(server)
