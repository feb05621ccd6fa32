"""What the session check's database read costs with the impersonation bound (decision 0015).

Creates a scratch database on the test PostgreSQL (RAMPART_TEST_ADMIN_URL, migrated like the tests'),
fills `sessions` with many rows (users with a session each, one in a hundred an impersonation opened by
an admin's session), then times, one call at a time on the app's pool:

- the query before decision 0015 (session joined to its user), for a plain session;
- today's `_LOAD` for a plain session (two outer joins on a NULL key);
- today's `_LOAD` for an impersonation session (the opener and its user read too);

and prints `EXPLAIN (ANALYZE, BUFFERS)` of each, so the plan shows what is read.

Run: `.venv/bin/python bench/session_check_query.py [--sessions 200000] [--rounds 5000]`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import _admin, _db_url, make_settings  # noqa: E402

from rampart.app import create_app  # noqa: E402
from rampart.auth.sessions import _LOAD  # noqa: E402
from rampart.clitasks import migrate_all  # noqa: E402
from timing import line, timed  # noqa: E402

BEFORE = (
    "SELECT s.user_id, u.role FROM sessions s JOIN users u ON u.id = s.user_id"
    " WHERE s.id = $1 AND s.revoked_at IS NULL AND s.expires_at > now() AND NOT u.disabled"
)

# Users, a session each; every hundredth user also impersonated by an admin (through the admin's session).
_FILL = (
    "INSERT INTO users (id, email, name, role, disabled)"
    " SELECT gen_random_uuid(), 'bench-' || n || '@example.test', 'B',"
    " CASE WHEN n % 1000 = 0 THEN 'admin' ELSE 'user' END, false FROM generate_series(1, $1) n"
)


async def measure(database_url: str, sessions: int, rounds: int) -> None:
    app = create_app(make_settings(database_url))
    db = app.services.db
    try:
        async with db.transaction() as conn:
            await conn.execute(_FILL, sessions)
            await conn.execute(
                "INSERT INTO sessions (id, user_id, expires_at)"
                " SELECT gen_random_uuid(), id, now() + interval '30 days' FROM users"
            )
            await conn.execute(
                "INSERT INTO sessions (id, user_id, impersonator_id, impersonator_session_id, expires_at)"
                " SELECT gen_random_uuid(), u.id, a.user_id, a.id, now() + interval '1 hour'"
                " FROM (SELECT id, row_number() OVER () AS n FROM users WHERE role = 'user') u"
                " JOIN LATERAL (SELECT s.id, s.user_id FROM sessions s JOIN users x ON x.id = s.user_id"
                "   WHERE x.role = 'admin' LIMIT 1) a ON TRUE WHERE u.n % 100 = 0"
            )
        await db.execute("ANALYZE users")
        await db.execute("ANALYZE sessions")
        plain = await db.fetchval("SELECT id FROM sessions WHERE impersonator_id IS NULL LIMIT 1 OFFSET 777")
        acting = await db.fetchval("SELECT id FROM sessions WHERE impersonator_id IS NOT NULL LIMIT 1")
        total = await db.fetchval("SELECT count(*) FROM sessions")
        print(f"{total} sessions; {rounds} calls each, one at a time; microseconds\n")
        print("| session check query | median | p99 |")
        print("|---|---|---|")
        line("before 0015, plain session", await timed(rounds, lambda: db.fetchrow(BEFORE, plain)))
        line("_LOAD, plain session", await timed(rounds, lambda: db.fetchrow(_LOAD, plain)))
        line("_LOAD, impersonation session", await timed(rounds, lambda: db.fetchrow(_LOAD, acting)))
        for name, sql, sid in (
            ("before 0015, plain", BEFORE, plain),
            ("_LOAD, plain", _LOAD, plain),
            ("_LOAD, impersonation", _LOAD, acting),
        ):
            print(f"\n{name}:")
            async with db.connection() as conn:
                for row in await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}", sid):
                    print("   ", row[0])
    finally:
        await app.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5000)
    args = parser.parse_args()
    name = f"rampart_bench_check_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        url = _db_url(name)
        migrate_all(make_settings(url))
        asyncio.run(measure(url, args.sessions, args.rounds))
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
