"""The agent tunnel end to end in one process: API server -> bus -> agent Tunnel -> a runtime.

``SubprocessRuntime`` implements the agent's Runtime protocol with real processes (exec is a
subprocess, logs a CRI-format file it writes, port-forward a TCP connection on loopback), so these
tests need no pod worker. The API server is the real one over HTTPS with the in-memory kine; the
bus is the in-memory one, and once a real nats-server (the bundled binary).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import os
import signal
import ssl
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets
from websockets.asyncio import client as ws_client

import services.bus
from services.agent import tunnel
from services.agent.runtimes import types as rt
from services.apiserver import server
from services.apiserver import tunnel as api_tunnel
from supervisor import pki
from tests.integration.cluster import Cluster as ApiCluster

NODE = "node-a.example"


def cri_time(moment: datetime.datetime | None = None) -> str:
    return (moment or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- a runtime of plain subprocesses --------------------------------------------------------------


class ProcessSession:
    """An exec'd command: its pipes and exit code."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.sizes: list[tuple[int, int]] = []

    async def write_stdin(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        await self.process.stdin.drain()

    async def close_stdin(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()

    async def _read(self, pipe: asyncio.StreamReader | None) -> AsyncIterator[bytes]:
        while pipe is not None and (chunk := await pipe.read(65536)):
            yield chunk

    def stdout(self) -> AsyncIterator[bytes]:
        return self._read(self.process.stdout)

    def stderr(self) -> AsyncIterator[bytes]:
        return self._read(self.process.stderr)

    async def resize(self, width: int, height: int) -> None:
        self.sizes.append((width, height))

    async def wait(self) -> int:
        return await self.process.wait()

    async def kill(self) -> None:
        # The whole group: a child left holding the pipes would keep wait() from returning.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        await self.process.wait()


class AttachSession(ProcessSession):
    """The container's own streams, as seen from a late reader: new output only."""

    def __init__(self, container: Container) -> None:
        super().__init__(container.process)
        self.queues = {name: asyncio.Queue[bytes]() for name in ("stdout", "stderr")}
        container.listeners.append(self.queues)

    async def _drain(self, name: str) -> AsyncIterator[bytes]:
        while chunk := await self.queues[name].get():
            yield chunk

    def stdout(self) -> AsyncIterator[bytes]:
        return self._drain("stdout")

    def stderr(self) -> AsyncIterator[bytes]:
        return self._drain("stderr")

    async def kill(self) -> None:
        raise AssertionError("attach must never kill the container")


@dataclasses.dataclass
class Container:
    info: rt.ContainerInfo
    process: asyncio.subprocess.Process
    log: Path
    listeners: list[dict[str, asyncio.Queue[bytes]]] = dataclasses.field(default_factory=list)
    pumps: list[asyncio.Task[None]] = dataclasses.field(default_factory=list)


class SubprocessRuntime:
    name = "subprocess"
    version = "1"

    def __init__(self, base: Path) -> None:
        self.base = base
        self.containers_: dict[str, dict[str, Container]] = {}
        self.previous_logs: dict[tuple[str, str], Path] = {}
        self.exec_sessions: list[ProcessSession] = []

    # the parts of the Runtime protocol the tunnel uses
    def pods(self) -> list[str]:
        return list(self.containers_)

    def containers(self, pod_uid: str) -> list[rt.ContainerInfo]:
        return [c.info for c in self.containers_.get(pod_uid, {}).values()]

    def log_path(self, pod_uid: str, name: str, *, previous: bool = False) -> Path | None:
        if previous:
            return self.previous_logs.get((pod_uid, name))
        found = self.containers_.get(pod_uid, {}).get(name)
        return found.log if found else None

    async def exec(
        self, pod_uid: str, name: str, command: Sequence[str], *, tty: bool, stdin: bool
    ) -> ProcessSession:
        process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT if tty else asyncio.subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
        session = ProcessSession(process)
        self.exec_sessions.append(session)
        return session

    async def attach(self, pod_uid: str, name: str, *, stdin: bool) -> AttachSession:
        return AttachSession(self.containers_[pod_uid][name])

    async def port_forward(self, pod_uid: str, port: int) -> tuple[Any, Any]:
        return await asyncio.open_connection("127.0.0.1", port)

    # what the pod worker would do
    async def run(self, pod_uid: str, name: str, argv: Sequence[str], *, stdin: bool = False) -> Container:
        directory = self.base / pod_uid
        directory.mkdir(parents=True, exist_ok=True)
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        info = rt.ContainerInfo(
            pod_uid=pod_uid, name=name, attempt=0, state=rt.State.RUNNING, container_id=f"subprocess://{process.pid}",
            image="test", image_id="test", pid=process.pid,
        )  # fmt: skip
        container = Container(info, process, directory / f"{name}.log")
        container.log.touch()
        self.containers_.setdefault(pod_uid, {})[name] = container
        container.pumps = [
            asyncio.create_task(self._pump(container, "stdout", process.stdout)),
            asyncio.create_task(self._pump(container, "stderr", process.stderr)),
        ]
        asyncio.create_task(self._reap(container))
        return container

    def add_exited(
        self, pod_uid: str, name: str, lines: Sequence[str], *, previous: Sequence[str] = ()
    ) -> None:
        """A container that already ran: its log file has ``lines`` (CRI records, written as given)."""
        directory = self.base / pod_uid
        directory.mkdir(parents=True, exist_ok=True)
        log = directory / f"{name}.log"
        log.write_text("".join(f"{line}\n" for line in lines))
        if previous:
            (directory / f"{name}.previous.log").write_text("".join(f"{line}\n" for line in previous))
            self.previous_logs[(pod_uid, name)] = directory / f"{name}.previous.log"
        info = rt.ContainerInfo(
            pod_uid=pod_uid, name=name, attempt=1, state=rt.State.EXITED, container_id="subprocess://0",
            image="test", image_id="test", exit_code=0,
        )  # fmt: skip
        self.containers_.setdefault(pod_uid, {})[name] = Container(info, None, log)  # type: ignore[arg-type]

    async def _pump(self, container: Container, stream: str, pipe: asyncio.StreamReader | None) -> None:
        assert pipe is not None
        with container.log.open("ab") as log:
            while line := await pipe.readline():
                tag, text = ("F", line[:-1]) if line.endswith(b"\n") else ("P", line)
                log.write(f"{cri_time()} {stream} {tag} ".encode() + text + b"\n")
                log.flush()
                for queues in container.listeners:
                    queues[stream].put_nowait(line)
        for queues in container.listeners:
            queues[stream].put_nowait(b"")

    async def _reap(self, container: Container) -> None:
        code = await container.process.wait()
        await asyncio.gather(*container.pumps)
        container.info = dataclasses.replace(container.info, state=rt.State.EXITED, exit_code=code)

    async def close(self) -> None:
        for pod in self.containers_.values():
            for container in pod.values():
                if container.process is not None:
                    await ProcessSession(container.process).kill()
        for session in self.exec_sessions:
            await session.kill()


# -- the cluster in this process ------------------------------------------------------------------


@dataclasses.dataclass
class Cluster:
    api: server.ApiServer
    http: httpx.AsyncClient
    runtime: SubprocessRuntime
    tls: ssl.SSLContext
    namespace: str = "default"

    async def pod(self, name: str, *, node: str | None = NODE, containers: Sequence[str] = ("main",)) -> str:
        spec: dict[str, Any] = {"containers": [{"name": c, "image": "test"} for c in containers]}
        if node:
            spec["nodeName"] = node
        response = await self.http.post(
            f"/api/v1/namespaces/{self.namespace}/pods", json={"metadata": {"name": name}, "spec": spec}
        )
        assert response.status_code == 201, response.text
        return response.json()["metadata"]["uid"]

    def ws_url(self, pod: str, subresource: str, query: Sequence[tuple[str, str]]) -> str:
        path = f"/api/v1/namespaces/{self.namespace}/pods/{pod}/{subresource}"
        return f"wss://127.0.0.1:{self.api.port}{path}?{urllib.parse.urlencode(query)}"

    def websocket(
        self, pod: str, subresource: str, query: Sequence[tuple[str, str]], protocols: Sequence[str]
    ) -> Any:
        return ws_client.connect(
            self.ws_url(pod, subresource, query),
            ssl=self.tls,
            subprotocols=list(protocols),
            max_size=None,  # type: ignore[arg-type]
        )


@contextlib.asynccontextmanager
async def running_cluster(tmp_path: Path, bus_url: str) -> AsyncIterator[Cluster]:
    """The API server on ``bus_url`` (data dir ``tmp_path/data``) and an agent tunnel to this runtime."""
    runtime = SubprocessRuntime(tmp_path / "pods")
    agent_bus = await services.bus.connect(bus_url, name="agent")
    agent = tunnel.Tunnel(agent_bus, node_name=NODE, runtime=runtime)  # type: ignore[arg-type]
    apiserver = ApiCluster(tmp_path / "data", bus_url=bus_url)
    try:
        await agent.start()
        await apiserver.start()
        assert apiserver.server is not None
        context = apiserver.admin_tls()
        async with httpx.AsyncClient(base_url=apiserver.url, verify=context, timeout=30) as http:
            yield Cluster(apiserver.server, http, runtime, context)
    finally:
        await agent.stop()
        if apiserver.server is not None and apiserver.server.api is not None:
            await api_tunnel.close(apiserver.server.api)
        await apiserver.stop()
        await runtime.close()
        await agent_bus.close()


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with running_cluster(tmp_path, f"memory://tunnel-{uuid.uuid4().hex[:8]}") as one:
        yield one


async def exec_frames(ws: Any) -> dict[int, bytes]:
    """Everything the server sends until it closes, by channel."""
    out: dict[int, bytes] = {}
    with contextlib.suppress(websockets.ConnectionClosedOK):
        async for message in ws:
            out[message[0]] = out.get(message[0], b"") + message[1:]
    return out


# -- logs -------------------------------------------------------------------------------------------

OLD, NEW = "2024-05-01T10:00:00.000000001Z", "2024-05-01T10:00:05.5Z"
RECORDS = [
    f"{OLD} stdout F one",
    f"{OLD} stderr F two",
    f"{NEW} stdout P thr",
    f"{NEW} stdout F ee",
    f"{NEW} stdout F four",
]


async def test_logs_select_tail_since_timestamps_limit_and_previous(cluster: Cluster) -> None:
    uid = await cluster.pod("done")
    cluster.runtime.add_exited(uid, "main", RECORDS, previous=[f"{OLD} stdout F before the restart"])
    path = f"/api/v1/namespaces/{cluster.namespace}/pods/done/log"

    async def text(**query: Any) -> str:
        response = await cluster.http.get(path, params=query)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain")
        return response.text

    assert await text() == "one\ntwo\nthree\nfour\n"
    assert await text(tailLines=2) == "three\nfour\n"
    assert await text(tailLines=0) == ""
    assert await text(sinceTime="2024-05-01T10:00:01Z") == "three\nfour\n"
    assert await text(timestamps="true", tailLines=1) == f"{NEW} four\n"
    assert await text(limitBytes=6) == "one\ntw"
    assert await text(container="main", previous="true") == "before the restart\n"
    assert await text(sinceSeconds=60) == ""  # all of it is from 2024


async def test_logs_follow_until_the_container_exits(cluster: Cluster) -> None:
    uid = await cluster.pod("talker")
    release = cluster.runtime.base / "release"
    script = f"echo first; while [ ! -e {release} ]; do sleep 0.02; done; echo second"
    await cluster.runtime.run(uid, "main", ["sh", "-c", script])
    path = f"/api/v1/namespaces/{cluster.namespace}/pods/talker/log"
    async with cluster.http.stream("GET", path, params={"follow": "true"}) as response:
        assert response.status_code == 200
        chunks = response.aiter_text()
        received = ""
        while "first" not in received:
            received += await anext(chunks)
        release.touch()
        async for chunk in chunks:
            received += chunk
    assert received == "first\nsecond\n"


async def test_log_errors_are_statuses(cluster: Cluster) -> None:
    await cluster.pod("two", containers=("a", "b"))
    await cluster.pod("unbound", node=None)
    await cluster.pod("elsewhere", node="node-b")
    base = f"/api/v1/namespaces/{cluster.namespace}/pods"
    cases = [
        ("missing/log", {}, 404, 'pods "missing" not found'),
        ("unbound/log", {}, 400, "pod unbound does not have a host assigned"),
        ("two/log", {"container": "x"}, 400, "container x is not valid for pod two"),
        ("two/log", {}, 400, "a container name must be specified for pod two, choose one of: [a b]"),
        ("two/log", {"container": "a", "tailLines": "-1"}, 422, "tailLines: Invalid value: -1"),
        (
            "two/log",
            {"container": "a", "sinceSeconds": "5", "sinceTime": "2024-01-01T00:00:00Z"},
            422,
            "at most one",
        ),
        ("two/log", {"container": "a", "sinceTime": "yesterday"}, 400, "sinceTime"),
        ("two/log", {"container": "a"}, 404, 'pod "two" is not running on node "node-a.example"'),
        ("elsewhere/log", {}, 503, 'no agent of node "node-b" is connected'),
        ("two/exec", {"container": "a", "command": "ls"}, 400, "Upgrade request required"),
    ]
    for sub, query, code, message in cases:
        response = await cluster.http.get(f"{base}/{sub}", params=query)
        assert response.status_code == code, (sub, query, response.text)
        body = response.json()
        assert body["kind"] == "Status" and body["code"] == code
        assert message in body["message"], (sub, body["message"])


# -- exec and attach --------------------------------------------------------------------------------


async def test_exec_over_v5_gives_output_and_the_exit_code(cluster: Cluster) -> None:
    uid = await cluster.pod("shell")
    await cluster.runtime.run(uid, "main", ["sleep", "60"])
    query = [("command", "sh"), ("command", "-c"), ("command", "echo out; echo err >&2; exit 3"),
             ("stdout", "true"), ("stderr", "true")]  # fmt: skip
    async with cluster.websocket("shell", "exec", query, ["v5.channel.k8s.io"]) as ws:
        assert ws.subprotocol == "v5.channel.k8s.io"
        frames = await exec_frames(ws)
    assert frames[1] == b"out\n" and frames[2] == b"err\n"
    status = orjson.loads(frames[3])
    assert status["status"] == "Failure" and status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]


async def test_exec_stdin_ends_with_the_v5_close_message(cluster: Cluster) -> None:
    uid = await cluster.pod("cat")
    await cluster.runtime.run(uid, "main", ["sleep", "60"])
    query = [("command", "cat"), ("stdin", "true"), ("stdout", "true"), ("stderr", "true")]
    async with cluster.websocket("cat", "exec", query, ["v5.channel.k8s.io", "v4.channel.k8s.io"]) as ws:
        await ws.send(b"\x00hello ")
        await ws.send(b"\x00world")
        await ws.send(b"\x04" + orjson.dumps({"Width": 80, "Height": 24}))
        await ws.send(bytes([255, 0]))
        frames = await exec_frames(ws)
    assert frames[1] == b"hello world"
    assert orjson.loads(frames[3]) == {"metadata": {}, "status": "Success"}
    assert cluster.runtime.exec_sessions[-1].sizes == [(80, 24)]


async def test_exec_with_base64_channels(cluster: Cluster) -> None:
    uid = await cluster.pod("b64")
    await cluster.runtime.run(uid, "main", ["sleep", "60"])
    query = [("command", "echo"), ("command", "hi"), ("stdout", "true")]
    async with cluster.websocket("b64", "exec", query, ["v4.base64.channel.k8s.io"]) as ws:
        messages = [m async for m in ws]
    assert "1aGkK" in messages  # "1" + base64("hi\n")


async def test_leaving_an_exec_kills_the_command(cluster: Cluster) -> None:
    uid = await cluster.pod("long")
    await cluster.runtime.run(uid, "main", ["sleep", "60"])
    query = [("command", "sh"), ("command", "-c"), ("command", "echo started; sleep 60"), ("stdout", "true")]
    async with cluster.websocket("long", "exec", query, ["v5.channel.k8s.io"]) as ws:
        assert await ws.recv() == b"\x01started\n"
    session = cluster.runtime.exec_sessions[-1]
    async with asyncio.timeout(10):
        assert await session.process.wait() != 0


async def test_attach_reads_and_writes_the_containers_own_streams(cluster: Cluster) -> None:
    uid = await cluster.pod("attached")
    container = await cluster.runtime.run(
        uid, "main", ["sh", "-c", "read line; echo got $line; exit 4"], stdin=True
    )
    query = [("stdin", "true"), ("stdout", "true"), ("stderr", "true")]
    async with cluster.websocket("attached", "attach", query, ["v5.channel.k8s.io"]) as ws:
        await ws.send(b"\x00ping\n")
        frames = await exec_frames(ws)
    assert frames[1] == b"got ping\n"
    assert orjson.loads(frames[3])["details"]["causes"][0]["message"] == "4"
    assert container.process.returncode == 4


async def test_websocket_errors_are_http_statuses(cluster: Cluster) -> None:
    await cluster.pod("pending", containers=("a",))  # bound, but the node runs nothing yet
    await cluster.pod("far", node="node-b")
    cases = [
        ("missing", [("command", "ls"), ("stdout", "true")], 404, 'pods "missing" not found'),
        ("far", [("command", "ls"), ("stdout", "true")], 503, 'no agent of node "node-b" is connected'),
        (
            "pending",
            [("command", "ls"), ("stdout", "true"), ("container", "zz")],
            400,
            "container zz is not valid",
        ),
        ("pending", [("stdout", "true")], 400, "at least one command"),
        ("pending", [("command", "ls")], 400, "at least 1 of stdin, stdout, stderr"),
    ]
    for pod, query, code, message in cases:
        with pytest.raises(websockets.InvalidStatus) as info:
            async with cluster.websocket(pod, "exec", query, ["v5.channel.k8s.io"]):
                pass
        response = info.value.response
        assert response.status_code == code, (pod, query, response.body)
        assert message in orjson.loads(response.body)["message"]


async def test_read_only_users_cannot_exec_over_websocket(cluster: Cluster, tmp_path: Path) -> None:
    await cluster.pod("guarded")
    files = pki.TlsFiles(pki.tls_dir(tmp_path / "data"))
    viewer = pki.issue_client_cert(pki.load(files, pki.CLIENT_CA), "viewer", ())
    binding = {"metadata": {"name": "viewer-get-exec"}, "subjects": [{"kind": "User", "name": "viewer"}],
               "roleRef": {"kind": "ClusterRole", "name": "view-exec", "apiGroup": "rbac.authorization.k8s.io"}}  # fmt: skip
    role = {
        "metadata": {"name": "view-exec"},
        "rules": [{"apiGroups": [""], "resources": ["pods", "pods/exec"], "verbs": ["get"]}],
    }
    for plural, body in (("clusterroles", role), ("clusterrolebindings", binding)):
        created = await cluster.http.post(f"/apis/rbac.authorization.k8s.io/v1/{plural}", json=body)
        assert created.status_code == 201, created.text
    context = ssl.create_default_context(cafile=files.crt(pki.SERVER_CA))
    cert, key = tmp_path / "viewer.crt", tmp_path / "viewer.key"
    cert.write_bytes(viewer.cert_pem())
    key.write_bytes(viewer.key_pem())
    context.load_cert_chain(cert, key)
    url = cluster.ws_url("guarded", "exec", [("command", "ls"), ("stdout", "true")])
    with pytest.raises(websockets.InvalidStatus) as info:
        async with ws_client.connect(url, ssl=context, subprotocols=["v5.channel.k8s.io"]):  # type: ignore[list-item]
            pass
    assert info.value.response.status_code == 403
    assert 'cannot create resource "pods/exec"' in orjson.loads(info.value.response.body)["message"]


# -- port-forward -----------------------------------------------------------------------------------


async def echo_server() -> asyncio.Server:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data.upper())
            await writer.drain()
        writer.close()

    return await asyncio.start_server(echo, "127.0.0.1", 0)


