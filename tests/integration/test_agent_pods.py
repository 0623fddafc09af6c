"""The pod worker and the process runtime against a real API server (in-memory store, in process).

Each test starts ``ApiServer`` on the memory store, creates a Node with a podCIDR, and runs a
``PodManager`` with a ``ProcessRuntime`` under the test's directory. Pods are created already
bound (``spec.nodeName``), as the scheduler would leave them. Back-offs and probe periods are
short; every wait polls the API for a state and only a generous hang guard bounds it.
As root, containers get namespaces (and cgroups when the machine delegates them); otherwise they
are plain processes: the volume paths go through ``$K3S_MOUNT_ROOT``, which works in both.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import json
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from services.agent import pods
from services.agent.runtimes import logs, process, shim
from services.client import api, errors, resources
from tests.integration.cluster import fixtures

NODE = "agent-test"
NODE_IP = "127.0.0.1"
CIDR = "10.42.7.0/24"
NS = "default"
SETTINGS = pods.PodSettings(backoff_initial=0.5, backoff_cap=1.0, resync=1.0, default_grace=2.0)
HANG_GUARD = 30.0  # seconds: only to end a hung test, never a performance threshold


data_dir, cluster, admin = fixtures("agent-pods", inprocess_admin=True)


@pytest.fixture
async def client(admin: api.ApiClient) -> api.ApiClient:
    """The admin, in process, once the Node (with its podCIDR) exists."""
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}, "spec": {"podCIDR": CIDR}}
    with contextlib.suppress(errors.ApiError):
        await admin.create(resources.NODES, node)
    return admin


@contextlib.asynccontextmanager
async def agent(client: api.ApiClient, root: Path) -> AsyncIterator[pods.PodManager]:
    namespaces = (root.parent / "namespaces").exists()
    runtime = process.ProcessRuntime(root_dir=root, namespaces=namespaces, cgroups=namespaces)
    manager = pods.PodManager(client, node_name=NODE, runtime=runtime, node_ip=NODE_IP, settings=SETTINGS)
    try:
        await manager.start()
        yield manager
    finally:
        await manager.stop()


@pytest.fixture(params=["plain", "namespaces"])
async def root(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Path]:
    """The runtime's directory (plain processes, or namespaces when root); leftovers are killed."""
    if request.param == "namespaces":
        if os.geteuid() != 0:
            print("namespaces need root: running these containers as plain processes only")
            pytest.skip("Linux namespaces need root")
        (tmp_path / "namespaces").touch()
    try:
        yield tmp_path / "runtime"
    finally:
        for state in (tmp_path / "runtime").glob("pods/*/containers/*/*/state.json"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                pid = int(__import__("json").loads(state.read_text())["pid"])
                os.killpg(pid, 9)


def pod(name: str, *containers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
            "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 2, "containers": list(containers), **spec}}  # fmt: skip


def sh(name: str, script: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "busybox", "command": ["sh", "-c", script], **extra}


async def wait_pod(
    client: api.ApiClient, name: str, check: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    async def poll() -> dict[str, Any]:
        while True:
            got = await client.get(resources.PODS, name, namespace=NS)
            if check(got):
                return got
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(poll(), HANG_GUARD)


async def wait_gone(client: api.ApiClient, name: str) -> None:
    async def poll() -> None:
        while True:
            try:
                await client.get(resources.PODS, name, namespace=NS)
            except errors.ApiError as exc:
                if exc.code == 404:
                    return
                raise
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), HANG_GUARD)


def cstatus(obj: dict[str, Any], index: int = 0, key: str = "containerStatuses") -> dict[str, Any]:
    return ((obj.get("status") or {}).get(key) or [{}])[index]


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or () if c["type"] == kind), {})


def log_text(manager: pods.PodManager, obj: dict[str, Any], container: str, *, previous: bool = False) -> str:
    path = manager.runtime.log_path(obj["metadata"]["uid"], container, previous=previous)
    assert path is not None
    return b"".join(logs.read_text(str(path))).decode()


