"""The scale curve: the comparison's scenarios with 1, 2 and 4 workers and 10k, 100k and 1M tasks.

    bench/scale.py                                   # both sides, every size x every worker count
    bench/scale.py --only rampart --duration 3 --warmup 1 --tasks 10000,100000 --workers-list 1,2
                                                     # a short check that it works

For each side: a fresh database, set up and seeded through the API as in compare.py, but only
up to the smallest size (at most 100 users x 200 = 20,000 tasks; 10,000 tasks = 100 x 100).
Then, smallest size first, the table is topped up to each size with SQL (bench/bulk.py: COPY
into the seeded users' own projects, valid values, version 1, UUIDv7 ids), vacuumed, analyzed
and checkpointed, and for every worker count each side is started fresh and runs the
scenarios (sides alternate, ``--rounds`` times; 1 by default: a curve, not a comparison).
The wrk scripts pick, per user, among up to ``--wrk-ids-per-user`` of that user's task ids
drawn uniformly from the whole table, so reads and PATCHes spread over all of it. pgbench
runs once per size (no server running). The JSON goes to bench/results/scale-<timestamp>.json
and BENCHMARKS.md's scale section is regenerated from it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import secrets
import shlex
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _venv  # noqa: F401  (must come first: re-runs under .venv when needed)
import bulk
import database
import report
import seed
import servers
from compare import SIDES, Side, _interrupt, prepare, rss_summary, run_round
from run import add_common_args
from scenarios import PreflightError
from wrk import WrkError

API_SEED_MAX = 20_000  # what compare.py seeds through the API: 100 users x 200 tasks


def int_list(raw: str) -> list[int]:
    try:
        values = sorted({int(float(x)) for x in raw.split(",") if x.strip()})
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a comma list of numbers, got {raw!r}") from exc
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError("expected positive numbers")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=SIDES, help="one side only")
    parser.add_argument(
        "--tasks",
        type=int_list,
        default=[10_000, 100_000, 1_000_000],
        help="table sizes (10000,100000,1000000)",
    )
    parser.add_argument("--workers-list", type=int_list, default=[1, 2, 4], help="worker counts (1,2,4)")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds per point (default 1)")
    parser.add_argument(
        "--wrk-ids-per-user",
        type=int,
        default=2000,
        help="task ids per user the wrk scripts pick from (sampled uniformly; default 2000)",
    )
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--db-prefix", default="rampart_scale_", help="scale database name prefix")
    parser.add_argument("--express-src", type=Path, default=servers.default_express_src())
    parser.add_argument("--express-dir", type=Path, default=Path(tempfile.gettempdir()) / "express-anchor")
    parser.add_argument("--rampart-bin", type=Path, default=servers.REPO_ROOT / ".venv" / "bin" / "rampart")
    parser.add_argument("--pool", type=int, default=10, help="database pool per worker (default 10)")
    parser.add_argument("--no-markdown", action="store_true", help="do not regenerate BENCHMARKS.md")
    add_common_args(parser)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    # The API seeds the smallest size (at most the comparison's 20,000 tasks); SQL adds the rest.
    base = min(args.tasks[0], args.users * args.tasks_per_user, API_SEED_MAX)
    args.tasks_per_user = max(1, base // args.users)
    args.workers = args.workers_list[0]
    return args


def top_up(side: Side, size: int, args: argparse.Namespace) -> dict[str, Any]:
    """Bring ``side``'s table to ``size`` tasks with SQL and point wrk at a sample of all of them."""
    assert side.data is not None
    current = asyncio.run(database.count_tasks(side.database_url))
    extra = max(0, size - current)
    seconds = 0.0
    if extra:
        print(f"[{side.name}] {current:,} tasks: bulk-inserting {extra:,} with SQL (COPY) ...", flush=True)
        seconds = asyncio.run(
            bulk.bulk_insert_tasks(
                side.database_url, side.data, extra, start=current, log=lambda m: print(m, flush=True)
            )
        )
        asyncio.run(database.housekeeping(side.database_url))
    total = asyncio.run(database.count_tasks(side.database_url))
    sample = asyncio.run(bulk.sample_task_ids(side.database_url, side.data, args.wrk_ids_per_user))
    for user in side.data.users:
        user.task_ids = sample.get(user.user_id, [])
    return {"tasks": total, "bulk_inserted": extra, "bulk_seconds": round(seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.time()
    database.require_local(args.pg_url, "--pg-url")
    names = [args.only] if args.only else list(SIDES)
    secret = secrets.token_urlsafe(48)
    log_root = Path(tempfile.mkdtemp(prefix="rampart-scale-"))
    print(
        f"scale: {', '.join(names)}; tasks {args.tasks}, workers {args.workers_list}; {args.rounds} round(s) "
        f"x {args.duration:g} s per scenario (+{args.warmup:g} s warm-up); server logs in {log_root}",
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
        sides.append(Side(impl, db_url, servers.free_port(), log_root))

    points: list[dict[str, Any]] = []
    sizes: list[dict[str, Any]] = []
    error: str | None = None
    code = 0
    try:
        for side in sides:
            prepare(side, args)
        for size in args.tasks:
            entry: dict[str, Any] = {"target": size, "sides": {}}
            for side in sides:
                entry["sides"][side.name] = top_up(side, size, args)
            sizes.append(entry)
            if not args.no_pgbench:
                ref = sides[0]
                assert ref.data is not None
                pg = database.run_pgbench(
                    ref.database_url,
                    ref.data.all_task_ids(),
                    duration=args.duration,
                    clients=args.connections,
                    threads=args.threads,
                )
                entry["pgbench"] = pg.to_json()
                print(f"[pgbench] {size:,} tasks: {pg.tps:,.0f} tps", flush=True)
            for workers in args.workers_list:
                print(f"== {size:,} tasks, {workers} worker(s) ==", flush=True)
                for side in sides:
                    side.impl = dataclasses.replace(side.impl, workers=workers)
                    side.rounds, side.rss = [], []
                    side.log_dir = log_root / f"{size}-w{workers}"
                    side.log_dir.mkdir(exist_ok=True)
                for round_no in range(1, args.rounds + 1):
                    for side in sides:
                        run_round(side, round_no, args)
                for side in sides:
                    points.append(point(side, size, workers, entry["sides"][side.name]["tasks"]))
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc or 'SIGINT'}): servers stopped", file=sys.stderr)
        error, code = f"interrupted ({exc or 'SIGINT'})", 130
    except (servers.ServerError, PreflightError, WrkError, seed.SeedError, RuntimeError) as exc:
        print(f"error: {type(exc).__name__}: {exc}\nserver logs: {log_root}", file=sys.stderr)
        error, code = str(exc), 2
    if not points:
        return code or 2
    flags = [f"{p['side']} {p['tasks']:,} tasks {p['workers']}w: {f}" for p in points for f in p["flags"]]
    disturbed = [
        f"{p['side']} {p['tasks']:,} tasks {p['workers']}w: {d}" for p in points for d in p["disturbed"]
    ]
    payload: dict[str, Any] = {
        "kind": "scale",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "elapsed_s": round(time.time() - started, 1),
        "command": shlex.join(["bench/scale.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": {
            **report.machine_info(),
            "postgresql": asyncio.run(database.server_version(args.pg_url)),
        },
        "config": {
            "sides": [s.name for s in sides],
            "tasks": args.tasks,
            "workers": args.workers_list,
            "rounds": args.rounds,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "threads": args.threads,
            "connections": args.connections,
            "pool_per_worker": args.pool,
            "users": args.users,
            "api_seeded_tasks_per_user": args.tasks_per_user,
            "wrk_ids_per_user": args.wrk_ids_per_user,
            "scenarios": args.scenarios,
        },
        "seed": {
            s.name: {"seconds": round(s.data.seconds, 1), "requests": s.data.requests}
            for s in sides
            if s.data
        },
        "sizes": sizes,
        "points": points,
        "flags": flags,
        "disturbed": disturbed,
        "server_logs": str(log_root),
        "error": error,
    }
    print()
    print(scale_table(points))
    for line in flags:
        print(f"FLAGGED {line}")
    for line in disturbed:
        print(f"DISTURBED {line}")
    path = report.write_json(payload, args.out, prefix="scale-")
    print(f"\nresults: {path}")
    if not args.no_markdown:
        import markdown  # matplotlib-free; the page links the comparison's chart

        print(f"updated: {markdown.update(scale_path=path)}")
    return code or (3 if flags else 0)


def point(side: Side, size: int, workers: int, tasks: int) -> dict[str, Any]:
    summary = report.summarize(side.rounds)
    return {
        "side": side.name,
        "target_tasks": size,
        "tasks": tasks,
        "workers": workers,
        "summary": summary,
        "rss": rss_summary(side.rss),
        "rounds": [{n: r.to_json() for n, r in rnd.items()} for rnd in side.rounds],
        "flags": [f"{n}: {r.flag_reason()}" for rnd in side.rounds for n, r in rnd.items() if r.flagged],
        "disturbed": [f"{n}: {w}" for rnd in side.rounds for n, r in rnd.items() for w in r.warnings],
    }


def scale_table(points: list[dict[str, Any]]) -> str:
    names = [n for n in ("get", "list", "patch", "create") if any(n in p["summary"] for p in points)]
    head = f"{'side':<8}{'tasks':>10}{'workers':>8} |" + "".join(
        f"{n + ' rate':>12}{'p99':>8}" for n in names
    )
    lines = [head, "-" * len(head)]
    for p in points:
        cells = ""
        for n in names:
            s = p["summary"].get(n)
            cells += (
                f"{report.fmt_rate(s['rate']) + report.flag_mark(s):>12}{report.fmt_ms(s['p99_ms']):>8}"
                if s
                else f"{'-':>12}{'-':>8}"
            )
        lines.append(f"{p['side']:<8}{p['tasks']:>10,}{p['workers']:>8} |{cells}")
    lines.append("rate: expected-status responses per second (median over rounds); p99 in ms")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
