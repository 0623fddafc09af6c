"""The API server's Prometheus metrics, named as kube-apiserver names them.

``apiserver_request_total`` and ``apiserver_request_duration_seconds`` by verb,
resource and code; ``apiserver_longrunning_requests`` for open watches; the
store's latency as ``etcd_request_duration_seconds`` by operation. One registry
of our own (never the process-global one), rendered at ``/metrics``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import prometheus_client

from services.apiserver import app, responses

T = TypeVar("T")

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2, 3, 4, 5, 10, 30, 60)


class ApiMetrics(app.Metrics):
    def __init__(self) -> None:
        self.registry = prometheus_client.CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = prometheus_client.Counter(
            "apiserver_request", "Requests by verb, resource and HTTP code.", ["verb", "resource", "code"], registry=r
        )
        self.duration = prometheus_client.Histogram(
            "apiserver_request_duration_seconds", "Request latency by verb and resource.",
            ["verb", "resource"], buckets=BUCKETS, registry=r,
        )  # fmt: skip
        self.longrunning = prometheus_client.Gauge(
            "apiserver_longrunning_requests", "Open watches by resource.", ["verb", "resource"], registry=r
        )
        self.store = prometheus_client.Histogram(
            "etcd_request_duration_seconds", "Store call latency by operation.", ["operation"],
            buckets=BUCKETS, registry=r,
        )  # fmt: skip
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, *, verb: str, resource: str, code: int, seconds: float) -> None:
        key = (verb, resource, code)
        found = self._children.get(key)
        if found is None:  # labelled children cached: label lookups are the slow part
            found = self._children[key] = (
                self.requests.labels(verb.upper(), resource, str(code)),
                self.duration.labels(verb.upper(), resource),
            )
        found[0].inc()
        found[1].observe(seconds)

    def watch_started(self, resource: str) -> None:
        self.longrunning.labels("WATCH", resource).inc()

    def watch_ended(self, resource: str) -> None:
        self.longrunning.labels("WATCH", resource).dec()

    async def timed(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        started = time.monotonic()
        try:
            return await call()
        finally:
            self.store.labels(operation).observe(time.monotonic() - started)

    def render(self) -> responses.Response:
        return responses.Response(200, prometheus_client.generate_latest(self.registry), prometheus_client.CONTENT_TYPE_LATEST)