async def test_pod_runs_with_kubelet_status_and_logs(client: api.ApiClient, root: Path) -> None:
    async with agent(client, root) as manager:
        await client.create(resources.PODS, pod("hello", sh("main", "echo hi; sleep 30")))
        got = await wait_pod(client, "hello", lambda p: condition(p, "Ready").get("status") == "True")
        status, main = got["status"], cstatus(got)
        assert status["phase"] == "Running"
        assert ipaddress.ip_address(status["podIP"]) in ipaddress.ip_network(CIDR)
        assert status["podIPs"] == [{"ip": status["podIP"]}]
        assert status["hostIP"] == NODE_IP and status["hostIPs"] == [{"ip": NODE_IP}]
        assert status["qosClass"] == "BestEffort" and status["startTime"]
        for kind in ("PodScheduled", "Initialized", "ContainersReady", "Ready"):
            assert condition(got, kind)["status"] == "True" and condition(got, kind)["lastTransitionTime"]
        assert "running" in main["state"] and main["ready"] and main["started"]
        assert main["restartCount"] == 0 and main["lastState"] == {}
        assert main["image"] == "busybox" and main["imageID"] and main["containerID"].startswith("process://")
        await wait_until(lambda: "hi" in log_text(manager, got, "main"))
        raw = manager.runtime.log_path(got["metadata"]["uid"], "main").read_bytes()
        assert logs.parse(raw.splitlines()[0])[1:] == ("stdout", True, b"hi")


async def wait_until(check: Callable[[], bool]) -> None:
    async def poll() -> None:
        while not check():  # noqa: ASYNC110 - a file or process state, nothing to await
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), HANG_GUARD)


async def test_restart_policies_and_crash_loop_backoff(client: api.ApiClient, root: Path) -> None:
    async with agent(client, root) as manager:
        await client.create(resources.PODS, pod("done", sh("main", "echo bye"), restartPolicy="Never"))
        await client.create(
            resources.PODS, pod("crash", sh("main", "echo attempt; exit 1"), restartPolicy="OnFailure")
        )
        done = await wait_pod(client, "done", lambda p: p.get("status", {}).get("phase") == "Succeeded")
        terminated = cstatus(done)["state"]["terminated"]
        assert terminated["exitCode"] == 0 and terminated["reason"] == "Completed"
        assert condition(done, "Ready")["reason"] == "PodCompleted"
        crash = await wait_pod(
            client, "crash",
            lambda p: cstatus(p).get("restartCount", 0) >= 2
            and cstatus(p)["state"].get("waiting", {}).get("reason") == "CrashLoopBackOff",
        )  # fmt: skip
        main = cstatus(crash)
        assert "back-off" in main["state"]["waiting"]["message"]
        assert main["lastState"]["terminated"]["exitCode"] == 1
        assert crash["status"]["phase"] == "Running"
        assert "attempt" in log_text(manager, crash, "main", previous=True)


async def test_liveness_restarts_and_readiness_gates(client: api.ApiClient, root: Path) -> None:
    live = sh(
        "main",
        "sleep 30",
        livenessProbe={"tcpSocket": {"port": 1}, "periodSeconds": 1, "failureThreshold": 1},
    )
    ready = sh(
        "main", "sleep 30",
        readinessProbe={"exec": {"command": ["sh", "-c", 'test -f "$K3S_MOUNT_ROOT/data/ready"']}, "periodSeconds": 1},
        volumeMounts=[{"name": "data", "mountPath": "/data"}],
    )  # fmt: skip
    async with agent(client, root):
        await client.create(resources.PODS, pod("live", live))
        await client.create(resources.PODS, pod("gated", ready, volumes=[{"name": "data", "emptyDir": {}}]))
        restarted = await wait_pod(client, "live", lambda p: cstatus(p).get("restartCount", 0) >= 1)
        assert cstatus(restarted)["lastState"]["terminated"]["exitCode"] in (137, 143)
        gated = await wait_pod(client, "gated", lambda p: "running" in cstatus(p).get("state", {}))
        assert not cstatus(gated)["ready"] and condition(gated, "Ready")["status"] == "False"
        (root / "pods" / gated["metadata"]["uid"] / "volumes" / "data" / "ready").touch()
        now_ready = await wait_pod(client, "gated", lambda p: condition(p, "Ready").get("status") == "True")
        assert cstatus(now_ready)["ready"] and cstatus(now_ready)["restartCount"] == 0


