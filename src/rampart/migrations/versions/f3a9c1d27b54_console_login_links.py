"""one-time sign-in links of the console

`login_links`: a link that `rampart login-link` prints (or `rampart serve` prints on a database with no
administrator yet) signs a browser into the console once, within 10 minutes. Only the SHA-256 of the
link's token is stored. A link names its user, or (the first administrator's) none: that one creates
the user when it is used.

Revision ID: f3a9c1d27b54
Revises: d3cb02b91283
Create Date: 2026-12-06 09:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = 'f3a9c1d27b54'
down_revision: str | Sequence[str] | None = 'd3cb02b91283'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "CREATE TABLE IF NOT EXISTS login_links ("
        " token_hash text NOT NULL,"
        " user_id uuid CONSTRAINT login_links_user_id_fkey REFERENCES users (id) ON DELETE CASCADE,"
        " purpose text NOT NULL,"
        " created_at timestamp(3) with time zone DEFAULT now() NOT NULL,"
        " expires_at timestamp(3) with time zone NOT NULL,"
        " used_at timestamp(3) with time zone,"
        " CONSTRAINT login_links_pkey PRIMARY KEY (token_hash))"
    )
    op.execute("CREATE INDEX IF NOT EXISTS login_links_expires_idx ON login_links (expires_at)")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS login_links_expires_idx")
    op.execute("DROP TABLE IF EXISTS login_links")
