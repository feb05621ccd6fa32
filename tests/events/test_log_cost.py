"""What a page of the audit log costs depends on what the caller may see, never on what others wrote
(issue 13, finding 3; decision 0016).

A database of this module's own holds 300,000 events of other users (seeded in a few statements, not
through the API), their 60,000 tasks in 2,000 projects and 20,000 of their deleted tasks. Each page is
read through a pool that runs `EXPLAIN (ANALYZE)` of every statement the log sends, and the test asserts
on that plan: no sequential scan of `events` (or of the big tables), and only a bounded number of event
rows read, where judging visibility row by row reads all 300,000 (0.9-1.0 s per page before). The
timings are reported in the decision record, not asserted.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from rampart.access.actor import Actor
from rampart.app import Rampart, create_app
from rampart.db.pool import Database
from rampart.events.log import EventLog, LogQuery
from tests.conftest import make_settings

OTHERS, PROJECTS, TASKS, GONE, EVENTS = 1_000, 2_000, 60_000, 20_000, 300_000
# A page may read the next window of events (1,000) and what the caller sees: far below the 300,000.
READ_BOUND = 3_000
BIG_TABLES = ("events", "tasks", "tasks_deleted", "projects")

SEED = f"""
INSERT INTO users (id, email, name, role, disabled)
SELECT md5('user' || g)::uuid, 'seed' || g || '@example.test', 'seed ' || g, 'user', false
FROM generate_series(0, {OTHERS - 1}) g;
INSERT INTO projects (id, name, description, owner_id)
SELECT md5('project' || g)::uuid, 'p' || g, '', md5('user' || g % {OTHERS})::uuid
FROM generate_series(0, {PROJECTS - 1}) g;
INSERT INTO project_members (id, project_id, user_id, role)
SELECT md5('member' || g)::uuid, md5('project' || g)::uuid, md5('user' || (g + 7) % {OTHERS})::uuid, 'viewer'
FROM generate_series(0, {PROJECTS - 1}) g;
INSERT INTO tasks (id, project_id, title, description, status, priority, owner_id)
SELECT md5('task' || g)::uuid, md5('project' || g % {PROJECTS})::uuid, 't', '', 'todo', 0,
       md5('user' || g % {OTHERS})::uuid
FROM generate_series(0, {TASKS - 1}) g;
INSERT INTO tasks_deleted (id, project_id, title, description, status, priority, owner_id, created_at,
                           updated_at, version)
SELECT md5('gone' || g)::uuid, md5('project' || g % {PROJECTS})::uuid, 't', '', 'todo', 0,
       md5('user' || g % {OTHERS})::uuid, now(), now(), 1
FROM generate_series(0, {GONE - 1}) g;
-- Ids in time order (UUIDv7-like, as the framework makes them). Four fifths on live tasks, then the
-- deleted tasks' events, then the projects' events, and the last 1,000 by one busy actor alone.
INSERT INTO events (id, type, resource, resource_id, actor_id, occurred_at)
SELECT (lpad(to_hex((extract(epoch FROM now()) * 1000)::bigint - {EVENTS} + g), 12, '0') || '7000'
        || '8' || lpad(to_hex(g), 15, '0'))::uuid,
       CASE WHEN g >= {EVENTS - 1_000} THEN 'tasks.deleted' WHEN g % 3 = 0 THEN 'tasks.created'
            ELSE 'tasks.updated' END,
       CASE WHEN g >= {EVENTS - 21_000} AND g < {EVENTS - 1_000} THEN 'projects' ELSE 'tasks' END,
       (CASE WHEN g < 240000 THEN md5('task' || g % {TASKS})
             WHEN g >= {EVENTS - 21_000} AND g < {EVENTS - 1_000} THEN md5('project' || g % {PROJECTS})
             ELSE md5('gone' || g % {GONE}) END)::uuid::text,
       CASE WHEN g >= {EVENTS - 1_000} THEN md5('busy')::uuid ELSE md5('user' || g % {OTHERS})::uuid END,
       now() - make_interval(secs => {EVENTS} - g)
FROM generate_series(0, {EVENTS - 1}) g;
"""


class Explaining(Database):
    """The pool, recording the plan (EXPLAIN ANALYZE, as JSON) of each statement it is asked to fetch."""

    plans: list[dict[str, Any]]

    async def fetch(self, sql: str, *args: Any) -> Any:
        plan = await self.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, *args)
        self.plans.append(orjson.loads(plan)[0]["Plan"])
        return await super().fetch(sql, *args)


@dataclass
class Crowd:
    app: Rampart
    log: EventLog
    db: Explaining
    member: Actor  # a viewer of one project (30 tasks, 10 deleted ones)
    newcomer: Actor  # sees nothing at all
    admin: Actor
    project: uuid.UUID


@pytest.fixture(scope="module")
async def crowd(own_database_url: str) -> AsyncIterator[Crowd]:
    app = create_app(make_settings(own_database_url, cache="off"))
    db = Explaining(own_database_url)
    db.plans = []
    member, newcomer, admin = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with db.connection() as conn:
        await conn.execute("SET synchronous_commit = off")
        await conn.execute(SEED)
        await conn.executemany(
            "INSERT INTO users (id, email, name, role, disabled) VALUES ($1, $2, $2, 'user', false)",
            [(user, f"{user}@example.test") for user in (member, newcomer, admin)],
        )
        project = await conn.fetchval("SELECT md5('project' || 0)::uuid")
        await conn.execute(
            "INSERT INTO project_members (id, project_id, user_id, role) VALUES ($1, $2, $3, 'viewer')",
            uuid.uuid4(),
            project,
            member,
        )
        await conn.execute("ANALYZE")
    roles = app.services.roles

    def actor(user: uuid.UUID, role: str) -> Actor:
        return Actor(user, role, uuid.uuid4(), roles.permissions(role))

    yield Crowd(
        app,
        EventLog(db=db, managers=app.services.managers),
        db,
        actor(member, "user"),
        actor(newcomer, "user"),
        actor(admin, "admin"),
        project,
    )
    await db.close()
    await app.aclose()


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


def reads(plan: dict[str, Any]) -> tuple[dict[str, int], set[str]]:
    """Rows each table's scans produced or threw away, over all their loops; and the tables scanned whole."""
    counts: dict[str, int] = {}
    whole: set[str] = set()
    for node in _nodes(plan):
        table = node.get("Relation Name")
        if table is None:
            continue
        per_loop = (
            node.get("Actual Rows", 0)
            + node.get("Rows Removed by Filter", 0)
            + node.get("Rows Removed by Index Recheck", 0)
        )
        counts[table] = counts.get(table, 0) + int(per_loop * node.get("Actual Loops", 0))
        if node["Node Type"] == "Seq Scan" and node.get("Actual Loops", 0):
            whole.add(table)
    return counts, whole


