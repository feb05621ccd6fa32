"""Migrations: the migration files build exactly the schema the declarations describe, the runner reports
what is pending, and upgrades are repeatable and reversible."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import create_async_engine
from tests.apps.library import CREATE_TABLES
from tests.conftest import DEMO_MIGRATIONS, _admin, _db_url, make_settings, upgrade_demo

from rampart import schema
from rampart.app import create_app
from rampart.clitasks import migrate_all
from rampart.db import revisions
from rampart.db.migrate import (
    CORE_VERSIONS,
    MIGRATIONS_DIR,
    alembic_config,
    history,
    pending_migrations,
    sqlalchemy_url,
    upgrade,
)
from rampart.db.pool import Database

FRAMEWORK_TABLES = {
    "users", "sessions", "spent_refresh_tokens", "user_identities", "oidc_login_states", "signing_keys",
    "events", "event_queue", "event_deliveries", "webhooks", "webhook_attempts", "login_links",
}  # fmt: skip
DEMO_TABLES = {"projects", "project_members", "tasks"}
ADDED_SINCE = {"login_links"}  # framework tables newer than the old head (86270a25deee)
# The records of deleted rows (decision 0016), in the same chains as their tables.
FRAMEWORK_RECORDS = {"users_deleted", "webhooks_deleted"}
DEMO_RECORDS = {"projects_deleted", "project_members_deleted", "tasks_deleted"}
# Rampart's version files as they were before the demo app got a chain of its own (decision 0020).
VERSIONS_BEFORE_0020 = Path(__file__).parent / "versions_before_0020"


@pytest.fixture
def empty_database() -> Iterator[str]:
    """A new database with nothing in it; dropped afterwards."""
    name = f"rampart_mig_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    yield _db_url(name)
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def heads() -> list[str]:
    """Alembic's heads of Rampart's chain and the demo app's: one each."""
    found = sorted(ScriptDirectory.from_config(alembic_config(app_folders=[DEMO_MIGRATIONS])).get_heads())
    assert found, "the migration history has no head"
    return found


def schema_diff(url: str) -> list[Any]:
    """What `alembic revision --autogenerate` would write: the declarations vs the database."""

    def compare(connection: sa.Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, schema.build_metadata()))

    async def run() -> list[Any]:
        engine = create_async_engine(sqlalchemy_url(url), poolclass=sa.pool.NullPool)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(compare)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def tables(url: str) -> set[str]:
    async def run() -> set[str]:
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            return {r["tablename"] for r in rows}
        finally:
            await conn.close()

    return asyncio.run(run())


def versions(url: str) -> set[str]:
    """The rows of alembic_version."""

    async def run() -> set[str]:
        conn = await asyncpg.connect(url)
        try:
            return {r["version_num"] for r in await conn.fetch("SELECT version_num FROM alembic_version")}
        finally:
            await conn.close()

    return asyncio.run(run())


def pending(url: str) -> list[str]:
    async def run() -> list[str]:
        db = Database(url)
        try:
            return await pending_migrations(db, app_folders=[DEMO_MIGRATIONS])
        finally:
            await db.close()

    return asyncio.run(run())


def test_migration_files_match_the_declared_models(empty_database: str) -> None:
    upgrade_demo(empty_database)
    assert schema_diff(empty_database) == []


def test_an_empty_database_differs_from_the_models(empty_database: str) -> None:
    # The comparison must be able to fail: with nothing migrated, every table is missing.
    ops = schema_diff(empty_database)
    added = {op[1].name for op in ops if isinstance(op, tuple) and op[0] == "add_table"}
    assert added >= FRAMEWORK_TABLES | DEMO_TABLES


def test_rampart_s_own_chain_makes_only_the_framework_s_tables(empty_database: str) -> None:
    upgrade(empty_database)  # no app folder: Rampart's chain alone
    assert tables(empty_database) == FRAMEWORK_TABLES | FRAMEWORK_RECORDS | {"alembic_version"}
    # Compared with the declarations (the demo's included), only the demo's tables are missing.
    diff = schema_diff(empty_database)
    assert {op[1].name for op in diff if op[0] == "add_table"} == DEMO_TABLES | DEMO_RECORDS
    assert {op[0] for op in diff} == {"add_table", "add_index"}


