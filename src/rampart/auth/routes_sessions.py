"""Token refresh, logout and the caller's sessions: /auth/refresh, /auth/logout, /auth/sessions.

"Log out everywhere" is `POST /auth/logout?all=true`: every session of the caller, this one included.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from rampart.access.actor import Roles
from rampart.auth.cookies import REFRESH_COOKIE, clear_token_cookies, refresh_cookie, set_token_cookies
from rampart.auth.refresh import rotate
from rampart.auth.sessions import Authenticator, revoke_session, revoke_user_sessions, sessions_of
from rampart.auth.tokens import TokenIssuer
from rampart.db.pool import Database
from rampart.errors import FieldError, InvalidQuery, NotFound, Unauthorized, ValidationFailed
from rampart.lib.bus import EventBus
from rampart.lib.ids import parse_uuid
from rampart.resources.endpoints import Call, RouteSpec, empty_response, json_response
from rampart.resources.openapi_parts import (
    TIMESTAMP,
    UUID,
    data,
    json_body,
    named,
    nullable,
    path_id,
    problems,
    query,
    response,
)
from rampart.resources.routes import API_PREFIX

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}  # token responses (RFC 6749 §5.1)

_ACCESS = {
    "access_token": {"type": "string", "description": "Send as `Authorization: Bearer <token>`."},
    "token_type": {"type": "string", "enum": ["Bearer"]},
    "expires_in": {"type": "integer", "description": "Seconds until the access token expires."},
}


def _object(properties: dict[str, Any], *required: str) -> dict[str, Any]:
    """An object schema; every property is required unless `required` names some."""
    return {"type": "object", "required": list(required or properties), "properties": properties}


_REFRESH_TOKEN = {"type": "string", "description": "Exchange at POST /api/v1/auth/refresh."}
TOKEN_PAIR = named("TokenPair", _object({**_ACCESS, "refresh_token": _REFRESH_TOKEN}))
_NEXT_REFRESH_TOKEN = {
    "type": "string",
    "description": "The next refresh token; absent when it came as the rampart_refresh cookie "
    "(a new cookie is set instead).",
}
REFRESHED = named("RefreshedTokens", _object({**_ACCESS, "refresh_token": _NEXT_REFRESH_TOKEN}, *_ACCESS))

_SESSION = {
    "id": UUID,
    "device": {"type": ["string", "null"], "description": "The User-Agent that opened the session"},
    "ip": {"type": ["string", "null"]},
    "created_at": TIMESTAMP,
    "last_used_at": {**nullable(TIMESTAMP), "description": "When its refresh token was last exchanged"},
    "expires_at": TIMESTAMP,
    "current": {"type": "boolean", "description": "The session of the token making this request"},
    "impersonated": {"type": "boolean", "description": "Opened by an admin impersonating the user"},
    "impersonator_id": {
        **nullable(UUID),
        "description": "The admin who opened it by impersonating the user, else null",
    },
}
SESSION = named("Session", _object(_SESSION))


def session_routes(
    *,
    db: Database,
    tokens: TokenIssuer,
    authenticator: Authenticator,
    bus: EventBus,
    roles: Roles,
    session_ttl: int = 30 * 86_400,
) -> list[RouteSpec]:
    exchange = partial(rotate, db=db, tokens=tokens, roles=roles, authenticator=authenticator, bus=bus)

    async def refresh(call: Call) -> Any:
        # A body names the token; without one, a browser may send it as a cookie (with the CSRF header).
        from_cookie = not call.body and bool(call.request.cookies.get(REFRESH_COOKIE))
        if not call.body and not from_cookie:
            raise Unauthorized("No refresh token: send it in the body, or as the rampart_refresh cookie.")
        if from_cookie:
            token = refresh_cookie(call.request)
        else:
            body = call.json()
            token = body.get("refresh_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise ValidationFailed([FieldError("refresh_token", "required", "A refresh token is required.")])
        client = call.request.client
        ip = client.host if client else None
        result = await exchange(refresh_token=token, ip=ip, request_id=call.request_id)
        if not from_cookie:
            return json_response({"data": result.as_json()}, headers=NO_STORE)
        # The cookie client gets the access token only: its refresh token stays out of reach of scripts.
        data = {k: v for k, v in result.as_json().items() if k != "refresh_token"}
        response = json_response({"data": data}, headers=NO_STORE)
        set_token_cookies(response, result, max_age=session_ttl)
        return response

    async def logout(call: Call) -> Any:
        actor = call.user
        flag = call.request.query_params.get("all")
        if flag not in (None, "true", "false"):
            raise InvalidQuery(
                "`all` must be true or false.", errors=[FieldError("all", "invalid", "Not a boolean.")]
            )
        everywhere = flag == "true"
        async with db.transaction() as conn:
            if everywhere:
                await revoke_user_sessions(conn, actor.user_id)
            else:
                await revoke_session(conn, actor.session_id, actor.user_id)
        # This worker forgets at once; the others when the announcement arrives (or within the
        # cache bound of 1 s, should the notification connection be down).
        if everywhere:
            authenticator.forget_user(actor.user_id)
        else:
            authenticator.forget(actor.session_id)
        response = empty_response()
        clear_token_cookies(response)
        return response

    async def list_sessions(call: Call) -> Any:
        actor = call.user
        data = [
            {
                "id": str(r["id"]),
                "device": r["user_agent"],
                "ip": r["ip"],
                "created_at": r["created_at"],
                "last_used_at": r["last_used_at"],
                "expires_at": r["expires_at"],
                "current": r["id"] == actor.session_id,
                "impersonated": r["impersonator_id"] is not None,
                "impersonator_id": str(r["impersonator_id"]) if r["impersonator_id"] else None,
            }
            for r in await sessions_of(db, roles, actor.user_id, limit=1000)
        ]
        return json_response({"data": data})

    async def delete_session(call: Call) -> Any:
        actor = call.user
        session_id = parse_uuid(call.path["id"])
        if session_id is None:
            raise NotFound("No such session.")
        async with db.transaction() as conn:
            # Someone else's session is reported exactly like one that does not exist.
            if not await revoke_session(conn, session_id, actor.user_id):
                raise NotFound("No such session.")
        authenticator.forget(session_id)
        return empty_response()

    return [
        RouteSpec(
            "POST",
            f"{API_PREFIX}/auth/refresh",
            refresh,
            "auth.refresh",
            public=True,
            rate_class="auth",
            tags=("auth",),
            summary="Exchange a refresh token for a new token pair",
            openapi={
                "description": "The refresh token is spent: presenting it again revokes the whole session "
                "(reuse detection). Send it in the body, or (browsers) omit the body and let the "
                "rampart_refresh cookie carry it, with X-CSRF-Token repeating the rampart_csrf cookie.",
                "parameters": [
                    {
                        "name": "X-CSRF-Token",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                        "description": "With the rampart_refresh cookie (no body): the rampart_csrf cookie",
                    },
                    {
                        "name": "rampart_refresh",
                        "in": "cookie",
                        "required": False,
                        "schema": {"type": "string", "minLength": 1},
                        "description": "The refresh token, for browser clients (set by sign-in; HttpOnly)",
                    },
                    {
                        "name": "rampart_csrf",
                        "in": "cookie",
                        "required": False,
                        "schema": {"type": "string"},
                        "description": "Set with rampart_refresh; repeat it in X-CSRF-Token",
                    },
                ],
                "requestBody": json_body(
                    _object({"refresh_token": {"type": "string", "minLength": 1}}),
                    required=False,
                    description="The refresh token; omit the body to use the rampart_refresh cookie",
                ),
                "responses": {
                    "200": response(
                        "A new token pair", data(REFRESHED), header_names=("Cache-Control", "Set-Cookie")
                    ),
                    **problems(401, 403, 422),
                },
            },
        ),
        RouteSpec(
            "POST",
            f"{API_PREFIX}/auth/logout",
            logout,
            "auth.logout",
            tags=("auth",),
            summary="Log out: revoke the caller's session (or all of them with all=true)",
            openapi={
                "parameters": [
                    query(
                        "all",
                        {"type": "boolean", "default": False},
                        "Log out everywhere: revoke all of the caller's sessions",
                    )
                ],
                "responses": {
                    "204": response(
                        "Logged out; the token cookies are cleared", header_names=("Set-Cookie",)
                    ),
                    **problems(400),
                },
            },
        ),
        RouteSpec(
            "GET",
            f"{API_PREFIX}/auth/sessions",
            list_sessions,
            "auth.list_sessions",
            tags=("auth",),
            summary="List the caller's active sessions",
            openapi={
                "responses": {
                    "200": response(
                        "Active sessions, newest first",
                        data({"type": "array", "items": SESSION}, "SessionList"),
                    ),
                }
            },
        ),
        RouteSpec(
            "DELETE",
            f"{API_PREFIX}/auth/sessions/{{id}}",
            delete_session,
            "auth.revoke_session",
            tags=("auth",),
            summary="Revoke one of the caller's sessions",
            openapi={
                "parameters": [path_id("id", "The session's id (from GET /api/v1/auth/sessions).")],
                "responses": {"204": response("Revoked"), **problems(404)},
            },
        ),
    ]
