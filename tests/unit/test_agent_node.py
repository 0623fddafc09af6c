"""The node's shapes: labels, taints, conditions, status change detection, host readings, identity."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from services.agent import host, join, node
from services.agent import settings as settings_
from services.apiserver import nodeauth


def test_labels_on_a_server_node_carry_both_roles() -> None:
    labels = node.labels_for("n1", extra={"team": "a"}, server_node=True)
    assert labels["kubernetes.io/hostname"] == "n1"
    assert labels["kubernetes.io/os"] == host.os_name() and labels["kubernetes.io/arch"] == host.arch()
    assert labels[node.CONTROL_PLANE_ROLE] == "true" and labels[node.MASTER_ROLE] == "true"
    assert labels["team"] == "a"
    assert node.CONTROL_PLANE_ROLE not in node.labels_for("n1")


def test_parse_taint() -> None:
    assert node.parse_taint("dedicated=gpu:NoSchedule") == {
        "key": "dedicated",
        "value": "gpu",
        "effect": "NoSchedule",
    }
    assert node.parse_taint("edge:NoExecute") == {"key": "edge", "effect": "NoExecute"}
    with pytest.raises(ValueError):
        node.parse_taint("edge:Sometimes")


def test_conditions_keep_transition_times_until_the_status_changes() -> None:
    conditions = node.Conditions()
    first = {c["type"]: c for c in conditions.compute({})}
    assert set(first) == {"Ready", "MemoryPressure", "DiskPressure", "PIDPressure"}
    assert first["Ready"]["status"] == "True" and first["Ready"]["reason"] == "KubeletReady"
    assert first["MemoryPressure"]["status"] == "False"
    conditions._since["DiskPressure"] = ("False", "2000-01-01T00:00:00Z")
    conditions._since["MemoryPressure"] = ("False", "2000-01-01T00:00:00Z")
    second = {c["type"]: c for c in conditions.compute({"DiskPressure": True})}
    assert second["MemoryPressure"]["lastTransitionTime"] == "2000-01-01T00:00:00Z"  # unchanged status
    assert (
        second["DiskPressure"]["status"] == "True"
        and second["DiskPressure"]["reason"] == "KubeletHasDiskPressure"
    )
    assert second["DiskPressure"]["lastTransitionTime"] != "2000-01-01T00:00:00Z"


def test_signature_ignores_heartbeats_only() -> None:
    conditions = node.Conditions()
    status = {"capacity": {"cpu": "2"}, "conditions": conditions.compute({})}
    later = {
        "capacity": {"cpu": "2"},
        "conditions": [dict(c, lastHeartbeatTime="x") for c in status["conditions"]],
    }
    assert node.signature(status) == node.signature(later)
    assert node.signature(status) != node.signature({**status, "capacity": {"cpu": "4"}})


def test_node_and_lease_objects() -> None:
    obj = node.node_object("n1", labels={"a": "b"}, taints=[{"key": "k", "effect": "NoSchedule"}], status={})
    assert obj["metadata"] == {"name": "n1", "labels": {"a": "b"}} and obj["spec"]["taints"][0]["key"] == "k"
    lease = node.lease_object("n1", node_uid="u1", duration=40)
    assert lease["metadata"]["namespace"] == "kube-node-lease"
    assert lease["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "u1"}
    ]
    assert lease["spec"]["holderIdentity"] == "n1" and lease["spec"]["renewTime"].endswith("Z")


def test_host_capacity_and_allocatable(tmp_path: Path) -> None:
    capacity = host.capacity(data_dir=tmp_path / "not-yet", max_pods=110)
    assert capacity["pods"] == "110" and int(capacity["cpu"]) >= 1
    assert capacity["memory"].endswith("Ki") and capacity["ephemeral-storage"].endswith("Ki")
    allocatable = host.allocatable(capacity, memory_threshold=100 * 1024 * 1024, disk_percent=5)
    assert int(allocatable["memory"].removesuffix("Ki")) < int(capacity["memory"].removesuffix("Ki"))
    pressure = host.pressure(data_dir=tmp_path, memory_threshold=0, disk_percent=0)
    assert pressure == {
        "MemoryPressure": False,
        "DiskPressure": False,
        "PIDPressure": pressure["PIDPressure"],
    }
    info = host.node_info(runtime_version="process://1", kubelet_version="v1.37.0")
    assert info["containerRuntimeVersion"] == "process://1" and info["operatingSystem"] == "linux"
    assert host.address_towards("") == "127.0.0.1"


# -- identity -------------------------------------------------------------------------------------------


def test_node_dir_is_etc_only_for_root_with_the_default_data_dir(tmp_path: Path) -> None:
    default = settings_.AgentSettings()
    assert join.node_dir(default, is_root=True) == Path("/etc/rancher/node")
    assert join.node_dir(default, is_root=False) == settings_.DEFAULT_DATA_DIR / "agent/etc/rancher/node"
    custom = settings_.AgentSettings(data_dir=tmp_path)
    assert join.node_dir(custom, is_root=True) == tmp_path / "agent/etc/rancher/node"


def test_identity_is_generated_once_and_kept(tmp_path: Path) -> None:
    settings = settings_.AgentSettings(data_dir=tmp_path, node_name="Edge-Box", with_node_id=True)
    first = join.identity(settings, directory=tmp_path / "node")
    again = join.identity(settings, directory=tmp_path / "node")
    assert first == again and first.name.startswith("edge-box-") and len(first.password) == 32
    assert os.stat(tmp_path / "node" / "password").st_mode & 0o777 == 0o600
    assert first.password not in repr(first)
    plain = settings_.AgentSettings(data_dir=tmp_path, node_name="edge-box")
    assert join.identity(plain, directory=tmp_path / "node").name == "edge-box"


def test_split_pem_and_credentials(tmp_path: Path) -> None:
    from services.machinery import certs

    ca = certs.generate_ca("ca")
    pair = certs.issue_client_cert(ca, "system:node:n1", ["system:nodes"])
    cert_pem, key_pem = join.split_pem(pair.cert_pem() + pair.key_pem())
    assert cert_pem == pair.cert_pem() and key_pem == pair.key_pem()
    with pytest.raises(join.JoinError):
        join.split_pem(pair.cert_pem())
    creds = join.write_credentials(tmp_path, ca_pem=ca.cert_pem(), cert_pem=cert_pem, key_pem=key_pem)
    assert os.stat(creds.key_file).st_mode & 0o777 == 0o600
    creds.ssl_context()  # loads: the key matches the certificate


def test_token_text_prefers_the_token_then_the_file(tmp_path: Path) -> None:
    (tmp_path / "t").write_text("from-file\n")
    assert settings_.AgentSettings(token="given", token_file=tmp_path / "t").token_text() == "given"
    assert settings_.AgentSettings(token_file=tmp_path / "t").token_text() == "from-file"
    assert settings_.AgentSettings().token_text() == ""


# -- the server's node password hash ----------------------------------------------------------------------


def test_node_password_hash_is_k3s_shaped_and_verifies() -> None:
    hashed = nodeauth.hash_password("s3cret", salt=bytes(range(8)))
    version, salt, log_n, r, p, key = hashed.split(":")
    assert (version, salt, log_n, r, p) == ("$1", "0001020304050607", "15", "8", "1")
    assert len(base64.b64decode(key + "==")) == 64 and not key.endswith("=")
    assert nodeauth.verify_password(hashed, "s3cret")
    assert not nodeauth.verify_password(hashed, "other")
    assert not nodeauth.verify_password("garbage", "s3cret")
    assert not nodeauth.verify_password("$1:00:40:8:1:AAAA", "s3cret")  # absurd cost: refused, not computed
    assert nodeauth.secret_name("Node-1") == "node-1.node-password.k3s"
