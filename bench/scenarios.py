"""Run the wrk scenarios against one running server: preflight checks, warm-up, measurement,
then housekeeping so the next run starts from the seeded state."""

from __future__ import annotations

import asyncio
import secrets
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx

import cpu
import database
from seed import SeedData
from wrk import SCENARIOS, WrkResult, run_wrk

LIST_PATH = "/api/v1/tasks?status=todo&priority[gte]=2&sort=-priority&limit=20"
OTHER_WORK_LIMIT = 0.15  # cores; above this a run is marked as disturbed ("~")


class PreflightError(RuntimeError):
    """The server does not answer a scenario's request as the contract says."""


def _expect(resp: httpx.Response, status: int, what: str) -> Any:
    if resp.status_code != status:
        raise PreflightError(f"{what}: expected {status}, got {resp.status_code}: {resp.text[:300]}")
    return resp.json()


def preflight(base_url: str, data: SeedData, scenarios: list[str], run_id: str) -> None:
    """One request per scenario, checked for the right answer, so that a misconfigured server
    fails here instead of producing fast error responses that look like throughput."""
    users = [u for u in data.users if u.task_ids]
    if len(users) < 2:
        raise PreflightError("need at least two seeded users with tasks")
    me, other = users[0], users[1]
    auth = {"Authorization": f"Bearer {me.token}"}
    with httpx.Client(base_url=base_url, timeout=10.0) as client:
        task_id = me.task_ids[0]
        if "get" in scenarios:
            body = _expect(client.get(f"/api/v1/tasks/{task_id}", headers=auth), 200, "GET task")
            if body["data"]["id"] != task_id:
                raise PreflightError("GET task returned another task")
            # Visibility is part of the work measured: another user's task must be a 404.
            _expect(
                client.get(f"/api/v1/tasks/{other.task_ids[0]}", headers=auth), 404, "GET another user's task"
            )
        if "list" in scenarios:
            items = _expect(client.get(LIST_PATH, headers=auth), 200, "filtered list")["data"]
            priorities = [t["priority"] for t in items]
            if not items or len(items) > 20:
                raise PreflightError(f"filtered list returned {len(items)} items (expected 1-20)")
            if any(t["status"] != "todo" or t["priority"] < 2 for t in items):
                raise PreflightError("filtered list returned items outside the filter")
            if any(t["owner_id"] != me.user_id for t in items):
                raise PreflightError("filtered list returned another user's tasks")
            if priorities != sorted(priorities, reverse=True):
                raise PreflightError("filtered list is not sorted by -priority")
        if "patch" in scenarios:
            body = _expect(
                client.patch(f"/api/v1/tasks/{task_id}", json={"priority": 3}, headers=auth),
                200,
                "PATCH task",
            )
            if body["data"]["priority"] != 3:
                raise PreflightError("PATCH did not change the priority")
        if "create" in scenarios:
            new = {
                "project_id": me.project_id,
                "title": f"{database.CREATED_TITLE_PREFIX}{run_id} preflight",
                "status": "done",
                "priority": 1,
            }
            body = _expect(client.post("/api/v1/tasks", json=new, headers=auth), 201, "POST task")
            if body["data"]["project_id"] != me.project_id:
                raise PreflightError("POST task returned another project")