def test_a_schema_drift_is_detected(empty_database: str) -> None:
    upgrade_demo(empty_database)

    async def drift() -> None:
        conn = await asyncpg.connect(empty_database)
        try:
            await conn.execute("ALTER TABLE tasks ADD COLUMN stray text")
        finally:
            await conn.close()

    asyncio.run(drift())
    ops = schema_diff(empty_database)
    assert any(op[0] == "remove_column" and op[3].name == "stray" for op in ops if isinstance(op, tuple))


def test_pending_reports_the_heads_until_upgraded(empty_database: str) -> None:
    assert pending(empty_database) == heads()
    upgrade_demo(empty_database)
    assert pending(empty_database) == []
    assert tables(empty_database) >= FRAMEWORK_TABLES | DEMO_TABLES
    # One row per chain, Rampart's first: its head stays recorded beside the demo's.
    assert sorted(versions(empty_database)) == heads()


def test_upgrade_is_idempotent(empty_database: str) -> None:
    upgrade_demo(empty_database)
    upgrade_demo(empty_database)
    assert pending(empty_database) == []
    assert schema_diff(empty_database) == []


def test_downgrade_to_base_removes_everything_and_upgrade_restores_it(empty_database: str) -> None:
    upgrade_demo(empty_database)
    command.downgrade(alembic_config(empty_database, app_folders=[DEMO_MIGRATIONS]), "base")
    assert tables(empty_database) <= {"alembic_version"}
    assert pending(empty_database) == heads()
    upgrade_demo(empty_database)
    assert schema_diff(empty_database) == []


async def test_readiness_names_pending_migrations(empty_database: str) -> None:
    app = create_app(make_settings(empty_database))
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            r = await http.get("/health/ready")
            assert r.status_code == 503
            body = r.json()
            assert body["checks"]["database"] == "ok"
            assert body["checks"]["migrations"] != "ok"
            assert "migrations" in body["detail"]
    finally:
        await app.aclose()


def test_each_chain_has_a_single_head() -> None:
    """Branches (revisions grown in parallel from one parent) must be merged: Rampart's chain and the
    demo's each end in one head, and each is in its own folder."""
    found = history([DEMO_MIGRATIONS])
    assert len(found.folder_heads(CORE_VERSIONS)) == 1, f"merge these heads: {heads()}"
    assert len(found.folder_heads(DEMO_MIGRATIONS)) == 1, f"merge these heads: {heads()}"
    assert len(heads()) == 2


async def test_readiness_names_the_declared_tables_an_app_has_not_created(empty_database: str) -> None:
    """An app's resources get their tables, and their records of deleted rows (decision 0016), from the
    app's own revisions: until `rampart makemigrations` wrote them, nothing is pending, but they are
    missing, and an instance must not take traffic."""
    await asyncio.to_thread(upgrade, empty_database)
    app = create_app(make_settings(empty_database, app="tests.apps.library:declare"))
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            r = await http.get("/health/ready")
            assert r.status_code == 503
            assert r.json()["checks"]["migrations"] == (
                "missing tables: shelves, shelves_deleted, books, books_deleted"
            )
            conn = await asyncpg.connect(empty_database)
            try:
                await conn.execute(CREATE_TABLES)
            finally:
                await conn.close()
            r = await http.get("/health/ready")
            assert r.status_code == 200, r.text
    finally:
        await app.aclose()


def _version_file(folder: Path, revision: str, down: object, depends_on: object = None) -> None:
    (folder / f"{revision}_step.py").write_text(
        f'"""A step."""\nrevision: str = {revision!r}\ndown_revision = {down!r}\n'
        f"depends_on = {depends_on!r}\n\n"
        "def upgrade() -> None:\n    pass\n\n\ndef downgrade() -> None:\n    pass\n"
    )


MERGE = ("bb02", "cc03")


