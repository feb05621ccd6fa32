"""Prometheus metrics: requests by route template (never raw ids), pool, events, process.

With several worker processes (`rampart serve --workers N`), every worker writes its values to files in
one shared folder (prometheus-client multiprocess mode, PROMETHEUS_MULTIPROC_DIR, set by `serve`), and
whichever worker answers `/metrics` adds them all up: counts are the whole server's, not one worker's.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.process_collector import ProcessCollector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Scope

from rampart.lib.pids import alive
from rampart.ops.metrics_history import Totals

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_FIXED = frozenset({"/health/live", "/health/ready", "/metrics", "/openapi.json", "/docs"})
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_POOL_STATES = ("in_use", "idle", "waiting")


class _SampledGauge(Gauge):
    """A gauge set from its function when sampled (a multiprocess gauge cannot call it at scrape time)."""

    _function: Callable[[], float] | None = None

    def set_function(self, f: Callable[[], float]) -> None:
        self._function = f

    def sample(self) -> None:
        if self._function is not None:
            self.set(self._function())


_PROCESS_SERIES = {  # what ProcessCollector reads from /proc, as per-worker gauges
    "process_resident_memory_bytes": "Resident memory of the worker process in bytes",
    "process_virtual_memory_bytes": "Virtual memory of the worker process in bytes",
    "process_cpu_seconds_total": "CPU time (user and system) the worker process used, in seconds",
    "process_open_fds": "Open file descriptors of the worker process",
}


class _WorkerSampler:
    """Copies what only a live process can read (its pool, memory, CPU) into the shared files each second,
    for the worker answering a scrape: the process series by pid (a dead worker's go, `_forget_dead`)."""

    def __init__(self, pool_stats: Callable[[], dict[str, int]], also: list[Callable[[], None]]) -> None:
        self._pool_stats = pool_stats
        self._also = also  # more to copy each second (function gauges, cache counts)
        self._pool = Gauge(
            "rampart_db_pool_connections",
            "Database pool connections (sum over the workers)",
            ["state"],
            registry=None,
            multiprocess_mode="livesum",
        )
        self._process = ProcessCollector(registry=None)
        self._series = {
            name: Gauge(
                "rampart_" + name.removesuffix("_total"), help, registry=None, multiprocess_mode="liveall"
            )
            for name, help in _PROCESS_SERIES.items()
        }
        self._lock = threading.Lock()  # the sampling thread and a scrape may sample at once

    def sample(self) -> None:
        with self._lock:
            stats = self._pool_stats()
            for state in _POOL_STATES:
                self._pool.labels(state).set(stats.get(state, 0))
            for family in self._process.collect():
                for item in family.samples:
                    gauge = self._series.get(item.name)
                    if gauge is not None:
                        gauge.set(item.value)
            for copy in self._also:
                copy()

    def start(self, interval: float = 1.0) -> None:
        # A thread, not a task: it samples while the event loop is busy, and needs no lifespan hook.
        def run() -> None:
            while True:
                time.sleep(interval)
                with contextlib.suppress(Exception):  # a failed sample is retried next second
                    self.sample()

        self.sample()
        threading.Thread(target=run, name="rampart-metrics", daemon=True).start()


_LIVE_FILE = re.compile(r"^gauge_live\w+_(\d+)\.db$")


def _stat(stats: Callable[[], dict[str, int]], name: str) -> float:
    return stats().get(name, 0)


def _forget_dead(directory: str) -> None:
    """Drop the live gauges of workers that exited (crashed or recycled) so they are not summed."""
    for pid in {int(m.group(1)) for f in os.listdir(directory) if (m := _LIVE_FILE.match(f))}:
        if not alive(pid):
            multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


_Target = tuple[Counter, tuple[str, ...]]  # a counter and the label values of the child to increment


class Metrics:
    """`multiprocess_dir`: the folder shared by the workers (PROMETHEUS_MULTIPROC_DIR), None for one process.

    prometheus-client picks file-backed values when it is imported with PROMETHEUS_MULTIPROC_DIR set, so the
    folder passed here must be that variable's value.
    """

    def __init__(
        self, *, pool_stats: Callable[[], dict[str, int]], multiprocess_dir: str | None = None
    ) -> None:
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry()
        if multiprocess_dir is None:  # read at scrape time; with several workers, by `_WorkerSampler`
            ProcessCollector(registry=self.registry)
            pool = Gauge(
                "rampart_db_pool_connections", "Database pool connections", ["state"], registry=self.registry
            )
            for state in _POOL_STATES:
                pool.labels(state).set_function(functools.partial(_stat, pool_stats, state))
        counter = functools.partial(Counter, registry=self.registry)
        self.requests = counter("rampart_http_requests_total", "HTTP requests", ["method", "route", "status"])
        self.latency = Histogram(
            "rampart_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.events = counter("rampart_events_total", "Events by outcome", ["type", "outcome"])
        self.dispatcher_lag = _SampledGauge(
            "rampart_events_dispatcher_lag_seconds",
            "Age of the oldest event or delivery waiting for the dispatcher",
            registry=self.registry,
            multiprocess_mode="livemax",  # every worker's dispatcher sees the same queue
        )
        self.rate_limited = counter(
            "rampart_rate_limit_rejections_total", "Requests refused by the rate limiter", ["route_class"]
        )
        self.cache = counter("rampart_cache_requests_total", "Cache lookups", ["cache", "result"])
        self.miss_reads = counter(
            "rampart_cache_miss_reads_total",
            "Row cache misses read from the database, by statement: batched with others of the same "
            "loop step, or alone",
            ["sent"],
        )
        self.miss_batches = counter(
            "rampart_cache_miss_batches_total", "Statements that read several row cache misses at once"
        )
        self.reads = counter(
            "rampart_db_reads_total",
            "Reads outside transactions, by where they ran (with read replicas only)",
            ["target"],
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        # Counts kept as plain integers elsewhere, copied into counters: (counters with their label values,
        # counts, seen). A labelled child is made at its first increment, as if counted directly.
        self._copied: list[tuple[tuple[_Target, ...], Callable[[], tuple[int, ...]], list[int]]] = []
        # Brought up to date at each scrape; with several workers, each second by the sampler.
        self._refresh = [self.dispatcher_lag.sample, self._copy_counts]
        self._sampler: _WorkerSampler | None = None
        if multiprocess_dir is not None:
            self._sampler = _WorkerSampler(pool_stats, self._refresh)
            self._sampler.start()

    def track_cache(self, name: str, counts: Callable[[], tuple[int, int]]) -> None:
        """Export a cache's (hits, misses), which it keeps as plain integers: no metric call per lookup."""
        self._copy(((self.cache, (name, "hit")), (self.cache, (name, "miss"))), counts)

    def track_reads(self, counts: Callable[[], Mapping[str, int]]) -> None:
        """Export reads by target (`primary`, `replica`), kept as plain integers like the cache counts."""
        targets = ("primary", "replica")
        self._copy(tuple((self.reads, (t,)) for t in targets), lambda: tuple(counts()[t] for t in targets))

    def track_batches(self, counts: Callable[[], tuple[int, int, int]]) -> None:
        """Export the miss batches (statements, reads batched, reads alone), plain integers too."""
        self._copy(
            ((self.miss_batches, ()), (self.miss_reads, ("batched",)), (self.miss_reads, ("alone",))), counts
        )

    def _copy(self, counters: tuple[_Target, ...], counts: Callable[[], tuple[int, ...]]) -> None:
        self._copied.append((counters, counts, [0] * len(counters)))

    def _copy_counts(self) -> None:
        for counters, counts, seen in self._copied:
            for i, ((counter, labels), value) in enumerate(zip(counters, counts(), strict=True)):
                if value > seen[i]:
                    (counter.labels(*labels) if labels else counter).inc(value - seen[i])
                    seen[i] = value

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

    def _collected(self) -> CollectorRegistry:
        """This process's registry, or one that adds up every worker's files."""
        if self.multiprocess_dir is None:
            return self.registry
        _forget_dead(self.multiprocess_dir)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return registry

    def exposition(self) -> bytes:
        """The Prometheus text page: this process's metrics, or every worker's added up."""
        if self._sampler is not None:
            self._sampler.sample()  # the answering worker's own values are current
        else:
            for refresh in self._refresh:
                refresh()
        return generate_latest(self._collected())

    def api_totals(self) -> Totals:
        """Cumulative requests, 5xx answers and latency buckets of the `/api/` routes (every worker's with
        several): what `rampart.ops.metrics_history` samples for the console."""
        registry = self._collected()
        requests = errors = 0.0
        buckets: dict[float, float] = {}
        for metric in registry.collect():
            if metric.name == "rampart_http_requests":
                for sample in metric.samples:
                    if sample.name.endswith("_total") and sample.labels.get("route", "").startswith("/api/"):
                        requests += sample.value
                        if sample.labels.get("status", "").startswith("5"):
                            errors += sample.value
            elif metric.name == "rampart_http_request_duration_seconds":
                for sample in metric.samples:
                    if sample.name.endswith("_bucket") and sample.labels.get("route", "").startswith("/api/"):
                        bound = float(sample.labels["le"])
                        buckets[bound] = buckets.get(bound, 0.0) + sample.value
        bounds = tuple(sorted(buckets))
        return Totals(time.time(), requests, errors, bounds, tuple(buckets[b] for b in bounds))

    def routes(self) -> list[BaseRoute]:
        async def metrics(request: Request) -> Response:
            return Response(self.exposition(), media_type=CONTENT_TYPE)

        return [Route("/metrics", metrics, methods=["GET"])]
