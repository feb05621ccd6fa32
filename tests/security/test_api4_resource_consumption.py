"""API4:2023 Unrestricted resource consumption.

Generated from the router and /openapi.json: every route that takes a body refuses one over the limit
(declared or chunked) and survives deep nesting, huge values and thousands of keys, answering small;
every list refuses a `limit` out of range. Against a real `rampart serve` process: a client that opens a
connection and sends nothing, trickles its headers, trickles its body or sends a huge head is cut off.
The live stream holds a bounded number of connections per user.

Cited, not repeated: the request time limit and statement cancellation
(tests/api/test_timeouts_and_outages.py), per-user and per-IP rate limits (test_rate_limit.py), the
stream's slow-reader cut-off (tests/events/test_stream.py), pool exhaustion as 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest

from rampart.app import Rampart, create_app
from tests.conftest import make_settings, new_user
from tests.events.test_stream import StreamClient, eventually
from tests.ops.test_balance import _accepting_slots, _established
from tests.ops.test_workers import _workers
from tests.scale.servers import Server, serve
from tests.security.scene import TARGETS, Scene
from tests.security.surface import API, BODY_METHODS, DOCUMENT, OPERATIONS, Operation, ids

LIMIT = 1_048_576  # RAMPART_BODY_LIMIT's default, which the session app keeps
WITH_BODY = [op for op in OPERATIONS if op.method in BODY_METHODS]
# Those that read a JSON body (logout, impersonate, redeliver take none and ignore what is sent).
JSON_BODY = [op for op in WITH_BODY if "requestBody" in DOCUMENT["paths"][op.path][op.method.lower()]]
LISTS = [
    op
    for op in OPERATIONS
    # A shared parameter is a `$ref` (X-Request-ID), without a name here.
    if any(
        p.get("name") == "limit" for p in DOCUMENT["paths"][op.path][op.method.lower()].get("parameters", [])
    )
]


def _caller(op: Operation, scene: Scene) -> dict[str, str]:
    return scene.admin.headers if op.admin_only else scene.alice.headers


def _json(headers: dict[str, str]) -> dict[str, str]:
    return {**headers, "content-type": "application/json"}


# ----- bodies -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", WITH_BODY, ids=ids(WITH_BODY))
async def test_a_body_over_the_limit_is_refused_unread(
    client: httpx.AsyncClient, scene: Scene, op: Operation
) -> None:
    body = b'{"name": "' + b"x" * LIMIT + b'"}'
    declared = await client.request(op.method, op.url(), content=body, headers=_json(_caller(op, scene)))
    assert declared.status_code == 413, declared.text

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 65_536):
            yield body[start : start + 65_536]

    chunked = await client.request(op.method, op.url(), content=chunks(), headers=_json(_caller(op, scene)))
    assert chunked.status_code == 413
    assert chunked.json()["code"] == "payload_too_large"


HOSTILE_BODIES = {
    "nested_arrays": b"[" * 100_000 + b"]" * 100_000,
    "nested_objects": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "huge_integer": b'{"name": ' + b"9" * 5000 + b"}",
    "float_overflow": b'{"name": 1e999999}',
    "twenty_thousand_keys": orjson.dumps({f"k{i}": i for i in range(20_000)}),
    "long_string_in_every_field": b"",  # filled per operation below
}


@pytest.mark.parametrize("kind", list(HOSTILE_BODIES))
@pytest.mark.parametrize("op", JSON_BODY, ids=ids(JSON_BODY))
async def test_hostile_bodies_get_small_client_errors(
    client: httpx.AsyncClient, scene: Scene, op: Operation, kind: str
) -> None:
    body = HOSTILE_BODIES[kind]
    if kind == "long_string_in_every_field":
        schema = DOCUMENT["paths"][op.path][op.method.lower()].get("requestBody", {})
        properties = schema.get("content", {}).get("application/json", {}).get("schema", {}).get("properties")
        body = orjson.dumps({name: "x" * 100_000 for name in properties or {"x": None}})
    r = await client.request(op.method, op.url(), content=body, headers=_json(_caller(op, scene)))
    assert 400 <= r.status_code < 500, r.text[:300]
    assert r.headers["content-type"] == "application/problem+json"
    assert len(r.content) < 16_384, f"{len(r.content)} bytes answered to {len(body)}"


async def test_validation_lists_at_most_a_hundred_errors(client: httpx.AsyncClient, scene: Scene) -> None:
    body = {f"k{i}": i for i in range(5000)}
    r = await client.post(f"{API}/projects", json=body, headers=scene.alice.headers)
    assert r.status_code == 422
    problem = r.json()
    assert len(problem["errors"]) == 100
    assert "The first 100 of 5001 errors are listed." in problem["detail"]  # 5000 unknown, name missing


# ----- lists ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "limit", ["101", "0", "-1", "100000000000000000000", "1e2", "１０", " 10", "", "10.0"]
)
@pytest.mark.parametrize("op", LISTS, ids=ids(LISTS))
async def test_page_size_is_bounded(
    client: httpx.AsyncClient, scene: Scene, op: Operation, limit: str
) -> None:
    r = await client.get(op.url(), params={"limit": limit}, headers=_caller(op, scene))
    assert r.status_code == 400, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["limit"]


@pytest.mark.parametrize("op", LISTS, ids=ids(LISTS))
async def test_the_largest_page_is_a_hundred(client: httpx.AsyncClient, scene: Scene, op: Operation) -> None:
    values = TARGETS[op.path](scene) if op.params else {}
    r = await client.get(op.url(values), params={"limit": "100"}, headers=_caller(op, scene))
    assert r.status_code == 200, r.text
    assert r.json()["meta"]["limit"] == 100
    assert len(r.json()["data"]) <= 100


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("status[in]=" + ",".join(["todo"] * 101), "status[in]"),
        ("title[contains]=" + "x" * 201, "title[contains]"),
        ("fields=" + ",".join(f"f{i}" for i in range(3000)), "fields"),
        ("sort=" + ",".join(["title"] * 50), "sort"),
        ("cursor=" + "A" * 20_000, "cursor"),
        ("&".join(f"f{i}=1" for i in range(2000)), None),
    ],
    ids=["in_101_values", "contains_201_chars", "fields_3000", "sort_50", "cursor_20k", "params_2000"],
)
async def test_costly_queries_are_refused_with_small_answers(
    client: httpx.AsyncClient, scene: Scene, query: str, param: str | None
) -> None:
    r = await client.get(f"{API}/tasks?{query}", headers=scene.alice.headers)
    assert r.status_code == 400, r.text[:300]
    if param is not None:
        assert param in [e["field"] for e in r.json()["errors"]]
    assert len(r.content) < 4096


# ----- slow and greedy clients against a real server ------------------------------------------------------

BOUND = 15.0  # generous: the cut-offs come after about one RAMPART_HEADER_TIMEOUT (0.5 s)


def _trickle(port: int, data: bytes, gap: float = 0.1) -> tuple[bytes, int]:
    """Send `data` a byte at a time until the server answers or closes; what it said, bytes sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=BOUND) as sock:
        sock.settimeout(gap)
        deadline = time.monotonic() + BOUND
        for sent in range(len(data) + 1):
            assert time.monotonic() < deadline, f"still connected after {BOUND} s"
            with contextlib.suppress(TimeoutError):
                answer = sock.recv(65_536)
                return answer, sent  # b"" when closed
            if sent < len(data):
                try:
                    sock.send(data[sent : sent + 1])
                except OSError:  # closed while we wrote
                    return b"", sent
        sock.settimeout(BOUND)
        return sock.recv(65_536), len(data)