async def test_port_forward_in_the_python_clients_form(cluster: Cluster) -> None:
    uid = await cluster.pod("web")
    await cluster.runtime.run(uid, "main", ["sleep", "60"])
    echo = await echo_server()
    port = echo.sockets[0].getsockname()[1]
    try:
        protocols = ["v5.channel.k8s.io", "v4.channel.k8s.io"]
        async with cluster.websocket("web", "portforward", [("ports", str(port))], protocols) as ws:
            assert ws.subprotocol == "v4.channel.k8s.io"
            first = {await ws.recv(), await ws.recv()}
            assert first == {b"\x00" + port.to_bytes(2, "little"), b"\x01" + port.to_bytes(2, "little")}
            payload = b"x" * 300_000  # more than one flow-control window
            await ws.send(b"\x00" + payload)
            received = b""
            while len(received) < len(payload):
                message = await ws.recv()
                assert message[0] == 0, message
                received += message[1:]
            assert received == payload.upper()
    finally:
        echo.close()
        await echo.wait_closed()


async def test_port_forward_to_a_closed_port_reports_on_the_error_channel(cluster: Cluster) -> None:
    uid = await cluster.pod("closed")
    await cluster.runtime.run(uid, "main", ["sleep", "60"])
    echo = await echo_server()
    port = echo.sockets[0].getsockname()[1]
    echo.close()
    await echo.wait_closed()
    async with cluster.websocket(
        "closed", "portforward", [("ports", str(port))], ["v4.channel.k8s.io"]
    ) as ws:
        messages = [m async for m in ws]
    errors = b"".join(m[1:] for m in messages[2:] if m[0] == 1)
    assert f"error forwarding port {port} to pod closed".encode() in errors


