"""Agents joining a real API server: token and CA check, node password, certificate, registration.

Each test starts ``ApiServer`` in this event loop on a free loopback port over kine's in-memory
backend, with a data dir prepared by ``supervisor.profiles.prepare`` (PKI, join token,
``cred/passwd``, component kubeconfigs), exactly as the supervisor prepares a server. Agents join
it with ``--server`` and the token from ``server/token``, through their load balancer, and talk to
the API with the node certificate they obtained. Intervals are shortened so that renewals happen
within a test; nothing waits on a clock threshold.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.agent import component, join, loadbalancer
from services.agent import settings as agent_settings
from services.apiserver import nodeauth
from services.client import api, errors, resources
from services.controllers import component as controllers
from services.controllers import settings as controllers_settings
from services.machinery import k3stoken
from supervisor import kubeconfig
from tests.integration.cluster import Cluster, eventually, fixtures, free_port

KUBECTL = Path(sys.executable).parent / "kubectl"


# The port is fixed before start: the kubernetes Endpoints and the component kubeconfigs carry it.
data_dir, cluster, admin = fixtures(prepare="profile", fixed_port=True)


def agent_settings_for(cluster: Cluster, data_dir: Path, **overrides: Any) -> agent_settings.AgentSettings:
    values: dict[str, Any] = {
        "server": cluster.url,
        "token": cluster.token,
        "data_dir": data_dir,
        "node_name": "agent-1",
        "lease_renew_interval": 0.2,
        "status_update_interval": 0.2,
        "lb_refresh_interval": 0.2,
    }
    values.update(overrides)
    return agent_settings.AgentSettings(**values)


async def run_agent(settings: agent_settings.AgentSettings) -> component.Agent:
    agent = component.Agent(settings)
    await asyncio.wait_for(agent.start(), 30)
    return agent


def condition(node: dict[str, Any], kind: str) -> str:
    return next((c["status"] for c in node["status"].get("conditions") or () if c["type"] == kind), "")


# -- joining ------------------------------------------------------------------------------------------


async def test_agent_joins_and_registers_a_ready_node(
    cluster: Cluster, admin: api.ApiClient, tmp_path: Path
) -> None:
    agent = await run_agent(agent_settings_for(cluster, tmp_path / "agent", node_labels={"team": "edge"}))
    try:
        node = await admin.get(resources.NODES, "agent-1")
        status = node["status"]
        for resource in ("cpu", "memory", "ephemeral-storage"):
            assert status["capacity"][resource] and status["allocatable"][resource]
        assert status["capacity"]["pods"] == "110"
        assert {a["type"] for a in status["addresses"]} == {"InternalIP", "Hostname"}
        assert status["nodeInfo"]["containerRuntimeVersion"].startswith("process://")
        assert status["nodeInfo"]["kubeletVersion"].startswith("v1.")
        assert {c["type"] for c in status["conditions"]} == {
            "Ready",
            "MemoryPressure",
            "DiskPressure",
            "PIDPressure",
        }
        labels = node["metadata"]["labels"]
        assert labels["kubernetes.io/hostname"] == "agent-1"
        assert labels["kubernetes.io/os"] == "linux" and labels["kubernetes.io/arch"]
        assert labels["team"] == "edge"
        assert "node-role.kubernetes.io/control-plane" not in labels
        # The agent talks as the node, with the certificate the server issued.
        cert = (tmp_path / "agent" / "agent" / join.CERT_FILE).read_bytes()
        assert b"BEGIN CERTIFICATE" in cert
        # The node password is recorded as K3s records it.
        secret = await admin.get(resources.SECRETS, "agent-1.node-password.k3s", namespace="kube-system")
        assert secret["type"] == "k3s.cattle.io/node-password" and secret["immutable"] is True
        stored = base64.b64decode(secret["data"]["hash"]).decode()
        password = (
            (tmp_path / "agent" / "agent" / "etc" / "rancher" / "node" / "password").read_text().strip()
        )
        assert nodeauth.verify_password(stored, password)
        # The Lease moves.
        first = await admin.get(resources.LEASES, "agent-1", namespace="kube-node-lease")
        assert first["spec"]["holderIdentity"] == "agent-1"
        assert first["metadata"]["ownerReferences"][0]["uid"] == node["metadata"]["uid"]

        async def renewed() -> bool:
            lease = await admin.get(resources.LEASES, "agent-1", namespace="kube-node-lease")
            return lease["spec"]["renewTime"] != first["spec"]["renewTime"]

        await eventually(renewed, what="a lease renewal")
    finally:
        await agent.stop()


async def test_kubectl_shows_a_server_node_ready_with_roles(cluster: Cluster, tmp_path: Path) -> None:
    if not KUBECTL.is_file():
        pytest.skip(f"kubectl is not installed next to {sys.executable}")
    agent = await run_agent(
        agent_settings_for(cluster, tmp_path / "agent", node_name="Server-1", server_node=True)
    )
    try:
        admin_config = kubeconfig.write_admin(
            cluster.data_dir, path=tmp_path / "admin.yaml", port=cluster.port
        )
        result = await asyncio.to_thread(
            subprocess.run, [str(KUBECTL), "--kubeconfig", str(admin_config), "get", "nodes", "--no-headers"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        fields = result.stdout.split()
        assert fields[:3] == ["server-1", "Ready", "control-plane,master"], result.stdout
    finally:
        await agent.stop()


async def test_wrong_ca_hash_is_refused_before_any_secret(cluster: Cluster, tmp_path: Path) -> None:
    token = k3stoken.parse(cluster.token)
    wrong = token.secure(ca_hash="0" * 64)
    agent = component.Agent(agent_settings_for(cluster, tmp_path / "agent", token=wrong))
    with pytest.raises(join.CaHashMismatch) as caught:
        await agent.start()
    assert str(caught.value) == "token CA hash does not match the cluster CA certificate"
    assert agent.state is component.State.STOPPED


async def test_wrong_token_password_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    token = k3stoken.parse(cluster.token)
    wrong = k3stoken.format_token(ca_hash=token.ca_hash, username="node", password="not-the-secret")
    with pytest.raises(join.JoinError, match="refused the join token \\(401 Unauthorized\\)"):
        await component.Agent(agent_settings_for(cluster, tmp_path / "agent", token=wrong)).start()


async def test_short_token_is_trusted_on_first_use(cluster: Cluster, tmp_path: Path) -> None:
    secret = k3stoken.parse(cluster.token).password
    agent = await run_agent(agent_settings_for(cluster, tmp_path / "agent", token=secret))
    await agent.stop()


async def test_taken_name_is_refused_until_the_node_is_deleted(
    cluster: Cluster, admin: api.ApiClient, tmp_path: Path
) -> None:
    first = await run_agent(agent_settings_for(cluster, tmp_path / "first"))
    await first.stop()
    # Another host (another password) wants the same name.
    with pytest.raises(join.JoinError, match="403 Forbidden.*taken"):
        await component.Agent(agent_settings_for(cluster, tmp_path / "second")).start()
    # The first one comes back with its own password: welcome.
    again = await run_agent(agent_settings_for(cluster, tmp_path / "first"))
    await again.stop()
    manager = controllers.ControllerManager(
        controllers_settings.ControllersSettings(
            kubeconfig=kubeconfig.component_path(cluster.data_dir, "controller"), data_dir=cluster.data_dir,
            controllers=["nodepassword"], leader_elect=False,
        )
    )  # fmt: skip
    await manager.start()
    try:
        await asyncio.wait_for(manager.wait_active(), 20)
        await admin.delete(resources.NODES, "agent-1")

        async def secret_gone() -> bool:
            try:
                await admin.get(resources.SECRETS, "agent-1.node-password.k3s", namespace="kube-system")
            except errors.ApiError as exc:
                return exc.code == 404
            return False

        await eventually(secret_gone, what="the node password secret to go")
    finally:
        await manager.stop()
    second = await run_agent(agent_settings_for(cluster, tmp_path / "second"))
    await second.stop()


async def test_bad_requests_get_a_status(cluster: Cluster) -> None:
    ca = ssl.create_default_context(cafile=str(cluster.data_dir / "server" / "tls" / "server-ca.crt"))
    password = k3stoken.parse(cluster.token).password
    async with httpx.AsyncClient(base_url=cluster.url, verify=ca) as client:
        anonymous = await client.get("/v1-k3s/client-kubelet.crt")
        assert anonymous.status_code == 401 and anonymous.json()["kind"] == "Status"
        nameless = await client.get("/v1-k3s/client-kubelet.crt", auth=("node", password))
        assert nameless.status_code == 400 and "node name" in nameless.json()["message"]
        bad_name = await client.get(
            "/v1-k3s/client-kubelet.crt", auth=("node", password),
            headers={"k3s-Node-Name": "Not_A_Name!", "k3s-Node-Password": "x"},
        )  # fmt: skip
        assert bad_name.status_code == 400
        unknown = await client.get("/v1-k3s/nothing-here", auth=("node", password))
        assert unknown.status_code == 404 and unknown.json()["kind"] == "Status"
        ca_answer = await client.get("/v1-k3s/client-ca.crt", auth=("node", password))
        assert ca_answer.status_code == 200 and b"BEGIN CERTIFICATE" in ca_answer.content


# -- identity -----------------------------------------------------------------------------------------


async def test_with_node_id_appends_a_kept_id(cluster: Cluster, admin: api.ApiClient, tmp_path: Path) -> None:
    settings = agent_settings_for(cluster, tmp_path / "agent", with_node_id=True)
    agent = await run_agent(settings)
    try:
        name = agent.node_name
        assert name.startswith("agent-1-") and len(name) == len("agent-1-") + 8
        await admin.get(resources.NODES, name)
    finally:
        await agent.stop()
    assert join.node_name(settings) == name  # the id is kept


# -- the load balancer --------------------------------------------------------------------------------


async def test_load_balancer_fails_over_from_a_dead_server(
    cluster: Cluster, admin: api.ApiClient, tmp_path: Path
) -> None:
    agent_dir = tmp_path / "agent" / "agent"
    dead = f"127.0.0.1:{free_port()}"
    # A saved list from an earlier run names a server that is gone now: it is tried first.
    loadbalancer.save_state(agent_dir / loadbalancer.STATE_FILE, server_url=cluster.url, addresses=[dead])
    agent = await run_agent(agent_settings_for(cluster, tmp_path / "agent"))
    try:
        assert agent.lb is not None
        assert agent.lb.servers.current == f"127.0.0.1:{cluster.port}"
        await admin.get(resources.NODES, "agent-1")

        async def learned() -> bool:
            return dead not in agent.lb.servers.all()  # type: ignore[union-attr]

        # The kubernetes Endpoints list only the live server: the dead one is forgotten, and persisted so.
        await eventually(learned, what="the endpoints to replace the saved list")
        saved = loadbalancer.load_state(agent_dir / loadbalancer.STATE_FILE, server_url=cluster.url)
        assert dead not in saved
    finally:
        await agent.stop()