def test_a_connection_that_sends_nothing_is_closed(production_server: Server) -> None:
    with socket.create_connection(("127.0.0.1", production_server.port), timeout=BOUND) as sock:
        assert sock.recv(1024) == b""  # closed by the server, before our own timeout


def test_headers_sent_byte_by_byte_are_cut_off(production_server: Server) -> None:
    head = b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 400 + b"\r\n\r\n"
    answer, sent = _trickle(production_server.port, head)
    assert answer == b""  # closed without an answer
    assert sent < len(head)


def test_a_body_sent_byte_by_byte_gets_504_then_the_connection_closes(production_server: Server) -> None:
    body = b'{"name": "' + b"s" * 400 + b'"}'
    head = b"POST /api/v1/projects HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    head += b"Content-Length: %d\r\n\r\n" % len(body)
    with socket.create_connection(("127.0.0.1", production_server.port), timeout=BOUND) as sock:
        sock.sendall(head)
        answer, sent = b"", 0
        sock.settimeout(0.1)
        deadline = time.monotonic() + BOUND
        while b"\r\n\r\n" not in answer:
            assert time.monotonic() < deadline, "no answer"
            sock.send(body[sent : sent + 1])
            sent += 1
            with contextlib.suppress(TimeoutError):
                answer += sock.recv(65_536)
        assert answer.startswith(b"HTTP/1.1 504 ")
        assert sent < len(body)
        # It keeps trickling the rest; the server closes the connection instead of reading forever.
        closed = False
        while not closed:
            assert time.monotonic() < deadline, "still connected"
            try:
                if sent < len(body):
                    sock.send(body[sent : sent + 1])
                    sent += 1
                closed = sock.recv(65_536) == b""
            except TimeoutError:
                continue
            except OSError:
                closed = True


def test_a_huge_head_gets_431(production_server: Server) -> None:
    head = b"GET /health/live HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"X-Big-%d: %s\r\n" % (i, b"b" * 8000) for i in range(20)
    )
    with socket.create_connection(("127.0.0.1", production_server.port), timeout=BOUND) as sock:
        with contextlib.suppress(OSError):  # the server may close before it has read all of it
            sock.sendall(head + b"\r\n")
        answer = sock.recv(65_536)
    assert answer.startswith(b"HTTP/1.1 431 ")


