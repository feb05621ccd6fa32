"""What a session check costs: a hit in the worker's session cache, and a database read (a miss).

Creates a scratch database on the test PostgreSQL (RAMPART_TEST_ADMIN_URL, migrated like the tests'),
one user with a session, then times `Authenticator.authenticate()` (token verification included: what
every request pays) one call at a time on one event loop, so the figures are latencies:

- memory hit: the worker's dictionary holds the session;
- database read: the dictionary is emptied before each call (what every miss costs);

and, for scale, the bare round trips: a Redis GET (redis-py with hiredis; the Redis tier removed in
issue 15 cost about one of these per miss) and a `SELECT 1` on the app's pool (asyncpg).

Run: `.venv/bin/python bench/session_cache.py [--rounds 3000]` (PostgreSQL and Redis on 127.0.0.1).
Recorded in docs/decisions/0005-session-check.md.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis.asyncio  # noqa: E402
from tests.conftest import REDIS_URL, _admin, _db_url, make_settings, new_user  # noqa: E402

from rampart.app import create_app  # noqa: E402
from rampart.auth.sessions import Authenticator  # noqa: E402
from rampart.clitasks import migrate_all  # noqa: E402
from rampart.lib.store import RedisStore  # noqa: E402
from timing import line, timed  # noqa: E402


async def measure(database_url: str, rounds: int) -> None:
    app = create_app(make_settings(database_url))
    client = redis.asyncio.Redis.from_url(REDIS_URL, socket_timeout=1.0)
    namespace = f"rampart-bench:sess:{uuid.uuid4().hex}:"
    store = RedisStore(client, namespace=namespace)
    try:
        user = await new_user(app)
        header = f"Bearer {user.token}"
        s = app.services
        memory = Authenticator(db=s.db, tokens=s.tokens, roles=s.roles)
        await store.set_max(f"s:{user.session_id}", f"{user.id}:{user.role}".encode(), ttl=3600)

        async def memory_hit() -> None:
            await memory.authenticate(header)

        async def database_read() -> None:
            memory._cache.clear()
            await memory.authenticate(header)

        print(f"{rounds} calls each, one at a time; microseconds\n")
        print("| authenticate(), session state from | median | p99 |")
        print("|---|---|---|")
        line("memory (the worker's dictionary)", await timed(rounds, memory_hit))
        line("PostgreSQL (the indexed session query)", await timed(rounds, database_read))
        print("\n| bare round trip | median | p99 |")
        print("|---|---|---|")
        line("Redis GET", await timed(rounds, lambda: store.get(f"s:{user.session_id}")))
        line("PostgreSQL SELECT 1", await timed(rounds, lambda: s.db.fetchval("SELECT 1")))
    finally:
        keys = [key async for key in client.scan_iter(match=namespace + "*")]
        if keys:
            await client.unlink(*keys)
        await client.aclose()
        await app.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3000)
    args = parser.parse_args()
    name = f"rampart_bench_sess_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        url = _db_url(name)
        migrate_all(make_settings(url))
        asyncio.run(measure(url, args.rounds))
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
