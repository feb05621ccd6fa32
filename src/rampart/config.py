"""Configuration: one Settings class read from `RAMPART_*` environment variables and `.env`.

Library code never reads this module: `create_app(settings)` and the CLI pass values down as arguments.
"""

from __future__ import annotations

import re
import warnings
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_EVENTS_RETENTION = 90 * 86_400.0  # seconds: RAMPART_EVENTS_RETENTION=90d
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d)")
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}
DEFAULT_JWT_SECRET = "dev-insecure-secret-change-me-please-0000"  # noqa: S105 - refused in production
MIN_PRODUCTION_SECRET_LENGTH = 32
# Replica URLs are split at commas that start a new URL: a libpq URL may itself hold commas (host1,host2).
_URL_LIST_SPLIT = re.compile(r",\s*(?=postgres(?:ql)?://)")

DEFAULT_ROLE_PERMISSIONS: dict[str, list[str]] = {
    "admin": [
        "users:manage",
        "users:impersonate",
        "resources:read_any",
        "resources:write_any",
        "projects:create",
        "tasks:write",
        "events:read_any",
        "webhooks:manage",
    ],
    "user": ["projects:create", "tasks:write"],
}


def parse_duration(text: str) -> float | None:
    """`90d`, `12h`, `30m`, `45s` as seconds; `off` as None (no limit). A bare number is refused: its unit
    would be a guess (the retention's former setting counted days)."""
    value = text.strip().lower()
    if value in ("off", "none", "forever"):
        return None
    found = _DURATION.fullmatch(value)
    if found is None:
        raise ValueError(
            f"{text!r} is not a duration: write a number and a unit (s, m, h, d), e.g. 90d, or off"
        )
    return float(found.group(1)) * _UNIT_SECONDS[found.group(2)]


