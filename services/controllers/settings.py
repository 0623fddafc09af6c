"""The controller manager's configuration group, built once by the supervisor and passed down.

Names and defaults follow kube-controller-manager's flags as K3s sets them (the flag each
field stands for is in its description). Controllers read their own fields from
``ControllerContext.settings``; nothing below this reads the environment.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pydantic

# Parallel workers per controller, as kube-controller-manager's --concurrent-*-syncs defaults.
# Workers are coroutines on one event loop: they overlap API round trips, not CPU work.
DEFAULT_WORKERS: dict[str, int] = {
    "deployment": 5,
    "replicaset": 5,
    "replicationcontroller": 5,
    "endpoints": 5,
    "endpointslice": 5,
    "garbagecollector": 20,
    "namespace": 10,
    "serviceaccount": 5,
    "nodeipam": 1,  # allocation is serialised anyway; one worker keeps the log readable
}


class ControllersSettings(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    kubeconfig: Path | None = pydantic.Field(
        default=None,
        description="--kubeconfig: how to reach the API server, normally "
        "<data-dir>/server/cred/controller.kubeconfig (user system:kube-controller-manager). "
        "Not needed when the caller hands the manager an API client (the edge profile).",
    )
    data_dir: Path | None = pydantic.Field(
        default=None,
        description="K3s data dir, for controllers that read files under it (server/manifests, "
        "server/tls/server-ca.crt). None: they fall back to the kubeconfig or do nothing.",
    )
    root_ca_file: Path | None = pydantic.Field(
        default=None,
        description="--root-ca-file: the CA bundle published as ConfigMap kube-root-ca.crt in every "
        "namespace. None: <data-dir>/server/tls/server-ca.crt, else the kubeconfig's CA.",
    )
    controllers: list[str] = pydantic.Field(
        default=["*"],
        description="--controllers: '*' enables every controller, 'name' enables one, '-name' "
        "disables one; later entries win (e.g. ['*', '-nodeipam']).",
    )
    leader_elect: bool = pydantic.Field(
        default=True,
        description="--leader-elect: act only while holding Lease kube-system/kube-controller-manager, "
        "so that several servers can run the manager and exactly one acts.",
    )
    leader_elect_lease_duration: float = pydantic.Field(
        default=15.0, gt=0, description="--leader-elect-lease-duration, seconds."
    )
    leader_elect_renew_deadline: float = pydantic.Field(
        default=10.0, gt=0, description="--leader-elect-renew-deadline, seconds."
    )
    leader_elect_retry_period: float = pydantic.Field(
        default=2.0, gt=0, description="--leader-elect-retry-period, seconds."
    )
    health_address: str = pydantic.Field(
        default="127.0.0.1:0",
        description="host:port of the plain-HTTP /healthz and /metrics endpoint; loopback only, "
        "so it needs no TLS. Port 0 picks a free port (ControllerManager.health_port tells which); "
        "the supervisor passes a fixed one (kube-controller-manager's is 10257).",
    )
    workers: dict[str, int] = pydantic.Field(
        default_factory=lambda: dict(DEFAULT_WORKERS),
        description="--concurrent-*-syncs: parallel workers per controller name; a controller "
        "missing here keeps its own default.",
    )
    allocate_node_cidrs: bool = pydantic.Field(
        default=True, description="--allocate-node-cidrs: give every node a podCIDR (K3s turns it on)."
    )
    cluster_cidr: str = pydantic.Field(
        default="10.42.0.0/16",
        description="--cluster-cidr: the pod network, one CIDR per IP family, comma-separated.",
    )
    node_cidr_mask: int = pydantic.Field(
        default=24, ge=8, le=30, description="--node-cidr-mask-size-ipv4: each node's IPv4 podCIDR size."
    )
    node_cidr_mask_ipv6: int = pydantic.Field(
        default=64, ge=64, le=126, description="--node-cidr-mask-size-ipv6: each node's IPv6 podCIDR size."
    )
    max_endpoints_per_slice: int = pydantic.Field(
        default=100, ge=1, le=1000, description="--max-endpoints-per-slice."
    )
    node_monitor_grace_period: float = pydantic.Field(
        default=50.0,
        gt=0,
        description="--node-monitor-grace-period, seconds a node may stay silent before it is marked "
        "Unknown (50 s since Kubernetes 1.32).",
    )
    node_startup_grace_period: float = pydantic.Field(
        default=60.0, gt=0, description="--node-startup-grace-period, seconds."
    )
    pod_eviction_timeout: float = pydantic.Field(
        default=300.0,
        gt=0,
        description="Seconds pods stay on an unreachable node when they do not say otherwise "
        "(the default not-ready/unreachable toleration).",
    )
    event_ttl: float = pydantic.Field(
        default=3600.0, gt=0, description="--event-ttl, seconds an Event is kept (1 hour, as upstream)."
    )
    disabled_addons: list[str] = pydantic.Field(
        default=[], description="K3s --disable: packaged manifests (addons) to remove and not apply."
    )
    addons_delete_removed: bool = pydantic.Field(
        default=False,
        description="Delete an Addon and its objects when its manifest file disappears (K3s leaves them).",
    )

    @pydantic.field_validator("health_address")
    @classmethod
    def _loopback_only(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"health_address must be host:port, not {value!r}")
        if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
            raise ValueError("health_address must be a loopback address (it serves plain HTTP)")
        return value

    @pydantic.field_validator("cluster_cidr")
    @classmethod
    def _cidrs(cls, value: str) -> str:
        for part in value.split(","):
            ipaddress.ip_network(part.strip(), strict=False)
        return value

    def workers_for(self, name: str, default: int) -> int:
        """Workers for controller ``name``: the configured number, else the controller's own default."""
        return max(1, self.workers.get(name, default))

    @property
    def health_host(self) -> str:
        return self.health_address.rpartition(":")[0].strip("[]")

    @property
    def health_port(self) -> int:
        return int(self.health_address.rpartition(":")[2])
