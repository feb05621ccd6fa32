"""The `rampart` command as users run it: real subprocesses against real, freshly created databases."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from alembic.script import ScriptDirectory

from rampart.access.system import SYSTEM_ID
from rampart.app import create_app
from rampart.auth.tokens import TokenIssuer
from rampart.db.migrate import alembic_config
from tests.conftest import DEMO_MIGRATIONS, TEST_SECRET, _admin, _db_url, make_settings, upgrade_demo
from tests.support import free_port

# One alembic_version row per chain: Rampart's and the demo app's (the default RAMPART_APP).
HEADS = frozenset(ScriptDirectory.from_config(alembic_config(app_folders=[DEMO_MIGRATIONS])).get_heads())

RAMPART = str(Path(sys.executable).with_name("rampart"))
TIMEOUT = 60  # every wait on a child process is bounded
CORE_TABLES = {"users", "sessions", "events", "projects", "project_members", "tasks"}


def _new_database() -> tuple[str, str]:
    name = f"rampart_cli_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    return name, _db_url(name)


def _drop(name: str) -> None:
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def empty_database() -> Iterator[str]:
    name, url = _new_database()
    yield url
    _drop(name)


@pytest.fixture(scope="module")
def migrated_database() -> Iterator[str]:
    name, url = _new_database()
    upgrade_demo(url)
    yield url
    _drop(name)


def cli_env(database_url: str | None = None, **overrides: str) -> dict[str, str]:
    """The parent's environment without any RAMPART_* setting, plus a test configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAMPART_")}
    env.update({"RAMPART_ENV": "test", "RAMPART_JWT_SECRET": TEST_SECRET, "RAMPART_ACCESS_LOG": "false"})
    if database_url is not None:
        env["RAMPART_DATABASE_URL"] = database_url
    env.update(overrides)
    return env