class Settings(BaseSettings):
    """Every setting Rampart reads. Names are `RAMPART_<FIELD>` in the environment."""

    # hide_input_in_errors: a refusal would otherwise repeat every value it was given, secrets included
    # (the message of a ValidationError reaches logs, e.g. when a worker of a server fails to start).
    model_config = SettingsConfigDict(
        env_prefix="RAMPART_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        hide_input_in_errors=True,
    )

    env: Literal["development", "production", "test"] = "development"
    database_url: SecretStr | None = None
    # Streaming replicas that serve reads outside transactions (docs/decisions/0010-read-replicas.md).
    database_replica_urls: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # Seconds a replica may be behind before reads skip it: the staleness bound for everyone but the writer.
    database_replica_max_lag: float = Field(default=1.0, gt=0, le=60)
    # "transaction": database_url (and the replicas) go through a transaction-mode pooler such as
    # PgBouncer, so no statement cache and no session settings; LISTEN and migrations use the direct URL.
    database_pool_mode: Literal["session", "transaction"] = "session"
    database_direct_url: SecretStr | None = None
    redis_url: SecretStr | None = None
    jwt_secret: SecretStr = SecretStr(DEFAULT_JWT_SECRET)
    jwt_issuer: str = "rampart"
    jwt_audience: str = "rampart-api"
    # HS256 signs with jwt_secret; EdDSA (Ed25519) or RS256 with keys kept in the database, published at
    # /.well-known/jwks.json and rotated by `rampart keys rotate`.
    jwt_algorithm: Literal["HS256", "EdDSA", "RS256"] = "HS256"
    access_token_ttl: int = Field(default=900, ge=30, le=86_400)
    session_ttl: int = Field(default=30 * 86_400, ge=60)
    # Seconds an impersonation session lives (an hour at most); refreshing never extends it.
    impersonation_ttl: int = Field(default=3600, ge=60, le=3600)
    session_cache_ttl: float = Field(default=1.0, ge=0.0, le=1.0)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Addresses of reverse proxies whose X-Forwarded-For/-Proto are believed (client IP, https).
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    rate_limit: str = "600/minute"
    rate_limit_auth: str = "20/minute"
    # Without Redis: a table file that every process of this host using it shares its limits through
    # (rampart.lib.ratelimit_shm). `rampart serve --workers N` makes one in /dev/shm when this is unset.
    rate_limit_file: str | None = None
    body_limit: int = Field(default=1_048_576, ge=1024)
    request_timeout: float = Field(default=10.0, gt=0)
    # Seconds a connection of `rampart serve` has to deliver a complete request head (slow clients).
    header_timeout: float = Field(default=10.0, gt=0, le=300)
    db_pool_size: int = Field(default=10, ge=1, le=500)
    db_pool_timeout: float = Field(default=5.0, gt=0)
    db_connect_timeout: float = Field(default=5.0, gt=0)
    access_log: bool = True
    log_format: Literal["json", "text", "auto"] = "auto"
    log_level: str = "INFO"
    # Seconds between SIGTERM (readiness turns 503) and the stop of accepting connections: time for the
    # load balancer's health check to notice. In-flight requests then finish within the grace period.
    drain_delay: float = Field(default=0.0, ge=0.0, le=60.0)
    # Recycle a worker after this many requests plus up to the jitter (`rampart serve --max-requests`).
    max_requests: int | None = Field(default=None, ge=1)
    max_requests_jitter: int = Field(default=0, ge=0)
    # prometheus-client's own variable (read when it is imported): the folder the workers share metrics in.
    metrics_multiproc_dir: str | None = Field(default=None, validation_alias="PROMETHEUS_MULTIPROC_DIR")
    role_permissions: dict[str, list[str]] = Field(default_factory=lambda: dict(DEFAULT_ROLE_PERMISSIONS))
    data_dir: str | None = None
    app: str = "rampart.apps.tasks.resources:declare"
    # The app's own migrations folder: `makemigrations` writes there, `migrate` applies it after Rampart's
    # chain. None: ./migrations, or the demo's own folder for the demo (rampart.schema.migrations_dir).
    migrations_dir: str | None = None
    # The query cache (rows by id, visibility decisions, list pages): "memory" per worker, "redis" shared
    # by every worker and instance (needs RAMPART_REDIS_URL), "off"; see docs/decisions/0009-row-cache.md.
    cache: Literal["memory", "redis", "off"] = "memory"
    cache_max_rows: int = Field(default=20_000, ge=100)  # memory: rows per worker (pages: a tenth)
    cache_ttl: float = Field(default=600.0, gt=0, le=86_400)  # redis: seconds an entry is kept

    public_url: str = "http://127.0.0.1:8000"
    oidc_issuer: str = "https://accounts.google.com"
    oidc_client_id: str | None = None
    oidc_client_secret: SecretStr | None = None
    # Emails that get the admin role on their first sign-in with the provider (comma-separated).
    oidc_admin_emails: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Where a sign-in may send the browser back to (`redirect_to`): URL prefixes, comma-separated.
    auth_redirect_allowlist: Annotated[list[str], NoDecode] = Field(default_factory=list)
    webhooks_allow_private_networks: bool = False
    webhooks_timeout: float = Field(default=10.0, gt=0, le=60)
    # Event delivery (rampart.events): a dispatcher per worker process, which also prunes events older than
    # the retention once delivered (in batches), and the records of rows deleted as long ago.
    events_dispatcher: bool = True
    # Seconds, written as a duration (`90d`, `12h`, `30m`); `off` keeps every event (None).
    events_retention: Annotated[float | None, NoDecode] = DEFAULT_EVENTS_RETENTION
    # The retention's former name, in days: still read when RAMPART_EVENTS_RETENTION is not set.
    events_retention_days: int | None = Field(default=None, ge=1)
    events_max_attempts: int = Field(default=10, ge=1, le=100)
    events_poll_interval: float = Field(default=5.0, gt=0, le=300)
    # Live streams (GET /api/v1/events/stream) one user may hold open per worker process.
    events_stream_max_per_user: int = Field(default=10, ge=1, le=1000)
    # How long a claimed delivery stays leased: after a worker crash, when another dispatcher retries it.
    # Never shorter than a subscriber's own timeout plus a second (the dispatcher enforces that).
    events_lease: float = Field(default=60.0, ge=1, le=3600)
    # The web console at /console (docs/guide/console.md): on or off. Its sign-in lasts this many seconds.
    console: bool = True
    console_session_ttl: int = Field(default=12 * 3600, ge=300, le=30 * 86_400)
    # Error tracking: error-level logs and unhandled exceptions go to Sentry, scrubbed (rampart.ops).
    sentry_dsn: SecretStr | None = None

    @field_validator(
        "cors_origins", "trusted_proxies", "oidc_admin_emails", "auth_redirect_allowlist", mode="before"
    )
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("database_replica_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip(" ,") for part in _URL_LIST_SPLIT.split(value) if part.strip(" ,")]
        return value

    @field_validator("events_retention", mode="before")
    @classmethod
    def _parse_retention(cls, value: Any) -> Any:
        return parse_duration(value) if isinstance(value, str) else value

    @field_validator("events_retention")
    @classmethod
    def _check_retention(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError("the retention must be longer than nothing (or `off`)")
        return value

    @model_validator(mode="after")
    def _retention_days_is_the_old_name(self) -> Settings:
        if self.events_retention_days is None:
            return self
        if "events_retention" in self.model_fields_set:
            raise ValueError(
                "RAMPART_EVENTS_RETENTION_DAYS is the old name of RAMPART_EVENTS_RETENTION: set only one"
            )
        days = self.events_retention_days
        warnings.warn(
            f"RAMPART_EVENTS_RETENTION_DAYS is deprecated: set RAMPART_EVENTS_RETENTION={days}d instead",
            FutureWarning,
            stacklevel=2,
        )
        self.events_retention = days * 86_400.0
        return self

    @field_validator("rate_limit", "rate_limit_auth")
    @classmethod
    def _check_rate(cls, value: str) -> str:
        from rampart.lib.rates import parse_rate

        parse_rate(value)
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        if self.cache == "redis" and self.redis_url is None:
            raise ValueError("RAMPART_CACHE=redis needs RAMPART_REDIS_URL")
        if self.database_pool_mode == "transaction" and self.database_direct_url is None:
            raise ValueError(
                "RAMPART_DATABASE_POOL_MODE=transaction needs RAMPART_DATABASE_DIRECT_URL: LISTEN and "
                "migrations need a session of their own, which a transaction-mode pooler does not keep"
            )
        if self.env != "production":
            return self
        from rampart.lib.secret_strength import MIN_BITS, estimate

        secret = self.jwt_secret.get_secret_value()
        how = "make one with: rampart secrets generate"
        if secret == DEFAULT_JWT_SECRET or len(secret) < MIN_PRODUCTION_SECRET_LENGTH:
            raise ValueError(
                "RAMPART_JWT_SECRET must be set to a random value of at least "
                f"{MIN_PRODUCTION_SECRET_LENGTH} characters in production ({how})"
            )
        strength = estimate(secret)
        if strength.bits < MIN_BITS:
            found = f"; it has {', '.join(strength.found)}" if strength.found else ""
            raise ValueError(
                f"RAMPART_JWT_SECRET is too easy to guess for production: about {strength.bits:.0f} bits, "
                f"at least {MIN_BITS} are needed{found} ({how})"
            )
        return self

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def json_logs(self) -> bool:
        """Logs as JSON lines: when asked for, or by default in production."""
        return self.log_format == "json" or (self.log_format == "auto" and self.is_production)

    @property
    def session_database_url(self) -> SecretStr | None:
        """Where session-bound work goes (LISTEN, migrations): the direct URL when set, else the main one."""
        return self.database_direct_url or self.database_url

    def masked(self) -> dict[str, Any]:
        """The settings as printable values, secrets replaced by '********'."""

        def mask(value: Any) -> Any:
            if isinstance(value, SecretStr):
                return "********" if value.get_secret_value() else ""
            return [mask(item) for item in value] if isinstance(value, list) else value

        return {name: mask(getattr(self, name)) for name in type(self).model_fields}
