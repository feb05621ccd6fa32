"""A bounded load loop that keeps a ledger of every acknowledged write, and the row-by-row check of that
ledger against what PostgreSQL stored, the outbox, and what the webhook receiver was handed.

Writers create tasks (titles carry the run's marker) and patch their own tasks with `If-Match`; readers
read tasks by id and list them. Every answer is classified:

- 2xx: acknowledged. The returned row is the state the database must hold (or a later acknowledged one).
- 503 problem+json `service_unavailable`: an expected refusal while a fault lasts.
- a transport error (connection reset by a killed worker): expected only where the fault says so.
- anything else (a 500, a 504, a 412 nobody caused, a body that is not a problem): unexpected.

A write that was not acknowledged has an unknown outcome only when the answer never came (a transport
error, or a 503 from a connection lost at commit): the check accepts such a write stored or not, and
counts it. A 503 that came from a refusal (Redis down, read-only, disk full) must have stored nothing.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx

STATUSES = ("todo", "in_progress", "done")
STALE_BOUND = 1.0  # seconds: a read started this long after an acknowledged change must show it
UNEXPECTED_KEEP = 50  # unexpected answers kept verbatim (all are counted)


@dataclass
class Sample:
    at: float  # monotonic time the answer came
    seconds: float
    kind: str  # "create", "patch", "get", "list"
    outcome: str  # "201", "503", "transport", ...


@dataclass
class Ledger:
    """What the clients were told, kept for the reconciliation."""

    marker: str
    acked: dict[str, dict[str, Any]] = field(default_factory=dict)  # task id -> last acknowledged row
    ids: list[str] = field(default_factory=list)  # the same ids, for picking one at random cheaply
    ack_times: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # id -> [(version, when)]
    changes: list[tuple[str, int]] = field(default_factory=list)  # every acknowledged (id, version)
    uncertain_patch: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> unanswered state
    uncertain_why: dict[str, str] = field(default_factory=dict)  # id -> "transport" | the status answered
    failed_creates: dict[str, str] = field(default_factory=dict)  # title -> "503" | "transport" | status
    outcomes: Counter[str] = field(default_factory=Counter)  # "create 201", "patch 503", ...
    unexpected: list[str] = field(default_factory=list)
    unexpected_count: int = 0
    reads: list[tuple[str, float, int]] = field(default_factory=list)  # (id, started, version seen)
    samples: list[Sample] = field(default_factory=list)
    first_ack_after: dict[str, float] = field(default_factory=dict)  # label -> monotonic time

    def note(self, kind: str, outcome: str, started: float) -> None:
        now = time.monotonic()
        self.outcomes[f"{kind} {outcome}"] += 1
        self.samples.append(Sample(now, now - started, kind, outcome))

    def surprise(self, what: str) -> None:
        self.unexpected_count += 1
        if len(self.unexpected) < UNEXPECTED_KEEP:
            self.unexpected.append(what)

    def acknowledge(self, row: dict[str, Any]) -> None:
        now = time.monotonic()
        if row["id"] not in self.acked:
            self.ids.append(row["id"])
        self.acked[row["id"]] = row
        self.ack_times.setdefault(row["id"], []).append((row["version"], now))
        self.changes.append((row["id"], row["version"]))

    def count(self, prefix: str) -> int:
        return sum(n for k, n in self.outcomes.items() if k.startswith(prefix))

    def acks_since(self, moment: float) -> int:
        return sum(
            1
            for s in self.samples
            if s.at >= moment and s.kind in ("create", "patch") and s.outcome in ("200", "201")
        )


def _is_unavailable(r: httpx.Response) -> bool:
    """A clean 503: problem+json, code service_unavailable, and no internals in it."""
    if r.status_code != 503 or not r.headers.get("content-type", "").startswith("application/problem+json"):
        return False
    body = r.json()
    return body.get("code") == "service_unavailable" and "Traceback" not in r.text and "debug" not in body


@dataclass
class Load:
    """N writers and M readers against one project, until `stop` is set or `max_requests` were sent."""

    url: str
    token: str
    project_id: str
    ledger: Ledger
    writers: int = 4
    readers: int = 2
    max_requests: int = 20_000
    pause: float = 0.0  # seconds each client waits between two requests (0: as fast as answered)
    rate: float | None = None  # requests per second over all clients, paced evenly (None: no pacing)
    backoff: float = 0.05  # after a refusal or an error: a client does not spin on a broken service
    timeout: float = 15.0
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    _sent: int = 0
    _next_slot: float = 0.0

    async def _pace(self) -> None:
        """With `rate`, each request takes the next free slot of an even schedule (open loop)."""
        if self.rate is None:
            return
        now = time.monotonic()
        slot = max(now, self._next_slot)
        self._next_slot = slot + 1.0 / self.rate
        if slot > now:
            await asyncio.sleep(slot - now)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for w in range(self.writers):
                group.create_task(self._writer(w))
            for r in range(self.readers):
                group.create_task(self._reader(r))

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=self.timeout,
            limits=httpx.Limits(max_connections=1),  # one connection per client: spread over workers
        )

    def _more(self) -> bool:
        if self.stop.is_set() or self._sent >= self.max_requests:
            return False
        self._sent += 1
        return True

    async def _writer(self, w: int) -> None:
        own: list[str] = []
        i = 0
        async with self._client() as http:
            while self._more():
                i += 1
                await self._pace()
                target = random.choice(own) if own and i % 2 == 0 else None
                if target is None or target in self.ledger.uncertain_patch:
                    ok = await self._create(http, f"{self.ledger.marker}-{w}-{i}", i, own)
                else:
                    ok = await self._patch(http, target)
                await asyncio.sleep(self.pause if ok else max(self.pause, self.backoff))

    async def _create(self, http: httpx.AsyncClient, title: str, i: int, own: list[str]) -> bool:
        started = time.monotonic()
        body = {"project_id": self.project_id, "title": title, "priority": i % 6}
        try:
            r = await http.post("/api/v1/tasks", json=body)
        except httpx.TransportError as exc:
            self.ledger.note("create", "transport", started)
            self.ledger.failed_creates[title] = f"transport {type(exc).__name__}"
            return False
        self.ledger.note("create", str(r.status_code), started)
        if r.status_code == 201:
            row = r.json()["data"]
            self.ledger.acknowledge(row)
            own.append(row["id"])
            return True
        self.ledger.failed_creates[title] = str(r.status_code)
        if not _is_unavailable(r):
            self.ledger.surprise(f"POST /api/v1/tasks -> {r.status_code} {r.text[:300]}")
        return False

    async def _patch(self, http: httpx.AsyncClient, task_id: str) -> bool:
        started = time.monotonic()
        old = self.ledger.acked[task_id]
        change = {
            "status": STATUSES[(STATUSES.index(old["status"]) + 1) % 3],
            "priority": (old["priority"] + 1) % 6,
        }
        headers = {"If-Match": f'"{old["version"]}"'}
        try:
            r = await http.patch(f"/api/v1/tasks/{task_id}", json=change, headers=headers)
        except httpx.TransportError:
            self.ledger.note("patch", "transport", started)
            self.ledger.uncertain_patch[task_id] = {**old, **change, "version": old["version"] + 1}
            self.ledger.uncertain_why[task_id] = "transport"
            return False
        self.ledger.note("patch", str(r.status_code), started)
        if r.status_code == 200:
            self.ledger.acknowledge(r.json()["data"])
            return True
        # Refused: usually nothing stored, but a connection lost during COMMIT leaves it unknown. This task
        # is not patched again, so its stored state stays checkable (the old one or exactly this one).
        self.ledger.uncertain_patch[task_id] = {**old, **change, "version": old["version"] + 1}
        self.ledger.uncertain_why[task_id] = str(r.status_code)
        if not _is_unavailable(r):
            self.ledger.surprise(f"PATCH /api/v1/tasks/{task_id} -> {r.status_code} {r.text[:300]}")
        return False

    async def _reader(self, n: int) -> None:
        async with self._client() as http:
            while self._more():
                await self._pace()
                ids = self.ledger.ids
                started = time.monotonic()
                try:
                    if ids and (n % 2 == 0 or random.random() < 0.7):
                        task_id = random.choice(ids)
                        kind, r = "get", await http.get(f"/api/v1/tasks/{task_id}")
                        if r.status_code == 200:
                            self.ledger.reads.append((task_id, started, r.json()["data"]["version"]))
                    else:
                        params = {"project_id": self.project_id, "limit": "20", "sort": "-created_at"}
                        kind, r = "list", await http.get("/api/v1/tasks", params=params)
                except httpx.TransportError:
                    self.ledger.note("read", "transport", started)
                    await asyncio.sleep(max(self.pause, self.backoff))
                    continue
                self.ledger.note(kind, str(r.status_code), started)
                if r.status_code != 200 and not _is_unavailable(r):
                    self.ledger.surprise(f"GET {r.request.url.path} -> {r.status_code} {r.text[:300]}")
                await asyncio.sleep(self.pause if r.status_code == 200 else max(self.pause, self.backoff))


async def new_project(url: str, token: str, name: str) -> str:
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    ) as http:
        r = await http.post("/api/v1/projects", json={"name": name})
        assert r.status_code == 201, r.text
        project_id: str = r.json()["data"]["id"]
        return project_id


async def until(condition: Any, timeout: float, what: str, step: float = 0.05) -> float:
    """Wait (bounded) until `condition()` is true; the monotonic time it became true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(step)
    return time.monotonic()


