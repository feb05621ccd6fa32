"""Redis restarted under the limiter: once it is back, no request fails.

Regression: every connection pooled before the restart was stale, and each failed one request (a 503
from the failing-closed limiter) on its next use, long after Redis had come back. Found by the Redis
fault of tests/reliability/test_faults.py (the readiness check still said "redis: unreachable" minutes
later, while Redis answered).
"""

from __future__ import annotations

import asyncio

import httpx

from rampart.app import create_app
from tests.conftest import make_settings, new_user
from tests.reliability.services import PrivateRedis


async def test_after_a_redis_restart_no_request_fails(database_url: str, private_redis: PrivateRedis) -> None:
    app = create_app(make_settings(database_url, redis_url=private_redis.url))
    try:
        user = await new_user(app)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=user.headers) as http:

            async def burst() -> list[int]:  # concurrent: the limiter's Redis pool opens several connections
                answers = await asyncio.gather(*(http.get("/api/v1/auth/me") for _ in range(8)))
                return [r.status_code for r in answers]

            assert await burst() == [200] * 8
            private_redis.stop()
            down = await http.get("/api/v1/auth/me")
            assert down.status_code == 503
            assert down.json()["code"] == "service_unavailable"
            private_redis.start()
            assert [await burst() for _ in range(4)] == [[200] * 8] * 4
            ready = await http.get("/health/ready")
            assert ready.status_code == 200, ready.text
    finally:
        await app.aclose()
