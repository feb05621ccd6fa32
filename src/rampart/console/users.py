"""Users in the console: role, disable and enable, sessions, and acting as a user (impersonation).

Role and disabling go through the users manager, so the last-admin rule and the end of a disabled user's
sessions apply exactly as for `PATCH /api/v1/admin/users/{id}`. Impersonation is the API's own
(`rampart.auth.impersonation`): the session opened is bound to the admin's console session, and the
console then acts as the user until the admin stops, the session expires or its rules stop holding.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from rampart.access.impersonation import IMPERSONATE, MANAGE_USERS, may_be_impersonated
from rampart.auth.browser import AS_COOKIE
from rampart.auth.impersonation import impersonate, revoke_opened
from rampart.auth.session_admin import live_sessions, revoke_user_session
from rampart.console import PREFIX
from rampart.console.pages import context, redirect, require
from rampart.errors import Forbidden, NotFound
from rampart.lib.ids import parse_uuid
from rampart.resources.endpoints import Call, RouteSpec

if TYPE_CHECKING:
    from rampart.console.pages import Pages


def _user_href(user_id: Any) -> str:
    return f"{PREFIX}/resources/users/{user_id}"


async def user_extras(pages: Pages, call: Call, row: dict[str, Any]) -> dict[str, Any]:
    """What the users detail page shows besides the fields: sessions and the admin's actions."""
    actor = call.user
    parts = pages.parts
    user_id = uuid.UUID(str(row["id"]))
    sessions = await live_sessions(db=parts.db, roles=parts.roles, user_id=user_id)
    return {
        "sessions": sessions,
        "roles": parts.roles.names,
        "is_self": user_id == actor.user_id,
        "can_impersonate": actor.can(IMPERSONATE)
        and actor.impersonator_id is None
        and user_id != actor.user_id
        and not row["disabled"]
        and may_be_impersonated(parts.roles, str(row["role"])),
    }


def user_routes(pages: Pages) -> list[RouteSpec]:
    parts = pages.parts
    users = parts.managers["users"]

    def target(call: Call) -> uuid.UUID:
        user_id = parse_uuid(call.path["id"])
        if user_id is None:
            raise users.not_found()
        return user_id

    def admin(call: Call) -> None:
        actor = require(call)
        actor.require(MANAGE_USERS)

    async def change(call: Call, changes: dict[str, Any], done: str) -> Response:
        admin(call)
        user_id = target(call)
        await users.update(context(call), user_id, changes)
        # This worker at once; the others when the revocation's announcement arrives (within 1 s).
        parts.sessions.authenticator.forget_user(user_id)
        return redirect(_user_href(user_id), done=done)

    async def set_role(call: Call) -> Response:
        return await change(call, {"role": call.form().get("role", "")}, "role")

    async def disable(call: Call) -> Response:
        return await change(call, {"disabled": True}, "disabled")

    async def enable(call: Call) -> Response:
        return await change(call, {"disabled": False}, "enabled")

    async def revoke(call: Call) -> Response:
        admin(call)
        user_id = target(call)
        session_id = parse_uuid(call.path["session"])
        if session_id is None:
            raise NotFound("No such session.")
        await revoke_user_session(
            db=parts.db,
            bus=parts.bus,
            actor=call.user,
            user_id=user_id,
            session_id=session_id,
            request_id=call.request_id,
        )
        parts.sessions.authenticator.forget(session_id)
        return redirect(_user_href(user_id), done="revoked")

    async def impersonate_page(call: Call) -> Response:
        admin(call)
        call.user.require(IMPERSONATE)
        row = await users.get(context(call), target(call))
        minutes = parts.impersonation_ttl // 60
        return await pages.render(
            call,
            "confirm.html",
            title=f"Act as {row['email']}?",
            message=(
                f"The console will act as {row['email']} for at most {minutes} minutes, until you stop: you"
                " see what they see and may do what they may do. Everything you change is recorded with"
                " them as the actor and you as the impersonator."
            ),
            action=f"{PREFIX}/users/{row['id']}/impersonate",
            button=f"Act as {row['email']}",
            danger=False,
            cancel=_user_href(row["id"]),
        )

    async def start(call: Call) -> Response:
        admin(call)
        client = call.request.client
        pair = await impersonate(
            users=users,
            tokens=parts.tokens,
            roles=parts.roles,
            ctx=context(call),
            target=call.path["id"],
            ttl=parts.impersonation_ttl,
            user_agent=call.request.headers.get("user-agent"),
            ip=client.host if client else None,
        )
        # The first list a user may read (not Rampart's own, which need a permission: users, webhooks).
        first = next(
            (
                n
                for n, m in parts.managers.items()
                if not m.resource.permission and "list" in m.resource.operations
            ),
            None,
        )
        response = redirect(
            f"{PREFIX}/resources/{first}" if first else f"{PREFIX}/audit", done="impersonating"
        )
        parts.sessions.act_as(response, call.request, pair.session_id, max_age=parts.impersonation_ttl)
        return response

    async def stop(call: Call) -> Response:
        actor = call.user
        if actor.impersonator_id is None:
            raise Forbidden("You are not acting as another user.")
        await revoke_opened(db=parts.db, impersonator_id=actor.impersonator_id, session=str(actor.session_id))
        parts.sessions.authenticator.forget(actor.session_id)
        response = redirect(_user_href(actor.user_id), done="stopped")
        parts.sessions.forget(response, call.request, AS_COOKIE)
        return response

    def route(method: str, path: str, handler: Any, name: str) -> RouteSpec:
        return RouteSpec(method, path, handler, name, browser=True)

    base = f"{PREFIX}/users/{{id}}"
    return [
        route("POST", f"{base}/role", set_role, "console.user_role"),
        route("POST", f"{base}/disable", disable, "console.user_disable"),
        route("POST", f"{base}/enable", enable, "console.user_enable"),
        route("POST", f"{base}/sessions/{{session}}/revoke", revoke, "console.user_session_revoke"),
        route("GET", f"{base}/impersonate", impersonate_page, "console.impersonate_confirm"),
        route("POST", f"{base}/impersonate", start, "console.impersonate"),
        route("POST", f"{PREFIX}/impersonation/stop", stop, "console.impersonation_stop"),
    ]
