"""Rampart on one PostgreSQL server against Rampart on a Citus cluster (a coordinator and 2 workers), on
this machine, back to back.

    .venv/bin/python bench/citus_compare.py [--rounds 2] [--duration 10] [--users 100]
        [--tasks-per-user 200] [--quick] [--no-markdown]

Starts a private PostgreSQL server (the single node) and a private Citus cluster, every node with the same
settings (tests/pgservers.py: fsync off, synchronous commit, 32 MB shared buffers; the cluster with 8
shards per table), migrates each with `rampart migrate` (which places the cluster's tables) and seeds each
through the API (bench/seed.py: users, a project each, their tasks). Then rounds of the four wrk
scenarios (bench/scenarios.py: GET by id, filtered list, PATCH, create; the same checks on every
request) against `rampart serve --workers 2`, alternating single node and cluster, so both see the same
machine; then the two reads once more with the row cache off (`RAMPART_CACHE=off`), to see what the
database answers. The CPU each request cost is recorded per process group: Rampart's workers, the
coordinator, the workers (the projection in BENCHMARKS.md is made from them).

Then, on the cluster, the statements each scenario's request runs are captured from the manager and
EXPLAINed: which go to one shard (`Task Count: 1`) and which to all.

Writes bench/results/citus-<timestamp>.json; bench/markdown.py turns the newest one into BENCHMARKS.md's
Citus section (unless --no-markdown).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import secrets
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _venv  # noqa: F401  (must come first: re-runs under .venv when needed)
import database
import report
import seed
import servers
from run import SEED_TIMEOUT_S, add_common_args
from scenarios import LIST_PATH, run_scenarios
from wrk import WrkResult

sys.path.insert(0, str(servers.REPO_ROOT))

import asyncpg
import httpx
from tests import pgservers

RESULTS_DIR = servers.REPO_ROOT / "bench" / "results"
DATABASE = "rampart_bench"
SIDES = ("single", "citus")
_STATEMENT = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|WITH)\b", re.IGNORECASE)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (default 2)")
    parser.add_argument("--quick", action="store_true", help="1 round x 5 s, 20 users x 50 tasks: a check")
    parser.add_argument("--rampart-bin", type=Path, default=servers.REPO_ROOT / ".venv" / "bin" / "rampart")
    parser.add_argument("--workers", type=int, default=2, help="rampart serve --workers (default 2)")
    parser.add_argument("--pool", type=int, default=10, help="database pool per worker (default 10)")
    parser.add_argument("--no-markdown", action="store_true", help="do not regenerate BENCHMARKS.md")
    parser.add_argument("--no-uncached", action="store_true", help="skip the reads without the row cache")
    add_common_args(parser)
    args = parser.parse_args(argv)
    args.command = shlex.join(["bench/citus_compare.py", *(sys.argv[1:] if argv is None else argv)])
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 5.0, 1.0
        args.users, args.tasks_per_user = 20, 50
    return args


class Side:
    def __init__(self, name: str, url: str, nodes: list[int], impl: servers.Rampart, log_dir: Path) -> None:
        self.name = name
        self.url = url
        self.nodes = nodes  # the ports of its PostgreSQL servers: the coordinator (or the node) first
        self.impl = impl
        self.log_dir = log_dir
        self.port = servers.free_port()
        self.data: seed.SeedData | None = None
        self.rounds: list[dict[str, WrkResult]] = []

    def server(self, tag: str) -> servers.Server:
        return self.impl.server(self.url, self.port, self.log_dir / f"{self.name}-{tag}.log")


@contextlib.contextmanager
def databases() -> Iterator[tuple[str, list[int], str, list[int]]]:
    """The single node's URL and port, the coordinator's URL and the cluster's ports (coordinator first)."""
    with pgservers.single_node(DATABASE) as node, pgservers.citus_cluster(workers=2, database=DATABASE) as c:
        yield node.url(DATABASE), [node.port], c.url, [c.coordinator.port, *(w.port for w in c.workers)]


def prepare(side: Side, args: argparse.Namespace) -> None:
    token = side.impl.setup(side.url)  # rampart migrate (placing the cluster's tables), an admin, a token
    server = side.server("seed")
    try:
        server.start()
        print(f"[{side.name}] seeding {args.users} users x {args.tasks_per_user} tasks ...", flush=True)

        async def _seed() -> seed.SeedData:
            async with asyncio.timeout(SEED_TIMEOUT_S):
                return await seed.seed(
                    server.base_url,
                    token,
                    users=args.users,
                    tasks_per_user=args.tasks_per_user,
                    concurrency=args.seed_concurrency,
                    label=side.name,
                )

        side.data = asyncio.run(_seed())
    finally:
        server.stop()
    d = side.data
    print(f"[{side.name}] seeded {d.task_count} tasks in {d.seconds:.1f} s", flush=True)
    asyncio.run(database.analyze(side.url))
    asyncio.run(database.housekeeping(side.url))


