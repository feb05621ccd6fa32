"""Admin routes of webhooks: CRUD at /api/v1/admin/webhooks, the delivery log and manual redelivery."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from rampart.errors import FieldError, InvalidQuery
from rampart.events.webhooks import PERMISSION, Webhooks
from rampart.lib.ids import parse_uuid
from rampart.resources.endpoints import Call, RouteSpec, empty_response, json_response
from rampart.resources.openapi_schema import problem_responses
from rampart.resources.routes import API_PREFIX

BASE = f"{API_PREFIX}/admin/webhooks"
_PATTERNS = {"type": "array", "minItems": 1, "maxItems": 50, "items": {"type": "string"}}
WEBHOOK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "url", "events", "description", "active", "created_at", "updated_at", "version"],
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "url": {"type": "string"},
        "events": _PATTERNS,
        "description": {"type": "string"},
        "active": {"type": "boolean"},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
        "version": {"type": "integer"},
        "secret": {"type": "string", "description": "Only in the answer to the create request."},
    },
}
_WRITE_PROPERTIES: dict[str, Any] = {
    "url": {"type": "string", "description": "http(s); private and loopback addresses are refused."},
    "events": {**_PATTERNS, "description": "Event-type patterns: 'tasks.created', 'tasks.*', '*'."},
    "secret": {
        "type": "string",
        "minLength": 16,
        "maxLength": 200,
        "description": "Signs deliveries; generated (and shown once) when omitted.",
    },
    "description": {"type": "string", "maxLength": 500},
    "active": {"type": "boolean"},
}
ATTEMPT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "event_id": {"type": "string"},
        "event_type": {"type": "string"},
        "attempted_at": {"type": "string", "format": "date-time"},
        "status_code": {"type": ["integer", "null"]},
        "error": {"type": ["string", "null"]},
        "duration_ms": {"type": "integer"},
        "manual": {"type": "boolean"},
        "delivery_status": {"type": ["string", "null"], "enum": ["pending", "delivered", "dead", None]},
        "delivery_attempts": {"type": ["integer", "null"]},
    },
}
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_PAGE = [
    {"name": "after", "in": "query", "required": False, "schema": {"type": "string"}},
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
    },
]


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _one(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": ["data"], "properties": {"data": schema}}


def _many(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["data", "meta"],
        "properties": {
            "data": {"type": "array", "items": schema},
            "meta": {
                "type": "object",
                "properties": {"next_cursor": {"type": ["string", "null"]}, "limit": {"type": "integer"}},
            },
        },
    }


def _page_query(call: Call) -> tuple[Any, int]:
    params = call.request.query_params
    for key in params:
        if key not in ("after", "limit") or len(params.getlist(key)) != 1:
            message = f"{key!r} is not a parameter here, or is repeated."
            raise InvalidQuery(message, errors=[FieldError(key, "unknown_parameter", message)])
    after = None
    if "after" in params:
        after = parse_uuid(params["after"])
        if after is None:
            raise InvalidQuery("after must be an id.", errors=[FieldError("after", "invalid", "Not an id.")])
    limit = 20
    if "limit" in params:
        raw = params["limit"]
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 100:
            message = "limit must be an integer from 1 to 100."
            raise InvalidQuery(message, errors=[FieldError("limit", "out_of_range", message)])
        limit = int(raw)
    return after, limit


def webhook_routes(webhooks: Webhooks) -> list[RouteSpec]:
    async def create(call: Call) -> Response:
        webhook = await webhooks.create(call.user, call.json(), request_id=call.request_id)
        return json_response({"data": webhook}, status=201, headers={"Location": f"{BASE}/{webhook['id']}"})

    async def list_all(call: Call) -> Response:
        after, limit = _page_query(call)
        items, more = await webhooks.page(after=after, limit=limit)
        cursor = items[-1]["id"] if more else None
        return json_response({"data": items, "meta": {"next_cursor": cursor, "limit": limit}})

    async def get(call: Call) -> Response:
        return json_response({"data": await webhooks.get(parse_uuid(call.path["id"]))})

    async def update(call: Call) -> Response:
        webhook_id = parse_uuid(call.path["id"])
        webhook = await webhooks.update(call.user, webhook_id, call.json(), request_id=call.request_id)
        return json_response({"data": webhook})

    async def delete(call: Call) -> Response:
        await webhooks.delete(call.user, parse_uuid(call.path["id"]), request_id=call.request_id)
        return empty_response()

    async def deliveries(call: Call) -> Response:
        after, limit = _page_query(call)
        items, more = await webhooks.attempts(parse_uuid(call.path["id"]), after=after, limit=limit)
        cursor = items[-1]["id"] if more else None
        return json_response({"data": items, "meta": {"next_cursor": cursor, "limit": limit}})

    async def redeliver(call: Call) -> Response:
        await webhooks.redeliver(parse_uuid(call.path["id"]), parse_uuid(call.path["event_id"]))
        return json_response({"data": {"queued": True}}, status=202)

    def spec(method: str, path: str, handler: Any, name: str, summary: str, **openapi: Any) -> RouteSpec:
        return RouteSpec(
            method,
            path,
            handler,
            name,
            permission=PERMISSION,
            summary=summary,
            tags=("webhooks",),
            openapi=openapi,
        )

    write_body = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": _WRITE_PROPERTIES,
                    "additionalProperties": False,
                    "required": ["url", "events"],
                }
            }
        },
    }
    patch_body = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "object", "properties": _WRITE_PROPERTIES, "additionalProperties": False}
            }
        },
    }
    one = _json(_one(WEBHOOK_SCHEMA), "The webhook")
    return [
        spec(
            "POST",
            BASE,
            create,
            "webhooks.create",
            "Create a webhook (the answer shows its secret, once)",
            requestBody=write_body,
            responses={
                "201": {
                    **one,
                    "headers": {"Location": {"schema": {"type": "string"}}},
                },
                **problem_responses(400, 401, 403, 415, 422, 429),
            },
        ),
        spec(
            "GET",
            BASE,
            list_all,
            "webhooks.index",
            "List webhooks",
            parameters=_PAGE,
            responses={
                "200": _json(_many(WEBHOOK_SCHEMA), "Webhooks"),
                **problem_responses(400, 401, 403, 429),
            },
        ),
        spec(
            "GET",
            f"{BASE}/{{id}}",
            get,
            "webhooks.get",
            "A webhook",
            parameters=[_ID],
            responses={"200": one, **problem_responses(401, 403, 404, 429)},
        ),
        spec(
            "PATCH",
            f"{BASE}/{{id}}",
            update,
            "webhooks.update",
            "Change a webhook",
            parameters=[_ID],
            requestBody=patch_body,
            responses={"200": one, **problem_responses(400, 401, 403, 404, 415, 422, 429)},
        ),
        spec(
            "DELETE",
            f"{BASE}/{{id}}",
            delete,
            "webhooks.delete",
            "Delete a webhook and its pending deliveries",
            parameters=[_ID],
            responses={"204": {"description": "Deleted"}, **problem_responses(401, 403, 404, 429)},
        ),
        spec(
            "GET",
            f"{BASE}/{{id}}/deliveries",
            deliveries,
            "webhooks.deliveries",
            "The delivery log: every attempt, newest first",
            parameters=[_ID, *_PAGE],
            responses={
                "200": _json(_many(ATTEMPT_SCHEMA), "Attempts"),
                **problem_responses(400, 401, 403, 404, 429),
            },
        ),
        spec(
            "POST",
            f"{BASE}/{{id}}/deliveries/{{event_id}}/redeliver",
            redeliver,
            "webhooks.redeliver",
            "Send an event to this webhook again",
            parameters=[
                _ID,
                {"name": "event_id", "in": "path", "required": True, "schema": {"type": "string"}},
            ],
            responses={
                "202": _json(
                    _one({"type": "object", "properties": {"queued": {"type": "boolean"}}}), "Queued"
                ),
                **problem_responses(401, 403, 404, 429),
            },
        ),
    ]
