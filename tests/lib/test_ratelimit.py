"""Contract suite for rampart.lib.ratelimit: the contract tests run against every backend (memory, the
host's shared memory, Redis). What only the shared-memory table does: tests/lib/test_ratelimit_shm.py."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis.asyncio

from rampart.lib.ratelimit import (
    _GCRA_LUA,
    Decision,
    MemoryRateLimiter,
    RateLimiter,
    RedisRateLimiter,
    _decide,
    _interval_us,
)
from rampart.lib.ratelimit_shm import SharedMemoryRateLimiter
from rampart.lib.rates import Rate

# Long enough that the few milliseconds a test takes barely move the numbers.
SLOW = Rate(10, 60.0)  # one request every 6 s
# Short enough for real sleeps: a burst of 5, then one every 0.1 s.
FAST = Rate(5, 0.5)
# Slack for time passing between hits (Redis round trips, a loaded CI machine).
SLACK = 0.05


@pytest.fixture(params=["memory", "shared-memory", "redis"])
async def limiter(
    request: pytest.FixtureRequest, redis_client: redis.asyncio.Redis, key_prefix: str, tmp_path: Path
) -> AsyncIterator[RateLimiter]:
    backend: RateLimiter
    if request.param == "memory":
        backend = MemoryRateLimiter()
    elif request.param == "shared-memory":
        backend = SharedMemoryRateLimiter(str(tmp_path / "limits"))
    else:
        backend = RedisRateLimiter(redis_client, prefix=key_prefix)
    yield backend
    await backend.close()


async def hits(limiter: RateLimiter, key: str, rate: Rate, n: int) -> list[Decision]:
    return [await limiter.hit(key, rate) for _ in range(n)]


async def test_allows_a_burst_of_exactly_count(limiter: RateLimiter) -> None:
    decisions = await hits(limiter, "k", SLOW, 11)
    assert [d.allowed for d in decisions] == [True] * 10 + [False]
    assert all(d.limit == 10 for d in decisions)


async def test_remaining_counts_down_to_zero(limiter: RateLimiter) -> None:
    decisions = await hits(limiter, "k", SLOW, 12)
    assert [d.remaining for d in decisions] == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0]


async def test_allowed_hits_report_when_the_bucket_is_full_again(limiter: RateLimiter) -> None:
    decisions = await hits(limiter, "k", SLOW, 10)
    for n, decision in enumerate(decisions, start=1):
        assert decision.retry_after == 0.0
        # n requests used up n emission intervals of 6 s each.
        assert decision.reset_after == pytest.approx(6.0 * n, abs=SLACK)


async def test_refusal_says_when_to_retry(limiter: RateLimiter) -> None:
    await hits(limiter, "k", SLOW, 10)
    refused = await limiter.hit("k", SLOW)
    assert not refused.allowed
    assert refused.remaining == 0
    assert 0 < refused.retry_after <= 6.0
    assert refused.retry_after == pytest.approx(SLOW.period / SLOW.count, abs=SLACK)
    assert refused.reset_after == pytest.approx(SLOW.period, abs=SLACK)


async def test_refused_hits_do_not_consume_capacity(limiter: RateLimiter) -> None:
    await hits(limiter, "k", SLOW, 10)
    first = await limiter.hit("k", SLOW)
    later = await hits(limiter, "k", SLOW, 5)
    assert not any(d.allowed for d in later)
    # Still about one interval away, not pushed further back by the refused attempts.
    assert later[-1].retry_after == pytest.approx(first.retry_after, abs=SLACK)


async def test_refills_one_request_per_interval(limiter: RateLimiter) -> None:
    await hits(limiter, "k", FAST, 5)
    refused = await limiter.hit("k", FAST)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(0.1, abs=SLACK)
    await asyncio.sleep(refused.retry_after + 0.02)
    again = await hits(limiter, "k", FAST, 2)
    assert [d.allowed for d in again] == [True, False]


async def test_refills_fully_after_a_whole_period(limiter: RateLimiter) -> None:
    await hits(limiter, "k", FAST, 6)
    await asyncio.sleep(FAST.period + 0.02)
    decisions = await hits(limiter, "k", FAST, 6)
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert decisions[0].remaining == 4


async def test_keys_are_independent(limiter: RateLimiter) -> None:
    await hits(limiter, "a", SLOW, 10)
    assert not (await limiter.hit("a", SLOW)).allowed
    other = await limiter.hit("b", SLOW)
    assert other.allowed
    assert other.remaining == 9


async def test_count_of_one_allows_one_then_waits_a_period(limiter: RateLimiter) -> None:
    rate = Rate(1, 60.0)
    first, second = await hits(limiter, "k", rate, 2)
    assert first.allowed
    assert first.remaining == 0
    assert not second.allowed
    assert second.retry_after == pytest.approx(60.0, abs=SLACK)


async def test_concurrent_hits_allow_exactly_count(limiter: RateLimiter) -> None:
    decisions = await asyncio.gather(*(limiter.hit("k", SLOW) for _ in range(50)))
    assert sum(d.allowed for d in decisions) == 10
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(10))


# Backend-specific behaviour.


async def test_redis_limits_are_shared_between_instances(
    make_redis_client: Callable[[], redis.asyncio.Redis], key_prefix: str
) -> None:
    # Two limiters on two connections pools, like two workers of one deployment.
    first = RedisRateLimiter(make_redis_client(), prefix=key_prefix)
    second = RedisRateLimiter(make_redis_client(), prefix=key_prefix)
    decisions = await asyncio.gather(
        *(limiter.hit("k", SLOW) for limiter in (first, second) for _ in range(15))
    )
    assert sum(d.allowed for d in decisions) == 10
    assert not (await first.hit("k", SLOW)).allowed
    assert not (await second.hit("k", SLOW)).allowed


async def test_redis_prefixes_keys_and_sets_an_expiry(
    redis_client: redis.asyncio.Redis, key_prefix: str
) -> None:
    limiter = RedisRateLimiter(redis_client, prefix=key_prefix)
    await hits(limiter, "k", SLOW, 3)
    # The key lives exactly as long as it takes the bucket to refill (3 intervals of 6 s).
    assert 17_900 < await redis_client.pttl(key_prefix + "k") <= 18_000


async def test_redis_script_decides_exactly_like_the_memory_backend(
    redis_client: redis.asyncio.Redis, key_prefix: str
) -> None:
    # Same script with "now" passed in instead of read from TIME, so both backends can be fed one
    # timeline and compared to the microsecond, at epoch magnitudes where Lua doubles are tightest.
    time_lines = "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) * 1000000 + tonumber(t[2])"
    assert time_lines in _GCRA_LUA
    script = redis_client.register_script(_GCRA_LUA.replace(time_lines, "local now = tonumber(ARGV[3])"))
    # Intervals of seconds, so Redis' real-time PX expiry cannot fire during the test's fake timeline.
    rates = [Rate(10, 60.0), Rate(7, 60.0), Rate(7, 10.0), Rate(100, 3600.0), Rate(1, 5.0)]
    rng = random.Random(20260101)
    now = 1_764_000_000_000_000
    tats: dict[str, int] = {}
    for _ in range(500):
        key, rate = rng.choice("ab"), rng.choice(rates)
        now += rng.choice([0, 0, 0, 1, 999, 250_000, 1_000_000, 6_000_000])
        expected, new_tat = _decide(tats.get(key), now, _interval_us(rate), rate.count)
        if new_tat is not None:
            tats[key] = new_tat
        result = await script(keys=[key_prefix + key], args=[_interval_us(rate), rate.count, now])
        assert result == [
            int(expected.allowed),
            expected.remaining,
            round(expected.reset_after * 1_000_000),
            round(expected.retry_after * 1_000_000),
        ]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_memory_decisions_are_exact_with_an_injected_clock() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    burst = await hits(limiter, "k", FAST, 6)
    assert burst[-2] == Decision(allowed=True, limit=5, remaining=0, reset_after=0.5, retry_after=0.0)
    assert burst[-1] == Decision(allowed=False, limit=5, remaining=0, reset_after=0.5, retry_after=0.1)
    clock.now += 0.1
    assert await limiter.hit("k", FAST) == Decision(
        allowed=True, limit=5, remaining=0, reset_after=0.5, retry_after=0.0
    )
    clock.now += 0.25
    assert await limiter.hit("k", FAST) == Decision(
        allowed=True, limit=5, remaining=1, reset_after=0.35, retry_after=0.0
    )


async def test_memory_uneven_intervals_still_allow_the_whole_burst() -> None:
    # 60 s / 7 is not a whole number of microseconds; rounding must not cost the burst its last request.
    limiter = MemoryRateLimiter(clock=FakeClock())
    decisions = await hits(limiter, "k", Rate(7, 60.0), 8)
    assert [d.allowed for d in decisions] == [True] * 7 + [False]


async def test_memory_drops_keys_whose_bucket_is_full_again() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    for key in ("a", "b", "c"):
        await limiter.hit(key, FAST)
    assert len(limiter._tats) == 3
    clock.now += 1.0
    await limiter.hit("d", FAST)
    await limiter.hit("e", FAST)
    assert len(limiter._tats) == 2


async def test_memory_is_bounded_by_max_keys_evicting_least_recently_used() -> None:
    limiter = MemoryRateLimiter(max_keys=3, clock=FakeClock())
    for key in ("a", "b", "c"):
        await limiter.hit(key, SLOW)
    await limiter.hit("a", SLOW)  # "a" is now the most recently used
    await limiter.hit("d", SLOW)
    assert len(limiter._tats) == 3
    assert (await limiter.hit("a", SLOW)).remaining == 7  # kept: third hit
    assert (await limiter.hit("b", SLOW)).remaining == 9  # evicted: starts afresh


def test_memory_refuses_a_zero_bound() -> None:
    with pytest.raises(ValueError, match="max_keys"):
        MemoryRateLimiter(max_keys=0)
