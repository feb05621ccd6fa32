"""Revocation across two running server processes: a logout, a session revoked, a user disabled or
demoted through one process is refused by the other at once (PostgreSQL NOTIFY drops its cached session
state), well inside API.md's 1 s bound, which the per-worker cache alone would only just keep."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rampart.app import Rampart
from tests.conftest import TEST_SECRET, MakeUser, User
from tests.oidc.node_provider import free_port

RAMPART = str(Path(sys.executable).with_name("rampart"))
ME = "/api/v1/auth/me"
INSTANT = 0.5  # the cache alone, warmed just before, would keep serving for ~1 s


@pytest.fixture(scope="module")
def two_servers(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAMPART_")}
    env.update(
        {
            "RAMPART_ENV": "test",
            "RAMPART_DATABASE_URL": database_url,
            "RAMPART_JWT_SECRET": TEST_SECRET,
            "RAMPART_ACCESS_LOG": "false",
            "RAMPART_RATE_LIMIT": "1000000/minute",
            "RAMPART_SESSION_CACHE_TTL": "1.0",
        }
    )
    cwd = tmp_path_factory.mktemp("servers")
    ports = [free_port(), free_port()]
    procs = [
        subprocess.Popen(
            [RAMPART, "serve", "--no-migrate", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        deadline = time.monotonic() + 30
        for url, proc in zip(urls, procs, strict=True):
            while True:
                assert proc.poll() is None, "a server exited at start"
                assert time.monotonic() < deadline, "a server did not start"
                try:
                    if httpx.get(f"{url}/health/live", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        yield urls[0], urls[1]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def refused_after(http: httpx.AsyncClient, url: str, token: str, refused: int = 401) -> float:
    """Seconds until `url` refuses `token` (asserting it is served until then), at most 2 s."""
    started = time.monotonic()
    while True:
        r = await http.get(url, headers=bearer(token))
        elapsed = time.monotonic() - started
        if r.status_code == refused:
            return elapsed
        assert r.status_code == 200, r.text
        assert elapsed < 2.0, "still served after 2 s"
        await asyncio.sleep(0.01)


async def listening(http: httpx.AsyncClient, a: str, b: str, make_user: MakeUser) -> None:
    """Wait until both servers' notification listeners are up (they connect after startup)."""
    deadline = time.monotonic() + 15
    while True:
        probe = await make_user()
        for server in (a, b):
            assert (await http.get(f"{server}{ME}", headers=probe.headers)).status_code == 200
        assert (await http.post(f"{a}/api/v1/auth/logout", headers=probe.headers)).status_code == 204
        if await refused_after(http, f"{b}{ME}", probe.token) < INSTANT:
            # and the other way round
            probe = await make_user()
            assert (await http.get(f"{a}{ME}", headers=probe.headers)).status_code == 200
            assert (await http.post(f"{b}/api/v1/auth/logout", headers=probe.headers)).status_code == 204
            if await refused_after(http, f"{a}{ME}", probe.token) < INSTANT:
                return
        assert time.monotonic() < deadline, "the servers never picked up revocations at once"


async def test_logout_on_one_process_is_refused_by_the_other_at_once(
    two_servers: tuple[str, str], make_user: MakeUser
) -> None:
    a, b = two_servers
    async with httpx.AsyncClient(timeout=5) as http:
        await listening(http, a, b, make_user)
        for _ in range(3):
            user = await make_user()
            assert (await http.get(f"{a}{ME}", headers=user.headers)).status_code == 200  # read by a
            assert (await http.get(f"{b}{ME}", headers=user.headers)).status_code == 200  # cached on b
            assert (await http.post(f"{a}/api/v1/auth/logout", headers=user.headers)).status_code == 204
            assert await refused_after(http, f"{b}{ME}", user.token) < INSTANT


async def test_revoking_a_session_and_disabling_a_user_reach_the_other_process(
    two_servers: tuple[str, str], make_user: MakeUser, app: Rampart
) -> None:
    a, b = two_servers
    admin = await make_user("admin")
    async with httpx.AsyncClient(timeout=5) as http:
        await listening(http, a, b, make_user)
        # one session revoked from the user's other session
        user: User = await make_user()
        async with app.services.db.transaction() as conn:
            from rampart.auth.sessions import open_session

            other = await open_session(
                conn, app.services.tokens, user_id=uuid.UUID(user.id), role="user", session_ttl=600
            )
        assert (await http.get(f"{b}{ME}", headers=user.headers)).status_code == 200
        r = await http.delete(
            f"{a}/api/v1/auth/sessions/{user.session_id}", headers=bearer(other.access_token)
        )
        assert r.status_code == 204
        assert await refused_after(http, f"{b}{ME}", user.token) < INSTANT
        # a user disabled through a
        victim = await make_user()
        assert (await http.get(f"{b}{ME}", headers=victim.headers)).status_code == 200
        r = await http.patch(
            f"{a}/api/v1/admin/users/{victim.id}", json={"disabled": True}, headers=admin.headers
        )
        assert r.status_code == 200, r.text
        assert await refused_after(http, f"{b}{ME}", victim.token) < INSTANT


async def test_a_demotion_reaches_the_other_process_at_once(
    two_servers: tuple[str, str], make_user: MakeUser
) -> None:
    a, b = two_servers
    boss, demoted = await make_user("admin"), await make_user("admin")
    async with httpx.AsyncClient(timeout=5) as http:
        await listening(http, a, b, make_user)
        users_url = f"{b}/api/v1/admin/users"
        assert (await http.get(users_url, headers=demoted.headers)).status_code == 200
        r = await http.patch(
            f"{a}/api/v1/admin/users/{demoted.id}", json={"role": "user"}, headers=boss.headers
        )
        assert r.status_code == 200
        assert await refused_after(http, users_url, demoted.token, refused=403) < INSTANT