async def _count_created(database_url: str, run_id: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        n: int = await conn.fetchval(
            "SELECT count(*) FROM tasks WHERE title LIKE $1", f"{database.CREATED_TITLE_PREFIX}{run_id} %"
        )
        return n
    finally:
        await conn.close()


def run_scenarios(
    base_url: str,
    data: SeedData,
    scenarios: list[str],
    *,
    duration: float,
    warmup: float,
    database_url: str | None,
    threads: int = 2,
    connections: int = 64,
    server_pid: int | None = None,
    log: Callable[[str], None] = print,
    nodes: Sequence[int] = (),
) -> dict[str, WrkResult]:
    """Preflight, then for each scenario a warm-up (discarded) and a measured wrk run.

    Each measured run also records how many cores other work used meanwhile (see cpu.py). `nodes`: the
    ports of private PostgreSQL servers that serve only this benchmark (a Citus cluster's nodes): all
    their processes are the system under test, and their CPU per request is recorded per port.
    """
    run_id = f"{data.label}-{secrets.token_hex(3)}"
    port = urlsplit(base_url).port
    databases = {urlsplit(database_url).path.lstrip("/")} if database_url else set()
    pg_port = (urlsplit(database_url).port or 5432) if database_url else 5432
    results: dict[str, WrkResult] = {}
    preflight(base_url, data, scenarios, run_id)
    with tempfile.TemporaryDirectory(prefix="rampart-wrk-") as tmp:
        data_file = Path(tmp) / "users.txt"
        data.write_wrk_data(data_file)
        for name in scenarios:
            scenario = SCENARIOS[name]
            warm_ok = 0
            if warmup > 0:
                warm = run_wrk(
                    base_url,
                    scenario,
                    data_file,
                    run_id,
                    duration=warmup,
                    threads=threads,
                    connections=connections,
                )
                warm_ok = warm.ok
                if warm.flagged:
                    log(f"  ! warm-up of {name}: {warm.flag_reason()}")
            before, stolen = cpu.snapshot(), cpu.steal_seconds()
            result = run_wrk(
                base_url,
                scenario,
                data_file,
                run_id,
                duration=duration,
                threads=threads,
                connections=connections,
            )
            after = cpu.snapshot()
            ours = cpu.server_pids(after, server_pid, port)
            per_node = {node: cpu.node_pids(after, node) for node in nodes}
            under_test = ours.union(*per_node.values())
            cores, top = cpu.foreign_cores(before, after, result.duration_s, under_test, databases, pg_port)
            result.extra["other_work_cores"] = round(cores, 3)
            # A virtual machine's CPUs may be taken by other guests: that slows a run like other work here.
            steal = (cpu.steal_seconds() - stolen) / max(result.duration_s, 1e-9)
            result.extra["steal_cores"] = round(steal, 3)
            # CPU per answered request, of the server and of its database backends: unlike the rate,
            # it hardly moves when other work shares the cores, so it shows what a change saved.
            answered = max(result.ok, 1)
            backends = cpu.database_backends(after, databases, pg_port)
            server_us = cpu.cpu_seconds(before, after, ours) / answered * 1e6
            db_us = cpu.cpu_seconds(before, after, backends) / answered * 1e6
            result.extra["server_cpu_us_per_request"] = round(server_us, 1)
            result.extra["database_cpu_us_per_request"] = round(db_us, 1)
            if per_node:
                result.extra["node_cpu_us_per_request"] = {
                    str(node): round(cpu.cpu_seconds(before, after, pids) / answered * 1e6, 1)
                    for node, pids in per_node.items()
                }
            if cores > OTHER_WORK_LIMIT:
                result.warnings.append(f"other work used {cores:.2f} cores meanwhile: {', '.join(top)}")
            if steal > OTHER_WORK_LIMIT:
                result.warnings.append(
                    f"the hypervisor gave {steal:.2f} cores to other guests meanwhile (steal)"
                )
            if name == "create" and database_url:
                # Cross-check: every 201 the client saw is a row in the database.
                # wrk drops the requests in flight when it stops (up to one per connection, at
                # the end of the warm-up and of the run): the server may still commit those.
                in_db = asyncio.run(_count_created(database_url, run_id))
                seen = warm_ok + result.ok + 1  # + the preflight task
                result.extra["rows_in_db"] = in_db
                result.extra["rows_acknowledged"] = seen
                if not seen <= in_db <= seen + 2 * connections:
                    result.problems.append(f"{in_db} created rows in the database for {seen} 201 responses")
            results[name] = result
            flag = f"  ! {result.flag_reason()}" if result.flagged else ""
            flag += "".join(f"  ~ {w}" for w in result.warnings)
            log(
                f"  {name:<7} {result.ok_rps:>9,.0f} {scenario.unit:<8} p50 {result.latency_ms['p50']} ms"
                f"  p99 {result.latency_ms['p99']} ms"
                f"  cpu/request: server {server_us:.0f} us, database {db_us:.0f} us{flag}"
            )
    if database_url:
        for note in asyncio.run(database.housekeeping(database_url, run_id)):
            if "skipped" in note or "could not" in note:
                log(f"  note: {note}")
    return results
