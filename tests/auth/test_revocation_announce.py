"""Revocation announcements: the Authenticator drops cached session state when told, by session or by
user, and ignores payloads it does not understand."""

from __future__ import annotations

import uuid

import pytest

from rampart.app import Rampart
from rampart.auth.sessions import Authenticator
from rampart.errors import Unauthorized
from tests.conftest import MakeUser


def authenticator(app: Rampart) -> Authenticator:
    s = app.services
    return Authenticator(db=s.db, tokens=s.tokens, roles=s.roles, cache_ttl=1.0)


@pytest.mark.parametrize("by", ["session", "user"])
async def test_announcement_drops_cached_state(app: Rampart, make_user: MakeUser, by: str) -> None:
    user = await make_user()
    auth = authenticator(app)
    header = f"Bearer {user.token}"
    await auth.authenticate(header)
    await app.services.db.execute("UPDATE sessions SET revoked_at = now() WHERE id = $1", user.session_id)
    await auth.authenticate(header)  # still served from the cache: the control
    for junk in ("", "x:1", "s:not-a-uuid", f"u:{uuid.uuid4()}", f"s:{uuid.uuid4()}"):
        auth.on_announcement(junk)
    await auth.authenticate(header)  # unrelated or broken announcements change nothing
    auth.on_announcement(f"s:{user.session_id}" if by == "session" else f"u:{user.id}")
    with pytest.raises(Unauthorized):
        await auth.authenticate(header)


async def test_announcement_during_a_query_is_not_undone_by_its_answer(
    app: Rampart, make_user: MakeUser
) -> None:
    user = await make_user()
    auth = authenticator(app)
    header = f"Bearer {user.token}"
    real_fetchrow = app.services.db.fetchrow

    class Slow:
        async def fetchrow(self, sql: str, *args: object) -> object:
            row = await real_fetchrow(sql, *args)  # read while the session is live
            auth.on_announcement(f"s:{user.session_id}")  # ... then revoked and announced
            await app.services.db.execute(
                "UPDATE sessions SET revoked_at = now() WHERE id = $1", user.session_id
            )
            return row

    auth._db = Slow()  # type: ignore[assignment]
    await auth.authenticate(header)  # answered with what it read
    auth._db = app.services.db
    # Another worker, which never heard the announcement, asks the database too.
    with pytest.raises(Unauthorized):
        await authenticator(app).authenticate(header)
    with pytest.raises(Unauthorized):  # not cached: the next request asks again
        await auth.authenticate(header)
