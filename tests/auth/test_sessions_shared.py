"""The Redis tier of the session cache (rampart.auth.sessions_shared), on a real Redis and PostgreSQL.

What it promises (docs/decisions/0005-session-check.md): one database read serves every worker and
instance, and only until one `ttl` (1 s) after that read, in Redis and in every worker's memory; an
announcement heard by one worker deletes the shared entry for all; Redis failing (down or hung) fails
no check and stretches no bound; Redis holds session ids, user ids and roles, never token text.

Each "worker" here is an Authenticator with its own memory tier and its own SharedSessions writer over one
Redis namespace, counting its database reads. Revocations are made in SQL without an announcement where
a test must see what the cache alone does.
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
import redis.asyncio

from rampart.app import Rampart, create_app
from rampart.auth.sessions import Authenticator, open_session
from rampart.errors import Unauthorized
from rampart.lib.redisclient import connect
from tests.auth.conftest import CountingDb, Tiers
from tests.conftest import REDIS_URL, MakeUser, User, make_settings, new_user
from tests.reliability.services import PrivateRedis

BOUND = 1.0  # the session cache's ttl: the contract's revocation bound
SLACK = 0.1  # this test's own polling and scheduling


def worker(app: Rampart, tiers: Tiers) -> tuple[Authenticator, CountingDb]:
    """An Authenticator as one worker has it, over the test's Redis tier; and its counted database."""
    db = CountingDb(app.services.db)
    s = app.services
    return Authenticator(db=db, tokens=s.tokens, roles=s.roles, shared=tiers.make()), db


def bearer(token: str) -> str:
    return f"Bearer {token}"


