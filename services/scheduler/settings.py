"""The scheduler's configuration group, built once by the supervisor and passed down.

Field names follow kube-scheduler's flags and configuration (``--leader-elect*``,
``percentageOfNodesToScore``, ``podInitialBackoffSeconds``/``podMaxBackoffSeconds``), and so do the
defaults: the Lease ``kube-system/kube-scheduler`` with 15 s / 10 s / 2 s, pod backoff 1 s to 10 s,
adaptive node scoring, unschedulable pods retried after 5 minutes at the latest.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pydantic

from services.client import leader


class SchedulerSettings(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    kubeconfig: Path | None = pydantic.Field(
        default=None,
        description="The scheduler's kubeconfig (<data-dir>/server/cred/scheduler.kubeconfig, user "
        "system:kube-scheduler). Unused when the caller hands in an API client (edge profile).",
    )
    scheduler_name: str = pydantic.Field(
        default="default-scheduler",
        min_length=1,
        description="Pods whose spec.schedulerName is this are ours.",
    )
    leader_elect: bool = pydantic.Field(
        default=True,
        description="--leader-elect: schedule only while holding the Lease below, so that several servers "
        "can run a scheduler and exactly one acts.",
    )
    leader_elect_resource_name: str = pydantic.Field(
        default="kube-scheduler", description="--leader-elect-resource-name: the Lease's name."
    )
    leader_elect_resource_namespace: str = pydantic.Field(
        default="kube-system", description="--leader-elect-resource-namespace: the Lease's namespace."
    )
    leader_elect_lease_duration: float = pydantic.Field(
        default=15.0, gt=0, description="--leader-elect-lease-duration, seconds an unrenewed lease lasts."
    )
    leader_elect_renew_deadline: float = pydantic.Field(
        default=10.0, gt=0, description="--leader-elect-renew-deadline, seconds the leader tries to renew."
    )
    leader_elect_retry_period: float = pydantic.Field(
        default=2.0, gt=0, description="--leader-elect-retry-period, seconds between attempts."
    )
    identity: str = pydantic.Field(
        default="", description="This candidate's name in the Lease; empty: <hostname>_<uuid>."
    )
    health_address: str = pydantic.Field(
        default="127.0.0.1:0",
        description="host:port of /healthz, /readyz and /metrics; loopback only (plain HTTP); port 0 picks one.",
    )
    percentage_of_nodes_to_score: int = pydantic.Field(
        default=0,
        ge=0,
        le=100,
        description="percentageOfNodesToScore: stop filtering once this share of nodes is feasible; 0 is "
        "upstream's adaptive rule (50% minus 1% per 125 nodes, at least 5% and 100 nodes). Pods that only "
        "request resources are placed through an index over every node instead (as with 100%, but cheaper).",
    )
    pod_initial_backoff: float = pydantic.Field(
        default=1.0, gt=0, description="Seconds before a pod that failed is retried; doubles per failure."
    )
    pod_max_backoff: float = pydantic.Field(
        default=10.0, gt=0, description="Cap of the doubling backoff, seconds."
    )
    max_unschedulable: float = pydantic.Field(
        default=300.0,
        gt=0,
        description="Seconds an unschedulable pod waits for a relevant change before a retry anyway.",
    )
    parallel_binds: int = pydantic.Field(
        default=4,
        ge=1,
        le=1024,
        description="Binding requests (and failure reports) in flight at once; scheduling goes on meanwhile "
        "and waits only when this many are outstanding. Four hide a local API server's latency; more cost "
        "the HTTP client more CPU per request than they gain (measured in bench/scheduler_bench.py).",
    )
    scheduled_events_per_second: float = pydantic.Field(
        default=50.0,
        ge=0,
        description="Budget for the Normal 'Scheduled' event kube-scheduler writes per bound pod: at most this "
        "many per second (bursts of twice as many), the rest skipped, so that a burst of thousands of pods does "
        "not double the API server's load (kube-scheduler's own client is limited to 50 requests/s by default). "
        "0 writes none. FailedScheduling and Preempted events are never skipped.",
    )
    drain_timeout: float = pydantic.Field(
        default=5.0, ge=0, description="Seconds stop() waits for bindings in flight before cancelling them."
    )

    @pydantic.field_validator("health_address")
    @classmethod
    def _loopback(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"expected host:port, got {value!r}")
        host = host.strip("[]")
        if host != "localhost":
            try:
                loopback = ipaddress.ip_address(host).is_loopback
            except ValueError:
                loopback = False
            if not loopback:
                raise ValueError(
                    f"the health endpoint serves plain HTTP and must stay on loopback, not {host!r}"
                )
        return value

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> SchedulerSettings:
        if self.pod_max_backoff < self.pod_initial_backoff:
            raise ValueError("pod_max_backoff must be at least pod_initial_backoff")
        durations = (
            self.leader_elect_lease_duration,
            self.leader_elect_renew_deadline,
            self.leader_elect_retry_period,
        )
        if self.leader_elect and not durations[0] > durations[1] > leader.JITTER * durations[2]:
            raise ValueError(
                f"leader election needs lease duration > renew deadline > {leader.JITTER} * retry period"
            )
        return self

    @property
    def health_host(self) -> str:
        return self.health_address.rpartition(":")[0].strip("[]")

    @property
    def health_port(self) -> int:
        return int(self.health_address.rpartition(":")[2])
