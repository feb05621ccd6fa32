"""Migrations: the migration files build exactly the schema the declarations describe, the runner reports
what is pending, and upgrades are repeatable and reversible."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import create_async_engine
from tests.apps.library import CREATE_TABLES
from tests.conftest import _admin, _db_url, make_settings

from rampart import schema
from rampart.app import create_app
from rampart.db.migrate import MIGRATIONS_DIR, pending_migrations, sqlalchemy_url, upgrade
from rampart.db.pool import Database

CORE_TABLES = {"users", "sessions", "events", "projects", "project_members", "tasks"}


@pytest.fixture
def empty_database() -> Iterator[str]:
    """A new database with nothing in it; dropped afterwards."""
    name = f"rampart_mig_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    yield _db_url(name)
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def heads() -> list[str]:
    """The revisions without a successor: parallel branches (sibling revisions) are upgraded together."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    found = sorted(ScriptDirectory.from_config(config).get_heads())
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


def pending(url: str) -> list[str]:
    async def run() -> list[str]:
        db = Database(url)
        try:
            return await pending_migrations(db)
        finally:
            await db.close()

    return asyncio.run(run())


def test_migration_files_match_the_declared_models(empty_database: str) -> None:
    upgrade(empty_database)
    assert schema_diff(empty_database) == []


def test_an_empty_database_differs_from_the_models(empty_database: str) -> None:
    # The comparison must be able to fail: with nothing migrated, every table is missing.
    ops = schema_diff(empty_database)
    added = {op[1].name for op in ops if isinstance(op, tuple) and op[0] == "add_table"}
    assert added >= CORE_TABLES


def test_a_schema_drift_is_detected(empty_database: str) -> None:
    upgrade(empty_database)

    async def drift() -> None:
        conn = await asyncpg.connect(empty_database)
        try:
            await conn.execute("ALTER TABLE tasks ADD COLUMN stray text")
        finally:
            await conn.close()

    asyncio.run(drift())
    ops = schema_diff(empty_database)
    assert any(op[0] == "remove_column" and op[3].name == "stray" for op in ops if isinstance(op, tuple))


def test_pending_reports_the_head_until_upgraded(empty_database: str) -> None:
    assert pending(empty_database) == heads()
    upgrade(empty_database)
    assert pending(empty_database) == []
    assert tables(empty_database) >= CORE_TABLES


def test_upgrade_is_idempotent(empty_database: str) -> None:
    upgrade(empty_database)
    upgrade(empty_database)
    assert pending(empty_database) == []
    assert schema_diff(empty_database) == []


def test_downgrade_to_base_removes_everything_and_upgrade_restores_it(empty_database: str) -> None:
    from alembic import command

    from rampart.db.migrate import alembic_config

    upgrade(empty_database)
    command.downgrade(alembic_config(empty_database), "base")
    assert tables(empty_database) <= {"alembic_version"}
    assert pending(empty_database) == heads()
    upgrade(empty_database)
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


def test_the_migrations_have_a_single_head() -> None:
    """Branches (revisions grown in parallel from one parent) must be merged: `makemigrations` needs
    one head."""
    assert len(heads()) == 1, f"merge these heads: {heads()}"


def _version_file(folder: Any, revision: str, down: object) -> None:
    (folder / f"{revision}_step.py").write_text(
        f'"""A step."""\nrevision: str = {revision!r}\ndown_revision = {down!r}\n\n'
        "def upgrade() -> None:\n    pass\n\n\ndef downgrade() -> None:\n    pass\n"
    )


@pytest.mark.parametrize(
    "steps",
    [
        [],  # the project's own history only
        [("aa01", "HEAD")],  # an app's revision on top of the project's head
        [("aa01", "HEAD"), ("bb02", "HEAD")],  # two branches: two heads
        [("aa01", "HEAD"), ("bb02", "HEAD"), ("cc03", ("aa01", "bb02"))],  # merged
    ],
)
def test_heads_read_from_the_files_are_alembics(tmp_path: Any, steps: list[tuple[str, object]]) -> None:
    """/health/ready reads the heads without Alembic; they must be the heads Alembic itself finds."""
    from rampart.db import migrate

    (head,) = migrate._alembic_heads(None)
    for revision, down in steps:
        _version_file(tmp_path, revision, head if down == "HEAD" else down)
    folder = str(tmp_path) if steps else None
    assert migrate._heads(folder) == migrate._alembic_heads(folder)
    assert len(migrate._heads(folder)) == (2 if len(steps) == 2 else 1)


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


def test_the_records_of_deleted_rows_start_with_the_objects_deleted_before(empty_database: str) -> None:
    """Revision d3cb02b91283 (decision 0016) fills `<table>_deleted` from each object's `deleted` event,
    so a member keeps seeing the history of what was deleted before the upgrade."""
    upgrade(empty_database, "86270a25deee")
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
    upgrade(empty_database)
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
