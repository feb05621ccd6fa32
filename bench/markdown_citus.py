"""BENCHMARKS.md's Citus section, from the newest bench/results/citus-*.json (bench/citus_compare.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SCENARIOS = ("get", "list", "patch", "create")
NAMES = {"get": "GET by id", "list": "filtered list", "patch": "PATCH", "create": "create"}
OTHER_WORK_LIMIT = 0.15  # cores, as scenarios.py marks a disturbed run


def _rate(s: dict[str, Any] | None) -> str:
    if not s:
        return "–"
    mark = " !" if s.get("flagged") else (" ~" if s.get("other_work_cores", 0) > OTHER_WORK_LIMIT else "")
    return f"{s['rate']:,.0f}{mark}"


def _lat(s: dict[str, Any] | None) -> str:
    return f"{s['p50_ms']} / {s['p99_ms']}" if s else "–"


def _ratio(one: dict[str, Any] | None, many: dict[str, Any] | None) -> str:
    return f"{many['rate'] / one['rate']:.0%}" if one and many and one["rate"] else "–"


def _table(results: dict[str, dict[str, Any]], names: list[str]) -> list[str]:
    single, citus = results.get("single", {}), results.get("citus", {})
    rows = [
        "| Scenario | One server, req/s | p50 / p99 ms | Coordinator + 2 workers, req/s | p50 / p99 ms"
        " | Cluster / one server |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        one, many = single.get(name), citus.get(name)
        cells = [NAMES[name], _rate(one), _lat(one), _rate(many), _lat(many), _ratio(one, many)]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _cpu(payload: dict[str, Any], names: list[str]) -> tuple[list[str], dict[str, dict[str, float]]]:
    """CPU per request: Rampart's workers, the single node, the coordinator and the 2 workers."""
    nodes = payload.get("nodes", {})
    single_port, (coordinator, *workers) = str(nodes["single"][0]), [str(p) for p in nodes["citus"]]
    rows = [
        "| Scenario | Rampart, one server | One server's PostgreSQL | Rampart, cluster | Coordinator"
        " | Workers |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    per: dict[str, dict[str, float]] = {}
    for source in ("results", "uncached"):
        for name in names:
            one = payload.get(source, {}).get("single", {}).get(name)
            many = payload.get(source, {}).get("citus", {}).get(name)
            if not one or not many:
                continue
            label = NAMES[name] + (", row cache off" if source == "uncached" else "")
            db = one["node_cpu_us"].get(single_port, 0.0)
            coord = many["node_cpu_us"].get(coordinator, 0.0)
            work = sum(many["node_cpu_us"].get(w, 0.0) for w in workers)
            per[label] = {"single_db": db, "coordinator": coord, "workers": work}
            cells = [label, f"{one['server_cpu_us']:.0f}", f"{db:.0f}", f"{many['server_cpu_us']:.0f}"]
            rows.append("| " + " | ".join([*cells, f"{coord:.0f}", f"{work:.0f}"]) + " |")
    return rows, per


def _explain(payload: dict[str, Any]) -> list[str]:
    rows = ["| Scenario | Statement (as the manager sends it) | Shards asked |", "|---|---|---|"]
    for name in SCENARIOS:
        for step in payload.get("explain", {}).get(name, []):
            counts = step["task_counts"]
            asked = ", then ".join(str(c) for c in counts) if counts else "the coordinator"
            if step.get("on_coordinator"):
                asked = "the coordinator (its own tables)"
            if step["subplans"]:
                asked += f" ({step['subplans']} subplans first)"
            statement = step["statement"].replace("|", "\\|")
            if len(statement) > 110:
                statement = statement[:107] + "..."
            rows.append(f"| {NAMES[name]} | `{statement}` | {asked} |")
    return rows


def _projection(per: dict[str, dict[str, float]]) -> list[str]:
    """Per core, from the CPU each request cost: what a coordinator core routes, a worker core executes
    and one server's core does; N workers give min(coordinator, N x workers)."""
    rows = [
        "| Scenario | One server, per core | Coordinator, per core | Workers, per core | 2 workers"
        " | 4 workers | 8 workers |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, cpu in per.items():
        # Only where the database does the work (a cached read costs it next to nothing on either side).
        if cpu["single_db"] < 20 or not (cpu["coordinator"] and cpu["workers"]):
            continue
        one, coord, work = (1e6 / cpu[k] for k in ("single_db", "coordinator", "workers"))
        # A worker machine as big as the one server: N machines hold N times its cores; one coordinator
        # machine of the same size routes for all of them.
        bounds = [min(coord, n * work) / one for n in (2, 4, 8)]
        rows.append(
            f"| {label} | {one:,.0f}/s | {coord:,.0f}/s | {work:,.0f}/s | "
            + " | ".join(f"{b:.1f}×" for b in bounds)
            + " |"
        )
    return rows


def section(payload: dict[str, Any] | None, path: Path | None, rel: Any) -> list[str]:
    out = ["## Citus: one server against a coordinator and 2 workers", ""]
    if payload is None or path is None:
        return [*out, "Not run yet: `.venv/bin/python bench/citus_compare.py`.", ""]
    cfg = payload.get("config", {})
    names = [n for n in SCENARIOS if n in payload.get("results", {}).get("citus", {})]
    disturbed = [
        f"{side} {name}"
        for source in ("results", "uncached")
        for side, results in payload.get(source, {}).items()
        for name, s in results.items()
        if s.get("other_work_cores", 0) > OTHER_WORK_LIMIT or s.get("flagged")
    ]
    before, after = payload.get("loadavg_before", 0), payload.get("loadavg_after", 0)
    load = f"load average {before:.2f} before and {after:.2f} after"
    shape = f"{cfg.get('users')} users x {cfg.get('tasks_per_user')} tasks"
    rounds = (
        f"{cfg.get('rounds')} alternating round(s) x {cfg.get('duration_s', 0):g} s per scenario"
        f" (+{cfg.get('warmup_s', 0):g} s warm-up)"
    )
    serve = (
        f"wrk {cfg.get('threads')} x {cfg.get('connections')}, `rampart serve --workers {cfg.get('workers')}`"
        f" with a pool of {cfg.get('pool_per_worker')} per worker"
    )
    cores = payload.get("machine", {}).get("cpus", "?")
    out += [
        f"Run of {payload.get('started_at', '?')} (`{rel(path)}`, {payload.get('seconds', '?')} s in all),"
        f" {load}: {shape}, {rounds}, {serve}, {cfg.get('shards_per_table')} shards per table. Every node"
        " is a private PostgreSQL 15 server with the same settings (fsync off, synchronous commit, 32 MB"
        f" shared buffers; `tests/pgservers.py`), all on this machine's {cores} cores with Rampart and wrk:"
        " the cluster's nodes share the cores the single node had alone. The best round of each is shown"
        " (`~`: other work used more than 0.15 cores meanwhile; `!`: unexpected answers).",
        "",
    ]
    if disturbed:
        listed = ", ".join(disturbed[:6])
        out += [
            f"> Other work shared the machine during {len(disturbed)} measured run(s) ({listed}):"
            " read the ratios, not the absolute rates.",
            "",
        ]
    out += _table(payload.get("results", {}), names)
    uncached = payload.get("uncached", {})
    if uncached.get("citus"):
        reads = [n for n in SCENARIOS if n in uncached["citus"]]
        out += [
            "",
            "The reads again with the row cache off (`RAMPART_CACHE=off`): what the database answers.",
            "",
        ]
        out += _table(uncached, reads)
    cpu_rows, per = _cpu(payload, names)
    out += [
        "",
        "**Where the time goes** (CPU µs per request, the best round: Rampart's worker processes and each"
        " PostgreSQL server's processes, from `/proc`):",
        "",
        *cpu_rows,
        "",
        "**Which statements go to one shard** (the statements each scenario's request ran on the cluster,"
        " captured from the manager and EXPLAINed; 8 shards per table):",
        "",
        *_explain(payload),
        "",
        "**What N machines would give, on paper.** One machine cannot show a speed-up: the coordinator and"
        " both workers take turns on the same cores, and each request pays an extra hop. From the CPU each"
        " request cost above: a request that goes to one shard costs the coordinator its routing and the"
        " worker its work; on N worker machines, each as big as the one server, with one coordinator machine"
        " of that size, the rate is bounded by the coordinator (its cores ÷ its CPU per request) and by the"
        " workers (N × their cores ÷ their CPU per request), against the one server's (its cores ÷ its CPU"
        " per request). Rampart's own workers scale out on their own machines (operations guide) and are"
        " left out. Network latency between machines is not modelled: it adds to each request's time, not"
        " to the CPU a machine spends.",
        "",
        *_projection(per),
        "",
        "The coordinator is the ceiling: past it, more workers add nothing. Citus can take queries on every"
        " node (its metadata is on every worker since Citus 11); for Rampart's instances to spread their"
        " connections over the workers, the tables it keeps on the coordinator (sessions, webhooks, ...)"
        " would have to be added to Citus's metadata too. Not built, not measured.",
        "",
        "Command:",
        "",
        "```sh",
        f".venv/bin/python {payload.get('command', 'bench/citus_compare.py')}",
        "```",
        "",
    ]
    return out