def run_round(
    side: Side, round_no: int, args: argparse.Namespace, *, scenarios: list[str] | None = None
) -> None:
    assert side.data is not None
    server = side.server(f"round{round_no}")
    what = f"round {round_no}" if round_no else "reads without the row cache"
    print(f"[{side.name}] {what} (load average {report.loadavg():.2f})", flush=True)
    try:
        server.start()
        results = run_scenarios(
            server.base_url,
            side.data,
            scenarios or args.scenarios,
            duration=args.duration,
            warmup=args.warmup,
            database_url=side.url,
            threads=args.threads,
            connections=args.connections,
            server_pid=server.proc.pid if server.proc else None,
            nodes=side.nodes,
        )
    finally:
        server.stop()
    side.rounds.append(results)


# ---- the statements of each scenario, EXPLAINed on the cluster ------------------------------------------


async def explain_scenarios(url: str, secret: str, data: seed.SeedData) -> dict[str, list[dict[str, Any]]]:
    """Each scenario's request sent once to an app in this process (row cache off, so a GET reads the
    database), every statement it runs captured, then EXPLAINed (not run again) on the coordinator."""
    from tests.conftest import make_settings

    from rampart.app import create_app

    user = next(u for u in data.users if u.task_ids)
    task = user.task_ids[-1]
    requests = {
        "get": ("GET", f"/api/v1/tasks/{task}", None),
        "list": ("GET", LIST_PATH, None),
        "patch": ("PATCH", f"/api/v1/tasks/{task}", {"priority": 3}),
        "create": ("POST", "/api/v1/tasks", {"project_id": user.project_id, "title": "explained"}),
    }
    # No background work (the dispatcher's claims) among the statements captured.
    settings = make_settings(url, jwt_secret=secret, cache="off", events_dispatcher=False)
    app = create_app(settings)
    await app.startup()
    captured: list[tuple[str, tuple[Any, ...]]] = []
    originals = {
        name: getattr(asyncpg.connection.Connection, name) for name in ("fetch", "fetchrow", "execute")
    }

    def capture(name: str) -> Any:
        original = originals[name]

        async def run(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
            captured.append((query, args))
            return await original(self, query, *args, **kwargs)

        return run

    found: dict[str, list[dict[str, Any]]] = {}
    try:
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {user.token}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://bench", headers=headers) as http:
            for name, (method, path, body) in requests.items():
                captured.clear()
                for attr in originals:
                    setattr(asyncpg.connection.Connection, attr, capture(attr))
                try:
                    r = await http.request(method, path, json=body)
                finally:
                    for attr, original in originals.items():
                        setattr(asyncpg.connection.Connection, attr, original)
                if r.status_code not in (200, 201):
                    raise RuntimeError(f"explain {name}: {r.status_code} {r.text[:200]}")
                found[name] = await _explained(url, [(q, a) for q, a in captured if _STATEMENT.match(q)])
    finally:
        await app.aclose()
    return found


async def _explained(url: str, statements: list[tuple[str, tuple[Any, ...]]]) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(url)
    out = []
    try:
        for query, args in statements:
            if "pg_advisory" in query or "pg_notify" in query:
                continue
            plan = [r[0] for r in await conn.fetch("EXPLAIN (COSTS OFF) " + query, *args)]
            tasks = [int(m.group(1)) for line in plan if (m := re.search(r"Task Count: (\d+)", line))]
            ports = sorted(
                {int(m.group(1)) for line in plan if (m := re.search(r"Node: .*port=(\d+)", line))}
            )
            out.append(
                {
                    "statement": " ".join(query.split())[:160],
                    "task_counts": tasks,
                    "subplans": sum("Distributed Subplan" in line for line in plan),
                    "node_ports": ports,
                    "plan": plan,
                }
            )
    finally:
        await conn.close()
    return out


# ---- the results ---------------------------------------------------------------------------------------


def summarize(rounds: list[dict[str, WrkResult]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    names = {n for r in rounds for n in r}
    for name in sorted(names):
        runs = [r[name] for r in rounds if name in r]
        best = max(runs, key=lambda r: r.ok_rps)
        nodes = [r.extra.get("node_cpu_us_per_request", {}) for r in runs]
        out[name] = {
            "rate": round(best.ok_rps, 1),
            "rates": [round(r.ok_rps, 1) for r in runs],
            "p50_ms": best.latency_ms.get("p50"),
            "p99_ms": best.latency_ms.get("p99"),
            "server_cpu_us": min(r.extra.get("server_cpu_us_per_request", 0.0) for r in runs),
            "node_cpu_us": {p: min(n.get(p, 0.0) for n in nodes) for p in (nodes[0] if nodes else {})},
            "other_work_cores": max(r.extra.get("other_work_cores", 0.0) for r in runs),
            "flagged": [r.flag_reason() for r in runs if r.flagged],
            "warnings": [w for r in runs for w in r.warnings],
        }
    return out


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    if (reason := pgservers.citus_missing()) is not None:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    started = time.time()
    secret = secrets.token_urlsafe(48)
    log_dir = Path(tempfile.mkdtemp(prefix="rampart-citus-bench-"))
    load_before = report.loadavg()
    print(f"citus_compare: {args.rounds} round(s) x {args.duration:g} s per scenario; logs in {log_dir}")
    with databases() as (single_url, single_nodes, citus_url, citus_nodes):
        sides = [
            Side(
                name,
                url,
                nodes,
                servers.Rampart(
                    args.rampart_bin, secret, workers=args.workers, pool_size=args.pool, name=name
                ),
                log_dir,
            )
            for name, url, nodes in (("single", single_url, single_nodes), ("citus", citus_url, citus_nodes))
        ]
        try:
            for side in sides:
                prepare(side, args)
            for round_no in range(1, args.rounds + 1):
                for side in sides:
                    run_round(side, round_no, args)
            # The reads again without the row cache: what the database itself answers, routed or not.
            uncached: dict[str, dict[str, WrkResult]] = {}
            reads = [n for n in ("get", "list") if n in args.scenarios]
            if reads and not args.no_uncached:
                for side in sides:
                    side.impl.extra_env["RAMPART_CACHE"] = "off"
                    before = len(side.rounds)
                    run_round(side, 0, args, scenarios=reads)
                    uncached[side.name] = side.rounds.pop(before)
                    side.impl.extra_env.pop("RAMPART_CACHE")
            citus = sides[1]
            assert citus.data is not None
            explained = asyncio.run(explain_scenarios(citus.url, secret, citus.data))
            for steps in explained.values():
                for step in steps:  # the coordinator's own tables (sessions) are answered there
                    step["on_coordinator"] = step["node_ports"] == [citus_nodes[0]]
        except KeyboardInterrupt as exc:
            print(f"interrupted ({exc}): servers stopped", file=sys.stderr)
            return 130
        payload: dict[str, Any] = {
            "kind": "citus",
            "command": args.command,
            "started_at": report.timestamp(),
            "seconds": round(time.time() - started, 1),
            "loadavg_before": load_before,
            "loadavg_after": report.loadavg(),
            "machine": report.machine_info(),
            "config": {
                "rounds": args.rounds,
                "duration_s": args.duration,
                "warmup_s": args.warmup,
                "threads": args.threads,
                "connections": args.connections,
                "workers": args.workers,
                "pool_per_worker": args.pool,
                "users": args.users,
                "tasks_per_user": args.tasks_per_user,
                "shards_per_table": 8,
                "citus_workers": 2,
            },
            "nodes": {"single": single_nodes, "citus": citus_nodes},
            "results": {side.name: summarize(side.rounds) for side in sides},
            "uncached": {name: summarize([rounds]) for name, rounds in uncached.items()},
            "explain": explained,
        }
    path = report.write_json(payload, RESULTS_DIR / f"citus-{payload['started_at']}.json")
    print(f"results: {path}")
    for name in args.scenarios:
        one, many = payload["results"]["single"].get(name), payload["results"]["citus"].get(name)
        if one and many:
            print(
                f"  {name:<7} single {one['rate']:>8,.0f}/s p99 {one['p99_ms']} ms   "
                f"citus {many['rate']:>8,.0f}/s p99 {many['p99_ms']} ms   ({many['rate'] / one['rate']:.0%})"
            )
    if not args.no_markdown:
        import markdown

        print(markdown.update())
    return 0


if __name__ == "__main__":
    sys.exit(main())
