"""Liveness and readiness: `/health/ready` names the dependency that fails."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from rampart.ops.drain import Drain

Check = Callable[[], Awaitable[str | None]]  # None when healthy, else a short public reason
# Named conditions shown beside the checks but never failing readiness (a read replica down: the
# primary serves its reads).
Report = Callable[[], Awaitable[dict[str, str]]]


def health_routes(
    checks: dict[str, Check],
    *,
    timeout: float = 2.0,
    drain: Drain | None = None,
    reports: Sequence[Report] = (),
) -> list[BaseRoute]:
    """`timeout` bounds each check: a hanging dependency must not hang the probe that should report it.

    Once `drain` has seen SIGTERM, readiness fails with `draining` (the other checks still run and show).
    """

    async def live(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    async def run(check: Check) -> str | None:
        try:
            async with asyncio.timeout(timeout):
                return await check()
        except TimeoutError:
            return "timed out"
        except Exception:
            return "unreachable"

    async def report(source: Report) -> dict[str, str]:
        try:
            async with asyncio.timeout(timeout):
                return await source()
        except Exception:
            return {}

    async def ready(request: Request) -> Response:
        outcomes, notes = await asyncio.gather(  # concurrently
            asyncio.gather(*(run(check) for check in checks.values())),
            asyncio.gather(*(report(source) for source in reports)),
        )
        problems = {
            name: problem for name, problem in zip(checks, outcomes, strict=True) if problem is not None
        }
        results = {name: problems.get(name, "ok") for name in checks}
        for note in notes:
            results.update(note)
        if drain is not None and drain.draining:
            results["draining"] = problems["draining"] = "shutting down"
        if problems:
            body = {
                "type": "about:blank",
                "title": "Not ready",
                "status": 503,
                "code": "not_ready",
                "detail": "Failing: " + ", ".join(problems),
                "errors": [{"field": n, "code": "unhealthy", "message": m} for n, m in problems.items()],
                "checks": results,
                "request_id": request.scope.get("rampart.request_id"),
            }
            return Response(orjson.dumps(body), status_code=503, media_type="application/problem+json")
        return Response(orjson.dumps({"status": "ok", "checks": results}), media_type="application/json")

    return [Route("/health/live", live, methods=["GET"]), Route("/health/ready", ready, methods=["GET"])]


def _public(
    summary: str, media: str, description: str, schema: Mapping[str, object], *, problem: bool = False
) -> dict[str, object]:
    responses: dict[str, object] = {
        "200": {"description": description, "content": {media: {"schema": schema}}}
    }
    if problem:
        responses["503"] = {"$ref": "#/components/responses/ServiceUnavailable"}
    return {
        "get": {
            "summary": summary,
            "operationId": summary.lower().replace(" ", "_"),
            "security": [],
            "tags": ["operations"],
            "responses": responses,
        }
    }


_STATUS = {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}}
_READY = {
    "type": "object",
    "required": ["status", "checks"],
    "properties": {
        "status": {"const": "ok"},
        "checks": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "Each dependency (`database`, `migrations`, `redis`, replicas) and its state.",
        },
    },
}
_TEXT = {"type": "string"}

OPERATIONS_PATHS: dict[str, object] = {
    "/health/live": _public("Liveness", "application/json", "The process runs", _STATUS),
    "/health/ready": _public(
        "Readiness",
        "application/json",
        "Every dependency is ready (503 `not_ready` names those that are not, in `errors` and `checks`)",
        _READY,
        problem=True,
    ),
    "/metrics": _public("Metrics", "text/plain", "Prometheus text format", _TEXT),
    "/openapi.json": _public("OpenAPI document", "application/json", "This document", {"type": "object"}),
    "/docs": _public("API docs", "text/html", "Swagger UI, served without a CDN", _TEXT),
}
