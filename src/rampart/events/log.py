"""The audit log: reading the `events` table with filters, a cursor and the caller's visibility.

Visibility is decided in SQL by the resource managers' own rules, so a page never holds an event the
caller may not see and never comes back short because of filtering in Python. An event is visible when
its object is visible now; once the object is gone (deleted), the rule is evaluated on the row as it was
when deleted (kept in the resource's record of deleted rows), so the owner of a deleted task still sees
its history, and a stranger still does not. Holders of `events:read_any` see everything.

What a page costs depends on what the caller may see, never on the events of others (decision 0016).
A page first takes the next `window` events after the cursor, of anyone, through an index; when they
are fewer than that, it judges them one by one (cheap: the live stream and pollers read just behind the
newest events). Otherwise it asks each resource for the objects the caller may see
(`ResourceManager.events_visible_ids_sql`, answered by the resource's own indexes) and reads their
events through the index on (resource_id, id). Either way the same rule decides.

On a Citus cluster the same rule and the same two ways are written for distributed events
(`rampart.events.log_citus`).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson

from rampart.access.actor import Actor
from rampart.db.pool import Database
from rampart.db.replicas import Replicas
from rampart.errors import bad_query
from rampart.lib.ids import parse_uuid
from rampart.resources.manager import ResourceManager
from rampart.resources.spec import Binder

READ_ANY = "events:read_any"
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
_PARAMS = frozenset({"resource", "resource_id", "type", "actor_id", "after", "limit"})
_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,62}")
_TYPE_RE = re.compile(r"[a-z][a-z0-9_]{0,62}\.[a-z][a-z0-9_]{0,62}")
# A non-UUID resource_id (never written by the framework) must make a row invisible, not fail the query.
_RESOURCE_UUID = (
    "(CASE WHEN w.resource_id ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'"
    " THEN w.resource_id::uuid END)"
)
# The events a page may judge one by one: past this many events after the cursor (of anyone), it finds
# the caller's own by index instead (decision 0016: 1,000 rows judged cost about what finding a few
# thousand visible objects does).
WINDOW = 1000
_START = uuid.UUID(int=0)
_COLUMNS = (
    "e.id, e.type, e.resource, e.resource_id, e.actor_id, e.impersonator_id, e.occurred_at, e.data,"
    " e.changes, e.request_id"
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


def parse_log_query(params: Any, *, sources: Collection[str] | None = None) -> LogQuery:
    """Parse a Starlette `QueryParams`; every bad parameter is a 400 `invalid_query` naming it.

    `sources`: the `resource` values there are (`EventLog.sources`); another is refused, not answered with
    an empty page, so that a misspelt filter is noticed (and the OpenAPI enum says exactly this)."""
    values: dict[str, str] = {}
    for key in dict.fromkeys(params.keys()):
        if key not in _PARAMS:
            raise bad_query(key, "unknown_parameter", f"{key!r} is not a parameter of the event log.")
        got = params.getlist(key)
        if len(got) != 1:
            raise bad_query(key, "repeated_parameter", f"{key} may be given only once.")
        values[key] = got[0]
    resource = values.get("resource")
    if resource is not None and (
        not _NAME_RE.fullmatch(resource) or (sources is not None and resource not in sources)
    ):
        raise bad_query("resource", "invalid", "resource must be a resource name such as 'tasks'.")
    resource_id = values.get("resource_id")
    # NUL too: PostgreSQL text cannot hold it, so binding it would fail the query (a 500).
    if resource_id is not None and (not 1 <= len(resource_id) <= 200 or "\x00" in resource_id):
        raise bad_query("resource_id", "invalid", "resource_id must be 1 to 200 characters, without NUL.")
    event_type = values.get("type")
    if event_type is not None and not _TYPE_RE.fullmatch(event_type):
        raise bad_query("type", "invalid", "type must look like 'tasks.updated'.")
    ids = {key: parse_uuid(values[key]) for key in ("actor_id", "after") if key in values}
    for key, what in (("actor_id", "a UUID"), ("after", "an event id")):
        if key in ids and ids[key] is None:
            raise bad_query(key, "invalid", f"{key} must be {what}.")
    limit = values.get("limit", str(DEFAULT_LIMIT))
    if not (limit.isascii() and limit.isdigit()) or not 1 <= int(limit) <= MAX_LIMIT:
        raise bad_query("limit", "out_of_range", f"limit must be an integer from 1 to {MAX_LIMIT}.")
    return LogQuery(resource, resource_id, event_type, ids.get("actor_id"), ids.get("after"), int(limit))


class EventLog:
    """Reads events as a given actor may see them."""

    def __init__(
        self,
        *,
        db: Database,
        managers: Mapping[str, ResourceManager],
        reads: Replicas | None = None,
        window: int = WINDOW,
    ) -> None:
        self.db = db
        self.managers = managers
        self.reads = reads
        self.sources = tuple(sorted(managers))  # what events' `resource` can be
        self.window = window

    async def page(
        self, actor: Actor, query: LogQuery, *, replica: bool = False
    ) -> tuple[list[dict[str, Any]], bool]:
        """Up to `query.limit` visible events after the cursor, oldest first, and whether more exist.
        `replica`: the read may go to a read replica (read-your-writes for `actor`); not for the live
        stream, which is woken by the primary's notifications and must then find the event."""
        if not actor.can(READ_ANY) and await self.db.on_citus():
            statement = await self._page_on_citus(actor, query)
        else:
            statement = self.page_sql(actor, query)
        if statement is None:
            return [], False
        sql, params = statement
        if replica and self.reads is not None:
            rows = await self.reads.fetch(actor.user_id, sql, *params)
        else:
            rows = await self.db.fetch(sql, *params)
        events = [to_event(row) for row in rows[: query.limit]]
        return events, len(rows) > query.limit

    async def newest(self) -> uuid.UUID | None:
        """The id of the newest event written (committed), on the primary."""
        newest: uuid.UUID | None = await self.db.fetchval("SELECT id FROM events ORDER BY id DESC LIMIT 1")
        return newest

    def _judged(self, actor: Actor, query: LogQuery) -> list[tuple[str, ResourceManager]]:
        """The resources whose events the page may hold for `actor` (not one whose events are all hidden
        from them: `Policy.audit_permission`, webhooks')."""
        return [
            (name, m)
            for name, m in self.managers.items()
            if query.resource in (None, name) and not m.rules.events_hidden(actor)
        ]

    def page_sql(self, actor: Actor, query: LogQuery) -> tuple[str, list[Any]] | None:
        """The statement that reads a page and its parameters; None when the caller can see nothing."""
        bind = Binder()
        n = query.limit + 1
        if actor.can(READ_ANY):
            # Each filter has its index in id order (rampart.events.tables); the planner picks one.
            where = [*_filters("e", query, bind), *([f"e.id > {bind(query.after)}"] if query.after else [])]
            sql = f"SELECT {_COLUMNS} FROM events e{_where(where)} ORDER BY {_order('e', query)} LIMIT {n}"
            return sql, bind.params
        managers = self._judged(actor, query)
        target = None
        if query.resource_id is not None:
            target = parse_uuid(query.resource_id)
            if target is None:  # the framework writes only UUIDs: no object has this id
                return None
        if not managers:
            return None
        after = bind(query.after or _START)
        one_by_one, found = [], []
        for name, manager in managers:
            resource = bind(name)
            live = manager.events_visible_sql(actor, "o", bind)
            if live is None:  # every event of this resource is visible
                one_by_one.append(f"w.resource = {resource}")
                mine = replace(query, resource=name)
                of_all = " AND ".join([*_filters("e", mine, bind), f"e.id > {after}"])
                found.append(
                    f"(SELECT e.id FROM events e WHERE {of_all} ORDER BY {_order('e', mine)} LIMIT {n})"
                )
                continue
            gone = manager.events_visible_sql(actor, "o", bind)
            one_by_one.append(
                f"(w.resource = {resource} AND (EXISTS (SELECT 1 FROM {manager.resource.table} o"
                f" WHERE o.id = {_RESOURCE_UUID} AND {live}) OR EXISTS (SELECT 1 FROM"
                f" {manager.resource.deleted_table} o WHERE o.id = {_RESOURCE_UUID} AND {gone})))"
            )
            ids = manager.events_visible_ids_sql(actor, bind)
            assert ids is not None  # as `live` is not
            if target is not None:  # one object: found by its id in the table or its record of deleted rows
                ids = f"SELECT v.id FROM ({ids}) v WHERE v.id = {bind(target)}"
            # The LIMIT inside keeps the join a loop over the visible objects, each read through the index
            # on (resource_id, id): never a scan of the events in id order, judged against the objects.
            of_object = " AND ".join(
                [f"e.resource = {resource}", f"e.id > {after}"]
                + [f"e.{column} = {bind(value)}" for column, value in _given(query) if column != "resource"]
            )
            found.append(
                f"(SELECT ev.id FROM ({ids}) o CROSS JOIN LATERAL (SELECT e.id FROM events e"
                f" WHERE e.resource_id = o.id::text AND {of_object} ORDER BY e.resource_id, e.id"
                f" LIMIT {n}) ev"
                f" ORDER BY ev.id LIMIT {n})"
            )
        window = self.window
        filters = _filters("w", query, bind)
        judged = " OR ".join(one_by_one)
        sql = (
            "WITH w AS MATERIALIZED (SELECT w.id, w.resource, w.resource_id, w.type, w.actor_id"
            f" FROM events w WHERE {' AND '.join([f'w.id > {after}', *filters])}"
            f" ORDER BY {_order('w', query)} LIMIT {window}),"
            " wn AS MATERIALIZED (SELECT count(*) AS n FROM w)"
            f" SELECT {_COLUMNS} FROM events e WHERE e.id = ANY(ARRAY("
            # Exactly one of the two runs: the other is skipped at once (a one-time filter on `wn`).
            f"(SELECT w.id FROM w WHERE (SELECT wn.n FROM wn) < {window} AND ({judged})"
            f" ORDER BY w.id LIMIT {n})"
            " UNION ALL"
            f" (SELECT c.id FROM ({' UNION ALL '.join(found)}) c WHERE (SELECT wn.n FROM wn) >= {window}"
            f" ORDER BY c.id LIMIT {n})"
            f")) ORDER BY e.id"
        )
        return sql, bind.params

    async def _page_on_citus(self, actor: Actor, query: LogQuery) -> tuple[str, list[Any]] | None:
        """`page_sql` on a Citus cluster: first how many events follow the cursor (a statement of its own,
        see `rampart.events.log_citus`), then the page either way."""
        from rampart.events import log_citus  # it builds on this module's helpers

        managers = self._judged(actor, query)
        target = None
        if query.resource_id is not None:
            target = parse_uuid(query.resource_id)
            if target is None:
                return None
        if not managers:
            return None
        count = Binder()
        window_sql = log_citus.window_sql(
            query, self.window, count, filters=_filters("w", query, count), order=_order("w", query)
        )
        following = await self.db.fetchval(window_sql, *count.params)
        bind = Binder()
        after = bind(query.after or _START)
        if following < self.window:
            sql = log_citus.judged_sql(
                actor,
                query,
                managers,
                bind,
                columns=_COLUMNS,
                filters=_filters("e", query, bind),
                order=_order("e", query),
                after=after,
            )
            return sql, bind.params

        def of_all(name: str) -> list[str]:  # bound only when used: every parameter must have a type
            return [*_filters("e", replace(query, resource=name), bind), f"e.id > {after}"]

        sql = log_citus.found_sql(
            actor,
            query,
            managers,
            bind,
            columns=_COLUMNS,
            given=_given(query),
            of_all=of_all,
            target=target,
            after=after,
        )
        return sql, bind.params


