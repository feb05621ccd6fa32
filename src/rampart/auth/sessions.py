"""Server-side sessions: every token pair belongs to one, and revoking it ends its tokens within 1 s.

Each worker keeps a tiny cache of session state for at most `cache_ttl` (≤ 1 s) seconds, so the check on
every request costs a dictionary lookup most of the time and a single indexed query otherwise (a Redis
tier shared by the workers and instances saved no measurable database load nor time: decision 0005).

An impersonation session is live only while the rules of `rampart.access.impersonation` hold for its
impersonator and the session that opened it; the same query reads them, so its end keeps the same bound.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import secrets
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, NamedTuple

import asyncpg

from rampart.access.actor import Actor, Roles
from rampart.access.impersonation import impersonation_holds
from rampart.auth.tokens import TokenIssuer, UnknownKey
from rampart.db.pool import Database
from rampart.errors import Unauthorized
from rampart.lib.ids import new_id, parse_uuid


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenPair:
    session_id: uuid.UUID
    access_token: str
    refresh_token: str
    expires_in: int
    session_expires_at: dt.datetime | None = None  # when the session itself ends, if known

    def as_json(self) -> dict[str, object]:
        return {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "refresh_token": self.refresh_token,
        }


async def open_session(
    conn: asyncpg.Connection,
    tokens: TokenIssuer,
    *,
    user_id: uuid.UUID,
    role: str,
    session_ttl: int,
    impersonator_id: uuid.UUID | None = None,
    impersonator_session_id: uuid.UUID | None = None,
    user_agent: str | None = None,
    ip: str | None = None,
) -> TokenPair:
    """Create a session row and its token pair; the refresh token is stored only as a hash.

    An impersonation session names its impersonator and the impersonator's session that opened it: it
    ends with either (see `_LOAD`).
    """
    session_id = new_id()
    refresh = secrets.token_urlsafe(32)
    expires_at = await conn.fetchval(
        "INSERT INTO sessions (id, user_id, refresh_token_hash, impersonator_id, impersonator_session_id,"
        " user_agent, ip, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(secs => $8))"
        " RETURNING expires_at",
        session_id,
        user_id,
        hash_refresh_token(refresh),
        impersonator_id,
        impersonator_session_id,
        (user_agent or "")[:300] or None,
        ip,
        float(session_ttl),
    )
    await tokens.prepare()
    access = tokens.issue(user_id=user_id, session_id=session_id, role=role)
    return TokenPair(session_id, access, refresh, tokens.ttl, session_expires_at=expires_at)


# Revocations, disabling and role changes are announced on this channel, so every worker of every
# instance drops its cached session state at once instead of within the cache bound.
REVOCATION_CHANNEL = "rampart_sessions"


async def announce(
    conn: asyncpg.Connection, *, session_id: uuid.UUID | None = None, user_id: uuid.UUID | None = None
) -> None:
    """Tell every worker to forget a session's (or all of a user's sessions') cached state.

    NOTIFY is delivered when the transaction commits, and not at all if it rolls back.
    """
    payload = f"s:{session_id}" if session_id is not None else f"u:{user_id}"
    await conn.execute("SELECT pg_notify($1, $2)", REVOCATION_CHANNEL, payload)


async def announce_keys(conn: asyncpg.Connection) -> None:
    """Tell every worker that the signing keys changed (`rampart keys rotate`)."""
    await conn.execute("SELECT pg_notify($1, 'k:')", REVOCATION_CHANNEL)


async def revoke_user_sessions(conn: asyncpg.Connection, user_id: uuid.UUID) -> None:
    """Revoke every session of the user, and every session they opened as someone else."""
    await conn.execute(
        "UPDATE sessions SET revoked_at = now()"
        " WHERE (user_id = $1 OR impersonator_id = $1) AND revoked_at IS NULL",
        user_id,
    )
    await announce(conn, user_id=user_id)  # every worker drops both kinds (`Authenticator.forget_user`)


async def revoke_impersonations(
    conn: asyncpg.Connection, *, impersonator_id: uuid.UUID | None = None, user_id: uuid.UUID | None = None
) -> None:
    """Revoke the live impersonation sessions opened by `impersonator_id`, or opened as `user_id`.

    The session check already refuses them once the rules no longer hold; revoking them too makes the
    end final (a re-promoted admin does not bring back what their demotion ended) and lists exact.
    """
    if impersonator_id is not None:
        await conn.execute(
            "UPDATE sessions SET revoked_at = now() WHERE impersonator_id = $1 AND revoked_at IS NULL",
            impersonator_id,
        )
        await announce(conn, user_id=impersonator_id)
    if user_id is not None:
        await conn.execute(
            "UPDATE sessions SET revoked_at = now()"
            " WHERE user_id = $1 AND impersonator_id IS NOT NULL AND revoked_at IS NULL",
            user_id,
        )
        await announce(conn, user_id=user_id)


async def revoke_session(
    conn: asyncpg.Connection, session_id: uuid.UUID, user_id: uuid.UUID | None = None
) -> bool:
    """Revoke `session_id` (if it is `user_id`'s, when given) and announce it; False when there was none to
    revoke (someone else's session is told apart from none by nobody)."""
    revoked = await conn.fetch(
        "UPDATE sessions SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL"
        " AND ($2::uuid IS NULL OR user_id = $2) RETURNING id",
        session_id,
        user_id,
    )
    if not revoked:
        return False
    await announce(conn, session_id=session_id)
    return True


class Live(NamedTuple):
    """A live session as the check found it."""

    user_id: uuid.UUID
    role: str
    impersonator_id: uuid.UUID | None = None
    opened_by: uuid.UUID | None = None  # the impersonator's session that opened this one


State = Live | None  # None: no live session

# The impersonator of session `s` (`iu`), found only while they are enabled and the session that opened
# `s` lives (neither revoked nor expired).
IMPERSONATOR_JOIN = (
    " LEFT JOIN sessions o ON o.id = s.impersonator_session_id AND o.revoked_at IS NULL"
    " AND o.expires_at > now()"
    " LEFT JOIN users iu ON iu.id = o.user_id AND NOT iu.disabled"
)
# One indexed read of the session and its user. An impersonation session also reads the session that
# opened it and that session's user (both by primary key); for any other session the two outer joins
# look up a NULL key, which PostgreSQL answers without reading a page (EXPLAIN ANALYZE: 8 buffers, as
# before), so the common check costs what it did (docs/decisions/0015-impersonation-bound.md).
# A live session: not revoked, not expired, its user enabled, with its impersonator (if any) as found.
# Read for one session per request (_LOAD) and for every session with an open live stream at once
# (_LOAD_MANY); `live_session` then applies the impersonation rules to each row.
_LIVE = (
    f"FROM sessions s JOIN users u ON u.id = s.user_id{IMPERSONATOR_JOIN}"
    " WHERE s.revoked_at IS NULL AND s.expires_at > now() AND NOT u.disabled"
)
_SESSION = "s.user_id, u.role, s.impersonator_id, s.impersonator_session_id, iu.role AS impersonator_role"
_LOAD = f"SELECT {_SESSION} {_LIVE} AND s.id = $1"
_LOAD_MANY = f"SELECT s.id, {_SESSION} {_LIVE} AND s.id = ANY($1::uuid[])"


# Each session of one user that the check above would take, newest first, with what lists show of it
# (`live_session` then leaves out the impersonations that are over).
_OF_USER = (
    f"SELECT s.id, s.user_agent, s.ip, s.created_at, s.last_used_at, s.expires_at, {_SESSION} {_LIVE}"
    " AND s.user_id = $1 ORDER BY s.created_at DESC, s.id DESC LIMIT $2"
)


async def sessions_of(db: Database, roles: Roles, user_id: uuid.UUID, *, limit: int) -> list[Any]:
    """The user's sessions that authenticate now, newest first: the rows of `_OF_USER`."""
    return [row for row in await db.fetch(_OF_USER, user_id, limit) if live_session(row, roles) is not None]


def live_session(row: Any, roles: Roles) -> State:
    """The session a `_LOAD` row describes, or None: an impersonation whose rules no longer hold is over.

    The row names `user_id`, `role`, `impersonator_id`, `impersonator_session_id` and `impersonator_role`
    (None when the impersonator is disabled or their opening session ended).
    """
    if row is None:
        return None
    opened_by = row["impersonator_session_id"]
    if opened_by is None and row["impersonator_id"] is None:
        return Live(row["user_id"], row["role"])
    if opened_by is None or not impersonation_holds(
        roles, impersonator_role=row["impersonator_role"], target_role=row["role"]
    ):
        return None  # an impersonation without a live opener (older ones have none) is over
    return Live(row["user_id"], row["role"], row["impersonator_id"], opened_by)


class Authenticator:
    """Turns an `Authorization` header into an Actor: verified token, live session, enabled user."""

    def __init__(
        self,
        *,
        db: Database,
        tokens: TokenIssuer,
        roles: Roles,
        cache_ttl: float = 1.0,
        max_entries: int = 100_000,
    ) -> None:
        self._db = db
        self._tokens = tokens
        self._roles = roles
        self._ttl = min(cache_ttl, 1.0)  # the revocation bound of API.md
        self._max = max_entries
        self._cache: dict[uuid.UUID, tuple[float, State]] = {}
        # The impersonation sessions among the cached ones (few), so that an announcement about their
        # impersonator (`u:`) or the session that opened them (`s:`) drops them at once too.
        self._impersonations: dict[uuid.UUID, Live] = {}
        self._inflight: dict[uuid.UUID, asyncio.Future[State]] = {}
        # Bumped by every announcement: an answer read before one must not be cached after it.
        self._generation = 0

    async def authenticate(self, header: str | None) -> Actor:
        scheme, _, token = (header or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("Missing bearer token.")
        await self._tokens.prepare()
        try:
            claims = self._tokens.verify(token)
        except UnknownKey as exc:
            # Another worker may have rotated the keys: reload (rate limited) and try once more.
            if self._tokens.keys is None or not await self._tokens.keys.reload_for_unknown(exc.kid):
                raise
            claims = self._tokens.verify(token)
        state = await self._state(claims.session_id)
        if state is None or state.user_id != claims.user_id:
            raise Unauthorized("The session has ended.", token_present=True)
        role = state.role
        return Actor(
            claims.user_id, role, claims.session_id, self._roles.permissions(role), state.impersonator_id
        )

    async def live_sessions(
        self, session_ids: Collection[uuid.UUID]
    ) -> dict[uuid.UUID, tuple[uuid.UUID, str]]:
        """Those of `session_ids` that are live now, with their (user id, role), in one statement.

        Read from the database, past the cache: the live stream checks its sessions with it (every
        half second, and at once on an announcement) and must see a revocation the caches may not have
        dropped yet.
        """
        rows = await self._db.fetch(_LOAD_MANY, list(session_ids))
        found = {row["id"]: live_session(row, self._roles) for row in rows}
        # An impersonation whose impersonator is gone is over for its streams too.
        return {sid: (live.user_id, live.role) for sid, live in found.items() if live is not None}

    async def session_actor(self, session_id: uuid.UUID, *, opened_by: uuid.UUID | None = None) -> Actor:
        """The caller of a live session named without a token (a browser session's cookie, see
        `rampart.auth.browser`): the same check, cache and bound as `authenticate`. With `opened_by`, the
        session must be an impersonation opened by that session."""
        state = await self._state(session_id)
        if state is None or (opened_by is not None and state.opened_by != opened_by):
            raise Unauthorized("The session has ended.", token_present=True)
        return Actor(
            state.user_id, state.role, session_id, self._roles.permissions(state.role), state.impersonator_id
        )

    def forget(self, session_id: uuid.UUID | None = None) -> None:
        """Drop cached state (one session, or all): used when this worker revokes something itself."""
        self._generation += 1
        if session_id is None:
            self._cache.clear()
            self._impersonations.clear()
        else:
            self._cache.pop(session_id, None)
            self._impersonations.pop(session_id, None)
            # The impersonations this session opened end with it.
            self._forget_impersonations(lambda live: live.opened_by == session_id)

    def forget_user(self, user_id: uuid.UUID) -> None:
        """Drop the cached state of every session of one user, and of those they opened as others."""
        self._generation += 1
        for sid in [
            sid for sid, (_, state) in self._cache.items() if state is not None and state.user_id == user_id
        ]:
            del self._cache[sid]
        self._forget_impersonations(lambda live: user_id in (live.user_id, live.impersonator_id))

    def _forget_impersonations(self, matches: Callable[[Live], bool]) -> None:
        for sid in [sid for sid, live in self._impersonations.items() if matches(live)]:
            del self._impersonations[sid]
            self._cache.pop(sid, None)

    def on_announcement(self, payload: str) -> None:
        """A message of REVOCATION_CHANNEL: `s:<session id>` or `u:<user id>` (see `announce`)."""
        kind, _, value = payload.partition(":")
        key = parse_uuid(value)
        if kind == "k" and self._tokens.keys is not None:  # the signing keys changed
            self._tokens.keys.invalidate()
        elif kind == "s" and key is not None:
            self.forget(key)
        elif kind == "u" and key is not None:
            self.forget_user(key)

    async def _state(self, sid: uuid.UUID) -> State:
        now = time.monotonic()
        hit = self._cache.get(sid)
        if hit is not None and hit[0] > now:
            return hit[1]
        pending = self._inflight.get(sid)
        while pending is not None:  # concurrent requests of one session share one query
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise  # this request itself is being cancelled
                # The request that ran the shared query was cancelled (its timeout, a disconnect): that
                # must not end this one too, so run the query again.
                pending = self._inflight.get(sid)
        future: asyncio.Future[State] = asyncio.get_running_loop().create_future()
        self._inflight[sid] = future
        try:
            generation = self._generation
            state = live_session(await self._db.fetchrow(_LOAD, sid), self._roles)
            if generation == self._generation:  # else a revocation arrived meanwhile: ask again next time
                # Counted from before the query: the state may have changed while it ran.
                self._keep(sid, now + self._ttl, state)
            future.set_result(state)
            return state
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._inflight[sid]

    def _keep(self, sid: uuid.UUID, until: float, state: State) -> None:
        if len(self._cache) >= self._max:
            self._evict(time.monotonic())
        self._cache[sid] = (until, state)
        if state is not None and state.opened_by is not None:
            self._impersonations[sid] = state
        elif self._impersonations:
            self._impersonations.pop(sid, None)

    def _evict(self, now: float) -> None:
        for key in [k for k, (until, _) in self._cache.items() if until <= now]:
            del self._cache[key]
        if len(self._cache) >= self._max:
            self._cache.clear()
        for key in [k for k in self._impersonations if k not in self._cache]:
            del self._impersonations[key]
