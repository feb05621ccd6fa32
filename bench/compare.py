"""Rampart vs the Express reference on this machine: same data, same scenarios, alternating rounds.

    bench/compare.py                    # both sides, 3 rounds x 15 s per scenario
    bench/compare.py --quick            # 1 round x 5 s: checks that everything works
    bench/compare.py --only express     # one side only

Creates fresh databases rampart_bench_express and rampart_bench_rampart on the local
PostgreSQL, sets each server up and seeds it through its API, then runs the rounds
(Express, Rampart, Express, Rampart, ...; each server is started fresh for its turn and
stopped after it), pgbench after each round with no server running, and prints medians,
Rampart/Express ratios, GET-by-id as a share of the pgbench figure and worker RSS. The
JSON goes to bench/results/<timestamp>.json, its chart next to it (<timestamp>.png,
bench/chart.py) and BENCHMARKS.md is regenerated from it (bench/markdown.py; --no-markdown
skips both).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shlex
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import _venv  # noqa: F401  (must come first: re-runs under .venv when needed)
import cpu
import database
import report
import seed
import servers
from run import SEED_TIMEOUT_S, add_common_args
from scenarios import OTHER_WORK_LIMIT, PreflightError, run_scenarios
from wrk import WrkError, WrkResult

SIDES = ("express", "rampart")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=SIDES, help="benchmark one side only")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument(
        "--quick", action="store_true", help="1 round x 5 s (1 s warm-up): a check that everything works"
    )
    parser.add_argument(
        "--pg-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="superuser connection used to (re)create the bench databases",
    )
    parser.add_argument("--db-prefix", default="rampart_bench_", help="bench database name prefix")
    parser.add_argument(
        "--express-src",
        type=Path,
        default=servers.default_express_src(),
        help="the Express reference (read-only; copied to --express-dir)",
    )
    parser.add_argument(
        "--express-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "express-anchor",
        help="where the reference is copied and npm ci'd",
    )
    parser.add_argument("--rampart-bin", type=Path, default=servers.REPO_ROOT / ".venv" / "bin" / "rampart")
    parser.add_argument("--workers", type=int, default=2, help="worker processes per server (default 2)")
    parser.add_argument("--pool", type=int, default=10, help="database pool per worker (default 10)")
    parser.add_argument(
        "--no-markdown", action="store_true", help="do not draw the chart nor regenerate BENCHMARKS.md"
    )
    add_common_args(parser)
    args = parser.parse_args(argv)
    args.command = shlex.join(["bench/compare.py", *(sys.argv[1:] if argv is None else argv)])
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 5.0, 1.0
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # Unwinds like Ctrl-C through the finally blocks that stop the servers.
    raise KeyboardInterrupt(signal.Signals(signum).name)


class Side:
    """One implementation under test: its database, its admin setup, its seeded data."""

    def __init__(self, impl: servers.Implementation, database_url: str, port: int, log_dir: Path) -> None:
        self.impl = impl
        self.name = impl.name
        self.database_url = database_url
        self.port = port
        self.log_dir = log_dir
        self.data: seed.SeedData | None = None
        self.rounds: list[dict[str, WrkResult]] = []
        self.rss: list[dict[str, Any]] = []

    def server(self, tag: str) -> servers.Server:
        return self.impl.server(self.database_url, self.port, self.log_dir / f"{self.name}-{tag}.log")


def prepare(side: Side, args: argparse.Namespace) -> None:
    """Fresh database, admin token, seeding through the API."""
    print(f"[{side.name}] database {side.database_url.rsplit('/', 1)[1]}: recreating", flush=True)
    asyncio.run(database.recreate_database(args.pg_url, side.database_url.rsplit("/", 1)[1]))
    token = side.impl.setup(side.database_url)
    server = side.server("seed")
    try:
        server.start()
        print(
            f"[{side.name}] seeding {args.users} users x {args.tasks_per_user} tasks through the API ...",
            flush=True,
        )

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
    print(
        f"[{side.name}] seeded {d.task_count} tasks with {d.requests} requests in {d.seconds:.1f} s "
        f"({d.requests / d.seconds:,.0f} req/s)",
        flush=True,
    )
    asyncio.run(database.analyze(side.database_url))
    asyncio.run(database.housekeeping(side.database_url))


def run_round(side: Side, round_no: int, args: argparse.Namespace) -> None:
    assert side.data is not None
    server = side.server(f"round{round_no}")
    load = report.loadavg()
    print(f"[{side.name}] round {round_no}: starting (load average {load:.2f})", flush=True)
    try:
        server.start()
        # run_scenarios ends with housekeeping: created rows dropped, VACUUM ANALYZE, CHECKPOINT.
        results = run_scenarios(
            server.base_url,
            side.data,
            args.scenarios,
            duration=args.duration,
            warmup=args.warmup,
            database_url=side.database_url,
            threads=args.threads,
            connections=args.connections,
            server_pid=server.proc.pid if server.proc else None,
        )
        rss = server.rss()
    finally:
        server.stop()
    side.rounds.append(results)
    side.rss.append({"round": round_no, **rss.to_json()})
    print(
        f"[{side.name}] round {round_no}: worker RSS sum {rss.sum_mib:.0f} MiB, max {rss.max_mib:.0f} MiB "
        f"({len(rss.workers)} workers)",
        flush=True,
    )


def rss_summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    if not samples:
        return {}
    return {
        "sum_mib_max": max(s["sum_mib"] for s in samples),
        "max_mib_max": max(s["max_mib"] for s in samples),
        "workers": samples[-1]["workers"],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Also when started with SIGINT ignored (e.g. in the background from a script).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.time()
    database.require_local(args.pg_url, "--pg-url")
    names = [args.only] if args.only else list(SIDES)
    secret = secrets.token_urlsafe(48)
    log_dir = Path(tempfile.mkdtemp(prefix="rampart-bench-"))
    print(
        f"compare: {', '.join(names)}; {args.rounds} round(s) x {args.duration:g} s per scenario "
        f"(+{args.warmup:g} s warm-up); wrk {args.threads} threads x {args.connections} connections; "
        f"server logs in {log_dir}",
        flush=True,
    )

    sides: list[Side] = []
    for name in names:
        impl: servers.Implementation
        if name == "express":
            servers.prepare_express(args.express_src, args.express_dir)
            impl = servers.Express(args.express_dir, secret, workers=args.workers, pool_max=args.pool)
        else:
            impl = servers.Rampart(args.rampart_bin, secret, workers=args.workers, pool_size=args.pool)
        db_url = database.with_database(args.pg_url, f"{args.db_prefix}{name}")
        sides.append(Side(impl, db_url, servers.free_port(), log_dir))

    pgbench: list[dict[str, Any]] = []
    try:
        for side in sides:
            prepare(side, args)
        for round_no in range(1, args.rounds + 1):
            for side in sides:
                run_round(side, round_no, args)
            if not args.no_pgbench:
                ref = sides[0]
                assert ref.data is not None
                before = cpu.snapshot()
                pg = database.run_pgbench(
                    ref.database_url,
                    ref.data.all_task_ids(),
                    duration=args.duration,
                    clients=args.connections,
                    threads=args.threads,
                )
                ref_url = urlsplit(ref.database_url)
                cores, top = cpu.foreign_cores(
                    before,
                    cpu.snapshot(),
                    pg.duration_s,
                    set(),
                    {ref_url.path.lstrip("/")},
                    ref_url.port or 5432,
                )
                pgbench.append({"round": round_no, **pg.to_json(), "other_work_cores": round(cores, 3)})
                busy = (
                    f"  ~ other work used {cores:.2f} cores meanwhile: {', '.join(top)}"
                    if cores > OTHER_WORK_LIMIT
                    else ""
                )
                print(
                    f"[pgbench] round {round_no}: {pg.tps:,.0f} tps (prepared PK SELECT on tasks, "
                    f"{pg.clients} clients)" + (f"; {pg.note}" if pg.note else "") + busy,
                    flush=True,
                )
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc or 'SIGINT'}): servers stopped", file=sys.stderr)
        return 130
    except (servers.ServerError, PreflightError, WrkError, seed.SeedError, RuntimeError) as exc:
        print(f"error: {type(exc).__name__}: {exc}\nserver logs: {log_dir}", file=sys.stderr)
        if any(s.rounds for s in sides):
            finish(args, sides, pgbench, started, log_dir, error=str(exc))
        return 2
    return finish(args, sides, pgbench, started, log_dir)


def finish(
    args: argparse.Namespace,
    sides: list[Side],
    pgbench: list[dict[str, Any]],
    started: float,
    log_dir: Path,
    error: str | None = None,
) -> int:
    """Print the comparison and write the JSON (also for a run cut short by ``error``)."""
    summaries = {s.name: report.summarize(s.rounds) for s in sides}
    ex, ra = summaries.get("express"), summaries.get("rampart")
    ratios: dict[str, Any] = {}
    if ex and ra:
        for name in ex.keys() & ra.keys():
            ratios[name] = {
                "rate": report.ratio(ra[name]["rate"], ex[name]["rate"]),
                "p99": report.ratio(ra[name]["p99_ms"], ex[name]["p99_ms"]),
            }
    pg_tps = statistics.median(p["tps"] for p in pgbench) if pgbench else None
    share = {n: round(s["get"]["rate"] / pg_tps, 4) for n, s in summaries.items() if pg_tps and "get" in s}
    rss = {s.name: rss_summary(s.rss) for s in sides}
    flags = [
        f"{s.name} round {i}: {name}: {r.flag_reason()}"
        for s in sides
        for i, rnd in enumerate(s.rounds, 1)
        for name, r in rnd.items()
        if r.flagged
    ]
    disturbed = [
        f"{s.name} round {i}: {name}: {w}"
        for s in sides
        for i, rnd in enumerate(s.rounds, 1)
        for name, r in rnd.items()
        for w in r.warnings
    ]

    print()
    print(
        f"== Rampart vs Express: {args.rounds} alternating round(s) x {args.duration:g} s, "
        f"wrk {args.threads} threads x {args.connections} connections, {os.cpu_count()} CPUs =="
    )
    print(report.comparison_table(summaries))
    if pg_tps:
        print(
            f"PostgreSQL limit (pgbench, prepared PK SELECT on tasks, median of {len(pgbench)}): "
            f"{pg_tps:,.0f} tps"
        )
        print("GET by id as share of it: " + ", ".join(f"{n} {v:.1%}" for n, v in share.items()))
    for name, r in rss.items():
        if r:
            print(
                f"worker RSS after the run ({name}, {r['workers']} workers, max over rounds): "
                f"sum {r['sum_mib_max']:.0f} MiB, largest {r['max_mib_max']:.0f} MiB"
            )
    for line in flags:
        print(f"FLAGGED {line}")
    for line in disturbed:
        print(f"DISTURBED {line}")

    payload: dict[str, Any] = {
        "kind": "compare",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "elapsed_s": round(time.time() - started, 1),
        "command": args.command,
        "machine": {
            **report.machine_info(),
            "postgresql": asyncio.run(database.server_version(args.pg_url)),
        },
        "config": {
            "sides": [s.name for s in sides],
            "rounds": args.rounds,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "threads": args.threads,
            "connections": args.connections,
            "workers": args.workers,
            "pool_per_worker": args.pool,
            "users": args.users,
            "tasks_per_user": args.tasks_per_user,
            "scenarios": args.scenarios,
        },
        "seed": {
            s.name: {
                "seconds": round(s.data.seconds, 1),
                "requests": s.data.requests,
                "tasks": s.data.task_count,
            }
            for s in sides
            if s.data
        },
        "summary": summaries,
        "ratios_rampart_over_express": ratios,
        "pgbench": {"median_tps": pg_tps, "runs": pgbench},
        "get_share_of_pgbench": share,
        "rss": {s.name: {"summary": rss[s.name], "rounds": s.rss} for s in sides},
        "rounds": {s.name: [{n: r.to_json() for n, r in rnd.items()} for rnd in s.rounds] for s in sides},
        "flags": flags,
        "disturbed": disturbed,
        "server_logs": str(log_dir),
        "error": error,
    }
    path = report.write_json(payload, args.out)
    print(f"\nresults: {path}")
    if not args.no_markdown:
        write_report(payload, path)
    return 3 if flags else 0


def write_report(payload: dict[str, Any], path: Path) -> None:
    """The chart next to the JSON and BENCHMARKS.md regenerated from it (bench/markdown.py)."""
    import chart
    import markdown

    try:
        print(f"chart: {chart.write_chart(payload, path)}")
    except chart.ChartUnavailable as exc:
        print(f"note: no chart: {exc}", file=sys.stderr)
    print(f"updated: {markdown.update(compare_path=path)}")


if __name__ == "__main__":
    sys.exit(main())
