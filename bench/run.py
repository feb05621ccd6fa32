"""Benchmark one running server (Express reference or Rampart).

    bench/run.py --base-url http://127.0.0.1:3000 --admin-token TOKEN \
        --database-url postgresql://postgres@127.0.0.1:5432/rampart [--duration 15] \
        [--scenarios get,list,patch,create] [--out results.json]

Seeds 100 users x 200 tasks through the API, runs the wrk scenarios, measures the
PostgreSQL limit with pgbench on the same database and prints the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import _venv  # noqa: F401  (must come first: re-runs under .venv when needed)
import database
import report
import seed
from scenarios import run_scenarios
from wrk import SCENARIOS

SEED_TIMEOUT_S = 900.0


def scenario_list(raw: str) -> list[str]:
    names = [s.strip() for s in raw.split(",") if s.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"scenarios are a comma list of {', '.join(SCENARIOS)}")
    return names


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per scenario (default 15)")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per scenario (default 3)")
    parser.add_argument(
        "--scenarios",
        type=scenario_list,
        default=list(SCENARIOS),
        help="comma list of get,list,patch,create (default all)",
    )
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument("--users", type=int, default=100, help="seeded users (default 100)")
    parser.add_argument("--tasks-per-user", type=int, default=200, help="seeded tasks per user (default 200)")
    parser.add_argument("--seed-concurrency", type=int, default=32, help="seeding requests in flight")
    parser.add_argument("--no-pgbench", action="store_true", help="skip the pgbench reference figure")
    parser.add_argument("--out", type=Path, help="write the results JSON here")


async def seed_server(base_url: str, admin_token: str, args: argparse.Namespace) -> seed.SeedData:
    async with asyncio.timeout(SEED_TIMEOUT_S):
        return await seed.seed(
            base_url,
            admin_token,
            users=args.users,
            tasks_per_user=args.tasks_per_user,
            concurrency=args.seed_concurrency,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-url", required=True, help="the running server, e.g. http://127.0.0.1:3000")
    parser.add_argument("--admin-token", required=True, help="an admin access token for seeding")
    parser.add_argument("--database-url", required=True, help="the server's database (housekeeping, pgbench)")
    parser.add_argument(
        "--seed-file",
        type=Path,
        help="reuse users/tokens/ids saved here by an earlier run (seed and save if absent)",
    )
    add_common_args(parser)
    args = parser.parse_args(argv)
    base_url = args.base_url.rstrip("/")
    database.require_local(base_url, "--base-url")
    database.require_local(args.database_url, "--database-url")

    if args.seed_file and args.seed_file.exists():
        data = seed.SeedData.load(args.seed_file)
        print(f"seed: reusing {len(data.users)} users, {data.task_count} tasks from {args.seed_file}")
    else:
        print(f"seed: {args.users} users x {args.tasks_per_user} tasks through {base_url} ...", flush=True)
        data = asyncio.run(seed_server(base_url, args.admin_token, args))
        print(
            f"seed: {data.task_count} tasks, {data.requests} requests in {data.seconds:.1f} s "
            f"({data.requests / data.seconds:,.0f} req/s)"
        )
        if args.seed_file:
            data.save(args.seed_file)
    asyncio.run(database.analyze(args.database_url))
    asyncio.run(database.housekeeping(args.database_url))

    load = report.loadavg()  # recorded; seeding just raised it, so runs are judged by cpu.py instead
    print(
        f"wrk: {args.threads} threads, {args.connections} connections, {args.duration:g} s per scenario "
        f"(+{args.warmup:g} s warm-up)",
        flush=True,
    )
    results = run_scenarios(
        base_url,
        data,
        args.scenarios,
        duration=args.duration,
        warmup=args.warmup,
        database_url=args.database_url,
        threads=args.threads,
        connections=args.connections,
    )
    summary = report.summarize([results])

    payload: dict[str, Any] = {
        "kind": "run",
        "base_url": base_url,
        "started_at": report.timestamp(),
        "loadavg_before": load,
        "machine": report.machine_info(),
        "config": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "threads": args.threads,
            "connections": args.connections,
            "users": len(data.users),
            "tasks": data.task_count,
            "scenarios": args.scenarios,
        },
        "seed": {"seconds": round(data.seconds, 1), "requests": data.requests},
        "results": {name: r.to_json() for name, r in results.items()},
        "summary": summary,
    }
    print()
    print(report.single_table(summary))
    if not args.no_pgbench:
        pg = database.run_pgbench(
            args.database_url,
            data.all_task_ids(),
            duration=args.duration,
            clients=args.connections,
            threads=args.threads,
        )
        payload["pgbench"] = pg.to_json()
        print(f"\npgbench (prepared PK SELECT on tasks, {pg.clients} clients): {pg.tps:,.0f} tps")
        if pg.note:
            print(f"note: {pg.note}")
        if "get" in summary:
            share = summary["get"]["rate"] / pg.tps
            payload["get_share_of_pgbench"] = round(share, 4)
            print(f"GET by id = {share:.1%} of the PostgreSQL limit")
    flagged = [f"{n}: {r.flag_reason()}" for n, r in results.items() if r.flagged]
    payload["flags"] = flagged
    for line in flagged:
        print(f"FLAGGED {line}")
    if args.out:
        print(f"\nresults: {report.write_json(payload, args.out)}")
    return 3 if flagged else 0


if __name__ == "__main__":
    sys.exit(main())
