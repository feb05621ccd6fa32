"""events are queued by a row trigger that notifies only when nobody else announces the change

Rampart's own sessions (`rampart.announces=on`) announce their changes after the commit and wake their
own dispatcher in-process: a NOTIFY inside the write would hold PostgreSQL's database-wide notify lock
across the commit (decision 0012). For other sessions, the change trigger of resource tables marks its
transaction (`rampart.notified`) and event dispatchers wake on its channel as well as on
`rampart_events`, so an event written with a row change needs no notification of its own. The queueing
trigger is a
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
        " IF current_setting('rampart.announces', true) IS DISTINCT FROM 'on'"
        " AND current_setting('rampart.notified', true) IS DISTINCT FROM 'on' THEN"
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
