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
from rampart.resources.spec import Resource
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
        # Its rules, reads and writes are its parts' own methods: a request through the manager takes no
        # extra step. Rules: the SQL conditions of what `actor` may see and change.
        self.visible_sql = self.rules.visible_sql
        self.writable_sql = self.rules.writable_sql
        self.manage_sql = self.rules.manage_sql  # changing a row's children
        self.events_visible_sql = self.rules.events_visible_sql  # the audit log's form
        self.events_visible_ids_sql = self.rules.events_visible_ids_sql
        # Reads: pages (`list`, `params` in the API's query language) and items, `_json` as response bodies.
        self.list = self.reader.list
        self.list_json = self.reader.list_json
        self.get = self.reader.get
        self.get_json = self.reader.get_json
        self.not_found = self.reader.not_found
        self.require_parent = self.reader.require_parent
        # Writes, each with its checks, hooks and event.
        self.create = self.writer.create
        self.update = self.writer.update
        self.delete = self.writer.delete
        self.check_references = self.writer.check_references

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


# Kept importable from here: callers of the manager's results use them.
__all__ = ["Context", "FieldInvalid", "Page", "ResourceManager", "Row", "current_id"]
