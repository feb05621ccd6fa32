"""Who am I: `GET /auth/me`.

Sign-in, refresh and the sessions API are in `routes_oidc` and `routes_sessions`; impersonation in
`routes_impersonation`.
"""

from __future__ import annotations

from typing import Any

from rampart.resources.endpoints import Call, RouteSpec, json_response
from rampart.resources.manager import Context, ResourceManager
from rampart.resources.openapi_parts import data, named, response
from rampart.resources.openapi_schema import schemas
from rampart.resources.routes import API_PREFIX


def auth_routes(*, users: ResourceManager) -> list[RouteSpec]:
    async def me(call: Call) -> Any:
        row = await users.get(Context(actor=call.user, request_id=call.request_id), call.user.user_id)
        return json_response({"data": {**row, "permissions": sorted(call.user.permissions)}})

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
    ]
