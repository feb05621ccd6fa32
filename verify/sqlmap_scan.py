"""`make verify-sqlmap`: sqlmap against every list query parameter and every create/update body field.

A fresh database and `rampart serve` (verify/_server.py). The targets are read from the server's own
/openapi.json, so a field added later is scanned without editing this file:

- every query parameter of the lists of projects, tasks and a project's members (each filter and
  operator, sort, fields, cursor, limit, include_total), as alice (the visibility predicate is part of
  her queries) and as the admin (who reads without it);
- every JSON body field of POST/PATCH on projects and tasks, POST on members, and POST/PATCH on
  /api/v1/admin/users (as the admin).

Each target is one sqlmap run (`--batch`, a Bearer token header) where only that parameter carries the
injection mark `*`, the others keeping valid values, so the baseline request succeeds. sqlmap exits 0
whatever it finds: the verdict comes from its output. A run fails the scan if it reports anything
injectable or vulnerable (a tentative detection that its own false-positive check does not dismiss
counts), if it ends without its "not injectable" conclusion, or if the server logged a 5xx or an error
during the scan.

Raw output goes to verify/results/sqlmap-<time>/ (gitignored), with summary.json and summary.md.

    .venv/bin/python verify/sqlmap_scan.py [--level 5] [--risk 3] [--jobs 2] [--only tasks]
    .venv/bin/python verify/sqlmap_scan.py --judge verify/results/sqlmap-<time>   # judge kept output again
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from _server import RESULTS, Caller, Instance, running

SQLMAP = str(Path(sys.executable).with_name("sqlmap"))
LISTS = ("/api/v1/projects", "/api/v1/tasks", "/api/v1/projects/{parent_id}/members")
PER_RUN_TIMEOUT = 900
# sqlmap first reports a tentative detection ("appears to be '<technique>' injectable"), then checks it
# for a false positive (with a wrong answer, its own "false positive or unexploitable injection point
# detected", after which it concludes "does not seem to be injectable"). A finding is a tentative
# detection that survives that check, sqlmap's final report of an
# injection point, or its heuristic seeing a database error in a response ("might be injectable").
TENTATIVE = re.compile(r"appears to be ('.*' |UNION )?injectable", re.IGNORECASE)
DISMISSED = re.compile(r"false positive or unexploitable injection point detected", re.IGNORECASE)
CONFIRMED = re.compile(
    r"is vulnerable|identified the following injection point|(?<!not )\bmight be (SQL )?injectable|"
    r"possible DBMS",
    re.IGNORECASE,
)
CLEAN = re.compile(r"do not appear to be injectable|does not seem to be injectable", re.IGNORECASE)


@dataclass(frozen=True)
class Target:
    """One sqlmap run: a request with exactly one marked parameter."""

    label: str  # e.g. "GET /api/v1/tasks ?priority[gte] (alice)"
    method: str
    url: str
    caller: Caller
    body: str | None = None


def example(schema: dict[str, Any], name: str, ids: dict[str, str]) -> str:
    """A valid query value for a parameter with this schema."""
    if "enum" in schema:
        return str(schema["enum"][0])
    kind = schema.get("type")
    if schema.get("format") == "uuid":
        return ids.get(name.split("[")[0], ids["id"])
    if schema.get("format") == "date":
        return "2026-01-01"
    if schema.get("format") == "date-time":
        return "2026-01-01T00:00:00Z"
    if kind == "integer":
        return str(schema.get("minimum", 1))
    if kind == "boolean":
        return "false"
    return "seed"


def list_targets(instance: Instance, doc: dict[str, Any], callers: list[Caller]) -> list[Target]:
    seed = instance.seed
    ids = {
        "id": seed.project_id,
        "project_id": seed.project_id,
        "owner_id": seed.alice.id,
        "user_id": seed.bob.id,
        "assignee_id": seed.bob.id,
    }
    targets = []
    for template in LISTS:
        path = template.replace("{parent_id}", seed.project_id)
        params = [p for p in doc["paths"][template]["get"]["parameters"] if p["in"] == "query"]
        schemas = {p["name"]: p["schema"] for p in params}
        values: dict[str, str] = {}
        for name, schema in schemas.items():
            if name.endswith("[in]"):  # a one-item list, valued like the field's equality filter
                base = name[: -len("[in]")]
                values[name] = example(schemas.get(base, schema), base, ids)
            else:
                values[name] = example(schema, name, ids)
        values["sort"] = "-created_at"
        values["fields"] = "id,created_at"
        values["limit"] = "20"
        values["include_total"] = "true"
        for caller in callers:
            values["cursor"] = a_cursor(instance, path, caller)
            for name in values:
                query = "&".join(
                    f"{quote(n, safe='')}={quote(v, safe='')}{'*' if n == name else ''}"
                    for n, v in values.items()
                    if n == name or n == "limit" or (name == "cursor" and n == "sort")
                )
                targets.append(
                    Target(
                        f"GET {template} ?{name} ({caller.name})",
                        "GET",
                        f"{instance.url}{path}?{query}",
                        caller,
                    )
                )
    return targets


def a_cursor(instance: Instance, path: str, caller: Caller) -> str:
    """A real cursor for `path` sorted by -created_at (the scan's sort), so its baseline is valid."""
    r = httpx.get(
        f"{instance.url}{path}",
        params={"limit": "1", "sort": "-created_at"},
        headers=caller.headers,
        timeout=10,
    )
    r.raise_for_status()
    cursor = r.json()["meta"]["next_cursor"]
    assert isinstance(cursor, str), f"{path} has a single row: seed more"
    return cursor


def body_targets(instance: Instance, doc: dict[str, Any], victim: str) -> list[Target]:
    """`victim` is a user who is not a member of the seeded project (and whom the admin may change)."""
    seed = instance.seed
    valid: dict[str, dict[str, Any]] = {
        "projects": {"name": "seed", "description": "seed"},
        "tasks": {
            "project_id": seed.project_id,
            "title": "seed",
            "description": "seed",
            "status": "todo",
            "priority": 1,
            "due_date": "2026-01-01",
            "assignee_id": seed.bob.id,
        },
        "members": {"user_id": victim, "role": "viewer"},
        "users": {"email": "scan@verify.example", "name": "seed", "role": "user", "disabled": False},
    }
    routes = [
        ("POST", "/api/v1/projects", "/api/v1/projects", "projects", seed.alice),
        ("PATCH", "/api/v1/projects/{id}", f"/api/v1/projects/{seed.project_id}", "projects", seed.alice),
        ("POST", "/api/v1/tasks", "/api/v1/tasks", "tasks", seed.alice),
        ("PATCH", "/api/v1/tasks/{id}", f"/api/v1/tasks/{seed.task_id}", "tasks", seed.alice),
        (
            "POST",
            "/api/v1/projects/{parent_id}/members",
            f"/api/v1/projects/{seed.project_id}/members",
            "members",
            seed.alice,
        ),
        ("POST", "/api/v1/admin/users", "/api/v1/admin/users", "users", seed.admin),
        ("PATCH", "/api/v1/admin/users/{id}", f"/api/v1/admin/users/{victim}", "users", seed.admin),
    ]
    targets = []
    for method, template, path, kind, caller in routes:
        schema = doc["paths"][template][method.lower()]["requestBody"]["content"]["application/json"][
            "schema"
        ]
        fields = [f for f in schema["properties"] if not schema["properties"][f].get("readOnly")]
        base = {f: valid[kind][f] for f in fields if f in valid[kind]}
        missing = [f for f in fields if f not in valid[kind]]
        assert not missing, f"{method} {template}: no valid value for {missing}: add one to the scan"
        for name in fields:
            parts = []
            for field, value in base.items():
                text = json.dumps(value)
                if field == name:
                    # The mark goes inside a string (JSON types are strict), after a number or literal.
                    text = text[:-1] + '*"' if text.startswith('"') else text + "*"
                parts.append(f"{json.dumps(field)}: {text}")
            targets.append(
                Target(
                    f"{method} {template} body.{name}",
                    method,
                    f"{instance.url}{path}",
                    caller,
                    "{" + ", ".join(parts) + "}",
                )
            )
    return targets


def run_sqlmap(target: Target, out: Path, index: int, args: argparse.Namespace) -> dict[str, Any]:
    log = out / f"{index:03d}.txt"
    command = [
        SQLMAP,
        "-u",
        target.url,
        "--method",
        target.method,
        "--batch",
        "--dbms=PostgreSQL",
        f"--level={args.level}",
        f"--risk={args.risk}",
        "--skip-waf",  # the 400s it sees are our validation, not a firewall: keep payloads unmodified
        "--flush-session",
        "--disable-coloring",
        "--threads=4",
        "--output-dir",
        str(out / "sqlmap"),
        "-H",
        f"Authorization: Bearer {target.caller.token}",
    ]
    if target.body is not None:
        command += ["--data", target.body, "-H", "Content-Type: application/json"]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=PER_RUN_TIMEOUT, check=False)
    seconds = time.monotonic() - started
    text = done.stdout + done.stderr
    log.write_text(f"# {target.label}\n# {target.method} {target.url}\n# body: {target.body}\n\n{text}")
    return {
        "target": target.label,
        "seconds": round(seconds, 1),
        "exit_code": done.returncode,
        **judge(text),
        "log": log.name,
    }


