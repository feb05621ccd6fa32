"""The generic resource manager: list, get, create, update and delete for any declared resource.

A manager is what the routes, the console, hooks (`ctx.resources[...]`) and an app's own routes
(`call.resources[...]`) call. It puts together three parts, each a module of its own:

- `rampart.resources.rules`: who may see and change rows, as SQL (the policy, parents, `Policy.inherit`);
- `rampart.resources.reads`: pages and items, through the caches and replicas when they are on;
- `rampart.resources.writes`: creates, updates and deletes with their checks, hooks and events.

Its collaborators (the row cache's feed, the announcer, the read replicas) are given when it is made.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import asyncpg

from rampart.access.actor import Actor
from rampart.db.pool import Database
from rampart.db.replicas import Replicas
from rampart.errors import NotFound
from rampart.lib.bus import EventBus
from rampart.resources import actions
from rampart.resources.caching import Announcer, CacheFeed
from rampart.resources.context import Context
from rampart.resources.fields import FieldInvalid
from rampart.resources.query import CursorCodec
from rampart.resources.reads import Page, Reads, Row
from rampart.resources.rules import AccessRules
from rampart.resources.selects import TableSQL
from rampart.resources.spec import Binder, Resource
from rampart.resources.writes import Writes, current_id


class ResourceManager:
    """Owns every query of one resource; runs the resource's hooks (`Resource.hooks`) in its writes."""

    def __init__(
        self,
        resource: Resource,
        *,
        db: Database,
        bus: EventBus,
        cursors: CursorCodec,
        managers: Mapping[str, ResourceManager],
        feed: CacheFeed | None = None,
        announcer: Announcer | None = None,
        replicas: Replicas | None = None,
    ) -> None:
        self.resource = resource
        self.db = db
        self.bus = bus
        self.managers = managers  # every manager by resource name, to check references and parents
        self.replicas = replicas
        self.table = TableSQL(resource)
        self.rules = AccessRules(resource, managers=managers)
        self.reader = Reads(
            resource,
            table=self.table,
            rules=self.rules,
            managers=managers,
            db=db,
            cursors=cursors,
            feed=feed,
            replicas=replicas,
        )
        self.writer = Writes(
            resource,
            table=self.table,
            rules=self.rules,
            reader=self.reader,
            managers=managers,
            db=db,
            bus=bus,
            feed=feed,
            announcer=announcer,
            replicas=replicas,
        )
        # The cache's misses of one loop step, read in one statement (metrics count its batches).
        self.misses = self.reader.misses
        self.actions = {action.name: action for action in resource.actions}

    # ----- rules -------------------------------------------------------------------------------------
    def visible_sql(self, actor: Actor, alias: str, bind: Binder) -> str | None:
        """The condition for rows `actor` may see, or None when all are visible."""
        return self.rules.visible_sql(actor, alias, bind)

    def writable_sql(self, actor: Actor, alias: str, bind: Binder, *, delete: bool = False) -> str | None:
        """The condition for rows `actor` may change (or delete), or None when all are."""
        return self.rules.writable_sql(actor, alias, bind, delete=delete)

    def manage_sql(self, actor: Actor, alias: str, bind: Binder, *, manage: Any = None) -> str | None:
        """The condition for changing this row's children."""
        return self.rules.manage_sql(actor, alias, bind, manage=manage)

    def events_visible_sql(self, actor: Actor, alias: str, bind: Binder) -> str | None:
        """The audit log's form of the visibility rule (see `AccessRules.events_visible_sql`)."""
        return self.rules.events_visible_sql(actor, alias, bind)

    def events_visible_ids_sql(self, actor: Actor, bind: Binder) -> str | None:
        """The ids of this resource's objects, live or deleted, whose events `actor` may see."""
        return self.rules.events_visible_ids_sql(actor, bind)

    # ----- reads -------------------------------------------------------------------------------------
    async def list(self, ctx: Context, params: Any = None, *, parent_id: uuid.UUID | None = None) -> Page:
        """A page of visible rows; `params` in the API's query language (a mapping, a query string)."""
        return await self.reader.list(ctx, params, parent_id=parent_id)

    async def list_json(
        self, ctx: Context, query_string: bytes, *, parent_id: uuid.UUID | None = None
    ) -> bytes:
        """`list` as the response body, for the raw query string of a request."""
        return await self.reader.list_json(ctx, query_string, parent_id=parent_id)

    async def get(self, ctx: Context, key: Any, *, parent_id: uuid.UUID | None = None) -> Row:
        """One visible row by its key, or NotFound."""
        return await self.reader.get(ctx, key, parent_id=parent_id)

    async def get_json(self, ctx: Context, key: Any) -> tuple[int, bytes]:
        """`get` (top level) as (version, the row encoded as JSON)."""
        return await self.reader.get_json(ctx, key)

    def not_found(self) -> NotFound:
        return self.reader.not_found()

    async def require_parent(
        self, ctx: Context, parent_id: uuid.UUID, *, manage: bool = False, conn: Any = None
    ) -> None:
        """NotFound unless the parent row is visible; Forbidden when `manage` and it may not be changed."""
        await self.reader.require_parent(ctx, parent_id, manage=manage, conn=conn)

    # ----- writes ------------------------------------------------------------------------------------
    async def create(self, ctx: Context, body: Any, *, parent_id: uuid.UUID | None = None) -> Row:
        """Validate and insert a row; returns it as clients see it."""
        return await self.writer.create(ctx, body, parent_id=parent_id)

    async def update(
        self,
        ctx: Context,
        key: Any,
        body: Any,
        *,
        if_match: str | None = None,
        parent_id: uuid.UUID | None = None,
    ) -> Row:
        """Apply a partial update; `version` goes up by one when anything changed."""
        return await self.writer.update(ctx, key, body, if_match=if_match, parent_id=parent_id)

    async def delete(
        self, ctx: Context, key: Any, *, if_match: str | None = None, parent_id: uuid.UUID | None = None
    ) -> Row:
        """Delete a row the caller may delete; returns the row as it was."""
        return await self.writer.delete(ctx, key, if_match=if_match, parent_id=parent_id)

    # ----- actions -----------------------------------------------------------------------------------
    async def act(
        self,
        ctx: Context,
        name: str,
        key: Any,
        *,
        parent_id: uuid.UUID | None = None,
        path: Mapping[str, str] | None = None,
        query: Any = None,
        body: Any = None,
    ) -> Any:
        """Run the resource's action `name` on the item `key` as `ctx`'s caller (`rampart.resources.actions`):
        its path parameters, query (in the API's form) and body are checked as the route checks them."""
        action = self.actions.get(name)
        if action is None:
            raise NotFound(f"{self.resource.name} has no action {name!r}.")
        return await actions.run(
            self, action, ctx, key, parent_id=parent_id, path=path, query=query, body=body
        )

    async def check_references(self, ctx: Context, conn: asyncpg.Connection, data: Mapping[str, Any]) -> None:
        """422 on each reference that names a row the caller may not see (or use)."""
        await self.writer.check_references(ctx, conn, data)


# Kept importable from here: callers of the manager's results use them.
__all__ = ["Context", "FieldInvalid", "Page", "ResourceManager", "Row", "current_id"]