@dataclass
class Reconciliation:
    """The ledger against the database, row by row; every list here must be empty for a pass."""

    acknowledged_rows: int = 0
    acknowledged_changes: int = 0
    stored_rows: int = 0
    missing: list[str] = field(default_factory=list)  # acknowledged, not stored
    wrong: list[str] = field(
        default_factory=list
    )  # stored differently from any acknowledged or pending state
    unaccounted: list[str] = field(default_factory=list)  # stored, never attempted by this run
    refused_but_stored: list[str] = field(default_factory=list)  # a clean refusal that was stored anyway
    stored_unacknowledged_creates: int = 0  # attempted, answer lost, stored: allowed, counted
    applied_unacknowledged_patches: int = 0
    events_missing: list[str] = field(default_factory=list)  # a stored change without its one event
    events_extra: list[str] = field(default_factory=list)  # an event without its change
    undelivered: list[str] = field(default_factory=list)  # an acknowledged change's event never received
    stale_reads: list[str] = field(default_factory=list)

    def problems(self) -> dict[str, list[str]]:
        fields = (
            "missing",
            "wrong",
            "unaccounted",
            "refused_but_stored",
            "events_missing",
            "events_extra",
            "undelivered",
            "stale_reads",
        )
        return {name: getattr(self, name)[:20] for name in fields if getattr(self, name)}


