"""Seed a running server through its public API: users, one project each, tasks.

Everything goes through HTTP (admin user creation, impersonation, project and task
creation), so the data is exactly what the server itself writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib.util
import json
import ssl
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

if importlib.util.find_spec("sniffio") is None:
    # httpcore retries `import sniffio` on every request when it is absent, which costs ~25% of
    # the client's CPU; a None entry makes that import fail at once (it then assumes asyncio).
    sys.modules["sniffio"] = None  # type: ignore[assignment]

STATUSES = ("todo", "in_progress", "done")
RETRYABLE = {429, 503}
MAX_TRIES = 6


class SeedError(RuntimeError):
    """The server refused or failed a seeding request."""


@dataclass
class SeededUser:
    user_id: str
    email: str
    token: str
    project_id: str
    task_ids: list[str] = field(default_factory=list)


@dataclass
class SeedData:
    label: str
    users: list[SeededUser]
    seconds: float = 0.0
    requests: int = 0

    @property
    def task_count(self) -> int:
        return sum(len(u.task_ids) for u in self.users)

    def all_task_ids(self) -> list[str]:
        return [t for u in self.users for t in u.task_ids]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> SeedData:
        users = [SeededUser(**u) for u in raw["users"]]
        return cls(
            label=raw["label"], users=users, seconds=raw.get("seconds", 0.0), requests=raw.get("requests", 0)
        )

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json()))

    @classmethod
    def load(cls, path: Path) -> SeedData:
        return cls.from_json(json.loads(path.read_text()))

    def write_wrk_data(self, path: Path) -> None:
        """One line per user: ``<token> <project_id> <task_id> <task_id> ...`` (read by wrk/common.lua)."""
        lines = [" ".join([u.token, u.project_id, *u.task_ids]) for u in self.users if u.task_ids]
        path.write_text("\n".join(lines) + "\n")


def task_body(project_id: str, user_no: int, task_no: int) -> dict[str, Any]:
    """A varied task: statuses cycle, priorities spread evenly over 0-5, some due dates."""
    due = None
    if task_no % 4:
        due = (dt.date(2026, 12, 1) + dt.timedelta(days=task_no % 90)).isoformat()
    return {
        "project_id": project_id,
        "title": f"Seed task {user_no:03d}-{task_no:03d}",
        "description": f"Seeded by the benchmark for user {user_no}, task {task_no}.",
        "status": STATUSES[task_no % 3],
        "priority": (task_no // 3) % 6,
        "due_date": due,
    }


class _Seeder:
    """A fixed pool of worker tasks, each with its own one-connection client.

    One shared client with many connections is much slower here: httpcore's pool scans every
    connection for every queued request, which made seeding client-bound (~300 req/s).
    """

    def __init__(self, clients: list[httpx.AsyncClient], admin_token: str) -> None:
        self.clients = clients
        self.admin_auth = {"Authorization": f"Bearer {admin_token}"}
        self.requests = 0

    async def post(
        self, client: httpx.AsyncClient, path: str, body: dict[str, Any] | None, headers: dict[str, str]
    ) -> dict[str, Any]:
        for attempt in range(MAX_TRIES):
            self.requests += 1
            resp = await client.post(path, json=body, headers=headers)
            if resp.status_code in RETRYABLE and attempt + 1 < MAX_TRIES:
                retry_after = resp.headers.get("Retry-After", "")
                delay = min(float(retry_after), 5.0) if retry_after.isdigit() else 0.2 * 2**attempt
                await asyncio.sleep(delay)
                continue
            if resp.status_code not in (200, 201):
                raise SeedError(f"POST {path} -> {resp.status_code}: {resp.text[:300]}")
            data: dict[str, Any] = resp.json()["data"]
            return data
        raise SeedError(f"POST {path}: still throttled after {MAX_TRIES} tries")

    async def run(self, jobs: list[Job]) -> list[dict[str, Any]]:
        """Run ``jobs`` (path, body, headers) with bounded concurrency; results in job order."""
        results: list[dict[str, Any]] = [{} for _ in jobs]
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(len(jobs)):
            queue.put_nowait(i)

        async def worker(client: httpx.AsyncClient) -> None:
            while not queue.empty():
                i = queue.get_nowait()
                path, body, headers = jobs[i]
                results[i] = await self.post(client, path, body, headers)

        async with asyncio.TaskGroup() as group:
            for client in self.clients[: len(jobs)]:
                group.create_task(worker(client))
        return results


Job = tuple[str, dict[str, Any] | None, dict[str, str]]


async def seed(
    base_url: str,
    admin_token: str,
    *,
    users: int = 100,
    tasks_per_user: int = 200,
    concurrency: int = 32,
    label: str | None = None,
) -> SeedData:
    """Create ``users`` users, each with one project and ``tasks_per_user`` tasks, via the API.

    Callers bound the time with ``asyncio.timeout``.
    """
    label = label or time.strftime("%Y%m%d%H%M%S")
    started = time.perf_counter()
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    tls = ssl.create_default_context()  # unused for http://, but httpx builds one per client otherwise
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30.0, verify=tls)
            )
            for _ in range(concurrency)
        ]
        seeder = _Seeder(clients, admin_token)
        emails = [f"bench-{label}-{i:03d}@bench.local" for i in range(users)]
        created = await seeder.run(
            [
                (
                    "/api/v1/admin/users",
                    {"email": email, "name": f"Bench user {i}", "role": "user"},
                    seeder.admin_auth,
                )
                for i, email in enumerate(emails)
            ]
        )
        tokens = await seeder.run(
            [(f"/api/v1/admin/users/{u['id']}/impersonate", None, seeder.admin_auth) for u in created]
        )
        auths = [{"Authorization": f"Bearer {t['access_token']}"} for t in tokens]
        projects = await seeder.run(
            [
                ("/api/v1/projects", {"name": f"Bench project {i}", "description": "benchmark"}, auth)
                for i, auth in enumerate(auths)
            ]
        )
        tasks = await seeder.run(
            [
                ("/api/v1/tasks", task_body(projects[i]["id"], i, j), auths[i])
                for j in range(tasks_per_user)
                for i in range(users)
            ]
        )
    seeded = [
        SeededUser(
            user_id=created[i]["id"],
            email=emails[i],
            token=tokens[i]["access_token"],
            project_id=projects[i]["id"],
            task_ids=[tasks[j * users + i]["id"] for j in range(tasks_per_user)],
        )
        for i in range(users)
    ]
    return SeedData(
        label=label, users=seeded, seconds=time.perf_counter() - started, requests=seeder.requests
    )
