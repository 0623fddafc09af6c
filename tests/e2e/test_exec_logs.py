"""kubectl logs / exec / port-forward and the Python client's exec and port-forward, through the tunnel.

The API server, the in-memory bus and an agent ``Tunnel`` over a runtime of plain subprocesses
(``tests/integration/test_tunnel.py``'s) run on an event loop in a thread of this process; kubectl
is the real binary, the Python client the official one, both over HTTPS as users run them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import socket
import subprocess
import threading
import uuid
import warnings
from collections.abc import Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import websocket as ws_sync
from kubernetes import stream as k8s_stream

from services.apiserver import portforward, spdy
from supervisor import kubeconfig as kubeconfig_
from tests.e2e import apiserver_fixtures as fixtures
from tests.e2e import conftest as e2e
from tests.integration import test_tunnel as harness

START_DEADLINE = 30.0  # seconds for the in-thread cluster to start


class ThreadCluster:
    """``harness.running_cluster`` on its own event loop in a thread; tests call into it with ``call``."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.kubeconfig = base / "kubeconfig.yaml"
        self.cluster: harness.Cluster | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="tunnel e2e cluster", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(START_DEADLINE) or self.cluster is None:
            raise RuntimeError(f"the in-thread cluster did not start: {self._error!r}")
        kubeconfig_.write_admin(self.base / "data", path=self.kubeconfig, port=self.cluster.api.port)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with harness.running_cluster(self.base, f"memory://e2e-{uuid.uuid4().hex[:8]}") as cluster:
            self.cluster = cluster
            self._ready.set()
            await self._stop.wait()

    def call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(START_DEADLINE)

    def pod(self, name: str, argv: Sequence[str], *, stdin: bool = False) -> None:
        assert self.cluster is not None
        cluster = self.cluster

        async def create() -> None:
            uid = await cluster.pod(name)
            await cluster.runtime.run(uid, "main", argv, stdin=stdin)

        self.call(create())

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(fixtures.STOP_DEADLINE)


@pytest.fixture(scope="module")
def tunnel_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadCluster]:
    running = ThreadCluster(tmp_path_factory.mktemp("tunnel-e2e"))
    try:
        running.start()
        yield running
    finally:
        running.stop()
        collect_library_sockets()


@pytest.fixture
def kubectl(tunnel_cluster: ThreadCluster, tmp_path: Path) -> Iterator[fixtures.Kubectl]:
    tool = fixtures.Kubectl(
        kubeconfig=tunnel_cluster.kubeconfig, cache_dir=tmp_path / "cache", namespace="default"
    )
    try:
        yield tool
    finally:
        tool.close()


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def test_kubectl_logs_tail_and_follow(tunnel_cluster: ThreadCluster, kubectl: fixtures.Kubectl) -> None:
    pod = name("logger")
    release = tunnel_cluster.base / f"release-{pod}"
    script = f"echo one; echo two; echo three; while [ ! -e {release} ]; do sleep 0.05; done; echo four"
    tunnel_cluster.pod(pod, ["sh", "-c", script])
    assert kubectl("logs", pod) == "one\ntwo\nthree\n"
    assert kubectl("logs", pod, "--tail=1") == "three\n"
    assert kubectl("logs", pod, "-c", "main", "--timestamps", "--tail=1").endswith("Z three\n")
    follower = subprocess.Popen(
        kubectl.argv("logs", "-f", pod), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=e2e.child_env(),
    )  # fmt: skip
    try:
        assert follower.stdout is not None
        assert [follower.stdout.readline() for _ in range(3)] == ["one\n", "two\n", "three\n"]
        release.touch()
        rest, errors = follower.communicate(timeout=fixtures.KUBECTL_TIMEOUT)
        assert (rest, follower.returncode) == ("four\n", 0), errors
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert "container nope is not valid for pod" in kubectl.fails("logs", pod, "-c", "nope")


