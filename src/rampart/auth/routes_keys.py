"""GET /.well-known/jwks.json: the public keys that verify access tokens (empty with HS256)."""

from __future__ import annotations

from typing import Any

from rampart.auth.tokens import TokenIssuer
from rampart.resources.endpoints import Call, RouteSpec, json_response
from rampart.resources.openapi_parts import named, response

JWKS_PATH = "/.well-known/jwks.json"


def key_routes(*, tokens: TokenIssuer) -> list[RouteSpec]:
    async def jwks(call: Call) -> Any:
        await tokens.prepare()
        # Short: a rotated-in key must reach verifiers long before tokens it signed are common.
        return json_response(tokens.jwks(), headers={"Cache-Control": "public, max-age=60"})

    key_schema = {
        "type": "object",
        "required": ["kty", "kid", "alg"],
        "properties": {k: {"type": "string"} for k in ("kty", "kid", "alg", "use", "crv", "x", "n", "e")},
    }
    return [
        RouteSpec(
            "GET",
            JWKS_PATH,
            jwks,
            "auth.jwks",
            public=True,
            tags=("auth",),
            summary="The public keys of the access tokens (JWKS; empty when they are HS256)",
            openapi={
                "security": [],
                "responses": {
                    "200": response(
                        "A JSON Web Key Set",
                        named(
                            "JsonWebKeySet",
                            {
                                "type": "object",
                                "required": ["keys"],
                                "properties": {
                                    "keys": {"type": "array", "items": named("JsonWebKey", key_schema)}
                                },
                            },
                        ),
                        header_names=("Cache-Control",),
                    ),
                },
            },
        )
    ]
