"""Merge the authentication and event-delivery branches (both grew from the initial schema).

Revision ID: c9e2f4a61b3d
Revises: a7c3e5d91f20, b4d81f0c6a2e
Create Date: 2026-11-26 09:20:00
"""

from collections.abc import Sequence

revision: str = "c9e2f4a61b3d"
down_revision: str | Sequence[str] | None = ("a7c3e5d91f20", "b4d81f0c6a2e")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