def test_kubectl_exec_exit_code_and_stdin(tunnel_cluster: ThreadCluster, kubectl: fixtures.Kubectl) -> None:
    pod = name("shell")
    tunnel_cluster.pod(pod, ["sleep", "600"])
    result = kubectl.run("exec", pod, "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (result.returncode, result.stdout) == (3, "out\n"), result.stderr
    assert "err\n" in result.stderr
    assert kubectl("exec", "-i", pod, "--", "sh", "-c", "cat; echo done", input="hello\n") == "hello\ndone\n"
    assert kubectl("exec", pod, "-c", "main", "--", "echo", "fine") == "fine\n"
    assert "not found" in kubectl.fails("exec", "no-such-pod", "--", "true")


def collect_library_sockets() -> None:
    """The official client's WebSocket layer (websocket-client) leaves its TLS sockets to the garbage
    collector, which also keeps the server's end of them open until the cluster stops. Collect them
    here, their ResourceWarnings silenced: they are the library's, not a failure of what we check."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def test_python_client_exec(tunnel_cluster: ThreadCluster) -> None:
    pod = name("pyexec")
    tunnel_cluster.pod(pod, ["sleep", "600"])
    with fixtures.api_client(tunnel_cluster.kubeconfig) as client:
        core = kubernetes.client.CoreV1Api(client)
        # The client's preloading form never closes its WebSocket; this one does.
        first = k8s_stream.stream(
            core.connect_get_namespaced_pod_exec, pod, "default",
            command=["sh", "-c", "echo from python"], stderr=True, stdin=False, stdout=True, tty=False,
            _preload_content=False,
        )  # fmt: skip
        try:
            first.run_forever(timeout=fixtures.KUBECTL_TIMEOUT)
            assert first.read_stdout() == "from python\n"
        finally:
            first.close()
        session = k8s_stream.stream(
            core.connect_get_namespaced_pod_exec, pod, "default",
            command=["sh", "-c", "read x; echo got $x; exit 5"], stderr=True, stdin=True, stdout=True, tty=False,
            _preload_content=False,
        )  # fmt: skip
        try:
            session.write_stdin("it\n")
            session.run_forever(timeout=fixtures.KUBECTL_TIMEOUT)
            assert session.read_stdout() == "got it\n"
            assert session.returncode == 5
        finally:
            session.close()
    collect_library_sockets()


def test_python_client_port_forward(tunnel_cluster: ThreadCluster) -> None:
    pod = name("pyfwd")
    tunnel_cluster.pod(pod, ["sleep", "600"])
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:

        def answer() -> None:
            connection, _ = server.accept()
            with connection:
                connection.sendall(connection.recv(1024).upper())

        answered = pool.submit(answer)
        try:
            with fixtures.api_client(tunnel_cluster.kubeconfig) as client:
                core = kubernetes.client.CoreV1Api(client)
                forward = k8s_stream.portforward(
                    core.connect_get_namespaced_pod_portforward, pod, "default", ports=str(port)
                )
                sock = forward.socket(port)
                sock.settimeout(fixtures.KUBECTL_TIMEOUT)
                sock.sendall(b"hello over the tunnel")
                received = b""
                while len(received) < len(b"hello over the tunnel"):
                    chunk = sock.recv(1024)
                    assert chunk, "the forwarded connection closed early"
                    received += chunk
                assert received == b"HELLO OVER THE TUNNEL"
                sock.close()
                # The client's proxy thread closes its WebSocket once every port is closed: wait for it.
                for thread in threading.enumerate():
                    if thread.name.startswith("Kubernetes port forward proxy"):
                        thread.join(fixtures.KUBECTL_TIMEOUT)
                assert forward.error(port) is None
            answered.result(fixtures.KUBECTL_TIMEOUT)
        finally:
            server.close()
    collect_library_sockets()


# -- kubectl port-forward (SPDY/3.1 inside a WebSocket) ------------------------------------------------


def running_pod(tunnel_cluster: ThreadCluster, prefix: str) -> str:
    """A pod whose status says Running: kubectl refuses to port-forward to any other."""
    pod = name(prefix)
    tunnel_cluster.pod(pod, ["sleep", "600"])
    assert tunnel_cluster.cluster is not None
    http = tunnel_cluster.cluster.http

    async def mark_running() -> None:
        response = await http.patch(
            f"/api/v1/namespaces/default/pods/{pod}/status",
            json={"status": {"phase": "Running"}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert response.status_code == 200, response.text

    tunnel_cluster.call(mark_running())
    return pod


def local_port(forward: e2e.Lines, remote: int) -> int:
    """The local port kubectl chose, from its "Forwarding from 127.0.0.1:NNNN -> PORT" line."""
    for line in forward.next():
        _, _, rest = line.partition("Forwarding from 127.0.0.1:")
        if rest:
            chosen, _, target = rest.partition(" -> ")
            assert int(target) == remote, line
            return int(chosen)
    raise AssertionError(f"no forwarding line in {forward.seen}")


def exchange(port: int, payload: bytes) -> bytes:
    """Send ``payload`` through the local port, half-close, and read everything that comes back."""
    with socket.create_connection(("127.0.0.1", port), timeout=fixtures.KUBECTL_TIMEOUT) as connection:
        connection.sendall(payload)
        connection.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    return received


def echo_upper(server: socket.socket) -> None:
    """Answer one client with everything it sent, in upper case, once it is done sending."""
    server.settimeout(fixtures.KUBECTL_TIMEOUT)  # closing the socket does not wake a blocked accept
    connection, _ = server.accept()
    with connection:
        data = b""
        while chunk := connection.recv(65536):
            data += chunk
        connection.sendall(data.upper())


def test_kubectl_port_forward_two_connections_at_once(
    tunnel_cluster: ThreadCluster, kubectl: fixtures.Kubectl
) -> None:
    pod = running_pod(tunnel_cluster, "fwd")
    server = socket.create_server(("127.0.0.1", 0))
    remote = server.getsockname()[1]
    big = bytes(range(97, 123)) * 20_000  # 520 kB: many frames, past every 64 KiB window
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        answered = [pool.submit(echo_upper, server) for _ in range(3)]
        try:
            forward = kubectl.background("port-forward", f"pod/{pod}", f":{remote}")
            port = local_port(forward, remote)
            small_reply = pool.submit(exchange, port, b"hello through kubectl")
            big_reply = pool.submit(exchange, port, big)
            assert small_reply.result(fixtures.KUBECTL_TIMEOUT) == b"HELLO THROUGH KUBECTL"
            assert big_reply.result(fixtures.KUBECTL_TIMEOUT) == big.upper()
            assert exchange(port, b"and again") == b"AND AGAIN"  # the port-forward goes on
            for done in answered:
                done.result(fixtures.KUBECTL_TIMEOUT)
            assert forward.process.poll() is None, forward.seen
        finally:
            stop_listening(server)


def test_kubectl_port_forward_to_a_closed_port_reports_the_error(
    tunnel_cluster: ThreadCluster, kubectl: fixtures.Kubectl
) -> None:
    """kubelet's message reaches kubectl, which then ends its port-forward itself: since 1.23 an error on
    any connection closes kubectl's whole SPDY connection (client-go portforward.go ``handleConnection``)."""
    pod = running_pod(tunnel_cluster, "fwdclosed")
    remote = closed_port()
    forward = kubectl.background("port-forward", f"pod/{pod}", f":{remote}")
    port = local_port(forward, remote)
    assert exchange(port, b"anyone there?") == b""
    output = "\n".join(forward.rest())
    assert f"error forwarding port {remote} to pod {pod}" in output, output
    assert "lost connection to pod" in output, output


def stop_listening(server: socket.socket) -> None:
    """Close a listening socket, waking a thread blocked in its ``accept`` (a failed test ends now)."""
    with contextlib.suppress(OSError):
        server.shutdown(socket.SHUT_RDWR)
    server.close()


def closed_port() -> int:
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


class RawSpdy:
    """kubectl's side of the tunnelled SPDY, by hand over websocket-client: frames exactly as sent."""

    def __init__(self, tunnel_cluster: ThreadCluster, pod: str) -> None:
        assert tunnel_cluster.cluster is not None
        cluster = tunnel_cluster.cluster
        self.ws = ws_sync.create_connection(
            cluster.ws_url(pod, "portforward", []), subprotocols=[portforward.TUNNEL_PROTOCOL],
            sslopt={"context": cluster.tls}, timeout=fixtures.KUBECTL_TIMEOUT,
        )  # fmt: skip
        self._compressor = spdy.HeaderCompressor()
        self._decompressor = spdy.HeaderDecompressor()
        self._reader = spdy.FrameReader()
        self.replied: set[int] = set()
        self.finished: set[int] = set()
        self.received: dict[int, bytes] = {}
        self.pings: list[int] = []

    def open_pair(self, first_id: int, *, port: int, request: str) -> None:
        """The error stream (half-closed at once) and the data stream of one forwarded connection."""
        for stream_id, kind in ((first_id, "error"), (first_id + 2, "data")):
            headers = {"streamtype": kind, "port": str(port), "requestid": request}
            self.ws.send_binary(spdy.syn_stream(stream_id, self._compressor.compress(headers)))
        self.ws.send_binary(spdy.data(first_id, b"", fin=True))

    def until_finished(self, *stream_ids: int) -> None:
        while not set(stream_ids) <= self.finished:
            for frame in self._reader.feed(self.ws.recv()):
                if isinstance(frame, spdy.DataFrame):
                    self.received[frame.stream_id] = self.received.get(frame.stream_id, b"") + frame.data
                    if frame.flags & spdy.FLAG_FIN:
                        self.finished.add(frame.stream_id)
                elif frame.type == spdy.SYN_REPLY:
                    self._decompressor.decompress(frame.payload[4:])
                    self.replied.add(int.from_bytes(frame.payload[:4], "big"))
                elif frame.type == spdy.PING:
                    self.pings.append(int.from_bytes(frame.payload[:4], "big"))


def test_spdy_session_survives_an_error_on_one_connection(tunnel_cluster: ThreadCluster) -> None:
    pod = name("rawfwd")
    tunnel_cluster.pod(pod, ["sleep", "600"])
    server = socket.create_server(("127.0.0.1", 0))
    remote, closed = server.getsockname()[1], closed_port()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answered = pool.submit(echo_upper, server)
        client = RawSpdy(tunnel_cluster, pod)
        try:
            assert (
                client.ws.subprotocol == portforward.TUNNEL_PROTOCOL.lower()
            )  # as websocket-client keeps it
            client.open_pair(1, port=closed, request="0")
            client.ws.send_binary(spdy.ping(7))
            client.until_finished(1, 3)
            assert f"error forwarding port {closed} to pod {pod}".encode() in client.received[1]
            client.open_pair(5, port=remote, request="1")  # the same session goes on
            client.ws.send_binary(spdy.data(7, b"still here", fin=True))
            client.until_finished(5, 7)
            assert (client.received[7], client.received.get(5, b"")) == (b"STILL HERE", b"")
            assert client.replied >= {1, 3, 5, 7}
            assert client.pings == [7]
            answered.result(fixtures.KUBECTL_TIMEOUT)
        finally:
            client.ws.close()
            stop_listening(server)
