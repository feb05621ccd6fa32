"""A/B of ways to serve Rampart: the same seeded database, variants started fresh in turn, alternating.

    .venv/bin/python bench/ab.py --variants serve,nginx --rounds 3 --scenarios get,get,patch --out F.json

For each round, each variant (in the order given, rotated by one every round) is started, the
scenarios run (a warm-up, then measured; a scenario named twice is measured twice in a row, "first" then
"warm"), and it is stopped. Recorded per measured run: rate, p50/p99, CPU per answered request of the
server processes (every process the variant started: workers, supervisors, nginx), of the PostgreSQL
backends of the bench database and of Redis, the cores other work used meanwhile (above 0.15 the run is
*disturbed*), the load average, and for single servers how the connections were split between its
workers (sampled every 0.5 s during each measured run); with `--count-transactions`, the bench
database's transactions per answered request too. Medians per variant over the rounds are printed at the
end; the JSON (`--out`, rewritten after every run) holds every run.

Variants (`--variants`, comma list):

- `serve`: `rampart serve --workers 2` as it is.
- `exp:<NAME>`: `rampart serve` with `RAMPART_EXP_SERVER=<NAME>`, the switches of the experiment build
  that decisions 0013 and 0025 measured: apply bench/experiments/server-variants.patch to a copy of
  `src/` and give it with `PYTHONPATH`. NAME: `ledger` (as `serve`), `shared` (one shared socket, no
  balance), `reuseport` (one `SO_REUSEPORT` socket per worker), `nocoalesce` (no one send per step),
  `plain` (uvicorn's own protocol on one shared socket).
- `gunicorn`: gunicorn's arbiter with 2 uvicorn workers (`gunicorn==27.0.1` and `uvicorn-worker==0.4.0`
  installed by hand, not dependencies; the HTTP protocol, loop and options as `rampart serve` gives
  uvicorn: bench/gunicorn_worker.py).
- `nginx`: nginx (deploy/nginx.conf) in front of `rampart serve --workers 2`.
- `pair`, `pair-redis-cache`: two `rampart serve --workers 2` instances behind nginx sharing Redis
  (rate limits in Redis in both); the query cache per worker, or in Redis (`RAMPART_CACHE=redis`).
  `pair-redis-sessions` and `pair-redis` also set `RAMPART_SESSION_CACHE=redis`, which only builds
  before issue 15 read (decision 0005).

A seed file (`--seed-file`) keeps the seeded users, whose sessions are impersonations: they end after an
hour, and a later run needs a new seed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import _venv  # noqa: F401  (must come first: re-runs under .venv when needed)
import cpu
import database
import report
import seed
import servers
from scenarios import OTHER_WORK_LIMIT, _count_created, preflight
from wrk import SCENARIOS, WrkResult, run_wrk

sys.path.insert(0, str(servers.REPO_ROOT))

from tests.scale.servers import nginx_command

REPO = Path(__file__).resolve().parent.parent
REDIS_DB = 11  # a database of the local Redis of its own: flushed before every start of a variant


@dataclass
class Running:
    """What one variant started: its processes (started in their own sessions) and the URL wrk hits."""

    url: str
    procs: list[servers.Server] = field(default_factory=list)
    single: servers.Server | None = None  # a single server whose workers' connections are sampled

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()


def rampart_env(args: argparse.Namespace, **extra: str) -> dict[str, str]:
    impl = servers.Rampart(Path(args.rampart_bin), args.jwt_secret, workers=2, pool_size=10)
    env = impl.env(args.database_url)
    env.update(extra)
    return env


def rampart_serve(
    args: argparse.Namespace,
    port: int,
    tag: str,
    *,
    options: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> servers.Server:
    cmd = [args.rampart_bin, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2", *options]
    return servers.Server(
        tag, cmd, rampart_env(args, **(env or {})), port, args.log_dir / f"{tag}-{port}.log", cwd=REPO
    )


def nginx_server(args: argparse.Namespace, upstreams: list[int], tag: str) -> servers.Server:
    cmd, prefix, port = nginx_command(upstreams, args.log_dir)
    return servers.Server(tag, cmd, dict(os.environ), port, prefix / "logs" / "stdout.log")


def flush_redis() -> None:
    subprocess.run(["redis-cli", "-n", str(REDIS_DB), "FLUSHDB"], check=True, capture_output=True, timeout=10)


def start(variant: str, args: argparse.Namespace) -> Running:
    if variant == "serve":
        s = rampart_serve(args, servers.free_port(), variant)
        s.start()
        return Running(s.base_url, [s], s)
    if variant.startswith("exp:"):
        s = rampart_serve(
            args, servers.free_port(), variant.replace(":", "-"), env={"RAMPART_EXP_SERVER": variant[4:]}
        )
        s.start()
        return Running(s.base_url, [s], s)
    if variant == "gunicorn":
        port = servers.free_port()
        gunicorn = str(Path(args.rampart_bin).parent / "gunicorn")
        cmd = [
            gunicorn,
            "--workers",
            "2",
            "--bind",
            f"127.0.0.1:{port}",
            "--worker-class",
            "gunicorn_worker.RampartWorker",
            "--keep-alive",
            "5",
            "--graceful-timeout",
            "10",
            "rampart.asgi:create()",
        ]
        env = rampart_env(args, PYTHONPATH=str(REPO / "bench"))
        s = servers.Server(variant, cmd, env, port, args.log_dir / f"gunicorn-{port}.log", cwd=REPO)
        s.start()
        return Running(s.base_url, [s], s)
    if variant.startswith("nginx"):
        inner = rampart_serve(
            args, servers.free_port(), "behind-nginx", env={"RAMPART_TRUSTED_PROXIES": "127.0.0.1"}
        )
        inner.start()
        front = nginx_server(args, [inner.port], "nginx")
        try:
            front.start()
        except BaseException:
            inner.stop()
            raise
        return Running(front.base_url, [inner, front], inner)
    if variant.startswith("pair"):
        flush_redis()
        env = {
            "RAMPART_REDIS_URL": f"redis://127.0.0.1:6379/{REDIS_DB}",
            "RAMPART_TRUSTED_PROXIES": "127.0.0.1",
            "RAMPART_CACHE": "redis" if variant in ("pair-redis", "pair-redis-cache") else "memory",
            "RAMPART_SESSION_CACHE": "redis"
            if variant in ("pair-redis", "pair-redis-sessions")
            else "memory",
        }
        running = Running("")
        try:
            for n in (1, 2):
                s = rampart_serve(args, servers.free_port(), f"{variant}-{n}", env=env)
                s.start()
                running.procs.append(s)
            front = nginx_server(args, [p.port for p in running.procs], "nginx")
            front.start()
            running.procs.append(front)
        except BaseException:
            running.stop()
            raise
        running.url = front.base_url
        return running
    raise SystemExit(f"unknown variant {variant!r}")


def redis_pids() -> set[int]:
    return cpu.listener_pids(6379)


def worker_pids(root: int) -> list[int]:
    """The server's leaf processes that hold connections (its workers)."""
    procs = cpu.snapshot()
    tree = cpu.descendants(procs, {root})
    parents = {procs[p].ppid for p in tree if p in procs}
    return sorted(p for p in tree if p not in parents and "resource_tracker" not in procs[p].name)