async def until(check: Callable[[], bool | Awaitable[bool]], within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result if isinstance(result, bool) else await result:
            return
        assert time.monotonic() < deadline, f"not true within {within} s"
        await asyncio.sleep(0.005)


def stored(tiers: Tiers, session_id: uuid.UUID) -> Callable[[], Awaitable[bool]]:
    """Whether Redis holds the session as live (a "no live session" entry does not count)."""

    async def check() -> bool:
        return bool(await tiers.client.get(f"{tiers.namespace}s:{session_id}"))

    return check


async def revoke_in_sql(app: Rampart, session_id: uuid.UUID) -> None:
    """A revocation nobody announces: only the cache's bound ends the session."""
    await app.services.db.execute("UPDATE sessions SET revoked_at = now() WHERE id = $1", session_id)


async def refused_at(auth: Authenticator, header: str, *, give_up: float = 3.0) -> float:
    """The monotonic time at which `auth` first refuses `header` (polled every 10 ms)."""
    deadline = time.monotonic() + give_up
    while True:
        try:
            await auth.authenticate(header)
        except Unauthorized:
            return time.monotonic()
        assert time.monotonic() < deadline, "never refused"
        await asyncio.sleep(0.01)


async def test_one_database_read_serves_every_worker_until_its_deadline(
    app: Rampart, alice: User, redis_tiers: Tiers
) -> None:
    a, a_db = worker(app, redis_tiers)
    b, b_db = worker(app, redis_tiers)
    await a.authenticate(bearer(alice.token))
    await until(stored(redis_tiers, alice.session_id))
    await revoke_in_sql(app, alice.session_id)
    await b.authenticate(bearer(alice.token))  # A's answer, from Redis: B asks no database
    assert (a_db.queries, b_db.queries) == (1, 0)
    refused = await refused_at(b, bearer(alice.token))
    assert refused - a_db.read_at <= BOUND + SLACK  # and only until a second after A's read
    assert b_db.queries >= 1


async def test_an_entry_taken_from_redis_keeps_its_original_deadline(
    app: Rampart, alice: User, redis_tiers: Tiers
) -> None:
    a, a_db = worker(app, redis_tiers)
    b, b_db = worker(app, redis_tiers)
    await a.authenticate(bearer(alice.token))
    await asyncio.sleep(0.6)
    await b.authenticate(bearer(alice.token))
    assert b_db.queries == 0  # from Redis, with 0.4 s left
    until_in_memory = b._cache[alice.session_id][0]
    assert until_in_memory <= a_db.read_at + BOUND  # the time Redis says is left, not a fresh second
    await revoke_in_sql(app, alice.session_id)
    refused = await refused_at(b, bearer(alice.token))
    assert refused - a_db.read_at <= BOUND + SLACK  # a fresh second would serve it until ~1.6 s


async def test_the_shared_entry_counts_from_before_the_database_read(
    app: Rampart, alice: User, redis_tiers: Tiers
) -> None:
    a, a_db = worker(app, redis_tiers)
    a_db.delay_after = 0.4  # the state is read, and its answer takes 0.4 s to arrive
    await a.authenticate(bearer(alice.token))
    await until(stored(redis_tiers, alice.session_id))
    before = time.monotonic()
    left_ms = await redis_tiers.client.pttl(f"{redis_tiers.namespace}s:{alice.session_id}")
    assert left_ms > 0
    # ~0.6 s left: a second from before the query was sent, not from the write after its slow answer.
    # (`before + left` is at most the entry's real deadline: Redis counted after `before`.)
    assert before + left_ms / 1000 <= a_db.asked_at + BOUND + 0.001  # Redis counts whole milliseconds


@pytest.mark.parametrize("by", ["session", "user"])
async def test_an_announcement_heard_by_one_worker_deletes_the_shared_entry_for_all(
    app: Rampart, make_user: MakeUser, redis_tiers: Tiers, by: str
) -> None:
    user = await make_user()
    async with app.services.db.transaction() as conn:  # a second session of the same user
        other = await open_session(
            conn, app.services.tokens, user_id=uuid.UUID(user.id), role="user", session_ttl=600
        )
    tokens = [user.token, other.access_token] if by == "user" else [user.token]
    a, _ = worker(app, redis_tiers)
    b, _ = worker(app, redis_tiers)
    for token in tokens:
        await a.authenticate(bearer(token))
    await until(stored(redis_tiers, other.session_id if by == "user" else user.session_id))
    if by == "user":
        await app.services.db.execute("UPDATE users SET disabled = true WHERE id = $1", uuid.UUID(user.id))
        b.on_announcement(f"u:{user.id}")
    else:
        await revoke_in_sql(app, user.session_id)
        b.on_announcement(f"s:{user.session_id}")
    for token in tokens:
        with pytest.raises(Unauthorized):
            await b.authenticate(bearer(token))  # at once on the worker that heard it
        await a.authenticate(bearer(token))  # the control: A has not heard, its memory still serves
    for sid in (user.session_id, other.session_id):  # gone from Redis at once, not in a second
        await until(lambda sid=sid: _not(stored(redis_tiers, sid)), within=0.3)
    c, _ = worker(app, redis_tiers)  # a worker that heard nothing: Redis no longer answers "live"
    for token in tokens:
        with pytest.raises(Unauthorized):
            await c.authenticate(bearer(token))


async def _not(check: Callable[[], Awaitable[bool]]) -> bool:
    return not await check()


@pytest.fixture
async def private_tiers(private_redis: PrivateRedis) -> AsyncIterator[Tiers]:
    """Tiers on the private Redis, with short timeouts, which a test may stop and start."""
    client = connect(private_redis.url, timeout=0.5)  # as create_app makes it, with a shorter timeout
    tiers = Tiers("redis", client)
    try:
        yield tiers
    finally:
        for tier in tiers.made:
            await tier.stop()
        await client.aclose()


async def test_redis_stopped_mid_run_fails_no_check_and_keeps_the_bound(
    app: Rampart,
    make_user: MakeUser,
    private_redis: PrivateRedis,
    private_tiers: Tiers,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, a_db = worker(app, private_tiers)
    b, b_db = worker(app, private_tiers)
    tier = b._shared
    assert tier is not None
    alice = await make_user()
    await a.authenticate(bearer(alice.token))
    await until(stored(private_tiers, alice.session_id))
    await b.authenticate(bearer(alice.token))
    assert b_db.queries == 0
    caplog.set_level(logging.WARNING, logger="rampart.auth.sessions")

    private_redis.stop()
    users = [await make_user() for _ in range(3)]
    for user in users:  # checked in the database, none refused for Redis's sake
        for _ in range(2):
            assert str((await b.authenticate(bearer(user.token))).user_id) == user.id
    b.on_announcement(f"s:{uuid.uuid4()}")  # announcements do not fail either
    b.on_announcement(f"u:{uuid.uuid4()}")
    await revoke_in_sql(app, alice.session_id)
    refused = await refused_at(b, bearer(alice.token))
    assert refused - a_db.read_at <= BOUND + SLACK
    outage_ends = time.monotonic() + 2.5  # checks keep coming while Redis stays down (and is probed)
    while time.monotonic() < outage_ends:
        await b.authenticate(bearer(users[0].token))
        await asyncio.sleep(0.05)
    warnings = [
        r for r in caplog.records if r.name == "rampart.auth.sessions" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]  # once for the outage, not per check
    assert not any(text in warnings[0].getMessage() for text in (str(alice.session_id), alice.token))

    private_redis.start()
    await until(lambda: tier.usable, within=5.0)
    bob = await make_user()
    await a.authenticate(bearer(bob.token))
    await until(stored(private_tiers, bob.session_id))
    queries = b_db.queries
    await b.authenticate(bearer(bob.token))
    assert b_db.queries == queries  # from Redis again


async def test_a_hung_redis_costs_a_check_its_timeout_at_most(
    app: Rampart, alice: User, private_redis: PrivateRedis, private_tiers: Tiers
) -> None:
    b, b_db = worker(app, private_tiers)
    tier = b._shared
    assert tier is not None
    assert private_redis.proc is not None
    private_redis.proc.send_signal(signal.SIGSTOP)  # it accepts nothing and answers nothing
    try:
        started = time.monotonic()
        assert str((await b.authenticate(bearer(alice.token))).user_id) == alice.id
        # The client's timeout (0.5 s, not retried), then the database.
        assert time.monotonic() - started < 0.5 + SLACK * 3
        assert b_db.queries == 1
        b.forget(alice.session_id)
        started = time.monotonic()
        await b.authenticate(bearer(alice.token))  # Redis is known down: straight to the database
        assert time.monotonic() - started < SLACK
    finally:
        private_redis.proc.send_signal(signal.SIGCONT)
    await until(lambda: tier.usable, within=5.0)


async def test_a_deletion_missed_while_redis_failed_keeps_the_tier_unused_until_it_would_have_expired(
    app: Rampart, alice: User, bob: User, private_redis: PrivateRedis, private_tiers: Tiers
) -> None:
    a, a_db = worker(app, private_tiers)
    b, _ = worker(app, private_tiers)
    tier = b._shared
    assert tier is not None
    assert private_redis.proc is not None
    private_redis.proc.send_signal(signal.SIGSTOP)
    try:
        await b.authenticate(bearer(bob.token))  # B finds Redis hung: its tier steps aside
    finally:
        private_redis.proc.send_signal(signal.SIGCONT)
    assert not tier.usable
    await asyncio.sleep(0.4)
    await a.authenticate(bearer(alice.token))  # A noticed nothing: its read goes to Redis, live for 1 s
    await until(stored(private_tiers, alice.session_id))
    await revoke_in_sql(app, alice.session_id)
    b.on_announcement(f"s:{alice.session_id}")  # B cannot delete the entry now: it must not read it later
    s = app.services
    while time.monotonic() < a_db.read_at + BOUND + 0.1:  # past B's first probe (a second after it failed)
        fresh = Authenticator(db=s.db, tokens=s.tokens, roles=s.roles, shared=tier)  # B, memory empty
        with pytest.raises(Unauthorized):
            await fresh.authenticate(bearer(alice.token))
        await asyncio.sleep(0.02)
    await until(lambda: tier.usable, within=3.0)


@pytest.fixture
async def redis_app(database_url: str) -> AsyncIterator[Rampart]:
    app = create_app(make_settings(database_url, session_cache="redis", redis_url=REDIS_URL))
    await app.startup()
    yield app
    await app.aclose()


async def test_redis_holds_no_token_text(redis_app: Rampart) -> None:
    user = await new_user(redis_app)
    async with redis_app.services.db.transaction() as conn:
        pair = await open_session(
            conn, redis_app.services.tokens, user_id=uuid.UUID(user.id), role="user", session_ttl=600
        )
    transport = httpx.ASGITransport(app=redis_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        for token in (user.token, pair.access_token):
            r = await http.get("/api/v1/auth/me", headers={"Authorization": bearer(token)})
            assert r.status_code == 200, r.text
        r = await http.post("/api/v1/auth/refresh", json={"refresh_token": pair.refresh_token})
        assert r.status_code == 200, r.text
        renewed = r.json()["data"]
        r = await http.get("/api/v1/auth/me", headers={"Authorization": bearer(renewed["access_token"])})
        assert r.status_code == 200, r.text
    namespace = "rampart:sess:"
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        key = f"{namespace}s:{user.session_id}".encode()
        await until(lambda: _exists(client, key))
        assert await client.get(key) == f"{user.id}:user".encode()  # what a key holds: ids and the role
        secrets = {user.token, pair.access_token, pair.refresh_token, *renewed.values()}
        secrets = {s for s in secrets if isinstance(s, str) and len(s) > 16}
        secrets |= {part for s in set(secrets) for part in s.split(".") if len(part) > 16}
        shape = re.compile(rb"rampart:sess:(s:[0-9a-f-]{36}|#group:u:[0-9a-f-]{36}|probe)")
        found = 0
        async for name in client.scan_iter(match=namespace + "*", count=500):
            assert shape.fullmatch(name), name
            if await client.type(name) == b"set":
                contents = b" ".join(await client.smembers(name))
            else:
                contents = await client.get(name) or b""
            for text in (name, contents):
                assert not any(secret.encode() in text for secret in secrets), (name, contents)
            found += 1
        assert found >= 3  # the two sessions and the user's group at least
    finally:
        await client.aclose()


async def _exists(client: redis.asyncio.Redis, key: bytes) -> bool:
    return bool(await client.exists(key))