FIELDS = ("title", "status", "priority", "version", "project_id")


async def reconcile(ledger: Ledger, database_url: str, *, refusals_store_nothing: bool) -> Reconciliation:
    """Compare what was acknowledged with what is stored (tasks and their outbox events), row by row."""
    out = Reconciliation(acknowledged_rows=len(ledger.acked), acknowledged_changes=len(ledger.changes))
    conn = await asyncpg.connect(database_url, timeout=30)
    try:
        rows = await conn.fetch(
            "SELECT id::text, title, status, priority, version, project_id::text FROM tasks "
            "WHERE title LIKE $1 || '-%'",
            ledger.marker,
        )
        stored = {r["id"]: dict(r) for r in rows}
        events = await conn.fetch(
            "SELECT id::text AS id, type, resource_id::text AS resource_id, "
            "(data->>'version')::int AS version "
            "FROM events WHERE resource = 'tasks' AND resource_id::text = ANY($1::text[])",
            list(stored),
        )
    finally:
        await conn.close()
    out.stored_rows = len(stored)
    for task_id, acked in ledger.acked.items():
        row = stored.get(task_id)
        if row is None:
            out.missing.append(f"{task_id} {acked['title']} v{acked['version']}")
            continue
        if all(row[f] == acked[f] for f in FIELDS):
            continue
        pending = ledger.uncertain_patch.get(task_id)
        if pending is not None and all(row[f] == pending[f] for f in FIELDS):
            why = ledger.uncertain_why[task_id]
            if why == "transport" or not refusals_store_nothing:
                out.applied_unacknowledged_patches += 1
            else:
                out.refused_but_stored.append(f"{task_id} patched to v{pending['version']} (answered {why})")
            continue
        out.wrong.append(
            f"{task_id}: stored {[row[f] for f in FIELDS]} acknowledged {[acked[f] for f in FIELDS]}"
        )
    acked_titles = {a["title"] for a in ledger.acked.values()}
    for task_id, row in stored.items():
        if task_id in ledger.acked:
            continue
        why = ledger.failed_creates.get(row["title"])
        if why is None or row["title"] in acked_titles:
            out.unaccounted.append(f"{task_id} {row['title']}")
        elif why.startswith("transport") or not refusals_store_nothing:
            out.stored_unacknowledged_creates += 1
        else:
            out.refused_but_stored.append(f"{task_id} {row['title']} (answered {why})")
    # Exactly one event per stored change: `created` for version 1, `updated` for each later version.
    by_change: dict[tuple[str, int], list[str]] = {}
    for e in events:
        by_change.setdefault((e["resource_id"], e["version"]), []).append(e["id"])
        expected_type = "tasks.created" if e["version"] == 1 else "tasks.updated"
        row = stored.get(e["resource_id"])
        if e["type"] != expected_type or row is None or e["version"] > row["version"]:
            out.events_extra.append(f"{e['id']} {e['type']} {e['resource_id']} v{e['version']}")
    for task_id, row in stored.items():
        for version in range(1, row["version"] + 1):
            if len(by_change.get((task_id, version), [])) != 1:
                out.events_missing.append(f"{task_id} v{version}: {by_change.get((task_id, version), [])}")
    out.stale_reads = stale_reads(ledger)
    return out