def _filters(alias: str, query: LogQuery, bind: Binder) -> list[str]:
    """The query's filters (not the cursor) on events aliased `alias`, the one that leads the order first.

    The leading filter is written as a range, `c >= v AND c <= v`: the same rows as `c = v`, but one
    PostgreSQL does not take for a constant, so `ORDER BY c, id` (`_order`) still asks for the index on
    (c, id). With `c = v` it drops `c` from the order, and may then walk the primary key and filter,
    reading every event before the first match (270,000 rows for a resource whose events are all recent).
    """
    where: list[str] = []
    for column, value in _given(query):
        param = bind(value)
        where.append(
            f"{alias}.{column} = {param}"
            if where
            else f"{alias}.{column} >= {param} AND {alias}.{column} <= {param}"
        )
    return where


def _order(alias: str, query: LogQuery) -> str:
    """Id order, as the index of the leading filter reads it (see `_filters`)."""
    given = _given(query)
    return f"{alias}.{given[0][0]}, {alias}.id" if given else f"{alias}.id"


def _given(query: LogQuery) -> list[tuple[str, Any]]:
    """The filters given, the most selective first (each has an index on (column, id))."""
    return [
        (column, value)
        for column, value in (
            ("resource_id", query.resource_id),
            ("actor_id", query.actor_id),
            ("type", query.type),
            ("resource", query.resource),
        )
        if value is not None
    ]


def _where(conds: list[str]) -> str:
    return (" WHERE " + " AND ".join(conds)) if conds else ""


def to_event(row: Any) -> dict[str, Any]:
    """An `events` row as API.md shows an event."""
    occurred = row["occurred_at"]
    return {
        "id": str(row["id"]),
        "type": row["type"],
        "resource": row["resource"],
        "resource_id": row["resource_id"],
        "actor_id": str(row["actor_id"]) if row["actor_id"] is not None else None,
        "impersonator_id": str(row["impersonator_id"]) if row["impersonator_id"] is not None else None,
        "occurred_at": occurred.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "data": orjson.loads(row["data"]),
        "changes": orjson.loads(row["changes"]),
        "request_id": row["request_id"],
    }
