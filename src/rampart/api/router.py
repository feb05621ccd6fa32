"""Mounting `RouteSpec`s: one endpoint per path that dispatches on the method, authenticates (unless the
route is public), checks the route's permission, applies the rate limit, then calls the handler."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, Router
from starlette.types import Receive, Scope, Send

from rampart.access.actor import Actor
from rampart.api.problems import rate_limit_headers
from rampart.auth.browser import AS_COOKIE, CSRF_FIELD, BrowserSessions
from rampart.auth.sessions import Authenticator
from rampart.errors import (
    MethodNotAllowed,
    NotFound,
    RampartError,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
)
from rampart.lib.ratelimit import RateLimiter
from rampart.lib.rates import Rate
from rampart.resources.endpoints import Call, RouteSpec

log = logging.getLogger("rampart.api")


@dataclass(frozen=True, slots=True)
class Limits:
    """The rate limiter and the rate of each route class."""

    limiter: RateLimiter
    rates: dict[str, Rate]


class Endpoint:
    """All methods of one path template."""

    def __init__(
        self,
        path: str,
        specs: list[RouteSpec],
        auth: Authenticator,
        limits: Limits,
        resources: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = path
        self.resources = resources if resources is not None else {}
        self.specs = {spec.method: spec for spec in specs}
        if "GET" in self.specs and "HEAD" not in self.specs:
            self.specs["HEAD"] = self.specs["GET"]
        self.allow = sorted(m for m in self.specs if m != "HEAD")
        self.auth = auth
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["rampart.route"] = self.path
        spec = self.specs.get(scope["method"])
        if spec is None:
            raise MethodNotAllowed(f"{scope['method']} is not allowed here.", allow=self.allow)
        request = Request(scope, receive)
        actor: Actor | None = None
        if not spec.public:
            try:
                actor = await self.auth.authenticate(request.headers.get("authorization"))
            except Unauthorized:
                # Failed attempts count against the client's IP, so token guessing is limited too.
                await self._limit(spec, None, scope)
                raise
            scope["rampart.user_id"] = str(actor.user_id)
        await self._limit(spec, actor, scope)
        if actor is not None and spec.permission is not None:
            actor.require(spec.permission)
        if spec.streaming and scope.get("rampart.deadline") is not None:
            scope["rampart.deadline"].reschedule(None)  # authenticated and allowed: may now run long
        call = Call(
            request=request,
            actor=actor,
            request_id=scope["rampart.request_id"],
            body=scope.get("rampart.body", b""),
            resources=self.resources,
        )
        response = await spec.handler(call)
        await response(scope, receive, send)

    async def _limit(self, spec: RouteSpec, actor: Actor | None, scope: Scope) -> None:
        rate = self.limits.rates.get(spec.rate_class)
        if rate is None:
            return
        client = scope.get("client")
        ip = client[0] if client else "unknown"
        # Auth token routes are limited per client IP; everything else per user, or per IP when anonymous.
        who = f"u:{actor.user_id}" if actor is not None and spec.rate_class != "auth" else f"ip:{ip}"
        try:
            decision = await self.limits.limiter.hit(f"{spec.rate_class}:{who}", rate)
        except Exception as exc:
            # Fail closed: without a working limiter (Redis down) the limits cannot be kept.
            log.warning("the rate limiter failed", exc_info=True)
            raise ServiceUnavailable("The service is temporarily unavailable.") from exc
        if not decision.allowed:
            raise RateLimited(
                "Too many requests; slow down.",
                retry_after=decision.retry_after,
                limit=decision.limit,
                remaining=decision.remaining,
                reset_after=decision.reset_after,
            )
        # Every response of a limited route says what is left, errors included: the pipeline adds these.
        scope["rampart.response_headers"] = rate_limit_headers(
            decision.limit, decision.remaining, decision.reset_after
        )


# Renders an error of a browser route as a page (the console's), given the call as far as it was made.
BrowserErrors = Callable[[Call, RampartError], Awaitable[Response]]


class BrowserEndpoint(Endpoint):
    """All methods of one browser path (`RouteSpec.browser`): signed in by the console's cookie, every
    state-changing request checked for the browser's CSRF token, errors answered as pages.

    A separate class, mounted outside the API's segment table: the API's endpoints and their lookup do
    not change at all for it.
    """

    def __init__(
        self,
        path: str,
        specs: list[RouteSpec],
        sessions: BrowserSessions,
        limits: Limits,
        resources: Mapping[str, Any] | None,
        errors: BrowserErrors | None,
    ) -> None:
        super().__init__(path, specs, sessions.authenticator, limits, resources)
        self.sessions = sessions
        self.errors = errors

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["rampart.route"] = self.path
        request = Request(scope, receive)
        body = scope.get("rampart.body", b"")
        call = Call(request=request, actor=None, request_id=scope["rampart.request_id"], body=body)
        caller = None
        try:
            spec = self.specs.get(scope["method"])
            if spec is None:
                raise MethodNotAllowed(f"{scope['method']} is not allowed here.", allow=self.allow)
            caller = await self.sessions.caller(request)
            call.actor, call.csrf_token, call.resources = caller.actor, caller.csrf_token, self.resources
            if caller.actor is not None:
                scope["rampart.user_id"] = str(caller.actor.user_id)
            await self._limit(spec, caller.actor, scope)
            self.sessions.check_csrf(request, caller, call.form().get(CSRF_FIELD) if body else None)
            if caller.actor is not None and spec.permission is not None:
                caller.actor.require(spec.permission)
            if spec.streaming and scope.get("rampart.deadline") is not None:
                scope["rampart.deadline"].reschedule(None)
            started = time.perf_counter()
            response = await spec.handler(call)
            # What the page cost the server, for the browser's developer tools (and the console's tests).
            if isinstance(response, Response):  # not a stream
                response.headers["server-timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
        except RampartError as exc:
            if self.errors is None:
                raise
            response = await self.errors(call, exc)
        if caller is not None and isinstance(response, Response):
            if caller.fresh_pre:
                self.sessions.set_pre(response, request, caller.csrf_token)
            if caller.impersonation_ended:
                self.sessions.forget(response, request, AS_COOKIE)
        await response(scope, receive, send)


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    raise NotFound("No such route.")


class _PlainRoute(Route):
    """A plain Starlette route (health, metrics, docs) whose 405 is a problem like every other error:
    Starlette's own answer is text/plain."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.methods and scope["method"] not in self.methods:
            allow = sorted(self.methods - {"HEAD"})
            raise MethodNotAllowed(f"{scope['method']} is not allowed here.", allow=allow)
        await super().handle(scope, receive, send)


