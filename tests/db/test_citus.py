"""Citus: the test cluster is a real one (a distributed table's rows on both workers, a worker added later
takes shards in a rebalance), and `place_tables` gives Rampart's tables their placement after the
migrations, idempotently, refusing what Citus cannot do before it changes anything."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from tests import pgservers
from tests.conftest import make_settings

import rampart.apps.tasks
from rampart.access.actor import Roles
from rampart.clitasks import migrate_all
from rampart.config import Settings
from rampart.db.citus import (
    PlacementError,
    TablePlacement,
    citus_enabled,
    place_tables,
    tables_on_workers,
)
from rampart.db.migrate import alembic_config, upgrade
from rampart.errors import NotFound
from rampart.lib.ids import new_id, shard_key_of
from rampart.schema import declared_resources, placements

T = TypeVar("T")

# The demo app as decision 0019 places it, from its declarations (the tables not named stay local).
_SETTINGS = Settings(_env_file=None, database_url=None)  # type: ignore[call-arg]
DEMO: dict[str, TablePlacement] = placements(declared_resources(_SETTINGS, Roles(_SETTINGS.role_permissions)))


def on(url: str, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """Run `work` on a new connection to `url` (for the synchronous tests: the cluster's own helpers
    start event loops of their own, so they cannot run inside the tests' loop)."""

    async def run() -> T:
        conn = await asyncpg.connect(url)
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(run())


async def rows_per_worker(
    cluster: pgservers.CitusCluster, table: str, database: str | None = None
) -> dict[int, int]:
    """Rows of `table` (of `database`, the cluster's own by default) on each worker that holds shards of
    it, counted on the worker itself."""
    database = database or cluster.database
    coordinator = await asyncpg.connect(cluster.coordinator.url(database))
    try:
        shards = await coordinator.fetch(
            "SELECT shard_name, nodeport FROM citus_shards WHERE table_name = $1::regclass", table
        )
    finally:
        await coordinator.close()
    counts: dict[int, int] = {}
    for node in cluster.workers:
        names = [r["shard_name"] for r in shards if r["nodeport"] == node.port]
        if not names:
            continue
        conn = await asyncpg.connect(node.url(database))
        try:
            counts[node.port] = sum([await conn.fetchval(f'SELECT count(*) FROM "{n}"') for n in names])
        finally:
            await conn.close()
    return counts


async def placement_of(url: str) -> dict[str, tuple[str, str, int]]:
    """citus_tables: table -> (type, distribution column, co-location id)."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT table_name::text AS t, citus_table_type, distribution_column, colocation_id"
            " FROM citus_tables"
        )
    finally:
        await conn.close()
    return {r["t"]: (r["citus_table_type"], r["distribution_column"], r["colocation_id"]) for r in rows}


# ----- the cluster itself ----------------------------------------------------------------------------


async def test_a_distributed_tables_rows_are_spread_over_both_workers(
    citus_cluster: pgservers.CitusCluster,
) -> None:
    conn = await asyncpg.connect(citus_cluster.url)
    try:
        await conn.execute("CREATE TABLE smoke (id int PRIMARY KEY, note text NOT NULL)")
        await conn.execute("SELECT create_distributed_table('smoke', 'id')")
        await conn.execute("INSERT INTO smoke SELECT g, 'row ' || g FROM generate_series(1, 200) g")
        assert await conn.fetchval("SELECT count(*) FROM smoke") == 200
        counts = await rows_per_worker(citus_cluster, "smoke")
        assert set(counts) == {w.port for w in citus_cluster.workers}
        assert all(n > 0 for n in counts.values()), counts
        assert sum(counts.values()) == 200
    finally:
        await conn.execute("DROP TABLE IF EXISTS smoke")
        await conn.close()


def test_a_worker_added_later_takes_shards_in_a_rebalance() -> None:
    if (reason := pgservers.citus_missing()) is not None:
        pytest.skip(reason)
    with pgservers.citus_cluster(workers=1) as cluster:

        async def fill(conn: asyncpg.Connection) -> None:
            await conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)")
            await conn.execute("SELECT create_distributed_table('notes', 'id')")
            await conn.execute("INSERT INTO notes SELECT g, 'note' FROM generate_series(1, 300) g")

        on(cluster.url, fill)
        added = cluster.add_worker()
        assert asyncio.run(rows_per_worker(cluster, "notes")).get(added.port) is None  # no shards yet

        # Blocking writes while a shard moves: the online mode (logical replication) is for the
        # rebalance-under-load test; this one checks that the fixture's new worker is usable.
        on(
            cluster.url,
            lambda c: c.execute("SELECT rebalance_table_shards(shard_transfer_mode => 'block_writes')"),
        )

        counts = asyncio.run(rows_per_worker(cluster, "notes"))
        assert set(counts) == {w.port for w in cluster.workers}
        assert counts[added.port] > 0
        assert sum(counts.values()) == 300
        assert on(cluster.url, lambda c: c.fetchval("SELECT count(*) FROM notes")) == 300


# ----- placing Rampart's tables --------------------------------------------------------------------


@pytest.fixture(scope="module")
def placed(citus_cluster: pgservers.CitusCluster) -> list[str]:
    """The cluster's database migrated by `rampart migrate`, which places the tables: the steps taken."""
    return migrate_all(make_settings(citus_cluster.url))


ON_WORKERS = {
    "users",
    "users_deleted",
    "projects",
    "projects_deleted",
    "project_members",
    "project_members_deleted",
    "tasks",
    "tasks_deleted",
    "events",
    "event_queue",
}


async def test_migrate_distributes_the_demo_by_project(
    citus_cluster: pgservers.CitusCluster, placed: list[str]
) -> None:
    assert "tasks: distributed by shard_key with events" in placed
    tables = await placement_of(citus_cluster.url)
    assert tables["users"][0] == tables["users_deleted"][0] == "reference"
    for table in ON_WORKERS - {"users", "users_deleted"}:
        assert tables[table][:2] == ("distributed", "shard_key"), table
    # One co-location group: a project's members, tasks and events are on its shard, so its joins (and a
    # change with its event) stay there.
    assert len({tables[t][2] for t in ON_WORKERS - {"users", "users_deleted"}}) == 1
    for table in ("sessions", "webhooks", "event_deliveries", "signing_keys", "alembic_version"):
        assert tables.get(table, ("local",))[0] == "local", table
    conn = await asyncpg.connect(citus_cluster.url)
    try:
        # The keys now lead with the distribution column; reads by id alone keep an index of their own.
        constraints = {
            r["conname"]: r["def"]
            for r in await conn.fetch(
                "SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint"
                " WHERE conrelid IN ('tasks'::regclass, 'project_members'::regclass)"
            )
        }
        assert constraints["tasks_pkey"] == "PRIMARY KEY (shard_key, id)"
        assert await conn.fetchval("SELECT to_regclass('tasks_id_idx') IS NOT NULL")
        # A reference within the group carries the shard key; those to users (a reference table) do not.
        assert constraints["tasks_project_id_fkey"] == (
            "FOREIGN KEY (shard_key, project_id) REFERENCES projects(shard_key, id) ON DELETE CASCADE"
        )
        assert constraints["tasks_owner_id_fkey"].startswith("FOREIGN KEY (owner_id) REFERENCES users(id)")
        assert constraints["tasks_shard_key_check"] == "CHECK ((shard_key = rampart_shard_key(id)))"
        # A member is unique per project as before: the shard key follows the project.
        assert constraints["project_members_project_id_user_id_key"] == (
            "UNIQUE (shard_key, project_id, user_id)"
        )
        assert await tables_on_workers(conn) == ON_WORKERS
        # The SQL function and Python agree on the shard key an id carries.
        some = [new_id(), new_id(shard_key=-7), new_id(shard_key=2**31 - 1)]
        keys = await conn.fetch("SELECT rampart_shard_key(u) AS k FROM unnest($1::uuid[]) u", some)
        assert [r["k"] for r in keys] == [shard_key_of(i) for i in some]
    finally:
        await conn.close()


def test_placing_again_does_nothing_and_migrate_runs_again(
    citus_cluster: pgservers.CitusCluster, placed: list[str]
) -> None:
    assert placed  # the first placement did something
    assert on(citus_cluster.url, lambda c: place_tables(c, DEMO)) == []
    # `rampart migrate` again: the change triggers are installed on the local tables only (Citus refuses
    # them on the others: "triggers are not supported on distributed tables").
    assert migrate_all(make_settings(citus_cluster.url)) == []
    triggered = on(
        citus_cluster.url,
        lambda c: c.fetch(
            "SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
            " WHERE t.tgname = 'rampart_cache_notify'"
        ),
    )
    assert not {r["relname"] for r in triggered} & set(DEMO)


async def test_a_projects_tasks_sit_with_it_and_tasks_of_many_projects_on_both_workers(
    citus_cluster: pgservers.CitusCluster, placed: list[str]
) -> None:
    conn = await asyncpg.connect(citus_cluster.url)
    try:
        owner = new_id()
        await conn.execute(
            "INSERT INTO users (id, email, name, role, disabled) VALUES ($1, $2, 'Owner', 'user', false)",
            owner,
            f"{owner}@example.com",
        )
        projects = [new_id() for _ in range(16)]
        await conn.executemany(
            "INSERT INTO projects (shard_key, id, name, description, owner_id) VALUES ($1, $2, 'P', '', $3)",
            [(shard_key_of(p), p, owner) for p in projects],
        )
        await conn.executemany(
            "INSERT INTO tasks (shard_key, id, project_id, title, description, status, priority, owner_id)"
            " VALUES ($1, $2, $3, 'T', '', 'todo', 0, $4)",
            [
                (shard_key_of(p), new_id(shard_key=shard_key_of(p)), p, owner)
                for p in projects
                for _ in range(3)
            ],
        )
        where = await conn.fetch(
            "SELECT s.table_name::text AS t, s.nodeport FROM citus_shards s"
            " WHERE s.shardid IN (get_shard_id_for_distribution_column('projects', $1::int),"
            " get_shard_id_for_distribution_column('tasks', $1::int),"
            " get_shard_id_for_distribution_column('project_members', $1::int))",
            shard_key_of(projects[0]),
        )
        assert {r["t"] for r in where} == {"projects", "tasks", "project_members"}
        assert len({r["nodeport"] for r in where}) == 1
    finally:
        await conn.close()
    counts = await rows_per_worker(citus_cluster, "tasks")
    assert set(counts) == {w.port for w in citus_cluster.workers}
    assert all(n > 0 for n in counts.values()), counts


async def test_a_placement_citus_cannot_give_is_refused_before_anything_changes(
    citus_cluster: pgservers.CitusCluster, placed: list[str]
) -> None:
    conn = await asyncpg.connect(citus_cluster.url)
    try:
        # spent_refresh_tokens stays local and references sessions: Citus allows no reference from a
        # local table to a distributed one.
        with pytest.raises(PlacementError, match=r"spent_refresh_tokens .*references sessions"):
            await place_tables(conn, {**DEMO, "sessions": TablePlacement.distributed("user_id")})
        assert "sessions" not in await tables_on_workers(conn)
        with pytest.raises(PlacementError, match="tasks is already distributed by shard_key"):
            await place_tables(conn, {**DEMO, "tasks": TablePlacement.distributed("owner_id")})
        with pytest.raises(PlacementError, match="already reference"):
            await place_tables(conn, {**DEMO, "users": TablePlacement.local()})
        with pytest.raises(PlacementError, match="no such table"):
            await place_tables(conn, {"nowhere": TablePlacement.reference()})
    finally:
        await conn.close()


async def test_a_trigger_or_a_unique_index_citus_cannot_keep_is_refused(
    citus_cluster: pgservers.CitusCluster, placed: list[str]
) -> None:
    name = f"scratch_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(citus_cluster.url)
    try:
        await conn.execute(
            f"CREATE TABLE {name} (id uuid PRIMARY KEY, owner uuid NOT NULL, email text UNIQUE)"
        )
        with pytest.raises(
            PlacementError, match=f"{name}: unique index {name}_email_key .*distribution column owner"
        ):
            await place_tables(conn, {name: TablePlacement.distributed("owner")})
        # Refused whole: the key it had started to change is as it was.
        key = await conn.fetchval(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = $1::regclass AND contype = 'p'",
            name,
        )
        assert key == "PRIMARY KEY (id)"
        await conn.execute(f"ALTER TABLE {name} DROP CONSTRAINT {name}_email_key")
        await conn.execute(
            "CREATE FUNCTION scratch_touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$"
        )
        await conn.execute(
            f"CREATE TRIGGER touch BEFORE UPDATE ON {name} FOR EACH ROW EXECUTE FUNCTION scratch_touch()"
        )
        with pytest.raises(PlacementError, match=f"{name} has trigger touch"):
            await place_tables(conn, {name: TablePlacement.distributed("owner")})
        assert name not in await tables_on_workers(conn)
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {name}")
        await conn.execute("DROP FUNCTION IF EXISTS scratch_touch()")
        await conn.close()


# An app's later revision: a column and an index on a distributed table, a column on the reference table.
LATER_REVISION = """
from alembic import op
import sqlalchemy as sa

revision = "c1705a000001"
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tasks", sa.Column("estimate", sa.SmallInteger(), nullable=True))
    op.create_index("tasks_project_id_estimate_idx", "tasks", ["project_id", "estimate"])
    op.add_column("users", sa.Column("locale", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("users", "locale")
    op.drop_index("tasks_project_id_estimate_idx", table_name="tasks")
    op.drop_column("tasks", "estimate")
"""


def test_a_later_migration_changes_distributed_and_reference_tables(
    citus_cluster: pgservers.CitusCluster, tmp_path: Any
) -> None:
    from alembic.script import ScriptDirectory

    url = citus_cluster.create_database(f"later_{uuid.uuid4().hex[:8]}")
    assert migrate_all(make_settings(url))  # placed
    heads = tuple(ScriptDirectory.from_config(alembic_config()).get_heads())
    (tmp_path / "c1705a000001_later.py").write_text(
        LATER_REVISION.format(down=heads[0] if len(heads) == 1 else heads)
    )
    # Alembic runs the revision in one transaction: without sequential mode Citus refuses the reference
    # table's DDL after the distributed one's ("there was a parallel DDL access to distributed table").
    demo = Path(rampart.apps.tasks.__file__).parent / "migrations"  # the chain that made `tasks`
    upgrade(url, app_folders=[demo, tmp_path])

    database = url.rsplit("/", 1)[1]
    worker = citus_cluster.workers[0].url(database)

    async def shard_columns(conn: asyncpg.Connection) -> list[tuple[str, str]]:
        # Citus hides shards from ordinary clients' catalog queries on a worker.
        await conn.execute("SET citus.show_shards_for_app_name_prefixes TO '*'")
        rows = await conn.fetch(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE column_name IN ('estimate', 'locale') AND table_name ~ '_[0-9]+$'"
        )
        indexes = await conn.fetch(
            "SELECT tablename FROM pg_indexes WHERE indexname ~ '^tasks_project_id_estimate_idx_[0-9]+$'"
        )
        return [(r["table_name"], r["column_name"]) for r in rows] + [
            (r["tablename"], "index") for r in indexes
        ]

    found = on(worker, shard_columns)
    shards = on(
        url,
        lambda c: c.fetch(
            "SELECT shard_name FROM citus_shards WHERE nodeport = $1 AND table_name IN ('tasks'::regclass,"
            " 'users'::regclass)",
            citus_cluster.workers[0].port,
        ),
    )
    tasks_shards = {r["shard_name"] for r in shards if r["shard_name"].startswith("tasks_")}
    users_shards = {r["shard_name"] for r in shards if r["shard_name"].startswith("users_")}
    assert tasks_shards
    assert len(users_shards) == 1  # the worker's copy of the reference table
    # Every shard of tasks on the worker got the column and the index, and its copy of users the column.
    assert {t for t, c in found if c == "estimate"} == tasks_shards
    assert {t for t, c in found if c == "index"} == tasks_shards
    assert {t for t, c in found if c == "locale"} == users_shards


async def test_on_plain_postgresql_placing_does_nothing(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        assert not await citus_enabled(conn)
        assert await place_tables(conn, DEMO) == []
        assert await tables_on_workers(conn) == set()
    finally:
        await conn.close()


def test_makemigrations_on_a_placed_database_finds_no_change(
    citus_cluster: pgservers.CitusCluster, placed: list[str], tmp_path: Path
) -> None:
    """What `rampart migrate` made of the tables it placed (shard keys, the keys, unique constraints and
    references rebuilt with them, the index on ids) is no change of the app's: autogenerate leaves it."""
    from rampart.db.migration_writer import make_migration
    from rampart.schema import build_metadata

    settings = make_settings(citus_cluster.url)
    metadata = build_metadata(settings)
    demo = Path(rampart.apps.tasks.__file__).parent / "migrations"
    result = make_migration(
        citus_cluster.url,
        "nothing",
        app_folders=[demo, tmp_path],
        metadata=metadata,
        app_tables=metadata.info["app_tables"],
    )
    assert result.not_written == []
    assert result.path is None
    assert list(tmp_path.glob("*.py")) == []


COMMENTS_APP = """
from rampart import Field, Placement, Policy, Reference, Resource, Text
from rampart.apps.tasks import resources as demo

comments = Resource(
    name="comments",
    fields={
        "task_id": Field(Reference("tasks"), required=True, immutable=True, filter=("eq",)),
        "body": Field(Text(min_length=1, max_length=2000), required=True),
    },
    policy=Policy.inherit("task_id"),
    # With its task, which is with its project: one shard for the three.
    placement=Placement.distributed(by="task_id"),
)


def declare():
    return [*demo.declare(), comments]
"""


async def test_an_apps_new_resource_is_made_by_makemigrations_and_placed_by_migrate(
    citus_cluster: pgservers.CitusCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guide's comments on tasks, distributed by their task: `makemigrations` on the cluster writes
    only the new table, `migrate` makes it and places it with its task's project, and a comment lives on
    its project's shard (its id says which) whatever the path to it."""
    from tests.conftest import context_of, new_user

    from rampart.app import create_app
    from rampart.clitasks import make_app_migration

    module = f"citus_comments_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(COMMENTS_APP)
    monkeypatch.syspath_prepend(str(tmp_path))
    url = await asyncio.to_thread(citus_cluster.create_database, f"app_{uuid.uuid4().hex[:8]}")
    demo_only = make_settings(url)
    await asyncio.to_thread(migrate_all, demo_only)  # the demo first, placed
    settings = make_settings(url, app=f"{module}:declare", migrations_dir=str(tmp_path / "migrations"))
    made = await asyncio.to_thread(
        make_app_migration, settings, message="comments", allow_destructive=False, empty=False
    )
    assert made.path is not None
    assert made.not_written == []
    written = made.path.read_text()
    assert "create_table('comments'" in written
    assert "shard_key" not in written  # the placement adds it, on a cluster only
    steps = await asyncio.to_thread(migrate_all, settings)
    assert "comments: distributed by shard_key with events" in steps
    tables = await placement_of(url)
    assert tables["comments"][:2] == ("distributed", "shard_key")
    assert tables["comments"][2] == tables["tasks"][2]

    app = create_app(settings)
    try:
        owner = await new_user(app)
        ctx = context_of(app, owner)
        managers = app.services.managers
        project = await managers["projects"].create(ctx, {"name": "With comments"})
        task = await managers["tasks"].create(ctx, {"project_id": project["id"], "title": "Discuss"})
        comment = await managers["comments"].create(ctx, {"task_id": task["id"], "body": "Agreed."})
        key = shard_key_of(uuid.UUID(project["id"]))
        assert shard_key_of(uuid.UUID(task["id"])) == shard_key_of(uuid.UUID(comment["id"])) == key
        assert (await managers["comments"].get(ctx, uuid.UUID(comment["id"])))["body"] == "Agreed."
        page = await managers["comments"].list(ctx, {"task_id": task["id"]})
        assert [c["id"] for c in page.items] == [comment["id"]]
        stranger = context_of(app, await new_user(app))
        with pytest.raises(NotFound):
            await managers["comments"].get(stranger, uuid.UUID(comment["id"]))
        # Deleting the project takes its tasks and their comments, each with its event.
        await managers["projects"].delete(ctx, uuid.UUID(project["id"]))
        with pytest.raises(NotFound):
            await managers["comments"].get(ctx, uuid.UUID(comment["id"]))
        conn = await asyncpg.connect(url)
        try:
            kept = await conn.fetchval(
                "SELECT shard_key FROM comments_deleted WHERE id = $1", uuid.UUID(comment["id"])
            )
            types = await conn.fetch(
                "SELECT type FROM events WHERE shard_key = $1 AND resource_id = $2", key, comment["id"]
            )
        finally:
            await conn.close()
        assert kept == key
        assert sorted(r["type"] for r in types) == ["comments.created", "comments.deleted"]
    finally:
        await app.aclose()


async def test_through_the_api_a_projects_tasks_sit_on_its_shard_and_tasks_on_both_workers(
    citus_cluster: pgservers.CitusCluster, placed: list[str]
) -> None:
    """The issue's "done when": after `rampart migrate` on a fresh coordinator with 2 workers, the API
    works as ever and its task rows sit on both workers, each with its project."""
    import httpx
    from tests.conftest import new_user

    from rampart.app import create_app

    app = create_app(make_settings(citus_cluster.url))
    await app.startup()
    try:
        assert app.services.db.citus
        owner = await new_user(app)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            projects = []
            for n in range(16):
                r = await http.post("/api/v1/projects", json={"name": f"P{n}"}, headers=owner.headers)
                assert r.status_code == 201, r.text
                projects.append(r.json()["data"]["id"])
            tasks = {}
            for project in projects:
                for n in range(2):
                    r = await http.post(
                        "/api/v1/tasks", json={"project_id": project, "title": f"T{n}"}, headers=owner.headers
                    )
                    assert r.status_code == 201, r.text
                    tasks[r.json()["data"]["id"]] = project
            for task_id in tasks:
                r = await http.get(f"/api/v1/tasks/{task_id}", headers=owner.headers)
                assert r.status_code == 200, r.text
    finally:
        await app.aclose()
    counts = await rows_per_worker(citus_cluster, "tasks")
    assert set(counts) == {w.port for w in citus_cluster.workers}
    assert all(n > 0 for n in counts.values()), counts
    conn = await asyncpg.connect(citus_cluster.url)
    try:
        for task_id, project in tasks.items():
            where = await conn.fetch(
                "SELECT s.table_name::text AS t, s.nodeport FROM citus_shards s WHERE s.shardid IN"
                " (SELECT get_shard_id_for_distribution_column('tasks', shard_key) FROM tasks WHERE id = $1"
                "  UNION SELECT get_shard_id_for_distribution_column('projects', shard_key) FROM projects"
                "  WHERE id = $2)",
                uuid.UUID(task_id),
                uuid.UUID(project),
            )
            assert {r["t"] for r in where} == {"tasks", "projects"}
            assert len({r["nodeport"] for r in where}) == 1  # one worker holds both
    finally:
        await conn.close()


async def test_a_reference_cleared_by_a_delete_is_not_served_stale_from_the_cache(
    citus_cluster: pgservers.CitusCluster, placed: list[str]
) -> None:
    """`tasks.assignee_id` is ON DELETE SET NULL: on a cluster the database clears it on a worker, where no
    trigger tells the row cache, so the manager clears it itself and announces it."""
    from tests.conftest import context_of, new_user, wait_for_cache

    from rampart.access.system import system_actor
    from rampart.app import create_app
    from rampart.resources.context import Context

    app = create_app(make_settings(citus_cluster.url))
    await app.startup()
    try:
        await wait_for_cache(app)
        assert app.services.cache is not None
        assert app.services.cache.enabled  # trusted on a cluster: workers announce their changes
        owner, helper = await new_user(app), await new_user(app)
        ctx = context_of(app, owner)
        managers = app.services.managers
        project = await managers["projects"].create(ctx, {"name": "Help"})
        task = await managers["tasks"].create(
            ctx, {"project_id": project["id"], "title": "Assigned", "assignee_id": helper.id}
        )
        key = uuid.UUID(task["id"])
        _, cached = await managers["tasks"].get_json(ctx, key)  # kept in the row cache
        assert helper.id.encode() in cached
        admin = Context(actor=system_actor(frozenset({"users:manage", "resources:write_any"})))
        await managers["users"].delete(admin, uuid.UUID(helper.id))
        row = await managers["tasks"].get(ctx, key)
        assert row["assignee_id"] is None
        _, again = await managers["tasks"].get_json(ctx, key)
        assert helper.id.encode() not in again
    finally:
        await app.aclose()
