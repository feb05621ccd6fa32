"""SIGTERM drains: readiness turns 503 first (the balancer stops sending), in-flight requests complete."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import httpx
from starlette.routing import Router

from rampart.ops.drain import Drain
from rampart.ops.health import health_routes
from tests.apps.slow import CREATE_TABLE
from tests.conftest import MakeUser
from tests.scale.servers import ROOT, serve

IN_FLIGHT = 4
SLEEP = 3  # seconds each in-flight request takes (pg_sleep inside its transaction)
DELAY = 1.5  # RAMPART_DRAIN_DELAY


async def test_sigterm_turns_readiness_503_and_completes_in_flight_requests(
    database_url: str, tmp_path: Path, make_user: MakeUser
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(CREATE_TABLE)
    finally:
        await conn.close()
    user = await make_user()
    env = {
        "RAMPART_APP": "tests.apps.slow:declare",
        "RAMPART_DRAIN_DELAY": str(DELAY),
        "PYTHONPATH": str(ROOT),
    }
    with serve(database_url, tmp_path, workers=2, **env) as server:

        def slow(_: int) -> int:
            with httpx.Client(base_url=server.url, headers=user.headers, timeout=20) as http:
                r = http.post("/api/v1/pipeline_probes", json={"mode": "sleep", "seconds": SLEEP})
                return r.status_code

        with ThreadPoolExecutor(IN_FLIGHT) as pool:
            futures = [pool.submit(slow, i) for i in range(IN_FLIGHT)]
            time.sleep(0.5)  # all sent and sleeping in the database
            assert not any(f.done() for f in futures)
            server.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            # The supervisor passes the signal on within half a second (its loop's tick); then, for the
            # drain delay, the workers still answer and readiness tells the balancer to stop sending.
            while (ready := httpx.get(f"{server.url}/health/ready", timeout=5)).status_code == 200:
                assert time.monotonic() - signalled < DELAY, "readiness never turned 503"
                time.sleep(0.02)
            assert ready.status_code == 503, ready.text
            assert ready.json()["checks"]["draining"] == "shutting down"
            assert httpx.get(f"{server.url}/health/live", timeout=5).status_code == 200
            statuses = [f.result(timeout=20) for f in futures]
        assert statuses == [201] * IN_FLIGHT  # none cut mid-way
        code = server.proc.wait(timeout=15)
        assert code in (0, 128 + signal.SIGTERM, -signal.SIGTERM), code
        try:
            httpx.get(f"{server.url}/health/live", timeout=2)
            raise AssertionError("still answering after the drain")
        except httpx.TransportError:
            pass
    assert "Traceback" not in server.output(), server.output()


async def test_readiness_names_draining_once_the_drain_has_begun() -> None:
    drain = Drain(delay=0)
    drain.start()  # no server handler in this process (SIGTERM is the default): nothing is wrapped
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    router = Router(routes=health_routes({}, drain=drain))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=router), base_url="http://t") as http:
        assert (await http.get("/health/ready")).status_code == 200
        drain.draining = True
        r = await http.get("/health/ready")
    assert r.status_code == 503
    assert r.json()["checks"] == {"draining": "shutting down"}
    assert [e["field"] for e in r.json()["errors"]] == ["draining"]