async def page(
    crowd: Crowd, actor: Actor, **params: Any
) -> tuple[list[dict[str, Any]], bool, dict[str, Any]]:
    crowd.db.plans.clear()
    events, more = await crowd.log.page(actor, LogQuery(**params))
    assert len(crowd.db.plans) == 1
    return events, more, crowd.db.plans[0]


def assert_by_index(plan: dict[str, Any]) -> None:
    counts, whole = reads(plan)
    assert not whole & set(BIG_TABLES), f"scanned whole: {whole}"
    assert counts.get("events", 0) <= READ_BOUND, counts
    for table in BIG_TABLES[1:]:
        assert counts.get(table, 0) <= READ_BOUND, counts


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"limit": 100},
        {"resource": "tasks"},
        {"resource": "projects"},
        {"type": "tasks.deleted"},
        {"actor_id": "busy"},
        {"resource_id": "task"},
    ],
    ids=["first-page", "limit-100", "tasks", "projects", "type", "actor", "one-object"],
)
async def test_a_page_of_someone_who_sees_little_is_read_by_index(
    crowd: Crowd, params: dict[str, Any]
) -> None:
    if params.get("actor_id") == "busy":
        params["actor_id"] = await crowd.db.fetchval("SELECT md5('busy')::uuid")
    if params.get("resource_id") == "task":
        params["resource_id"] = await crowd.db.fetchval("SELECT md5('task' || 5)::uuid::text")
    for who in (crowd.newcomer, crowd.member):
        events, _, plan = await page(crowd, who, **params)
        assert_by_index(plan)
        if who is crowd.newcomer:
            assert events == []


async def test_a_member_pages_through_exactly_what_they_may_see(crowd: Crowd) -> None:
    expected = [
        str(r["id"])
        for r in await crowd.db.fetch(
            "SELECT e.id FROM events e WHERE (e.resource = 'tasks' AND e.resource_id IN ("
            " SELECT id::text FROM tasks WHERE project_id = $1"
            " UNION ALL SELECT id::text FROM tasks_deleted WHERE project_id = $1))"
            " OR (e.resource = 'projects' AND e.resource_id = $1::text) ORDER BY e.id",
            crowd.project,
        )
    ]
    assert len(expected) > 100  # several pages, spread over the whole log
    seen: list[str] = []
    after = None
    for _ in range(10):
        events, more, plan = await page(crowd, crowd.member, after=after, limit=50)
        assert_by_index(plan)
        seen += [e["id"] for e in events]
        if not more:
            break
        after = uuid.UUID(events[-1]["id"])
    assert seen == expected


async def test_a_page_just_behind_the_newest_events_judges_only_those(crowd: Crowd) -> None:
    """What the live stream and pollers read: the few events after a recent cursor, judged one by one."""
    recent = await crowd.db.fetchval("SELECT id FROM events ORDER BY id DESC OFFSET 500 LIMIT 1")
    events, more, plan = await page(crowd, crowd.newcomer, after=recent)
    assert (events, more) == ([], False)
    counts, whole = reads(plan)
    assert not whole & set(BIG_TABLES)
    assert counts["events"] <= 2 * 500 + 10, counts


@pytest.mark.parametrize(
    "params",
    [
        {"resource": "projects"},
        {"type": "tasks.deleted"},
        {"actor_id": "busy"},
        {"resource_id": "gone"},
        {"after": "late"},
        {"resource": "tasks", "actor_id": "busy"},
    ],
    ids=["resource", "type", "actor", "object", "after", "resource-and-actor"],
)
async def test_an_admins_filtered_page_is_read_by_index(crowd: Crowd, params: dict[str, Any]) -> None:
    # Each filter matches only events at the end of the log: walking it in id order and filtering would
    # read nearly all of it before the first match.
    values = {
        "busy": "SELECT md5('busy')::uuid",
        "gone": f"SELECT md5('gone' || {GONE - 1})::uuid::text",
        "late": "SELECT id FROM events ORDER BY id DESC OFFSET 30 LIMIT 1",
    }
    for key, value in list(params.items()):
        if value in values:
            params[key] = await crowd.db.fetchval(values[value])
    events, _, plan = await page(crowd, crowd.admin, **params)
    assert events
    counts, whole = reads(plan)
    assert "events" not in whole
    assert counts["events"] <= 200, counts
