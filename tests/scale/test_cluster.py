"""Two `rampart serve` instances on different ports behind nginx, sharing PostgreSQL and Redis.

What a deployment of several machines relies on, tested for real on loopback: limits, revocations and
changes hold across instances, and losing an instance loses no acknowledged write.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.conftest import REDIS_URL, MakeUser
from tests.scale.servers import Server, nginx, serve

pytestmark = pytest.mark.skipif(
    shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(),
    reason="nginx is not installed (.ci/run installs it)",
)

LIMIT = 60  # per caller per minute (GCRA: a burst of 60, then one a second), shared through Redis
BOUND = 1.0  # seconds: revocation and row-cache propagation between instances (decision 0009)


@dataclass
class Cluster:
    a: Server
    b: Server
    balancer: str


def _env() -> dict[str, str]:
    return {"RAMPART_REDIS_URL": REDIS_URL, "RAMPART_RATE_LIMIT": f"{LIMIT}/minute"}


@pytest.fixture(scope="module")
def cluster(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("cluster")
    with ExitStack() as stack:
        a = stack.enter_context(serve(database_url, workdir, name="a", **_env()))
        b = stack.enter_context(serve(database_url, workdir, name="b", **_env()))
        balancer = stack.enter_context(nginx([a.port, b.port], workdir))
        yield Cluster(a, b, balancer)


async def test_rate_limit_holds_across_instances(cluster: Cluster, make_user: MakeUser) -> None:
    user = await make_user()
    statuses: list[int] = []
    with (
        httpx.Client(base_url=cluster.a.url, headers=user.headers, timeout=5) as a,
        httpx.Client(base_url=cluster.b.url, headers=user.headers, timeout=5) as b,
        httpx.Client(base_url=cluster.balancer, headers=user.headers, timeout=5) as lb,
    ):
        started = time.monotonic()
        for i in range(2 * LIMIT):
            statuses.append((a, b, lb)[i % 3].get("/api/v1/projects").status_code)
        elapsed = time.monotonic() - started
    assert set(statuses) <= {200, 429}, statuses
    assert statuses[:LIMIT] == [200] * LIMIT
    # The sum over both instances never exceeds the limit: the burst, plus what refilled meanwhile.
    assert statuses.count(200) <= LIMIT + int(elapsed * LIMIT / 60), (statuses.count(200), elapsed)


async def test_session_revoked_through_one_is_refused_by_the_other(
    cluster: Cluster, make_user: MakeUser
) -> None:
    user = await make_user()
    with (
        httpx.Client(base_url=cluster.a.url, headers=user.headers, timeout=5) as a,
        httpx.Client(base_url=cluster.b.url, headers=user.headers, timeout=5) as b,
    ):
        assert b.get("/api/v1/auth/me").status_code == 200  # B has checked (and cached) the session
        assert a.post("/api/v1/auth/logout").status_code == 204
        revoked = time.monotonic()
        while (status := b.get("/api/v1/auth/me").status_code) == 200:
            assert time.monotonic() - revoked < BOUND, "B still accepts the revoked session"
            time.sleep(0.02)
        assert status == 401


async def test_a_change_through_one_is_not_served_stale_by_the_other(
    cluster: Cluster, make_user: MakeUser
) -> None:
    user = await make_user()
    with (
        httpx.Client(base_url=cluster.a.url, headers=user.headers, timeout=5) as a,
        httpx.Client(base_url=cluster.b.url, headers=user.headers, timeout=5) as b,
    ):
        created = a.post("/api/v1/projects", json={"name": "v0"})
        assert created.status_code == 201, created.text
        url = f"/api/v1/projects/{created.json()['data']['id']}"
        for version in range(1, 5):  # about 30 requests: under LIMIT
            assert b.get(url).json()["data"]["name"] == f"v{version - 1}"  # cached by B now
            r = a.patch(url, json={"name": f"v{version}"})
            assert r.status_code == 200, r.text
            changed = time.monotonic()
            while (name := b.get(url).json()["data"]["name"]) != f"v{version}":
                assert name == f"v{version - 1}", name
                assert time.monotonic() - changed < BOUND, "B serves the old row beyond the bound"
                time.sleep(0.01)
            # Once seen, the new version stays: the old row is never put back.
            assert all(b.get(url).json()["data"]["name"] == f"v{version}" for _ in range(3))


async def test_killing_an_instance_under_load_loses_no_acknowledged_write(
    database_url: str, tmp_path: Path, make_user: MakeUser
) -> None:
    user = await make_user()
    threads, per_thread, kill_after = 4, 40, 40
    acknowledged: list[str] = []
    failed: list[tuple[int, int, str]] = []  # (thread, index, what)
    lock = threading.Lock()
    with ExitStack() as stack:
        env = {"RAMPART_REDIS_URL": REDIS_URL, "RAMPART_RATE_LIMIT": "1000000/minute"}
        a = stack.enter_context(serve(database_url, tmp_path, name="a", **env))
        b = stack.enter_context(serve(database_url, tmp_path, name="b", **env))
        balancer = stack.enter_context(nginx([a.port, b.port], tmp_path))
        killed = threading.Event()

        def load(worker: int) -> None:
            with httpx.Client(base_url=balancer, headers=user.headers, timeout=10) as http:
                for i in range(per_thread):
                    try:
                        r = http.post("/api/v1/projects", json={"name": f"load-{worker}-{i}"})
                    except httpx.TransportError as exc:
                        with lock:
                            failed.append((worker, i, repr(exc)))
                        continue
                    with lock:
                        if r.status_code == 201:
                            acknowledged.append(r.json()["data"]["id"])
                        else:
                            failed.append((worker, i, f"{r.status_code} {r.text[:100]}"))
                        if len(acknowledged) >= kill_after and not killed.is_set():
                            killed.set()
                            a.proc.kill()  # no drain: the instance vanishes mid-load

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(load, range(threads)))
        assert killed.is_set()
        assert a.proc.wait(timeout=10) is not None

    # At most the requests in flight on the killed instance fail (one per connection nginx had open to
    # it); nginx then routes everything to the survivor: the last requests of every thread succeeded.
    assert len(failed) <= 2 * threads, failed
    assert not [f for f in failed if f[1] >= per_thread - 10], failed
    assert len(acknowledged) + len(failed) == threads * per_thread
    conn = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetch(
            "SELECT id::text FROM projects WHERE id::text = ANY($1::text[])", acknowledged
        )
    finally:
        await conn.close()
    assert {r["id"] for r in stored} == set(acknowledged)  # every acknowledged write is there


async def test_a_stream_through_the_balancer_sees_changes_made_through_either_instance(
    cluster: Cluster, make_user: MakeUser
) -> None:
    user = await make_user()
    connected = threading.Event()
    wanted: set[str] = set()
    seen: list[dict[str, str]] = []

    def read() -> None:
        timeout = httpx.Timeout(10.0)
        with (
            httpx.Client(base_url=cluster.balancer, headers=user.headers, timeout=timeout) as http,
            http.stream("GET", "/api/v1/events/stream?resource=projects") as r,
        ):
            assert r.status_code == 200
            connected.set()
            deadline = time.monotonic() + 10
            for line in r.iter_lines():
                if line.startswith("data:"):
                    seen.append(json.loads(line.removeprefix("data:")))
                # A new user sees only its own projects: the two created below.
                if len(seen) >= 2 or time.monotonic() > deadline:
                    return

    with ThreadPoolExecutor(1) as pool:
        reader = pool.submit(read)
        assert connected.wait(10)
        time.sleep(0.2)  # the stream has subscribed
        for server in (cluster.a, cluster.b):
            r = httpx.post(
                f"{server.url}/api/v1/projects", json={"name": "live"}, headers=user.headers, timeout=5
            )
            assert r.status_code == 201, r.text
            wanted.add(r.json()["data"]["id"])
        reader.result(timeout=15)
    created = {e["resource_id"] for e in seen if e["type"] == "projects.created"}
    assert wanted <= created, seen  # one of the two was made through the instance not serving the stream
