"""`create_app(settings)`: builds the whole service (pool, bus, managers, routes, pipeline) from settings."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from rampart import __version__
from rampart.access.actor import Roles
from rampart.api.openapi import build_spec, docs_routes
from rampart.api.pipeline import Pipeline
from rampart.api.router import Limits, build_router
from rampart.auth.browser import BrowserSessions
from rampart.auth.keys import KeyRing
from rampart.auth.oidc import OIDCClient
from rampart.auth.routes import auth_routes
from rampart.auth.routes_impersonation import impersonation_routes
from rampart.auth.routes_keys import key_routes
from rampart.auth.routes_oidc import CALLBACK_PATH, oidc_routes
from rampart.auth.routes_sessions import session_routes
from rampart.auth.sessions import REVOCATION_CHANNEL, Authenticator
from rampart.auth.tokens import TokenIssuer
from rampart.config import Settings
from rampart.db.listener import Listener
from rampart.db.migrate import pending_migrations
from rampart.db.pool import Database
from rampart.db.replicas import Replicas
from rampart.errors import ServiceUnavailable
from rampart.events.dispatcher import Dispatcher, RetryPolicy, Subscriber
from rampart.events.log import EventLog
from rampart.events.routes import event_routes
from rampart.events.stream import LiveStream
from rampart.events.webhook_sender import WebhookSender
from rampart.events.webhooks import Webhooks
from rampart.lib.bus import EventBus
from rampart.lib.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from rampart.lib.ratelimit_shm import SharedMemoryRateLimiter
from rampart.lib.rates import parse_rate
from rampart.lib.rowcache import QueryCache, RowCache
from rampart.lib.store import MemoryStore, RedisStore
from rampart.ops.drain import Drain
from rampart.ops.health import OPERATIONS_PATHS, health_routes
from rampart.ops.metrics import Metrics
from rampart.ops.metrics_history import MetricsHistory
from rampart.resources.caching import CHANNEL, Announcer, CacheFeed
from rampart.resources.endpoints import RouteSpec
from rampart.resources.manager import ResourceManager
from rampart.resources.query import CursorCodec
from rampart.resources.routes import resource_routes
from rampart.resources.spec import Registry, Resource, check_references
from rampart.schema import declared_resources, framework_resources, migration_folders

CONSOLE_PREFIX = "/console"  # rampart.console.PREFIX, without importing the console when it is off

if TYPE_CHECKING:
    import redis.asyncio as aioredis

log = logging.getLogger("rampart")


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
    # The worker's one LISTEN connection, for every channel (see rampart.db.listener).
    listener: Listener
    managers: dict[str, ResourceManager] = field(default_factory=dict)
    redis: aioredis.Redis | None = None
    cache: QueryCache | None = None
    background: list[Background] = field(default_factory=list)
    oidc: OIDCClient | None = None
    dispatcher: Dispatcher | None = None
    webhooks: Webhooks | None = None
    replicas: Replicas | None = None
    event_log: EventLog | None = None
    stream: LiveStream | None = None
    metrics: Metrics | None = None
    browser: BrowserSessions | None = None  # the console's sessions, when the console is on


class Background(Protocol):
    """A worker that runs beside the requests for the life of the process."""

    def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass(frozen=True)
class AppParts:
    """What an app was built from besides its settings (the arguments of `create_app`)."""

    resources: tuple[Resource, ...] | None = None
    routes: tuple[RouteSpec, ...] = ()
    middleware: tuple[Middleware, ...] = ()
    subscribers: tuple[Subscriber, ...] = ()


class Rampart:
    """The ASGI application: the pipeline around the router, plus lifespan."""

    def __init__(self, services: Services, app: ASGIApp, parts: AppParts | None = None) -> None:
        self.services = services
        self._app = app
        self.parts = parts or AppParts()

    def rebuild(self, settings: Settings) -> Rampart:
        """The same application (resources, routes, middleware, subscribers) on other settings: what
        `rampart.testing` serves on its test database when `RAMPART_APP` names an application."""
        parts = self.parts
        return create_app(
            settings,
            resources=parts.resources,
            routes=parts.routes,
            middleware=parts.middleware,
            subscribers=parts.subscribers,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self._app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        """Start the background workers (the cache's notification listener, ...). Idempotent."""
        await self.prepare()
        for worker in self.services.background:
            worker.start()

    async def prepare(self) -> None:
        """Find out, once, whether the database is a Citus coordinator (decision 0024): before the first
        request, so none asks. A database that cannot be reached now is asked at its first use."""
        try:
            citus = await self.services.db.on_citus()
        except ServiceUnavailable:
            log.warning("the database is unavailable at startup: asked again at the first request")
            return
        if citus and self.services.replicas is not None:
            # The read-your-writes mark is one LSN; a cluster has one per node (database-scaling.md).
            log.error("read replicas are not supported on a Citus cluster: reads may miss recent writes")

    async def aclose(self) -> None:
        for worker in reversed(self.services.background):
            await worker.stop()
        await self.services.limiter.close()
        if self.services.replicas is not None:
            await self.services.replicas.close()
        await self.services.db.close()
        if self.services.oidc is not None:
            await self.services.oidc.aclose()
        if self.services.redis is not None:
            await self.services.redis.aclose()


def _install_events(services: Services, metrics: Metrics) -> list[RouteSpec]:
    """The event log routes, the webhooks' deliveries, and the dispatcher (a background worker unless
    disabled). The webhooks' routes are their resource's."""
    settings = services.settings
    sender = WebhookSender(
        timeout=settings.webhooks_timeout, allow_private_networks=settings.webhooks_allow_private_networks
    )
    webhooks = Webhooks(db=services.db, sender=sender)
    dispatcher = Dispatcher(
        db=services.db,
        listener=services.listener if settings.events_dispatcher else None,
        # Events written with a row change are announced on the change trigger's channel only.
        also_wake_on=(CHANNEL,),
        sources=[webhooks],
        retry=RetryPolicy(max_attempts=settings.events_max_attempts),
        poll_interval=settings.events_poll_interval,
        lease=settings.events_lease,
        retention=settings.events_retention,
        deleted_tables=[manager.resource.deleted_table for manager in services.managers.values()],
        observer=lambda outcome, event_type: metrics.events.labels(event_type, outcome).inc(),
    )
    metrics.dispatcher_lag.set_function(lambda: dispatcher.lag_seconds)
    services.dispatcher, services.webhooks = dispatcher, webhooks
    services.background.append(webhooks)
    if settings.events_dispatcher:
        services.background.append(dispatcher)
        # This worker's own events are written without a notification (they would serialize commits,
        # see rampart.resources.caching): its dispatcher hears of them from the bus, after the commit.
        services.bus.on("*", lambda _event: dispatcher.wake())
    event_log = EventLog(db=services.db, managers=services.managers, reads=services.replicas)
    stream = LiveStream(
        log=event_log,
        listener=services.listener,
        reauthenticate=services.authenticator.authenticate,
        sessions=services.authenticator.live_sessions,
        session_channel=REVOCATION_CHANNEL,
        max_per_user=settings.events_stream_max_per_user,
        # A worker announces its committed changes on the row cache's channel, and their events with them:
        # they write no notification of their own (see the dispatcher above).
        also_wake_on=(CHANNEL,),
    )
    services.background.append(stream)
    services.event_log, services.stream = event_log, stream
    return event_routes(event_log, stream=stream)


def _query_cache(services: Services) -> CacheFeed:
    """The query cache and the feed that keeps it right from the database's change notifications (see
    rampart.resources.caching): one per worker in memory, or one in Redis for every worker and instance."""
    settings = services.settings
    cache: QueryCache
    if settings.cache == "redis":
        assert services.redis is not None  # the settings refuse RAMPART_CACHE=redis without Redis
        from rampart.lib.rediscache import RedisQueryCache

        cache = shared = RedisQueryCache(services.redis, ttl=settings.cache_ttl)
        services.background.append(shared)
    else:
        max_rows = settings.cache_max_rows
        cache = RowCache(max_rows=max_rows, max_decisions=max_rows * 2, max_pages=max(100, max_rows // 10))
    # Behind a transaction-mode pooler no worker announces its changes (the tables' triggers do).
    feed = CacheFeed(cache, services.registry, announced=settings.database_pool_mode != "transaction")
    services.cache = cache
    services.listener.subscribe(CHANNEL, feed.on_notification, on_up=feed.up, on_down=feed.down)
    return feed


def _replicas(services: Services) -> Replicas:
    """Read pools on the replicas; managers read through them, and writes leave the caller's mark."""
    settings = services.settings
    # The marks must be seen by every worker and instance: Redis when configured. Without it they hold
    # in this process only (`rampart serve` warns about that with several workers).
    marks = RedisStore(services.redis) if services.redis is not None else MemoryStore()
    services.replicas = replicas = Replicas(
        services.db,
        [url.get_secret_value() for url in settings.database_replica_urls],
        marks=marks,
        max_lag=settings.database_replica_max_lag,
        make_pool=lambda dsn: _database(settings, dsn),
        transaction_pooling=settings.database_pool_mode == "transaction",
    )
    return replicas


def _database(settings: Settings, dsn: str, **options: Any) -> Database:
    """A pool of the settings' size and time limits (the primary's, or a replica's)."""
    return Database(
        dsn,
        max_size=settings.db_pool_size,
        acquire_timeout=settings.db_pool_timeout,
        connect_timeout=settings.db_connect_timeout,
        statement_timeout=settings.request_timeout + 1,
        transaction_pooling=settings.database_pool_mode == "transaction",
        **options,
    )


def _install_console(services: Services, checks: dict[str, Any]) -> tuple[list[RouteSpec], list[Any], Any]:
    """The console's routes, its static files' route and its error pages; a sampler of the API's metrics
    for its charts runs in the background (one reading every 10 s, nothing per request)."""
    from rampart.console.parts import ConsoleParts
    from rampart.console.routes import console

    assert services.browser is not None
    assert services.metrics is not None
    assert services.event_log is not None
    assert services.stream is not None
    assert services.webhooks is not None
    assert services.dispatcher is not None
    history = MetricsHistory(services.metrics.api_totals)
    services.background.append(history)
    dispatcher = services.dispatcher
    parts = ConsoleParts(
        db=services.db,
        bus=services.bus,
        managers=services.managers,
        roles=services.roles,
        tokens=services.tokens,
        sessions=services.browser,
        event_log=services.event_log,
        stream=services.stream,
        webhooks=services.webhooks,
        history=history,
        checks=checks,
        oidc=services.oidc,
        impersonation_ttl=services.settings.impersonation_ttl,
        dispatcher_lag=lambda: dispatcher.lag_seconds,
    )
    specs, extra, pages = console(parts)
    return specs, extra, pages.error


def create_app(
    settings: Settings | None = None,
    *,
    resources: Iterable[Resource] | None = None,
    routes: Iterable[RouteSpec] = (),
    middleware: Sequence[Middleware] = (),
    subscribers: Iterable[Subscriber] = (),
) -> Rampart:
    """Build the service: the framework's routes, your resources' routes, and your own.

    - `settings`: read from the environment (`RAMPART_*`, `.env`) when not given.
    - `resources`: your declared resources; when not given, those of `settings.app` (`RAMPART_APP`, the
      demo app by default). Rampart adds its own `users` and `webhooks` resources itself.
    - `routes`: your own `Route`s. They go through the same pipeline as every route: authentication
      (unless `public=True`), the route's `permission`, rate limits, errors as problem+json, OpenAPI.
    - `middleware`: Starlette `Middleware(cls, **options)` entries, outermost first. They wrap the router,
      inside the pipeline: they see every request with its request id (`scope["rampart.request_id"]`)
      and the body already read and bounded, before authentication and routing; a Rampart error they
      raise is answered as problem+json with the security headers.
    - `subscribers`: `Subscriber(name, pattern, handler)`s that receive the events at least once, through
      the event dispatcher (docs/guide/events.md).
    """
    settings = settings if settings is not None else Settings()
    resources, routes, middleware, subscribers = (
        None if resources is None else tuple(resources),
        tuple(routes),
        tuple(middleware),
        tuple(subscribers),
    )
    if settings.database_url is None:
        raise ValueError("create_app needs settings.database_url (the CLI starts an embedded database)")
    secret = settings.jwt_secret.get_secret_value()
    pooled = settings.database_pool_mode == "transaction"
    db = _database(
        settings,
        settings.database_url.get_secret_value(),
        # This worker announces its own row changes after each commit (rampart.resources.caching); the
        # tables' triggers stay quiet for its sessions. A transaction-mode pooler cannot carry a session
        # setting: then the triggers announce, inside each write.
        session_settings=None if pooled else {"rampart.announces": "on"},
    )
    assert settings.session_database_url is not None
    roles = Roles(settings.role_permissions)
    tokens = TokenIssuer(
        secret=secret,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        ttl=settings.access_token_ttl,
        keys=None
        if settings.jwt_algorithm == "HS256"
        else KeyRing(db=db, alg=settings.jwt_algorithm, verify_window=settings.access_token_ttl + 60),
    )
    redis_client = None
    limiter: RateLimiter
    if settings.redis_url is not None:
        from rampart.lib.redisclient import connect

        redis_client = connect(settings.redis_url.get_secret_value())
        limiter = RedisRateLimiter(redis_client)
    elif settings.rate_limit_file:  # the workers of one `rampart serve` (or of any server on this host)
        limiter = SharedMemoryRateLimiter(settings.rate_limit_file)
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
        listener=Listener(settings.session_database_url.get_secret_value()),
        redis=redis_client,
    )
    services.background.append(services.listener)
    registry = services.registry
    declared = (
        [*framework_resources(settings, roles), *resources]
        if resources is not None
        else declared_resources(settings, roles)
    )
    for resource in declared:
        registry.add(resource)
    check_references(registry)
    cursors = CursorCodec(secret.encode())
    # What every manager works with: the worker's announcer of committed changes (a transaction-mode
    # pooler cannot carry it: then the tables' triggers announce), the query cache's feed, the replicas.
    announcer = None
    if not pooled:
        announcer = Announcer(db)
        services.background.append(announcer)
    feed = _query_cache(services) if settings.cache != "off" else None
    replicas = _replicas(services) if settings.database_replica_urls else None
    for resource in registry:
        services.managers[resource.name] = ResourceManager(
            resource,
            db=db,
            bus=services.bus,
            cursors=cursors,
            managers=services.managers,
            feed=feed,
            announcer=announcer,
            replicas=replicas,
        )
    specs = [route for manager in services.managers.values() for route in resource_routes(manager)]
    specs += auth_routes(users=services.managers["users"])
    specs += impersonation_routes(
        users=services.managers["users"],
        tokens=tokens,
        roles=roles,
        authenticator=services.authenticator,
        ttl=settings.impersonation_ttl,
    )
    specs += session_routes(
        db=db,
        tokens=tokens,
        authenticator=services.authenticator,
        bus=services.bus,
        roles=roles,
        session_ttl=settings.session_ttl,
    )
    if settings.console:
        services.browser = BrowserSessions(
            secret=secret.encode(),
            authenticator=services.authenticator,
            path=CONSOLE_PREFIX,
            ttl=settings.console_session_ttl,
            https=settings.public_url.startswith("https:"),
        )
    if settings.oidc_client_id and settings.oidc_client_secret is not None:
        services.oidc = OIDCClient(
            issuer=settings.oidc_issuer,
            client_id=settings.oidc_client_id,
            client_secret=settings.oidc_client_secret.get_secret_value(),
            redirect_uri=settings.public_url.rstrip("/") + CALLBACK_PATH,
        )
    specs += oidc_routes(
        client=services.oidc,
        db=db,
        users=services.managers["users"],
        tokens=tokens,
        session_ttl=settings.session_ttl,
        redirect_allowlist=settings.auth_redirect_allowlist,
        admin_emails=settings.oidc_admin_emails,
        browser=services.browser,
        roles=roles,
    )
    specs += key_routes(tokens=tokens)
    # Revocations announced by any worker drop this worker's cached session state at once.
    services.listener.subscribe(REVOCATION_CHANNEL, services.authenticator.on_announcement)
    services.metrics = metrics = Metrics(pool_stats=db.stats, multiprocess_dir=settings.metrics_multiproc_dir)
    if replicas is not None:
        metrics.track_reads(lambda: replicas.counts)
    if services.cache is not None:
        row_stats = services.cache.stats
        metrics.track_cache("rows", lambda: (row_stats.hits, row_stats.misses))
        metrics.track_cache("pages", lambda: (row_stats.page_hits, row_stats.page_misses))
        batches = [manager.misses.stats for manager in services.managers.values()]
        metrics.track_batches(
            lambda: (
                sum(b.statements for b in batches),
                sum(b.rows for b in batches),
                sum(b.alone for b in batches),
            )
        )
    services.bus.on("*", lambda event: metrics.events.labels(event["type"], "emitted").inc())
    specs += _install_events(services, metrics)
    assert services.dispatcher is not None
    for subscriber in subscribers:
        services.dispatcher.subscribe(subscriber)
    specs += routes

    async def check_database() -> str | None:
        await db.fetchval("SELECT 1")
        return None

    app_migrations = migration_folders(settings, list(registry))
    tables = [t for m in services.managers.values() for t in (m.resource.table, m.resource.deleted_table)]

    async def check_migrations() -> str | None:
        pending = await pending_migrations(db, app_folders=app_migrations)
        if pending:
            return f"{len(pending)} pending"
        # An app's resources have their tables (and records of deleted rows, decision 0016) from its own
        # revisions: one not generated yet (`rampart makemigrations`) is not "pending", but missing.
        missing = await db.fetchval(
            "SELECT string_agg(t, ', ') FROM unnest($1::text[]) t WHERE to_regclass(t) IS NULL", tables
        )
        return None if missing is None else f"missing tables: {missing}"

    checks: dict[str, Any] = {"database": check_database, "migrations": check_migrations}
    if redis_client is not None:
        client = redis_client

        async def check_redis() -> str | None:
            await client.ping()
            return None

        checks["redis"] = check_redis
    pages_extra: list[Any] = []
    browser_errors = None
    if services.browser is not None:
        console_specs, pages_extra, browser_errors = _install_console(services, checks)
        specs += console_specs
    api_specs = [s for s in specs if not s.browser]  # pages are no part of the API's description
    spec = build_spec(
        api_specs,
        title="Rampart",
        version=__version__,
        extra_paths=dict(OPERATIONS_PATHS),
        tags={r.name: r.description for r in services.registry},
    )
    drain = Drain(
        delay=settings.drain_delay,
        max_requests=settings.max_requests,
        max_requests_jitter=settings.max_requests_jitter,
    )
    services.background.append(drain)  # installed at startup, inside the server's signal handling
    reports = [services.replicas.report] if services.replicas is not None else []
    extra = [
        *health_routes(checks, drain=drain, reports=reports),
        *metrics.routes(),
        *docs_routes(spec),
        *pages_extra,
    ]
    rates = {"api": parse_rate(settings.rate_limit), "auth": parse_rate(settings.rate_limit_auth)}
    router = build_router(
        specs,
        auth=services.authenticator,
        limits=Limits(limiter, rates),
        extra=extra,
        resources=services.managers,
        browser=services.browser,
        browser_errors=browser_errors,
    )
    inner: ASGIApp = router
    for cls, args, options in reversed(middleware):
        inner = cls(inner, *args, **options)
    pipeline = Pipeline(
        inner,
        cors_origins=settings.cors_origins,
        body_limit=settings.body_limit,
        timeout=settings.request_timeout,
        debug=settings.env == "development",
        access_log_enabled=settings.access_log,
        observers=[metrics.observe, drain.observe],
        pages=CONSOLE_PREFIX if services.browser is not None else None,
    )
    return Rampart(services, pipeline, AppParts(resources, routes, middleware, subscribers))
