"""Settings: the RAMPART_* names of API.md are read, bad values are refused, secrets never print."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import SecretStr, ValidationError

from rampart.config import DEFAULT_JWT_SECRET, Settings

STRONG_SECRET = "s3cr3t-Hq8Ld2Pw6Tz0Vr4Xn9Bc7Fm1Kj5Ys3Ga8Ue2Io6"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No RAMPART_* variable from the outside world, and no .env file in the working directory."""
    for name in list(os.environ):
        if name.startswith("RAMPART_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return


def load() -> Settings:
    return Settings(_env_file=None)  # type: ignore[call-arg]


def plain(value: Any) -> Any:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


# (environment variable, value, Settings attribute, expected parsed value)
ENV_NAMES: list[tuple[str, str, str, Any]] = [
    ("RAMPART_DATABASE_URL", "postgresql://app:pw@db:5432/app", "database_url", "postgresql://app:pw@db:5432/app"),
    ("RAMPART_REDIS_URL", "redis://cache:6379/2", "redis_url", "redis://cache:6379/2"),
    ("RAMPART_JWT_SECRET", STRONG_SECRET, "jwt_secret", STRONG_SECRET),
    ("RAMPART_ENV", "test", "env", "test"),
    ("RAMPART_CORS_ORIGINS", "https://a.example, https://b.example", "cors_origins",
     ["https://a.example", "https://b.example"]),
    ("RAMPART_ACCESS_TOKEN_TTL", "600", "access_token_ttl", 600),
    ("RAMPART_RATE_LIMIT", "100/minute", "rate_limit", "100/minute"),
    ("RAMPART_RATE_LIMIT_AUTH", "5/10s", "rate_limit_auth", "5/10s"),
    ("RAMPART_OIDC_ISSUER", "https://login.example.com", "oidc_issuer", "https://login.example.com"),
    ("RAMPART_OIDC_CLIENT_ID", "client-123", "oidc_client_id", "client-123"),
    ("RAMPART_OIDC_CLIENT_SECRET", "oidc-shh", "oidc_client_secret", "oidc-shh"),
    ("RAMPART_PUBLIC_URL", "https://api.example.com", "public_url", "https://api.example.com"),
    ("RAMPART_WEBHOOKS_ALLOW_PRIVATE_NETWORKS", "true", "webhooks_allow_private_networks", True),
    ("RAMPART_EVENTS_LEASE", "5", "events_lease", 5.0),
    ("RAMPART_EVENTS_RETENTION", "30d", "events_retention", 30 * 86_400.0),
]  # fmt: skip


@pytest.mark.parametrize(
    ("env_name", "raw", "attribute", "expected"), ENV_NAMES, ids=[e[0] for e in ENV_NAMES]
)
def test_every_documented_env_name_is_read(
    monkeypatch: pytest.MonkeyPatch, env_name: str, raw: str, attribute: str, expected: Any
) -> None:
    default = plain(getattr(load(), attribute))
    assert default != expected, "the value under test must differ from the default"
    monkeypatch.setenv(env_name, raw)
    assert plain(getattr(load(), attribute)) == expected


def test_defaults_match_the_contract() -> None:
    s = load()
    assert s.env == "development"
    assert s.access_token_ttl == 900
    assert s.rate_limit_auth == "20/minute"
    assert s.cors_origins == []  # no origin is allowed by default
    assert s.oidc_issuer == "https://accounts.google.com"
    assert s.webhooks_allow_private_networks is False
    assert s.database_url is None
    assert s.redis_url is None


def test_cors_origins_drop_blank_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAMPART_CORS_ORIGINS", " https://a.example ,, https://b.example:8443 ,")
    assert load().cors_origins == ["https://a.example", "https://b.example:8443"]


def test_dotenv_file_is_read_and_environment_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("RAMPART_RATE_LIMIT=7/minute\nRAMPART_PUBLIC_URL=https://from-file\n")
    monkeypatch.setenv("RAMPART_PUBLIC_URL", "https://from-env")
    s = Settings()
    assert s.rate_limit == "7/minute"
    assert s.public_url == "https://from-env"


@pytest.mark.parametrize("variable", ["RAMPART_RATE_LIMIT", "RAMPART_RATE_LIMIT_AUTH"])
@pytest.mark.parametrize(
    "bad", ["fast", "600", "600/fortnight", "0/minute", "-5/minute", "10/0s", "1_000/minute", "/minute", ""]
)
def test_bad_rate_strings_are_refused(monkeypatch: pytest.MonkeyPatch, variable: str, bad: str) -> None:
    monkeypatch.setenv(variable, bad)
    with pytest.raises(ValidationError) as info:
        load()
    assert variable.removeprefix("RAMPART_").lower() in str(info.value)


@pytest.mark.parametrize("good", ["600/minute", "10/s", "100/5m", "1/day", "5 / 2 hours"])
def test_good_rate_strings_are_accepted(monkeypatch: pytest.MonkeyPatch, good: str) -> None:
    monkeypatch.setenv("RAMPART_RATE_LIMIT", good)
    assert load().rate_limit == good


@pytest.mark.parametrize(
    ("variable", "bad"),
    [
        ("RAMPART_ENV", "staging"),
        ("RAMPART_ACCESS_TOKEN_TTL", "ten"),
        ("RAMPART_ACCESS_TOKEN_TTL", "0"),
        ("RAMPART_WEBHOOKS_ALLOW_PRIVATE_NETWORKS", "perhaps"),
        ("RAMPART_EVENTS_LEASE", "0.5"),
        ("RAMPART_CACHE", "disk"),
        ("RAMPART_CACHE", "redis"),  # without RAMPART_REDIS_URL
        ("RAMPART_CACHE_TTL", "0"),
        ("RAMPART_EVENTS_RETENTION", "90"),  # no unit: days (the old setting's) or seconds?
        ("RAMPART_EVENTS_RETENTION", "0d"),
        ("RAMPART_EVENTS_RETENTION", "-1d"),
        ("RAMPART_EVENTS_RETENTION", "3 weeks"),
        ("RAMPART_EVENTS_RETENTION_DAYS", "0"),
    ],
)
def test_other_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch, variable: str, bad: str) -> None:
    monkeypatch.setenv(variable, bad)
    with pytest.raises(ValidationError):
        load()


