"""The worker supervisor of `rampart serve --workers N`: recycling and crashed workers, under load."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.scale.servers import serve


def _workers(supervisor: int) -> set[int]:
    """The supervisor's worker processes (its children, the multiprocessing helper aside). A child
    that is gone by the time it is looked at (a killed worker being collected) is not one."""
    children: set[int] = set()
    for task in Path(f"/proc/{supervisor}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread of the supervisor that just ended
            children |= {int(pid) for pid in (task / "children").read_text().split()}
    workers = set()
    for pid in children:
        try:
            if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                workers.add(pid)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return workers


def _load(url: str, count: int) -> list[int | str]:
    """`count` requests, a new connection each (so every worker takes some); statuses or errors."""
    out: list[int | str] = []
    for _ in range(count):
        try:
            with httpx.Client(base_url=url, timeout=10) as http:
                out.append(http.get("/health/live").status_code)
        except httpx.TransportError as exc:
            out.append(repr(exc))
    return out


def test_workers_recycle_after_max_requests_without_a_failed_request(
    database_url: str, tmp_path: Path
) -> None:
    with serve(
        database_url, tmp_path, workers=2, extra_args=("--max-requests", "20", "--max-requests-jitter", "5")
    ) as server:
        before = _workers(server.proc.pid)
        assert len(before) == 2
        statuses = _load(server.url, 100)
        assert statuses == [200] * 100  # zero failed requests while workers come and go
        deadline = time.monotonic() + 10
        while len(after := _workers(server.proc.pid)) != 2 or after & before:
            assert time.monotonic() < deadline, (before, after)
            time.sleep(0.1)
    assert "worker recycling after" in server.output(), server.output()


def test_a_crashed_worker_is_replaced_and_the_others_keep_serving(database_url: str, tmp_path: Path) -> None:
    with serve(database_url, tmp_path, workers=2) as server:
        before = _workers(server.proc.pid)
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        while len(after := _workers(server.proc.pid)) != 2 or victim in after:
            assert time.monotonic() - killed < 5, after
            time.sleep(0.02)
        replaced = time.monotonic() - killed
        assert replaced < 1.0, f"the new worker started {replaced:.2f} s after the crash"
        statuses = _load(server.url, 40)  # no request was in flight: none may fail
        assert statuses == [200] * 40, statuses


def _silence_then_kill(worker: int) -> None:
    """A worker that stops answering the supervisor's ping, then is gone: what a worker in the middle of
    exiting looks like (its ping thread no longer runs), with the ping pending when it goes."""
    os.kill(worker, signal.SIGSTOP)
    time.sleep(1.2)  # the supervisor pings every 0.5 s: one ping is waiting for an answer now
    os.kill(worker, signal.SIGKILL)


def test_a_worker_gone_while_the_supervisor_waits_for_its_answer_is_replaced_at_once(
    database_url: str, tmp_path: Path
) -> None:
    # uvicorn's own supervisor waited out the whole health-check timeout (30 s) before it saw the worker
    # was gone, with fewer workers serving meanwhile (rampart.ops.supervisor).
    with serve(database_url, tmp_path, workers=2) as server:
        before = _workers(server.proc.pid)
        victim = min(before)
        _silence_then_kill(victim)
        killed = time.monotonic()
        while len(after := _workers(server.proc.pid)) != 2 or victim in after:
            assert time.monotonic() - killed < 10, (victim, after)
            time.sleep(0.05)
        assert _load(server.url, 10) == [200] * 10


def test_sigterm_while_the_supervisor_waits_for_an_answer_stops_every_worker(
    database_url: str, tmp_path: Path
) -> None:
    with serve(database_url, tmp_path, workers=2) as server:
        workers = _workers(server.proc.pid)
        _silence_then_kill(min(workers))
        server.proc.send_signal(signal.SIGTERM)
        # uvicorn's supervisor acted on the signal only once its wait (30 s) was over; a test harness or
        # an init system that gave up before then killed it and left its workers running with no parent.
        assert server.proc.wait(timeout=15) == 0, server.output()[-3000:]
        survivors = [pid for pid in workers if Path(f"/proc/{pid}").exists()]
        assert survivors == [], server.output()[-3000:]


def test_sighup_reloads_code_and_config_with_zero_failed_requests(database_url: str, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("RAMPART_CORS_ORIGINS=http://old.example\n")

    def allowed(url: str, origin: str) -> bool:
        r = httpx.get(f"{url}/health/live", headers={"Origin": origin}, timeout=5)
        return r.headers.get("access-control-allow-origin") == origin

    with serve(database_url, tmp_path, workers=2) as server:
        before = _workers(server.proc.pid)
        assert allowed(server.url, "http://old.example")
        (tmp_path / ".env").write_text("RAMPART_CORS_ORIGINS=http://new.example\n")
        reloaded = threading.Event()

        def load() -> list[int | str]:
            # A bounded load loop across the reload: until it is over (and a little after), 2000 at most.
            out: list[int | str] = []
            while len(out) < 2000 and not reloaded.is_set():
                out += _load(server.url, 10)
            return out + _load(server.url, 20)

        with ThreadPoolExecutor(2) as pool:
            loads = [pool.submit(load) for _ in range(2)]
            try:
                time.sleep(0.2)
                server.proc.send_signal(signal.SIGHUP)
                deadline = time.monotonic() + 60
                while len(after := _workers(server.proc.pid)) != 2 or after & before:
                    assert time.monotonic() < deadline, (before, after, server.output()[-2000:])
                    time.sleep(0.05)
            finally:
                reloaded.set()  # the load loops end either way (a failed reload must not hang the suite)
            statuses = [s for f in loads for s in f.result(timeout=60)]
        assert len(statuses) > 100
        assert [s for s in statuses if s != 200] == []  # zero failed requests
        assert allowed(server.url, "http://new.example")  # the new workers read the new configuration
        assert not allowed(server.url, "http://old.example")