def established(pid: int, port: int) -> int:
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        lines = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return 0
    count = 0
    for line in lines:
        cols = line.split()
        if int(cols[1].split(":")[1], 16) == port and cols[3] == "01" and cols[9] in inodes:
            count += 1
    return count


class SplitSampler(threading.Thread):
    """Samples every 0.5 s how many connections each worker of a server holds."""

    def __init__(self, server: servers.Server) -> None:
        super().__init__(daemon=True)
        assert server.proc is not None
        self.workers = worker_pids(server.proc.pid)
        self.port = server.port
        self.samples: list[list[int]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            counts = sorted(established(p, self.port) for p in self.workers)
            if sum(counts):
                self.samples.append(counts)


def measure(
    running: Running,
    data: seed.SeedData,
    scenarios: list[str],
    args: argparse.Namespace,
    data_file: Path,
    run_id: str,
) -> list[dict[str, Any]]:
    databases = {urlsplit(args.database_url).path.lstrip("/")}
    roots = {p.proc.pid for p in running.procs if p.proc is not None}
    preflight(running.url, data, sorted(set(scenarios)), run_id)
    out: list[dict[str, Any]] = []
    warmed: set[str] = set()
    for name in scenarios:
        scenario = SCENARIOS[name]
        warm_ok = 0
        if name not in warmed and args.warmup > 0:
            warm = run_wrk(running.url, scenario, data_file, run_id, duration=args.warmup)
            warm_ok = warm.ok
        phase = "warm" if name in warmed else "first"
        warmed.add(name)
        sampler = SplitSampler(running.single) if running.single is not None else None
        if sampler:
            sampler.start()
        if args.count_transactions:
            time.sleep(PGSTAT_FLUSH)  # the warm-up's counts reach pg_stat_database first
            xacts = asyncio.run(transactions(args.database_url))
        load = report.loadavg()
        before, stolen = cpu.snapshot(), cpu.steal_seconds()
        result: WrkResult = run_wrk(running.url, scenario, data_file, run_id, duration=args.duration)
        after = cpu.snapshot()
        if sampler:
            sampler.done.set()
            sampler.join()
        ours = cpu.descendants(after, roots) | cpu.descendants(before, roots)
        rds = redis_pids()
        cores, top = cpu.foreign_cores(before, after, result.duration_s, ours | rds, databases, 5432)
        steal = (cpu.steal_seconds() - stolen) / max(result.duration_s, 1e-9)
        answered = max(result.ok, 1)
        backends = cpu.database_backends(after, databases, 5432)
        row: dict[str, Any] = {
            "scenario": name,
            "phase": phase,
            "rate": round(result.ok_rps, 1),
            "p50_ms": result.latency_ms.get("p50"),
            "p99_ms": result.latency_ms.get("p99"),
            "server_cpu_us": round(cpu.cpu_seconds(before, after, ours) / answered * 1e6, 1),
            "database_cpu_us": round(cpu.cpu_seconds(before, after, backends) / answered * 1e6, 1),
            "redis_cpu_us": round(cpu.cpu_seconds(before, after, rds) / answered * 1e6, 1),
            "other_work_cores": round(cores, 3),
            "other_work_top": top,
            "steal_cores": round(steal, 3),
            "loadavg": load,
            "disturbed": cores > OTHER_WORK_LIMIT or steal > OTHER_WORK_LIMIT,
            "flagged": result.flag_reason() if result.flagged else None,
        }
        if args.count_transactions:
            time.sleep(PGSTAT_FLUSH)
            row["transactions_per_request"] = round(
                (asyncio.run(transactions(args.database_url)) - xacts) / answered, 3
            )
        if sampler and sampler.samples:
            spreads = [s[-1] - s[0] for s in sampler.samples]
            row["split_median"] = sampler.samples[len(sampler.samples) // 2]
            row["split_spread_median"] = statistics.median(spreads)
            row["split_spread_max"] = max(spreads)
        if name == "create":
            row["rows_in_db"] = asyncio.run(_count_created(args.database_url, run_id))
            row["rows_acknowledged"] = warm_ok + result.ok
        out.append(row)
        print(
            f"    {name:<6} {phase:<5} {row['rate']:>8,.0f}/s p50 {row['p50_ms']} p99 {row['p99_ms']} ms"
            f"  cpu/req server {row['server_cpu_us']:.0f} db {row['database_cpu_us']:.0f}"
            f" redis {row['redis_cpu_us']:.0f} us  other {cores:.2f}"
            + (" DISTURBED" if row["disturbed"] else "")
            + (f"  split {row.get('split_median')}" if "split_median" in row else "")
            + (f"  xact/req {row['transactions_per_request']}" if "transactions_per_request" in row else "")
            + (f"  FLAGGED {row['flagged']}" if row["flagged"] else ""),
            flush=True,
        )
    asyncio.run(database.housekeeping(args.database_url, run_id))
    return out


# A busy backend reports its counts to pg_stat_database at most once a second, an idle one within 10 s.
PGSTAT_FLUSH = 11.0


async def transactions(url: str) -> int:
    """Transactions committed in the bench database so far (each statement outside a transaction is one)."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        n: int = await conn.fetchval(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
        )
        return n
    finally:
        await conn.close()


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Medians per variant and scenario/phase; counted over every run and over the undisturbed ones."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for run in runs:
        for row in run["rows"]:
            groups.setdefault((run["variant"], row["scenario"], row["phase"]), []).append(row)
    out: dict[str, dict[str, Any]] = {}
    for (variant, scenario, phase), rows in sorted(groups.items()):
        quiet = [r for r in rows if not r["disturbed"]]

        def med(key: str, rows: list[dict[str, Any]] = rows) -> float | None:
            values = [r[key] for r in rows if r.get(key) is not None]
            return round(statistics.median(values), 3) if values else None

        out[f"{variant} {scenario} {phase}"] = {
            "runs": len(rows),
            "disturbed": len(rows) - len(quiet),
            "rate": med("rate"),
            "p99_ms": med("p99_ms"),
            "server_cpu_us": med("server_cpu_us"),
            "database_cpu_us": med("database_cpu_us"),
            "redis_cpu_us": med("redis_cpu_us"),
            "transactions_per_request": med("transactions_per_request"),
            "transactions_per_request_all": [r.get("transactions_per_request") for r in rows],
            "server_cpu_us_all": [r["server_cpu_us"] for r in rows],
            "database_cpu_us_all": [r["database_cpu_us"] for r in rows],
            "p99_ms_all": [r["p99_ms"] for r in rows],
            "rate_all": [r["rate"] for r in rows],
            "split_spread_median_all": [
                r.get("split_spread_median") for r in rows if "split_spread_median" in r
            ],
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", required=True, help="comma list (see above)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--scenarios", default="get,patch", help="comma list; a name twice measures it twice")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--database", default="rampart_bench_ab")
    parser.add_argument(
        "--seed-file",
        type=Path,
        help="reuse the seed (and its database) when present; its sessions are impersonations, which end"
        " after an hour",
    )
    parser.add_argument("--rampart-bin", default=str(REPO / ".venv" / "bin" / "rampart"))
    parser.add_argument(
        "--count-transactions",
        action="store_true",
        help="also count the bench database's transactions per answered request (waits for the counts)",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    args.database_url = database.with_database(args.pg_url, args.database)
    args.jwt_secret = secrets.token_urlsafe(32)
    args.log_dir = Path(tempfile.mkdtemp(prefix="rampart-ab-"))
    print(f"logs: {args.log_dir}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    if args.seed_file and args.seed_file.exists():
        data = seed.SeedData.load(args.seed_file)
        args.jwt_secret = (args.seed_file.with_suffix(".secret")).read_text().strip()
    else:
        asyncio.run(database.recreate_database(args.pg_url, args.database))
        impl = servers.Rampart(Path(args.rampart_bin), args.jwt_secret)
        token = impl.setup(args.database_url)
        s = rampart_serve(args, servers.free_port(), "seed")
        s.start()
        try:
            data = asyncio.run(seed.seed(s.base_url, token, users=100, tasks_per_user=200, concurrency=32))
        finally:
            s.stop()
        if args.seed_file:
            data.save(args.seed_file)
            args.seed_file.with_suffix(".secret").write_text(args.jwt_secret)
        asyncio.run(database.analyze(args.database_url))
    asyncio.run(database.housekeeping(args.database_url))

    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rampart-ab-wrk-") as tmp:
        data_file = Path(tmp) / "users.txt"
        data.write_wrk_data(data_file)
        for round_no in range(1, args.rounds + 1):
            shift = (round_no - 1) % len(variants)
            order = variants[shift:] + variants[:shift]
            for variant in order:
                print(f"round {round_no} {variant} (load {report.loadavg():.2f})", flush=True)
                running = start(variant, args)
                try:
                    rows = measure(running, data, scenarios, args, data_file, f"ab-{secrets.token_hex(3)}")
                finally:
                    running.stop()
                runs.append({"round": round_no, "variant": variant, "rows": rows})
                if args.out:  # after every run, so that an interrupted A/B keeps what it measured
                    report.write_json({"kind": "ab", "partial": True, "runs": runs}, args.out)
    summary = summarize(runs)
    print()
    for key, m in summary.items():
        print(
            f"{key:<40} rate {m['rate']:>8} p99 {m['p99_ms']:>7} ms  server {m['server_cpu_us']:>6} us"
            f"  db {m['database_cpu_us']:>6} us  redis {m['redis_cpu_us']:>5} us"
            f"  ({m['runs']} runs, {m['disturbed']} disturbed)"
        )
    payload = {
        "kind": "ab",
        "command": " ".join(["bench/ab.py", *(argv if argv is not None else sys.argv[1:])]),
        "started_at": report.timestamp(),
        "machine": report.machine_info(),
        "config": {
            "variants": variants,
            "scenarios": scenarios,
            "rounds": args.rounds,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
        },
        "runs": runs,
        "summary": summary,
    }
    if args.out:
        print(f"results: {report.write_json(payload, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
