"""GET /api/v1/events/stream: live Server-Sent Events, only what the caller may see, resumable with
Last-Event-ID, and a slow client is cut off instead of growing memory.

httpx's ASGI transport waits for a response to finish, so these tests speak ASGI to the app directly:
the app (pipeline, router, authentication, stream) is the real one; only the socket is missing.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import pytest
from starlette.requests import Request
from starlette.types import ASGIApp, Message

from rampart.app import Rampart, create_app
from rampart.events.log import EventLog
from rampart.events.stream import LiveStream
from rampart.resources.endpoints import Call
from tests.conftest import User, make_settings

Send = Callable[[Message], Awaitable[None]]


class StreamClient:
    """An SSE client over raw ASGI: collects the events it receives; `close()` disconnects it."""

    def __init__(
        self, headers: dict[str, str], params: dict[str, str] | None = None, *, stalled: bool = False
    ):
        self.headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        self.query = urlencode(params or {}).encode()
        self.stalled = stalled
        self.status = 0
        self.buffer = b""
        self.events: list[dict[str, Any]] = []
        self.comments: list[bytes] = []
        self.ended = False
        self._gone = asyncio.Event()
        self._requested = False

    def scope(self) -> dict[str, Any]:
        path = "/api/v1/events/stream"
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": self.query,
            "root_path": "",
            "headers": [(b"host", b"testserver"), *self.headers],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }

    async def receive(self) -> Message:
        if not self._requested:
            self._requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            return
        if self.stalled:
            await asyncio.Event().wait()  # never reads: the socket's buffer is full
        self.buffer += message.get("body", b"")
        while b"\n\n" in self.buffer:
            block, self.buffer = self.buffer.split(b"\n\n", 1)
            fields = dict(line.split(b": ", 1) for line in block.split(b"\n") if b": " in line)
            if block.startswith(b":"):
                self.comments.append(block)
            elif b"data" in fields:
                event = orjson.loads(fields[b"data"])
                assert fields[b"id"].decode() == event["id"]
                self.events.append(event)
        if not message.get("more_body", False):
            self.ended = True

    def run(self, app: ASGIApp) -> asyncio.Task[None]:
        return asyncio.create_task(app(self.scope(), self.receive, self.send))

    def close(self) -> None:
        self._gone.set()

    def ids(self, resource_id: str | None = None) -> list[str]:
        return [e["id"] for e in self.events if resource_id is None or e["resource_id"] == resource_id]


async def eventually(check: Callable[[], bool], *, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not in time"
        await asyncio.sleep(0.02)


async def finish(task: asyncio.Task[None], client: StreamClient) -> None:
    client.close()
    async with asyncio.timeout(5):
        await task


async def a_task(client: httpx.AsyncClient, owner: User) -> tuple[dict[str, Any], dict[str, Any]]:
    r = await client.post("/api/v1/projects", json={"name": "Live"}, headers=owner.headers)
    assert r.status_code == 201, r.text
    project = r.json()["data"]
    r = await client.post(
        "/api/v1/tasks", json={"project_id": project["id"], "title": "Now"}, headers=owner.headers
    )
    assert r.status_code == 201, r.text
    return project, r.json()["data"]


async def test_each_caller_sees_live_only_what_it_may_see(
    app: Rampart, client: httpx.AsyncClient, alice: User, bob: User, admin: User
) -> None:
    streams = {
        who: StreamClient(user.headers) for who, user in (("alice", alice), ("bob", bob), ("admin", admin))
    }
    tasks = [s.run(app) for s in streams.values()]
    try:
        await eventually(lambda: all(s.status == 200 for s in streams.values()))
        await asyncio.sleep(0.2)  # connected and listening
        project, task = await a_task(client, alice)
        r = await client.patch(f"/api/v1/tasks/{task['id']}", json={"priority": 3}, headers=alice.headers)
        assert r.status_code == 200

        def types(who: str, resource_id: str) -> list[str]:
            return [e["type"] for e in streams[who].events if e["resource_id"] == resource_id]

        await eventually(lambda: types("alice", task["id"]) == ["tasks.created", "tasks.updated"])
        await eventually(lambda: types("admin", task["id"]) == ["tasks.created", "tasks.updated"])
        assert types("alice", project["id"]) == ["projects.created"]
        await asyncio.sleep(0.3)  # time for anything wrong to arrive
        assert types("bob", task["id"]) == []
        assert types("bob", project["id"]) == []
        assert all(e["actor_id"] != alice.id for e in streams["bob"].events)
    finally:
        for stream, task_ in zip(streams.values(), tasks, strict=True):
            await finish(task_, stream)
    assert all(s.ended for s in streams.values())


async def test_last_event_id_resumes_from_the_log(
    app: Rampart, client: httpx.AsyncClient, alice: User
) -> None:
    _, first = await a_task(client, alice)
    r = await client.get("/api/v1/events", params={"resource_id": first["id"]}, headers=alice.headers)
    resume_from = r.json()["data"][-1]["id"]
    _, second = await a_task(client, alice)
    for status in ("in_progress", "done"):
        r = await client.patch(
            f"/api/v1/tasks/{second['id']}", json={"status": status}, headers=alice.headers
        )
        assert r.status_code == 200
    r = await client.get(
        "/api/v1/events", params={"actor_id": alice.id, "after": resume_from}, headers=alice.headers
    )
    missed = [e["id"] for e in r.json()["data"]]
    assert len(missed) == 4  # projects.created, tasks.created, 2 x tasks.updated

    stream = StreamClient({**alice.headers, "Last-Event-ID": resume_from})
    task = stream.run(app)
    try:
        await eventually(lambda: stream.ids()[: len(missed)] == missed)
        assert resume_from not in stream.ids()
    finally:
        await finish(task, stream)


async def test_bad_resume_ids_and_anonymous_callers_are_refused(app: Rampart, alice: User) -> None:
    for headers, status in (({}, 401), ({**alice.headers, "Last-Event-ID": "nope"}, 400)):
        stream = StreamClient(headers)
        async with asyncio.timeout(5):
            await stream.run(app)
        assert stream.status == status
        assert stream.events == []


@pytest.mark.parametrize(
    ("buffer", "send_timeout"),
    [(3, 30.0), (1000, 0.3)],
    ids=["queue-overflows", "write-stalls"],
)
async def test_a_slow_client_is_cut_off(
    app: Rampart, client: httpx.AsyncClient, alice: User, buffer: int, send_timeout: float
) -> None:
    services = app.services
    stream = LiveStream(
        log=EventLog(db=services.db, managers=services.managers),
        listener=None,
        poll_interval=0.2,  # polling stands in for the worker's listener here
        buffer=buffer,
        send_timeout=send_timeout,
    )
    r = await client.get("/api/v1/events", params={"actor_id": alice.id}, headers=alice.headers)
    before = [e["id"] for e in r.json()["data"]]
    start = before[0] if before else str(uuid.UUID(int=0))
    for _ in range(3):
        await a_task(client, alice)  # 6 more events than the resume point: over a buffer of 3
    reader = StreamClient({**alice.headers, "Last-Event-ID": start}, stalled=True)
    request = Request(reader.scope(), reader.receive)
    actor = await services.authenticator.authenticate(alice.headers["Authorization"])
    response = await stream.route_spec().handler(Call(request=request, actor=actor, request_id="slow"))
    started = time.monotonic()
    try:
        async with asyncio.timeout(10):
            await response(reader.scope(), reader.receive, reader.send)  # returns: the client is cut off
    finally:
        await stream.stop()
    assert time.monotonic() - started < 8
    assert reader.events == []
    assert not reader.ended


async def test_a_change_made_through_one_worker_reaches_a_stream_on_another(
    app: Rampart, client: httpx.AsyncClient, alice: User
) -> None:
    """Two apps on one database stand for two workers (or instances): NOTIFY is the only link."""
    other = create_app(make_settings(app.services.settings.database_url.get_secret_value(), cache="off"))
    await other.startup()  # its listener: without it, only a poll would find the change
    stream = StreamClient(alice.headers)
    task = stream.run(other)
    try:
        await eventually(lambda: stream.status == 200)
        await asyncio.sleep(0.2)
        _, made = await a_task(client, alice)  # through the first app
        await eventually(
            lambda: [e["type"] for e in stream.events if e["resource_id"] == made["id"]] == ["tasks.created"]
        )
    finally:
        await finish(task, stream)
        await other.aclose()


async def test_a_change_reaches_the_stream_at_once_not_at_the_next_poll(
    app: Rampart, client: httpx.AsyncClient, alice: User
) -> None:
    """A worker announces its own changes after they commit (on the row cache's channel) and writes their
    events without a notification of their own: that announcement wakes the streams of every worker. Before,
    they saw the change only at their next poll (every 5 s)."""
    settings = make_settings(app.services.settings.database_url.get_secret_value(), cache="off")
    other = create_app(settings)
    assert other.services.stream is not None
    other.services.stream.poll_interval = 60.0  # a poll would come too late to pass
    await other.startup()
    stream = StreamClient(alice.headers)
    task = stream.run(other)
    try:
        await eventually(lambda: stream.status == 200)
        await asyncio.sleep(0.3)  # the stream's first read is done
        _, made = await a_task(client, alice)
        await eventually(
            lambda: [e["type"] for e in stream.events if e["resource_id"] == made["id"]] == ["tasks.created"],
            timeout=3.0,
        )
    finally:
        await finish(task, stream)
        await other.aclose()


async def test_a_revoked_session_ends_its_stream(app: Rampart, make_user: Any) -> None:
    services = app.services
    carol = await make_user()
    stream = LiveStream(
        log=EventLog(db=services.db, managers=services.managers),
        listener=None,  # polling only: this test is about the session check at each heartbeat
        reauthenticate=services.authenticator.authenticate,
        heartbeat=0.1,
    )
    reader = StreamClient(carol.headers)
    request = Request(reader.scope(), reader.receive)
    actor = await services.authenticator.authenticate(carol.headers["Authorization"])
    response = await stream.route_spec().handler(Call(request=request, actor=actor, request_id="revoke"))
    task = asyncio.create_task(response(reader.scope(), reader.receive, reader.send))
    try:
        await eventually(lambda: len(reader.comments) >= 2)  # heartbeats flow while the session lives
        assert not task.done()
        await services.db.execute("UPDATE sessions SET revoked_at = now() WHERE id = $1", carol.session_id)
        async with asyncio.timeout(5):  # the session cache trusts an answer for at most 1 s
            await task
    finally:
        reader.close()
        task.cancel()
    assert reader.ended


async def test_a_revocation_nobody_announced_still_ends_the_stream_within_a_second(
    app: Rampart, make_user: Any
) -> None:
    """Without the listener (lost, or a change made by hand in the database), the sessions of the open
    streams are still read every half second."""
    services = app.services
    carol = await make_user()
    stream = LiveStream(
        log=EventLog(db=services.db, managers=services.managers),
        listener=None,
        reauthenticate=services.authenticator.authenticate,
        sessions=services.authenticator.live_sessions,
    )
    reader = StreamClient(carol.headers)
    request = Request(reader.scope(), reader.receive)
    actor = await services.authenticator.authenticate(carol.headers["Authorization"])
    response = await stream.route_spec().handler(Call(request=request, actor=actor, request_id="quiet"))
    task = asyncio.create_task(response(reader.scope(), reader.receive, reader.send))
    try:
        await eventually(lambda: reader.status == 200)
        await asyncio.sleep(0.7)  # a check or two find the session live: the stream stays
        assert not task.done()
        await services.db.execute("UPDATE sessions SET revoked_at = now() WHERE id = $1", carol.session_id)
        revoked = time.monotonic()
        async with asyncio.timeout(5):
            await task
        assert time.monotonic() - revoked < 1.0
    finally:
        reader.close()
        task.cancel()
        await stream.stop()
    assert reader.ended


async def test_a_stream_that_sees_nothing_reads_only_behind_the_newest_events(
    app: Rampart, client: httpx.AsyncClient, alice: User, make_user: Any
) -> None:
    """Its reads start `overlap` behind the newest event in the log, whoever's: before, they started
    behind the newest event it had sent, so a caller who saw nothing re-read everything since connecting
    at every wake-up."""
    services = app.services
    quiet = await make_user()
    starts: list[uuid.UUID] = []

    class Recording(EventLog):
        async def page(self, actor: Any, query: Any, *, replica: bool = False) -> Any:
            starts.append(query.after)
            return await super().page(actor, query, replica=replica)

    stream = LiveStream(
        log=Recording(db=services.db, managers=services.managers),
        listener=None,
        poll_interval=0.1,
        overlap=0.3,
    )
    reader = StreamClient(quiet.headers)
    request = Request(reader.scope(), reader.receive)
    actor = await services.authenticator.authenticate(quiet.headers["Authorization"])
    response = await stream.route_spec().handler(Call(request=request, actor=actor, request_id="quiet"))
    task = asyncio.create_task(response(reader.scope(), reader.receive, reader.send))
    try:
        await eventually(lambda: len(starts) >= 2)
        first = starts[0]
        for _ in range(3):
            await a_task(client, alice)  # someone else's work, which `quiet` may not see
            await asyncio.sleep(0.4)
        newest = await services.db.fetchval("SELECT id FROM events ORDER BY id DESC LIMIT 1")
        await eventually(lambda: starts[-1] > first and (newest.int >> 80) - (starts[-1].int >> 80) <= 400)
        assert reader.events == []
    finally:
        reader.close()
        await finish(task, reader)
        await stream.stop()
