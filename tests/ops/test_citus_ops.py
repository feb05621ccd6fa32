"""Operations on a Citus cluster, as the runbook of docs/guide/database-scaling.md does them: moving a
single-node Rampart database with its data onto a cluster, and adding a worker and rebalancing the shards
while `rampart serve --workers 2` serves a load, with no failed request and every acknowledged write kept.

Each test starts its own cluster (tests/pgservers.py) and stops it afterwards.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

import rampart.resources.writes
from rampart.app import Rampart, create_app
from rampart.clitasks import migrate_all
from rampart.lib.ids import shard_key_of
from tests import pgservers
from tests.conftest import User, fresh_database, make_settings, new_user
from tests.db.test_citus import rows_per_worker
from tests.reliability.load import Ledger, Load, new_project, reconcile, until
from tests.scale.servers import serve


@pytest.fixture
def cluster() -> Iterator[pgservers.CitusCluster]:
    if (reason := pgservers.citus_missing()) is not None:
        pytest.skip(reason)
    with pgservers.citus_cluster(workers=2) as made:
        yield made


@asynccontextmanager
async def running(url: str) -> AsyncIterator[tuple[Rampart, httpx.AsyncClient]]:
    app = create_app(make_settings(url))
    await app.startup()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield app, http
    finally:
        await app.aclose()


async def post(http: httpx.AsyncClient, user: User, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = await http.post(path, json=body, headers=user.headers)
    assert r.status_code == 201, r.text
    row: dict[str, Any] = r.json()["data"]
    return row


async def everything(http: httpx.AsyncClient, user: User, path: str) -> list[dict[str, Any]]:
    """Every page of a list (or of the audit log), in order."""
    items: list[dict[str, Any]] = []
    params: dict[str, str] = {"limit": "100"}
    for _ in range(100):
        r = await http.get(path, params=params, headers=user.headers)
        assert r.status_code == 200, r.text
        body = r.json()
        items += body["data"]
        following = body["meta"].get("next_cursor")
        if following is None:
            return items
        params = {"limit": "100", "after" if path.endswith("/events") else "cursor": following}
    raise AssertionError(f"{path}: more than 100 pages")


def _dump_and_restore(source: str, target: str, workdir: Path) -> None:
    """pg_dump of the single node, pg_restore into the coordinator (the runbook's step 3)."""
    bin_dir = pgservers.postgres_bin_dir()
    assert bin_dir is not None
    dump = workdir / "rampart.dump"
    for command in (
        [bin_dir / "pg_dump", "--format=custom", "--no-owner", f"--file={dump}", source],
        [bin_dir / "pg_restore", "--no-owner", "--exit-on-error", f"--dbname={target}", dump],
    ):
        done = subprocess.run(
            [str(c) for c in command], capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, f"{command[0]}: {done.stderr}"


async def test_a_single_node_database_moves_onto_citus_with_its_data(
    cluster: pgservers.CitusCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database that served on one PostgreSQL server, with rows made before ids carried their shard key
    (an older Rampart): dumped, restored into the coordinator, `rampart migrate`: every row and event is
    there, found by id, listed, changed and deleted as before, and the audit log shows what it showed."""
    made = fresh_database()  # entered and left in a thread: it runs event loops of its own
    single = await asyncio.to_thread(made.__enter__)
    try:
        async with running(single) as (app, http):
            owner, member, stranger = await new_user(app), await new_user(app), await new_user(app)
            # An older Rampart gave a task a new random id: no shard key in it.
            made_by_old = rampart.resources.writes.new_id
            monkeypatch.setattr(rampart.resources.writes, "new_id", lambda shard_key=None: made_by_old())
            old_project = await post(http, owner, "/api/v1/projects", {"name": "Before"})
            await post(
                http,
                owner,
                f"/api/v1/projects/{old_project['id']}/members",
                {"user_id": member.id, "role": "viewer"},
            )
            old_tasks = [
                await post(
                    http, owner, "/api/v1/tasks", {"project_id": old_project["id"], "title": f"old {n}"}
                )
                for n in range(6)
            ]
            assert any(
                shard_key_of(uuid.UUID(t["id"])) != shard_key_of(uuid.UUID(old_project["id"]))
                for t in old_tasks
            )
            monkeypatch.undo()
            new_project_ = await post(http, owner, "/api/v1/projects", {"name": "Lately"})
            new_tasks = [
                await post(
                    http, owner, "/api/v1/tasks", {"project_id": new_project_["id"], "title": f"new {n}"}
                )
                for n in range(4)
            ]
            r = await http.patch(
                f"/api/v1/tasks/{old_tasks[0]['id']}", json={"status": "done"}, headers=owner.headers
            )
            assert r.status_code == 200, r.text
            assert (
                await http.delete(f"/api/v1/tasks/{old_tasks[1]['id']}", headers=owner.headers)
            ).status_code == 204
            others = [
                await post(http, stranger, "/api/v1/projects", {"name": f"Theirs {n}"}) for n in range(8)
            ]
            for project in others:
                await post(http, stranger, "/api/v1/tasks", {"project_id": project["id"], "title": "theirs"})
            before = {
                (who.id, path): await everything(http, who, path)
                for who in (owner, member, stranger)
                for path in ("/api/v1/tasks", "/api/v1/projects", "/api/v1/events")
            }
        database = f"moved_{uuid.uuid4().hex[:8]}"
        target = await asyncio.to_thread(cluster.create_database, database)
        await asyncio.to_thread(_dump_and_restore, single, target, tmp_path)
    finally:
        await asyncio.to_thread(made.__exit__, None, None, None)

    steps = await asyncio.to_thread(migrate_all, make_settings(target))
    assert "tasks: distributed by shard_key with events" in steps
    assert any("ids made before the move listed in rampart_shard_keys" in s for s in steps), steps

    async with running(target) as (app, http):
        assert app.services.db.citus
        assert app.services.db.shard_keys.newest is not None  # the old ids are looked up
        # Everything as it was, through the API.
        for (who_id, path), listed in before.items():
            who = next(u for u in (owner, member, stranger) if u.id == who_id)
            assert await everything(http, who, path) == listed, path
        for task in [*old_tasks[2:], *new_tasks]:
            seen_by_member = 200 if task in old_tasks else 404  # a member of the old project only
            for who, status in ((owner, 200), (member, seen_by_member), (stranger, 404)):
                r = await http.get(f"/api/v1/tasks/{task['id']}", headers=who.headers)
                assert r.status_code == status, (task["title"], r.text)
        # An old task changes and goes as any other, and its events are with it.
        old = old_tasks[2]
        r = await http.patch(f"/api/v1/tasks/{old['id']}", json={"priority": 4}, headers=owner.headers)
        assert r.status_code == 200, r.text
        assert (await http.delete(f"/api/v1/tasks/{old['id']}", headers=owner.headers)).status_code == 204
        assert (await http.get(f"/api/v1/tasks/{old['id']}", headers=owner.headers)).status_code == 404
        history = [
            e["type"]
            for e in await everything(http, member, "/api/v1/events")
            if e["resource_id"] == old["id"]
        ]
        assert history == ["tasks.created", "tasks.updated", "tasks.deleted"]
        # A new task of the old project gets an id with the project's shard key.
        made = await post(http, owner, "/api/v1/tasks", {"project_id": old_project["id"], "title": "after"})
        assert shard_key_of(uuid.UUID(made["id"])) == shard_key_of(uuid.UUID(old_project["id"]))
    counts = await rows_per_worker(cluster, "tasks", database)
    assert len(counts) == 2
    assert all(n > 0 for n in counts.values()), counts


async def test_a_worker_added_and_the_shards_rebalanced_while_the_api_serves(
    cluster: pgservers.CitusCluster, tmp_path: Path
) -> None:
    """`rampart serve --workers 2` under a load of creates, patches and reads over several projects; a
    third worker joins and the rebalancer moves shards to it (online, by logical replication) meanwhile:
    no request fails, and every acknowledged write is stored with its one event."""
    url = cluster.url
    await asyncio.to_thread(migrate_all, make_settings(url))
    async with running(url) as (app, _):
        user = await new_user(app)
    with serve(url, tmp_path, workers=2, name="citus", RAMPART_RATE_LIMIT="1000000/minute") as server:
        projects = [await new_project(server.url, user.token, f"load {n}") for n in range(8)]
        ledger = Ledger(marker=f"rebalance-{uuid.uuid4().hex[:8]}")
        loads = [
            Load(
                server.url, user.token, project, ledger, writers=1, readers=1, max_requests=10**6, pause=0.02
            )
            for project in projects
        ]
        runs = [asyncio.create_task(load.run()) for load in loads]
        try:
            await until(lambda: len(ledger.acked) >= 40, 30, "writes before the new worker")
            added = await asyncio.to_thread(cluster.add_worker)
            conn = await asyncpg.connect(url)
            try:
                started = time.monotonic()
                await conn.execute("SELECT rebalance_table_shards(shard_transfer_mode => 'force_logical')")
                moved_in = time.monotonic() - started
                shards = await conn.fetchval(
                    "SELECT count(*) FROM citus_shards"
                    " WHERE nodeport = $1 AND table_name = 'tasks'::regclass",
                    added.port,
                )
            finally:
                await conn.close()
            during = len(ledger.acked)
            await until(lambda: len(ledger.acked) >= during + 40, 30, "writes after the rebalance")
        finally:
            for load in loads:
                load.stop.set()
            await asyncio.gather(*runs)
        assert shards > 0  # the new worker holds tasks' shards now
        assert ledger.unexpected == [], ledger.unexpected
        failed = {k: n for k, n in ledger.outcomes.items() if not k.endswith((" 200", " 201"))}
        assert failed == {}, failed  # no request failed, not even with a 503
        result = await reconcile(ledger, url, refusals_store_nothing=True)
        problems = result.problems()
        if problems:  # where the lost rows are, if anywhere: an old placement not dropped yet, say
            problems["found_on_workers"] = await _find_on_workers(cluster, [*result.missing, *result.wrong])
        assert problems == {}, problems
        assert result.stored_rows == len(ledger.acked) > 80
    counts = await rows_per_worker(cluster, "tasks")
    assert counts.get(added.port, 0) > 0, counts
    print(f"rebalance: {moved_in:.1f} s, {ledger.count('create')} creates, {ledger.count('patch')} patches")


async def _find_on_workers(cluster: pgservers.CitusCluster, lines: list[str]) -> list[str]:
    """Each task id of `lines`, looked for in every tasks shard of every worker (placements included that
    Citus has moved away from and not dropped yet)."""
    ids = [line.split()[0].rstrip(":") for line in lines]
    found = []
    for node in cluster.workers:
        conn = await asyncpg.connect(node.url(cluster.database))
        try:
            await conn.execute("SET citus.show_shards_for_app_name_prefixes TO '*'")
            shards = await conn.fetch("SELECT relname FROM pg_class WHERE relname ~ '^tasks_[0-9]+$'")
            for (shard,) in shards:
                rows = await conn.fetch(
                    f'SELECT id::text, version FROM "{shard}" WHERE id = ANY($1::uuid[])', ids
                )
                found += [f"{r['id']} v{r['version']} in {shard} on {node.port}" for r in rows]
        finally:
            await conn.close()
    return found
