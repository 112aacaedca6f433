"""Prometheus metrics of one server: requests by route and status, latency histograms, collection size,
and with batching (``vestis serve --batch``) the encoder runs and the uploads they embedded.

Each app has its own registry (several apps can live in one process, as in the tests). Every
label takes few values whatever clients send, so no request can add series without bound: the
method is a standard one or ``other``, the route its *template* (``/items/{item_id}``, never the
raw path) or ``unmatched``, the status a standard HTTP status or its class (``5xx``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from http import HTTPStatus

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vestis.encoders.batching import BatchStats

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_STATUSES = frozenset(s.value for s in HTTPStatus)


def method_label(method: str) -> str:
    """A request method as a metrics label: a standard method, else ``other``."""
    return method if method in METHODS else "other"


def status_label(status: int) -> str:
    """A response status as a metrics label: a standard status code, else its class (``5xx``)."""
    return str(status) if status in _STATUSES else f"{min(max(status // 100, 1), 5)}xx"


class _BatchCollector(Collector):
    """Encoder runs of batched uploads and the uploads they embedded (their ratio: the mean batch)."""

    def __init__(self, stats: Callable[[], BatchStats | None]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[CounterMetricFamily]:
        stats = self.stats()
        if stats is not None:
            yield CounterMetricFamily("vestis_encoder_batches", "Encoder runs of batched uploads.", value=stats.batches)
            yield CounterMetricFamily("vestis_encoder_batched_images", "Uploads embedded by those runs.",
                                      value=stats.items)


class Metrics:
    def __init__(self, item_count: Callable[[], int], batch_stats: Callable[[], BatchStats | None]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("vestis_http_requests", "HTTP requests answered.", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("vestis_http_request_duration_seconds", "Time to answer an HTTP request.",
                                 ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.in_flight = Gauge("vestis_http_requests_in_flight", "HTTP requests being answered.",
                               registry=self.registry)
        self.items = Gauge("vestis_collection_items", "Items in the collection.", registry=self.registry)
        self.items.set_function(item_count)
        self.registry.register(_BatchCollector(batch_stats))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts and times every HTTP request (an exception counts as status 500)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_flight.dec()
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = method_label(scope["method"])
            self.metrics.requests.labels(method, route, status_label(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)
