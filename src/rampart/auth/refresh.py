"""Refresh-token rotation with reuse detection.

A refresh token is 256 random bits, stored only as its SHA-256 hash in `sessions.refresh_token_hash`.
Each exchange replaces it (rotation) and records the spent hash in `spent_refresh_tokens`. Presenting a
spent token again means two parties hold it (one of them a thief), and nobody can tell which: the whole
session is revoked and a security event is written (RFC 9700 §4.14.2).

Two concurrent exchanges of one token cannot both win: the rotation is one conditional UPDATE, and
PostgreSQL re-checks its WHERE after waiting for the row lock, so the loser matches nothing and then
finds the token spent.
"""

from __future__ import annotations

import logging
import secrets

from rampart.access.actor import Roles
from rampart.auth.sessions import Authenticator, TokenPair, hash_refresh_token, live_session, revoke_session
from rampart.auth.tokens import TokenIssuer
from rampart.db.outbox import write_event
from rampart.db.pool import Database
from rampart.errors import Unauthorized
from rampart.lib.bus import EventBus

security_log = logging.getLogger("rampart.security")

MAX_TOKEN_LENGTH = 512  # ours are 43 characters; anything far longer is not one of ours

# The session's expiry is never moved: an impersonation ends at its hour however often it is refreshed.
# For an impersonation, the role of its live impersonator (null: disabled, or the opener ended) comes
# back too, so the same rules as the session check (`live_session`) decide; the transaction is rolled
# back when they fail, leaving the token unspent.
_ROTATE = (
    "UPDATE sessions s SET refresh_token_hash = $2, last_used_at = now()"
    " FROM users u"
    " WHERE s.refresh_token_hash = $1 AND u.id = s.user_id"
    " AND s.revoked_at IS NULL AND s.expires_at > now() AND NOT u.disabled"
    " RETURNING s.id, s.user_id, u.role, s.impersonator_id, s.impersonator_session_id,"
    " (SELECT iu.role FROM sessions o JOIN users iu ON iu.id = o.user_id"
    " WHERE o.id = s.impersonator_session_id AND o.revoked_at IS NULL AND o.expires_at > now()"
    " AND NOT iu.disabled) AS impersonator_role"
)
_SPEND = "INSERT INTO spent_refresh_tokens (token_hash, session_id) VALUES ($1, $2)"
_FIND_SPENT = (
    "SELECT t.session_id, s.user_id, s.revoked_at IS NOT NULL AS revoked"
    " FROM spent_refresh_tokens t JOIN sessions s ON s.id = t.session_id WHERE t.token_hash = $1"
)

INVALID = "The refresh token is invalid, expired or already used."


async def rotate(
    *,
    db: Database,
    tokens: TokenIssuer,
    roles: Roles,
    authenticator: Authenticator,
    bus: EventBus,
    refresh_token: str,
    ip: str | None,
    request_id: str | None,
) -> TokenPair:
    """Exchange `refresh_token` for a new pair; Unauthorized for anything else.

    A reuse revokes the session (and tells this worker's session cache at once), and is answered with the
    same 401 as an unknown token: a thief learns nothing from the answer.
    """
    if not refresh_token or len(refresh_token) > MAX_TOKEN_LENGTH:
        raise Unauthorized(INVALID)
    spent = hash_refresh_token(refresh_token)
    fresh = secrets.token_urlsafe(32)
    async with db.transaction() as conn:
        row = await conn.fetchrow(_ROTATE, spent, hash_refresh_token(fresh))
        if row is not None:
            if live_session(row, roles) is None:  # an impersonation that is over
                raise Unauthorized(INVALID)
            await conn.execute(_SPEND, spent, row["id"])
            await tokens.prepare()
            access = tokens.issue(user_id=row["user_id"], session_id=row["id"], role=row["role"])
            return TokenPair(row["id"], access, fresh, tokens.ttl)
        found = await conn.fetchrow(_FIND_SPENT, spent)
        if found is None:
            raise Unauthorized(INVALID)
        session_id, user_id = found["session_id"], found["user_id"]
        event = None
        if not found["revoked"]:
            await revoke_session(conn, session_id)
            event = await write_event(
                conn,
                resource="users",
                action="refresh_token_reused",
                resource_id=str(user_id),
                actor_id=None,
                data={"session_id": str(session_id), "ip": ip},
                request_id=request_id,
                citus=await db.on_citus(),
            )
    # Never the token itself in a log line: the session names it well enough.
    security_log.warning(
        "refresh token reuse: session revoked",
        extra={"session_id": str(session_id), "user_id": str(user_id), "ip": ip, "request_id": request_id},
    )
    authenticator.forget(session_id)
    if event is not None:
        await bus.emit(event, request_id=request_id)
    raise Unauthorized(INVALID)
