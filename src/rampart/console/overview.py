"""The overview: health of the dependencies, the API's request rate, errors and p99 (small SVG charts drawn
on the server), the event backlog and the webhooks that fail."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response

from rampart.access.impersonation import MANAGE_USERS
from rampart.console import PREFIX
from rampart.console.audit import floor_id
from rampart.console.pages import Pages, redirect, require
from rampart.events.dispatcher import BACKLOG_BOUND, backlog
from rampart.ops.metrics_history import Point
from rampart.resources.endpoints import Call, RouteSpec

CHECK_TIMEOUT = 2.0
WIDTH, HEIGHT = 300, 60


@dataclass(frozen=True, slots=True)
class Chart:
    """A small chart: SVG bars, with its summary for people who do not see it."""

    title: str
    summary: str
    bars: list[tuple[float, float, float, float]]  # x, y, width, height
    width: int = WIDTH
    height: int = HEIGHT


def chart(title: str, values: Sequence[float | None], unit: str, *, scale: float = 1.0) -> Chart:
    """Bars for `values` (None: no data), scaled to the largest; the summary says the last and the peak."""
    known = [v for v in values if v is not None]
    peak = max(known, default=0.0)
    bars = []
    if values:
        step = WIDTH / len(values)
        for i, value in enumerate(values):
            if value is None or peak <= 0:
                continue
            height = max(1.0, (value / peak) * (HEIGHT - 2))
            bars.append(
                (round(i * step, 2), round(HEIGHT - height, 2), round(max(step - 1, 1), 2), round(height, 2))
            )
    if not known:
        summary = "No requests measured yet."
    else:
        summary = f"Last {_fmt(known[-1] * scale)} {unit}; peak {_fmt(peak * scale)} {unit}."
    return Chart(title, summary, bars)


def _fmt(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.2f}".rstrip("0").rstrip(".") or "0"


def charts(points: list[Point]) -> list[Chart]:
    return [
        chart("Requests per minute", [p.per_minute for p in points], "per minute"),
        chart("Server errors (5xx)", [p.error_rate * 100 for p in points], "%"),
        chart("p99 latency", [p.p99 for p in points], "ms", scale=1000),
    ]


def overview_routes(pages: Pages) -> list[RouteSpec]:
    parts = pages.parts

    async def run(name: str) -> tuple[str, str]:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                problem = await parts.checks[name]()
        except TimeoutError:
            problem = "timed out"
        except Exception:
            problem = "unreachable"
        return name, problem or "ok"

    async def overview(call: Call) -> Response:
        actor = require(call)
        if not actor.can(MANAGE_USERS):  # acting as a user: their data, not the service's state
            first = next((n for n, m in parts.managers.items() if "list" in m.resource.operations), "users")
            return redirect(f"{PREFIX}/resources/{first}")
        health = dict(await asyncio.gather(*(run(name) for name in parts.checks)))
        since = floor_id(dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
        counts, failing = await asyncio.gather(backlog(parts.db), parts.webhooks.failing(since=since))
        points = parts.history.points()
        latest = points[-1] if points else None
        return await pages.render(
            call,
            "overview.html",
            title="Overview",
            health=health,
            backlog=counts,
            bound=BACKLOG_BOUND,
            lag=parts.dispatcher_lag(),
            failing=failing,
            charts=charts(points),
            latest=latest,
            interval=parts.history.interval,
        )

    def route(method: str, path: str, handler: Any, name: str) -> RouteSpec:
        return RouteSpec(method, path, handler, name, browser=True)

    return [route("GET", PREFIX, overview, "console.overview")]
