"""The tables of events, declared for migrations: the outbox's `events` and `event_queue` (written by
`rampart.db.outbox`), one delivery row per (event, subscriber), and webhooks' attempts (`webhooks` itself
is a resource, `rampart.events.webhooks`).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

_TS = pg.TIMESTAMP(timezone=True, precision=3)


def _ref(column: str, table: str) -> sa.Column[object]:
    """A reference to `table`'s row, whose deletion takes this row with it."""
    return sa.Column(
        column, pg.UUID(as_uuid=True), sa.ForeignKey(f"{table}.id", ondelete="CASCADE"), nullable=False
    )


def define_event_tables(metadata: sa.MetaData) -> None:
    """Add the tables of events to `metadata` (whose `webhooks` the resource defines). `event_queue` holds
    the events the dispatcher has not fanned out yet: a trigger on `events` adds each new one (migration
    5d0c2a7e9b14), the dispatcher deletes what it claims. A narrow table of its own, so marking an event
    handled writes a few bytes, not a new version of the wide event row and its indexes."""
    sa.Table(
        "events",
        metadata,
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("resource", sa.Text(), nullable=False),
        sa.Column("resource_id", sa.Text(), nullable=False),
        sa.Column("actor_id", pg.UUID(as_uuid=True), nullable=True),
        # The admin who acted as `actor_id` (impersonation), else null.
        sa.Column("impersonator_id", pg.UUID(as_uuid=True), nullable=True),
        sa.Column("occurred_at", _TS, nullable=False),
        sa.Column("data", pg.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("changes", pg.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("request_id", sa.Text(), nullable=True),
        # Each filter of the audit log (`resource`, `resource_id`, `actor_id`, `type`) reads its events in
        # id order through its own index, and (resource_id, id) also finds the events of each object a
        # caller may see (decision 0016).
        sa.Index("events_resource_idx", "resource", "id"),
        sa.Index("events_resource_id_id_idx", "resource_id", "id"),
        sa.Index("events_actor_id_idx", "actor_id", "id"),
        sa.Index("events_type_idx", "type", "id"),
    )
    sa.Table(
        "event_queue",
        metadata,
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("type", sa.Text(), nullable=False),
    )
    sa.Table(
        "event_deliveries",
        metadata,
        _ref("event_id", "events"),
        sa.Column("subscriber", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False, server_default=sa.text("'pending'")),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("next_attempt_at", _TS, nullable=False, server_default=sa.text("now()")),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", _TS, nullable=True),
        sa.Column("updated_at", _TS, nullable=False, server_default=sa.text("now()")),
        sa.PrimaryKeyConstraint("event_id", "subscriber"),
        # `pending`: due at next_attempt_at, or leased until then by a dispatcher; `dead`: gave up after the
        # maximum attempts (`rampart events replay` makes it pending again).
        sa.CheckConstraint(
            "status IN ('pending', 'delivered', 'dead')", name="event_deliveries_status_check"
        ),
        sa.Index(
            "event_deliveries_due_idx", "next_attempt_at", postgresql_where=sa.text("status = 'pending'")
        ),
        sa.Index("event_deliveries_subscriber_idx", "subscriber", "status", "event_id"),
    )
    sa.Table(
        "webhook_attempts",
        metadata,
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        _ref("webhook_id", "webhooks"),
        _ref("event_id", "events"),
        sa.Column("attempted_at", _TS, nullable=False, server_default=sa.text("now()")),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("manual", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Index("webhook_attempts_webhook_idx", "webhook_id", "id"),
        sa.Index("webhook_attempts_event_idx", "event_id"),
    )
