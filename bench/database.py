"""PostgreSQL side of the benchmark: bench databases, housekeeping between runs, pgbench."""

from __future__ import annotations

import asyncio
import ipaddress
import random
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

TASK_COLUMNS = (
    "id, project_id, title, description, status, priority, due_date, assignee_id, owner_id, "
    "created_at, updated_at, version"
)
PGBENCH_SCRIPTS = 128  # pgbench's maximum number of -f scripts
CREATED_TITLE_PREFIX = "wrk-create "  # see wrk/create.lua
_DB_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def is_loopback(host: str | None) -> bool:
    if not host or host == "localhost":
        return True  # no host: a Unix socket, which is local too
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_local(url: str, what: str) -> None:
    """The benchmark only ever talks to this machine."""
    host = urlsplit(url).hostname
    if not is_loopback(host):
        raise SystemExit(f"{what} must point at this machine (127.0.0.1/localhost/::1), got host {host!r}")


def with_database(url: str, name: str) -> str:
    """``url`` with its database name replaced by ``name``."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


async def recreate_database(admin_url: str, name: str) -> None:
    """Drop (forcing off any connection) and create database ``name``."""
    if not _DB_NAME_RE.match(name):
        raise ValueError(f"unsafe database name {name!r}")
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _try(conn: asyncpg.Connection, sql: str, notes: list[str]) -> None:
    try:
        await conn.execute(sql)
    except asyncpg.PostgresError as exc:
        notes.append(f"{sql.split()[0]} skipped: {exc}")


async def housekeeping(url: str, created_run_id: str | None = None) -> list[str]:
    """Bring the database back to its seeded state between runs so every run starts alike.

    Deletes the rows the "create" scenario added (only those of ``created_run_id`` when given),
    then VACUUM ANALYZE on tasks (the PATCH scenario leaves dead tuples) and a CHECKPOINT, so
    a checkpoint does not land in the middle of the next measurement. Best effort: returns notes
    about what could not be done (e.g. no superuser rights for CHECKPOINT).
    """
    notes: list[str] = []
    prefix = CREATED_TITLE_PREFIX + (f"{created_run_id} " if created_run_id else "")
    conn = await asyncpg.connect(url)
    try:
        try:
            status = await conn.execute("DELETE FROM tasks WHERE title LIKE $1", prefix + "%")
            notes.append(f"deleted created tasks: {status.split()[-1]}")
        except asyncpg.PostgresError as exc:
            notes.append(f"could not delete created tasks: {exc}")
        await _try(conn, "VACUUM (ANALYZE) tasks", notes)
        await _try(conn, "CHECKPOINT", notes)
    finally:
        await conn.close()
    return notes


async def analyze(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("VACUUM (ANALYZE)")
    finally:
        await conn.close()


async def count_tasks(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        n: int = await conn.fetchval("SELECT count(*) FROM tasks")
        return n
    finally:
        await conn.close()


async def server_version(url: str) -> str | None:
    """PostgreSQL's own version string (``SELECT version()``), or None when it cannot be read."""
    try:
        conn = await asyncpg.connect(url)
    except (OSError, asyncpg.PostgresError):
        return None
    try:
        v: str = await conn.fetchval("SELECT version()")
        return v.split(" on ")[0]
    finally:
        await conn.close()


async def free_connections(url: str) -> int:
    """Client connections PostgreSQL can still accept (other servers and tests share it)."""
    conn = await asyncpg.connect(url)
    try:
        n: int = await conn.fetchval(
            "SELECT current_setting('max_connections')::int"
            " - current_setting('superuser_reserved_connections')::int"
            " - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
        )
        return n
    finally:
        await conn.close()


@dataclass
class PgbenchResult:
    tps: float
    latency_avg_ms: float | None
    transactions: int
    failed: int
    clients: int
    requested_clients: int
    duration_s: float
    rows_sampled: int

    @property
    def note(self) -> str | None:
        if self.clients < self.requested_clients:
            return (
                f"pgbench ran with {self.clients} clients, not {self.requested_clients}: "
                "PostgreSQL's max_connections was nearly used up by other connections"
            )
        if self.failed:
            return f"pgbench: {self.failed} failed transactions"
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "tps": self.tps,
            "latency_avg_ms": self.latency_avg_ms,
            "transactions": self.transactions,
            "failed": self.failed,
            "clients": self.clients,
            "requested_clients": self.requested_clients,
            "note": self.note,
            "duration_s": self.duration_s,
            "rows_sampled": self.rows_sampled,
            "query": f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = '<uuid>' (-M prepared)",
        }


def _grab(pattern: str, text: str) -> str | None:
    m = re.search(pattern, text, re.MULTILINE)
    return m.group(1) if m else None


def run_pgbench(
    url: str, task_ids: list[str], *, duration: float, clients: int = 64, threads: int = 2
) -> PgbenchResult:
    """PostgreSQL's own ceiling for a primary-key read of a task, with a thin C client.

    One script per sampled row (128, pgbench's maximum; pgbench picks one at random for every
    transaction), each a prepared ``SELECT <task columns> FROM tasks WHERE id = '<uuid>'``, so
    the figure is a plain prepared primary-key SELECT spread over many rows of the seeded table.
    """
    pgbench = shutil.which("pgbench")
    if pgbench is None:
        raise SystemExit("pgbench is not installed (apt-get install -y postgresql-contrib)")
    if not task_ids:
        raise ValueError("no task ids to select")
    sample = random.Random(0).sample(task_ids, min(PGBENCH_SCRIPTS, len(task_ids)))
    bad = [t for t in sample if not _UUID_RE.match(t)]
    if bad:
        raise ValueError(f"not UUIDs: {bad[:3]}")
    requested = clients
    clients = max(1, min(clients, asyncio.run(free_connections(url)) - 2))
    with tempfile.TemporaryDirectory(prefix="rampart-pgbench-") as tmp:
        files = []
        for i, task_id in enumerate(sample):
            path = Path(tmp) / f"pk_select_{i:03d}.sql"
            path.write_text(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = '{task_id}';\n")
            files.append(path)
        cmd = [
            pgbench,
            "-n",
            "-M",
            "prepared",
            "-c",
            str(clients),
            "-j",
            str(threads),
            "-T",
            str(max(1, round(duration))),
        ]
        for path in files:
            cmd += ["-f", str(path)]
        cmd.append(url)
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=duration + 60)
    out = proc.stdout + proc.stderr
    tps = _grab(r"^tps = ([0-9.]+)", out)
    if proc.returncode != 0 or tps is None:
        raise RuntimeError(f"pgbench failed ({proc.returncode}):\n{out[-2000:]}")
    latency = _grab(r"^latency average = ([0-9.]+) ms", out)
    return PgbenchResult(
        tps=float(tps),
        latency_avg_ms=float(latency) if latency else None,
        transactions=int(_grab(r"^number of transactions actually processed: (\d+)", out) or 0),
        failed=int(_grab(r"^number of failed transactions: (\d+)", out) or 0),
        clients=clients,
        requested_clients=requested,
        duration_s=max(1, round(duration)),
        rows_sampled=len(sample),
    )
