"""A real Rampart for the long verification runs (`make verify-*`).

`running()` creates a fresh database on the PostgreSQL at RAMPART_VERIFY_ADMIN_URL (default: the local
server the tests use), migrates it with `rampart migrate`, starts `rampart serve` on a free loopback port
in production mode with a JSON access log in a file, and seeds it through the real CLI and HTTP API:

- `admin` (role admin), `alice` and `bob` (role user), each with an access token (`rampart tokens issue`);
- a project owned by alice with bob as an editor member, and one task in it.

Everything it starts is stopped and the database dropped on the way out, whatever happens. Every wait is
bounded. The scripts beside it (fuzz.py, sqlmap_scan.py, ...) use it; it knows nothing of them.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as `python verify/x.py`: make `tests` importable

from tests.support import free_port  # noqa: E402

RESULTS = ROOT / "verify" / "results"
RAMPART = str(Path(sys.executable).with_name("rampart"))
ADMIN_URL = os.environ.get("RAMPART_VERIFY_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
START_TIMEOUT = 60.0
CLI_TIMEOUT = 60.0


@dataclass(frozen=True)
class Caller:
    """A seeded user and an access token of theirs."""

    name: str
    id: str
    email: str
    role: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass(frozen=True)
class Seed:
    """The seeded callers and rows."""

    admin: Caller
    alice: Caller  # owns the project and its task
    bob: Caller  # an editor member of alice's project
    project_id: str
    task_id: str

    @property
    def callers(self) -> tuple[Caller, Caller, Caller]:
        return (self.admin, self.alice, self.bob)


@dataclass
class Instance:
    """A running server: its URL, its log file, its database and what was seeded in it."""

    url: str
    log: Path
    database_url: str
    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    seed: Seed = field(init=False)

    def access_log(self) -> list[dict[str, Any]]:
        """The JSON log records written so far that describe a response (they carry a status)."""
        records = []
        for line in self.log.read_bytes().splitlines():
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(record, dict) and isinstance(record.get("status"), int):
                records.append(record)
        return records

    def status_counts(self) -> Counter[int]:
        return Counter(record["status"] for record in self.access_log())

    def server_errors(self) -> list[str]:
        """Log lines of 5xx responses and of errors (tracebacks included), as written."""
        found = []
        for line in self.log.read_bytes().splitlines():
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                if b"Traceback" in line:
                    found.append(line.decode(errors="replace"))
                continue
            if not isinstance(record, dict):
                continue
            status = record.get("status")
            if (isinstance(status, int) and status >= 500) or str(record.get("level", "")).upper() in {
                "ERROR",
                "CRITICAL",
            }:
                found.append(line.decode(errors="replace"))
        return found

    def cli(self, *args: str) -> str:
        """Run `rampart ARGS` against this instance's database; its stdout."""
        done = subprocess.run(
            [RAMPART, *args],
            env=self.env,
            cwd=self.log.parent,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"rampart {args[0]} {args[1] if len(args) > 1 else ''} failed: {done.stderr}")
        return done.stdout


async def _admin_sql(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _database_url(name: str) -> str:
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


def server_env(database_url: str, **overrides: str) -> dict[str, str]:
    """The environment of a verification server: production mode, no limits in the way, a JSON log."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAMPART_")}
    env.update(
        {
            "RAMPART_ENV": "production",
            "RAMPART_DATABASE_URL": database_url,
            "RAMPART_JWT_SECRET": secrets.token_urlsafe(48),
            "RAMPART_ACCESS_LOG": "true",
            "RAMPART_LOG_FORMAT": "json",
            "RAMPART_RATE_LIMIT": "100000000/minute",
            "RAMPART_RATE_LIMIT_AUTH": "100000000/minute",
            "RAMPART_ACCESS_TOKEN_TTL": "14400",  # a long run outlives the default 15 minutes
            "RAMPART_EVENTS_DISPATCHER": "true",
        }
    )
    env.update(overrides)
    return env


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    last: object = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"the server exited with {proc.returncode}:\n{log.read_text(errors='replace')}"
            )
        try:
            r = httpx.get(f"{url}/health/ready", timeout=2)
            if r.status_code == 200:
                return
            last = r.text
        except httpx.TransportError as exc:
            last = exc
        time.sleep(0.2)
    raise RuntimeError(f"the server was not ready within {START_TIMEOUT:.0f} s: {last}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _seed(instance: Instance) -> Seed:
    tag = uuid.uuid4().hex[:8]
    callers = {}
    for name, role in (("admin", "admin"), ("alice", "user"), ("bob", "user")):
        email = f"{name}-{tag}@verify.example"
        row = orjson.loads(instance.cli("users", "create", "--email", email, "--name", name, "--role", role))
        token = instance.cli("tokens", "issue", "--email", email).strip()
        callers[name] = Caller(name, row["id"], email, role, token)
    alice, bob = callers["alice"], callers["bob"]
    with httpx.Client(base_url=instance.url, timeout=10) as http:
        r = http.post(
            "/api/v1/projects", json={"name": "verify", "description": "seed"}, headers=alice.headers
        )
        r.raise_for_status()
        project_id = r.json()["data"]["id"]
        r = http.post(
            "/api/v1/tasks", json={"project_id": project_id, "title": "seed task"}, headers=alice.headers
        )
        r.raise_for_status()
        task_id = r.json()["data"]["id"]
        r = http.post(
            f"/api/v1/projects/{project_id}/members",
            json={"user_id": bob.id, "role": "editor"},
            headers=alice.headers,
        )
        r.raise_for_status()
    return Seed(callers["admin"], alice, bob, project_id, task_id)


@contextmanager
def running(workdir: Path, *, workers: int = 1, **env_overrides: str) -> Iterator[Instance]:
    """A migrated, seeded `rampart serve` on a fresh database, stopped and dropped afterwards."""
    workdir.mkdir(parents=True, exist_ok=True)
    name = f"rampart_verify_{uuid.uuid4().hex[:12]}"
    database_url = _database_url(name)
    env = server_env(database_url, **env_overrides)
    asyncio.run(_admin_sql(f'CREATE DATABASE "{name}"'))
    try:
        subprocess.run(
            [RAMPART, "migrate"], env=env, cwd=workdir, check=True, capture_output=True, timeout=CLI_TIMEOUT
        )
        port = free_port()
        log = workdir / f"server-{port}.log"
        with log.open("wb") as out:
            command = [RAMPART, "serve", "--no-migrate", "--host", "127.0.0.1", "--port", str(port)]
            proc = subprocess.Popen(
                [*command, "--workers", str(workers)],
                env=env,
                cwd=workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            instance = Instance(f"http://127.0.0.1:{port}", log, database_url, proc, env)
            _wait_ready(instance.url, proc, log)
            instance.seed = _seed(instance)
            yield instance
        finally:
            _stop(proc)
    finally:
        asyncio.run(_admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
