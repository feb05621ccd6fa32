"""event delivery: per-subscriber deliveries, webhooks and their attempts, NOTIFY on new events

Revision ID: a7c3e5d91f20
Revises: e79bdde3390e
Create Date: 2026-11-26 08:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = 'a7c3e5d91f20'
down_revision: str | Sequence[str] | None = 'e79bdde3390e'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = postgresql.TIMESTAMP(timezone=True, precision=3)


def upgrade() -> None:
    op.create_table('event_deliveries',
    sa.Column('event_id', sa.UUID(), nullable=False),
    sa.Column('subscriber', sa.Text(), nullable=False),
    sa.Column('status', sa.Text(), server_default=sa.text("'pending'"), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('next_attempt_at', _TS, server_default=sa.text('now()'), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('delivered_at', _TS, nullable=True),
    sa.Column('updated_at', _TS, server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('pending', 'delivered', 'dead')", name='event_deliveries_status_check'),
    sa.ForeignKeyConstraint(['event_id'], ['events.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('event_id', 'subscriber')
    )
    op.create_index('event_deliveries_due_idx', 'event_deliveries', ['next_attempt_at'], unique=False, postgresql_where=sa.text("status = 'pending'"))
    op.create_index('event_deliveries_subscriber_idx', 'event_deliveries', ['subscriber', 'status', 'event_id'], unique=False)
    op.create_table('webhooks',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('events', postgresql.ARRAY(sa.Text()), nullable=False),
    sa.Column('secret', sa.Text(), nullable=False),
    sa.Column('description', sa.Text(), server_default=sa.text("''"), nullable=False),
    sa.Column('active', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('created_at', _TS, server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', _TS, server_default=sa.text('now()'), nullable=False),
    sa.Column('version', sa.Integer(), server_default=sa.text('1'), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('webhook_attempts',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('webhook_id', sa.UUID(), nullable=False),
    sa.Column('event_id', sa.UUID(), nullable=False),
    sa.Column('attempted_at', _TS, server_default=sa.text('now()'), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('duration_ms', sa.Integer(), nullable=False),
    sa.Column('manual', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.ForeignKeyConstraint(['event_id'], ['events.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['webhook_id'], ['webhooks.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('webhook_attempts_event_idx', 'webhook_attempts', ['event_id'], unique=False)
    op.create_index('webhook_attempts_webhook_idx', 'webhook_attempts', ['webhook_id', 'id'], unique=False)
    # One wake-up per inserting statement (not per row): dispatchers and live streams then read the table,
    # so the payload carries nothing and identical notifications of a transaction fold into one.
    op.execute(
        "CREATE FUNCTION rampart_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN PERFORM pg_notify('rampart_events', ''); RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER events_notify AFTER INSERT ON events"
        " FOR EACH STATEMENT EXECUTE FUNCTION rampart_events_notify()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS events_notify ON events")
    op.execute("DROP FUNCTION IF EXISTS rampart_events_notify()")
    op.drop_index('webhook_attempts_webhook_idx', table_name='webhook_attempts')
    op.drop_index('webhook_attempts_event_idx', table_name='webhook_attempts')
    op.drop_table('webhook_attempts')
    op.drop_table('webhooks')
    op.drop_index('event_deliveries_subscriber_idx', table_name='event_deliveries')
    op.drop_index('event_deliveries_due_idx', table_name='event_deliveries', postgresql_where=sa.text("status = 'pending'"))
    op.drop_table('event_deliveries')
