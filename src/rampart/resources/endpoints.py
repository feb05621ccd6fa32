"""What a route handler receives and returns, independent of how the HTTP layer is assembled.

Domain packages describe their routes as `RouteSpec`s; `rampart.api.router` mounts them behind the
request pipeline (authentication, rate limit) and `rampart.api.openapi` documents them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from rampart.access.actor import Actor
from rampart.errors import MalformedJSON, Unauthorized

JSON_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS


@dataclass(slots=True)
class Call:
    """One request as a handler sees it: the caller, the raw body, the request id."""

    request: Request
    actor: Actor | None
    request_id: str
    body: bytes = b""

    @property
    def user(self) -> Actor:
        """The authenticated caller; routes are authenticated unless declared public."""
        if self.actor is None:
            raise Unauthorized("Authentication is required.")
        return self.actor

    def json(self) -> Any:
        if not self.body:
            raise MalformedJSON("A JSON body is required.")
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            raise MalformedJSON("The body is not valid JSON.") from None

    @property
    def path(self) -> Mapping[str, Any]:
        return self.request.path_params


Handler = Callable[[Call], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """A route: method, path template, handler, and how the pipeline and OpenAPI treat it."""

    method: str
    path: str
    handler: Handler
    name: str
    public: bool = False
    rate_class: str = "api"  # "auth" routes get the stricter per-IP limit
    permission: str | None = None  # checked after authentication: 403 when the role lacks it
    summary: str = ""
    tags: tuple[str, ...] = ()
    openapi: dict[str, Any] = field(default_factory=dict)
    # A long-lived response (Server-Sent Events): once authenticated, the request time limit no longer
    # applies to it (the router lifts the pipeline's deadline). The handler bounds its own waits.
    streaming: bool = False


def json_response(payload: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(payload, option=JSON_OPTIONS),
        status_code=status,
        headers=dict(headers) if headers else None,
        media_type="application/json",
    )


def empty_response(status: int = 204, headers: Mapping[str, str] | None = None) -> Response:
    return Response(status_code=status, headers=dict(headers) if headers else None)
