"""HTTP routes of the event log: `GET /api/v1/events` and the live stream `GET /api/v1/events/stream`."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from rampart.events.log import DEFAULT_LIMIT, MAX_LIMIT, EventLog, parse_log_query
from rampart.events.stream import LiveStream
from rampart.resources.endpoints import Call, RouteSpec, json_response
from rampart.resources.fields import NO_NUL_PATTERN
from rampart.resources.openapi_schema import problem_responses
from rampart.resources.routes import API_PREFIX

EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [
        "id",
        "type",
        "resource",
        "resource_id",
        "actor_id",
        "impersonator_id",
        "occurred_at",
        "data",
        "changes",
    ],
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "type": {"type": "string", "examples": ["tasks.updated"]},
        "resource": {"type": "string"},
        "resource_id": {"type": "string"},
        "actor_id": {"type": ["string", "null"], "format": "uuid"},
        "impersonator_id": {
            "type": ["string", "null"],
            "format": "uuid",
            "description": "The admin who acted as `actor_id` (impersonation), else null",
        },
        "occurred_at": {"type": "string", "format": "date-time"},
        "data": {"type": "object"},
        "changes": {"type": "object"},
        "request_id": {"type": ["string", "null"]},
    },
}


def _query_parameters() -> list[dict[str, Any]]:
    def param(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}

    return [
        param("resource", {"type": "string"}, "Only events of this resource (`tasks`, `webhooks`)."),
        param(
            "resource_id",
            {"type": "string", "minLength": 1, "maxLength": 200, "pattern": NO_NUL_PATTERN},
            "Only events of this object.",
        ),
        param("type", {"type": "string"}, "Only events of this type (`tasks.updated`)."),
        param("actor_id", {"type": "string", "format": "uuid"}, "Only events caused by this user."),
        param(
            "after",
            {"type": "string", "format": "uuid"},
            "An event id: only later events (ids are time-ordered). Use `meta.next_cursor`.",
        ),
        param(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
            "Page size.",
        ),
    ]


def event_routes(log: EventLog, *, stream: LiveStream | None = None) -> list[RouteSpec]:
    """The routes of the log (and of the live stream, when `stream` is given)."""

    async def list_events(call: Call) -> Response:
        query = parse_log_query(call.request.query_params)
        events, more = await log.page(call.user, query, replica=True)
        next_cursor = events[-1]["id"] if more else None
        return json_response({"data": events, "meta": {"next_cursor": next_cursor, "limit": query.limit}})

    routes = [
        RouteSpec(
            "GET",
            f"{API_PREFIX}/events",
            list_events,
            "events.log",
            tags=("events",),
            summary="The audit log: events the caller may see, oldest first",
            openapi={
                "description": (
                    "Every create, update and delete, written in the change's transaction. Admins "
                    "(`events:read_any`) see every event; other callers see the events of objects they "
                    "can see. Page with `after=<meta.next_cursor>`."
                ),
                "parameters": _query_parameters(),
                "responses": {
                    "200": {
                        "description": "A page of events",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["data", "meta"],
                                    "properties": {
                                        "data": {"type": "array", "items": EVENT_SCHEMA},
                                        "meta": {
                                            "type": "object",
                                            "properties": {
                                                "next_cursor": {"type": ["string", "null"]},
                                                "limit": {"type": "integer"},
                                            },
                                        },
                                    },
                                }
                            }
                        },
                    },
                    **problem_responses(400, 401, 429),
                },
            },
        )
    ]
    if stream is not None:
        routes.append(stream.route_spec())
    return routes
