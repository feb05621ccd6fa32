"""`rampart serve --log-file`: one writer, rotation by size and by age, a retention count."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import httpx

from rampart.ops.logfile import LogFile
from tests.scale.servers import serve, stop


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_rotates_by_size_and_keeps_the_newest(tmp_path: Path) -> None:
    clock = Clock()
    log = LogFile(tmp_path / "rampart.log", max_bytes=100, interval=None, keep=2, clock=clock)
    line = b"x" * 39 + b"\n"  # 40 bytes: two fit under 100, the third rotates
    for _ in range(10):
        log.write(line)
        clock.now += 1
    log.close()
    assert (tmp_path / "rampart.log").read_bytes() == line * 2
    rotated = log.rotated()
    assert len(rotated) == 2  # 4 rotations happened; the 2 oldest were removed
    assert all(p.read_bytes() == line * 2 for p in rotated)


def test_rotates_by_age_and_never_splits_a_write(tmp_path: Path) -> None:
    clock = Clock()
    log = LogFile(tmp_path / "rampart.log", max_bytes=None, interval=3600, keep=5, clock=clock)
    log.write(b"first\nsecond\n")
    clock.now += 3599
    log.write(b"third\n")
    assert log.rotated() == []
    clock.now += 1
    log.write(b"fourth\n")
    log.close()
    [old] = log.rotated()
    assert old.read_bytes() == b"first\nsecond\nthird\n"
    assert (tmp_path / "rampart.log").read_bytes() == b"fourth\n"


def test_serve_writes_every_worker_to_the_log_file(database_url: str, tmp_path: Path) -> None:
    path = tmp_path / "logs" / "rampart.log"
    with serve(
        database_url,
        tmp_path,
        workers=2,
        extra_args=("--log-file", str(path)),
        RAMPART_ACCESS_LOG="true",
        RAMPART_LOG_FORMAT="json",
    ) as server:
        for _ in range(10):
            with httpx.Client(base_url=server.url, timeout=5) as http:
                assert http.get("/health/live").status_code == 200
        assert stop(server.proc, signal.SIGTERM) in (0, 128 + signal.SIGTERM, -signal.SIGTERM)
    # Only what `serve` says before it starts the workers stays on stdout; the workers' lines are in the file.
    assert not [line for line in server.output().splitlines() if line.startswith("{")], server.output()
    records = [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]
    access = [r for r in records if r["logger"] == "rampart.access" and "/health/live" in r["msg"]]
    assert len(access) == 10, records
