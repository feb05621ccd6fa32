"""The Redis client every Redis user of a worker shares (rate limits, caches, replica marks)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis.asyncio


def connect(url: str, *, timeout: float = 1.0) -> redis.asyncio.Redis:
    """A client whose every command is bounded by `timeout` seconds, and which survives a Redis restart.

    Bounded: a Redis that stops answering must give quick 503s (or send caches to the database), not hold
    every request. A connection error is retried once, at once, on a new connection: after a restart every
    pooled connection is stale, and each would fail one request (a retried rate-limit script can only make
    the limit stricter by one hit). A timeout is not retried (`supported_errors`): a hung Redis costs one.
    """
    # Imported only when Redis is configured: ~6 MB per worker otherwise.
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError

    return aioredis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        retry_on_error=[RedisConnectionError],
    )
