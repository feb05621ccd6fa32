"""Connections spread evenly over the workers (rampart.ops.balance).

In one process: two listeners on one listening socket stand for two workers (each with its own slot of
the ledger, as if it were another process), so bursts are shared deterministically. Then
`rampart serve --workers 2` itself, with real connections.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from rampart.ops.balance import PATIENCE, BalancedListener, Ledger, _patience, create_ledger_file
from tests.ops.test_workers import _workers
from tests.scale.servers import serve


class Counted(asyncio.Protocol):
    """A connection of a listener: reports its end, as the HTTP protocol does in a worker."""

    def __init__(self, listener: list[BalancedListener]) -> None:
        self.listener = listener

    def connection_lost(self, exc: Exception | None) -> None:
        self.listener[0].closed_one()


@pytest.fixture
def other_process() -> Iterator[int]:
    """A live process that is not this one: the pid the second "worker" of the ledger is filed under."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    sock = socket.create_server(("127.0.0.1", 0), backlog=128)
    yield sock
    sock.close()


@pytest.fixture
def ledger_path(tmp_path: Path) -> str:
    path = str(tmp_path / "ledger")
    create_ledger_file(path, slots=4)
    return path


async def _listener(
    sock: socket.socket, path: str, pid: int | None = None, patience: float = 0.1
) -> BalancedListener:
    ledger = Ledger(path, pid=pid)
    ledger.claim()
    slot: list[BalancedListener] = []
    listener = BalancedListener(
        asyncio.get_running_loop(), sock.dup(), lambda: Counted(slot), ledger, patience=patience
    )
    slot.append(listener)
    return listener


async def _connect(sock: socket.socket, count: int) -> list[asyncio.StreamWriter]:
    port = sock.getsockname()[1]
    opened = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port) for _ in range(count)))
    return [writer for _, writer in opened]


async def _held(*listeners: BalancedListener, total: int, within: float = 2.0) -> list[int]:
    deadline = time.monotonic() + within
    while sum(held := [x._ledger.held for x in listeners]) != total:
        assert time.monotonic() < deadline, held
        await asyncio.sleep(0.005)
    return held


@pytest.fixture
async def pair(
    listening: socket.socket, ledger_path: str, other_process: int
) -> AsyncIterator[tuple[BalancedListener, BalancedListener]]:
    first = await _listener(listening, ledger_path)
    second = await _listener(listening, ledger_path, pid=other_process)
    yield first, second
    first.close()
    second.close()


async def test_a_burst_of_connections_is_shared_evenly(
    pair: tuple[BalancedListener, BalancedListener], listening: socket.socket
) -> None:
    first, second = pair
    writers = await _connect(listening, 40)
    a, b = await _held(first, second, total=40)
    assert abs(a - b) <= 1, (a, b)
    for writer in writers[:30]:  # connections end: the counts follow, and new ones go where fewer are
        writer.close()
    a, b = await _held(first, second, total=10)
    more = await _connect(listening, 20)
    a, b = await _held(first, second, total=30)
    assert abs(a - b) <= 1, (a, b)
    for writer in writers[30:] + more:
        writer.close()


async def test_a_worker_that_stopped_accepting_is_not_waited_for(
    pair: tuple[BalancedListener, BalancedListener], listening: socket.socket
) -> None:
    first, second = pair
    second.close()  # draining: it takes no connection from now on
    started = time.monotonic()
    writers = await _connect(listening, 20)
    assert await _held(first, second, total=20) == [20, 0]
    assert time.monotonic() - started < first._patience  # never waited for the other
    for writer in writers:
        writer.close()


async def test_a_worker_that_does_not_take_its_share_is_waited_for_only_a_moment(
    listening: socket.socket, ledger_path: str, other_process: int
) -> None:
    first = await _listener(listening, ledger_path, patience=0.2)
    idle = Ledger(ledger_path, pid=other_process)  # a live worker with a slot, accepting, never reading
    idle.claim()
    started = time.monotonic()
    writers = await _connect(listening, 10)
    await _held(first, total=10)
    waited = time.monotonic() - started
    assert 0.2 <= waited < 1.0, waited  # one patience for the whole burst, not one per connection
    first.close()
    for writer in writers:
        writer.close()


def test_the_slot_of_a_process_that_is_gone_is_taken_over_and_not_counted(
    ledger_path: str, other_process: int
) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    alive = Ledger(ledger_path, pid=other_process)
    alive.claim()
    alive.add(3)
    dead = Ledger(ledger_path, pid=gone.pid)
    dead.claim()
    dead.add(1)
    me = Ledger(ledger_path)
    assert me.least_of_others() == 3  # the dead worker's 1 does not count
    me.claim()
    assert me.index == dead.index  # its slot is reused
    alive.stop_accepting()
    assert me.least_of_others() is None


def _established(pid: int, port: int) -> int:
    """Connections to `port` that process `pid` holds (its socket descriptors, matched in /proc/net/tcp)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = str(fd.readlink()) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port, state, inode = int(fields[1].split(":")[1], 16), fields[3], fields[9]
        if local_port == port and state == "01" and inode in inodes:  # 01: ESTABLISHED
            count += 1
    return count


def _accepting_slots(worker: int) -> set[int]:
    """The live worker pids holding an accepting slot of the ledger `worker` was started with."""
    environ = Path(f"/proc/{worker}/environ").read_bytes().split(b"\0")
    path = next(v.split(b"=", 1)[1] for v in environ if v.startswith(b"RAMPART_BALANCE_FILE="))
    data = Path(path.decode()).read_bytes()
    slots = (struct.unpack_from("qqq", data, i) for i in range(0, len(data), 24))
    return {pid for pid, _, accepting in slots if pid and accepting and Path(f"/proc/{pid}").exists()}


def test_rampart_serve_spreads_a_burst_of_connections_over_its_workers(
    database_url: str, tmp_path: Path
) -> None:
    # Patience of 5 s: on a loaded CI machine a worker may not run for over 0.1 s, and the other one would
    # rightly stop waiting for it; here the test is the sharing, not that fallback (tested above).
    with serve(database_url, tmp_path, workers=2, RAMPART_BALANCE_PATIENCE="5") as server:
        workers = _workers(server.proc.pid)
        assert len(workers) == 2
        port = int(server.url.rsplit(":", 1)[1])
        # Ready means one worker answers; the other may not have its listener yet (it would get nothing).
        deadline = time.monotonic() + 10
        while _accepting_slots(min(workers)) != set(workers):
            assert time.monotonic() < deadline, (_accepting_slots(min(workers)), workers)
            time.sleep(0.02)

        async def burst() -> list[int]:
            limits = httpx.Limits(max_connections=40, max_keepalive_connections=40)
            async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=10) as http:
                answers = await asyncio.gather(*(http.get("/health/live") for _ in range(40)))
                held = [_established(pid, port) for pid in workers]
            assert [r.status_code for r in answers] == [200] * 40
            return held

        held = asyncio.run(burst())
        assert sum(held) == 40
        assert max(held) - min(held) <= 2, held


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", PATIENCE),
        ("2.5", 2.5),
        ("0", PATIENCE),
        ("-1", PATIENCE),
        ("61", PATIENCE),
        ("soon", PATIENCE),
        ("nan", PATIENCE),
    ],
)
def test_patience_comes_from_the_environment_within_bounds(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: float
) -> None:
    monkeypatch.setenv("RAMPART_BALANCE_PATIENCE", raw)
    assert _patience() == expected
