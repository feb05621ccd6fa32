"""Timing one call at a time, for the small cost measurements (session_cache.py, replica_overhead.py)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def timed(rounds: int, op: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    """Median and 99th percentile of `op`, in microseconds, after a warm-up."""
    for _ in range(min(200, rounds)):
        await op()
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        await op()
        samples.append((time.perf_counter() - started) * 1e6)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def line(name: str, figures: tuple[float, float]) -> None:
    """A Markdown table row: name, median, p99."""
    print(f"| {name} | {figures[0]:.0f} | {figures[1]:.0f} |")
