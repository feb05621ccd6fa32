"""What only the shared-memory limiter does: one table for several processes, the same decisions as the
memory backend to the microsecond, a bounded table, a lock no dead process can keep, a table from another
boot emptied. The contract it shares with the other backends: tests/lib/test_ratelimit.py."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.lib.test_ratelimit import SLOW, FakeClock, hits

from rampart.lib.ratelimit import Decision, MemoryRateLimiter
from rampart.lib.ratelimit_shm import _HEADER, _MAGIC, WAYS, SharedMemoryRateLimiter
from rampart.lib.rates import Rate


def _path(tmp_path: Path) -> str:
    return str(tmp_path / "limits")


async def test_two_limiters_on_one_file_share_their_limits(tmp_path: Path) -> None:
    first = SharedMemoryRateLimiter(_path(tmp_path))
    second = SharedMemoryRateLimiter(_path(tmp_path))
    decisions = await asyncio.gather(*(lim.hit("k", SLOW) for lim in (first, second) for _ in range(15)))
    assert sum(d.allowed for d in decisions) == 10
    assert not (await first.hit("k", SLOW)).allowed
    assert not (await second.hit("k", SLOW)).allowed
    await first.close()
    assert not (await second.hit("k", SLOW)).allowed  # one process closing takes nothing from the others


# Each process: wait for the go file, then 500 hits on one key; prints how many were allowed.
HIT_MANY = """
import asyncio, os, sys, time
from rampart.lib.ratelimit_shm import SharedMemoryRateLimiter
from rampart.lib.rates import Rate

async def run():
    limiter = SharedMemoryRateLimiter(sys.argv[1])
    while not os.path.exists(sys.argv[2]):
        time.sleep(0.001)
    decisions = [await limiter.hit("auth:ip:203.0.113.9", Rate(20, 60.0)) for _ in range(500)]
    print(sum(d.allowed for d in decisions))

asyncio.run(run())
"""


def test_processes_hitting_at_once_get_exactly_the_limit_between_them(tmp_path: Path) -> None:
    go = tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, "-c", HIT_MANY, _path(tmp_path), str(go)], stdout=subprocess.PIPE)
        for _ in range(3)
    ]
    time.sleep(0.5)  # all started, waiting
    go.touch()
    allowed = [int(proc.communicate(timeout=60)[0]) for proc in procs]
    assert sum(allowed) == 20, allowed


async def test_decides_exactly_like_the_memory_backend(tmp_path: Path) -> None:
    clock = FakeClock()
    shared = SharedMemoryRateLimiter(_path(tmp_path), clock=clock)
    memory = MemoryRateLimiter(clock=clock)
    rates = [Rate(10, 60.0), Rate(7, 60.0), Rate(7, 10.0), Rate(100, 3600.0), Rate(1, 5.0), Rate(5, 0.5)]
    rng = random.Random(20261127)
    for _ in range(2000):
        key, rate = rng.choice("abcd"), rng.choice(rates)
        clock.now += rng.choice([0, 0, 0, 1e-6, 0.000999, 0.25, 1.0, 6.0])
        assert await shared.hit(key, rate) == await memory.hit(key, rate)


async def test_a_full_bucket_forgets_the_key_nearest_to_a_full_budget(tmp_path: Path) -> None:
    clock = FakeClock()
    limiter = SharedMemoryRateLimiter(_path(tmp_path), slots=WAYS, clock=clock)  # one bucket
    keys = [f"k{i}" for i in range(WAYS)]
    for n, key in enumerate(keys):
        await hits(limiter, key, SLOW, 2 if n else 1)  # k0 has used the least
    await limiter.hit("newcomer", SLOW)  # no room: k0 is forgotten
    assert (await limiter.hit("k0", SLOW)).remaining == 9  # afresh (and "k1" is forgotten now)
    assert (await limiter.hit("k2", SLOW)).remaining == 7  # kept: its third hit


async def test_a_key_whose_budget_is_full_again_gives_way_without_changing_a_decision(tmp_path: Path) -> None:
    clock = FakeClock()
    limiter = SharedMemoryRateLimiter(_path(tmp_path), slots=WAYS, clock=clock)
    for i in range(WAYS):
        await hits(limiter, f"k{i}", SLOW, 10)
    clock.now += 60.0  # every budget is full again: each slot is free
    for i in range(WAYS):
        assert (await limiter.hit(f"new{i}", SLOW)).remaining == 9
    assert (await limiter.hit("k3", SLOW)).remaining == 9  # the old key starts afresh, as if absent


HOLD_THE_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(60)
"""


async def test_a_process_killed_holding_the_lock_does_not_hold_it(tmp_path: Path) -> None:
    limiter = SharedMemoryRateLimiter(_path(tmp_path))
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_LOCK, _path(tmp_path)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"locked\n"
        blocked = asyncio.get_running_loop().run_in_executor(None, _hit_in_a_thread, _path(tmp_path))
        await asyncio.sleep(0.2)
        assert not blocked.done()  # the lock is held...
        holder.kill()  # ...by a worker killed mid-hit (OOM, kill -9)
        decision = await asyncio.wait_for(blocked, timeout=5)
        assert decision.allowed
        assert (await limiter.hit("k", SLOW)).remaining == 8
    finally:
        holder.kill()
        holder.communicate(timeout=10)


def _hit_in_a_thread(path: str) -> Decision:
    async def one() -> Decision:
        limiter = SharedMemoryRateLimiter(path)
        try:
            return await limiter.hit("k", SLOW)
        finally:
            await limiter.close()

    return asyncio.run(one())


async def test_a_table_from_another_boot_is_emptied(tmp_path: Path) -> None:
    path = _path(tmp_path)
    limiter = SharedMemoryRateLimiter(path)
    await hits(limiter, "k", SLOW, 10)
    await limiter.close()
    with open(path, "r+b") as f:  # the same table, as if written before a reboot
        f.write((_MAGIC + b"00000000-0000-0000-0000-000000000000").ljust(_HEADER, b"\0"))
    again = SharedMemoryRateLimiter(path)
    assert (await again.hit("k", SLOW)).remaining == 9
    still = SharedMemoryRateLimiter(path)  # this boot's table is kept as it is
    assert (await still.hit("k", SLOW)).remaining == 8


def test_a_file_that_is_no_table_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other"
    path.write_bytes(b"something else entirely" * 100)
    with pytest.raises(ValueError, match="something else"):
        SharedMemoryRateLimiter(str(path))
    assert path.read_bytes() == b"something else entirely" * 100


def test_a_symlink_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"")
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(OSError, match="symbolic links"):
        SharedMemoryRateLimiter(str(tmp_path / "link"))
    assert target.read_bytes() == b""


def test_the_table_is_private_to_its_owner(tmp_path: Path) -> None:
    SharedMemoryRateLimiter(_path(tmp_path))
    assert os.stat(_path(tmp_path)).st_mode & 0o777 == 0o600


@pytest.mark.parametrize("slots", [0, 7, 12])
def test_refuses_a_table_of_no_whole_bucket(tmp_path: Path, slots: int) -> None:
    with pytest.raises(ValueError, match="multiple"):
        SharedMemoryRateLimiter(_path(tmp_path), slots=slots)
