"""Impersonation routes: open a session as a user, and list or end the sessions the caller opened.

`POST /admin/users/{id}/impersonate`, `GET /admin/impersonations`, `DELETE /admin/impersonations/{id}`;
all need `users:impersonate`.
"""

from __future__ import annotations

from typing import Any

from rampart.access.actor import Roles
from rampart.access.impersonation import IMPERSONATE
from rampart.auth.impersonation import impersonate, opened_sessions, revoke_opened
from rampart.auth.routes_sessions import NO_STORE, TOKEN_PAIR
from rampart.auth.sessions import Authenticator
from rampart.auth.tokens import TokenIssuer
from rampart.resources.endpoints import Call, RouteSpec, empty_response, json_response
from rampart.resources.manager import Context, ResourceManager
from rampart.resources.openapi_parts import TIMESTAMP, UUID, data, named, path_id, problems, response
from rampart.resources.routes import API_PREFIX

IMPERSONATION_TOKENS = named(
    "ImpersonationTokens",
    {
        "type": "object",
        "description": "A token pair of a session as the user, bound to the caller's own session.",
        "required": [*TOKEN_PAIR.schema["required"], "session_id", "session_expires_at"],
        "properties": {
            **TOKEN_PAIR.schema["properties"],
            "session_id": {
                **UUID,
                "description": "The impersonation session: DELETE /api/v1/admin/impersonations/{id} ends it.",
            },
            "session_expires_at": {
                **TIMESTAMP,
                "description": "When the impersonation ends at the latest; refreshing never moves it.",
            },
        },
    },
)

IMPERSONATION = named(
    "Impersonation",
    {
        "type": "object",
        "description": "A live impersonation session the caller opened.",
        "required": [
            "id",
            "user_id",
            "opened_by",
            "device",
            "ip",
            "created_at",
            "last_used_at",
            "expires_at",
        ],
        "properties": {
            "id": {**UUID, "description": "The impersonation session."},
            "user_id": {**UUID, "description": "The user impersonated."},
            "opened_by": {
                **UUID,
                "description": "The caller's session that opened it: it ends with that one.",
            },
            "device": {"type": ["string", "null"], "description": "The User-Agent that opened it."},
            "ip": {"type": ["string", "null"]},
            "created_at": TIMESTAMP,
            "last_used_at": {
                "type": ["string", "null"],
                "format": "date-time",
                "description": "When its refresh token was last exchanged.",
            },
            "expires_at": TIMESTAMP,
        },
    },
)


def impersonation_routes(
    *,
    users: ResourceManager,
    tokens: TokenIssuer,
    roles: Roles,
    authenticator: Authenticator,
    ttl: int,
) -> list[RouteSpec]:
    db = users.db

    async def open_as(call: Call) -> Any:
        client = call.request.client
        pair = await impersonate(
            users=users,
            tokens=tokens,
            roles=roles,
            ctx=Context(actor=call.user, request_id=call.request_id),
            target=call.path["id"],
            ttl=ttl,
            user_agent=call.request.headers.get("user-agent"),
            ip=client.host if client else None,
        )
        tokens_of_session = {
            **pair.as_json(),
            "session_id": str(pair.session_id),
            "session_expires_at": pair.session_expires_at,
        }
        return json_response({"data": tokens_of_session}, status=201, headers=NO_STORE)

    async def list_opened(call: Call) -> Any:
        rows = await opened_sessions(db=db, roles=roles, impersonator_id=call.user.user_id)
        return json_response({"data": rows})

    async def end(call: Call) -> Any:
        session_id = await revoke_opened(db=db, impersonator_id=call.user.user_id, session=call.path["id"])
        authenticator.forget(session_id)  # this worker at once; the others when the announcement arrives
        return empty_response()

    return [
        RouteSpec(
            "POST",
            f"{API_PREFIX}/admin/users/{{id}}/impersonate",
            open_as,
            "users.impersonate",
            tags=("users",),
            permission=IMPERSONATE,
            summary="Open a session as a user",
            openapi={
                "description": "A short session as the user (an hour at most, never extended by "
                "refreshing), bound to the caller's session: it ends with it, or when the caller loses the "
                "permission. Recorded in the audit log (`users.impersonated`, the admin as actor); events "
                "written through it name the admin as `impersonator_id`. 404 for a user that does not "
                "exist or is not visible; 409 `user_disabled` for a disabled one; 403 "
                "`impersonation_refused` for an administrator, or from an impersonation session.",
                "parameters": [path_id("id", "The user's id.")],
                "responses": {
                    "201": response(
                        "A token pair of the new session",
                        data(IMPERSONATION_TOKENS),
                        header_names=("Cache-Control",),
                    ),
                    **problems(404, 409),
                },
            },
        ),
        RouteSpec(
            "GET",
            f"{API_PREFIX}/admin/impersonations",
            list_opened,
            "users.list_impersonations",
            tags=("users",),
            permission=IMPERSONATE,
            summary="List the live impersonation sessions the caller opened",
            openapi={
                "responses": {
                    "200": response(
                        "Live impersonation sessions, newest first",
                        data({"type": "array", "items": IMPERSONATION}, "ImpersonationList"),
                    ),
                }
            },
        ),
        RouteSpec(
            "DELETE",
            f"{API_PREFIX}/admin/impersonations/{{id}}",
            end,
            "users.end_impersonation",
            tags=("users",),
            permission=IMPERSONATE,
            summary="End an impersonation session the caller opened",
            openapi={
                "description": "Ends it at once on every worker. Any other session is 404.",
                "parameters": [path_id("id", "The impersonation session's id.")],
                "responses": {"204": response("Ended"), **problems(404)},
            },
        ),
    ]
