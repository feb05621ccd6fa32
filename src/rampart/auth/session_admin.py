"""An administrator's view of another user's sessions: the live ones, and revoking one (with an event).

The console's users page uses it; the rules are the session check's (`live_session`), so a listed
session is one that would authenticate now.
"""

from __future__ import annotations

import uuid
from typing import Any

from rampart.access.actor import Actor, Roles
from rampart.auth.sessions import revoke_session, sessions_of
from rampart.db.outbox import write_event
from rampart.db.pool import Database
from rampart.errors import NotFound
from rampart.lib.bus import EventBus


async def live_sessions(*, db: Database, roles: Roles, user_id: uuid.UUID) -> list[dict[str, Any]]:
    """The user's sessions that authenticate now, newest first (at most 200)."""
    return [
        {
            "id": r["id"],
            "device": r["user_agent"],
            "ip": r["ip"],
            "created_at": r["created_at"],
            "expires_at": r["expires_at"],
            "impersonator_id": r["impersonator_id"],
        }
        for r in await sessions_of(db, roles, user_id, limit=200)
    ]


async def revoke_user_session(
    *,
    db: Database,
    bus: EventBus,
    actor: Actor,
    user_id: uuid.UUID,
    session_id: uuid.UUID,
    request_id: str | None,
) -> None:
    """End one session of `user_id` (NotFound for anyone else's) and record `users.session_revoked`."""
    async with db.transaction() as conn:
        if not await revoke_session(conn, session_id, user_id):
            raise NotFound("No such session.")
        event = await write_event(
            conn,
            resource="users",
            action="session_revoked",
            resource_id=str(user_id),
            actor_id=actor.user_id,
            data={"session_id": str(session_id)},
            request_id=request_id,
            impersonator_id=actor.impersonator_id,
            citus=await db.on_citus(),
        )
    await bus.emit(event, request_id=request_id)
