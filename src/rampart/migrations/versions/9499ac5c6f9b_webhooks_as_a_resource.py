"""webhooks as a resource: their record of deleted rows, and the checks a resource's table has

Decision 0027. `webhooks` is now declared as a resource (rampart.events.webhooks), so it gets what every
resource table has: `webhooks_deleted`, the record of its deleted rows (without the write-only
`secret`), filled from the `webhooks.deleted` events already written (the last one of each webhook); and
the CHECK constraints of its declared bounds (`url` 2000 characters, `secret` 200, `description` 500,
at most 50 event patterns), which the API already enforced.

Revision ID: 9499ac5c6f9b
Revises: f3a9c1d27b54
Create Date: 2026-12-06 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '9499ac5c6f9b'
down_revision: str | Sequence[str] | None = 'f3a9c1d27b54'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = postgresql.TIMESTAMP(timezone=True, precision=3)
# Written out here (not derived from the declaration) so the migration stays what it was.
_CHECKS = {
    'webhooks_url_length': 'char_length(url) <= 2000',
    'webhooks_events_items': 'cardinality(events) <= 50',
    'webhooks_secret_length': 'char_length(secret) <= 200',
    'webhooks_description_length': 'char_length(description) <= 500',
}


def upgrade() -> None:
    op.create_table(
        'webhooks_deleted',
        sa.Column('id', sa.UUID(), nullable=False),
        sa.Column('url', sa.Text(), nullable=True),
        sa.Column('events', postgresql.ARRAY(sa.Text()), nullable=True),
        sa.Column('description', sa.Text(), nullable=True),
        sa.Column('active', sa.Boolean(), nullable=True),
        sa.Column('created_at', _TS, nullable=True),
        sa.Column('updated_at', _TS, nullable=True),
        sa.Column('version', sa.Integer(), nullable=True),
        sa.Column('deleted_at', _TS, server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        if_not_exists=True,
    )
    op.create_index('webhooks_deleted_deleted_at_idx', 'webhooks_deleted', ['deleted_at'], if_not_exists=True)
    # The webhooks deleted before this revision: their last `deleted` event holds the row as it was (as
    # clients saw it, never with the secret; ids and times as text, which jsonb_populate_record reads back).
    op.execute(
        "INSERT INTO webhooks_deleted"
        " SELECT (jsonb_populate_record(NULL::webhooks_deleted, e.data || jsonb_build_object('deleted_at', e.occurred_at))).*"
        " FROM (SELECT DISTINCT ON (e.resource_id) e.data, e.occurred_at FROM events e"
        "       WHERE e.type = 'webhooks.deleted' AND e.resource = 'webhooks'"
        "       AND e.resource_id ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'"
        "       AND e.data->>'id' = e.resource_id"
        "       ORDER BY e.resource_id, e.id DESC) e"
        " WHERE NOT EXISTS (SELECT 1 FROM webhooks t WHERE t.id = (e.data->>'id')::uuid)"
        " ON CONFLICT (id) DO NOTHING"
    )
    for name, condition in _CHECKS.items():
        op.create_check_constraint(name, 'webhooks', condition)


def downgrade() -> None:
    for name in _CHECKS:
        op.drop_constraint(name, 'webhooks', type_='check')
    op.drop_table('webhooks_deleted', if_exists=True)