def test_honest_requests_still_work_next_to_the_bounds(production_server: Server) -> None:
    """Headers near 60 KiB, a body near the limit, and keep-alive across requests are all fine."""
    with httpx.Client(base_url=production_server.url, timeout=BOUND) as http:
        r = http.get("/health/live", headers={f"X-H{i}": "h" * 5000 for i in range(11)})
        assert r.status_code == 200
        r = http.post(
            "/api/v1/projects",
            content=b'{"name": "' + b"x" * (LIMIT - 20) + b'"}',
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 401  # read in full (not 413), then refused for want of a token
        assert http.get("/health/live").status_code == 200


def test_a_crowd_of_idle_connections_is_shed(production_server: Server) -> None:
    socks = [
        socket.create_connection(("127.0.0.1", production_server.port), timeout=BOUND) for _ in range(200)
    ]
    try:
        for sock in socks:
            assert sock.recv(1024) == b""
        with httpx.Client(base_url=production_server.url, timeout=BOUND) as http:
            assert http.get("/health/live").status_code == 200
    finally:
        for sock in socks:
            sock.close()


# ----- the live stream ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def two_streams_each(database_url: str) -> AsyncIterator[Rampart]:
    application = create_app(make_settings(database_url, events_stream_max_per_user=2))
    yield application
    await application.aclose()


async def test_live_streams_per_user_are_bounded(two_streams_each: Rampart) -> None:
    app = two_streams_each
    alice, bob = await new_user(app), await new_user(app)
    clients = [StreamClient(alice.headers) for _ in range(2)]
    running = [c.run(app) for c in clients]
    try:
        await eventually(lambda: all(c.status == 200 for c in clients))
        third = StreamClient(alice.headers)
        async with asyncio.timeout(5):
            await third.run(app)  # refused at once: the task ends
        assert third.status == 429
        bobs = StreamClient(bob.headers)  # another user is not affected
        bobs_task = bobs.run(app)
        await eventually(lambda: bobs.status == 200)
        clients[0].close()  # one of Alice's ends: her slot is free again
        async with asyncio.timeout(5):
            await running[0]
        again = StreamClient(alice.headers)
        again_task = again.run(app)
        await eventually(lambda: again.status == 200)
        for c, t in ((bobs, bobs_task), (again, again_task)):
            c.close()
            async with asyncio.timeout(5):
                await t
    finally:
        for c, t in zip(clients, running, strict=True):
            c.close()
            async with asyncio.timeout(5):
                await t


async def test_the_refusal_says_when_to_retry(two_streams_each: Rampart) -> None:
    app = two_streams_each
    user = await new_user(app)
    clients = [StreamClient(user.headers) for _ in range(2)]
    running = [c.run(app) for c in clients]
    try:
        await eventually(lambda: all(c.status == 200 for c in clients))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            r = await http.get(f"{API}/events/stream", headers=user.headers)
        assert r.status_code == 429
        assert r.json()["code"] == "too_many_streams"
        assert int(r.headers["retry-after"]) >= 1
    finally:
        for c, t in zip(clients, running, strict=True):
            c.close()
            async with asyncio.timeout(5):
                await t


# ----- rate limits across the workers of one server -----------------------------------------------------


def test_the_auth_limit_holds_for_the_whole_server_whichever_worker_answers(
    database_url: str, tmp_path: Path
) -> None:
    # Issue 13, finding 6: without Redis each worker kept its own budget, so `RAMPART_RATE_LIMIT_AUTH`'s
    # 20/minute let 40 through with 2 workers. Two keep-alive connections, one held by each worker (the
    # balance gives the second connection to the idle worker; a patience of 5 s keeps it so on a busy
    # machine), take turns: the 21st request from this IP is refused, whichever worker takes it.
    with serve(database_url, tmp_path, workers=2, RAMPART_BALANCE_PATIENCE="5") as server:
        workers = _workers(server.proc.pid)
        assert len(workers) == 2
        deadline = time.monotonic() + 10
        while _accepting_slots(min(workers)) != workers:
            assert time.monotonic() < deadline, (_accepting_slots(min(workers)), workers)
            time.sleep(0.02)
        one = httpx.Client(base_url=server.url, limits=httpx.Limits(max_connections=1), timeout=10)
        two = httpx.Client(base_url=server.url, limits=httpx.Limits(max_connections=1), timeout=10)
        with one, two:
            statuses: list[int] = []
            for n in range(22):
                http = (one, two)[n % 2]
                r = http.post("/api/v1/auth/refresh", json={"refresh_token": "not-a-token"})
                statuses.append(r.status_code)
                if n == 1:  # both connections are open: one on each worker
                    assert sorted(_established(pid, server.port) for pid in workers) == [1, 1]
        assert statuses == [401] * 20 + [429, 429], statuses
        environ = Path(f"/proc/{min(workers)}/environ").read_bytes().split(b"\0")
        table = next(v.split(b"=", 1)[1] for v in environ if v.startswith(b"RAMPART_RATE_LIMIT_FILE="))
        assert Path(table.decode()).parent == Path("/dev/shm")  # noqa: S108 - where serve makes it
    assert not Path(table.decode()).exists()  # removed with the server