def rampart(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RAMPART, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def query(url: str, sql: str) -> list[Any]:
    async def run() -> list[Any]:
        conn = await asyncpg.connect(url)
        try:
            return list(await conn.fetch(sql))
        finally:
            await conn.close()

    return asyncio.run(run())


def applied(url: str) -> frozenset[str]:
    return frozenset(r["version_num"] for r in query(url, "SELECT version_num FROM alembic_version"))


def public_tables(url: str) -> set[str]:
    return {r["tablename"] for r in query(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def assert_clean_failure(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    """A non-zero exit with a message on stderr, and no traceback anywhere."""
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


# ----- migrate -----------------------------------------------------------------------------------------
def test_migrate_creates_the_schema_on_an_empty_database(empty_database: str, tmp_path: Path) -> None:
    assert public_tables(empty_database) == set()
    result = rampart("migrate", env=cli_env(empty_database), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert public_tables(empty_database) >= CORE_TABLES
    assert applied(empty_database) == HEADS
    # Running it again is a no-op.
    again = rampart("migrate", env=cli_env(empty_database), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert applied(empty_database) == HEADS


def test_concurrent_migrate_processes_all_succeed_and_migrate_once(
    empty_database: str, tmp_path: Path
) -> None:
    env = cli_env(empty_database)
    procs = [
        subprocess.Popen(
            [RAMPART, "migrate"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = []
    try:
        for proc in procs:
            _out, err = proc.communicate(timeout=TIMEOUT)
            outputs.append((proc.returncode, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    assert [code for code, _ in outputs] == [0, 0, 0, 0], outputs
    assert applied(empty_database) == HEADS
    assert public_tables(empty_database) >= CORE_TABLES


@pytest.mark.parametrize("where", ["closed port", "missing database"])
@pytest.mark.parametrize(
    "command",
    [
        ["migrate"],
        ["serve", "--port", "1"],
        ["users", "create", "--email", "x@example.test"],
        ["tokens", "issue", "--email", "x@example.test"],
    ],
    ids=["migrate", "serve", "users create", "tokens issue"],
)
def test_an_unusable_database_fails_with_a_message(tmp_path: Path, where: str, command: list[str]) -> None:
    if where == "closed port":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url = f"postgresql://postgres:pw-not-shown@127.0.0.1:{port}/nope"
    else:
        url = _db_url(f"rampart_missing_{uuid.uuid4().hex[:8]}").replace(
            "postgres@", "postgres:pw-not-shown@"
        )
    result = rampart(*command, env=cli_env(url), cwd=tmp_path)
    assert_clean_failure(result, "database")
    assert "pw-not-shown" not in result.stderr + result.stdout


# ----- which database ----------------------------------------------------------------------------------
DATABASE_COMMANDS = [
    ["migrate"],
    ["makemigrations", "-m", "nothing"],
    ["users", "create", "--email", "which-{}@example.test"],
    ["tokens", "issue", "--email", "nobody@example.test"],
    ["events", "dead"],
    ["serve", "--port", "{port}", "--no-migrate", "--workers", "1"],
]


@pytest.mark.parametrize("source", ["environment", ".env"])
@pytest.mark.parametrize("command", DATABASE_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_every_database_command_says_which_database_it_uses(
    migrated_database: str, tmp_path: Path, command: list[str], source: str
) -> None:
    """With RAMPART_DATABASE_URL unset, a command meant for another database quietly used the embedded
    one ("no enabled user"): each one now says which, its password masked, on stderr."""
    url = migrated_database.replace("postgres@", "postgres:pw-not-shown@")  # trust: any password works
    env = cli_env(url)
    if source == ".env":
        del env["RAMPART_DATABASE_URL"]
        (tmp_path / ".env").write_text(f"RAMPART_DATABASE_URL={url}\n")
    args = [a.replace("{}", uuid.uuid4().hex[:8]).replace("{port}", str(free_port())) for a in command]
    if command[0] == "serve":  # it serves until stopped: it is enough that it started
        with subprocess.Popen(
            [RAMPART, *args], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True
        ) as proc:
            assert proc.stderr is not None
            line = proc.stderr.readline()
            proc.terminate()
            proc.wait(timeout=TIMEOUT)
        stderr = line
    else:
        result = rampart(*args, env=env, cwd=tmp_path)
        stderr = result.stderr
        assert "pw-not-shown" not in result.stdout + result.stderr
    origin = "RAMPART_DATABASE_URL" if source == "environment" else "RAMPART_DATABASE_URL in .env"
    masked = migrated_database.replace("postgres@", "postgres:***@")
    assert stderr.splitlines()[0] == f"rampart: database {masked} (from {origin})", stderr


def test_the_embedded_database_is_named_when_it_is_used(tmp_path: Path) -> None:
    import tempfile

    data_dir = Path(tempfile.mkdtemp(prefix="rampart-cli-", dir="/var/tmp")) / "pgdata"
    try:
        result = rampart("migrate", env=cli_env(None, RAMPART_DATA_DIR=str(data_dir)), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        first = result.stderr.splitlines()[0]
        assert (
            first
            == f"rampart: database: the embedded PostgreSQL in {data_dir} (RAMPART_DATABASE_URL is not set)"
        )
    finally:
        shutil.rmtree(data_dir.parent, ignore_errors=True)


# ----- users -------------------------------------------------------------------------------------------
def test_users_create_prints_the_user(migrated_database: str, tmp_path: Path) -> None:
    email = f"Boot-{uuid.uuid4().hex[:8]}@Example.test"
    result = rampart(
        "users", "create", "--email", email, "--name", "Root Admin", "--role", "admin",
        env=cli_env(migrated_database), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    user = orjson.loads(result.stdout)
    assert user["email"] == email.lower()
    assert user["name"] == "Root Admin"
    assert user["role"] == "admin"
    assert user["disabled"] is False
    uuid.UUID(user["id"])
    rows = query(migrated_database, f"SELECT role FROM users WHERE id = '{user['id']}'")
    assert [r["role"] for r in rows] == ["admin"]
    # Its creation is an event like any other change.
    events = query(migrated_database, f"SELECT type FROM events WHERE resource_id = '{user['id']}'")
    assert [e["type"] for e in events] == ["users.created"]


def test_users_create_with_a_taken_email_fails_with_a_message(migrated_database: str, tmp_path: Path) -> None:
    email = f"dup-{uuid.uuid4().hex[:8]}@example.test"
    env = cli_env(migrated_database)
    first = rampart("users", "create", "--email", email, "--name", "A", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    second = rampart("users", "create", "--email", email.upper(), "--name", "B", env=env, cwd=tmp_path)
    assert_clean_failure(second, "already exists", email.upper())
    assert second.stdout == ""
    assert len(query(migrated_database, f"SELECT 1 FROM users WHERE email = '{email}'")) == 1


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--email", "not-an-email", "--name", "X"], "email"),
        (["--email", "ok-{}@example.test", "--name", "X", "--role", "emperor"], "role"),
    ],
)
def test_users_create_with_invalid_values_fails_with_a_message(
    migrated_database: str, tmp_path: Path, args: list[str], needle: str
) -> None:
    args = [a.format(uuid.uuid4().hex[:8]) for a in args]
    result = rampart("users", "create", *args, env=cli_env(migrated_database), cwd=tmp_path)
    assert_clean_failure(result, needle)


def _user_by_cli(*args: str, env: dict[str, str], cwd: Path) -> dict[str, Any]:
    result = rampart("users", *args, env=env, cwd=cwd)
    assert result.returncode == 0, result.stderr
    row: dict[str, Any] = orjson.loads(result.stdout)
    return row


def test_users_set_role_disable_and_enable_change_the_user(migrated_database: str, tmp_path: Path) -> None:
    """The console's way to recover from a bad role change without SQL (issue 13, finding 8)."""
    email = f"ops-{uuid.uuid4().hex[:8]}@example.test"
    env = cli_env(migrated_database)
    user = _user_by_cli("create", "--email", email, env=env, cwd=tmp_path)
    assert user["role"] == "user"
    promoted = _user_by_cli("set-role", "--email", email.upper(), "--role", "admin", env=env, cwd=tmp_path)
    assert (promoted["id"], promoted["role"], promoted["version"]) == (user["id"], "admin", 2)
    token = rampart("tokens", "issue", "--email", email, env=env, cwd=tmp_path).stdout.strip()
    assert asyncio.run(_whoami(migrated_database, token)).status_code == 200

    disabled = _user_by_cli("disable", "--email", email, env=env, cwd=tmp_path)
    assert disabled["disabled"] is True
    live = query(
        migrated_database,
        f"SELECT count(*) AS n FROM sessions WHERE user_id = '{user['id']}' AND revoked_at IS NULL",
    )
    assert live[0]["n"] == 0  # disabling ended the session, as the API's does
    assert asyncio.run(_whoami(migrated_database, token)).status_code == 401
    enabled = _user_by_cli("enable", "--email", email, env=env, cwd=tmp_path)
    assert enabled["disabled"] is False
    events = query(
        migrated_database,
        f"SELECT type, actor_id FROM events WHERE resource_id = '{user['id']}' ORDER BY id",
    )
    assert [(e["type"], str(e["actor_id"])) for e in events] == [
        ("users.created", str(SYSTEM_ID)),
        ("users.updated", str(SYSTEM_ID)),
        ("users.updated", str(SYSTEM_ID)),
        ("users.updated", str(SYSTEM_ID)),
    ]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["set-role", "--email", "ghost-{}@example.test", "--role", "admin"], "no user with email"),
        (["disable", "--email", "ghost-{}@example.test"], "no user with email"),
        (["set-role", "--email", "{email}", "--role", "emperor"], "role"),
    ],
)
def test_users_changes_with_an_unknown_email_or_a_bad_role_fail_with_a_message(
    migrated_database: str, tmp_path: Path, args: list[str], needle: str
) -> None:
    env = cli_env(migrated_database)
    email = f"cli-{uuid.uuid4().hex[:8]}@example.test"
    assert rampart("users", "create", "--email", email, env=env, cwd=tmp_path).returncode == 0
    args = [a.format(uuid.uuid4().hex[:8], email=email) for a in args]
    result = rampart("users", *args, env=env, cwd=tmp_path)
    assert_clean_failure(result, needle)
    assert result.stdout == ""


def test_the_last_admin_cannot_be_demoted_or_disabled_from_the_command_line(
    empty_database: str, tmp_path: Path
) -> None:
    upgrade_demo(empty_database)
    env = cli_env(empty_database)
    first = f"first-{uuid.uuid4().hex[:8]}@example.test"
    second = f"second-{uuid.uuid4().hex[:8]}@example.test"
    _user_by_cli("create", "--email", first, "--role", "admin", env=env, cwd=tmp_path)
    for args in (["set-role", "--email", first, "--role", "user"], ["disable", "--email", first]):
        result = rampart("users", *args, env=env, cwd=tmp_path)
        assert_clean_failure(result, "last enabled admin", "last_admin")
    _user_by_cli("create", "--email", second, "--role", "admin", env=env, cwd=tmp_path)
    assert (
        _user_by_cli("set-role", "--email", first, "--role", "user", env=env, cwd=tmp_path)["role"] == "user"
    )
    assert_clean_failure(rampart("users", "disable", "--email", second, env=env, cwd=tmp_path), "last_admin")
    rows = query(empty_database, "SELECT email FROM users WHERE role = 'admin' AND NOT disabled")
    assert [r["email"] for r in rows] == [second]


# ----- tokens ------------------------------------------------------------------------------------------
async def _whoami(database_url: str, token: str) -> httpx.Response:
    app = create_app(make_settings(database_url))
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            return await http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    finally:
        await app.aclose()


def test_tokens_issue_prints_only_a_working_access_token(migrated_database: str, tmp_path: Path) -> None:
    email = f"tok-{uuid.uuid4().hex[:8]}@example.test"
    env = cli_env(migrated_database)
    created = rampart("users", "create", "--email", email, "--role", "admin", env=env, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    user = orjson.loads(created.stdout)

    result = rampart("tokens", "issue", "--email", email, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert result.stdout == lines[0] + "\n"
    token = lines[0]
    assert token.count(".") == 2
    assert " " not in token

    settings = make_settings(migrated_database)
    issuer = TokenIssuer(
        secret=TEST_SECRET,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        ttl=settings.access_token_ttl,
    )
    claims = issuer.verify(token)
    assert str(claims.user_id) == user["id"]
    assert claims.role == "admin"
    # The session behind it exists, so the token works against the app.
    r = asyncio.run(_whoami(migrated_database, token))
    assert r.status_code == 200, r.text
    assert r.json()["data"]["email"] == email
    # A different secret does not accept it.
    other = TokenIssuer(secret="y" * 48, issuer=settings.jwt_issuer, audience=settings.jwt_audience, ttl=60)
    with pytest.raises(Exception, match="invalid"):
        other.verify(token)


def test_tokens_issue_for_an_unknown_email_fails_with_a_message(
    migrated_database: str, tmp_path: Path
) -> None:
    email = f"ghost-{uuid.uuid4().hex[:8]}@example.test"
    result = rampart("tokens", "issue", "--email", email, env=cli_env(migrated_database), cwd=tmp_path)
    assert_clean_failure(result, email)
    assert result.stdout == ""


def test_tokens_issue_for_a_disabled_user_fails(migrated_database: str, tmp_path: Path) -> None:
    email = f"off-{uuid.uuid4().hex[:8]}@example.test"
    env = cli_env(migrated_database)
    assert rampart("users", "create", "--email", email, env=env, cwd=tmp_path).returncode == 0
    query(migrated_database, f"UPDATE users SET disabled = true WHERE email = '{email}'")
    result = rampart("tokens", "issue", "--email", email, env=env, cwd=tmp_path)
    assert_clean_failure(result, email)
    assert result.stdout == ""


# ----- config ------------------------------------------------------------------------------------------
def test_config_prints_settings_with_secrets_masked(tmp_path: Path) -> None:
    db_password = "Db-Pa55-" + uuid.uuid4().hex[:8]
    jwt_secret = "jwt-" + uuid.uuid4().hex + uuid.uuid4().hex
    env = cli_env(
        f"postgresql://app:{db_password}@127.0.0.1:5432/app",
        RAMPART_JWT_SECRET=jwt_secret,
        RAMPART_REDIS_URL="redis://:redis-pw-1@127.0.0.1:6379/0",
        RAMPART_CORS_ORIGINS="https://a.example,https://b.example",
        RAMPART_RATE_LIMIT="99/minute",
    )
    result = rampart("config", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    everything = result.stdout + result.stderr
    for secret in (db_password, jwt_secret, "redis-pw-1"):
        assert secret not in everything
    shown = orjson.loads(result.stdout)
    assert shown["jwt_secret"] == "********"
    assert shown["database_url"] == "********"
    assert shown["cors_origins"] == ["https://a.example", "https://b.example"]
    assert shown["rate_limit"] == "99/minute"
    assert shown["env"] == "test"


# ----- production refuses weak secrets -----------------------------------------------------------------
COMMANDS = [
    ["migrate"],
    ["serve", "--port", "1"],
    ["config"],
    ["makemigrations", "-m", "nothing"],
    ["users", "create", "--email", "x@example.test"],
    ["tokens", "issue", "--email", "x@example.test"],
]


@pytest.mark.parametrize("secret", [None, "too-short"], ids=["unset", "short"])
@pytest.mark.parametrize(
    "command", COMMANDS, ids=[c[0] if c[0] not in ("users", "tokens") else " ".join(c[:2]) for c in COMMANDS]
)
def test_production_refuses_to_start_without_a_strong_jwt_secret(
    tmp_path: Path, command: list[str], secret: str | None
) -> None:
    env = cli_env("postgresql://postgres@127.0.0.1:5432/never_used", RAMPART_ENV="production")
    del env["RAMPART_JWT_SECRET"]
    if secret is not None:
        env["RAMPART_JWT_SECRET"] = secret
    result = rampart(*command, env=env, cwd=tmp_path)
    assert_clean_failure(result, "RAMPART_JWT_SECRET")


def test_production_with_a_strong_secret_starts(tmp_path: Path) -> None:
    env = cli_env(None, RAMPART_ENV="production", RAMPART_JWT_SECRET=TEST_SECRET)
    result = rampart("config", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert orjson.loads(result.stdout)["env"] == "production"


def test_secrets_generate_prints_a_new_secret_that_production_takes(tmp_path: Path) -> None:
    env = cli_env(None)
    first, second = (rampart("secrets", "generate", env=env, cwd=tmp_path) for _ in range(2))
    assert first.returncode == 0, first.stderr
    secret = first.stdout.strip()
    assert re.fullmatch(r"[A-Za-z0-9_-]{64}", secret)
    assert second.stdout.strip() != secret
    accepted = rampart(
        "config", env=cli_env(None, RAMPART_ENV="production", RAMPART_JWT_SECRET=secret), cwd=tmp_path
    )
    assert accepted.returncode == 0, accepted.stderr


def test_production_refusal_of_a_guessable_secret_says_how_to_make_one(tmp_path: Path) -> None:
    env = cli_env(None, RAMPART_ENV="production", RAMPART_JWT_SECRET="a" * 64)
    result = rampart("config", env=env, cwd=tmp_path)
    assert_clean_failure(result, "rampart secrets generate")
    assert "a" * 64 not in result.stderr


# ----- serve -------------------------------------------------------------------------------------------


def test_serve_answers_ready_and_stops_on_sigterm(migrated_database: str, tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "serve.log").open("w+")
    proc = subprocess.Popen(
        [RAMPART, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=cli_env(migrated_database),
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        ready = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        assert proc.poll() is None, "serve exited early"
        assert ready is not None, "no answer"
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": "ok", "migrations": "ok"}
        assert "server" not in ready.headers  # no version leak
        assert ready.headers["x-request-id"]

        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
        assert code in (0, 128 + signal.SIGTERM), code
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        log.seek(0)
        output = log.read()
        log.close()
    assert "Traceback" not in output, output


def test_version_and_help(tmp_path: Path) -> None:
    result = rampart("--version", env=cli_env(None), cwd=tmp_path)
    assert result.returncode == 0
    assert "0.1.0" in result.stdout
    result = rampart("--help", env=cli_env(None), cwd=tmp_path)
    assert result.returncode == 0
    for command in ("serve", "migrate", "makemigrations", "config", "users", "tokens"):
        assert command in result.stdout
