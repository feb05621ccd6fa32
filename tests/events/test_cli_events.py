"""`rampart events dead` lists dead deliveries and `rampart events replay` makes them pending again."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path

import orjson

from rampart.db.pool import Database
from tests.events.conftest import emit, kind
from tests.test_cli import cli_env

RAMPART = str(Path(sys.executable).with_name("rampart"))


def rampart(*args: str, url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RAMPART, *args],
        env=cli_env(url),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_dead_letters_are_listed_and_replayed(
    db: Database, own_database_url: str, tmp_path: Path
) -> None:
    r = kind()
    event_id = await emit(db, r)
    subscriber = f"cli-{r}"
    await db.execute(
        "INSERT INTO event_deliveries (event_id, subscriber, status, attempts, last_error)"
        " VALUES ($1, $2, 'dead', 10, 'receiver said no')",
        uuid.UUID(event_id),
        subscriber,
    )
    listed = await asyncio.to_thread(rampart, "events", "dead", url=own_database_url, tmp_path=tmp_path)
    assert listed.returncode == 0, listed.stderr
    dead = [orjson.loads(line) for line in listed.stdout.splitlines()]
    assert {"event_id": event_id, "subscriber": subscriber, "attempts": 10}.items() <= next(
        d for d in dead if d["subscriber"] == subscriber
    ).items()

    bad = await asyncio.to_thread(
        rampart, "events", "replay", "--event", "x", url=own_database_url, tmp_path=tmp_path
    )
    assert bad.returncode != 0
    assert "not an event id" in bad.stderr
    replayed = await asyncio.to_thread(
        rampart, "events", "replay", "--subscriber", subscriber, url=own_database_url, tmp_path=tmp_path
    )
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed: 1" in replayed.stderr
    row = await db.fetchrow(
        "SELECT status, attempts FROM event_deliveries WHERE event_id = $1 AND subscriber = $2",
        uuid.UUID(event_id),
        subscriber,
    )
    assert row is not None
    assert (row["status"], row["attempts"]) == ("pending", 0)
