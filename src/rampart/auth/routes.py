"""Routes of the auth domain that the core provides: who am I, and admin impersonation.

Google sign-in, refresh rotation and the sessions API are added by the authentication issue.
"""

from __future__ import annotations

from typing import Any

from rampart.auth.sessions import open_session
from rampart.auth.tokens import TokenIssuer
from rampart.db.outbox import write_event
from rampart.lib.bus import EventBus
from rampart.lib.ids import parse_uuid
from rampart.resources.endpoints import Call, RouteSpec, json_response
from rampart.resources.manager import Context, ResourceManager
from rampart.resources.openapi_parts import data, named, path_id, problems, response
from rampart.resources.openapi_schema import schemas
from rampart.resources.routes import API_PREFIX
from rampart.resources.spec import Binder

TOKEN_PAIR = named(
    "TokenPair",
    {
        "type": "object",
        "required": ["access_token", "token_type", "expires_in", "refresh_token"],
        "properties": {
            "access_token": {"type": "string", "description": "Send as `Authorization: Bearer <token>`."},
            "token_type": {"type": "string", "enum": ["Bearer"]},
            "expires_in": {"type": "integer", "description": "Seconds until the access token expires."},
            "refresh_token": {"type": "string", "description": "Exchange at POST /api/v1/auth/refresh."},
        },
    },
)


def auth_routes(
    *, users: ResourceManager, tokens: TokenIssuer, bus: EventBus, session_ttl: int
) -> list[RouteSpec]:
    async def me(call: Call) -> Any:
        row = await users.get(Context(actor=call.user, request_id=call.request_id), call.user.user_id)
        return json_response({"data": {**row, "permissions": sorted(call.user.permissions)}})

    async def impersonate(call: Call) -> Any:
        admin = call.user
        ctx = Context(actor=admin, request_id=call.request_id)
        target_id = parse_uuid(call.path["id"])
        if target_id is None:
            raise users.not_found()
        target = await users.get(ctx, target_id)
        async with users.db.transaction() as conn:
            # Lock the user so a concurrent disable cannot slip between the check and the new session.
            bind = Binder()
            state = await conn.fetchrow(
                f"SELECT disabled FROM users WHERE id = {bind(target_id)} FOR UPDATE", *bind.params
            )
            if state is None or state["disabled"]:
                raise users.not_found()
            pair = await open_session(
                conn,
                tokens,
                user_id=target_id,
                role=target["role"],
                session_ttl=session_ttl,
                impersonator_id=admin.user_id,
                user_agent=call.request.headers.get("user-agent"),
                ip=call.request.client.host if call.request.client else None,
            )
            event = await write_event(
                conn,
                resource="users",
                action="impersonated",
                resource_id=str(target_id),
                actor_id=admin.user_id,
                data={"session_id": str(pair.session_id)},
                request_id=call.request_id,
            )
        if users.reads is not None:  # the admin's next audit-log read must show the impersonation
            await users.reads.wrote(admin.user_id)
        await bus.emit(event, request_id=call.request_id)
        return json_response({"data": pair.as_json()}, status=201)

    user = schemas(users.resource)["item"]
    caller = named(
        "Caller",
        {
            **user.schema,
            "description": "The caller: their user, and what their role may do.",
            "required": [*user.schema["required"], "permissions"],
            "properties": {
                **user.schema["properties"],
                "permissions": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "What the caller's role may do (`users:manage`, `tasks:write`, ...).",
                },
            },
        },
    )
    return [
        RouteSpec(
            "GET",
            f"{API_PREFIX}/auth/me",
            me,
            "auth.me",
            tags=("auth",),
            summary="Get the caller",
            openapi={"responses": {"200": response("The caller", data(caller))}},
        ),
        RouteSpec(
            "POST",
            f"{API_PREFIX}/admin/users/{{id}}/impersonate",
            impersonate,
            "users.impersonate",
            tags=("users",),
            permission="users:impersonate",
            summary="Open a session as this user",
            openapi={
                "description": "A new session for the user, recorded in the audit log with the admin as "
                "actor. A disabled user is 404.",
                "parameters": [path_id("id", "The user's id.")],
                "responses": {
                    "201": response("A token pair of the new session", data(TOKEN_PAIR)),
                    **problems(404),
                },
            },
        ),
    ]
