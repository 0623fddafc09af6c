"""The scheduler's Prometheus metrics, in a registry of its own (several schedulers can share a
process in tests and in the edge profile). Names follow kube-scheduler's."""

from __future__ import annotations

import prometheus_client

# Latency buckets from 1 ms to about 16 s, like kube-scheduler's exponential buckets.
BUCKETS = tuple(0.001 * 2**i for i in range(15))


class SchedulerMetrics:
    def __init__(self) -> None:
        self.registry = prometheus_client.CollectorRegistry(auto_describe=True)
        self.attempts = prometheus_client.Counter(
            "scheduler_schedule_attempts",
            "Scheduling attempts by result: scheduled, unschedulable or error.",
            ["result", "profile"],
            registry=self.registry,
        )
        self.attempt_duration = prometheus_client.Histogram(
            "scheduler_scheduling_attempt_duration_seconds",
            "One scheduling attempt: filtering, scoring and (if it fits) the binding, in seconds.",
            ["result", "profile"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.e2e = prometheus_client.Histogram(
            "scheduler_e2e_scheduling_duration_seconds",
            "From the pod entering the queue to its binding being written, in seconds.",
            ["profile"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.pending = prometheus_client.Gauge(
            "scheduler_pending_pods",
            "Pods waiting to be scheduled, by queue: active, backoff, unschedulable, gated.",
            ["queue"],
            registry=self.registry,
        )
        self.preemption_attempts = prometheus_client.Counter(
            "scheduler_preemption_attempts", "Preemptions tried.", registry=self.registry
        )
        self.preemption_victims = prometheus_client.Histogram(
            "scheduler_preemption_victims",
            "Pods evicted per successful preemption.",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        self.leader = prometheus_client.Gauge(
            "leader_election_master_status",
            "1 while this scheduler holds the lease.",
            ["name"],
            registry=self.registry,
        )

    def render(self) -> tuple[bytes, str]:
        return prometheus_client.generate_latest(self.registry), prometheus_client.CONTENT_TYPE_LATEST
