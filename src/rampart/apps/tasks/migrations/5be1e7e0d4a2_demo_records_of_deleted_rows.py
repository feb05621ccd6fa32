"""the demo's records of deleted rows: projects_deleted, project_members_deleted, tasks_deleted

Decision 0016: the audit log judges a deleted object by its row as it was deleted, kept in
`<table>_deleted` (same columns, same indexes as the table). Rampart's revision d3cb02b91283 makes the
one of `users` and the event indexes; this one makes the demo's, filled from the `<resource>.deleted`
events already written (the last one of each object).

Revision ID: 5be1e7e0d4a2
Revises: c19e08e831d3
Create Date: 2026-12-06 05:40:00.000000
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '5be1e7e0d4a2'
down_revision: str | Sequence[str] | None = 'c19e08e831d3'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = postgresql.TIMESTAMP(timezone=True, precision=3)
_SERVER_COLUMNS = (('created_at', _TS), ('updated_at', _TS), ('version', sa.Integer()))

# Per resource of the demo: its table, its columns after `id`, and the indexes of its record of deleted rows
# (those of the table, none unique).
DELETED: dict[str, tuple[str, list[tuple[str, sa.types.TypeEngine[Any]]], list[list[str]]]] = {
    'projects': (
        'projects',
        [('name', sa.Text()), ('description', sa.Text()), ('owner_id', sa.UUID())],
        [['owner_id']],
    ),
    'members': (
        'project_members',
        [('project_id', sa.UUID()), ('user_id', sa.UUID()), ('role', sa.Text())],
        [['user_id', 'project_id'], ['project_id', 'user_id']],
    ),
    'tasks': (
        'tasks',
        [
            ('project_id', sa.UUID()),
            ('title', sa.Text()),
            ('description', sa.Text()),
            ('status', sa.Text()),
            ('priority', sa.SmallInteger()),
            ('due_date', sa.Date()),
            ('assignee_id', sa.UUID()),
            ('owner_id', sa.UUID()),
        ],
        [
            ['assignee_id'],
            ['project_id', 'status', 'priority', 'created_at'],
            ['owner_id', 'status', 'priority', 'created_at'],
            ['project_id', 'created_at'],
        ],
    ),
}


def upgrade() -> None:
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
