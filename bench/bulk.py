"""Bulk-insert extra tasks with SQL, for the scale curve's large sizes (100k, 1M tasks).

Seeding through the API runs at ~900 requests/s here: fine for the 20,000 tasks of the
comparison, far too slow for a million. Above the API-seeded base, the extra tasks go in with
``COPY`` straight into ``tasks``, spread evenly over the seeded users' own projects, with values
the API would accept (statuses cycling, priorities 0-5, some due dates, version 1) and UUIDv7
ids like the ones the servers generate (time-ordered, so the primary-key index grows the same
way). Both servers have the same ``tasks`` table shape.

The session runs with ``session_replication_role = replica``: no trigger fires, so Rampart's
per-row change notification (``rampart_cache_notify``, for cache invalidation) does not queue a
million NOTIFYs while no server is listening, and the foreign keys are not re-checked row by row
(every row points at a seeded user's own project, so they hold). No change events are written
for these rows; the servers are stopped while it runs and start with cold caches after it.
"""

from __future__ import annotations

import datetime as dt
import random
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg

from seed import STATUSES, SeedData

COLUMNS = (
    "id",
    "project_id",
    "title",
    "description",
    "status",
    "priority",
    "due_date",
    "assignee_id",
    "owner_id",
    "created_at",
    "updated_at",
    "version",
)
BATCH = 50_000
BULK_TITLE_PREFIX = "Bulk task "


def uuid7(ms: int, rng: random.Random) -> uuid.UUID:
    """A version-7 UUID (RFC 9562): 48-bit Unix milliseconds, version, 74 random bits."""
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= rng.getrandbits(12) << 64
    value |= 0b10 << 62
    value |= rng.getrandbits(62)
    return uuid.UUID(int=value)


def _rows(data: SeedData, start: int, count: int) -> Iterator[tuple[Any, ...]]:
    users = data.users
    rng = random.Random(start)  # deterministic per top-up
    # Older than the API-seeded rows: one row per millisecond going back from an hour before now.
    now = dt.datetime.now(dt.UTC)
    base = now - dt.timedelta(hours=1) - dt.timedelta(milliseconds=start + count)
    base_ms = int(base.timestamp() * 1000)
    for k in range(start, start + count):
        u = k % len(users)
        n = k // len(users)  # this user's n-th bulk task
        user = users[u]
        created = base + dt.timedelta(milliseconds=k - start)
        task_id = uuid7(base_ms + (k - start), rng)
        yield (
            task_id,
            uuid.UUID(user.project_id),
            f"{BULK_TITLE_PREFIX}{u:03d}-{n:06d}",
            f"Bulk-inserted by the benchmark for user {u}, task {n}.",
            STATUSES[n % 3],
            (n // 3) % 6,
            (dt.date(2026, 12, 1) + dt.timedelta(days=n % 90)) if n % 4 else None,
            None,
            uuid.UUID(user.user_id),
            created,
            created,
            1,
        )


async def bulk_insert_tasks(
    url: str,
    data: SeedData,
    count: int,
    *,
    start: int = 0,
    log: Callable[[str], None] = print,
) -> float:
    """COPY ``count`` tasks into ``tasks`` for ``data``'s users (round robin over them); returns
    the seconds it took.

    ``start`` numbers the rows across successive top-ups (titles stay unique).
    """
    if count <= 0:
        return 0.0
    started = time.perf_counter()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SET session_replication_role = replica")
        rows = _rows(data, start, count)
        done = 0
        while done < count:
            n = min(BATCH, count - done)
            batch = [next(rows) for _ in range(n)]
            await conn.copy_records_to_table("tasks", records=batch, columns=COLUMNS)
            done += n
            if done % 200_000 == 0 or done == count:
                log(f"  bulk insert: {done:,}/{count:,} tasks ({time.perf_counter() - started:.0f} s)")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def sample_task_ids(url: str, data: SeedData, per_user: int) -> dict[str, list[str]]:
    """Per seeded user id, up to ``per_user`` of its task ids drawn uniformly from the whole
    table (API-seeded and bulk rows alike), for the wrk scenarios to pick from."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT owner_id::text AS owner, id::text AS id FROM ("
            " SELECT owner_id, id, row_number() OVER (PARTITION BY owner_id ORDER BY random()) AS rn"
            " FROM tasks WHERE owner_id = ANY($1::uuid[])) s WHERE rn <= $2",
            [u.user_id for u in data.users],
            per_user,
        )
    finally:
        await conn.close()
    out: dict[str, list[str]] = {}
    for r in rows:
        out.setdefault(r["owner"], []).append(r["id"])
    return out
