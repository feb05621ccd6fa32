"""The event outbox: every change writes its event row in the same transaction as the change.

Delivery (dispatcher, audit API, live stream, webhooks) is built on top of this table by
`rampart.events`, which also declares the tables (`rampart.events.tables`); this module writes them.

On a Citus cluster `events` and `event_queue` have a `shard_key` column (added when the tables are placed,
`rampart.db.citus`), the shard key of the row the event is about, and are distributed by it: an event is
written on its change's worker, in the change's transaction, and the audit log joins it with its row
there (decision 0019). A trigger on `events` queues each event on one PostgreSQL server; Citus allows no
trigger on a distributed table, so there the writer inserts the queue row itself (`citus=True`).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any, NotRequired, TypedDict, Unpack

import asyncpg
import orjson

from rampart.lib.ids import new_id, parse_uuid, shard_key_of

_COLUMNS = (
    "id, type, resource, resource_id, actor_id, impersonator_id, occurred_at, data, changes, request_id"
)
_INSERT = f"INSERT INTO events ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9::jsonb, $10)"
# On a cluster: the event with its shard key, then its queue row, each a statement Citus sends to the
# change's worker as it is (as one statement, a CTE, the inserted row went through the coordinator).
_INSERT_ON_CITUS = (
    f"INSERT INTO events ({_COLUMNS}, shard_key)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9::jsonb, $10, $11)"
)
_QUEUE_ON_CITUS = "INSERT INTO event_queue (id, shard_key, type) VALUES ($1, $2, $3)"


def shard_key_for(resource_id: str) -> int:
    """The shard key of an event about `resource_id` when no row says otherwise: its id's (0 for an id
    that is not a UUID)."""
    parsed = parse_uuid(resource_id)
    return 0 if parsed is None else shard_key_of(parsed)


class EventFields(TypedDict):
    """What an event says, as `new_event` and `write_event` take it. `impersonator_id`: the admin acting
    as `actor_id` when the request came from an impersonation session."""

    resource: str
    action: str
    resource_id: str
    actor_id: uuid.UUID | None
    data: dict[str, Any]
    changes: NotRequired[dict[str, Any] | None]
    request_id: NotRequired[str | None]
    impersonator_id: NotRequired[uuid.UUID | None]


def new_event(**fields: Unpack[EventFields]) -> tuple[dict[str, Any], uuid.UUID, dt.datetime]:
    """The event as subscribers see it, with its id and time as the table keeps them."""
    event_id = new_id()
    now = dt.datetime.now(dt.UTC)
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)  # the column keeps milliseconds
    actor_id, impersonator_id = fields["actor_id"], fields.get("impersonator_id")
    event: dict[str, Any] = {
        "id": str(event_id),
        "type": f"{fields['resource']}.{fields['action']}",
        "resource": fields["resource"],
        "resource_id": fields["resource_id"],
        "actor_id": str(actor_id) if actor_id else None,
        "impersonator_id": str(impersonator_id) if impersonator_id else None,
        "occurred_at": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "data": fields["data"],
        "changes": fields.get("changes") or {},
        # Subscribers (audit log, webhooks, logs) correlate the event with the request that caused it.
        "request_id": fields.get("request_id"),
    }
    return event, event_id, now


async def write_event(
    conn: asyncpg.Connection,
    *,
    citus: bool = False,
    shard_key: int | None = None,
    **fields: Unpack[EventFields],
) -> dict[str, Any]:
    """Insert one event row on `conn` (inside the caller's transaction) and return the event.

    `citus`: the database is a Citus coordinator: the event goes with its shard key (the row's, by default
    its id's: `shard_key_for`) and its queue row.
    """
    event, event_id, now = new_event(**fields)
    args: list[Any] = [
        event_id,
        event["type"],
        event["resource"],
        event["resource_id"],
        fields["actor_id"],
        fields.get("impersonator_id"),
        now,
        orjson.dumps(event["data"], option=orjson.OPT_NON_STR_KEYS).decode(),
        orjson.dumps(event["changes"], option=orjson.OPT_NON_STR_KEYS).decode(),
        event["request_id"],
    ]
    if citus:
        key = shard_key_for(event["resource_id"]) if shard_key is None else shard_key
        await conn.execute(_INSERT_ON_CITUS, *args, key)
        await conn.execute(_QUEUE_ON_CITUS, event_id, key, event["type"])
    else:
        await conn.execute(_INSERT, *args)
    return event


def event_insert_from(
    source: str,
    bind: Callable[[Any], str],
    event: dict[str, Any],
    event_id: uuid.UUID,
    occurred_at: dt.datetime,
    *,
    changes_sql: str = "'{}'::jsonb",
    joined: str | None = None,
) -> str:
    """An INSERT of `event` (made by `new_event`, with its id and time) about the row in CTE `source`.

    `source` holds the row as clients see it (the manager's select list, values already JSON-shaped:
    ids and timestamps as text), so `to_jsonb(source)` equals the JSON `write_event` would store.
    `joined` is another CTE (one row) that `changes_sql` reads. One PostgreSQL server only: on a Citus
    cluster writes take the transactional path (decision 0019).
    """
    tables = f"{source}, {joined}" if joined else source
    return (
        f"INSERT INTO events ({_COLUMNS}) SELECT {bind(event_id)}, {bind(event['type'])},"
        f" {bind(event['resource'])}, {source}.id, {bind(event['actor_id'])}::uuid,"
        f" {bind(event['impersonator_id'])}::uuid, {bind(occurred_at)}::timestamptz, to_jsonb({source}),"
        f" {changes_sql}, {bind(event['request_id'])}::text FROM {tables}"
    )
