"""the audit log by index: records of deleted rows, and an index per filter of the event log

Decision 0016. A caller without `events:read_any` sees the events of the objects they may see; those
objects are now found through the resources' own indexes and joined to their events by
(resource_id, id), instead of judging every event row by row (0.9-1.0 s for an empty page at 150,000
events of other users). A deleted object is judged by its row as it was deleted, kept in
`<table>_deleted` (same columns, same indexes as the table), which this revision makes for `users` and fills from the
`<resource>.deleted` events already written (the last one of each object).

The event filters `actor_id` and `type` get an index each, read in id order; the index on resource_id
gains the id for the same reason (it replaces the old one).

The indexes on `events` are built inside the migration's transaction (which holds the migration lock),
so writes of events wait while they build. On a large table, build them first without blocking writes,
and this step finds them:
    CREATE INDEX CONCURRENTLY IF NOT EXISTS events_resource_id_id_idx ON events (resource_id, id);
    CREATE INDEX CONCURRENTLY IF NOT EXISTS events_actor_id_idx ON events (actor_id, id);
    CREATE INDEX CONCURRENTLY IF NOT EXISTS events_type_idx ON events (type, id);

Revision ID: d3cb02b91283
Revises: de773ed17ed1
Create Date: 2026-12-06 04:31:00.000000
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = 'd3cb02b91283'
down_revision: str | Sequence[str] | None = 'de773ed17ed1'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = postgresql.TIMESTAMP(timezone=True, precision=3)
_SERVER_COLUMNS = (('created_at', _TS), ('updated_at', _TS), ('version', sa.Integer()))

# Per resource of Rampart's own schema: its table, its columns after `id`, and the indexes of its record
# of deleted rows (those of the table, none unique). The demo's get theirs from its own chain (revision
# 5be1e7e0d4a2), an app's own resources from `rampart makemigrations`.
DELETED: dict[str, tuple[str, list[tuple[str, sa.types.TypeEngine[Any]]], list[list[str]]]] = {
    'users': (
        'users',
        [('email', sa.Text()), ('name', sa.Text()), ('role', sa.Text()), ('disabled', sa.Boolean())],
        [['email']],
    ),
}


def upgrade() -> None:
    op.drop_index('events_resource_id_idx', table_name='events', if_exists=True)
    op.create_index('events_resource_id_id_idx', 'events', ['resource_id', 'id'], if_not_exists=True)
    op.create_index('events_actor_id_idx', 'events', ['actor_id', 'id'], if_not_exists=True)
    op.create_index('events_type_idx', 'events', ['type', 'id'], if_not_exists=True)
    for resource, (table, columns, indexes) in DELETED.items():
        name = f'{table}_deleted'
        op.create_table(
            name,
            sa.Column('id', sa.UUID(), nullable=False),
            *(sa.Column(column, kind, nullable=True) for column, kind in (*columns, *_SERVER_COLUMNS)),
            sa.Column('deleted_at', _TS, server_default=sa.text('now()'), nullable=False),
            sa.PrimaryKeyConstraint('id'),
            if_not_exists=True,
        )
        for cols in [*indexes, ['deleted_at']]:
            op.create_index(f"{name}_{'_'.join(cols)}_idx", name, cols, if_not_exists=True)
        # The objects deleted before this revision: their last `deleted` event holds the row as it was
        # (as clients saw it: ids and times as text, which jsonb_populate_record reads back).
        op.execute(
            f"INSERT INTO {name}"
            f" SELECT (jsonb_populate_record(NULL::{name}, e.data || jsonb_build_object('deleted_at', e.occurred_at))).*"
            f" FROM (SELECT DISTINCT ON (e.resource_id) e.data, e.occurred_at FROM events e"
            f"       WHERE e.type = '{resource}.deleted' AND e.resource = '{resource}'"
            f"       AND e.resource_id ~ '^[0-9a-f]{{8}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{12}}$'"
            f"       AND e.data->>'id' = e.resource_id"
            f"       ORDER BY e.resource_id, e.id DESC) e"
            f" WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE t.id = (e.data->>'id')::uuid)"
            " ON CONFLICT (id) DO NOTHING"
        )


def downgrade() -> None:
    for table, _, _ in DELETED.values():
        op.drop_table(f'{table}_deleted', if_exists=True)
    op.drop_index('events_type_idx', table_name='events', if_exists=True)
    op.drop_index('events_actor_id_idx', table_name='events', if_exists=True)
    op.drop_index('events_resource_id_id_idx', table_name='events', if_exists=True)
    op.create_index('events_resource_id_idx', 'events', ['resource_id'], if_not_exists=True)
