"""Reading a resource's rows: pages in the query language (through the page cache when it is on), items by
key (through the row cache, whose misses of one loop step go out as one statement), on the primary or a
read replica, always under the caller's visibility rule (`rampart.resources.rules`).

On a Citus cluster (`Database.citus`, decided at startup) a read by key names the row's shard key, which
its id carries (decision 0019), and so does a nested list (its parent's): Citus sends the statement to
the one worker that holds the shard. A list of everything visible goes to every shard.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import asyncpg
import orjson
from starlette.datastructures import QueryParams

from rampart.db.batch import PREFIX, RowBatcher
from rampart.db.pool import Database
from rampart.db.replicas import Replicas
from rampart.errors import Forbidden, NotFound
from rampart.lib.ids import parse_uuid
from rampart.resources.caching import CacheFeed
from rampart.resources.context import Context
from rampart.resources.endpoints import JSON_OPTIONS
from rampart.resources.placement import SHARD_KEY
from rampart.resources.query import CursorCodec, ListQuery, filter_sql, keyset_sql, parse_list_query
from rampart.resources.rules import AccessRules
from rampart.resources.selects import TableSQL, where_sql
from rampart.resources.spec import Binder, ColumnBinder, Resource

if TYPE_CHECKING:
    from rampart.resources.manager import ResourceManager

Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Row]
    next_cursor: str | None
    limit: int
    total: int | None

    def to_json(self) -> bytes:
        """The list response body: `{"data": [...], "meta": {...}}` (API.md, lists)."""
        meta: dict[str, Any] = {"next_cursor": self.next_cursor, "limit": self.limit}
        if self.total is not None:
            meta["total"] = self.total
        return orjson.dumps({"data": self.items, "meta": meta}, option=JSON_OPTIONS)


class Reads:
    """Every read of one resource."""

    def __init__(
        self,
        resource: Resource,
        *,
        table: TableSQL,
        rules: AccessRules,
        managers: Mapping[str, ResourceManager],
        db: Database,
        cursors: CursorCodec,
        feed: CacheFeed | None = None,
        replicas: Replicas | None = None,
    ) -> None:
        self.resource = resource
        self.table = table
        self.rules = rules
        self.managers = managers
        self.db = db
        self.cursors = cursors
        # With the row cache on, top-level items are read by id through it and pages through its page
        # cache; changes reach it through the feed.
        self.feed = feed
        self.cached_reads = (
            feed is not None
            and resource.parent is None
            and resource.key == "id"
            and "get" in resource.operations
        )
        self.cached_lists = feed is not None and "list" in resource.operations
        # With read replicas, reads outside transactions go through them (what the caches keep excepted,
        # see `_get_through_cache` and `list_json`).
        self.replicas = replicas
        # The cache's misses of one loop step, read in one statement (rampart.db.batch).
        self.misses = RowBatcher(db)

    async def list(self, ctx: Context, params: Any = None, *, parent_id: uuid.UUID | None = None) -> Page:
        """A page of visible rows. `params` is a query in the API's query language (see
        `rampart.resources.query`): a mapping such as `{"status": "todo", "sort": "-priority"}`, a query
        string, or the request's `QueryParams`."""
        if self.resource.policy.read_permission:
            ctx.actor.require(self.resource.policy.read_permission)
        if not isinstance(params, QueryParams):
            params = QueryParams(params or {})
        query = parse_list_query(self.resource, params, self.cursors)
        return (await self._list(ctx, query, parent_id))[0]

    async def list_json(
        self, ctx: Context, query_string: bytes, *, parent_id: uuid.UUID | None = None
    ) -> bytes:
        """`list` as the response body, for the raw query string of the request, through the page cache
        when it is on. A hit is answered before the query is even parsed: only a query that parsed (and
        whose cursor verified) ever produced a cached page, and parsing depends on nothing else."""
        if self.resource.policy.read_permission:
            ctx.actor.require(self.resource.policy.read_permission)
        if not (self.cached_lists and self._cache_usable()) or self.feed is None:
            query = parse_list_query(self.resource, QueryParams(query_string), self.cursors)
            return (await self._list(ctx, query, parent_id))[0].to_json()
        # The page depends on the query, on who asks (visibility), and on the rows: the cache keys it
        # by the first two and drops it when any row of this resource, or of one its visibility reads,
        # changes (see rampart.lib.rowcache). Kept encoded, in an exact-size copy (see _exact).
        cache, name = self.feed.cache, self.resource.name
        key = (ctx.actor.user_id, ctx.actor.role, parent_id, query_string)
        body, stamp = await cache.lookup_page(name, key)
        if body is not None:
            return body
        query = parse_list_query(self.resource, QueryParams(query_string), self.cursors)
        page, from_replica = await self._list(ctx, query, parent_id)
        body = _exact(page.to_json())
        # A page read on a replica is served but not kept: the notification that drops pages may have
        # come before the replica replayed the change, and the page would then stay stale (decision 0010).
        if not from_replica:
            await cache.keep_page(body, stamp)
        return body

    async def _list(self, ctx: Context, query: ListQuery, parent_id: uuid.UUID | None) -> tuple[Page, bool]:
        """The page, and whether it was read on a replica."""
        bind = Binder()
        where = filter_sql(self.resource, self.table.alias, query.filters, bind)
        citus = await self.db.on_citus()
        # On a cluster a parent's rows are on the parent's shard when they are placed by it.
        shard = await self.shard_key(None, parent_id) if citus else None
        pin = bind(shard) if shard is not None else None
        if parent_id is not None and self.resource.parent is not None:
            where.append(f"{self.table.alias}.{self.resource.parent.field} = {bind(parent_id)}")
            if pin is not None:
                where.insert(0, f"{self.table.alias}.{SHARD_KEY} = {pin}")
        alias = self.table.row_alias(citus, pin)
        visible = self.rules.visible_sql(ctx.actor, alias, bind)
        if visible is not None:
            where.append(visible)
        count_where, count_params = list(where), list(bind.params)
        if query.after is not None:
            where.append(keyset_sql(self.table.alias, query.sort, query.after, bind))
        sql = self._list_sql(query, where)

        async def fetch(conn: asyncpg.Connection) -> tuple[builtins.list[asyncpg.Record], int | None]:
            if parent_id is not None:
                await self.require_parent(ctx, parent_id, conn=conn, shard=shard)
            records = await conn.fetch(sql, *bind.params)
            total = None
            if query.include_total:
                count_sql = f"SELECT count(*) FROM {self.table.from_}" + where_sql(count_where)
                total = await conn.fetchval(count_sql, *count_params)
            return records, total

        from_replica = False
        if self.replicas is None:
            async with self.db.connection() as conn:
                records, total = await fetch(conn)
        else:
            (records, total), from_replica = await self.replicas.read_where(ctx.actor.user_id, fetch)
        rows = [dict(r) for r in records]
        next_cursor = None
        if len(rows) > query.limit:
            rows = rows[: query.limit]
            last = rows[-1]
            next_cursor = self.cursors.encode(query.sort_key, (last.pop(f"_k_{n}") for n, _ in query.sort))
        for row in rows:
            for name, _ in query.sort:
                row.pop(f"_k_{name}", None)
        return Page(rows, next_cursor, query.limit, total), from_replica

    def _list_sql(self, query: ListQuery, where: Sequence[str]) -> str:
        keys = ", ".join(self.table.sort_keys[n] for n, _ in query.sort)
        order = ", ".join(f"{self.table.alias}.{n} {'DESC' if d else 'ASC'}" for n, d in query.sort)
        return (
            f"SELECT {self.table.select_list(query.fields)}, {keys} FROM {self.table.from_}"
            f"{where_sql(where)} ORDER BY {order} LIMIT {query.limit + 1}"
        )

    async def get(self, ctx: Context, key: Any, *, parent_id: uuid.UUID | None = None) -> Row:
        """One visible row by its key, or NotFound."""
        if self.resource.policy.read_permission:
            ctx.actor.require(self.resource.policy.read_permission)
        if parent_id is None and self._reads_through_cache():
            _, payload = await self._get_through_cache(ctx, key)
            return cast(Row, orjson.loads(payload))
        bind = Binder()
        citus = await self.db.on_citus()
        shard = await self.shard_key(key, parent_id) if citus else None
        pin = bind(shard) if shard is not None else None
        where = self.table.key_where(key, parent_id, bind, pin)
        visible = self.rules.visible_sql(ctx.actor, self.table.row_alias(citus, pin), bind)
        if visible is not None:
            where.append(visible)
        sql = f"SELECT {self.table.select_all} FROM {self.table.from_}{where_sql(where)}"
        if self.replicas is None:
            row = await self.db.fetchrow(sql, *bind.params)
        else:
            row = await self.replicas.fetchrow(ctx.actor.user_id, sql, *bind.params)
        if row is None:
            if parent_id is not None:
                # The row's shard is its parent's only when it is placed by its parent.
                placed_by_parent = (
                    self.resource.parent and self.resource.placement.by == self.resource.parent.field
                )
                await self.require_parent(ctx, parent_id, shard=shard if placed_by_parent else None)
            raise self.not_found()
        return dict(row)

    async def get_json(self, ctx: Context, key: Any) -> tuple[int, bytes]:
        """`get` (top level) as (version, the row encoded as JSON): a cache hit costs no encoding at all."""
        if self.resource.policy.read_permission:
            ctx.actor.require(self.resource.policy.read_permission)
        if not self._reads_through_cache():
            row = await self.get(ctx, key)
            return row["version"], orjson.dumps(row, option=JSON_OPTIONS)
        return await self._get_through_cache(ctx, key)

    def _reads_through_cache(self) -> bool:
        return self.cached_reads and self._cache_usable()

    def _cache_usable(self) -> bool:
        """The cache is on and trusted, and this read is not inside a transaction (whose uncommitted
        rows must never be kept)."""
        return self.feed is not None and self.feed.cache.enabled and not self.db.in_transaction()

    async def _get_through_cache(self, ctx: Context, key: Any) -> tuple[int, bytes]:
        """(version, JSON) of the row: from the cache when it holds the row and this caller's decision
        (NotFound when they may not see it), else read and kept. A miss reads on the primary even with
        replicas: a replica may be behind notifications already heard (decision 0010)."""
        assert self.feed is not None
        cache, name = self.feed.cache, self.resource.name
        caller = None if ctx.actor.can(self.resource.policy.bypass_read) else ctx.actor.user_id
        # The stamp is what the cache knew before the database is asked: a change seen meanwhile voids
        # what this miss would keep.
        found, stamp = await cache.lookup(name, key, caller)
        if found is False:
            raise self.not_found()
        if isinstance(found, tuple):
            return found
        bind = ColumnBinder(PREFIX)
        citus = await self.db.on_citus()
        shard = await self.shard_key(key, None) if citus else None
        pin = bind(shard) if shard is not None else None
        where = self.table.key_where(key, None, bind, pin)
        visible = self.rules.visible_sql(ctx.actor, self.table.row_alias(citus, pin), bind) or "TRUE"
        record = await self.misses.fetch(self._cached_read_sql(visible, where), bind.params, alone=citus)
        if record is None:
            raise self.not_found()
        # Kept as its JSON: a third of the memory of the row's objects, nothing for the GC to walk, and
        # a hit is answered without encoding. Every column is read JSON-ready, so loads() gives the row.
        payload, version, seen = record[0].encode(), record[1], record[2]
        await cache.keep(version, payload, seen, stamp)
        if not seen:
            raise self.not_found()
        return version, payload

    def _cached_read_sql(self, visible: str, where: Sequence[str]) -> str:
        """The row as its JSON, its version and whether the caller may see it: PostgreSQL writes the JSON
        (the same bytes orjson would: compact, keys in column order, the same escapes), not the worker."""
        return (
            f"SELECT (SELECT row_to_json(_r)::text FROM (SELECT {self.table.select_all}) _r),"
            f" {self.table.alias}.version, ({visible}) FROM {self.table.from_}{where_sql(where)}"
        )

    def not_found(self) -> NotFound:
        return NotFound(f"No such {self.resource.name} item.")

    async def shard_key(self, key: Any, parent_id: uuid.UUID | None) -> int | None:
        """On a Citus cluster, the shard key of the row `key` names (of a nested resource's rows, when
        `key` is None): its id's, or its parent's when it is placed by its parent. None when the table is
        not distributed, or the key does not say (then a statement asks every shard)."""
        resource = self.resource
        if not self.table.sharded:
            return None
        value: Any = None
        if key is not None and resource.key == "id":
            value = key
        elif (
            parent_id is not None
            and resource.parent is not None
            and resource.placement.by == resource.parent.field
        ):
            value = parent_id
        if not isinstance(value, uuid.UUID):
            value = parse_uuid(value) if isinstance(value, str) else None
            if value is None:
                return None
        return await self.db.shard_key(value)

    async def require_parent(
        self,
        ctx: Context,
        parent_id: uuid.UUID,
        *,
        manage: bool = False,
        conn: Any = None,
        shard: int | None = None,
    ) -> None:
        """NotFound unless the parent row is visible; Forbidden when `manage` and it may not be changed.
        `shard`: on a Citus cluster, the parent's shard key when the caller knows it."""
        assert self.resource.parent is not None
        parent = self.managers[self.resource.parent.resource]
        bind = Binder()
        citus = self.db.citus
        if citus and shard is None and parent.table.sharded:
            shard = await self.db.shard_key(parent_id)
        pin = bind(shard) if citus and shard is not None and parent.table.sharded else None
        par = parent.table.row_alias(citus, pin, alias="par")
        visible = parent.visible_sql(ctx.actor, par, bind) or "TRUE"
        manageable = "TRUE"
        if manage:
            manageable = parent.manage_sql(ctx.actor, par, bind, manage=self.resource.parent.manage) or "TRUE"
        where = f"par.{SHARD_KEY} = {pin} AND " if pin is not None else ""
        sql = (
            f"SELECT {manageable} AS ok FROM {parent.resource.table} par"
            f" WHERE {where}par.id = {bind(parent_id)} AND {visible}"
        )
        row = await (conn.fetchrow(sql, *bind.params) if conn else self.db.fetchrow(sql, *bind.params))
        if row is None:
            raise parent.not_found()
        if not row["ok"]:
            raise Forbidden(
                f"You may not change the {self.resource.name} of this {parent.resource.name} item."
            )


def _exact(encoded: bytes) -> bytes:
    """An exact-size copy, for what a cache keeps: orjson's own bytes keep ~4 KiB allocated behind them."""
    return bytes(memoryview(encoded))