def _with_problem_405(route: BaseRoute) -> BaseRoute:
    if type(route) is Route and route.methods:
        return _PlainRoute(route.path, route.endpoint, methods=list(route.methods), name=route.name)
    return route


def build_router(
    specs: Iterable[RouteSpec],
    *,
    auth: Authenticator,
    limits: Limits,
    extra: Iterable[BaseRoute] = (),
    resources: Mapping[str, Any] | None = None,
    browser: BrowserSessions | None = None,
    browser_errors: BrowserErrors | None = None,
) -> Router:
    """A Starlette router with one Route per path template (methods dispatched by `Endpoint`).

    Browser routes (`RouteSpec.browser`, which need `browser`) get a `BrowserEndpoint` each, matched by
    Starlette after the API's segment table: they add nothing to an API request's lookup.
    """
    by_path: dict[str, list[RouteSpec]] = defaultdict(list)
    for spec in specs:
        if any(s.method == spec.method for s in by_path[spec.path]):
            raise ValueError(f"route {spec.method} {spec.path} is declared twice")
        if any(s.browser != spec.browser for s in by_path[spec.path]):
            raise ValueError(f"route {spec.path} mixes browser and API methods")
        by_path[spec.path].append(spec)
    routes: list[BaseRoute] = [_with_problem_405(route) for route in extra]
    endpoints: dict[str, Endpoint] = {}
    for path, group in by_path.items():
        if group[0].browser:
            if browser is None:
                raise ValueError(f"browser route {path} needs browser sessions (RAMPART_CONSOLE=on)")
            routes.append(
                Route(path, BrowserEndpoint(path, group, browser, limits, resources, browser_errors))
            )
        else:
            endpoints[path] = Endpoint(path, group, auth, limits, resources)
    routes += [Route(path, endpoint) for path, endpoint in endpoints.items()]
    return _SegmentRouter(routes=routes, default=_not_found, endpoints=endpoints)


class _SegmentRouter(Router):
    """Starlette's router, with API paths looked up by segment instead of trying every route's regex.

    Resource routes are the hot path: a table keyed by segment count, then a comparison of the static
    segments, finds the endpoint in a few steps. Everything else (health, docs) falls back to Starlette.
    The Starlette `routes` stay complete, so introspection (OpenAPI checks) sees every route.
    """

    def __init__(self, *, routes: list[BaseRoute], default: Any, endpoints: dict[str, Endpoint]) -> None:
        super().__init__(routes=routes, default=default)
        self._table: dict[int, list[tuple[tuple[str | None, ...], tuple[str, ...], Endpoint]]] = {}
        for path, endpoint in endpoints.items():
            segments = path.split("/")
            template = tuple(None if s.startswith("{") else s for s in segments)
            names = tuple(s[1:-1] for s in segments if s.startswith("{"))
            self._table.setdefault(len(segments), []).append((template, names, endpoint))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            parts = scope["path"].split("/")
            for template, names, endpoint in self._table.get(len(parts), ()):
                values = []
                for part, want in zip(parts, template, strict=True):
                    if want is None:
                        if not part:
                            break
                        values.append(part)
                    elif part != want:
                        break
                else:
                    scope["path_params"] = dict(zip(names, values, strict=True))
                    await endpoint(scope, receive, send)
                    return
        await super().__call__(scope, receive, send)
