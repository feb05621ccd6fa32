"""Regenerate BENCHMARKS.md (repo root) from results JSON files.

    .venv/bin/python bench/markdown.py bench/results/20261126T083810Z.json
    .venv/bin/python bench/markdown.py bench/results/scale-20261126T090000Z.json
    .venv/bin/python bench/markdown.py            # the newest of each kind in bench/results/

The page has three parts, each generated from one file: the comparison (compare.py: table, chart,
targets, method, machine, command), the scale curve (scale.py) and the Citus comparison
(citus_compare.py, rendered by markdown_citus.py). A file given on the command
line replaces the part of its kind; the other part comes from the newest file of its kind in
bench/results/. The comparison's chart PNG (bench/chart.py) is drawn next to its JSON when
matplotlib is installed and the PNG is missing (``--chart`` redraws it anyway).
compare.py and scale.py call this at their end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import chart
import cpu_table
import markdown_citus
import report

REPO_ROOT = Path(__file__).resolve().parent.parent
OUT = REPO_ROOT / "BENCHMARKS.md"
RESULTS_DIR = report.RESULTS_DIR
SCENARIOS = ("get", "list", "patch", "create")
DESCRIPTIONS = {
    "get": "`GET /api/v1/tasks/{id}`, a random task of a random user",
    "list": "`GET /api/v1/tasks?status=todo&priority[gte]=2&sort=-priority&limit=20`",
    "patch": '`PATCH /api/v1/tasks/{id}` `{"priority": n}` on the user\'s own task',
    "create": "`POST /api/v1/tasks` into the user's own project",
}
# Issue 3's targets (rate ratios are Rampart / Express).
RATE_TARGETS = {"get": 3.0, "list": 2.0, "patch": 1.5, "create": 1.5}
P99_TARGET = 0.5
PGBENCH_SHARE_TARGET = 0.25
RSS_TARGET_MB = 100.0  # per worker, MB = 10^6 bytes
DEFAULTS = {"rounds": 3, "duration_s": 15.0, "warmup_s": 3.0, "workers": 2, "pool_per_worker": 10}


# ---- finding the files -------------------------------------------------------------------------


def kind_of(path: Path) -> str:
    return str(json.loads(path.read_text()).get("kind", "compare"))


def newest(kind: str) -> Path | None:
    """The newest results file of ``kind`` (names are UTC timestamps, so they sort by time)."""
    pattern = {"scale": "scale-*.json", "citus": "citus-*.json"}.get(kind, "[0-9]*.json")
    files = sorted(RESULTS_DIR.glob(pattern))
    return files[-1] if files else None


def rel(path: Path) -> str:
    try:
        return path.resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path)


# ---- formatting ---------------------------------------------------------------------------------


def fr(x: float | None) -> str:
    return report.fmt_rate(x)


def fms(x: float | None) -> str:
    return report.fmt_ms(x)


def fx(x: float | None) -> str:
    return report.fmt_ratio(x)


def mark(s: dict[str, Any] | None) -> str:
    if not s:
        return ""
    m = report.flag_mark(s)
    return f" {m}" if m else ""


def mb(mib: float) -> float:
    return mib * 1.048576


def is_quick(cfg: dict[str, Any]) -> bool:
    return int(cfg.get("rounds", 0)) < 3 or float(cfg.get("duration_s", 0)) < 15


def reconstruct_command(cfg: dict[str, Any]) -> str:
    """The compare.py command for a run whose JSON predates the recorded ``command``."""
    args = ["bench/compare.py"]
    sides = cfg.get("sides", ["express", "rampart"])
    if len(sides) == 1:
        args += ["--only", sides[0]]
    if (cfg.get("rounds"), cfg.get("duration_s"), cfg.get("warmup_s")) == (1, 5.0, 1.0):
        args.append("--quick")
    else:
        for key, flag in (("rounds", "--rounds"), ("duration_s", "--duration"), ("warmup_s", "--warmup")):
            if cfg.get(key) != DEFAULTS[key]:
                args += [flag, f"{cfg[key]:g}" if isinstance(cfg[key], float) else str(cfg[key])]
    for key, flag in (("workers", "--workers"), ("pool_per_worker", "--pool")):
        if key in cfg and cfg[key] != DEFAULTS[key]:
            args += [flag, str(cfg[key])]
    scen = cfg.get("scenarios", list(SCENARIOS))
    if list(scen) != list(SCENARIOS):
        args += ["--scenarios", ",".join(scen)]
    return shlex.join(args)


def machine(payload: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The run's recorded machine facts, completed from this machine for older files (named)."""
    m = dict(payload.get("machine", {}))
    filled: list[str] = []
    live = report.machine_info()
    for key in ("cpu_model", "memory_gib"):
        if m.get(key) is None and live.get(key) is not None:
            m[key] = live[key]
            filled.append(key)
    if not m.get("postgresql"):
        version = _pg_version()
        if version:
            m["postgresql"] = version
            filled.append("postgresql")
    return m, filled


