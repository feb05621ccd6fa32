"""The audit log's cost when others wrote a lot (issue 13, finding 3; decision 0016).

Creates a scratch database on the test PostgreSQL (RAMPART_TEST_ADMIN_URL), migrates it with
`rampart migrate`, seeds what tests/events/test_log_cost.py seeds (300,000 events of 1,000 other users,
their 60,000 tasks in 2,000 projects, 20,000 of their deleted tasks), adds three users (a newcomer who
sees nothing, a viewer of one project, an admin), and starts one `rampart serve` worker on it. Then,
over HTTP, one request at a time, it times pages of `GET /api/v1/events` (median and 95th percentile of
`--rounds` requests after a warm-up), and the viewer's first page alone and while 16 concurrent clients
ask for the newcomer's first page over and over (what one user can do to the others).

Run: `.venv/bin/python bench/audit_log.py [--rounds 40]`. The script itself uses only the HTTP API, the
CLI and SQL, so an older version can be measured the same way: `PYTHONPATH=<its checkout>/src` (the
server and the CLI then run that version; its schema has no `tasks_deleted`, whose seed is skipped).
Recorded in docs/decisions/0016-audit-log-by-index.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import httpx  # noqa: E402
from tests.conftest import _admin, _db_url, make_settings, new_user  # noqa: E402
from tests.events.test_log_cost import SEED  # noqa: E402
from tests.scale.servers import serve  # noqa: E402
from tests.test_cli import cli_env, rampart  # noqa: E402

from rampart.app import create_app  # noqa: E402

ATTACKERS = 16


async def seed(url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SET synchronous_commit = off")
        statements = SEED.split(";")
        if await conn.fetchval("SELECT to_regclass('tasks_deleted')") is None:  # an older version
            statements = [s for s in statements if "INSERT INTO tasks_deleted" not in s]
        for statement in statements:
            if statement.strip():
                await conn.execute(statement)
        project = await conn.fetchval("SELECT md5('project' || 0)::uuid")
        busy = await conn.fetchval("SELECT md5('busy')::uuid")
    finally:
        await conn.close()
    app = create_app(make_settings(url, cache="off"))
    try:
        newcomer, member, admin = (
            await new_user(app),
            await new_user(app),
            await new_user(app, role="admin"),
        )
    finally:
        await app.aclose()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "INSERT INTO project_members (id, project_id, user_id, role) VALUES ($1, $2, $3, 'viewer')",
            uuid.uuid4(),
            project,
            uuid.UUID(member.id),
        )
        await conn.execute("ANALYZE")
        recent = await conn.fetchval("SELECT id FROM events ORDER BY id DESC OFFSET 500 LIMIT 1")
    finally:
        await conn.close()
    return {"newcomer": newcomer, "member": member, "admin": admin, "busy": busy, "recent": recent}


async def timed(
    http: httpx.AsyncClient, path: str, headers: dict[str, str], rounds: int, failed: list[int] | None = None
) -> list[float]:
    """Milliseconds per request; an answer other than 200 fails the run, or is listed in `failed`."""
    times = []
    for turn in range(3 + rounds):
        started = time.perf_counter()
        r = await http.get(path, headers=headers)
        if turn >= 3:
            times.append((time.perf_counter() - started) * 1000)
        if r.status_code != 200:
            assert failed is not None, r.text
            failed.append(r.status_code)
    return times


def summary(times: list[float]) -> str:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return f"median {statistics.median(ordered):7.1f} ms   p95 {p95:7.1f} ms"


async def measure(base: str, people: dict[str, Any], rounds: int) -> None:
    newcomer, member, admin = people["newcomer"], people["member"], people["admin"]
    cases = [
        ("newcomer, first page", "/api/v1/events", newcomer),
        ("newcomer, ?resource=tasks", "/api/v1/events?resource=tasks", newcomer),
        ("newcomer, ?limit=100", "/api/v1/events?limit=100", newcomer),
        ("viewer of one project, first page", "/api/v1/events", member),
        ("viewer, ?limit=100", "/api/v1/events?limit=100", member),
        ("newcomer, 500 events behind the newest", f"/api/v1/events?after={people['recent']}", newcomer),
        ("admin, ?resource=projects", "/api/v1/events?resource=projects", admin),
        ("admin, ?type=tasks.deleted", "/api/v1/events?type=tasks.deleted", admin),
        ("admin, ?actor_id=<late actor>", f"/api/v1/events?actor_id={people['busy']}", admin),
    ]
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        for name, path, who in cases:
            print(f"{name:42} {summary(await timed(http, path, who.headers, rounds))}", flush=True)
        alone = await timed(http, "/api/v1/events", member.headers, rounds)
        stop = asyncio.Event()
        count = 0

        async def attack() -> None:
            nonlocal count
            async with httpx.AsyncClient(base_url=base, timeout=60) as own:
                while not stop.is_set():
                    r = await own.get("/api/v1/events", headers=newcomer.headers)
                    count += r.status_code == 200

        attackers = [asyncio.create_task(attack()) for _ in range(ATTACKERS)]
        await asyncio.sleep(1.0)
        started = time.perf_counter()
        failed: list[int] = []
        loaded = await timed(http, "/api/v1/events", member.headers, rounds, failed)
        elapsed = time.perf_counter() - started
        stop.set()
        await asyncio.gather(*attackers)
    print(f"{'viewer alone':42} {summary(alone)}")
    print(f"{f'viewer beside {ATTACKERS} clients of the newcomer':42} {summary(loaded)}")
    if failed:
        print(
            f"{'  (viewer answers other than 200)':42} {len(failed)} of {rounds + 3}: {sorted(set(failed))}"
        )
    print(f"{'  (the newcomer got, meanwhile)':42} {count / (elapsed + 1.0):7.0f} pages/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    name = f"rampart_auditbench_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    url = _db_url(name)
    try:
        with tempfile.TemporaryDirectory() as workdir:
            done = rampart("migrate", env=cli_env(url), cwd=Path(workdir))
            assert done.returncode == 0, done.stderr
            people = asyncio.run(seed(url))
            with serve(url, Path(workdir), RAMPART_RATE_LIMIT="1000000/minute") as server:
                asyncio.run(measure(server.url, people, args.rounds))
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
