"""The tables of event delivery: one delivery row per (event, subscriber), and webhooks' attempts.

`events` itself belongs to `rampart.db.outbox`, and `webhooks` is a resource (`rampart.events.webhooks`):
these are what the dispatcher and webhooks keep beside them.
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


def define_delivery_tables(metadata: sa.MetaData) -> None:
    """Add `event_deliveries` and `webhook_attempts` to `metadata` (whose `webhooks` the resource defines)."""
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
