"""The agent's configuration group, built once by the supervisor and passed down.

Field names follow K3s's agent flags (``--server``, ``--token``, ``--token-file``, ``--node-name``,
``--with-node-id``, ``--node-label``, ``--node-taint``, ``--node-ip``, ``--data-dir``,
``--lb-server-port``) and the kubelet's (``nodeStatusUpdateFrequency`` 10 s,
``nodeStatusReportFrequency`` 1 min, the node Lease renewed every 10 s for 40 s). The agent reads no
environment variable itself: ``K3S_URL``, ``K3S_TOKEN``, ``K3S_NODE_NAME`` are the supervisor's to map.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pydantic

DEFAULT_DATA_DIR = Path("/var/lib/rancher/k3s")  # K3s's, as root


class AgentSettings(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    server: str = pydantic.Field(
        default="",
        description="--server / K3S_URL: https://HOST:6443 of a server to join. Empty when the agent runs "
        "in the server's process and is handed an API client (edge profile).",
    )
    token: pydantic.SecretStr | None = pydantic.Field(
        default=None,
        description="--token / K3S_TOKEN: the join token, best in full form K10<CA hash>::node:<secret> so "
        "that the server's CA is verified before the secret is sent.",
    )
    token_file: Path | None = pydantic.Field(
        default=None, description="--token-file: a file holding the token (read when token is not given)."
    )
    kubeconfig: Path | None = pydantic.Field(
        default=None,
        description="A kubeconfig to use instead of joining (no token, no node certificate). Needed by "
        "virtual nodes outside the server's process: one node certificate may act for one node only.",
    )
    data_dir: Path = pydantic.Field(
        default=DEFAULT_DATA_DIR,
        description="--data-dir: the agent keeps <data-dir>/agent (certificates, node id, load balancer "
        "list, node password when not root) and reports the disk holding it as ephemeral-storage.",
    )
    node_name: str = pydantic.Field(
        default="",
        description="--node-name / K3S_NODE_NAME; empty: the hostname. Lower-cased, as K3s does.",
    )
    with_node_id: bool = pydantic.Field(
        default=False,
        description="--with-node-id: append '-<id>' to the node name; the id is generated once and kept "
        "in <data-dir>/agent/node-id, so that hosts sharing a hostname get distinct nodes.",
    )
    node_labels: dict[str, str] = pydantic.Field(
        default_factory=dict, description="--node-label KEY=VALUE, set on the Node at registration."
    )
    node_taints: list[str] = pydantic.Field(
        default_factory=list, description="--node-taint KEY[=VALUE]:EFFECT, set on the Node at registration."
    )
    node_ip: str = pydantic.Field(
        default="",
        description="--node-ip: the InternalIP address; empty: the address of the interface that routes "
        "to the server (127.0.0.1 when nothing does).",
    )
    server_node: bool = pydantic.Field(
        default=False,
        description="This agent runs on a server: the Node gets node-role.kubernetes.io/control-plane and "
        "master labels (kubectl get nodes shows the roles as K3s does).",
    )
    runtime: Literal["process", "virtual"] = pydantic.Field(
        default="process",
        description="process: containers run as supervised processes; virtual: nothing runs, pods are "
        "reported Running (scale tests, like kwok). --virtual-nodes N selects virtual.",
    )
    virtual_nodes: int = pydantic.Field(
        default=0,
        ge=0,
        le=100_000,
        description="--virtual-nodes N: register N nodes named <node-name>-<i> from this one process, all "
        "virtual. 0: one real node.",
    )
    max_pods: int = pydantic.Field(default=110, ge=1, description="The kubelet's --max-pods: capacity pods.")
    lb_server_port: int = pydantic.Field(
        default=0,
        ge=0,
        le=65535,
        description="--lb-server-port: the client-side load balancer's loopback port. K3s uses 6444; 0 "
        "picks a free port, so several agents can share a host.",
    )
    lb_refresh_interval: float = pydantic.Field(
        default=30.0,
        gt=0,
        description="Seconds between reads of the kubernetes Endpoints that list the API servers (a node "
        "may get that object but not watch it).",
    )
    lease_duration: int = pydantic.Field(
        default=40, ge=1, description="The node Lease's leaseDurationSeconds (the kubelet's 40 s)."
    )
    lease_renew_interval: float = pydantic.Field(
        default=10.0, gt=0, description="Seconds between Lease renewals (the kubelet's 10 s)."
    )
    status_update_interval: float = pydantic.Field(
        default=10.0,
        gt=0,
        description="nodeStatusUpdateFrequency: seconds between checks of the node's status; it is posted "
        "when something changed.",
    )
    status_report_interval: float = pydantic.Field(
        default=60.0,
        gt=0,
        description="nodeStatusReportFrequency: seconds after which the status is posted even unchanged.",
    )
    join_timeout: float = pydantic.Field(
        default=10.0, gt=0, description="Seconds for each request of the join (/cacerts, certificates)."
    )
    memory_available_threshold: int = pydantic.Field(
        default=100 * 1024 * 1024,
        ge=0,
        description="Bytes: below this MemAvailable the node reports MemoryPressure (kubelet's "
        "memory.available<100Mi).",
    )
    disk_available_percent: float = pydantic.Field(
        default=5.0,
        ge=0,
        le=100,
        description="Percent of the data dir's disk: below this the node reports DiskPressure (K3s's "
        "nodefs.available<5%).",
    )

    @property
    def agent_dir(self) -> Path:
        return self.data_dir / "agent"

    def token_text(self) -> str:
        """The token, from --token or --token-file; empty when neither is given."""
        if self.token is not None:
            return self.token.get_secret_value()
        if self.token_file is not None:
            return self.token_file.read_text().strip()
        return ""