async def test_init_containers_env_and_volumes(client: api.ApiClient, root: Path) -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": NS},
          "data": {"greeting": "hello", "colour": "blue"}}  # fmt: skip
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sec", "namespace": NS},
              "data": {"password": base64.b64encode(b"s3cret").decode()}}  # fmt: skip
    await client.create(resources.CONFIGMAPS, cm)
    await client.create(resources.SECRETS, secret)
    script = ('cat "$K3S_MOUNT_ROOT/work/init"; cat "$K3S_MOUNT_ROOT/cfg/greeting"; echo;'
              ' cat "$K3S_MOUNT_ROOT/sec/password"; echo; cat "$K3S_MOUNT_ROOT/info/name"; echo;'
              ' echo "env $GREETING $PASSWORD $POD_NAME $NODE $MEM $CFG_colour"; echo "args $1"; pwd; sleep 30')  # fmt: skip
    main = {
        "name": "main", "image": "busybox", "command": ["sh", "-c", script, "sh"], "args": ["$(GREETING)-x"],
        "workingDir": "/tmp",
        "env": [
            {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}}},
            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
        ],
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
        "resources": {"limits": {"memory": "64Mi"}},
        "volumeMounts": [{"name": "work", "mountPath": "/work"}, {"name": "cfg", "mountPath": "/cfg"},
                         {"name": "sec", "mountPath": "/sec"}, {"name": "info", "mountPath": "/info"}],
    }  # fmt: skip
    init = sh(
        "init",
        'echo from-init > "$K3S_MOUNT_ROOT/work/init"',
        volumeMounts=[{"name": "work", "mountPath": "/work"}],
    )
    vols = [{"name": "work", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "cfg"}},
            {"name": "sec", "secret": {"secretName": "sec"}},
            {"name": "info", "downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}}]  # fmt: skip
    async with agent(client, root) as manager:
        await client.create(resources.PODS, pod("wired", main, initContainers=[init], volumes=vols))
        got = await wait_pod(client, "wired", lambda p: p.get("status", {}).get("phase") == "Running")
        assert condition(got, "Initialized")["status"] == "True"
        assert cstatus(got, key="initContainerStatuses")["state"]["terminated"]["exitCode"] == 0
        assert got["status"]["qosClass"] == "Burstable"
        await wait_until(lambda: "/tmp" in log_text(manager, got, "main"))
        text = log_text(manager, got, "main")
    assert "from-init\nhello\ns3cret\nwired\n" in text
    assert f"env hello s3cret wired {NODE} 64 blue" in text
    assert "args hello-x" in text


async def test_graceful_delete_sends_sigterm_then_deletes(
    client: api.ApiClient, root: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    marker.mkdir()
    script = 'trap "echo term > $K3S_MOUNT_ROOT/out/terminated; exit 0" TERM; while true; do sleep 0.1; done'
    spec = sh("main", script, volumeMounts=[{"name": "out", "mountPath": "/out"}])
    async with agent(client, root):
        await client.create(
            resources.PODS,
            pod("graceful", spec, volumes=[{"name": "out", "hostPath": {"path": str(marker)}}]),
        )
        got = await wait_pod(client, "graceful", lambda p: condition(p, "Ready").get("status") == "True")
        await client.delete(resources.PODS, "graceful", namespace=NS, grace_period_seconds=10)
        await wait_gone(client, "graceful")
        assert (marker / "terminated").read_text() == "term\n"
        await wait_until(lambda: not (root / "pods" / got["metadata"]["uid"]).exists())


async def test_restarted_agent_adopts_running_pods(client: api.ApiClient, root: Path) -> None:
    async with agent(client, root) as manager:
        await client.create(resources.PODS, pod("kept", sh("main", "sleep 30")))
        await client.create(resources.PODS, pod("dropped", sh("main", "sleep 30")))
        kept = await wait_pod(client, "kept", lambda p: condition(p, "Ready").get("status") == "True")
        dropped = await wait_pod(client, "dropped", lambda p: condition(p, "Ready").get("status") == "True")
        before = {i.name: i for i in manager.runtime.containers(kept["metadata"]["uid"])}["main"]
        dropped_pid = manager.runtime.containers(dropped["metadata"]["uid"])[0].pid
    # The agent is down: its containers keep running; one pod is deleted meanwhile.
    assert before.pid is not None and shim.start_ticks(before.pid) > 0
    await client.delete(resources.PODS, "dropped", namespace=NS, grace_period_seconds=0)
    async with agent(client, root) as manager:
        after = manager.runtime.containers(kept["metadata"]["uid"])
        assert [(i.name, i.pid, i.attempt) for i in after] == [("main", before.pid, 0)]
        await wait_until(lambda: not (root / "pods" / dropped["metadata"]["uid"]).exists())
        assert _gone(dropped_pid)
        again = await client.get(resources.PODS, "kept", namespace=NS)
        assert (
            cstatus(again)["restartCount"] == 0
            and cstatus(again)["containerID"] == cstatus(kept)["containerID"]
        )


async def test_forked_pods_outlive_the_agent_and_a_dead_forker_is_replaced(
    client: api.ApiClient, root: Path
) -> None:
    async with agent(client, root) as manager:
        runtime = manager.runtime
        await client.create(resources.PODS, pod("forked", sh("main", "sleep 30")))
        forked = await wait_pod(client, "forked", lambda p: condition(p, "Ready").get("status") == "True")
        first_forker = runtime.forker.pid
        shim_pid = _state(root, forked)["shim_pid"]
        assert first_forker is not None and _parent(shim_pid) == first_forker
        os.kill(first_forker, signal.SIGKILL)
        await wait_until(lambda: _gone(first_forker))
        await client.create(resources.PODS, pod("after", sh("main", "sleep 30")))
        after = await wait_pod(client, "after", lambda p: condition(p, "Ready").get("status") == "True")
        second_forker = runtime.forker.pid
        assert second_forker not in (None, first_forker)
        assert _parent(_state(root, after)["shim_pid"]) == second_forker
        container_pid = runtime.containers(forked["metadata"]["uid"])[0].pid
    # The agent is down: its forker exited with it; the shims and containers it forked keep running.
    assert _gone(second_forker) and not _gone(shim_pid) and not _gone(container_pid)
    async with agent(client, root) as manager:
        adopted = manager.runtime.containers(forked["metadata"]["uid"])
        assert [(i.name, i.pid, i.attempt) for i in adopted] == [("main", container_pid, 0)]
        again = await client.get(resources.PODS, "forked", namespace=NS)
        assert (
            cstatus(again)["restartCount"] == 0
            and cstatus(again)["containerID"] == cstatus(forked)["containerID"]
        )


def _state(root: Path, obj: dict[str, Any]) -> dict[str, Any]:
    return json.loads((root / "pods" / obj["metadata"]["uid"] / "containers/main/0/state.json").read_text())


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _gone(pid: int | None) -> bool:
    """No such process any more (or only its zombie, waiting for whoever reaps it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except OSError:
        return True
