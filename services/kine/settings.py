"""kine's configuration group, built once by the supervisor and passed down."""

from __future__ import annotations

from pathlib import Path

import pydantic


class KineSettings(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    data_dir: Path = pydantic.Field(
        description="K3s data dir; the SQLite file is <data-dir>/server/db/state.db and the socket <data-dir>/server/kine.sock."
    )
    datastore_endpoint: str = pydantic.Field(
        default="",
        description="K3s --datastore-endpoint: sqlite://PATH, postgres://user:pass@host:port/db, "
        "mysql://user:pass@tcp(host:port)/db, memory://. Empty means SQLite in the data dir.",
    )
    listen_address: str = pydantic.Field(
        default="",
        description="HOST:PORT for etcd gRPC over TCP; empty means the 0600 unix socket in the data dir.",
    )
    metrics_address: str = pydantic.Field(
        default="",
        description="HOST:PORT for the Prometheus /metrics endpoint; empty disables it. Loopback only by default.",
    )
    compact_interval: float = pydantic.Field(
        default=300.0,
        ge=0,
        description="Seconds between automatic compactions (K3s: 5 min); 0 disables them.",
    )
    compact_batch_size: int = pydantic.Field(
        default=1000,
        ge=100,
        description="Revisions compacted per short transaction, so writers never wait long.",
    )
    compact_min_retain: int = pydantic.Field(
        default=1000,
        ge=0,
        description="Newest revisions always kept, so watchers a little behind can resume.",
    )
    poll_interval: float = pydantic.Field(
        default=1.0,
        gt=0,
        description="Seconds between fallback polls for writes made by other kine processes.",
    )
    watch_progress_notify_interval: float = pydantic.Field(
        default=5.0,
        gt=0,
        description="Seconds between progress notifications to idle watches (etcd's default).",
    )
    watch_buffer: int = pydantic.Field(
        default=1000,
        ge=1,
        description="Event batches a watch may have queued before it is cancelled as too slow.",
    )
    emulated_etcd_version: str = pydantic.Field(
        default="3.5.13",
        description="Version reported by Maintenance.Status; >= 3.5.13 makes clients use progress requests.",
    )
    nats_url: str = pydantic.Field(
        default="",
        description="NATS URL for change notices between kine processes sharing a database; empty: none.",
    )