def stale_reads(ledger: Ledger) -> list[str]:
    """Reads begun over STALE_BOUND after a change was acknowledged, which still showed an older version."""
    out = []
    for task_id, started, seen in ledger.reads:
        known = [v for v, at in ledger.ack_times.get(task_id, []) if at < started - STALE_BOUND]
        if known and max(known) > seen:
            out.append(f"{task_id}: read v{seen} {started:.3f}, v{max(known)} acknowledged before")
    return out


async def event_ids(ledger: Ledger, database_url: str) -> dict[tuple[str, int], str]:
    """The outbox event id of each acknowledged change."""
    conn = await asyncpg.connect(database_url, timeout=30)
    try:
        rows = await conn.fetch(
            "SELECT id::text AS id, resource_id::text AS rid, (data->>'version')::int AS version FROM events "
            "WHERE resource = 'tasks' AND resource_id::text = ANY($1::text[])",
            list(ledger.acked),
        )
    finally:
        await conn.close()
    return {(r["rid"], r["version"]): r["id"] for r in rows}


async def wait_delivered(
    ledger: Ledger, database_url: str, received: Any, timeout: float
) -> tuple[list[str], float]:
    """Wait (bounded) until the receiver holds the event of every acknowledged change; what is still
    missing at the end (empty on success) and how long it took."""
    started = time.monotonic()
    ids = await event_ids(ledger, database_url)
    wanted = {ids[c] for c in ledger.changes if c in ids}
    deadline = started + timeout
    while (missing := wanted - received()) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    return sorted(missing)[:20], time.monotonic() - started


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
