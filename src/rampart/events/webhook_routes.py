"""Admin routes of webhooks: CRUD at /api/v1/admin/webhooks, the delivery log and manual redelivery."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from rampart.errors import FieldError, InvalidQuery
from rampart.events.webhooks import MAX_PATTERNS, PERMISSION, Webhooks
from rampart.lib.ids import parse_uuid
from rampart.resources.endpoints import Call, RouteSpec, empty_response, json_response
from rampart.resources.fields import NO_NUL_PATTERN
from rampart.resources.openapi_parts import (
    TIMESTAMP,
    UUID,
    Named,
    data,
    json_body,
    named,
    nullable,
    path_id,
    problems,
    query,
    response,
)
from rampart.resources.openapi_schema import page_meta
from rampart.resources.routes import API_PREFIX

BASE = f"{API_PREFIX}/admin/webhooks"
# An event-type pattern as rampart.lib.bus reads it: dot-separated segments, `*` only as a whole segment.
_SEGMENT = r"(?:\*|[^.*\x00]+)"
EVENT_PATTERN = rf"^{_SEGMENT}(?:\.{_SEGMENT})*$"
_PATTERNS = {
    "type": "array",
    "minItems": 1,
    "maxItems": MAX_PATTERNS,
    "items": {"type": "string", "maxLength": 200, "pattern": EVENT_PATTERN, "examples": ["tasks.*"]},
}
_URL = {"type": "string", "minLength": 1, "maxLength": 2000, "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^\\x00]+$"}
_WEBHOOK_PROPERTIES: dict[str, Any] = {
    "id": UUID,
    "url": _URL,
    "events": _PATTERNS,
    "description": {"type": "string"},
    "active": {"type": "boolean"},
    "created_at": TIMESTAMP,
    "updated_at": TIMESTAMP,
    "version": {"type": "integer", "minimum": 1},
}
WEBHOOK = named(
    "Webhook",
    {"type": "object", "required": list(_WEBHOOK_PROPERTIES), "properties": _WEBHOOK_PROPERTIES},
)
NEW_WEBHOOK = named(
    "NewWebhook",
    {
        "type": "object",
        "description": "A webhook as its creation answers it: with its secret, shown this once.",
        "required": [*_WEBHOOK_PROPERTIES, "secret"],
        "properties": {
            **_WEBHOOK_PROPERTIES,
            "secret": {"type": "string", "description": "Signs deliveries (X-Rampart-Signature)."},
        },
    },
)
_WRITE_PROPERTIES: dict[str, Any] = {
    "url": {**_URL, "description": "http(s); private and loopback addresses are refused."},
    "events": {**_PATTERNS, "description": "Event-type patterns: 'tasks.created', 'tasks.*', '*'."},
    "secret": {
        "type": "string",
        "minLength": 16,
        "maxLength": 200,
        "pattern": NO_NUL_PATTERN,
        "description": "Signs deliveries; generated (and shown once) when omitted.",
    },
    "description": {"type": "string", "maxLength": 500, "pattern": NO_NUL_PATTERN},
    "active": {"type": "boolean"},
}
_ATTEMPT_PROPERTIES: dict[str, Any] = {
    "id": UUID,
    "event_id": UUID,
    "event_type": {"type": "string"},
    "attempted_at": TIMESTAMP,
    "status_code": {"type": ["integer", "null"], "description": "The receiver's status; null if none came."},
    "error": {"type": ["string", "null"]},
    "duration_ms": {"type": "integer"},
    "manual": {"type": "boolean", "description": "Sent by a redelivery request."},
    "delivery_status": nullable(
        named("DeliveryStatus", {"type": "string", "enum": ["pending", "delivered", "dead"]})
    ),
    "delivery_attempts": {"type": ["integer", "null"]},
}
ATTEMPT = named(
    "WebhookAttempt",
    {"type": "object", "required": list(_ATTEMPT_PROPERTIES), "properties": _ATTEMPT_PROPERTIES},
)
_ID = path_id("id", "The webhook's id.")
_PAGE = [
    query("after", UUID, "`meta.next_cursor` of the previous page."),
    query("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}, "The page size."),
]


def _page_of(name: str, item: Named) -> Named:
    return named(
        name,
        {
            "type": "object",
            "required": ["data", "meta"],
            "properties": {"data": {"type": "array", "items": item}, "meta": page_meta()},
        },
    )


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

    write_body = json_body(
        named(
            "WebhookCreate",
            {
                "type": "object",
                "properties": _WRITE_PROPERTIES,
                "additionalProperties": False,
                "required": ["url", "events"],
            },
        )
    )
    patch_body = json_body(
        named(
            "WebhookUpdate",
            {"type": "object", "properties": _WRITE_PROPERTIES, "additionalProperties": False},
        )
    )
    one = response("The webhook", data(WEBHOOK))
    return [
        spec(
            "POST",
            BASE,
            create,
            "webhooks.create",
            "Create a webhook (the answer shows its secret, once)",
            requestBody=write_body,
            responses={
                "201": response(
                    "The webhook, with its secret", data(NEW_WEBHOOK), header_names=("Location",)
                ),
                **problems(422),
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
                "200": response("Webhooks, oldest first", _page_of("WebhookPage", WEBHOOK)),
                **problems(400),
            },
        ),
        spec(
            "GET",
            f"{BASE}/{{id}}",
            get,
            "webhooks.get",
            "Get a webhook",
            parameters=[_ID],
            responses={"200": one, **problems(404)},
        ),
        spec(
            "PATCH",
            f"{BASE}/{{id}}",
            update,
            "webhooks.update",
            "Change a webhook",
            parameters=[_ID],
            requestBody=patch_body,
            responses={"200": one, **problems(404, 422)},
        ),
        spec(
            "DELETE",
            f"{BASE}/{{id}}",
            delete,
            "webhooks.delete",
            "Delete a webhook and its pending deliveries",
            parameters=[_ID],
            responses={"204": response("Deleted"), **problems(404)},
        ),
        spec(
            "GET",
            f"{BASE}/{{id}}/deliveries",
            deliveries,
            "webhooks.deliveries",
            "The delivery log: every attempt, newest first",
            parameters=[_ID, *_PAGE],
            responses={
                "200": response("Attempts, newest first", _page_of("WebhookAttemptPage", ATTEMPT)),
                **problems(400, 404),
            },
        ),
        spec(
            "POST",
            f"{BASE}/{{id}}/deliveries/{{event_id}}/redeliver",
            redeliver,
            "webhooks.redeliver",
            "Send an event to this webhook again",
            parameters=[_ID, path_id("event_id", "The event's id.")],
            responses={
                "202": response(
                    "Queued",
                    data(
                        {"type": "object", "required": ["queued"], "properties": {"queued": {"const": True}}}
                    ),
                ),
                **problems(404),
            },
        ),
    ]
