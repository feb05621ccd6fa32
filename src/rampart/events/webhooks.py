"""Webhooks: the admin-managed list of HTTP receivers, and each one as a dispatcher subscriber.

Every active webhook is the subscriber `webhook:<id>` with its own patterns, so it gets the dispatcher's
guarantees (at least once, retries with backoff, dead letters, replay). Each HTTP attempt is recorded in
`webhook_attempts`: that is the delivery log. Changes to webhooks write events like any other change;
their data never holds the secret.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping
from typing import Any

from rampart.access.actor import Actor
from rampart.db.outbox import write_event
from rampart.db.pool import Database
from rampart.db.replicas import Replicas
from rampart.errors import FieldError, NotFound, ValidationFailed
from rampart.events.dispatcher import DeliveryFailed, Subscriber, redeliver
from rampart.events.webhook_sender import UnsafeTarget, WebhookSender, check_url_syntax, resolve_public
from rampart.lib.bus import EventBus, check_pattern
from rampart.lib.ids import new_id

PERMISSION = "webhooks:manage"
SUBSCRIBER_PREFIX = "webhook:"
_FIELDS = ("url", "events", "secret", "description", "active")
_COLUMNS = "id, url, events, description, active, created_at, updated_at, version"
MAX_PATTERNS = 50


class WebhookFailed(DeliveryFailed):
    """A delivery attempt did not get a 2xx; the dispatcher retries it."""


def _ts(value: Any) -> str:
    return str(value.isoformat(timespec="milliseconds").replace("+00:00", "Z"))


def to_webhook(row: Any) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "url": row["url"],
        "events": list(row["events"]),
        "description": row["description"],
        "active": row["active"],
        "created_at": _ts(row["created_at"]),
        "updated_at": _ts(row["updated_at"]),
        "version": row["version"],
    }


class Webhooks:
    """Webhook storage, validation and delivery; also the dispatcher's source of webhook subscribers."""

    def __init__(
        self, *, db: Database, bus: EventBus, sender: WebhookSender, reads: Replicas | None = None
    ) -> None:
        self.db = db
        self.bus = bus
        self.sender = sender
        self.reads = reads  # with read replicas: the writer's next audit-log read must show its event

    def start(self) -> None:
        """Nothing to start: deliveries run in the dispatcher. (`start`/`stop` make this a background
        worker of the app, so its HTTP client is closed at shutdown.)"""

    async def stop(self) -> None:
        await self.sender.aclose()

    # ----- validation --------------------------------------------------------------------------------
    async def _validate(self, body: Any, *, partial: bool) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ValidationFailed([FieldError("body", "invalid", "The body must be a JSON object.")])
        errors = [FieldError(k, "unknown_field", "Not a writable field.") for k in body if k not in _FIELDS]
        data: dict[str, Any] = {}
        if "url" in body or not partial:
            url = body.get("url")
            if not isinstance(url, str) or not 1 <= len(url) <= 2000 or "\x00" in url:
                errors.append(
                    FieldError("url", "invalid", "url must be an http(s) URL of at most 2000 chars.")
                )
            else:
                try:
                    parsed = check_url_syntax(url)
                    if not self.sender.allow_private_networks:
                        await resolve_public(parsed)
                    data["url"] = url
                except UnsafeTarget as exc:
                    errors.append(FieldError("url", "forbidden_target", f"This URL is refused: {exc}."))
        if "events" in body or not partial:
            patterns = body.get("events")
            if (
                not isinstance(patterns, list)
                or not 1 <= len(patterns) <= MAX_PATTERNS
                or not all(isinstance(p, str) and len(p) <= 200 and "\x00" not in p for p in patterns)
            ):
                errors.append(
                    FieldError(
                        "events", "invalid", f"events must be 1 to {MAX_PATTERNS} event-type patterns."
                    )
                )
            else:
                try:
                    for pattern in patterns:
                        check_pattern(pattern)
                    data["events"] = list(dict.fromkeys(patterns))
                except ValueError:
                    errors.append(
                        FieldError(
                            "events", "invalid", "Patterns look like 'tasks.created', 'tasks.*' or '*'."
                        )
                    )
        if "secret" in body:
            secret = body["secret"]
            if not isinstance(secret, str) or not 16 <= len(secret) <= 200 or "\x00" in secret:
                errors.append(FieldError("secret", "invalid", "secret must be 16 to 200 characters."))
            else:
                data["secret"] = secret
        elif not partial:
            data["secret"] = "whsec_" + secrets.token_urlsafe(32)
        if "description" in body:
            description = body["description"]
            if not isinstance(description, str) or len(description) > 500 or "\x00" in description:
                errors.append(FieldError("description", "invalid", "description: at most 500 characters."))
            else:
                data["description"] = description
        if "active" in body:
            if not isinstance(body["active"], bool):
                errors.append(FieldError("active", "invalid", "active must be true or false."))
            else:
                data["active"] = body["active"]
        if errors:
            raise ValidationFailed(errors)
        return data

    # ----- CRUD --------------------------------------------------------------------------------------
    async def create(self, actor: Actor, body: Any, *, request_id: str | None) -> dict[str, Any]:
        """Create a webhook; the answer is the only one that shows the secret."""
        data = await self._validate(body, partial=False)
        data["id"] = new_id()
        names = list(data)
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(
                f"INSERT INTO webhooks ({', '.join(names)})"
                f" VALUES ({', '.join(f'${i + 1}' for i in range(len(names)))}) RETURNING {_COLUMNS}",
                *data.values(),
            )
            assert row is not None
            webhook = to_webhook(row)
            await self._event(conn, actor, "created", webhook, request_id=request_id)
        return {**webhook, "secret": data["secret"]}

    async def get(self, webhook_id: uuid.UUID | None) -> dict[str, Any]:
        row = await self.db.fetchrow(f"SELECT {_COLUMNS} FROM webhooks WHERE id = $1", webhook_id)
        if webhook_id is None or row is None:
            raise NotFound("No such webhook.")
        return to_webhook(row)

    async def page(self, *, after: uuid.UUID | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM webhooks WHERE $1::uuid IS NULL OR id > $1 ORDER BY id LIMIT $2",
            after,
            limit + 1,
        )
        return [to_webhook(r) for r in rows[:limit]], len(rows) > limit

    async def update(
        self, actor: Actor, webhook_id: uuid.UUID | None, body: Any, *, request_id: str | None
    ) -> dict[str, Any]:
        if webhook_id is None:
            raise NotFound("No such webhook.")
        data = await self._validate(body, partial=True)
        async with self.db.transaction() as conn:
            current = await conn.fetchrow(
                f"SELECT {_COLUMNS}, secret FROM webhooks WHERE id = $1 FOR UPDATE", webhook_id
            )
            if current is None:
                raise NotFound("No such webhook.")
            changes = {k: v for k, v in data.items() if current[k] != v}
            if not changes:
                return to_webhook(current)
            sets = ", ".join(f"{name} = ${i + 2}" for i, name in enumerate(changes))
            row = await conn.fetchrow(
                f"UPDATE webhooks SET {sets}, version = version + 1, updated_at = now() WHERE id = $1"
                f" RETURNING {_COLUMNS}",
                webhook_id,
                *changes.values(),
            )
            assert row is not None
            if changes.get("active") is False:
                # Nobody delivers for an inactive webhook: its waiting deliveries become dead letters,
                # which stay visible and replayable (instead of ageing as "lag" forever).
                await conn.execute(
                    "UPDATE event_deliveries SET status = 'dead', last_error = 'the webhook was deactivated',"
                    " updated_at = now() WHERE subscriber = $1 AND status = 'pending'",
                    SUBSCRIBER_PREFIX + str(webhook_id),
                )
            webhook = to_webhook(row)
            before = to_webhook(current)
            diff = {
                k: {"from": before[k], "to": webhook[k]} if k != "secret" else {"changed": True}
                for k in changes
            }
            await self._event(conn, actor, "updated", webhook, diff, request_id=request_id)
        return webhook

    async def delete(self, actor: Actor, webhook_id: uuid.UUID | None, *, request_id: str | None) -> None:
        if webhook_id is None:
            raise NotFound("No such webhook.")
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(f"DELETE FROM webhooks WHERE id = $1 RETURNING {_COLUMNS}", webhook_id)
            if row is None:
                raise NotFound("No such webhook.")
            # Its pending deliveries go with it: nobody would ever deliver them.
            await conn.execute(
                "DELETE FROM event_deliveries WHERE subscriber = $1", SUBSCRIBER_PREFIX + str(webhook_id)
            )
            await self._event(conn, actor, "deleted", to_webhook(row), request_id=request_id)

    async def _event(
        self,
        conn: Any,
        actor: Actor,
        action: str,
        webhook: dict[str, Any],
        changes: dict[str, Any] | None = None,
        *,
        request_id: str | None,
    ) -> None:
        event = await write_event(
            conn,
            resource="webhooks",
            action=action,
            resource_id=webhook["id"],
            actor_id=actor.user_id,
            data=webhook,
            changes=changes,
            request_id=request_id,
            impersonator_id=actor.impersonator_id,
            citus=await self.db.on_citus(),
        )

        async def notify() -> None:
            if self.reads is not None:
                await self.reads.wrote(actor.user_id)
            await self.bus.emit(event, request_id=request_id)

        await self.db.after_commit(notify)

    # ----- the delivery log --------------------------------------------------------------------------
    async def attempts(
        self, webhook_id: uuid.UUID | None, *, after: uuid.UUID | None, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """The webhook's delivery attempts, newest first, with each delivery's current state."""
        await self.get(webhook_id)
        rows = await self.db.fetch(
            "SELECT a.id, a.event_id, e.type, a.attempted_at, a.status_code, a.error, a.duration_ms,"
            " a.manual, d.status, d.attempts"
            " FROM webhook_attempts a JOIN events e ON e.id = a.event_id"
            " LEFT JOIN event_deliveries d ON d.event_id = a.event_id AND d.subscriber = $2"
            " WHERE a.webhook_id = $1 AND ($3::uuid IS NULL OR a.id < $3)"
            " ORDER BY a.id DESC LIMIT $4",
            webhook_id,
            SUBSCRIBER_PREFIX + str(webhook_id),
            after,
            limit + 1,
        )
        items = [
            {
                "id": str(r["id"]),
                "event_id": str(r["event_id"]),
                "event_type": r["type"],
                "attempted_at": _ts(r["attempted_at"]),
                "status_code": r["status_code"],
                "error": r["error"],
                "duration_ms": r["duration_ms"],
                "manual": r["manual"],
                "delivery_status": r["status"],
                "delivery_attempts": r["attempts"],
            }
            for r in rows[:limit]
        ]
        return items, len(rows) > limit

    async def redeliver(self, webhook_id: uuid.UUID | None, event_id: uuid.UUID | None) -> None:
        """Queue the event for this webhook again (as a fresh delivery with its own retries)."""
        await self.get(webhook_id)
        if event_id is None or await self.db.fetchval("SELECT 1 FROM events WHERE id = $1", event_id) is None:
            raise NotFound("No such event.")
        await redeliver(self.db, subscriber=SUBSCRIBER_PREFIX + str(webhook_id), event_id=event_id)

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

    # ----- as dispatcher subscribers -----------------------------------------------------------------
    async def subscribers(self) -> list[Subscriber]:
        """One subscriber per active webhook."""
        rows = await self.db.fetch("SELECT id, url, events, secret FROM webhooks WHERE active")
        return [
            Subscriber(
                SUBSCRIBER_PREFIX + str(row["id"]),
                tuple(row["events"]),
                self._deliverer(row["id"], row["url"], row["secret"]),
                timeout=self.sender.timeout + 1.0,
            )
            for row in rows
        ]

    def _deliverer(self, webhook_id: uuid.UUID, url: str, secret: str) -> Any:
        async def deliver(event: Mapping[str, Any]) -> None:
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
                raise WebhookFailed(attempt.error or "failed")

        return deliver
