"""Impersonation routes: open a session as a user, and list or end the sessions the caller opened.

`POST /admin/users/{id}/impersonate`, `GET /admin/impersonations`, `DELETE /admin/impersonations/{id}`;
all need `users:impersonate`.
"""

from __future__ import annotations

from typing import Any

from rampart.access.actor import Roles
from rampart.access.impersonation import IMPERSONATE
from rampart.auth.impersonation import impersonate, opened_sessions, revoke_opened
from rampart.auth.routes_sessions import NO_STORE
from rampart.auth.sessions import Authenticator
from rampart.auth.tokens import TokenIssuer
from rampart.resources.endpoints import Call, RouteSpec, empty_response, json_response
from rampart.resources.manager import Context, ResourceManager
from rampart.resources.openapi_schema import problem_responses
from rampart.resources.routes import API_PREFIX

_TOKEN_SCHEMA = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {
            "type": "object",
            "required": [
                "access_token",
                "token_type",
                "expires_in",
                "refresh_token",
                "session_id",
                "session_expires_at",
            ],
            "properties": {
                "access_token": {"type": "string"},
                "token_type": {"type": "string"},
                "expires_in": {"type": "integer"},
                "refresh_token": {"type": "string"},
                "session_id": {"type": "string", "format": "uuid"},
                "session_expires_at": {
                    "type": "string",
                    "format": "date-time",
                    "description": "When the impersonation ends at the latest; refreshing never moves it",
                },
            },
        }
    },
}

_OPENED_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "user_id", "opened_by", "device", "ip", "created_at", "last_used_at", "expires_at"],
    "properties": {
        "id": {"type": "string", "format": "uuid", "description": "The impersonation session"},
        "user_id": {"type": "string", "format": "uuid", "description": "The user impersonated"},
        "opened_by": {
            "type": "string",
            "format": "uuid",
            "description": "The caller's session that opened it: it ends with that one",
        },
        "device": {"type": ["string", "null"], "description": "The User-Agent that opened it"},
        "ip": {"type": ["string", "null"]},
        "created_at": {"type": "string", "format": "date-time"},
        "last_used_at": {
            "type": ["string", "null"],
            "format": "date-time",
            "description": "When its refresh token was last exchanged",
        },
        "expires_at": {"type": "string", "format": "date-time"},
    },
}


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
        data = {
            **pair.as_json(),
            "session_id": str(pair.session_id),
            "session_expires_at": pair.session_expires_at,
        }
        return json_response({"data": data}, status=201, headers=NO_STORE)

    async def list_opened(call: Call) -> Any:
        rows = await opened_sessions(db=db, roles=roles, impersonator_id=call.user.user_id)
        return json_response({"data": rows})

    async def end(call: Call) -> Any:
        session_id = await revoke_opened(db=db, impersonator_id=call.user.user_id, session=call.path["id"])
        authenticator.forget(session_id)  # this worker at once; the others when the announcement arrives
        return empty_response()

    id_param = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
    return [
        RouteSpec(
            "POST",
            f"{API_PREFIX}/admin/users/{{id}}/impersonate",
            open_as,
            "users.impersonate",
            tags=("users",),
            permission=IMPERSONATE,
            summary="Open a short session as this user, bound to the caller's session",
            openapi={
                "parameters": id_param,
                "responses": {
                    "201": {
                        "description": "A token pair",
                        "content": {"application/json": {"schema": _TOKEN_SCHEMA}},
                    },
                    **problem_responses(401, 403, 404, 409, 429),
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
            summary="The live impersonation sessions the caller opened",
            openapi={
                "responses": {
                    "200": {
                        "description": "Live impersonation sessions, newest first",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["data"],
                                    "properties": {"data": {"type": "array", "items": _OPENED_SCHEMA}},
                                }
                            }
                        },
                    },
                    **problem_responses(401, 403, 429),
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
                "parameters": id_param,
                "responses": {
                    "204": {"description": "Ended"},
                    **problem_responses(401, 403, 404, 429),
                },
            },
        ),
    ]
