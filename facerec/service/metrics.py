"""Prometheus metrics: request counts and latency per route, detection and embedding batch sizes and times.

Each app has its own registry (tests build several). With several workers
(``$PROMETHEUS_MULTIPROC_DIR`` set by ``facerec serve``), values live in shared
files and ``/metrics`` sums every worker.
"""

from __future__ import annotations

import os
import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        registry = None if self.multiprocess else CollectorRegistry()
        self.registry = registry
        self.requests = Counter(
            "facerec_http_requests", "HTTP requests", ("method", "route", "status"), registry=registry
        )
        self.latency = Histogram(
            "facerec_http_request_seconds",
            "HTTP request latency",
            ("method", "route"),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "facerec_batch_size", "items per model call", ("stage",), buckets=BATCH_BUCKETS, registry=registry
        )
        self.batch_seconds = Histogram(
            "facerec_batch_seconds", "time of one model call", ("stage",), buckets=LATENCY_BUCKETS, registry=registry
        )

    def observer(self, stage: str):
        """``observe(size, seconds)`` for one batching stage (``detect`` or ``embed``)."""
        size, seconds = self.batch_size.labels(stage), self.batch_seconds.labels(stage)

        def observe(count: int, took: float) -> None:
            size.observe(count)
            seconds.observe(took)

        return observe

    def exposition(self) -> tuple[bytes, str]:
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Counts and times every request by its route template (``/v1/identities/{name}``, not the name)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.latency.labels(scope["method"], route).observe(time.perf_counter() - start)
