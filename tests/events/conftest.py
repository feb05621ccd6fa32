"""Event-delivery tests get a database of their own per module: a dispatcher hands out every undelivered
event it finds, so sharing the session database would mix these tests' deliveries with everyone's events."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from rampart.db.outbox import write_event
from rampart.db.pool import Database
from tests.conftest import _admin, _db_url, upgrade_demo


@pytest.fixture(scope="module")
def own_database_url() -> Iterator[str]:
    name = f"rampart_evt_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    url = _db_url(name)
    upgrade_demo(url)
    yield url
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def db(own_database_url: str) -> AsyncIterator[Database]:
    database = Database(own_database_url)
    yield database
    await database.close()


def kind() -> str:
    """A resource name no other test uses, so a test's subscribers see only its own events."""
    return f"r{uuid.uuid4().hex[:12]}"


async def emit(db: Database, resource: str, action: str = "created", **data: object) -> str:
    """Commit one event (as a change would) and return its id."""
    async with db.transaction() as conn:
        event = await write_event(
            conn,
            resource=resource,
            action=action,
            resource_id=str(uuid.uuid4()),
            actor_id=None,
            data=dict(data),
        )
    return str(event["id"])


def id_at(ms: int) -> uuid.UUID:
    """A UUIDv7 of millisecond `ms`, as `rampart.lib.ids.new_id` would have made it then."""
    return uuid.UUID(
        int=(ms << 80) | (0x7 << 76) | (random.getrandbits(12) << 64) | (0b10 << 62) | random.getrandbits(62)
    )


async def emit_aged(db: Database, resource: str, days: float, action: str = "created") -> str:
    """Commit one event as if written `days` ago (its id and time both that old) and return its id."""
    event_id = id_at(int((time.time() - days * 86_400) * 1000))
    await db.execute(
        "INSERT INTO events (id, type, resource, resource_id, occurred_at)"
        " VALUES ($1, $2, $3, $4, now() - make_interval(secs => $5))",
        event_id,
        f"{resource}.{action}",
        resource,
        str(uuid.uuid4()),
        days * 86_400,
    )
    return str(event_id)
