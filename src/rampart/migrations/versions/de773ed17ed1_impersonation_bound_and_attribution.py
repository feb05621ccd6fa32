"""impersonation bound to its impersonator, and events that name the impersonator

- `sessions.impersonator_session_id`: the impersonator's own session that opened an impersonation
  session. The session check ends an impersonation when that session ends, when the impersonator is
  disabled or loses `users:impersonate`, and when the target becomes an administrator.
- Two small partial indexes over the impersonation sessions only (by impersonator, by opening session).
- `events.impersonator_id`: the admin who acted as `actor_id`, null otherwise.

Impersonation sessions opened before this revision name no opening session and were 30-day sessions
that outlived their impersonator: they are revoked here (their users are not affected otherwise).

Revision ID: de773ed17ed1
Revises: 86270a25deee
Create Date: 2026-11-27 09:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = 'de773ed17ed1'
down_revision: str | Sequence[str] | None = '86270a25deee'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE sessions ADD COLUMN IF NOT EXISTS impersonator_session_id uuid"
        " CONSTRAINT sessions_impersonator_session_id_fkey REFERENCES sessions (id) ON DELETE CASCADE"
    )
    op.execute(
        "CREATE INDEX IF NOT EXISTS sessions_impersonator_idx ON sessions (impersonator_id)"
        " WHERE impersonator_id IS NOT NULL"
    )
    op.execute(
        "CREATE INDEX IF NOT EXISTS sessions_impersonator_session_idx ON sessions (impersonator_session_id)"
        " WHERE impersonator_session_id IS NOT NULL"
    )
    op.execute(
        "UPDATE sessions SET revoked_at = now() WHERE impersonator_id IS NOT NULL"
        " AND impersonator_session_id IS NULL AND revoked_at IS NULL"
    )
    op.execute("ALTER TABLE events ADD COLUMN IF NOT EXISTS impersonator_id uuid")


def downgrade() -> None:
    op.execute("ALTER TABLE events DROP COLUMN IF EXISTS impersonator_id")
    op.execute("DROP INDEX IF EXISTS sessions_impersonator_session_idx")
    op.execute("DROP INDEX IF EXISTS sessions_impersonator_idx")
    op.execute("ALTER TABLE sessions DROP COLUMN IF EXISTS impersonator_session_id")
