"""The live stream follows its session, on real servers (issue 13, finding 2): a logout, a revoked
session or a disabled user ends every stream of it within 1 s, on every worker and instance; after a
role change the stream ends too, and what the client reads next is filtered by the new role.

Two deployments, each with streams on both of its processes: `rampart serve --workers 2` (which worker
holds a stream is read from /proc), and two instances on one database sharing Redis (the session cache
in Redis too), the change made through the first. Before the fix a stream kept its connect-time caller
until its next heartbeat (15 s), and delivered other users' events after a demotion.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from rampart.app import Rampart
from rampart.auth.sessions import open_session
from tests.conftest import REDIS_URL, MakeUser, User
from tests.ops.test_workers import _workers
from tests.scale.servers import serve

BOUND = 1.0  # API.md: the stream ends within 1 s


@dataclass
class Deployment:
    urls: list[str]  # where streams are opened, in turn (one URL per instance)
    workers: set[int] = field(default_factory=set)  # worker pids of a single multi-worker server
    port: int = 0


@pytest.fixture(scope="module", params=["two-workers", "two-instances"])
def deployment(
    request: pytest.FixtureRequest, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    workdir = tmp_path_factory.mktemp("stream-sessions")
    env = {"RAMPART_RATE_LIMIT": "1000000/minute", "RAMPART_EVENTS_DISPATCHER": "false"}
    if request.param == "two-workers":
        with serve(database_url, workdir, workers=2, name="workers", **env) as server:
            deadline = time.monotonic() + 20
            while len(workers := _workers(server.proc.pid)) != 2:
                assert time.monotonic() < deadline, "the workers did not start"
                time.sleep(0.1)
            yield Deployment([server.url], workers, server.port)
        return
    shared = {**env, "RAMPART_REDIS_URL": REDIS_URL, "RAMPART_SESSION_CACHE": "redis"}
    with (
        serve(database_url, workdir, name="a", **shared) as a,
        serve(database_url, workdir, name="b", **shared) as b,
    ):
        yield Deployment([a.url, b.url])


@dataclass
class Stream:
    """One SSE connection: the events it delivered, and when it ended."""

    url: str
    events: list[dict[str, Any]] = field(default_factory=list)
    opened: asyncio.Event = field(default_factory=asyncio.Event)
    ended_at: float | None = None
    client_port: int = 0
    task: asyncio.Task[None] | None = None

    def types_of(self, resource_id: str) -> list[str]:
        return [e["type"] for e in self.events if e["resource_id"] == resource_id]


async def _read(http: httpx.AsyncClient, stream: Stream, headers: dict[str, str]) -> None:
    async with http.stream("GET", f"{stream.url}/api/v1/events/stream", headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        stream.client_port = response.extensions["network_stream"].get_extra_info("client_addr")[1]
        stream.opened.set()
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                stream.events.append(orjson.loads(line[6:]))
    stream.ended_at = time.monotonic()


def _holder(port: int, client_port: int, workers: set[int]) -> int | None:
    """The worker process holding the server side of the connection from `client_port`."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        local, remote = parts[1].split(":"), parts[2].split(":")
        if int(local[1], 16) == port and int(remote[1], 16) == client_port:
            inodes.add(parts[9])
    for pid in workers:
        with contextlib.suppress(FileNotFoundError, PermissionError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(FileNotFoundError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") in {f"socket:[{i}]" for i in inodes}:
                        return pid
    return None


@contextlib.asynccontextmanager
async def streams_of(
    deployment: Deployment, headers: dict[str, str], **query: str
) -> AsyncIterator[list[Stream]]:
    """Streams of one caller on every process of the deployment (at least one each), all open."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(5, read=30), params=query) as http:
        opened: list[Stream] = []
        try:
            held: set[int] = set()
            for i in range(8):
                stream = Stream(deployment.urls[i % len(deployment.urls)])
                stream.task = asyncio.create_task(_read(http, stream, headers))
                async with asyncio.timeout(5):
                    await stream.opened.wait()
                opened.append(stream)
                if deployment.workers:
                    holder = _holder(deployment.port, stream.client_port, deployment.workers)
                    assert holder is not None, "no worker holds the stream"
                    held.add(holder)
                    if held == deployment.workers:
                        break
                elif len(opened) == 2 * len(deployment.urls):
                    break
            assert not deployment.workers or held == deployment.workers, "the streams all went to one worker"
            await asyncio.sleep(0.3)  # each stream has read the log once and waits
            yield opened
        finally:
            for stream in opened:
                if stream.task is not None:
                    stream.task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                        await stream.task


async def ended_within(streams: list[Stream], since: float, bound: float = BOUND) -> float:
    """Seconds until every stream ended, counted from `since`; fails past twice the bound."""
    async with asyncio.timeout(2 * bound + 3):
        await asyncio.gather(*(s.task for s in streams if s.task is not None), return_exceptions=True)
    assert all(s.ended_at is not None for s in streams), "a stream broke instead of ending"
    took = max(s.ended_at for s in streams if s.ended_at is not None) - since
    assert took < bound, f"the last stream ended {took:.2f} s after"
    return took


async def _task(http: httpx.AsyncClient, url: str, owner: User) -> dict[str, Any]:
    r = await http.post(f"{url}/api/v1/projects", json={"name": "Live"}, headers=owner.headers)
    assert r.status_code == 201, r.text
    r = await http.post(
        f"{url}/api/v1/tasks",
        json={"project_id": r.json()["data"]["id"], "title": "t"},
        headers=owner.headers,
    )
    assert r.status_code == 201, r.text
    task: dict[str, Any] = r.json()["data"]
    return task


async def test_a_logout_ends_every_stream_of_the_session(deployment: Deployment, make_user: MakeUser) -> None:
    user = await make_user()
    async with httpx.AsyncClient(timeout=5) as http, streams_of(deployment, user.headers) as streams:
        r = await http.post(f"{deployment.urls[0]}/api/v1/auth/logout", headers=user.headers)
        assert r.status_code == 204
        await ended_within(streams, time.monotonic())


async def test_revoking_one_session_ends_its_streams_and_no_others(
    deployment: Deployment, make_user: MakeUser, app: Rampart
) -> None:
    user = await make_user()
    async with app.services.db.transaction() as conn:
        other = await open_session(
            conn, app.services.tokens, user_id=uuid.UUID(user.id), role="user", session_ttl=600
        )
    kept_headers = {"Authorization": f"Bearer {other.access_token}"}
    async with (
        httpx.AsyncClient(timeout=5) as http,
        streams_of(deployment, user.headers) as revoked,
        streams_of(deployment, kept_headers) as kept,
    ):
        r = await http.delete(
            f"{deployment.urls[0]}/api/v1/auth/sessions/{user.session_id}", headers=kept_headers
        )
        assert r.status_code == 204
        await ended_within(revoked, time.monotonic())
        task = await _task(
            http, deployment.urls[-1], User(user.id, user.email, "user", other.access_token, other.session_id)
        )
        async with asyncio.timeout(5):
            while not all(s.types_of(task["id"]) == ["tasks.created"] for s in kept):
                await asyncio.sleep(0.05)
        assert all(s.ended_at is None for s in kept)


async def test_disabling_a_user_ends_its_streams(deployment: Deployment, make_user: MakeUser) -> None:
    admin, user = await make_user("admin"), await make_user()
    async with httpx.AsyncClient(timeout=5) as http, streams_of(deployment, user.headers) as streams:
        r = await http.patch(
            f"{deployment.urls[0]}/api/v1/admin/users/{user.id}",
            json={"disabled": True},
            headers=admin.headers,
        )
        assert r.status_code == 200, r.text
        await ended_within(streams, time.monotonic())
        assert (
            await http.get(f"{deployment.urls[-1]}/api/v1/auth/me", headers=user.headers)
        ).status_code == 401


async def test_after_a_demotion_the_stream_shows_only_what_the_new_role_may_see(
    deployment: Deployment, make_user: MakeUser
) -> None:
    boss, demoted, bob = await make_user("admin"), await make_user("admin"), await make_user()
    async with httpx.AsyncClient(timeout=5) as http:
        async with streams_of(deployment, demoted.headers) as streams:
            before = await _task(http, deployment.urls[-1], bob)
            async with asyncio.timeout(5):  # an admin sees bob's work, on every stream
                while not all(s.types_of(before["id"]) == ["tasks.created"] for s in streams):
                    await asyncio.sleep(0.05)
            r = await http.patch(
                f"{deployment.urls[0]}/api/v1/admin/users/{demoted.id}",
                json={"role": "user"},
                headers=boss.headers,
            )
            assert r.status_code == 200, r.text
            demoted_at = time.monotonic()
            after = await _task(http, deployment.urls[-1], bob)
            await ended_within(streams, demoted_at)
            assert all(s.types_of(after["id"]) == [] for s in streams)
            last = streams[0].events[-1]["id"]
        # The client reconnects where it stopped: bob's new task is not for a user.
        resumed = {**demoted.headers, "Last-Event-ID": last}
        async with streams_of(deployment, resumed) as again:
            mine = await _task(http, deployment.urls[-1], demoted)
            async with asyncio.timeout(5):
                while not all(s.types_of(mine["id"]) == ["tasks.created"] for s in again):
                    await asyncio.sleep(0.05)
            assert all(s.types_of(after["id"]) == [] for s in again)