@pytest.mark.parametrize(
    "steps",
    [
        [],  # Rampart's own history only
        [("aa01", None, "BASE")],  # an app's first revision, beside Rampart's chain
        [("aa01", None, "BASE"), ("bb02", "aa01", None)],  # the app's chain grows
        [("aa01", None, "BASE"), ("bb02", "aa01", None), ("cc03", "aa01", None)],  # it diverged
        [
            ("aa01", None, "BASE"),
            ("bb02", "aa01", None),
            ("cc03", "aa01", None),
            ("dd04", ("bb02", "cc03"), None),
        ],
        [("aa01", "HEAD", None)],  # an older makemigrations: on top of Rampart's head
        [("aa01", "HEAD", None), ("bb02", "HEAD", None)],  # two such branches
    ],
)
def test_heads_read_from_the_files_are_alembics(tmp_path: Path, steps: list[tuple[str, Any, Any]]) -> None:
    """/health/ready reads the heads without Alembic; they must be the heads Alembic itself finds."""
    core = history()
    (head,) = core.folder_heads(CORE_VERSIONS)
    (base,) = [r.id for r in core.revisions.values() if not r.down]
    for revision, down, depends_on in steps:
        _version_file(
            tmp_path, revision, head if down == "HEAD" else down, base if depends_on == "BASE" else None
        )
    folders = (CORE_VERSIONS, tmp_path.resolve())
    from_files = revisions.read_history(folders)
    from_alembic = revisions._alembic_history(folders)
    assert from_files.revisions == from_alembic.revisions
    expected = set(ScriptDirectory.from_config(alembic_config(app_folders=[tmp_path])).get_heads())
    assert from_files.heads() == expected
    for folder in folders:
        assert from_files.folder_heads(folder) == from_alembic.folder_heads(folder)


def test_a_revision_applied_through_a_dependency_is_not_pending(empty_database: str, tmp_path: Path) -> None:
    """Alembic drops the row of a head that another chain's revision depends on: the dependency is still
    applied, and readiness must not report it pending."""
    (core_head,) = history().folder_heads(CORE_VERSIONS)
    _version_file(tmp_path, "aa01", None, core_head)
    upgrade(empty_database, app_folders=[tmp_path])
    assert versions(empty_database) == {"aa01"}  # Rampart's head is implied by the dependency
    assert history([tmp_path]).pending(versions(empty_database)) == []


def test_readiness_does_not_load_alembic_into_a_worker(database_url: str) -> None:
    """A serving worker never imports Alembic or SQLAlchemy (~22 MB of RSS for its whole life)."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        f"""
        import asyncio, sys, httpx
        from rampart.app import create_app
        from rampart.config import Settings

        async def main():
            settings = Settings(
                _env_file=None, env="test", database_url={database_url!r}, jwt_secret="x" * 40
            )
            app = create_app(settings)
            await app.startup()
            try:
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                    print((await http.get("/health/ready")).json()["checks"]["migrations"])
            finally:
                await app.aclose()
            print(sorted(m for m in ("alembic", "sqlalchemy", "mako") if m in sys.modules))

        asyncio.run(main())
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok", "[]"]


# ----- a database migrated before the demo had its own chain ----------------------------------------------


