"""What a route handler receives and returns, independent of how the HTTP layer is assembled.

Domain packages describe their routes as `RouteSpec`s; `rampart.api.router` mounts them behind the
request pipeline (authentication, rate limit) and `rampart.api.openapi` documents them.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response

from rampart.access.actor import Actor
from rampart.errors import MalformedJSON, Unauthorized
from rampart.resources.context import Context

if TYPE_CHECKING:
    from rampart.resources.manager import ResourceManager

JSON_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS


@dataclass(slots=True)
class Call:
    """One request as a handler sees it: the caller, the raw body, the request id."""

    request: Request
    actor: Actor | None
    request_id: str
    body: bytes = b""
    # Every declared resource's manager, by name: what an app's own route calls (`call.resources`).
    resources: Mapping[str, ResourceManager] = field(default_factory=dict)
    # A browser route (`Route(..., browser=True)`): the token its forms must carry (`csrf_token` field).
    csrf_token: str | None = None

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

    def form(self) -> QueryParams:
        """The fields of an HTML form (`application/x-www-form-urlencoded`, what browser routes accept)."""
        return QueryParams(self.body.decode("utf-8", errors="replace"))

    @property
    def path(self) -> Mapping[str, Any]:
        return self.request.path_params

    @property
    def context(self) -> Context:
        """The authenticated caller, as manager calls take it:
        `await call.resources["tasks"].get(call.context, task_id)`."""
        return Context(actor=self.user, request_id=self.request_id)


Handler = Callable[[Call], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """A route: method, path template, handler, and how the pipeline and OpenAPI treat it.

    An app's own routes are these too (`rampart.Route`): authenticated unless `public`, limited by the
    `rate_class`'s limit, checked for `permission`, documented in OpenAPI, and answered as problem+json
    when the handler raises a Rampart error.
    """

    method: str
    path: str
    handler: Handler
    name: str = ""  # the OpenAPI operationId; made from the method and path when not given
    public: bool = False
    rate_class: str = "api"  # "auth" routes get the stricter per-IP limit
    permission: str | None = None  # checked after authentication: 403 when the role lacks it
    summary: str = ""
    tags: tuple[str, ...] = ()
    openapi: dict[str, Any] = field(default_factory=dict)
    # A long-lived response (Server-Sent Events): once authenticated, the request time limit no longer
    # applies to it (the router lifts the pipeline's deadline). The handler bounds its own waits.
    streaming: bool = False
    # A page for browsers (the console's, or an app's own beside them): signed in by the console's session
    # cookie instead of a bearer token (`call.actor` is None when signed out; `call.user` raises), every
    # POST must carry the browser's CSRF token (`call.csrf_token`, in a `csrf_token` form field or an
    # `X-CSRF-Token` header), HTML forms are accepted as bodies, and it is left out of OpenAPI. Its path
    # must be under the console's (`/console`), whose Content-Security-Policy it gets.
    browser: bool = False

    def __post_init__(self) -> None:
        if self.method.upper() != self.method or self.method not in _METHODS:
            raise ValueError(f"route {self.path}: method {self.method!r} is not one of {sorted(_METHODS)}")
        if not self.path.startswith("/"):
            raise ValueError(f"route path {self.path!r} must start with '/'")
        if not self.name:
            words = re.sub(r"[^a-z0-9]+", "_", self.path.lower()).strip("_")
            object.__setattr__(self, "name", f"{self.method.lower()}_{words or 'root'}")


_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})

# The public name of a route declaration (`from rampart import Route`).
Route = RouteSpec


def json_response(payload: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload, option=JSON_OPTIONS), status, headers, "application/json")


def empty_response(status: int = 204, headers: Mapping[str, str] | None = None) -> Response:
    return Response(status_code=status, headers=headers)
