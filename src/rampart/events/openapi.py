"""The OpenAPI description of events, shared by the log's route and the live stream's."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rampart.resources.fields import NO_NUL_PATTERN
from rampart.resources.openapi_parts import UUID, named, query

_NAME = "[a-z][a-z0-9_]{0,62}"
EVENT = named(
    "Event",
    {
        "type": "object",
        "description": "A create, update or delete (or another recorded action), written in the change's "
        "own transaction.",
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
            "request_id",
        ],
        "properties": {
            "id": {**UUID, "description": "Time-ordered: later events have greater ids."},
            "type": {"type": "string", "examples": ["tasks.updated"], "description": "`<resource>.<action>`"},
            "resource": {"type": "string", "examples": ["tasks"]},
            "resource_id": {"type": "string", "description": "The id of the object it is about."},
            "actor_id": {"type": ["string", "null"], "format": "uuid", "description": "Who did it."},
            "impersonator_id": {
                "type": ["string", "null"],
                "format": "uuid",
                "description": "The admin who acted as `actor_id` (impersonation), else null.",
            },
            "occurred_at": {"type": "string", "format": "date-time"},
            "data": {"type": "object", "description": "The object after the change (before a delete)."},
            "changes": {"type": "object", "description": "Each changed field: `[before, after]`."},
            "request_id": {"type": ["string", "null"], "description": "The request that made the change."},
        },
    },
)


def log_parameters(sources: Sequence[str]) -> list[dict[str, Any]]:
    """The filters of the log, shared by the live stream."""
    return [
        query(
            "resource",
            named("EventResource", {"type": "string", "enum": list(sources)}),
            "Only events of this resource.",
        ),
        query(
            "resource_id",
            {"type": "string", "minLength": 1, "maxLength": 200, "pattern": NO_NUL_PATTERN},
            "Only events of this object.",
        ),
        query(
            "type",
            {"type": "string", "pattern": f"^{_NAME}\\.{_NAME}$", "examples": ["tasks.updated"]},
            "Only events of this type.",
        ),
        query("actor_id", UUID, "Only events caused by this user."),
        query(
            "after",
            UUID,
            "An event id: only later events (ids are time-ordered). Send `meta.next_cursor` here, with the "
            "same filters, for the next page.",
        ),
    ]


# One message of the live stream as an SSE parser gives it (`id:` and `data:` lines; heartbeats are
# comments, which parsers drop). OpenAPI 3.1 has no `itemSchema` (3.2 does): the schema of the
# text/event-stream content is that of each message, as schemathesis reads it.
STREAM_MESSAGE: dict[str, Any] = {
    "type": "object",
    "required": ["id", "data"],
    "properties": {
        "id": {**UUID, "description": "The event's id: send it as Last-Event-ID to resume after it."},
        "event": {"type": "string", "enum": ["message"]},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": EVENT,
            "description": "The `Event`, as JSON.",
        },
    },
}
