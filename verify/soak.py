"""`make verify-soak`: mixed load at about half of peak for `--minutes` (30), watched for slow drift.

One private stack (PostgreSQL and Redis of its own, `rampart serve --workers 2`, a webhook receiver
subscribed to every task event; tests/reliability/services.py). First the peak: the mixed load (writers
creating and patching tasks, readers reading them by id and listing them) with no pacing, for
`--probe-seconds`. Then the same mix paced at `--fraction` (0.5) of that rate for the soak. Every
`--interval` seconds it samples:

- the resident memory (RSS) of every worker and of the supervisor (/proc);
- PostgreSQL's connection count for the database (pg_stat_activity), and the pool's own gauge;
- throughput, p50 and p99 latency of the interval's answers, and its errors.

At the end the ledger of every acknowledged write is reconciled with the database row by row, and every
acknowledged change's event must have reached the receiver. It fails (exit 1) when:

- any request got anything but its 2xx (an error, a refusal, a lost connection): zero are expected;
- a worker's RSS grew by more than `--rss-growth-mb` (40 MB) between the median of the first window
  after warm-up and the median of the last window (each window 10% of the run, at least 3 samples);
- the connection count of the last window exceeds the highest of the first window, or the budget;
- the last window's p99 is more than `--p99-factor` (3) times the first window's;
- the reconciliation or the event delivery fell short, or a worker was replaced.

Writes verify/results/soak-<time>.json and a chart beside it (.png, matplotlib from the bench extra).

    .venv/bin/python verify/soak.py [--minutes 30] [--interval 5] [--fraction 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
from tests.reliability.load import Ledger, Load, new_project, percentile, reconcile, wait_delivered  # noqa: E402
from tests.reliability.services import Stack, available, marker, stack, workers  # noqa: E402

RESULTS = ROOT / "verify" / "results"
WRITERS, READERS = 3, 9  # about a quarter of the requests write
POOL_SIZE = 10  # RAMPART_DB_POOL_SIZE's default: the connection budget below depends on it


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def connections(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT coalesce(application_name, '') AS app, count(*) AS n FROM pg_stat_activity "
        "WHERE datname = 'rampart' GROUP BY 1"
    )
    by_app = {r["app"]: r["n"] for r in rows}
    return {"total": sum(by_app.values()), **by_app}


def interval_stats(samples: list[Any], seconds: float) -> dict[str, Any]:
    ok = [s.seconds * 1000 for s in samples if s.outcome in ("200", "201")]
    bad = [s for s in samples if s.outcome not in ("200", "201")]
    return {
        "requests": len(samples),
        "rps": round(len(samples) / seconds, 1) if seconds > 0 else 0.0,
        "p50_ms": round(percentile(ok, 0.50), 2),
        "p99_ms": round(percentile(ok, 0.99), 2),
        "errors": len(bad),
        "writes": sum(1 for s in samples if s.kind in ("create", "patch")),
    }


async def probe_peak(started: Stack, seconds: float) -> float:
    """Requests per second of the unpaced mixed load (after a short warm-up)."""
    ledger = Ledger(marker())
    project = await new_project(started.url, started.user_token, ledger.marker + "-peak")
    load = Load(
        started.url,
        started.user_token,
        project,
        ledger,
        writers=WRITERS,
        readers=READERS,
        max_requests=10_000_000,
    )
    runner = asyncio.create_task(load.run())
    try:
        await asyncio.sleep(min(5.0, seconds / 4))
        count_from, t0 = len(ledger.samples), time.monotonic()
        await asyncio.sleep(seconds)
        done, elapsed = len(ledger.samples) - count_from, time.monotonic() - t0
    finally:
        load.stop.set()
        await asyncio.wait_for(runner, timeout=60)
    if ledger.unexpected_count:
        raise SystemExit(f"soak: errors while measuring the peak: {ledger.unexpected[:5]}")
    return done / elapsed


async def soak(started: Stack, args: argparse.Namespace) -> dict[str, Any]:
    peak = await probe_peak(started, args.probe_seconds)
    rate = peak * args.fraction
    print(f"soak: peak {peak:.0f} req/s; soaking at {rate:.0f} req/s for {args.minutes} min", flush=True)
    ledger = Ledger(marker())
    project = await new_project(started.url, started.user_token, ledger.marker)
    duration = args.minutes * 60
    load = Load(
        started.url,
        started.user_token,
        project,
        ledger,
        writers=WRITERS,
        readers=READERS,
        rate=rate,
        max_requests=int(rate * duration * 1.1) + 1000,
    )
    supervisor = started.server.proc.pid
    first_workers = sorted(workers(supervisor))
    pg = await asyncpg.connect(started.pg.admin_url, timeout=30)
    series: list[dict[str, Any]] = []
    runner = asyncio.create_task(load.run())
    began = last = time.monotonic()
    try:
        while (now := time.monotonic()) - began < duration and not runner.done():
            await asyncio.sleep(min(args.interval, duration - (now - began)))
            now = time.monotonic()
            taken = len(ledger.samples)
            chunk = ledger.samples[:taken]
            del ledger.samples[:taken]  # the soak keeps figures per interval, not every answer
            pids = sorted(workers(supervisor))
            point = {
                "t": round(now - began, 1),
                **interval_stats(chunk, now - last),
                "rss_mb": {str(pid): round(rss_mb(pid), 1) for pid in pids},
                "supervisor_rss_mb": round(rss_mb(supervisor), 1),
                "connections": await connections(pg),
                "workers": pids,
                "load1": round(os.getloadavg()[0], 2),  # the machine is shared: disturbance shows here
            }
            series.append(point)
            last = now
            if ledger.unexpected_count > args.max_errors:  # broken, not drifting: stop and say why
                print(
                    f"soak: stopped: {ledger.unexpected_count} errors, e.g. {ledger.unexpected[:3]}",
                    flush=True,
                )
                break
            if len(series) % max(1, int(60 / args.interval)) == 0:
                print(
                    f"soak: {point['t'] / 60:.0f} min {point['rps']} req/s p99 {point['p99_ms']} ms "
                    f"rss {list(point['rss_mb'].values())} conns {point['connections']['total']} "
                    f"errors {ledger.unexpected_count}",
                    flush=True,
                )
    finally:
        load.stop.set()
        await asyncio.wait_for(runner, timeout=60)
        await pg.close()
    reconciliation = await reconcile(ledger, started.database_url, refusals_store_nothing=True)
    undelivered, waited = await wait_delivered(ledger, started.database_url, started.hooks.received, 180)
    return {
        "peak_rps": round(peak, 1),
        "target_rps": round(rate, 1),
        "workers_first": first_workers,
        "series": series,
        "outcomes": dict(ledger.outcomes),
        "unexpected_count": ledger.unexpected_count,
        "unexpected": ledger.unexpected,
        "reconciliation": {**reconciliation.__dict__, "problems": reconciliation.problems()},
        "undelivered": undelivered,
        "delivery_wait_seconds": round(waited, 1),
        "webhook_deliveries": started.hooks.deliveries,
    }


def windows(
    series: list[dict[str, Any]], warmup_s: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    steady = [p for p in series if p["t"] > warmup_s] or series
    size = max(3, len(steady) // 10)
    return steady[:size], steady[-size:]


def judge(result: dict[str, Any], args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """The figures RELIABILITY.md quotes, and every bound that was broken."""
    failures: list[str] = []
    series = result["series"]
    if len(series) < 6:
        return {}, [f"only {len(series)} samples"]
    first, last = windows(series, args.warmup)
    figures: dict[str, Any] = {"windows_samples": len(first)}
    for pid in result["workers_first"]:
        key = str(pid)
        a = statistics.median(p["rss_mb"].get(key, 0.0) for p in first)
        b = statistics.median(p["rss_mb"].get(key, 0.0) for p in last)
        figures[f"rss_mb_worker_{pid}"] = {
            "first": a,
            "last": b,
            "max": max(p["rss_mb"].get(key, 0.0) for p in series),
        }
        if b - a > args.rss_growth_mb:
            failures.append(f"worker {pid} RSS grew {a:.0f} -> {b:.0f} MB (bound {args.rss_growth_mb} MB)")
    conns_first = max(p["connections"]["total"] for p in first)
    conns_last = max(p["connections"]["total"] for p in last)
    budget = 2 * (POOL_SIZE + 4)
    figures["connections"] = {
        "first_max": conns_first,
        "last_max": conns_last,
        "max": max(p["connections"]["total"] for p in series),
        "budget": budget,
    }
    if conns_last > conns_first or figures["connections"]["max"] > budget:
        failures.append(f"connections grew: {figures['connections']}")
    p99_first = statistics.median(p["p99_ms"] for p in first)
    p99_last = statistics.median(p["p99_ms"] for p in last)
    figures["p99_ms"] = {"first": p99_first, "last": p99_last, "max": max(p["p99_ms"] for p in series)}
    figures["p50_ms"] = {
        "first": statistics.median(p["p50_ms"] for p in first),
        "last": statistics.median(p["p50_ms"] for p in last),
    }
    figures["rps"] = {
        "mean": round(statistics.mean(p["rps"] for p in series), 1),
        "min": min(p["rps"] for p in series),
    }
    if p99_last > args.p99_factor * p99_first:
        failures.append(f"p99 rose from {p99_first} to {p99_last} ms (bound x{args.p99_factor})")
    figures["requests"] = sum(result["outcomes"].values())
    errors = sum(p["errors"] for p in series) + result["unexpected_count"]
    figures["errors"] = errors
    if errors:
        failures.append(f"{errors} requests failed: {result['unexpected'][:5]} {result['outcomes']}")
    if result["reconciliation"]["problems"]:
        failures.append(f"reconciliation: {result['reconciliation']['problems']}")
    if result["undelivered"]:
        failures.append(f"undelivered events: {result['undelivered'][:5]}")
    replaced = {tuple(p["workers"]) for p in series} - {tuple(result["workers_first"])}
    if replaced:
        failures.append(f"workers replaced during the soak: {replaced}")
    return figures, failures


def chart(payload: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = payload["result"]["series"]
    minutes = [p["t"] / 60 for p in series]
    fig, axes = plt.subplots(4, 1, figsize=(10, 11), sharex=True)
    axes[0].plot(minutes, [p["rps"] for p in series], color="#1f77b4")
    axes[0].axhline(
        payload["result"]["target_rps"], color="#8c8c8c", linestyle="--", label="target (half of peak)"
    )
    axes[0].set_ylabel("requests/s")
    axes[0].legend(loc="lower right")
    axes[1].plot(minutes, [p["p50_ms"] for p in series], label="p50")
    axes[1].plot(minutes, [p["p99_ms"] for p in series], label="p99")
    axes[1].set_ylabel("latency (ms)")
    axes[1].legend(loc="upper right")
    for pid in payload["result"]["workers_first"]:
        axes[2].plot(minutes, [p["rss_mb"].get(str(pid)) for p in series], label=f"worker {pid}")
    axes[2].plot(minutes, [p["supervisor_rss_mb"] for p in series], label="supervisor", color="#8c8c8c")
    axes[2].set_ylabel("RSS (MB)")
    axes[2].set_ylim(bottom=0)
    axes[2].legend(loc="lower right")
    axes[3].plot(
        minutes, [p["connections"]["total"] for p in series], color="#2ca02c", label="pg_stat_activity"
    )
    errors = [(m, p["errors"]) for m, p in zip(minutes, series, strict=True) if p["errors"]]
    if errors:
        axes[3].scatter([m for m, _ in errors], [0] * len(errors), color="red", marker="x", label="errors")
    axes[3].set_ylabel("PostgreSQL connections")
    axes[3].set_ylim(bottom=0)
    axes[3].set_xlabel("minutes")
    axes[3].legend(loc="lower right")
    verdict = "held" if not payload["failures"] else "FAILED"
    fig.suptitle(
        f"Rampart soak: {payload['config']['minutes']} min at {payload['result']['target_rps']:.0f} req/s "
        f"(half of {payload['result']['peak_rps']:.0f}), serve --workers 2, 2 cores; {verdict}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--probe-seconds", type=float, default=20.0, help="length of the peak measurement")
    parser.add_argument("--fraction", type=float, default=0.5, help="of the peak rate, for the soak")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds left out of the first window")
    parser.add_argument("--rss-growth-mb", type=float, default=40.0)
    parser.add_argument("--p99-factor", type=float, default=3.0)
    parser.add_argument("--max-errors", type=int, default=200, help="stop early past this many errors")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a server setting (repeatable), e.g. RAMPART_CACHE_MAX_ROWS=2000 to run with the row cache full",
    )
    args = parser.parse_args()
    server_env: dict[str, str] = {}
    for item in args.server_env:
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("RAMPART_"):
            parser.error(f"--server-env takes RAMPART_NAME=VALUE, not {item!r}")
        server_env[name] = value
    if (reason := available()) is not None:
        print(f"soak: cannot run: {reason}", file=sys.stderr)
        return 2
    started_at = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    with (
        tempfile.TemporaryDirectory(prefix="rampart-verify-soak-") as workdir,
        stack(Path(workdir), small_tablespace=False, **server_env) as started,
    ):
        result = asyncio.run(soak(started, args))
        log_tail = started.server.output()[-4000:]
        unhandled = started.server.output().count("unhandled error")
    figures, failures = judge(result, args)
    if unhandled:
        failures.append(f"{unhandled} unhandled errors logged")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    payload = {
        "kind": "soak",
        "started_at": started_at,
        "commit": commit.stdout.strip(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_at_end": os.getloadavg(),
        },
        "config": vars(args) | {"writers": WRITERS, "readers": READERS, "server_workers": 2},
        "figures": figures,
        "failures": failures,
        "result": result,
        "server_log_tail": log_tail,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"soak-{started_at}.json"
    path.write_text(json.dumps(payload, indent=1, default=str))
    try:
        chart(payload, path.with_suffix(".png"))
        print(f"soak: chart {path.with_suffix('.png').relative_to(ROOT)}")
    except ImportError:
        print("soak: no chart: matplotlib is not installed (make bench-deps)", file=sys.stderr)
    print(json.dumps(figures, indent=1))
    print(f"soak: wrote {path.relative_to(ROOT)}")
    for failure in failures:
        print(f"soak: FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
