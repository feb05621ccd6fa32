"""A worker killed with SIGKILL after the commit loses nothing: the event is delivered after a restart."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from typing import Any

import pytest

from rampart.db.pool import Database
from rampart.events.dispatcher import Dispatcher, Subscriber
from tests.events.conftest import kind

# The worker commits one event, then dies by SIGKILL: at once ("before_dispatch"), or from inside the
# subscriber after the dispatcher claimed the delivery ("mid_delivery").
WORKER = """
import asyncio, os, signal, sys, uuid
from rampart.db.outbox import write_event
from rampart.db.pool import Database
from rampart.events.dispatcher import Dispatcher, Subscriber

dsn, resource, when = sys.argv[1:4]

async def main():
    db = Database(dsn)
    async with db.transaction() as conn:
        event = await write_event(conn, resource=resource, action="created", resource_id=str(uuid.uuid4()),
                                  actor_id=None, data={})
    print(event["id"], flush=True)
    if when == "before_dispatch":
        os.kill(os.getpid(), signal.SIGKILL)
    def die(event):
        os.kill(os.getpid(), signal.SIGKILL)
    dispatcher = Dispatcher(db=db, subscribers=[Subscriber("crash-" + resource, resource + ".*", die,
                                                           timeout=0.5)], lease=1.0)
    await dispatcher.run_once()
    print("not killed", flush=True)

asyncio.run(main())
"""


@pytest.mark.parametrize("when", ["before_dispatch", "mid_delivery"])
async def test_an_event_survives_a_sigkilled_worker(db: Database, own_database_url: str, when: str) -> None:
    r = kind()
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", WORKER, own_database_url, r, when],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    event_id = proc.stdout.split()[0]
    assert "not killed" not in proc.stdout

    seen: list[Mapping[str, Any]] = []

    async def record(event: Mapping[str, Any]) -> None:
        seen.append(event)

    # The restarted worker: same subscriber name, so it picks up the same delivery state.
    dispatcher = Dispatcher(db=db, subscribers=[Subscriber(f"crash-{r}", f"{r}.*", record, timeout=0.5)])
    deadline = time.monotonic() + 10  # the dead worker's lease is 1.5 s
    while not seen:
        assert time.monotonic() < deadline, "the event was never delivered after the crash"
        await dispatcher.run_once()
        await asyncio.sleep(0.05)
    assert [e["id"] for e in seen] == [event_id]
    attempts = await db.fetchval(
        "SELECT attempts FROM event_deliveries WHERE event_id = $1 AND subscriber = $2",
        uuid.UUID(event_id),
        f"crash-{r}",
    )
    assert attempts == (1 if when == "before_dispatch" else 2)
