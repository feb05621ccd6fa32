"""Keeping the row cache true: which change invalidates what.

Every resource table carries a trigger that NOTIFYs `rampart_cache` with "<table> <id> <version>" (or
"-" for a delete) for each row written, by Rampart or by anyone else with SQL. `CacheFeed` turns those
into invalidations of that row, and into epoch bumps of the resources whose visibility depends on it
(`Policy.depends_on`; a resource that does not say depends on every other one).
"""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from rampart.lib.rowcache import QueryCache
from rampart.resources.spec import Resource

log = logging.getLogger("rampart.cache")
_OWN_MAX = 10_000  # local changes whose notification has not come back yet

CHANNEL = "rampart_cache"
TRIGGER = "rampart_cache_notify"

# Also marks the transaction as one that notified: the statement trigger on `events` then sends no
# notification of its own (the event dispatchers wake on this channel too), so a change costs one NOTIFY.
FUNCTION_SQL = f"""
CREATE OR REPLACE FUNCTION rampart_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('rampart.notified', 'on', true);
  IF TG_OP = 'DELETE' THEN
    PERFORM pg_notify('{CHANNEL}', TG_TABLE_NAME || ' ' || OLD.id::text || ' -');
  ELSE
    PERFORM pg_notify('{CHANNEL}', TG_TABLE_NAME || ' ' || NEW.id::text || ' ' || NEW.version::text);
  END IF;
  RETURN NULL;
END $$"""


def trigger_sql(table: str) -> str:
    """The trigger of one resource table (identifiers come from declarations, never from requests)."""
    return (
        f"CREATE OR REPLACE TRIGGER {TRIGGER} AFTER INSERT OR UPDATE OR DELETE ON {table}"
        " FOR EACH ROW EXECUTE FUNCTION rampart_notify_change()"
    )


class CacheFeed:
    """Applies row changes (from the listener, or from the writer itself) to the query cache."""

    def __init__(self, cache: QueryCache, resources: Iterable[Resource]) -> None:
        self.cache = cache
        resources = list(resources)
        self._by_table = {r.table: r.name for r in resources}
        self._own: OrderedDict[tuple[str, uuid.UUID, int | None], None] = OrderedDict()
        self._dependents: dict[str, set[str]] = {r.name: set() for r in resources}
        for resource in resources:
            declared = resource.policy.depends_on
            deps = set(declared) if declared is not None else {r.name for r in resources} - {resource.name}
            if resource.parent is not None:
                deps.add(resource.parent.resource)
            for dep in deps:
                self._dependents.setdefault(dep, set()).add(resource.name)

    def changed(self, resource: str, key: uuid.UUID, version: int | None, *, local: bool = False) -> None:
        """Row `key` of `resource` is now at `version` (None: deleted).

        `local`: this worker made the change and applies it at its commit; the database's notification
        of it, a moment later, then carries nothing new and is skipped (it would only drop the pages
        read in between, which already include the change).
        """
        if local:
            self._own[(resource, key, version)] = None
            if len(self._own) > _OWN_MAX:
                self._own.popitem(last=False)
        self.cache.changed(resource, key, version, self._dependents.get(resource, ()))

    def on_notification(self, payload: str) -> None:
        table, _, rest = payload.partition(" ")
        key_text, _, version_text = rest.partition(" ")
        resource = self._by_table.get(table)
        if resource is None:
            return
        key, version = uuid.UUID(key_text), None if version_text == "-" else int(version_text)
        if self._own.pop((resource, key, version), False) is None:
            return  # our own change, applied at commit
        self.changed(resource, key, version)

    async def up(self, conn: Any) -> None:
        """The feed is (back) on: whatever happened while it was off is unknown, so start empty.

        Reads go through the cache only if every resource table has its change trigger: a table without
        one would leave stale rows, and stale decisions in whatever depends on it.
        """
        self._own.clear()
        missing = sorted(set(self._by_table) - await tables_with_triggers(conn))
        if missing:
            self.cache.suspend()
            log.warning(
                "tables without change triggers (run `rampart migrate`): %s; reads are not cached",
                ", ".join(missing),
            )
            return
        await self.cache.reset()

    def down(self) -> None:
        self.cache.suspend()
        log.warning("row cache disabled until the notification listener reconnects")


async def install_triggers(conn: Any, tables: Iterable[str]) -> None:
    """Create (or replace) the notify function and one trigger per resource table. Idempotent."""
    await conn.execute(FUNCTION_SQL)
    for table in tables:
        await conn.execute(trigger_sql(table))


async def tables_with_triggers(conn: Any) -> set[str]:
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid WHERE t.tgname = $1", TRIGGER
    )
    return {r["relname"] for r in rows}
