"""A short history of the API's request metrics, for the console's overview charts.

Prometheus counters only grow; a rate needs two readings. A background task reads the totals of the API
routes every `interval` seconds (from this process's registry, or every worker's with several) and keeps
the last `keep` readings in memory; the points are the differences between neighbours: requests per
minute, the share of 5xx answers, and the 99th percentile latency estimated from the histogram's buckets
(the upper bound of the bucket where 99 % of the interval's requests had been counted).

Nothing here runs per request: one reading costs one walk of the metrics registry (measured in
docs/decisions/0023-console-ui-stack.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("rampart.ops")


@dataclass(frozen=True, slots=True)
class Totals:
    """Cumulative counts of the API routes at one instant."""

    at: float
    requests: float
    errors: float
    bounds: tuple[float, ...]  # the histogram's bucket upper bounds, ascending (the last is +Inf)
    buckets: tuple[float, ...]  # cumulative counts per bound


@dataclass(frozen=True, slots=True)
class Point:
    """One interval: when it ended, requests per minute, the share of 5xx answers, p99 in seconds."""

    at: float
    per_minute: float
    error_rate: float
    p99: float | None


def p99_of(bounds: tuple[float, ...], counts: tuple[float, ...]) -> float | None:
    """The upper bound of the bucket that holds the 99th percentile, from cumulative bucket counts."""
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return None
    for bound, count in zip(bounds, counts, strict=True):
        if count >= 0.99 * total:
            return bound
    return bounds[-1]


class MetricsHistory:
    """Readings of `read()` every `interval` seconds, the last `keep` of them (an hour by default)."""

    def __init__(self, read: Callable[[], Totals], *, interval: float = 10.0, keep: int = 360) -> None:
        self._read = read
        self.interval = interval
        self._samples: deque[Totals] = deque(maxlen=keep)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    def sample(self) -> None:
        try:
            self._samples.append(self._read())
        except Exception:  # a chart is never worth a failing worker
            log.warning("reading the metrics for the console failed", exc_info=True)

    def points(self) -> list[Point]:
        """The intervals between the readings kept, oldest first."""
        out = []
        samples = list(self._samples)
        for before, after in itertools.pairwise(samples):
            seconds = after.at - before.at
            requests = after.requests - before.requests
            if seconds <= 0 or requests < 0:  # a worker restarted: its counters began again
                continue
            errors = max(0.0, after.errors - before.errors)
            p99 = None
            if after.bounds == before.bounds:  # else the first request of the histogram came between
                counts = tuple(a - b for a, b in zip(after.buckets, before.buckets, strict=True))
                p99 = p99_of(after.bounds, counts)
            elif not before.bounds:
                p99 = p99_of(after.bounds, after.buckets)
            out.append(
                Point(
                    at=after.at,
                    per_minute=requests * 60 / seconds,
                    error_rate=errors / requests if requests else 0.0,
                    p99=p99,
                )
            )
        return out

    def latest(self) -> Totals | None:
        return self._samples[-1] if self._samples else None


def now() -> float:
    return time.time()
