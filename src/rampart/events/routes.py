"""HTTP routes of the event log: `GET /api/v1/events` and the live stream `GET /api/v1/events/stream`."""

from __future__ import annotations

from starlette.responses import Response

from rampart.events.log import DEFAULT_LIMIT, MAX_LIMIT, EventLog, parse_log_query
from rampart.events.openapi import EVENT, log_parameters
from rampart.events.stream import LiveStream
from rampart.resources.endpoints import Call, RouteSpec, json_response
from rampart.resources.openapi_parts import named, problems, query, response
from rampart.resources.openapi_schema import page_schema
from rampart.resources.routes import API_PREFIX


def event_routes(log: EventLog, *, stream: LiveStream | None = None) -> list[RouteSpec]:
    """The routes of the log (and of the live stream, when `stream` is given)."""

    async def list_events(call: Call) -> Response:
        query_ = parse_log_query(call.request.query_params, sources=log.sources)
        events, more = await log.page(call.user, query_, replica=True)
        next_cursor = events[-1]["id"] if more else None
        return json_response({"data": events, "meta": {"next_cursor": next_cursor, "limit": query_.limit}})

    page = named("EventPage", page_schema(EVENT))
    routes = [
        RouteSpec(
            "GET",
            f"{API_PREFIX}/events",
            list_events,
            "events.log",
            tags=("events",),
            summary="List the events the caller may see, oldest first",
            openapi={
                "description": (
                    "Every create, update and delete, written in the change's transaction. Admins "
                    "(`events:read_any`) see every event; other callers see the events of objects they "
                    "can see. Page with `after=<meta.next_cursor>`."
                ),
                "parameters": [
                    *log_parameters(log.sources),
                    query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
                        "The page size.",
                    ),
                ],
                "responses": {"200": response("A page of events", page), **problems(400)},
            },
        )
    ]
    if stream is not None:
        routes.append(stream.route_spec())
    return routes
