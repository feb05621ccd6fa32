"""Prometheus metrics of one process: requests by route template (never raw ids), pool, events.

Multi-process aggregation (prometheus-client multiprocess mode) is the operations issue's part.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Scope

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_FIXED = frozenset({"/health/live", "/health/ready", "/metrics", "/openapi.json", "/docs"})
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _PoolCollector:
    def __init__(self, stats: Callable[[], dict[str, int]]) -> None:
        self._stats = stats

    def collect(self) -> Iterable[Metric]:
        stats = self._stats()
        gauge = GaugeMetricFamily(
            "rampart_db_pool_connections", "Database pool connections", labels=["state"]
        )
        for state in ("in_use", "idle", "waiting"):
            gauge.add_metric([state], stats.get(state, 0))
        yield gauge


class Metrics:
    def __init__(self, *, pool_stats: Callable[[], dict[str, int]]) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.registry.register(_PoolCollector(pool_stats))
        self.requests = Counter(
            "rampart_http_requests_total",
            "HTTP requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "rampart_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.events = Counter(
            "rampart_events_total", "Events by outcome", ["type", "outcome"], registry=self.registry
        )
        self.dispatcher_lag = Gauge(
            "rampart_events_dispatcher_lag_seconds",
            "Age of the oldest event or delivery waiting for the dispatcher",
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "rampart_rate_limit_rejections_total",
            "Requests refused by the rate limiter",
            ["route_class"],
            registry=self.registry,
        )
        self.cache = Counter(
            "rampart_cache_requests_total", "Cache lookups", ["cache", "result"], registry=self.registry
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, scope: Scope, status: int, duration: float) -> None:
        # The router records the template of the route it matched ("/api/v1/projects" has no "{" either);
        # any other path is labelled by a fixed name, so clients cannot grow the label set.
        route = scope.get("rampart.route")
        if route is None:
            path = scope["path"]
            route = path if path in _FIXED else "unmatched"
            if path.startswith("/docs/assets/"):
                route = "/docs/assets/{name}"
        method = scope["method"]
        if method not in _METHODS:
            method = "OTHER"  # a client-chosen method never becomes a new label value
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:  # labels() costs a lock and a tuple build per call: resolve each set once
            children = (self.requests.labels(method, route, str(status)), self.latency.labels(method, route))
            self._children[key] = children
        children[0].inc()
        children[1].observe(duration)
        if status == 429:
            self.rate_limited.labels("auth" if "/auth/" in route else "api").inc()

    def routes(self) -> list[BaseRoute]:
        async def metrics(request: Request) -> Response:
            return Response(generate_latest(self.registry), media_type=CONTENT_TYPE)

        return [Route("/metrics", metrics, methods=["GET"])]
