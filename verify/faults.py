"""`make verify-faults`: every fault of tests/reliability under a bigger load, with a summary.

One private stack (PostgreSQL and Redis of its own on free loopback ports, `rampart serve --workers 2`,
a webhook receiver; see tests/reliability/services.py), then for each fault in turn: a load of writers
and readers, the fault injected mid-load and held, healed, more load, and the row-by-row reconciliation
of what was acknowledged with what is stored and delivered. The machine's shared PostgreSQL and Redis
are never touched.

Writes verify/results/faults-<time>.json (every figure of every run) and prints a table; exits 1 if any
fault fell short.

    .venv/bin/python verify/faults.py [--faults postgres_restart,redis_stop] [--writers 16] [--hold 10]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.reliability.faults import FAULTS, FaultRun, run_fault  # noqa: E402
from tests.reliability.services import Stack, available, stack  # noqa: E402

RESULTS = ROOT / "verify" / "results"


def _commit() -> str:
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or "unknown"


async def _all(
    started: Stack, names: list[str], args: argparse.Namespace
) -> list[tuple[str, FaultRun | None, list[str]]]:
    out: list[tuple[str, FaultRun | None, list[str]]] = []
    for name in names:
        fault = FAULTS[name]
        if name == "disk_full" and not started.disk_full_possible:
            out.append((name, None, ["not run: needs root and a tmpfs mount for the tablespace"]))
            continue
        print(f"faults: {name} ...", flush=True)
        began = time.monotonic()
        try:
            run = await run_fault(
                started,
                fault,
                writers=args.writers,
                readers=args.readers,
                before=args.before,
                hold=args.hold,
                after=args.after,
                delivery_timeout=args.delivery_timeout,
            )
        except AssertionError as exc:  # a bounded wait ran out: the service did not come back
            out.append((name, None, [f"aborted: {exc}"]))
            continue
        failures = run.failures(fault)
        print(
            f"faults: {name} {'held' if not failures else 'FAILED'} in {time.monotonic() - began:.0f} s",
            flush=True,
        )
        out.append((name, run, failures))
    return out


def _row(name: str, run: FaultRun | None, failures: list[str]) -> str:
    if run is None:
        return f"| {name} | — | — | — | — | — | — | {failures[0]} |"
    r = run.reconciliation
    unanswered = r.stored_unacknowledged_creates + r.applied_unacknowledged_patches
    delivered = "all" if not run.undelivered else f"{len(run.undelivered)} missing"
    during = sum(run.during.values())
    refused = sum(n for k, n in run.during.items() if k.endswith((" 503", " transport")))
    return (
        f"| {name} | {r.acknowledged_changes} ({r.acknowledged_rows} rows) | {refused}/{during} | "
        f"{run.refused_ms_p50:.1f} / {run.refused_ms_max:.0f} | {run.recovery_seconds:.2f} | "
        f"{len(r.missing)} missing, {len(r.wrong)} wrong, {unanswered} unanswered-but-stored | "
        f"{delivered} ({run.delivery_wait_seconds:.1f} s) | "
        f"{'held' if not failures else 'FAILED: ' + '; '.join(failures)[:300]} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--faults", default=",".join(FAULTS), help="comma-separated, from: " + ", ".join(FAULTS)
    )
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--readers", type=int, default=8)
    parser.add_argument("--before", type=int, default=300, help="acknowledged writes before the fault")
    parser.add_argument("--hold", type=float, default=10.0, help="seconds the fault lasts")
    parser.add_argument("--after", type=int, default=300, help="acknowledged writes after healing")
    parser.add_argument("--delivery-timeout", type=float, default=60.0)
    args = parser.parse_args()
    names = [n.strip() for n in args.faults.split(",") if n.strip()]
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        parser.error(f"unknown faults: {unknown}")
    reason = available()
    if reason is not None:
        print(f"faults: cannot run: {reason}", file=sys.stderr)
        return 2

    started_at = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    with (
        tempfile.TemporaryDirectory(prefix="rampart-verify-faults-") as workdir,
        stack(Path(workdir)) as started,
    ):
        results = asyncio.run(_all(started, names, args))
        server_log_tail = started.server.output()[-4000:]

    payload: dict[str, Any] = {
        "kind": "faults",
        "started_at": started_at,
        "commit": _commit(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()},
        "config": {k: v for k, v in vars(args).items() if k != "faults"}
        | {"faults": names, "server_workers": 2},
        "runs": [
            {
                "fault": name,
                "held": not failures,
                "failures": failures,
                "run": dataclasses.asdict(run) if run is not None else None,
            }
            for name, run, failures in results
        ],
        "server_log_tail": server_log_tail,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"faults-{started_at}.json"
    path.write_text(json.dumps(payload, indent=1, default=str))

    print()
    print(
        "| fault | acknowledged changes | refused while faulty | refusal ms p50 / max | recovery s "
        "| stored vs acknowledged | events delivered | result |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, run, failures in results:
        print(_row(name, run, failures))
    print(f"\nfaults: wrote {path.relative_to(ROOT)}")
    held = all(not f or (run is None and f[0].startswith("not run")) for _, run, f in results)
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
