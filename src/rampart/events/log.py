"""The audit log: reading the `events` table with filters, a cursor and the caller's visibility.

Visibility is decided in SQL by the resource managers' own predicates, so a page never holds an event the
caller may not see and never comes back short because of filtering in Python. An event is visible when
its object is visible now; once the object is gone (deleted), the predicate is evaluated against the row
as the event recorded it (`jsonb_populate_record`), so the owner of a deleted task still sees its
`tasks.deleted`, and a stranger still does not. Holders of `events:read_any` see everything.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from rampart.access.actor import Actor
from rampart.db.pool import Database
from rampart.db.replicas import Replicas
from rampart.errors import FieldError, InvalidQuery
from rampart.lib.ids import parse_uuid
from rampart.resources.manager import ResourceManager
from rampart.resources.spec import Binder

READ_ANY = "events:read_any"
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
_PARAMS = frozenset({"resource", "resource_id", "type", "actor_id", "after", "limit"})
# Events whose `resource` is not a declared resource: rampart.events.webhooks writes these.
OTHER_SOURCES = ("webhooks",)
_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,62}")
_TYPE_RE = re.compile(r"[a-z][a-z0-9_]{0,62}\.[a-z][a-z0-9_]{0,62}")
# A non-UUID resource_id (never written by the framework) must make a row invisible, not fail the query.
_RESOURCE_UUID = (
    "(CASE WHEN e.resource_id ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'"
    " THEN e.resource_id::uuid END)"
)
_COLUMNS = (
    "e.id, e.type, e.resource, e.resource_id, e.actor_id, e.occurred_at, e.data, e.changes, e.request_id"
)


@dataclass(frozen=True, slots=True)
class LogQuery:
    """A parsed `GET /events` query."""

    resource: str | None = None
    resource_id: str | None = None
    type: str | None = None
    actor_id: uuid.UUID | None = None
    after: uuid.UUID | None = None
    limit: int = DEFAULT_LIMIT


def _bad(param: str, code: str, message: str) -> InvalidQuery:
    return InvalidQuery(message, errors=[FieldError(param, code, message)])


def parse_log_query(params: Any, *, sources: Collection[str] | None = None) -> LogQuery:
    """Parse a Starlette `QueryParams`; every bad parameter is a 400 `invalid_query` naming it.

    `sources`: the `resource` values there are (`EventLog.sources`); another is refused, not answered with
    an empty page, so that a misspelt filter is noticed (and the OpenAPI enum says exactly this)."""
    values: dict[str, str] = {}
    for key in dict.fromkeys(params.keys()):
        if key not in _PARAMS:
            raise _bad(key, "unknown_parameter", f"{key!r} is not a parameter of the event log.")
        got = params.getlist(key)
        if len(got) != 1:
            raise _bad(key, "repeated_parameter", f"{key} may be given only once.")
        values[key] = got[0]
    resource = values.get("resource")
    if resource is not None and (
        not _NAME_RE.fullmatch(resource) or (sources is not None and resource not in sources)
    ):
        raise _bad("resource", "invalid", "resource must be a resource name such as 'tasks'.")
    resource_id = values.get("resource_id")
    # NUL too: PostgreSQL text cannot hold it, so binding it would fail the query (a 500).
    if resource_id is not None and (not 1 <= len(resource_id) <= 200 or "\x00" in resource_id):
        raise _bad("resource_id", "invalid", "resource_id must be 1 to 200 characters, without NUL.")
    event_type = values.get("type")
    if event_type is not None and not _TYPE_RE.fullmatch(event_type):
        raise _bad("type", "invalid", "type must look like 'tasks.updated'.")
    actor_id = after = None
    if "actor_id" in values:
        actor_id = parse_uuid(values["actor_id"])
        if actor_id is None:
            raise _bad("actor_id", "invalid", "actor_id must be a UUID.")
    if "after" in values:
        after = parse_uuid(values["after"])
        if after is None:
            raise _bad("after", "invalid", "after must be an event id.")
    limit = DEFAULT_LIMIT
    if "limit" in values:
        raw = values["limit"]
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
            raise _bad("limit", "out_of_range", f"limit must be an integer from 1 to {MAX_LIMIT}.")
        limit = int(raw)
    return LogQuery(resource, resource_id, event_type, actor_id, after, limit)


class EventLog:
    """Reads events as a given actor may see them."""

    def __init__(
        self, *, db: Database, managers: Mapping[str, ResourceManager], reads: Replicas | None = None
    ) -> None:
        self.db = db
        self.managers = managers
        self.reads = reads
        self.sources = tuple(sorted({*managers, *OTHER_SOURCES}))  # what events' `resource` can be

    def visible_sql(self, actor: Actor, bind: Binder) -> str | None:
        """The condition on `events e` for events `actor` may see, or None when all are visible."""
        if actor.can(READ_ANY):
            return None
        branches = []
        for name, manager in self.managers.items():
            table = manager.resource.table
            live = manager.visible_sql(actor, "o", bind) or "TRUE"
            recorded = manager.visible_sql(actor, "o", bind) or "TRUE"
            branches.append(
                f"(e.resource = {bind(name)} AND ("
                f"EXISTS (SELECT 1 FROM {table} o WHERE o.id = {_RESOURCE_UUID} AND {live})"
                f" OR (NOT EXISTS (SELECT 1 FROM {table} o WHERE o.id = {_RESOURCE_UUID})"
                f" AND EXISTS (SELECT 1 FROM jsonb_populate_record(NULL::{table}, e.data) o"
                f" WHERE {recorded}))))"
            )
        # Events of anything not declared as a resource (webhooks, say) are for READ_ANY holders only.
        return "(" + " OR ".join(branches) + ")" if branches else "FALSE"

    async def page(
        self, actor: Actor, query: LogQuery, *, replica: bool = False
    ) -> tuple[list[dict[str, Any]], bool]:
        """Up to `query.limit` visible events after the cursor, oldest first, and whether more exist.

        `replica`: the read may go to a read replica (with read-your-writes for `actor`). The live stream
        does not ask for it: it is woken by the primary's notifications and must then find the event.
        """
        bind = Binder()
        where = []
        if query.resource is not None:
            where.append(f"e.resource = {bind(query.resource)}")
        if query.resource_id is not None:
            where.append(f"e.resource_id = {bind(query.resource_id)}")
        if query.type is not None:
            where.append(f"e.type = {bind(query.type)}")
        if query.actor_id is not None:
            where.append(f"e.actor_id = {bind(query.actor_id)}")
        if query.after is not None:
            where.append(f"e.id > {bind(query.after)}")
        visible = self.visible_sql(actor, bind)
        if visible is not None:
            where.append(visible)
        sql = (
            f"SELECT {_COLUMNS} FROM events e"
            + (" WHERE " + " AND ".join(where) if where else "")
            + f" ORDER BY e.id LIMIT {query.limit + 1}"
        )
        if replica and self.reads is not None:
            rows = await self.reads.fetch(actor.user_id, sql, *bind.params)
        else:
            rows = await self.db.fetch(sql, *bind.params)
        events = [to_event(row) for row in rows[: query.limit]]
        return events, len(rows) > query.limit


def to_event(row: Any) -> dict[str, Any]:
    """An `events` row (an asyncpg Record or a mapping) as API.md shows an event."""
    occurred = row["occurred_at"]
    return {
        "id": str(row["id"]),
        "type": row["type"],
        "resource": row["resource"],
        "resource_id": row["resource_id"],
        "actor_id": str(row["actor_id"]) if row["actor_id"] is not None else None,
        "occurred_at": occurred.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "data": _json(row["data"]),
        "changes": _json(row["changes"]),
        "request_id": row["request_id"],
    }


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value