def _pg_version() -> str | None:
    try:
        import database

        return asyncio.run(
            asyncio.wait_for(
                database.server_version("postgresql://postgres@127.0.0.1:5432/postgres"), timeout=5
            )
        )
    except Exception:  # best effort: the page is still written without it
        return None


# ---- the comparison -----------------------------------------------------------------------------


def banner(payload: dict[str, Any], path: Path) -> list[str]:
    cfg = payload.get("config", {})
    problems = []
    if is_quick(cfg):
        problems.append(
            f"a **quick** run ({cfg.get('rounds')} round x {cfg.get('duration_s', 0):g} s, "
            f"{cfg.get('warmup_s', 0):g} s warm-up), not the ≥ 3 alternating rounds x 15 s the targets need"
        )
    scen = cfg.get("scenarios", list(SCENARIOS))
    if list(scen) != list(SCENARIOS):
        missing = [s for s in SCENARIOS if s not in scen]
        problems.append(f"only the {', '.join(scen)} scenarios ({', '.join(missing)} not run)")
    if len(cfg.get("sides", [])) < 2:
        problems.append(f"one side only ({', '.join(cfg.get('sides', []))}): no ratios")
    if payload.get("disturbed"):
        problems.append(
            f"**disturbed**: other work used the CPUs during {len(payload['disturbed'])} measured run(s) "
            "(see below)"
        )
    if payload.get("flags"):
        problems.append(f"**flagged**: {len(payload['flags'])} run(s) had unexpected responses or errors")
    if payload.get("error"):
        problems.append(f"cut short by an error: {payload['error']}")
    lines = [
        f"Run of {payload.get('started_at', '?')} (`{rel(path)}`, {payload.get('elapsed_s', '?')} s in all)."
    ]
    if problems:
        lines += [
            "",
            "> **These figures are not results.** The run was " + "; ".join(problems) + ". "
            "They show the harness works and give a direction only; one run moves by up to ±25% "
            "on this machine. The lead runs `make bench` on a quiet machine for the real figures.",
        ]
    return lines


