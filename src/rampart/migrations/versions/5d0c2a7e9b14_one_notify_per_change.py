"""one notification per change: events are queued by a row trigger that stays quiet when the change
trigger of the same transaction already notified

The change trigger of resource tables (installed by `rampart migrate`, rampart.resources.caching) marks
its transaction (`rampart.notified`), and event dispatchers wake on its channel as well as on
`rampart_events`. An event written in such a transaction needs no notification of its own: one fewer
per change for PostgreSQL to queue and deliver to every listening session. The queueing trigger is a
row trigger: PL/pgSQL cannot keep the plans of a trigger that reads a transition table, and replanning
its statements at every change cost more than a row trigger's call (bench/run.py patch: 1,630-1,730
req/s with the statement trigger, 2,000-2,240 with this one, alternating on one server).

Revision ID: 5d0c2a7e9b14
Revises: 332b086b0f2f
Create Date: 2026-11-26 14:05:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = '5d0c2a7e9b14'
down_revision: str | Sequence[str] | None = '332b086b0f2f'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS events_notify ON events")
    op.execute(
        "CREATE OR REPLACE FUNCTION rampart_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN INSERT INTO event_queue (id, type) VALUES (NEW.id, NEW.type);"
        " IF current_setting('rampart.notified', true) IS DISTINCT FROM 'on' THEN"
        " PERFORM pg_notify('rampart_events', ''); END IF; RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER events_notify AFTER INSERT ON events FOR EACH ROW EXECUTE FUNCTION rampart_events_notify()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS events_notify ON events")
    op.execute(
        "CREATE OR REPLACE FUNCTION rampart_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN INSERT INTO event_queue (id, type) SELECT id, type FROM new_events;"
        " PERFORM pg_notify('rampart_events', ''); RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER events_notify AFTER INSERT ON events REFERENCING NEW TABLE AS new_events"
        " FOR EACH STATEMENT EXECUTE FUNCTION rampart_events_notify()"
    )
