"""What read replicas cost per request: the read-your-writes check on reads, and the mark on writes.

Starts a private primary with one streaming standby (tests/pgservers.py, a few seconds), then times, one
operation at a time on one event loop (so the figures are latencies, not throughput):

- a `SELECT 1` on the primary's pool, on the replica through the router without a caller (no mark to
  look up), and with a caller whose mark is looked up in memory or in Redis;
- `wrote()`, the mark after a write (the primary's WAL position, then a Redis `set_max`);
- one probe of the replica (what the router runs at most every 20 ms per replica and worker);
- `GET /api/v1/projects` through the whole app, without replicas and with one (Redis marks).

Run: `.venv/bin/python bench/replica_overhead.py [--rounds 3000]` (PostgreSQL server binaries and a
Redis on 127.0.0.1:6379 needed). Recorded in docs/decisions/0010-read-replicas.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import redis.asyncio  # noqa: E402
from tests.conftest import REDIS_URL, make_settings, new_user, wait_for_cache  # noqa: E402
from tests.pgservers import replication, wait_caught_up  # noqa: E402

from rampart.app import create_app  # noqa: E402
from rampart.clitasks import migrate_all  # noqa: E402
from rampart.db.pool import Database  # noqa: E402
from rampart.db.replicas import _PROBE, Replicas  # noqa: E402
from rampart.lib.store import MemoryStore, RedisStore  # noqa: E402
from timing import line, timed  # noqa: E402


async def measure(primary_url: str, standby_url: str, rounds: int) -> None:
    primary = Database(primary_url, max_size=4)
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    namespace = f"rampart-bench:{uuid.uuid4().hex}:"
    in_memory = Replicas(primary, [standby_url], marks=MemoryStore())
    in_redis = Replicas(primary, [standby_url], marks=RedisStore(client, namespace=namespace))
    print("| operation | median µs | p99 µs |\n|---|---|---|")
    try:
        line("`SELECT 1` on the primary pool", await timed(rounds, lambda: primary.fetchrow("SELECT 1")))
        line(
            "`SELECT 1` via the router, no caller (replica)",
            await timed(rounds, lambda: in_memory.fetchrow(None, "SELECT 1")),
        )
        line(
            "`SELECT 1` via the router, mark in memory (replica)",
            await timed(rounds, lambda: in_memory.fetchrow("alice", "SELECT 1")),
        )
        line(
            "`SELECT 1` via the router, mark in Redis (replica)",
            await timed(rounds, lambda: in_redis.fetchrow("alice", "SELECT 1")),
        )
        line(
            "`wrote()`: WAL position + Redis `set_max`", await timed(rounds, lambda: in_redis.wrote("alice"))
        )
        probe = in_memory.replicas[0].db
        line("one replica probe (the query alone)", await timed(rounds, lambda: probe.fetchrow(_PROBE)))
        print(f"\nreads by target: {in_memory.counts} (memory marks), {in_redis.counts} (Redis marks)")
    finally:
        await in_memory.close()
        await in_redis.close()
        await primary.close()
        keys = [key async for key in client.scan_iter(match=namespace + "*")]
        if keys:
            await client.unlink(*keys)
        await client.aclose()


async def measure_app(primary_url: str, standby_url: str, rounds: int) -> None:
    # All with Redis (the rate limiter too), so that what differs is the replica routing; with the
    # caches on and off, since the page cache answers a repeated list from memory on the primary only.
    # The four apps run side by side and take turns (5 turns each), so that a change in the machine's
    # load during the run weighs on all of them alike.
    replica = {"database_replica_urls": [standby_url]}
    configurations = {
        "primary only, caches on": {},
        "primary only, caches off": {"cache": "off"},
        "one replica, caches on": replica,
        "one replica, caches off": {**replica, "cache": "off"},
    }
    clients: dict[str, httpx.AsyncClient] = {}
    apps = []
    for name, overrides in configurations.items():
        app = create_app(make_settings(primary_url, redis_url=REDIS_URL, **overrides))
        await app.startup()
        await wait_for_cache(app)
        user = await new_user(app)
        apps.append(app)
        transport = httpx.ASGITransport(app=app)
        clients[name] = httpx.AsyncClient(transport=transport, base_url="http://bench", headers=user.headers)
    await wait_caught_up(primary_url, standby_url)
    samples: dict[str, list[float]] = {name: [] for name in configurations}
    try:
        for _ in range(5):
            for name, http in clients.items():
                for _ in range(rounds // 5):
                    started = time.perf_counter()
                    response = await http.get("/api/v1/projects")
                    samples[name].append((time.perf_counter() - started) * 1e6)
                    assert response.status_code == 200, response.text
    finally:
        for http in clients.values():
            await http.aclose()
        for app in apps:
            await app.aclose()
    print("\n| `GET /api/v1/projects` (in-process, one at a time) | median µs | p99 µs |\n|---|---|---|")
    for name, values in samples.items():
        values.sort()
        line(name, (statistics.median(values), values[int(len(values) * 0.99) - 1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3000)
    args = parser.parse_args()
    with replication() as cluster:
        migrate_all(make_settings(cluster.primary_url))
        cluster.add_standby()
        asyncio.run(measure(cluster.primary_url, cluster.standby_url, args.rounds))
        asyncio.run(measure_app(cluster.primary_url, cluster.standby_url, args.rounds))


if __name__ == "__main__":
    main()
