"""Webhooks: the admin-managed list of HTTP receivers, declared as a resource, and each one as a dispatcher
subscriber.

The resource (`webhooks_resource`, served at /api/v1/admin/webhooks like the users resource beside it)
is declared with the public framework: a write-only `secret` (generated when omitted, shown only by the
create), the address rule as a hook (422 `forbidden_target`), and the delivery log and redelivery as
actions. Its changes write `webhooks.*` events like any other resource's; they never hold the secret.

Every active webhook is the subscriber `webhook:<id>` with its own patterns, so it gets the dispatcher's
guarantees (at least once, retries with backoff, dead letters, replay). Each HTTP attempt is recorded in
`webhook_attempts`: that is the delivery log.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping
from functools import partial
from typing import Any

from rampart.db.pool import Database
from rampart.errors import FieldError, NotFound, ValidationFailed
from rampart.events.dispatcher import DeliveryFailed, Subscriber, redeliver
from rampart.events.log import READ_ANY
from rampart.events.webhook_sender import UnsafeTarget, WebhookSender
from rampart.lib.ids import new_id
from rampart.resources.actions import Action
from rampart.resources.context import ActionContext, HookContext
from rampart.resources.fields import Boolean, Id, Integer, Text, TextList, Timestamp
from rampart.resources.openapi_parts import TIMESTAMP, UUID, named, nullable
from rampart.resources.reads import Page
from rampart.resources.spec import Field, Hooks, Policy, Resource

PERMISSION = "webhooks:manage"
SUBSCRIBER_PREFIX = "webhook:"
MAX_PATTERNS = 50
# An event-type pattern as rampart.lib.bus reads it: dot-separated segments, `*` only as a whole segment.
_SEGMENT = r"(?:\*|[^.*\x00]+)"
EVENT_PATTERN = rf"{_SEGMENT}(?:\.{_SEGMENT})*"
URL_PATTERN = r"[Hh][Tt][Tt][Pp][Ss]?://[^\x00]+"
Row = dict[str, Any]


def _subscriber(webhook_id: Any) -> str:
    return f"{SUBSCRIBER_PREFIX}{webhook_id}"


def _new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


# ----- the declaration ---------------------------------------------------------------------------------
def webhook_hooks(*, allow_private_networks: bool) -> Hooks:
    """The address rule when a URL is saved (the sender checks again at every attempt); an inactive
    webhook's waiting deliveries become dead letters; a deleted one's go with it."""
    sender = WebhookSender(allow_private_networks=allow_private_networks)  # only its address check

    async def check_url(values: Mapping[str, Any]) -> None:
        if "url" not in values:
            return
        try:
            await sender.target(values["url"])
        except UnsafeTarget as exc:
            refused = FieldError("url", "forbidden_target", f"This URL is refused: {exc}.")
            raise ValidationFailed([refused]) from exc

    async def before_create(*, ctx: HookContext, data: Row) -> None:
        await check_url(data)

    async def before_update(*, ctx: HookContext, current: Row, changes: Row) -> None:
        await check_url(changes)

    async def after_update(*, ctx: HookContext, row: Row, before: Row) -> None:
        if before["active"] and not row["active"]:
            # Nobody delivers for an inactive webhook: its waiting deliveries become dead letters, which
            # stay visible and replayable (instead of ageing as "lag" forever).
            await ctx.conn.execute(
                "UPDATE event_deliveries SET status = 'dead', last_error = 'the webhook was deactivated',"
                " updated_at = now() WHERE subscriber = $1 AND status = 'pending'",
                _subscriber(row["id"]),
            )

    async def after_delete(*, ctx: HookContext, row: Row) -> None:
        # Its pending deliveries go with it: nobody would ever deliver them (its attempts go by cascade).
        await ctx.conn.execute("DELETE FROM event_deliveries WHERE subscriber = $1", _subscriber(row["id"]))

    return Hooks(
        before_create=before_create,
        before_update=before_update,
        after_update=after_update,
        after_delete=after_delete,
    )


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
_ATTEMPTS = (
    "SELECT a.id::text, a.event_id::text, e.type AS event_type, a.attempted_at, a.status_code, a.error,"
    " a.duration_ms, a.manual, d.status AS delivery_status, d.attempts AS delivery_attempts"
    " FROM webhook_attempts a JOIN events e ON e.id = a.event_id"
    " LEFT JOIN event_deliveries d ON d.event_id = a.event_id AND d.subscriber = $2"
    " WHERE a.webhook_id = $1 AND ($3::uuid IS NULL OR a.id < $3)"
    " ORDER BY a.id DESC LIMIT $4"
)
_TIME = Timestamp()


async def deliveries(*, ctx: ActionContext, row: Row) -> Page:
    """The webhook's delivery attempts, newest first, with each delivery's current state."""
    after, limit = ctx.query["after"], ctx.query["limit"]
    rows = await ctx.conn.fetch(_ATTEMPTS, uuid.UUID(row["id"]), _subscriber(row["id"]), after, limit + 1)
    items = [{**r, "attempted_at": _TIME.to_json(r["attempted_at"])} for r in rows[:limit]]
    return Page(items, items[-1]["id"] if len(rows) > limit else None, limit, None)


async def redeliver_event(*, ctx: ActionContext, row: Row) -> dict[str, Any]:
    """Queue the event for this webhook again (as a fresh delivery with its own retries)."""
    event_id = ctx.path["event_id"]
    if await ctx.conn.fetchval("SELECT 1 FROM events WHERE id = $1", event_id) is None:
        raise NotFound("No such event.")
    await redeliver(ctx.conn, subscriber=_subscriber(row["id"]), event_id=event_id)
    return {"queued": True}


ACTIONS = (
    Action(
        "deliveries",
        deliveries,
        method="GET",
        query={
            "after": Field(Id(), description="`meta.next_cursor` of the previous page."),
            "limit": Field(Integer(minimum=1, maximum=100), default=20, description="The page size."),
        },
        response=ATTEMPT,
        page=True,
        summary="The delivery log: every attempt, newest first",
    ),
    Action(
        "redeliver",
        redeliver_event,
        path="deliveries/{event_id}/redeliver",
        params={"event_id": Id()},
        response={"type": "object", "required": ["queued"], "properties": {"queued": {"const": True}}},
        status=202,
        summary="Send an event to this webhook again",
    ),
)


def webhooks_resource(*, allow_private_networks: bool = False) -> Resource:
    """The webhooks, for holders of `webhooks:manage`; their events are for `events:read_any` only."""
    return Resource(
        name="webhooks",
        path="admin/webhooks",
        owner_field=None,
        permission=PERMISSION,
        description="HTTP receivers of events (admins).",
        fields={
            "url": Field(
                Text(max_length=2000, pattern=URL_PATTERN),  # the pattern needs a character or more
                required=True,
                description="http(s); private and loopback addresses are refused.",
            ),
            "events": Field(
                TextList(min_items=1, max_items=MAX_PATTERNS, max_length=200, pattern=EVENT_PATTERN),
                required=True,
                description="Event-type patterns: 'tasks.created', 'tasks.*', '*'.",
            ),
            "secret": Field(
                Text(min_length=16, max_length=200),
                default=_new_secret,
                write_only=True,
                description="Signs deliveries (X-Rampart-Signature); generated and shown once if omitted.",
            ),
            "description": Field(Text(max_length=500), default=""),
            "active": Field(Boolean(), default=True, filter=True),
        },
        policy=Policy.admin_only(
            bypass_read=PERMISSION,
            bypass_write=PERMISSION,
            create_permission=PERMISSION,
            audit_permission=READ_ANY,
        ),
        hooks=webhook_hooks(allow_private_networks=allow_private_networks),
        actions=ACTIONS,
        default_sort="id",  # oldest first
    )


# ----- delivery ----------------------------------------------------------------------------------------
class Webhooks:
    """The dispatcher's source of webhook subscribers, each delivering through the sender and recording
    its attempts; and the console's view of the failing ones."""

    def __init__(self, *, db: Database, sender: WebhookSender) -> None:
        self.db = db
        self.sender = sender

    def start(self) -> None:
        """Nothing to start: deliveries run in the dispatcher (`stop` closes the HTTP client)."""

    async def stop(self) -> None:
        await self.sender.aclose()

    async def subscribers(self) -> list[Subscriber]:
        """One subscriber per active webhook."""
        rows = await self.db.fetch("SELECT id, url, events, secret FROM webhooks WHERE active")
        return [
            Subscriber(
                _subscriber(row["id"]),
                tuple(row["events"]),
                partial(self._deliver, row["id"], row["url"], row["secret"]),
                timeout=self.sender.timeout + 1.0,
            )
            for row in rows
        ]

    async def _deliver(self, webhook_id: uuid.UUID, url: str, secret: str, event: Mapping[str, Any]) -> None:
        attempt = await self.sender.send(url=url, secret=secret, event=event)
        await self.db.execute(
            "INSERT INTO webhook_attempts (id, webhook_id, event_id, status_code, error, duration_ms)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            new_id(),
            webhook_id,
            uuid.UUID(str(event["id"])),
            attempt.status_code,
            attempt.error,
            attempt.duration_ms,
        )
        if not attempt.ok:
            raise DeliveryFailed(attempt.error or "failed")  # the dispatcher retries it

    async def failing(self, *, since: uuid.UUID, limit: int = 20) -> list[dict[str, Any]]:
        """Webhooks with failed attempts since the (time-ordered) attempt id `since`, most failures first,
        with their count of dead deliveries."""
        rows = await self.db.fetch(
            "SELECT w.id, w.url, w.active, f.failed, f.total, f.last_error,"
            " (SELECT count(*) FROM event_deliveries d WHERE d.subscriber = $3 || w.id::text"
            " AND d.status = 'dead') AS dead"
            " FROM webhooks w CROSS JOIN LATERAL ("
            " SELECT count(*) FILTER (WHERE a.status_code IS NULL OR a.status_code NOT BETWEEN 200 AND 299)"
            " AS failed, count(*) AS total,"
            " (array_agg(a.error ORDER BY a.id DESC) FILTER (WHERE a.error IS NOT NULL))[1] AS last_error"
            " FROM webhook_attempts a WHERE a.webhook_id = w.id AND a.id > $1) f"
            " WHERE f.failed > 0 ORDER BY f.failed DESC, w.id LIMIT $2",
            since,
            limit,
            SUBSCRIBER_PREFIX,
        )
        return [
            {
                "id": str(r["id"]),
                "url": r["url"],
                "active": r["active"],
                "failed": r["failed"],
                "total": r["total"],
                "dead": r["dead"],
                "last_error": r["last_error"],
            }
            for r in rows
        ]