def migrate_as_before_0020(url: str, revision: str) -> None:
    """Rampart's version files as they were (the demo's tables in its initial revision), up to `revision`."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("version_locations", str(VERSIONS_BEFORE_0020))
    config.set_main_option("path_separator", "newline")
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(url))
    command.upgrade(config, revision)


def fill(url: str) -> None:
    """A row or more in every table of the database as it was at 86270a25deee."""
    owner, member, session, event, hook, project, task = (uuid.uuid4() for _ in range(7))
    statements: list[tuple[str, tuple[Any, ...]]] = [
        (
            "INSERT INTO users (id, email, name, role, disabled) VALUES ($1, 'owner@example.test', 'Owner',"
            " 'admin', false), ($2, 'member@example.test', 'M', 'user', true)",
            (owner, member),
        ),
        (
            # Not an impersonation: de773ed17ed1 revokes those opened before it (by design).
            "INSERT INTO sessions (id, user_id, refresh_token_hash, user_agent, ip, expires_at)"
            " VALUES ($1, $2, 'refresh-hash', 'pytest', '127.0.0.1', now() + interval '1 hour')",
            (session, owner),
        ),
        ("INSERT INTO spent_refresh_tokens (token_hash, session_id) VALUES ('spent-hash', $1)", (session,)),
        (
            "INSERT INTO user_identities (issuer, subject, user_id, email, last_login_at)"
            " VALUES ('https://issuer.example.test', 'subject-1', $1, 'owner@example.test', now())",
            (owner,),
        ),
        (
            "INSERT INTO oidc_login_states (state_hash, nonce, code_verifier, redirect_to, expires_at)"
            " VALUES ('state-hash', 'nonce', 'verifier', '/after', now() + interval '10 minutes')",
            (),
        ),
        ("INSERT INTO signing_keys (kid, alg, private_jwk) VALUES ('kid-1', 'EdDSA', '{\"k\": 1}')", ()),
        (
            "INSERT INTO projects (id, name, description, owner_id) VALUES ($1, 'Apollo', 'moon', $2)",
            (project, owner),
        ),
        (
            "INSERT INTO project_members (id, project_id, user_id, role) VALUES ($1, $2, $3, 'editor')",
            (uuid.uuid4(), project, member),
        ),
        (
            "INSERT INTO tasks (id, project_id, title, description, status, priority, due_date, assignee_id,"
            " owner_id, version)"
            " VALUES ($1, $2, 'Launch', 'count down', 'in_progress', 3, '2027-01-01', $3, $4, 7)",
            (task, project, member, owner),
        ),
        (  # the row trigger also queues it in event_queue
            "INSERT INTO events (id, type, resource, resource_id, actor_id, occurred_at, data, changes,"
            " request_id) VALUES ($1, 'tasks.created', 'tasks', $2, $3, now(), '{\"title\": \"Launch\"}',"
            " '{}', 'request-1')",
            (event, str(task), owner),
        ),
        (
            "INSERT INTO event_deliveries (event_id, subscriber, status, attempts, last_error)"
            " VALUES ($1, 'audit', 'dead', 10, 'gave up')",
            (event,),
        ),
        (
            "INSERT INTO webhooks (id, url, events, secret) VALUES ($1, 'https://hooks.example.test/x',"
            " '{tasks.created}', 'webhook-secret')",
            (hook,),
        ),
        (
            "INSERT INTO webhook_attempts (id, webhook_id, event_id, status_code, duration_ms)"
            " VALUES ($1, $2, $3, 200, 12)",
            (uuid.uuid4(), hook, event),
        ),
    ]

    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            for sql, args in statements:
                await conn.execute(sql, *args)
        finally:
            await conn.close()

    asyncio.run(run())


def columns(url: str) -> dict[str, list[str]]:
    """The columns of every table (but alembic_version)."""

    async def run() -> dict[str, list[str]]:
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch(
                "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'"
                " AND table_name <> 'alembic_version' ORDER BY table_name, ordinal_position"
            )
        finally:
            await conn.close()
        found: dict[str, list[str]] = {}
        for r in rows:
            found.setdefault(r["table_name"], []).append(r["column_name"])
        return found

    return asyncio.run(run())


def contents(url: str, of: dict[str, list[str]]) -> dict[str, list[str]]:
    """Every row of the tables and columns `of`, as JSON text, in a stable order. Columns only: a later
    revision of Rampart's may add some (de773ed17ed1 does), which is not a row lost."""

    async def run() -> dict[str, list[str]]:
        conn = await asyncpg.connect(url)
        try:
            found = {}
            for table, names in of.items():
                listed = ", ".join(f'"{name}"' for name in names)
                sql = f'SELECT row_to_json(t)::text FROM (SELECT {listed} FROM "{table}") t ORDER BY 1'
                found[table] = [r[0] for r in await conn.fetch(sql)]
            return found
        finally:
            await conn.close()

    return asyncio.run(run())


def test_a_database_at_the_old_head_upgrades_in_place_keeping_every_row(empty_database: str) -> None:
    migrate_as_before_0020(empty_database, "86270a25deee")
    fill(empty_database)
    old = columns(empty_database)
    before = contents(empty_database, old)
    assert set(before) == FRAMEWORK_TABLES - ADDED_SINCE | DEMO_TABLES
    assert all(before.values()), {name: len(rows) for name, rows in before.items()}  # rows in every table

    migrate_all(make_settings(empty_database))  # `rampart migrate` with the new layout

    assert contents(empty_database, old) == before
    assert sorted(versions(empty_database)) == heads()
    assert pending(empty_database) == []
    assert schema_diff(empty_database) == []  # the demo's revision adopted its tables as they were
    migrate_all(make_settings(empty_database))  # and again: nothing to do
    assert contents(empty_database, old) == before
    assert sorted(versions(empty_database)) == heads()