@pytest.mark.parametrize("secret", [None, DEFAULT_JWT_SECRET, "short", "x" * 31])
def test_production_refuses_a_default_or_short_jwt_secret(
    monkeypatch: pytest.MonkeyPatch, secret: str | None
) -> None:
    monkeypatch.setenv("RAMPART_ENV", "production")
    if secret is not None:
        monkeypatch.setenv("RAMPART_JWT_SECRET", secret)
    with pytest.raises(ValidationError) as info:
        load()
    assert "RAMPART_JWT_SECRET" in str(info.value)


def test_production_accepts_a_long_random_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAMPART_ENV", "production")
    monkeypatch.setenv("RAMPART_JWT_SECRET", STRONG_SECRET)
    s = load()
    assert s.is_production


@pytest.mark.parametrize("env", ["development", "test"])
def test_the_default_secret_is_allowed_outside_production(monkeypatch: pytest.MonkeyPatch, env: str) -> None:
    monkeypatch.setenv("RAMPART_ENV", env)
    s = load()
    assert s.jwt_secret.get_secret_value() == DEFAULT_JWT_SECRET
    assert not s.is_production


def test_masked_hides_every_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {
        "RAMPART_JWT_SECRET": STRONG_SECRET,
        "RAMPART_DATABASE_URL": "postgresql://app:db-pass-9f2@db:5432/app",
        "RAMPART_REDIS_URL": "redis://:redis-pass-77@cache:6379/0",
        "RAMPART_OIDC_CLIENT_SECRET": "oidc-pass-123",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RAMPART_PUBLIC_URL", "https://api.example.com")
    masked = load().masked()
    text = orjson.dumps(masked).decode()
    for needle in (STRONG_SECRET, "db-pass-9f2", "redis-pass-77", "oidc-pass-123"):
        assert needle not in text
    for key in ("jwt_secret", "database_url", "redis_url", "oidc_client_secret"):
        assert masked[key] == "********"
    # Non-secret values stay readable, and every setting is listed.
    assert masked["public_url"] == "https://api.example.com"
    assert set(masked) == set(Settings.model_fields)


def test_masked_shows_unset_secrets_as_unset() -> None:
    masked = load().masked()
    assert masked["database_url"] is None
    assert masked["oidc_client_secret"] is None
    assert masked["jwt_secret"] == "********"  # the development default is still a secret


def test_repr_does_not_leak_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAMPART_JWT_SECRET", STRONG_SECRET)
    monkeypatch.setenv("RAMPART_DATABASE_URL", "postgresql://app:db-pass-9f2@db/app")
    s = load()
    assert STRONG_SECRET not in repr(s)
    assert "db-pass-9f2" not in repr(s)


# ----- database at scale --------------------------------------------------------------------------------


def test_replica_urls_split_at_commas_that_start_a_url(monkeypatch: pytest.MonkeyPatch) -> None:
    # A libpq URL may list several hosts with commas; only a comma followed by a new URL separates two.
    monkeypatch.setenv(
        "RAMPART_DATABASE_REPLICA_URLS",
        "postgresql://app:pw@r1:5432,r2:5433/app?target_session_attrs=any, postgres://app:pw@r3/app,",
    )
    urls = [plain(u) for u in load().database_replica_urls]
    assert urls == [
        "postgresql://app:pw@r1:5432,r2:5433/app?target_session_attrs=any",
        "postgres://app:pw@r3/app",
    ]


def test_replica_and_direct_urls_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "RAMPART_DATABASE_REPLICA_URLS",
        "postgresql://app:rep-pass-1@r1/app,postgresql://app:rep-pass-2@r2/app",
    )
    monkeypatch.setenv("RAMPART_DATABASE_DIRECT_URL", "postgresql://app:direct-pass@db/app")
    masked = load().masked()
    text = orjson.dumps(masked).decode()
    for needle in ("rep-pass-1", "rep-pass-2", "direct-pass"):
        assert needle not in text
    assert masked["database_replica_urls"] == ["********", "********"]
    assert masked["database_direct_url"] == "********"


