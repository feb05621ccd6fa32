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
from rampart.clitasks import migrate_all
from rampart.db.citus import PlacementError, citus_enabled, place_tables, tables_on_workers
from rampart.db.migrate import alembic_config, upgrade
from rampart.lib.ids import new_id

T = TypeVar("T")

# The demo app as decision 0019 places it (the tables not named stay local, on the coordinator).
DEMO: dict[str, Any] = {
    "users": ("reference",),
    "projects": ("distributed", "id", None),
    "project_members": ("distributed", "project_id", "projects"),
    "tasks": ("distributed", "project_id", "projects"),
}


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


async def rows_per_worker(cluster: pgservers.CitusCluster, table: str) -> dict[int, int]:
    """Rows of `table` on each worker that holds shards of it, counted on the worker itself."""
    coordinator = await asyncpg.connect(cluster.url)
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
        conn = await asyncpg.connect(node.url(cluster.database))
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
    """The cluster's database migrated (`rampart migrate`), then the demo placed: the steps taken."""
    migrate_all(make_settings(citus_cluster.url))
    return on(citus_cluster.url, lambda c: place_tables(c, DEMO))


async def test_migrate_then_place_distributes_the_demo_by_project(
    citus_cluster: pgservers.CitusCluster, placed: list[str]
) -> None:
    assert "tasks: distributed by project_id with projects" in placed
    tables = await placement_of(citus_cluster.url)
    assert tables["users"][0] == "reference"
    assert tables["projects"][:2] == ("distributed", "id")
    assert tables["project_members"][:2] == ("distributed", "project_id")
    assert tables["tasks"][:2] == ("distributed", "project_id")
    # One co-location group: a project's members and tasks are on its shard, so its joins stay there.
    assert tables["projects"][2] == tables["project_members"][2] == tables["tasks"][2]
    for table in ("sessions", "events", "event_queue", "webhooks", "signing_keys", "alembic_version"):
        assert tables.get(table, ("local",))[0] == "local", table
    conn = await asyncpg.connect(citus_cluster.url)
    try:
        # The keys now lead with the distribution column; reads by id alone keep an index of their own.
        key = await conn.fetchval(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = 'tasks'::regclass AND contype = 'p'"
        )
        assert key == "PRIMARY KEY (project_id, id)"
        assert await conn.fetchval("SELECT to_regclass('tasks_id_idx') IS NOT NULL")
        fks = {
            r["conname"]
            for r in await conn.fetch(
                "SELECT conname FROM pg_constraint WHERE conrelid = 'tasks'::regclass AND contype = 'f'"
            )
        }
        assert {"tasks_project_id_fkey", "tasks_owner_id_fkey", "tasks_assignee_id_fkey"} <= fks
        assert await tables_on_workers(conn) == {"users", "projects", "project_members", "tasks"}
    finally:
        await conn.close()


def test_placing_again_does_nothing_and_migrate_runs_again(
    citus_cluster: pgservers.CitusCluster, placed: list[str]
) -> None:
    assert placed  # the first placement did something
    assert on(citus_cluster.url, lambda c: place_tables(c, DEMO)) == []
    # `rampart migrate` again: the change triggers are installed on the local tables only (Citus refuses
    # them on the others: "triggers are not supported on distributed tables").
    migrate_all(make_settings(citus_cluster.url))
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
            "INSERT INTO projects (id, name, description, owner_id) VALUES ($1, 'P', '', $2)",
            [(p, owner) for p in projects],
        )
        await conn.executemany(
            "INSERT INTO tasks (id, project_id, title, description, status, priority, owner_id)"
            " VALUES ($1, $2, 'T', '', 'todo', 0, $3)",
            [(new_id(), p, owner) for p in projects for _ in range(3)],
        )
        where = await conn.fetch(
            "SELECT s.table_name::text AS t, s.nodeport FROM citus_shards s"
            " WHERE s.shardid IN (get_shard_id_for_distribution_column('projects', $1::uuid),"
            " get_shard_id_for_distribution_column('tasks', $1::uuid),"
            " get_shard_id_for_distribution_column('project_members', $1::uuid))",
            projects[0],
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
            await place_tables(conn, {**DEMO, "sessions": ("distributed", "user_id", None)})
        assert "sessions" not in await tables_on_workers(conn)
        with pytest.raises(PlacementError, match="tasks is already distributed by project_id"):
            await place_tables(conn, {**DEMO, "tasks": ("distributed", "owner_id", None)})
        with pytest.raises(PlacementError, match="already reference"):
            await place_tables(conn, {**DEMO, "users": ("local",)})
        with pytest.raises(PlacementError, match="no such table"):
            await place_tables(conn, {"nowhere": ("reference",)})
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
            await place_tables(conn, {name: ("distributed", "owner", None)})
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
            await place_tables(conn, {name: ("distributed", "owner", None)})
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
    migrate_all(make_settings(url))
    on(url, lambda c: place_tables(c, DEMO))
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
