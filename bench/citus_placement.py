"""Where a row's shard comes from, and where events live, measured on a real Citus cluster.

Starts a coordinator and 2 workers (tests/pgservers.py: Citus 13 on this machine's PostgreSQL), migrates
a database with Rampart's migrations, places the demo tables as decision 0019 says (`users` a reference
table; `projects` by id, `project_members` and `tasks` by project, co-located), and seeds it. A second
database on the coordinator, without the extension, is the single-node baseline.

Then, for each option, `--clients` connections (asyncpg, one task each) run it in a loop for
`--seconds`, and the rate and the median / p99 latency are printed:

Reads of one task by id (the API's `GET /tasks/{id}` knows only the id):
- `single node`: `WHERE id = $1` on plain PostgreSQL.
- `fan-out`: the same on Citus: every shard is asked (8 shards, each an index lookup).
- `lookup, 2 statements`: the task's project from a local table on the coordinator
  (`task_shards`, written with the task), then `WHERE project_id = $2 AND id = $1` (one shard).
- `lookup, 1 statement`: the same as one statement (a subquery on the local table).
- `key known`: `WHERE project_id = $2 AND id = $1` alone: what a read costs when the id itself names
  the shard (the id encodes the shard key), the floor of the options.
The same four with the demo app's visibility rule for a task (owner or member of its project), written
so that Citus can route it (the subqueries pin the project) or not (fan-out).

Writes of a task with its event (the manager's transactional path: BEGIN, INSERT task, INSERT event, COMMIT):
- `single node`: plain PostgreSQL.
- `events local`: `events` (and its queue trigger) on the coordinator: each write is a transaction
  over two nodes, committed in two phases.
- `events co-located`: an events table distributed by the changed row's shard key, co-located with
  `projects` (with and without its queue row): the whole write is on one worker, committed in one phase.
- and for scale: the task alone, and Rampart's one-statement form (a CTE) with local events.

Run: `.venv/bin/python bench/citus_placement.py [--clients 8] [--seconds 5] [--tasks 20000] [--shards 32]
[--durable] [--only reads|writes]` (Citus
installed: ../shared/citus/build.sh). Recorded in docs/decisions/0019-citus-placement.md.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
from tests.conftest import make_settings, upgrade_demo  # noqa: E402
from tests.pgservers import CitusCluster, citus_cluster, citus_missing  # noqa: E402

from rampart.clitasks import migrate_all  # noqa: E402
from rampart.db.citus import TablePlacement, place_tables  # noqa: E402
from rampart.lib.ids import new_id  # noqa: E402

# The options measured by decision 0019, before the shard key: projects by id, the others by project.
# (What Rampart places today, `rampart migrate` on a coordinator, is decision 0024's.)
PLACEMENTS: dict[str, TablePlacement] = {
    "users": TablePlacement.reference(),
    "projects": TablePlacement.distributed("id"),
    "project_members": TablePlacement.distributed("project_id", colocate_with="projects"),
    "tasks": TablePlacement.distributed("project_id", colocate_with="projects"),
}
COLUMNS = "t.id, t.project_id, t.title, t.status, t.priority, t.owner_id, t.created_at, t.version"
# The demo app's rule for a task, in two spellings: the app's own (a project list in an array) and one
# whose subqueries name the project, so Citus sends them to the task's shard.
VISIBLE_FANOUT = (
    "EXISTS (SELECT 1 FROM projects pp WHERE pp.id = t.project_id AND (pp.owner_id = $U"
    " OR EXISTS (SELECT 1 FROM project_members pm WHERE pm.project_id = pp.id AND pm.user_id = $U)))"
)
VISIBLE_PINNED = (
    "EXISTS (SELECT 1 FROM projects pp WHERE pp.id = $P AND (pp.owner_id = $U"
    " OR EXISTS (SELECT 1 FROM project_members pm WHERE pm.project_id = $P AND pm.user_id = $U)))"
)
EXTRA_SQL = (
    # The lookup option: a task's project, on the coordinator.
    "CREATE TABLE task_shards (id uuid PRIMARY KEY, project_id uuid NOT NULL)",
    # The co-located events option: the events and their queue, distributed by the changed row's shard key.
    "CREATE TABLE events_colo (shard_key uuid NOT NULL, id uuid NOT NULL, type text NOT NULL,"
    " resource text NOT NULL, resource_id text NOT NULL, actor_id uuid, occurred_at timestamptz(3) NOT NULL,"
    " data jsonb NOT NULL DEFAULT '{}', changes jsonb NOT NULL DEFAULT '{}', request_id text,"
    " PRIMARY KEY (shard_key, id))",
    "CREATE TABLE event_queue_colo (shard_key uuid NOT NULL, id uuid NOT NULL, type text NOT NULL,"
    " PRIMARY KEY (shard_key, id))",
)


async def seed(url: str, *, users: int, projects_per_user: int, tasks: int) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        for sql in EXTRA_SQL:
            await conn.execute(sql)
        if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')"):
            await conn.execute(
                "SELECT create_distributed_table('events_colo', 'shard_key', colocate_with => 'projects')"
            )
            await conn.execute(
                "SELECT create_distributed_table('event_queue_colo', 'shard_key',"
                " colocate_with => 'projects')"
            )
        user_ids = [new_id() for _ in range(users)]
        await conn.copy_records_to_table(
            "users",
            records=[(u, f"{u}@bench", "u", "user", False) for u in user_ids],
            columns=["id", "email", "name", "role", "disabled"],
        )
        project_rows = [(new_id(), "p", "", u) for u in user_ids for _ in range(projects_per_user)]
        await conn.copy_records_to_table(
            "projects", records=project_rows, columns=["id", "name", "description", "owner_id"]
        )
        # Each user is also a viewer of one other user's project.
        members = []
        for i, u in enumerate(user_ids):
            p = project_rows[((i + 1) % users) * projects_per_user]
            members.append((new_id(), p[0], u, "viewer"))
        await conn.copy_records_to_table(
            "project_members", records=members, columns=["id", "project_id", "user_id", "role"]
        )
        task_rows = []
        for _ in range(tasks):
            p = random.choice(project_rows)
            task_rows.append((new_id(), p[0], "t", "", "todo", 1, p[3]))
        await conn.copy_records_to_table(
            "tasks",
            records=task_rows,
            columns=["id", "project_id", "title", "description", "status", "priority", "owner_id"],
        )
        await conn.copy_records_to_table(
            "task_shards", records=[(t[0], t[1]) for t in task_rows], columns=["id", "project_id"]
        )
        await conn.execute("ANALYZE")
        return {"tasks": [(t[0], t[1], t[6]) for t in task_rows], "projects": project_rows}
    finally:
        await conn.close()


async def run(
    url: str, clients: int, seconds: float, op: Callable[[asyncpg.Connection], Awaitable[Any]]
) -> tuple[float, float, float]:
    """(operations per second, median ms, p99 ms) of `op` run in a loop by `clients` connections."""
    conns = [await asyncpg.connect(url, server_settings={"rampart.announces": "on"}) for _ in range(clients)]
    latencies: list[float] = []
    stop = time.monotonic() + seconds + 1.0  # the first second warms up and is not counted
    counting_from = time.monotonic() + 1.0

    async def loop(conn: asyncpg.Connection) -> None:
        while (now := time.monotonic()) < stop:
            await op(conn)
            if now >= counting_from:
                latencies.append((time.monotonic() - now) * 1000)

    try:
        await asyncio.gather(*(loop(c) for c in conns))
    finally:
        for c in conns:
            await c.close()
    latencies.sort()
    return len(latencies) / seconds, statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1]


def read_ops(
    data: dict[str, Any], *, citus: bool
) -> dict[str, Callable[[asyncpg.Connection], Awaitable[Any]]]:
    tasks = data["tasks"]

    def pick() -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
        return random.choice(tasks)

    by_id = f"SELECT {COLUMNS} FROM tasks t WHERE t.id = $1"
    by_key = f"SELECT {COLUMNS} FROM tasks t WHERE t.project_id = $2 AND t.id = $1"
    lookup = "SELECT project_id FROM task_shards WHERE id = $1"
    one_statement = (
        f"SELECT {COLUMNS} FROM tasks t WHERE t.id = $1"
        " AND t.project_id = (SELECT project_id FROM task_shards WHERE id = $1)"
    )
    vis_id = f"SELECT {COLUMNS}, ({VISIBLE_FANOUT.replace('$U', '$2')}) FROM tasks t WHERE t.id = $1"
    vis_key = (
        f"SELECT {COLUMNS}, ({VISIBLE_PINNED.replace('$U', '$3').replace('$P', '$2')}) FROM tasks t"
        " WHERE t.project_id = $2 AND t.id = $1"
    )

    async def plain(conn: asyncpg.Connection) -> None:
        tid, _, _ = pick()
        assert await conn.fetchrow(by_id, tid) is not None

    async def known(conn: asyncpg.Connection) -> None:
        tid, pid, _ = pick()
        assert await conn.fetchrow(by_key, tid, pid) is not None

    async def two(conn: asyncpg.Connection) -> None:
        tid, _, _ = pick()
        pid = await conn.fetchval(lookup, tid)
        assert await conn.fetchrow(by_key, tid, pid) is not None

    async def one(conn: asyncpg.Connection) -> None:
        tid, _, _ = pick()
        assert await conn.fetchrow(one_statement, tid) is not None

    async def vis_plain(conn: asyncpg.Connection) -> None:
        tid, _, owner = pick()
        row = await conn.fetchrow(vis_id, tid, owner)
        assert row is not None
        assert row[-1]

    async def vis_known(conn: asyncpg.Connection) -> None:
        tid, pid, owner = pick()
        row = await conn.fetchrow(vis_key, tid, pid, owner)
        assert row is not None
        assert row[-1]

    async def vis_two(conn: asyncpg.Connection) -> None:
        tid, _, owner = pick()
        pid = await conn.fetchval(lookup, tid)
        row = await conn.fetchrow(vis_key, tid, pid, owner)
        assert row is not None
        assert row[-1]

    if not citus:
        return {"GET by id": plain, "GET by id + visibility": vis_plain}
    return {
        "GET by id, fan-out": plain,
        "GET by id, lookup, 2 statements": two,
        "GET by id, lookup, 1 statement": one,
        "GET by id, key known": known,
        "GET by id + visibility, fan-out": vis_plain,
        "GET by id + visibility, lookup, 2 statements": vis_two,
        "GET by id + visibility, key known (pinned)": vis_known,
    }


def write_ops(
    data: dict[str, Any], *, citus: bool
) -> dict[str, Callable[[asyncpg.Connection], Awaitable[Any]]]:
    projects = data["projects"]
    insert_task = (
        "INSERT INTO tasks (id, project_id, title, description, status, priority, owner_id)"
        " VALUES ($1, $2, 't', '', 'todo', 1, $3)"
    )
    event_cols = "id, type, resource, resource_id, actor_id, occurred_at, data"
    insert_event = (
        f"INSERT INTO events ({event_cols}) VALUES ($1, 'tasks.created', 'tasks', $2, $3, now(), $4::jsonb)"
    )
    insert_event_colo = (
        f"INSERT INTO events_colo (shard_key, {event_cols})"
        " VALUES ($5, $1, 'tasks.created', 'tasks', $2, $3, now(), $4::jsonb)"
    )
    insert_queue_colo = "INSERT INTO event_queue_colo (shard_key, id, type) VALUES ($1, $2, 'tasks.created')"

    async def local_events(conn: asyncpg.Connection) -> None:
        pid, _, _, owner = random.choice(projects)
        tid = new_id()
        async with conn.transaction():
            await conn.execute(insert_task, tid, pid, owner)
            await conn.execute(insert_event, new_id(), str(tid), owner, '{"title": "t"}')

    async def colocated_events(conn: asyncpg.Connection) -> None:
        pid, _, _, owner = random.choice(projects)
        tid, eid = new_id(), new_id()
        async with conn.transaction():
            await conn.execute(insert_task, tid, pid, owner)
            await conn.execute(insert_event_colo, eid, str(tid), owner, '{"title": "t"}', pid)
            await conn.execute(insert_queue_colo, pid, eid)

    async def task_only(conn: asyncpg.Connection) -> None:
        pid, _, _, owner = random.choice(projects)
        await conn.execute(insert_task, new_id(), pid, owner)

    async def colocated_no_queue(conn: asyncpg.Connection) -> None:
        pid, _, _, owner = random.choice(projects)
        tid = new_id()
        async with conn.transaction():
            await conn.execute(insert_task, tid, pid, owner)
            await conn.execute(insert_event_colo, new_id(), str(tid), owner, '{"title": "t"}', pid)

    one_statement = (
        "WITH ins AS (INSERT INTO tasks (id, project_id, title, description, status, priority, owner_id)"
        " SELECT $1, $2, 't', '', 'todo', 1, $3 RETURNING id), ev AS ("
        f"INSERT INTO events ({event_cols}) SELECT $4, 'tasks.created', 'tasks', ins.id::text, $3, now(),"
        " '{}'::jsonb FROM ins) SELECT id FROM ins"
    )

    async def local_one_statement(conn: asyncpg.Connection) -> None:
        pid, _, _, owner = random.choice(projects)
        await conn.execute(one_statement, new_id(), pid, owner, new_id())

    if not citus:
        return {
            "create task alone": task_only,
            "create task + event": local_events,
            "create task + event, one statement (CTE)": local_one_statement,
        }
    return {
        "create task alone (1 worker)": task_only,
        "create task + event, events local (2 nodes, 2PC)": local_events,
        "create task + event, events local, one statement (CTE)": local_one_statement,
        "create task + event, events co-located (1 worker)": colocated_no_queue,
        "create task + event + queue row, co-located (1 worker)": colocated_events,
    }


async def measure(cluster: CitusCluster, args: argparse.Namespace) -> None:
    plain_url = cluster.coordinator.url("plain")
    conn = await asyncpg.connect(cluster.url)
    try:
        await conn.execute(f"SET citus.shard_count = {int(args.shards)}")
        await place_tables(conn, PLACEMENTS)
    finally:
        await conn.close()
    shape = {"users": 100, "projects_per_user": 2, "tasks": args.tasks}
    data = {"citus": await seed(cluster.url, **shape), "plain": await seed(plain_url, **shape)}
    durability = "fsync on" if args.durable else "fsync off (the test cluster's setting)"
    print(
        f"{args.clients} clients, {args.seconds:g} s each, {args.tasks} tasks, {args.shards} shards,", end=" "
    )
    print(f"{durability}\n")
    print("| operation | where | per second | median ms | p99 ms |\n|---|---|---:|---:|---:|")
    if args.durable:  # every node flushes its WAL at commit, as a production server does
        for node in [cluster.coordinator, *cluster.workers]:
            conn = await asyncpg.connect(node.url())
            try:
                for setting in ("fsync", "synchronous_commit", "full_page_writes"):
                    await conn.execute(f"ALTER SYSTEM SET {setting} = on")
                await conn.execute("SELECT pg_reload_conf()")
            finally:
                await conn.close()
        await asyncio.sleep(1.0)
    kinds = {"reads": read_ops, "writes": write_ops}
    for kind in args.only or kinds:
        for label, url, citus in (("single node", plain_url, False), ("Citus, 2 workers", cluster.url, True)):
            for name, op in kinds[kind](data["citus" if citus else "plain"], citus=citus).items():
                rate, p50, p99 = await run(url, args.clients, args.seconds, op)
                print(f"| {name} | {label} | {rate:,.0f} | {p50:.2f} | {p99:.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument(
        "--shards", type=int, default=32, help="shards per distributed table (Citus's default)"
    )
    parser.add_argument(
        "--durable", action="store_true", help="fsync and synchronous_commit on, on every node"
    )
    parser.add_argument("--only", action="append", choices=("reads", "writes"), help="one kind of operation")
    args = parser.parse_args()
    if (reason := citus_missing()) is not None:
        raise SystemExit(reason)
    with citus_cluster(workers=2) as cluster:
        asyncio.run(_create_plain(cluster))
        upgrade_demo(cluster.url)  # the migrations only: this script places the tables its own way
        migrate_all(make_settings(cluster.coordinator.url("plain")))
        asyncio.run(measure(cluster, args))


async def _create_plain(cluster: CitusCluster) -> None:
    """The single-node baseline: a database on the coordinator's server without the extension."""
    conn = await asyncpg.connect(cluster.coordinator.url())
    try:
        await conn.execute('CREATE DATABASE "plain"')
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
