"""`make verify-fuzz`: schemathesis from the OpenAPI document against a real server, as three callers.

A fresh database and `rampart serve` (verify/_server.py). Then, for bob, alice and the admin in turn (the
admin last: it may disable other users), `st run` on /openapi.json with every phase (examples, coverage,
fuzzing, stateful) and every check, the caller's bearer token as a header, and verify/schemathesis.toml.
The run fails on any schemathesis failure or error, on a 5xx or an error line in the server's log, and on
a token that no longer works afterwards (the rest of its run would have been 401s).

Raw output goes to verify/results/fuzz-<time>/ (gitignored): each caller's console output, JSON and
JUnit reports, the server log, and summary.json/summary.md with the figures SECURITY.md quotes.

    .venv/bin/python verify/fuzz.py [--max-examples N] [--callers admin,alice,bob] [--seed S]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from _server import RESULTS, ROOT, Caller, Instance, running

ST = str(Path(sys.executable).with_name("st"))
CONFIG = ROOT / "verify" / "schemathesis.toml"
HOOKS = ROOT / "verify" / "fuzz_hooks.py"
PHASES = "examples,coverage,fuzzing,stateful"
# Logging out ends the only session of the run; every other operation is fuzzed (the live stream with a
# bounded read, see schemathesis.toml).
EXCLUDED_PATHS = ("/api/v1/auth/logout",)


def session_id(token: str) -> str:
    """The `sid` claim of an access token (read, not verified: it is our own token)."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims["sid"])


def run_caller(instance: Instance, caller: Caller, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One `st run` as `caller`; its figures from the JSON report."""
    reports = out / caller.name
    reports.mkdir(parents=True, exist_ok=True)
    command = [
        ST,
        "--config-file",
        str(CONFIG),
        "run",
        f"{instance.url}/openapi.json",
        "--phases",
        PHASES,
        "--checks",
        "all",
        "--max-examples",
        str(args.max_examples),
        "--seed",
        str(args.seed),
        "--workers",
        "1",
        "--request-timeout",
        "15",
        "--header",
        f"Authorization: Bearer {caller.token}",
        "--report",
        "json,junit",
        "--report-dir",
        str(reports),
        "--report-json-path",
        str(reports / "report.json"),
        "--report-junit-path",
        str(reports / "junit.xml"),
        "--no-color",
        "--generation-database",
        "none",
    ]
    for path in EXCLUDED_PATHS:
        command += ["--exclude-path", path]
    seed = instance.seed
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": str(HOOKS),
        "RAMPART_FUZZ_KEEP_SESSIONS": ",".join(session_id(c.token) for c in seed.callers),
        "RAMPART_FUZZ_KEEP_USERS": ",".join(c.id for c in seed.callers),
    }
    started = time.monotonic()
    with (reports / "console.txt").open("wb") as console:
        done = subprocess.run(command, env=env, stdout=console, stderr=subprocess.STDOUT, check=False)
    seconds = time.monotonic() - started
    report = json.loads((reports / "report.json").read_text())
    alive = httpx.get(f"{instance.url}/api/v1/auth/me", headers=caller.headers, timeout=10).status_code
    cases = report["test_cases"]
    return {
        "caller": caller.name,
        "role": caller.role,
        "exit_code": done.returncode,
        "seconds": round(seconds, 1),
        "operations_selected": report["operations"]["selected"],
        "operations_tested": report["operations"]["tested"],
        "phases": {name: phase["status"] for name, phase in report["phases"].items()},
        "cases_generated": cases["generated"],
        "cases_with_failures": cases["with_failures"],
        "unique_failures": cases["unique_failures"],
        "errored": cases["errored"],
        "failures": report["failures"],
        "errors": report["errors"],
        "token_alive_after": alive == 200,
    }


def markdown(summary: dict[str, Any]) -> str:
    lines = [
        f"# verify-fuzz {summary['started']}",
        "",
        f"schemathesis {summary['schemathesis']}, phases {PHASES}, checks all, "
        f"max examples {summary['max_examples']}, seed {summary['seed']}",
        "",
        "| caller | operations tested | cases generated | failures | errors | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for run in summary["runs"]:
        lines.append(
            f"| {run['caller']} ({run['role']}) | {run['operations_tested']}/{run['operations_selected']} "
            f"| {run['cases_generated']} | {run['unique_failures']} | {run['errored']} | {run['seconds']} |"
        )
    lines += [
        "",
        f"Server responses: {summary['responses']} ({summary['statuses']}); "
        f"5xx or error log lines: {len(summary['server_errors'])}",
        f"Verdict: {'PASS' if summary['ok'] else 'FAIL'}",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--max-examples", type=int, default=100, help="per operation and phase")
    parser.add_argument("--callers", default="bob,alice,admin", help="in this order (admin last)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    stamp = time.strftime("%Y%m%dT%H%M%S")
    out = RESULTS / f"fuzz-{stamp}"
    started = time.monotonic()
    with running(out) as instance:
        by_name = {c.name: c for c in instance.seed.callers}
        runs = []
        for name in args.callers.split(","):
            print(f"verify-fuzz: st run as {name} ...", flush=True)
            run = run_caller(instance, by_name[name], out, args)
            print(
                f"  {run['operations_tested']} operations, {run['cases_generated']} cases, "
                f"{run['unique_failures']} failures, {run['errored']} errors, {run['seconds']} s",
                flush=True,
            )
            runs.append(run)
        statuses = instance.status_counts()
        server_errors = instance.server_errors()
        log_copy = out / "server.log"
        log_copy.write_bytes(instance.log.read_bytes())
    version = subprocess.run([ST, "--version"], capture_output=True, text=True, check=False).stdout.split()[
        -1
    ]
    ok = (
        not server_errors
        and all(r["exit_code"] == 0 and not r["failures"] and not r["errors"] for r in runs)
        and all(r["token_alive_after"] for r in runs)
    )
    summary = {
        "started": stamp,
        "schemathesis": version,
        "max_examples": args.max_examples,
        "seed": args.seed,
        "seconds": round(time.monotonic() - started, 1),
        "runs": runs,
        "responses": sum(statuses.values()),
        "statuses": dict(sorted(statuses.items())),
        "server_errors": server_errors[:50],
        "ok": ok,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(markdown(summary))
    print(markdown(summary))
    for run in runs:
        if not run["token_alive_after"]:
            print(f"verify-fuzz: {run['caller']}'s token stopped working during its run", file=sys.stderr)
        if run["failures"] or run["errors"] or run["exit_code"]:
            print(f"verify-fuzz: {run['caller']}: see {out / run['caller'] / 'console.txt'}", file=sys.stderr)
    for line in server_errors[:10]:
        print(f"verify-fuzz: server: {line[:400]}", file=sys.stderr)
    print(f"verify-fuzz: {'PASS' if ok else 'FAIL'} ({out})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
