"""the demo app's tables: projects, project_members, tasks

The first revision of the demo's own chain (branch label `tasks`), beside Rampart's (decision 0020). A
database migrated before that has these tables already, made by Rampart's initial revision; this
revision adopts them as they are, rows included: every statement is IF NOT EXISTS. It also drops the
reference indexes that a declared index made redundant (Rampart's 332b086b0f2f dropped them until then,
so they remain only in a database migrated to an older revision) and creates the creation-time index
(until then 86270a25deee's) where it is missing.

Revision ID: c19e08e831d3
Revises:
Create Date: 2026-11-27 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "c19e08e831d3"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("tasks",)
# Rampart's first revision makes `users`, which these tables reference.
depends_on: str | Sequence[str] | None = "e79bdde3390e"

_TS = postgresql.TIMESTAMP(timezone=True, precision=3)
_REDUNDANT_INDEXES = {
    "project_members_project_id_idx": "project_members",
    "project_members_user_id_idx": "project_members",
    "tasks_owner_id_idx": "tasks",
    "tasks_project_id_idx": "tasks",
}


def _server_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("created_at", _TS, server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", _TS, server_default=sa.text("now()"), nullable=False),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("owner_id", sa.UUID(), nullable=False),
        *_server_columns(),
        sa.CheckConstraint("char_length(description) <= 5000", name="projects_description_length"),
        sa.CheckConstraint("char_length(name) <= 120", name="projects_name_length"),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        if_not_exists=True,
    )
    op.create_index("projects_owner_id_idx", "projects", ["owner_id"], if_not_exists=True)
    op.create_table(
        "project_members",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("project_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        *_server_columns(),
        sa.CheckConstraint("role IN ('viewer', 'editor')", name="project_members_role_check"),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project_id", "user_id", name="project_members_project_id_user_id_key"),
        if_not_exists=True,
    )
    op.create_index(
        "project_members_user_id_project_id_idx",
        "project_members",
        ["user_id", "project_id"],
        if_not_exists=True,
    )
    op.create_table(
        "tasks",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("project_id", sa.UUID(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("due_date", sa.Date(), nullable=True),
        sa.Column("assignee_id", sa.UUID(), nullable=True),
        sa.Column("owner_id", sa.UUID(), nullable=False),
        *_server_columns(),
        sa.CheckConstraint("status IN ('todo', 'in_progress', 'done')", name="tasks_status_check"),
        sa.CheckConstraint("char_length(description) <= 10000", name="tasks_description_length"),
        sa.CheckConstraint("char_length(title) <= 200", name="tasks_title_length"),
        sa.CheckConstraint("priority BETWEEN 0 AND 5", name="tasks_priority_range"),
        sa.ForeignKeyConstraint(["assignee_id"], ["users.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        if_not_exists=True,
    )
    for name, columns in (
        ("tasks_assignee_id_idx", ["assignee_id"]),
        ("tasks_owner_id_status_priority_created_at_idx", ["owner_id", "status", "priority", "created_at"]),
        (
            "tasks_project_id_status_priority_created_at_idx",
            ["project_id", "status", "priority", "created_at"],
        ),
        ("tasks_project_id_created_at_idx", ["project_id", "created_at"]),
    ):
        op.create_index(name, "tasks", columns, if_not_exists=True)
    for name, table in _REDUNDANT_INDEXES.items():
        op.drop_index(name, table_name=table, if_exists=True)


def downgrade() -> None:
    op.drop_table("tasks")
    op.drop_table("project_members")
    op.drop_table("projects")
