"""an index for a project's tasks, newest first (now the demo app's; an empty step here)

Until decision 0020 this revision created `tasks_project_id_created_at_idx` on the demo app's `tasks`
table. The demo's tables and that index now live in the demo's own migration
(src/rampart/apps/tasks/migrations/), which creates the index where it is missing. The revision stays,
empty, so that databases stamped with it and revisions written on top of it keep their place in
Rampart's chain.

Revision ID: 86270a25deee
Revises: 5d0c2a7e9b14
Create Date: 2026-11-26 17:23:51.273849
"""

from collections.abc import Sequence

revision: str = '86270a25deee'
down_revision: str | Sequence[str] | None = '5d0c2a7e9b14'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
