"""Server-side sessions and the Authenticator, against the real database.

The Authenticator may cache a session's state for at most 1 s (API.md: revocation takes effect within
1 second on every instance); the tests that check the bound use short real sleeps.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from rampart.app import Rampart
from rampart.auth.sessions import (
    Authenticator,
    hash_refresh_token,
    open_session,
    revoke_session,
    revoke_user_sessions,
)
from rampart.errors import Unauthorized
from tests.auth.conftest import CountingDb
from tests.conftest import MakeUser, User

BOUND = 1.2  # the contract's 1 s plus slack for the test itself


def authenticator(app: Rampart, *, cache_ttl: float = 1.0, db: Any = None) -> Authenticator:
    s = app.services
    return Authenticator(db=db or s.db, tokens=s.tokens, roles=s.roles, cache_ttl=cache_ttl)


def bearer(user: User) -> str:
    return f"Bearer {user.token}"


async def refused_within(auth: Authenticator, header: str, bound: float = BOUND) -> float:
    """Seconds until `header` is refused; fails the test if that takes longer than `bound`."""
    started = time.monotonic()
    while True:
        try:
            await auth.authenticate(header)
        except Unauthorized as exc:
            present = exc.token_present
            break
        elapsed = time.monotonic() - started
        assert elapsed < bound, f"still accepted after {elapsed:.2f}s"
        await asyncio.sleep(0.05)
    assert present  # refused as a bad token, not as a missing one
    return time.monotonic() - started


async def test_authenticate_resolves_the_actor(app: Rampart, alice: User) -> None:
    actor = await authenticator(app).authenticate(bearer(alice))
    assert str(actor.user_id) == alice.id
    assert actor.session_id == alice.session_id
    assert actor.role == "user"
    assert actor.permissions == app.services.roles.permissions("user")


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer   ", "Basic dXNlcjpwYXNz", "Token abc", "bearer"],
    ids=["none", "empty", "scheme_only", "blank_token", "basic", "other_scheme", "lowercase_scheme_only"],
)
async def test_missing_credentials_say_so(app: Rampart, header: str | None) -> None:
    with pytest.raises(Unauthorized) as caught:
        await authenticator(app).authenticate(header)
    assert caught.value.token_present is False


async def test_scheme_is_case_insensitive(app: Rampart, alice: User) -> None:
    actor = await authenticator(app).authenticate(f"bearer {alice.token}")
    assert str(actor.user_id) == alice.id


async def test_revoked_session_is_refused_within_the_bound(app: Rampart, alice: User) -> None:
    auth = authenticator(app)
    await auth.authenticate(bearer(alice))  # state is now cached
    await app.services.db.execute("UPDATE sessions SET revoked_at = now() WHERE id = $1", alice.session_id)
    await refused_within(auth, bearer(alice))


async def test_cache_ttl_above_one_second_is_clamped(app: Rampart, alice: User) -> None:
    auth = authenticator(app, cache_ttl=30.0)
    await auth.authenticate(bearer(alice))
    async with app.services.db.transaction() as conn:
        await revoke_session(conn, alice.session_id)
    await refused_within(auth, bearer(alice))


async def test_without_cache_revocation_is_immediate(app: Rampart, alice: User) -> None:
    auth = authenticator(app, cache_ttl=0.0)
    await auth.authenticate(bearer(alice))
    async with app.services.db.transaction() as conn:
        await revoke_session(conn, alice.session_id)
    with pytest.raises(Unauthorized):
        await auth.authenticate(bearer(alice))


async def test_disabled_user_is_refused_within_the_bound(app: Rampart, alice: User) -> None:
    auth = authenticator(app)
    await auth.authenticate(bearer(alice))
    await app.services.db.execute("UPDATE users SET disabled = true WHERE id = $1", uuid.UUID(alice.id))
    await refused_within(auth, bearer(alice))


async def test_expired_session_is_refused(app: Rampart, alice: User) -> None:
    await app.services.db.execute(
        "UPDATE sessions SET expires_at = now() - interval '1 second' WHERE id = $1", alice.session_id
    )
    with pytest.raises(Unauthorized):
        await authenticator(app).authenticate(bearer(alice))


async def test_token_naming_another_users_session_is_refused(app: Rampart, alice: User, bob: User) -> None:
    forged = app.services.tokens.issue(user_id=uuid.UUID(alice.id), session_id=bob.session_id, role="user")
    with pytest.raises(Unauthorized):
        await authenticator(app).authenticate(f"Bearer {forged}")


async def test_unknown_session_is_refused(app: Rampart, alice: User) -> None:
    forged = app.services.tokens.issue(user_id=uuid.UUID(alice.id), session_id=uuid.uuid4(), role="user")
    with pytest.raises(Unauthorized):
        await authenticator(app).authenticate(f"Bearer {forged}")


async def test_role_comes_from_the_database_not_the_token(app: Rampart, alice: User) -> None:
    forged = app.services.tokens.issue(user_id=uuid.UUID(alice.id), session_id=alice.session_id, role="admin")
    actor = await authenticator(app, cache_ttl=0.0).authenticate(f"Bearer {forged}")
    assert actor.role == "user"
    assert not actor.can("users:manage")

    await app.services.db.execute("UPDATE users SET role = 'admin' WHERE id = $1", uuid.UUID(alice.id))
    actor = await authenticator(app, cache_ttl=0.0).authenticate(bearer(alice))  # token still says "user"
    assert actor.role == "admin"
    assert actor.can("users:manage")


async def test_role_change_applies_within_the_bound(app: Rampart, make_user: MakeUser) -> None:
    admin = await make_user("admin")
    auth = authenticator(app)
    assert (await auth.authenticate(bearer(admin))).can("users:manage")
    await app.services.db.execute("UPDATE users SET role = 'user' WHERE id = $1", uuid.UUID(admin.id))
    started = time.monotonic()
    while (await auth.authenticate(bearer(admin))).can("users:manage"):
        assert time.monotonic() - started < BOUND
        await asyncio.sleep(0.05)


async def test_state_is_cached_and_concurrent_checks_share_one_query(app: Rampart, alice: User) -> None:
    db = CountingDb(app.services.db)
    db.delay = 0.05  # keep the first query in flight while the others arrive
    auth = authenticator(app, db=db)
    actors = await asyncio.gather(*(auth.authenticate(bearer(alice)) for _ in range(10)))
    assert {str(a.user_id) for a in actors} == {alice.id}
    assert db.queries == 1
    await auth.authenticate(bearer(alice))
    assert db.queries == 1  # served from the cache


async def test_forget_drops_the_cached_state(app: Rampart, alice: User, bob: User) -> None:
    db = CountingDb(app.services.db)
    auth = authenticator(app, db=db)
    await auth.authenticate(bearer(alice))
    await auth.authenticate(bearer(bob))
    auth.forget(alice.session_id)
    await auth.authenticate(bearer(alice))
    await auth.authenticate(bearer(bob))
    assert db.queries == 3
    auth.forget()
    await auth.authenticate(bearer(alice))
    await auth.authenticate(bearer(bob))
    assert db.queries == 5


async def test_forget_makes_a_revocation_immediate(app: Rampart, alice: User) -> None:
    auth = authenticator(app)
    await auth.authenticate(bearer(alice))
    async with app.services.db.transaction() as conn:
        await revoke_session(conn, alice.session_id)
    auth.forget(alice.session_id)
    with pytest.raises(Unauthorized):
        await auth.authenticate(bearer(alice))


async def test_a_failed_query_fails_every_waiter_and_is_not_cached(app: Rampart, alice: User) -> None:
    db = CountingDb(app.services.db)
    db.delay, db.fail_next = 0.05, 1
    auth = authenticator(app, db=db)
    results = await asyncio.gather(
        *(auth.authenticate(bearer(alice)) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results), results
    db.delay = 0.0
    actor = await auth.authenticate(bearer(alice))
    assert str(actor.user_id) == alice.id
    assert db.queries == 2


async def test_cancelling_the_request_that_loads_the_state_spares_the_others(
    app: Rampart, alice: User
) -> None:
    """One request's timeout or disconnect must not cancel the concurrent requests sharing its query."""
    db = CountingDb(app.services.db)
    db.delay = 0.2
    auth = authenticator(app, db=db)
    loading = asyncio.ensure_future(auth.authenticate(bearer(alice)))
    await asyncio.sleep(0.02)
    waiting = asyncio.ensure_future(auth.authenticate(bearer(alice)))
    await asyncio.sleep(0.02)
    loading.cancel()
    results = await asyncio.gather(loading, waiting, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert not isinstance(results[1], BaseException), results[1]
    assert str(results[1].user_id) == alice.id
    assert db.queries == 2  # the waiter ran the query again


async def test_a_cancelled_waiter_is_cancelled(app: Rampart, alice: User) -> None:
    db = CountingDb(app.services.db)
    db.delay = 0.2
    auth = authenticator(app, db=db)
    loading = asyncio.ensure_future(auth.authenticate(bearer(alice)))
    await asyncio.sleep(0.02)
    waiting = asyncio.ensure_future(auth.authenticate(bearer(alice)))
    await asyncio.sleep(0.02)
    waiting.cancel()
    results = await asyncio.gather(loading, waiting, return_exceptions=True)
    assert str(results[0].user_id) == alice.id  # type: ignore[union-attr]
    assert isinstance(results[1], asyncio.CancelledError)
    assert db.queries == 1


async def test_cache_age_counts_from_when_the_state_was_read(app: Rampart, alice: User) -> None:
    """A slow answer must not stretch the bound: the state is as old as the query, not its reply."""
    db = CountingDb(app.services.db)
    db.delay_after = 0.5
    auth = authenticator(app, db=db)
    loading = asyncio.ensure_future(auth.authenticate(bearer(alice)))
    await asyncio.sleep(0.1)  # the state has been read; its answer is still on the way
    async with app.services.db.transaction() as conn:
        await revoke_session(conn, alice.session_id)
    revoked = time.monotonic()
    await loading
    db.delay_after = 0.0
    waited = time.monotonic() - revoked
    await refused_within(auth, bearer(alice), bound=BOUND - waited)


async def test_cache_stays_bounded(app: Rampart, make_user: MakeUser) -> None:
    users = [await make_user() for _ in range(5)]
    s = app.services
    auth = Authenticator(db=s.db, tokens=s.tokens, roles=s.roles, max_entries=3)
    for user in users:
        await auth.authenticate(bearer(user))
    assert len(auth._cache) <= 3


async def test_open_session_stores_only_a_hash_of_the_refresh_token(app: Rampart, alice: User) -> None:
    s = app.services
    async with s.db.transaction() as conn:
        pair = await open_session(
            conn, s.tokens, user_id=uuid.UUID(alice.id), role="user", session_ttl=60, user_agent="x" * 500
        )
    row = await s.db.fetchrow(
        "SELECT user_id, refresh_token_hash, user_agent, revoked_at,"
        " expires_at - created_at AS ttl FROM sessions WHERE id = $1",
        pair.session_id,
    )
    assert row is not None
    assert str(row["user_id"]) == alice.id
    assert row["revoked_at"] is None
    assert row["refresh_token_hash"] == hash_refresh_token(pair.refresh_token) != pair.refresh_token
    assert len(row["user_agent"]) == 300
    assert 59 <= row["ttl"].total_seconds() <= 61
    assert pair.as_json() == {
        "access_token": pair.access_token,
        "token_type": "Bearer",
        "expires_in": s.tokens.ttl,
        "refresh_token": pair.refresh_token,
    }
    claims = s.tokens.verify(pair.access_token)
    assert claims.session_id == pair.session_id
    assert str(claims.user_id) == alice.id


async def test_revoke_user_sessions_ends_all_of_one_users_sessions_only(
    app: Rampart, alice: User, bob: User
) -> None:
    s = app.services
    async with s.db.transaction() as conn:
        await open_session(conn, s.tokens, user_id=uuid.UUID(alice.id), role="user", session_ttl=60)
        await revoke_user_sessions(conn, uuid.UUID(alice.id))
    active = await s.db.fetchval(
        "SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL", uuid.UUID(alice.id)
    )
    assert active == 0
    auth = authenticator(app, cache_ttl=0.0)
    with pytest.raises(Unauthorized):
        await auth.authenticate(bearer(alice))
    assert str((await auth.authenticate(bearer(bob))).user_id) == bob.id
