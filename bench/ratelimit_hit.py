"""What one rate-limit hit costs on each backend: it is paid by every API request (the API class is limited
per caller) and by every auth request.

Times `limiter.hit(key, rate)` on one event loop, one call after another, for
- memory: `MemoryRateLimiter` (one worker's own limits);
- shared memory: `SharedMemoryRateLimiter` on a table in /dev/shm (the limits of one host's workers),
  alone, and with a second process hitting the same table as fast as it can (the lock contended);
- Redis: `RedisRateLimiter` (limits across instances), for scale;
each with one hot key (one caller) and with 10,000 keys in turn (many callers), and, for the lock, a bare
flock/unlock pair and a multiprocessing.Lock acquire/release pair.

Run: `.venv/bin/python bench/ratelimit_hit.py [--rounds 200000]` (Redis on 127.0.0.1 for its rows).
Recorded in docs/decisions/0017-host-rate-limits.md.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import redis.asyncio  # noqa: E402

from rampart.lib.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter  # noqa: E402
from rampart.lib.ratelimit_shm import SharedMemoryRateLimiter  # noqa: E402
from rampart.lib.rates import Rate  # noqa: E402

RATE = Rate(10**9, 60.0)  # always allowed: every hit writes, the common case of a request
KEYS = [f"api:u:{i:08d}-0000-7000-8000-000000000000" for i in range(10_000)]


async def per_hit(limiter: RateLimiter, rounds: int, keys: list[str]) -> float:
    """Mean microseconds per hit over `rounds` hits, after a warm-up."""
    n = len(keys)
    for i in range(min(rounds, 20_000)):
        await limiter.hit(keys[i % n], RATE)
    started = time.perf_counter()
    for i in range(rounds):
        await limiter.hit(keys[i % n], RATE)
    return (time.perf_counter() - started) / rounds * 1e6


def per_call(rounds: int, op: Callable[[], object]) -> float:
    started = time.perf_counter()
    for _ in range(rounds):
        op()
    return (time.perf_counter() - started) / rounds * 1e6


def _hammer(path: str, seconds: float) -> None:
    async def run() -> None:
        limiter = SharedMemoryRateLimiter(path)
        deadline = time.monotonic() + seconds
        i = 0
        while time.monotonic() < deadline:
            await limiter.hit(KEYS[i % len(KEYS)], RATE)
            i += 1
        await limiter.close()

    asyncio.run(run())


async def main(rounds: int, path: str) -> None:
    rows: list[tuple[str, float, float]] = []
    try:
        memory = MemoryRateLimiter()
        rows.append(("memory", await per_hit(memory, rounds, KEYS[:1]), await per_hit(memory, rounds, KEYS)))
        shared = SharedMemoryRateLimiter(path)
        rows.append(
            ("shared memory", await per_hit(shared, rounds, KEYS[:1]), await per_hit(shared, rounds, KEYS))
        )
        seconds = 2 * rounds * 20e-6 + 5
        other = multiprocessing.get_context("spawn").Process(target=_hammer, args=(path, seconds))
        other.start()
        await asyncio.sleep(1.0)  # the other process is hitting by now
        contended = (await per_hit(shared, rounds, KEYS[:1]), await per_hit(shared, rounds, KEYS))
        other.terminate()
        other.join()
        rows.append(("shared memory, a second process hitting too", *contended))
        fd = os.open(path, os.O_RDWR)

        def flock_pair() -> None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            fcntl.flock(fd, fcntl.LOCK_UN)

        lock = multiprocessing.get_context("spawn").Lock()

        def semaphore_pair() -> None:
            lock.acquire()
            lock.release()

        flock_cost = per_call(rounds, flock_pair)
        semaphore_cost = per_call(rounds, semaphore_pair)
        os.close(fd)
        await shared.close()
        client = redis.asyncio.Redis.from_url(
            os.environ.get("RAMPART_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
        )
        try:
            prefix = f"rampart-bench:{os.getpid()}:"
            remote = RedisRateLimiter(client, prefix=prefix)
            few = max(1000, rounds // 50)
            rows.append(("Redis", await per_hit(remote, few, KEYS[:1]), await per_hit(remote, few, KEYS)))
            keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
            if keys:
                await client.unlink(*keys)
        finally:
            await client.aclose()
    finally:
        os.unlink(path)
    print(f"{rounds} hits per row (Redis: fewer); mean microseconds per hit\n")
    print("| backend | one key | 10,000 keys in turn |")
    print("|---|---|---|")
    for name, one, many in rows:
        print(f"| {name} | {one:.2f} | {many:.2f} |")
    print(
        f"\nlock alone: flock + unlock {flock_cost:.2f} µs; multiprocessing.Lock acquire + release "
        f"{semaphore_cost:.2f} µs"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=200_000)
    args = parser.parse_args()
    folder = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108 - memory, not a disk
    fd, table = tempfile.mkstemp(prefix="rampart-rl-bench-", dir=folder)
    os.close(fd)
    asyncio.run(main(args.rounds, table))