def judge(text: str) -> dict[str, Any]:
    """sqlmap's verdict from its output (it exits 0 whatever it finds)."""
    lines = text.splitlines()
    tentative = [line.strip() for line in lines if TENTATIVE.search(line)]
    dismissed = sum(1 for line in lines if DISMISSED.search(line))
    confirmed = [line.strip() for line in lines if CONFIRMED.search(line)]
    return {
        "tentative": len(tentative),
        "dismissed_as_false_positive": dismissed,
        # Each run marks one parameter, and sqlmap checks its injection point once, for all techniques.
        "found": confirmed + (tentative if not dismissed else []),
        "concluded_clean": bool(CLEAN.search(text)),
    }


def markdown(summary: dict[str, Any]) -> str:
    lines = [
        f"# verify-sqlmap {summary['started']}",
        "",
        f"sqlmap {summary['sqlmap']}, --level {summary['level']} --risk {summary['risk']}, "
        f"--dbms PostgreSQL, {summary['jobs']} at once",
        "",
        f"- parameters tested: {summary['targets']} ({summary['query_targets']} query, "
        f"{summary['body_targets']} body)",
        f"- requests the server answered: {summary['requests']} ({summary['statuses']})",
        f"- duration: {summary['seconds']} s",
        f"- tentative detections: {summary['tentative']}, each dismissed by sqlmap's own false-positive "
        "check unless listed below",
        f"- reported injectable: {len(summary['findings'])}; "
        f"without a conclusion: {len(summary['inconclusive'])}",
        f"- 5xx or error log lines: {len(summary['server_errors'])}",
        f"- verdict: {'PASS' if summary['ok'] else 'FAIL'}",
    ]
    for item in summary["findings"] + summary["inconclusive"]:
        lines.append(f"  - {item['target']}: {item['found'] or 'no conclusion'} ({item['log']})")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--level", type=int, default=5, choices=range(1, 6))
    parser.add_argument("--risk", type=int, default=3, choices=range(1, 4))
    parser.add_argument("--jobs", type=int, default=2, help="sqlmap processes at once")
    parser.add_argument("--only", default="", help="scan only targets whose label contains this")
    parser.add_argument("--judge", type=Path, help="judge the output kept in this results folder again")
    args = parser.parse_args()
    if args.judge is not None:
        return judge_again(args.judge)

    stamp = time.strftime("%Y%m%dT%H%M%S")
    out = RESULTS / f"sqlmap-{stamp}"
    started = time.monotonic()
    with running(out) as instance:
        seed = instance.seed
        with httpx.Client(base_url=instance.url, headers=seed.alice.headers, timeout=10) as http:
            users = []
            for name in ("viewer", "victim"):
                r = http.post(
                    "/api/v1/admin/users",
                    json={"email": f"{name}@verify.example", "name": name},
                    headers=seed.admin.headers,
                )
                r.raise_for_status()
                users.append(r.json()["data"]["id"])
            viewer, victim = users
            # A second row in every list, so each has a real cursor to scan.
            for path, body in (
                ("/api/v1/projects", {"name": "second"}),
                ("/api/v1/tasks", {"project_id": seed.project_id, "title": "second"}),
                (f"/api/v1/projects/{seed.project_id}/members", {"user_id": viewer, "role": "viewer"}),
            ):
                http.post(path, json=body).raise_for_status()
        doc = httpx.get(f"{instance.url}/openapi.json", timeout=10).json()
        query = list_targets(instance, doc, [seed.alice, seed.admin])
        bodies = body_targets(instance, doc, victim)
        targets = [t for t in query + bodies if args.only in t.label]
        before = instance.status_counts()
        results = []
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = [pool.submit(run_sqlmap, t, out, i, args) for i, t in enumerate(targets, 1)]
            for done, future in enumerate(as_completed(futures), 1):
                result = future.result()
                flag = (
                    "FOUND" if result["found"] else ("ok" if result["concluded_clean"] else "NO CONCLUSION")
                )
                print(
                    f"[{done}/{len(targets)}] {result['target']}: {flag} ({result['seconds']} s)", flush=True
                )
                results.append(result)
        results.sort(key=lambda r: r["log"])
        statuses = instance.status_counts() - before
        server_errors = instance.server_errors()
        (out / "server.log").write_bytes(instance.log.read_bytes())
    version = subprocess.run([SQLMAP, "--version"], capture_output=True, text=True, check=False)
    summary = {
        "started": stamp,
        "sqlmap": version.stdout.strip(),
        "level": args.level,
        "risk": args.risk,
        "jobs": args.jobs,
        "targets": len(results),
        "query_targets": sum(1 for t in targets if t.body is None),
        "body_targets": sum(1 for t in targets if t.body is not None),
        "requests": sum(statuses.values()),
        "statuses": dict(sorted(statuses.items())),
        "seconds": round(time.monotonic() - started, 1),
        "server_errors": server_errors[:50],
        "runs": results,
    }
    return finish(summary, out)


def finish(summary: dict[str, Any], out: Path) -> int:
    """Add the verdict to `summary`, write it into `out` and print it; the exit code."""
    results = summary["runs"]
    summary["tentative"] = sum(r["tentative"] for r in results)
    summary["findings"] = [r for r in results if r["found"]]
    summary["inconclusive"] = [r for r in results if not r["found"] and not r["concluded_clean"]]
    summary["ok"] = (
        not summary["findings"]
        and not summary["inconclusive"]
        and not summary["server_errors"]
        and bool(results)
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(markdown(summary))
    print(markdown(summary))
    for line in summary["server_errors"][:10]:
        print(f"verify-sqlmap: server: {line[:400]}", file=sys.stderr)
    print(f"verify-sqlmap: {'PASS' if summary['ok'] else 'FAIL'} ({out})")
    return 0 if summary["ok"] else 1


def judge_again(out: Path) -> int:
    """Judge the sqlmap output kept in a results folder again (after a change to `judge`)."""
    summary = json.loads((out / "summary.json").read_text())
    for run in summary["runs"]:
        run.update(judge((out / run["log"]).read_text()))
    return finish(summary, out)


if __name__ == "__main__":
    sys.exit(main())
