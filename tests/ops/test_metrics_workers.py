"""`/metrics` of `rampart serve --workers 2`: whichever worker answers, counts are the whole server's."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx

from rampart.ops.metrics import _forget_dead
from tests.ops.test_health_metrics import _samples
from tests.scale.servers import serve

REQUESTS = 60


def _route_total(text: str, name: str, route: str) -> float:
    return sum(
        value
        for (sample, labels), value in _samples(text).items()
        if sample == name and dict(labels).get("route") == route
    )


def test_request_counts_add_up_across_workers(database_url: str, tmp_path: Path) -> None:
    with serve(database_url, tmp_path, workers=2) as server:
        for _ in range(REQUESTS):
            # A new connection each time, so both workers take a share.
            with httpx.Client(base_url=server.url, timeout=5) as http:
                assert http.get("/health/live").status_code == 200
        pids: set[str] = set()
        for _ in range(6):  # any worker may answer a scrape: each must add up every worker's counts
            with httpx.Client(base_url=server.url, timeout=5) as http:
                r = http.get("/metrics")
            assert r.status_code == 200
            assert _route_total(r.text, "rampart_http_requests_total", "/health/live") == REQUESTS
            assert (
                _route_total(r.text, "rampart_http_request_duration_seconds_count", "/health/live")
                == REQUESTS
            )
            samples = _samples(r.text)
            pids |= {
                dict(labels)["pid"]
                for (name, labels), _ in samples.items()
                if name == "rampart_process_resident_memory_bytes"
            }
            pool = [v for (n, _), v in samples.items() if n == "rampart_db_pool_connections"]
            assert len(pool) == 3  # in_use, idle, waiting: summed over the workers
        assert len(pids) == 2, pids  # memory (and CPU) per worker process
    assert "Traceback" not in server.output(), server.output()


def test_a_dead_workers_live_gauges_are_forgotten(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait(timeout=10)
    alive = os.getpid()
    for pid in (dead.pid, alive):
        (tmp_path / f"gauge_livesum_{pid}.db").write_bytes(b"")
        (tmp_path / f"counter_{pid}.db").write_bytes(b"")
    _forget_dead(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"counter_{dead.pid}.db", f"counter_{alive}.db", f"gauge_livesum_{alive}.db"]
    )  # a dead worker's counts stay in the totals; its pool and memory gauges go