def test_a_database_at_an_older_revision_upgrades_to_the_declared_schema(empty_database: str) -> None:
    """Before 332b086b0f2f, which dropped four redundant indexes of the demo's tables (now the demo's own
    revision drops them) and before the creation-time index of 86270a25deee (now the demo's)."""
    migrate_as_before_0020(empty_database, "c9e2f4a61b3d")
    assert {"tasks_owner_id_idx", "tasks_project_id_idx"} <= indexes(empty_database)
    owner, project = uuid.uuid4(), uuid.uuid4()
    for sql, args in [
        (
            "INSERT INTO users (id, email, name, role, disabled) VALUES ($1, 'o@x.test', 'O', 'user', false)",
            (owner,),
        ),
        ("INSERT INTO projects (id, name, description, owner_id) VALUES ($1, 'P', '', $2)", (project, owner)),
        (
            "INSERT INTO tasks (id, project_id, title, description, status, priority, owner_id)"
            " VALUES ($1, $2, 'T', '', 'todo', 0, $3)",
            (uuid.uuid4(), project, owner),
        ),
    ]:
        query(empty_database, sql, *args)
    demo = {name: names for name, names in columns(empty_database).items() if name in DEMO_TABLES}
    demo_rows = contents(empty_database, demo)

    migrate_all(make_settings(empty_database))

    assert contents(empty_database, demo) == demo_rows
    assert schema_diff(empty_database) == []
    assert "tasks_project_id_created_at_idx" in indexes(empty_database)
    assert not {"tasks_owner_id_idx", "tasks_project_id_idx"} & indexes(empty_database)
    assert sorted(versions(empty_database)) == heads()


def query(url: str, sql: str, *args: Any) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(sql, *args)
        finally:
            await conn.close()

    asyncio.run(run())


def indexes(url: str) -> set[str]:
    async def run() -> set[str]:
        conn = await asyncpg.connect(url)
        try:
            return {
                r[0] for r in await conn.fetch("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")
            }
        finally:
            await conn.close()

    return asyncio.run(run())


def test_the_records_of_deleted_rows_start_with_the_objects_deleted_before(empty_database: str) -> None:
    """Revision d3cb02b91283 (decision 0016) fills `<table>_deleted` from each object's `deleted` event,
    so a member keeps seeing the history of what was deleted before the upgrade."""
    migrate_as_before_0020(empty_database, "86270a25deee")  # the demo's tables in Rampart's chain then
    owner, project, gone, alive = (uuid.uuid4() for _ in range(4))
    row = {
        "id": str(gone), "project_id": str(project), "title": "old", "description": "", "status": "done",
        "priority": 2, "due_date": "2026-12-01", "assignee_id": None, "owner_id": str(owner),
        "created_at": "2026-11-01T10:00:00.000Z", "updated_at": "2026-11-02T10:00:00.000Z", "version": 3,
    }  # fmt: skip

    async def write() -> None:
        conn = await asyncpg.connect(empty_database)
        try:
            await conn.execute(
                "INSERT INTO users (id, email, name, role, disabled) VALUES ($1, 'o@x', '', 'user', false)",
                owner,
            )
            await conn.execute(
                "INSERT INTO projects (id, name, description, owner_id) VALUES ($1, 'p', '', $2)",
                project,
                owner,
            )
            await conn.execute(
                "INSERT INTO tasks (id, project_id, title, description, status, priority, owner_id)"
                " VALUES ($1, $2, 'here', '', 'todo', 0, $3)",
                alive,
                project,
                owner,
            )
            events = [
                ("tasks.created", gone, {**row, "title": "first"}),
                ("tasks.deleted", gone, row),
                ("tasks.deleted", alive, {"id": str(alive)}),  # still there: not a deleted object
                ("tasks.deleted", uuid.uuid4(), {"title": "no id"}),  # not the row of an object
            ]
            for number, (kind, object_id, data) in enumerate(events):
                await conn.execute(
                    "INSERT INTO events (id, type, resource, resource_id, occurred_at, data)"
                    " VALUES ($1, $2, 'tasks', $3,"
                    " '2026-11-03T10:00:00Z'::timestamptz + make_interval(secs => $4), $5::jsonb)",
                    uuid.UUID(int=(1 << 127) + number),
                    kind,
                    str(object_id),
                    number,
                    orjson.dumps(data).decode(),
                )
        finally:
            await conn.close()

    async def kept() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(empty_database)
        try:
            return list(await conn.fetch("SELECT * FROM tasks_deleted"))
        finally:
            await conn.close()

    asyncio.run(write())
    migrate_all(make_settings(empty_database))  # both chains: the demo's makes tasks_deleted
    (record,) = asyncio.run(kept())
    assert record["id"] == gone
    assert (record["title"], record["priority"], record["version"], str(record["due_date"])) == (
        "old",
        2,
        3,
        "2026-12-01",
    )
    assert (record["project_id"], record["owner_id"]) == (project, owner)
    assert record["deleted_at"].isoformat() == "2026-11-03T10:00:01+00:00"
    assert schema_diff(empty_database) == []