def test_transaction_pooling_needs_the_direct_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAMPART_DATABASE_URL", "postgresql://app@pgbouncer:6432/app")
    monkeypatch.setenv("RAMPART_DATABASE_POOL_MODE", "transaction")
    with pytest.raises(ValidationError, match="RAMPART_DATABASE_DIRECT_URL"):
        load()
    monkeypatch.setenv("RAMPART_DATABASE_DIRECT_URL", "postgresql://app@db:5432/app")
    settings = load()
    assert plain(settings.session_database_url) == "postgresql://app@db:5432/app"


def test_settings_that_need_one_another_are_reported_before_a_weak_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RAMPART_ENV", "production")
    monkeypatch.setenv("RAMPART_JWT_SECRET", "changeme-changeme-changeme-changeme-123")
    monkeypatch.setenv("RAMPART_CACHE", "redis")
    monkeypatch.setenv("RAMPART_DATABASE_POOL_MODE", "transaction")
    steps = [
        ("RAMPART_REDIS_URL", "redis://cache:6379/0"),
        ("RAMPART_DATABASE_DIRECT_URL", "postgresql://app@db:5432/app"),
    ]
    for missing, value in steps:  # each reported in turn, the weak secret not yet
        with pytest.raises(ValidationError) as info:
            load()
        assert missing in str(info.value)
        assert "too easy to guess" not in str(info.value)
        monkeypatch.setenv(missing, value)
    with pytest.raises(ValidationError, match="too easy to guess"):
        load()


def test_without_a_direct_url_sessions_use_the_main_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAMPART_DATABASE_URL", "postgresql://app@db:5432/app")
    settings = load()
    assert settings.database_pool_mode == "session"
    assert plain(settings.session_database_url) == "postgresql://app@db:5432/app"
    assert settings.database_replica_urls == []
    assert settings.database_replica_max_lag == 1.0


@pytest.mark.parametrize("bad", ["0", "-1", "61", "soon"])
def test_replica_max_lag_is_bounded(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv("RAMPART_DATABASE_REPLICA_MAX_LAG", bad)
    with pytest.raises(ValidationError):
        load()


def test_the_event_lease_reaches_the_dispatcher() -> None:
    from rampart.app import create_app

    app = create_app(Settings(_env_file=None, database_url="postgresql://x@127.0.0.1:1/x", events_lease=7))  # type: ignore[call-arg]
    assert app.services.dispatcher.lease == 7.0


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("90d", 90 * 86_400.0),
        ("36h", 36 * 3600.0),
        ("30m", 1800.0),
        ("45s", 45.0),
        ("1.5d", 129_600.0),
        ("off", None),
        ("OFF", None),
    ],
)
def test_the_event_retention_is_a_duration(
    monkeypatch: pytest.MonkeyPatch, raw: str, seconds: float | None
) -> None:
    monkeypatch.setenv("RAMPART_EVENTS_RETENTION", raw)
    assert load().events_retention == seconds


def test_events_are_kept_90_days_by_default_and_the_dispatcher_prunes_them() -> None:
    from rampart.app import create_app

    assert load().events_retention == 90 * 86_400.0
    app = create_app(Settings(_env_file=None, database_url="postgresql://x@127.0.0.1:1/x"))  # type: ignore[call-arg]
    dispatcher = app.services.dispatcher
    assert dispatcher.retention == 90 * 86_400.0
    assert set(dispatcher.deleted_tables) >= {"tasks_deleted", "projects_deleted", "project_members_deleted"}


def test_the_old_retention_setting_is_read_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAMPART_EVENTS_RETENTION_DAYS", "30")
    with pytest.warns(FutureWarning, match="RAMPART_EVENTS_RETENTION=30d"):
        assert load().events_retention == 30 * 86_400.0
    monkeypatch.setenv("RAMPART_EVENTS_RETENTION", "30d")
    with pytest.raises(ValidationError, match="old name"):
        load()  # both: which one was meant?