# -- through NATS ---------------------------------------------------------------------------------------


async def test_logs_and_exec_through_a_real_nats_server(tmp_path: Path) -> None:
    from supervisor import config as supervisor_config
    from supervisor import nats as nats_server

    bundled = nats_server.NatsServer(supervisor_config.NatsSettings(), data_dir=tmp_path)
    try:
        await bundled.start()
    except (FileNotFoundError, nats_server.NatsError) as exc:
        print(f"SKIP: the bundled nats-server cannot start: {exc}")
        pytest.skip(f"nats-server cannot start: {exc}")
    try:
        async with running_cluster(tmp_path, bundled.client_url) as one:
            uid = await one.pod("natty")
            await one.runtime.run(uid, "main", ["sh", "-c", "echo hello from nats; sleep 60"])
            path = f"/api/v1/namespaces/{one.namespace}/pods/natty/log"
            async with asyncio.timeout(10):
                while (await one.http.get(path)).text != "hello from nats\n":  # noqa: ASYNC110 - the log fills from another process
                    await asyncio.sleep(0.05)
            query = [
                ("command", "sh"),
                ("command", "-c"),
                ("command", "head -c 500000 /dev/zero; exit 7"),
                ("stdout", "true"),
            ]
            async with one.websocket("natty", "exec", query, ["v5.channel.k8s.io"]) as ws:
                frames = await exec_frames(ws)
            assert frames[1] == bytes(500000)
            assert orjson.loads(frames[3])["details"]["causes"][0]["message"] == "7"
            response = await one.http.get(f"/api/v1/namespaces/{one.namespace}/pods/missing-node/log")
            assert response.status_code == 404
    finally:
        await bundled.stop()
