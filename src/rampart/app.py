"""`create_app(settings)`: builds the whole service (pool, bus, managers, routes, pipeline) from settings."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from starlette.types import ASGIApp, Receive, Scope, Send

from rampart import __version__
from rampart.access.actor import Roles
from rampart.api.openapi import build_spec, docs_routes
from rampart.api.pipeline import Pipeline
from rampart.api.router import Limits, build_router
from rampart.auth.routes import auth_routes
from rampart.auth.sessions import Authenticator
from rampart.auth.tokens import TokenIssuer
from rampart.config import Settings
from rampart.db.migrate import pending_migrations
from rampart.db.pool import Database
from rampart.lib.bus import EventBus
from rampart.lib.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from rampart.lib.rates import parse_rate
from rampart.ops.health import OPERATIONS_PATHS, health_routes
from rampart.ops.metrics import Metrics
from rampart.resources.endpoints import RouteSpec
from rampart.resources.manager import ResourceManager
from rampart.resources.query import CursorCodec
from rampart.resources.routes import resource_routes
from rampart.resources.spec import Registry
from rampart.schema import declared_resources

log = logging.getLogger("rampart")

AppInstaller = Callable[["Services"], Iterable[RouteSpec]]


@dataclass
class Services:
    """What the running app holds; handed to app installers and tests."""

    settings: Settings
    db: Database
    bus: EventBus
    tokens: TokenIssuer
    roles: Roles
    authenticator: Authenticator
    limiter: RateLimiter
    registry: Registry
    managers: dict[str, ResourceManager] = field(default_factory=dict)
    redis: aioredis.Redis | None = None


class Rampart:
    """The ASGI application: the pipeline around the router, plus lifespan."""

    def __init__(self, services: Services, app: ASGIApp) -> None:
        self.services = services
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        await self._app(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def aclose(self) -> None:
        await self.services.limiter.close()
        await self.services.db.close()
        if self.services.redis is not None:
            await self.services.redis.aclose()


def create_app(settings: Settings) -> Rampart:
    """Build the service with the resources of `settings.app` (the demo app by default)."""
    if settings.database_url is None:
        raise ValueError("create_app needs settings.database_url (the CLI starts an embedded database)")
    secret = settings.jwt_secret.get_secret_value()
    db = Database(
        settings.database_url.get_secret_value(),
        max_size=settings.db_pool_size,
        acquire_timeout=settings.db_pool_timeout,
        connect_timeout=settings.db_connect_timeout,
        statement_timeout=settings.request_timeout + 1,
    )
    roles = Roles(settings.role_permissions)
    tokens = TokenIssuer(
        secret=secret,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        ttl=settings.access_token_ttl,
    )
    redis_client = None
    limiter: RateLimiter
    if settings.redis_url is not None:
        # Bounded: a Redis that stops answering must give quick 503s, not hold every request to its timeout.
        redis_client = aioredis.from_url(
            settings.redis_url.get_secret_value(), socket_timeout=1.0, socket_connect_timeout=1.0
        )
        limiter = RedisRateLimiter(redis_client)
    else:
        limiter = MemoryRateLimiter()
    services = Services(
        settings=settings,
        db=db,
        bus=EventBus(),
        tokens=tokens,
        roles=roles,
        authenticator=Authenticator(db=db, tokens=tokens, roles=roles, cache_ttl=settings.session_cache_ttl),
        limiter=limiter,
        registry=Registry(),
        redis=redis_client,
    )
    registry = services.registry
    for resource in declared_resources(settings, roles):
        registry.add(resource)
    cursors = CursorCodec(secret.encode())
    for resource in registry:
        manager_cls = resource.manager or ResourceManager
        services.managers[resource.name] = manager_cls(
            resource, db=db, bus=services.bus, cursors=cursors, managers=services.managers
        )
    specs: list[RouteSpec] = []
    for manager in services.managers.values():
        specs += resource_routes(manager)
    specs += auth_routes(
        users=services.managers["users"], tokens=tokens, bus=services.bus, session_ttl=settings.session_ttl
    )
    metrics = Metrics(pool_stats=db.stats)
    services.bus.on("*", lambda event: metrics.events.labels(event["type"], "emitted").inc())

    async def check_database() -> str | None:
        await db.fetchval("SELECT 1")
        return None

    async def check_migrations() -> str | None:
        pending = await pending_migrations(db, versions_dir=settings.migrations_dir)
        return None if not pending else f"{len(pending)} pending"

    checks: dict[str, Any] = {"database": check_database, "migrations": check_migrations}
    if redis_client is not None:
        client = redis_client

        async def check_redis() -> str | None:
            await client.ping()
            return None

        checks["redis"] = check_redis
    spec = build_spec(specs, title="Rampart", version=__version__, extra_paths=dict(OPERATIONS_PATHS))
    extra = [*health_routes(checks), *metrics.routes(), *docs_routes(spec)]
    rates = {"api": parse_rate(settings.rate_limit), "auth": parse_rate(settings.rate_limit_auth)}
    router = build_router(specs, auth=services.authenticator, limits=Limits(limiter, rates), extra=extra)
    pipeline = Pipeline(
        router,
        cors_origins=settings.cors_origins,
        body_limit=settings.body_limit,
        timeout=settings.request_timeout,
        debug=settings.env == "development",
        access_log_enabled=settings.access_log,
        observers=[metrics.observe],
    )
    return Rampart(services, pipeline)