def comparison_section(payload: dict[str, Any], path: Path) -> list[str]:
    summary: dict[str, dict[str, Any]] = payload.get("summary", {})
    ex, ra = summary.get("express", {}), summary.get("rampart", {})
    names = [n for n in SCENARIOS if n in ex or n in ra]
    out = ["## Rampart vs Express", "", *banner(payload, path), ""]
    out += [
        "| scenario | unit | Express | p50 ms | p99 ms | Rampart | p50 ms | p99 ms | R/E rate | R/E p99 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n in names:
        e, r = ex.get(n), ra.get(n)
        unit = (e or r or {}).get("unit", "req/s")
        rate_r = report.ratio(r["rate"], e["rate"]) if e and r else None
        p99_r = report.ratio(r["p99_ms"], e["p99_ms"]) if e and r else None
        out.append(
            f"| {n} | {unit} | {fr(e['rate']) if e else '-'}{mark(e)} | {fms(e['p50_ms']) if e else '-'} | "
            f"{fms(e['p99_ms']) if e else '-'} | {fr(r['rate']) if r else '-'}{mark(r)} | "
            f"{fms(r['p50_ms']) if r else '-'} | {fms(r['p99_ms']) if r else '-'} | "
            f"{fx(rate_r)} | {fx(p99_r)} |"
        )
    out += [
        "",
        "Rates: median over rounds of the responses with the expected status (200; 201 for create) per "
        "second. p50/p99: medians of each round's percentile. R/E rate above 1.00x: Rampart is faster; "
        "R/E p99 below 1.00x: Rampart's tail is shorter. `!` a round had unexpected responses or socket "
        "errors; `~` other work used the CPUs during a round.",
        "",
    ]
    pg = payload.get("pgbench", {})
    tps = pg.get("median_tps")
    if tps:
        runs = pg.get("runs", [])
        clients = sorted({r.get("clients") for r in runs})
        notes = sorted({r["note"] for r in runs if r.get("note")})
        busy = [r for r in runs if r.get("other_work_cores", 0) > 0.15]
        out.append(
            f"- **PostgreSQL limit** (pgbench, `-M prepared`, {', '.join(map(str, clients))} clients, "
            f"primary-key SELECT of the task columns on the seeded table, median of {len(runs)}): "
            f"**{tps:,.0f} tps**" + (" ~ (disturbed)" if busy else "") + "."
        )
        for note in notes:
            out.append(f"  - {note}")
        share = payload.get("get_share_of_pgbench", {})
        if share:
            out.append(
                "- **GET by id as a share of it**: "
                + ", ".join(f"{n} {v:.1%}" for n, v in sorted(share.items()))
                + "."
            )
    else:
        out.append("- PostgreSQL limit: not measured in this run (`--no-pgbench`).")
    for side, r in sorted(payload.get("rss", {}).items()):
        s = r.get("summary") or {}
        if s:
            out.append(
                f"- **Worker RSS** after the scenarios, {side} ({s['workers']} workers, max over rounds): "
                f"sum {s['sum_mib_max']:.0f} MiB, largest {s['max_mib_max']:.0f} MiB "
                f"({mb(s['max_mib_max']):.0f} MB)."
            )
    seeds = payload.get("seed", {})
    if seeds:
        out.append(
            "- Seeding through the API: "
            + "; ".join(
                f"{n} {v['tasks']:,} tasks, {v['requests']:,} requests in {v['seconds']:g} s"
                for n, v in sorted(seeds.items())
            )
            + "."
        )
    png = chart.png_path(path)
    if png.exists():
        out += ["", f"![req/s and p99 per scenario, Express and Rampart]({rel(png)})", ""]
        out.append(f"Chart: [`{rel(png)}`]({rel(png)}) (whiskers: min-max rate over rounds).")
    else:
        out += ["", f"(No chart: `{rel(png)}` was not drawn; `.venv/bin/python bench/chart.py {rel(path)}`.)"]
    out.append("")
    has_cpu = any(
        "server_cpu_us_per_request" in scenario
        for rounds in payload.get("rounds", {}).values()
        for r in rounds
        for scenario in r.values()
        if isinstance(scenario, dict)
    )
    if has_cpu:
        out += [
            "### CPU per request",
            "",
            "CPU time per answered request, of the server's processes and of its PostgreSQL backends (from "
            "`/proc`, medians over rounds). It measures work, not waiting, so it compares the two sides even "
            "when other work shares the cores; on this CPU-bound machine the rate ratio roughly follows "
            "its inverse.",
            "",
            cpu_table.markdown(payload),
            "",
        ]
    if payload.get("flags") or payload.get("disturbed"):
        out += ["### Flags and disturbance", ""]
        out += [f"- FLAGGED {line}" for line in payload.get("flags", [])]
        out += [f"- DISTURBED {line}" for line in payload.get("disturbed", [])]
        out.append("")
    out += targets_section(payload)
    return out


def _status(ok: bool | None) -> str:
    return "not measured" if ok is None else ("**met**" if ok else "**not met**")


def targets_section(payload: dict[str, Any]) -> list[str]:
    summary = payload.get("summary", {})
    ex, ra = summary.get("express", {}), summary.get("rampart", {})
    cfg = payload.get("config", {})
    out = [
        "## Targets (issue 3)",
        "",
        "| target | measured | status |",
        "| --- | ---: | --- |",
    ]
    for n, goal in RATE_TARGETS.items():
        e, r = ex.get(n), ra.get(n)
        x = report.ratio(r["rate"], e["rate"]) if e and r else None
        out.append(
            f"| {n}: rate ≥ {goal:.1f}x Express | {fx(x)} | {_status(None if x is None else x >= goal)} |"
        )
    for n in SCENARIOS:
        e, r = ex.get(n), ra.get(n)
        x = report.ratio(r["p99_ms"], e["p99_ms"]) if e and r else None
        detail = (
            f"{fx(x)} ({fms(r['p99_ms'])} vs {fms(e['p99_ms'])} ms)" if e and r and x is not None else "-"
        )
        out.append(
            f"| {n}: p99 ≤ {P99_TARGET:.1f}x Express's | {detail} | "
            f"{_status(None if x is None else x <= P99_TARGET)} |"
        )
    share = payload.get("get_share_of_pgbench", {}).get("rampart")
    out.append(
        f"| GET by id ≥ {PGBENCH_SHARE_TARGET:.0%} of the pgbench limit | "
        f"{'-' if share is None else f'{share:.1%}'} | "
        f"{_status(None if share is None else share >= PGBENCH_SHARE_TARGET)} |"
    )
    rss = (payload.get("rss", {}).get("rampart") or {}).get("summary") or {}
    largest = mb(rss["max_mib_max"]) if rss else None
    out.append(
        f"| worker RSS ≤ {RSS_TARGET_MB:.0f} MB after the run (largest worker) | "
        f"{'-' if largest is None else f'{largest:.0f} MB'} | "
        f"{_status(None if largest is None else largest <= RSS_TARGET_MB)} |"
    )
    out.append("| no RSS growth over a 10-minute mixed-load soak | - | not measured by this harness |")
    valid = not is_quick(cfg) and not payload.get("disturbed") and not payload.get("flags")
    out += [
        "",
        (
            "Measured on a run that qualifies (≥ 3 alternating rounds x 15 s, not disturbed, not flagged)."
            if valid
            else "**Indicative only**: this run does not qualify as evidence for the targets "
            "(they need medians of ≥ 3 alternating rounds x 15 s on a quiet machine, no flags); "
            "met/not met says where the measured figure falls, nothing more."
        ),
        "",
        "Where the time goes (profiles, wait events, CPU per request), each change that moved a figure, and"
        " what would close each target not met: [docs/performance-notes.md](docs/performance-notes.md)."
        " The soak target is measured by `make verify-soak` (RELIABILITY.md).",
        "",
    ]
    return out


def method_section(payload: dict[str, Any] | None) -> list[str]:
    cfg = (payload or {}).get("config", {})
    users = cfg.get("users", 100)
    tpu = cfg.get("tasks_per_user", 200)
    return [
        "## Method",
        "",
        f"- The same data on each side, seeded through each one's own API: {users} users x 1 project x "
        f"{tpu} tasks ({users * tpu:,} tasks; statuses cycling, priorities 0-5, some due dates).",
        "- Scenarios, each a wrk Lua script that sends `Authorization: Bearer <token>` for a random "
        "seeded user per request (no hot session, no hot row):",
        *[f"  - `{n}`: {d}" for n, d in DESCRIPTIONS.items()],
        f"- wrk {cfg.get('threads', 2)} threads x {cfg.get('connections', 64)} connections, "
        f"{cfg.get('duration_s', 15):g} s per scenario after a {cfg.get('warmup_s', 3):g} s warm-up that is "
        "not counted (`make bench`: 15 s + 3 s; `make bench-quick`: 5 s + 1 s, one round).",
        f"- Alternating rounds (Express, Rampart, Express, ...; {cfg.get('rounds', 3)} in this run, "
        "3 for `make bench`); each server started fresh for its turn, on a database brought back to its "
        "seeded state (created rows deleted, `VACUUM (ANALYZE) tasks`, `CHECKPOINT`). Figures are medians "
        "over rounds; ratios are Rampart / Express.",
        f"- Same shape for both: {cfg.get('workers', 2)} workers, a pool of {cfg.get('pool_per_worker', 10)} "
        "connections per worker, rate limiter on with limits above the load, access log off, "
        "production mode.",
        "- Only responses with the expected status count; any other status or socket error flags the "
        "run (`!`). A preflight request per scenario checks the answers themselves (list filtered and "
        "sorted, another user's task a 404, the PATCH applied, the POST a 201); after `create` the rows "
        "in the database must match the 201s.",
        "- pgbench (64 clients, `-M prepared`, the same duration, after each round with no server up) "
        "gives PostgreSQL's own limit for the primary-key SELECT; GET by id is reported as a share of it.",
        "- Worker RSS: the server's worker processes (leaves of its process tree, from `/proc`) after "
        "the scenarios.",
        "- **Noise**: on this 2-core machine wrk, the server and PostgreSQL share both cores and one run "
        "moves by up to **±25%** from the next; never compare single runs, and a ratio that moved by "
        "less than ~10% between comparisons is not a change.",
        "- **Disturbance flag** (`~`): the CPU used during each measured run by processes outside the "
        "benchmark is recorded, and so is the CPU time the hypervisor gave to other guests (steal); "
        "above 0.15 cores of either the run is marked disturbed (the machine is shared with test "
        "suites, and may be a virtual machine).",
        "- wrk (not wrk2) is closed-loop: under saturation p99 understates what an open-loop client sees, "
        "for both sides alike.",
        "",
        "Details: [bench/README.md](bench/README.md), "
        "[docs/decisions/0006-benchmark-method.md](docs/decisions/0006-benchmark-method.md).",
        "",
    ]


def machine_section(payload: dict[str, Any]) -> list[str]:
    m, filled = machine(payload)
    note = " (read when this page was generated, not recorded in the run's JSON)"

    def row(label: str, key: str, value: Any) -> str:
        return f"| {label} | {value if value is not None else '-'}{note if key in filled else ''} |"

    return [
        "## Machine",
        "",
        "| | |",
        "| --- | --- |",
        row("CPUs (`nproc`)", "cpus", m.get("cpus")),
        row("CPU model (/proc/cpuinfo)", "cpu_model", m.get("cpu_model")),
        row(
            "memory",
            "memory_gib",
            f"{m['memory_gib']:g} GiB" if m.get("memory_gib") is not None else None,
        ),
        row("PostgreSQL", "postgresql", m.get("postgresql")),
        row("Node", "node", m.get("node")),
        row("Python", "python", m.get("python")),
        row("wrk", "wrk", m.get("wrk")),
        row("pgbench", "pgbench", m.get("pgbench")),
        row("platform", "platform", m.get("platform")),
        "",
        "PostgreSQL runs on the same machine (loopback), shared by wrk, both servers and pgbench.",
        "",
    ]


def command_section(payload: dict[str, Any]) -> list[str]:
    cmd = payload.get("command")
    how = "the command that produced it"
    if not cmd:
        cmd = reconstruct_command(payload.get("config", {}))
        how = "the command that produced it (reconstructed from the configuration the JSON records)"
    return [
        "## Command",
        "",
        f"This run, {how}:",
        "",
        "```sh",
        f".venv/bin/python {cmd}",
        "```",
        "",
        "The full comparison and the quick check (each writes `bench/results/<timestamp>.json`, the chart "
        "next to it, and regenerates this page):",
        "",
        "```sh",
        "make bench          # 3 alternating rounds x 15 s (+3 s warm-up), all four scenarios (~10 min)",
        "make bench-quick    # 1 round x 5 s (+1 s warm-up): a couple of minutes, checks it works",
        "make bench-scale    # the scale curve below (long)",
        ".venv/bin/python bench/markdown.py bench/results/<timestamp>.json   # this page from a JSON",
        "```",
        "",
    ]


# ---- the scale curve ----------------------------------------------------------------------------


def scale_section(payload: dict[str, Any] | None, path: Path | None) -> list[str]:
    out = ["## Scale curve", ""]
    if payload is None or path is None:
        return [
            *out,
            "Not run yet. `make bench-scale` (or `.venv/bin/python bench/scale.py`) runs the scenarios "
            "with 1, 2 and 4 workers at 10k, 100k and 1M tasks and fills this section.",
            "",
        ]
    cfg = payload.get("config", {})
    points: list[dict[str, Any]] = payload.get("points", [])
    names = [n for n in SCENARIOS if any(n in p["summary"] for p in points)]
    problems = []
    if float(cfg.get("duration_s", 0)) < 15:
        problems.append(f"**short** runs ({cfg.get('duration_s', 0):g} s per scenario)")
    if len(cfg.get("sides", [])) < 2:
        problems.append(f"{', '.join(cfg.get('sides', []))} only")
    if list(cfg.get("scenarios", SCENARIOS)) != list(SCENARIOS):
        problems.append(f"scenarios {', '.join(cfg.get('scenarios', []))} only")
    if payload.get("disturbed"):
        problems.append(f"**disturbed** ({len(payload['disturbed'])} measured runs)")
    if payload.get("flags"):
        problems.append(f"**flagged** ({len(payload['flags'])} runs)")
    if payload.get("error"):
        problems.append(f"cut short: {payload['error']}")
    out.append(
        f"Run of {payload.get('started_at', '?')} (`{rel(path)}`, {payload.get('elapsed_s', '?')} s in all): "
        f"tasks {', '.join(f'{t:,}' for t in cfg.get('tasks', []))}; workers "
        f"{', '.join(map(str, cfg.get('workers', [])))}; {cfg.get('rounds', 1)} round(s) x "
        f"{cfg.get('duration_s', 0):g} s per scenario (+{cfg.get('warmup_s', 0):g} s warm-up), wrk "
        f"{cfg.get('threads', 2)} x {cfg.get('connections', 64)}, pool {cfg.get('pool_per_worker', 10)} "
        f"per worker; CPU: {payload.get('machine', {}).get('cpu_model', 'not recorded')} (the scale run may "
        "be older than the comparison above, and on another machine: compare its rows with each other)."
    )
    if problems:
        out += [
            "",
            "> **Not results: a check that the harness works** (" + "; ".join(problems) + ").",
        ]
    out.append("")
    head = (
        "| side | tasks | workers | "
        + " | ".join(f"{n} rate | {n} p99 ms" for n in names)
        + " | worker RSS max |"
    )
    out += [head, "| --- | ---: | ---: | " + " | ".join("---: | ---:" for _ in names) + " | ---: |"]
    for p in sorted(points, key=lambda p: (p["side"], p["tasks"], p["workers"])):
        cells = []
        for n in names:
            s = p["summary"].get(n)
            cells.append(f"{fr(s['rate'])}{mark(s)} | {fms(s['p99_ms'])}" if s else "- | -")
        rss = p.get("rss") or {}
        rss_cell = f"{rss['max_mib_max']:.0f} MiB" if rss else "-"
        out.append(
            f"| {p['side']} | {p['tasks']:,} | {p['workers']} | " + " | ".join(cells) + f" | {rss_cell} |"
        )
    out.append("")
    pg_rows = [
        f"{s['target']:,} tasks: {s['pgbench']['tps']:,.0f} tps"
        for s in payload.get("sizes", [])
        if s.get("pgbench")
    ]
    if pg_rows:
        out += [
            "pgbench limit per size (prepared PK SELECT, no server running): " + "; ".join(pg_rows) + ".",
            "",
        ]
    bulk_rows = [
        f"{side} {v['tasks']:,} tasks ({v['bulk_inserted']:,} by SQL in {v['bulk_seconds']:g} s)"
        for s in payload.get("sizes", [])
        for side, v in sorted(s.get("sides", {}).items())
    ]
    png = chart.png_path(path)
    if png.exists():
        out += [f"![scale curve]({rel(png)})", ""]
    out += [
        "How the data is made:",
        "",
        f"- Through the API first, as in the comparison, but only up to the smallest size: "
        f"{cfg.get('users', 100)} users x {cfg.get('api_seeded_tasks_per_user', '?')} tasks (at most the "
        "comparison's 20,000).",
        "- **Above that, the extra tasks are bulk-inserted with SQL**, not through the API (a million "
        "tasks through the API would take hours here): `COPY` into `tasks`, spread evenly over the seeded "
        "users' own projects, with valid values (statuses cycling, priorities 0-5, some due dates), "
        "version 1, UUIDv7 ids like the servers' own, in a session with `session_replication_role = "
        "replica` (no per-row triggers: no cache-invalidation NOTIFYs, no change events for these rows; "
        "the foreign keys hold by construction). Then `VACUUM (ANALYZE) tasks` and `CHECKPOINT`. "
        "See `bench/bulk.py`.",
        f"- The wrk scripts pick, per user, among up to {cfg.get('wrk_ids_per_user', 2000):,} of that "
        "user's task ids drawn uniformly from the whole table, so GET and PATCH touch all of it; the "
        "filtered list works on a user's share of the table (1/100 of it).",
        "- Each (size, workers) point: every side started fresh with that many workers (pool per worker "
        "unchanged), same warm-up, same checks and flags as the comparison.",
        "",
        "Sizes reached: " + "; ".join(bulk_rows) + "." if bulk_rows else "",
        "",
        "Command:",
        "",
        "```sh",
        f".venv/bin/python {payload.get('command', 'bench/scale.py')}",
        "```",
        "",
    ]
    return out


# ---- the page -----------------------------------------------------------------------------------


def render(
    compare: dict[str, Any] | None,
    compare_path: Path | None,
    scale: dict[str, Any] | None,
    scale_path: Path | None,
    citus: dict[str, Any] | None = None,
    citus_path: Path | None = None,
) -> str:
    src = [rel(p) for p in (compare_path, scale_path, citus_path) if p]
    out = [
        "# Benchmarks",
        "",
        "<!-- Generated by bench/markdown.py from "
        + (" and ".join(src) or "no results")
        + ": do not edit by hand; re-run `.venv/bin/python bench/markdown.py` instead. -->",
        "",
        "Rampart against the Express + pg reference (`shared/anchors/express`) on the same machine, with "
        "the same data, the same four scenarios and the same checks on every request "
        "(`bench/`, decision 0006). Issue 3 sets the targets.",
        "",
    ]
    if compare is not None and compare_path is not None:
        out += comparison_section(compare, compare_path)
    else:
        out += ["## Rampart vs Express", "", "No comparison results yet: `make bench`.", ""]
    out += scale_section(scale, scale_path)
    out += markdown_citus.section(citus, citus_path, rel)
    out += method_section(compare)
    if compare is not None:
        out += machine_section(compare)
        out += command_section(compare)
    text = "\n".join(out)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.rstrip() + "\n"


def update(
    compare_path: Path | None = None,
    scale_path: Path | None = None,
    out: Path = OUT,
    *,
    redraw: bool = False,
    citus_path: Path | None = None,
) -> Path:
    """Rewrite ``out`` from ``compare_path``/``scale_path``/``citus_path`` (the newest of their kind when
    None)."""
    compare_path = compare_path or newest("compare")
    scale_path = scale_path or newest("scale")
    citus_path = citus_path or newest("citus")
    compare = json.loads(compare_path.read_text()) if compare_path else None
    scale = json.loads(scale_path.read_text()) if scale_path else None
    citus = json.loads(citus_path.read_text()) if citus_path else None
    for payload, path in ((compare, compare_path), (scale, scale_path)):
        if payload is not None and path is not None and (redraw or not chart.png_path(path).exists()):
            try:
                chart.write_chart(payload, path)
            except chart.ChartUnavailable as exc:
                print(f"note: no chart: {exc}", file=sys.stderr)
    text = render(compare, compare_path, scale, scale_path, citus, citus_path)
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("results", nargs="*", type=Path, help="results JSON files (compare and/or scale)")
    parser.add_argument("--out", type=Path, default=OUT, help="default: BENCHMARKS.md at the repo root")
    parser.add_argument("--chart", action="store_true", help="redraw the charts even if the PNGs exist")
    args = parser.parse_args(argv)
    compare_path = scale_path = citus_path = None
    for path in args.results:
        if kind_of(path) == "scale":
            scale_path = path
        elif kind_of(path) == "citus":
            citus_path = path
        else:
            compare_path = path
    print(update(compare_path, scale_path, args.out, redraw=args.chart, citus_path=citus_path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
