"""The API server's configuration group, built once by the supervisor and passed down."""

from __future__ import annotations

from pathlib import Path

import pydantic


class ApiServerSettings(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    data_dir: Path = pydantic.Field(
        description="K3s data dir; certificates are read from <data-dir>/server/tls."
    )
    bind_address: str = pydantic.Field(
        default="0.0.0.0", description="K3s --bind-address: where HTTPS listens (all interfaces by default)."
    )
    https_listen_port: int = pydantic.Field(
        default=6443, ge=0, le=65535, description="K3s --https-listen-port; 0 picks a free port (tests)."
    )
    advertise_address: str = pydantic.Field(
        default="127.0.0.1",
        description="The address other nodes and the kubernetes endpoints use for this server.",
    )
    service_cidr: str = pydantic.Field(default="10.43.0.0/16", description="K3s --service-cidr.")
    cluster_cidr: str = pydantic.Field(default="10.42.0.0/16", description="K3s --cluster-cidr (pods).")
    service_node_port_range: str = pydantic.Field(
        default="30000-32767", description="K3s --service-node-port-range."
    )
    cluster_domain: str = pydantic.Field(default="cluster.local", description="K3s --cluster-domain.")
    store_address: str = pydantic.Field(
        default="",
        description="etcd endpoint(s) of the store, comma-separated (kine's unix socket by default; "
        "http(s)://host:2379 for a real etcd).",
    )
    store_cafile: Path | None = pydantic.Field(
        default=None, description="K3s --datastore-cafile: the CA of an https etcd (None: the system roots)."
    )
    store_certfile: Path | None = pydantic.Field(
        default=None,
        description="K3s --datastore-certfile: client certificate for etcd's --client-cert-auth.",
    )
    store_keyfile: Path | None = pydantic.Field(
        default=None, description="K3s --datastore-keyfile: the key of that client certificate."
    )
    nats_url: str = pydantic.Field(default="", description="The bus, for the agent tunnel; empty: none.")
