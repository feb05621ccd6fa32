"""Keeping the row cache true: which change invalidates what, and how every worker hears of it.

Changes are announced on the `rampart_cache` channel as lines "<table> <id> <version>" ("-" for a delete;
a line "*" means "forget everything"). `CacheFeed` turns them into invalidations of that row, and into
epoch bumps of the resources whose visibility depends on it (`Policy.depends_on`, by default every other
resource). Two sources:

- **Rampart's own writes** are announced by the writing worker after the commit (`Announcer`), in
  batches, from its pool connections, which carry `rampart.announces=on`. Not from inside the write,
  where a NOTIFY serializes every commit on a database-wide lock (decision 0012).
- **Anyone else's writes** (psql, another program, a foreign-key action) are announced by a trigger on
  every resource table, inside their transaction; it stays quiet for Rampart's own sessions.

A worker that dies between a commit and its announcement could leave other workers with the old row, so
every worker announces "*" when it starts: everyone forgets what its predecessor failed to announce.

On a Citus cluster the tables Citus keeps on its workers (distributed and reference tables) can have no
trigger (decision 0019): only the announcer tells of their changes, and the manager announces what a
foreign-key action would change unseen (ON DELETE SET NULL). The feed trusts those tables only while
this worker announces its own changes (not behind a transaction-mode pooler, where nothing would), and
SQL run from outside Rampart on them must announce its changes itself
(`SELECT pg_notify('rampart_cache', '<table> <id> -')`, or `'*'`; docs/guide/database-scaling.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from rampart.db.citus import tables_on_workers
from rampart.db.pool import Database
from rampart.lib.aio import cancel_and_wait
from rampart.lib.rowcache import QueryCache
from rampart.resources.spec import Resource

log = logging.getLogger("rampart.cache")
_OWN_MAX = 10_000  # local changes whose notification has not come back yet
_PAYLOAD = 7_900  # bytes per notification (PostgreSQL's limit is 8,000)
_BACKLOG = 100_000  # lines waiting for the database, beyond which "*" replaces them

CHANNEL = "rampart_cache"
TRIGGER = "rampart_cache_notify"
_TRIGGERED = "SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid WHERE t.tgname = $1"

# Also marks the transaction as one that notified: the statement trigger on `events` then sends no
# notification of its own (the event dispatchers wake on this channel too), so a change costs one NOTIFY.
# An update that keeps the version is not Rampart's, which bumps it (a foreign-key action: ON DELETE SET NULL,
# or SQL that forgot): it is announced from any session as a removal, as a cached copy would look current.
FUNCTION_SQL = f"""
CREATE OR REPLACE FUNCTION rampart_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  same_version boolean := TG_OP = 'UPDATE' AND NEW.version = OLD.version;
BEGIN
  IF current_setting('rampart.announces', true) IS DISTINCT FROM 'on' OR same_version THEN
    PERFORM set_config('rampart.notified', 'on', true);
    PERFORM pg_notify('{CHANNEL}', TG_TABLE_NAME || ' ' || CASE WHEN TG_OP = 'DELETE' OR same_version
      THEN OLD.id::text || ' -' ELSE NEW.id::text || ' ' || NEW.version::text END);
  END IF;
  RETURN NULL;
END $$"""


def dependencies(resource: Resource, resources: Iterable[Resource]) -> set[str]:
    """The resources whose changes can change who sees rows of `resource`: those its policy names (all
    others when it names none), its parent, and the resource it inherits access from with everything that
    one depends on in turn."""
    by_name = {r.name: r for r in resources}
    declared = resource.policy.depends_on
    deps = set(declared) if declared is not None else set(by_name) - {resource.name}
    if resource.parent is not None:
        deps.add(resource.parent.resource)
    inherits = resource.policy.inherits
    if inherits is not None:
        target = getattr(resource.all_fields[inherits].type, "target", None)
        if target in by_name and target != resource.name:
            deps.add(target)
            deps |= dependencies(by_name[target], by_name.values()) - {resource.name}
    return deps


class CacheFeed:
    """Applies row changes (from the listener, or from the writer itself) to the query cache."""

    def __init__(self, cache: QueryCache, resources: Iterable[Resource], *, announced: bool = False) -> None:
        """`announced`: every worker announces its own changes (an `Announcer`), so a table without a change
        trigger is still heard of when Citus keeps it on its workers."""
        self.cache = cache
        self.announced = announced
        resources = list(resources)
        self._by_table = {r.table: r.name for r in resources}
        self._own: OrderedDict[tuple[str, uuid.UUID, int | None], None] = OrderedDict()
        self._dependents: dict[str, set[str]] = {r.name: set() for r in resources}
        for resource in resources:
            for dep in dependencies(resource, resources):
                self._dependents.setdefault(dep, set()).add(resource.name)

    def changed(self, resource: str, key: uuid.UUID, version: int | None, *, local: bool = False) -> None:
        """Row `key` of `resource` is now at `version` (None: deleted). `local`: this worker made the
        change and applies it at its commit; the database's notification of it is then skipped (it would
        only drop the pages read in between, which already include the change)."""
        if local:
            self._own[(resource, key, version)] = None
            if len(self._own) > _OWN_MAX:
                self._own.popitem(last=False)
        self.cache.changed(resource, key, version, self._dependents.get(resource, ()))

    def on_notification(self, payload: str) -> None:
        for line in payload.split("\n"):
            if line == "*":
                self.cache.forget()
                continue
            table, _, rest = line.partition(" ")
            key_text, _, version_text = rest.partition(" ")
            resource = self._by_table.get(table)
            if resource is None:
                continue
            key, version = uuid.UUID(key_text), None if version_text == "-" else int(version_text)
            if self._own.pop((resource, key, version), False) is None:
                continue  # our own change, applied at commit
            self.changed(resource, key, version)

    async def up(self, conn: Any) -> None:
        """The feed is (back) on: whatever happened while it was off is unknown, so start empty.

        Reads go through the cache only if every resource table has its change trigger: a table without
        one would leave stale rows, and stale decisions in whatever depends on it. On a Citus cluster the
        tables on the workers have none, and the workers' announcements stand for it.
        """
        self._own.clear()
        heard = {r["relname"] for r in await conn.fetch(_TRIGGERED, TRIGGER)}
        if self.announced:
            heard |= await tables_on_workers(conn)
        missing = sorted(set(self._by_table) - heard)
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


class Announcer:
    """Announces this worker's committed row changes to every worker and instance, after the commit.

    A background task sends the queued lines, a batch per statement, on a pool connection, outside any
    write: a notifying transaction that writes nothing holds PostgreSQL's notify lock for a moment only.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._lines: list[str] = ["*"]  # a new worker: drop whatever a crashed predecessor did not announce
        self._pending = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def announce(self, table: str, key: uuid.UUID, version: int | None) -> None:
        if len(self._lines) >= _BACKLOG:
            self._lines = ["*"]
        self._lines.append(f"{table} {key} {'-' if version is None else version}")
        self._pending.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="rampart-announcer")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        with contextlib.suppress(Exception):  # the last changes, if the database still answers
            await asyncio.wait_for(self._send(), timeout=2.0)

    async def _run(self) -> None:
        while True:
            self._pending.clear()
            try:
                await self._send()
            except Exception:
                log.warning("announcing row changes failed; retrying", exc_info=True)
                await asyncio.sleep(0.5)
            else:
                await self._pending.wait()

    async def _send(self) -> None:
        lines, self._lines = self._lines, []
        if not lines:
            return
        payloads: list[str] = []
        current = lines[0]
        for line in lines[1:]:
            if len(current) + len(line) + 1 > _PAYLOAD:
                payloads.append(current)
                current = line
            else:
                current += "\n" + line
        payloads.append(current)
        try:
            await self._db.execute("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p", CHANNEL, payloads)
        except BaseException:
            self._lines[:0] = lines  # sent again, in order, before anything newer
            raise


async def install_triggers(conn: Any, tables: Iterable[str]) -> None:
    """Create (or replace) the notify function and one trigger per resource table. Idempotent.

    Not on the tables Citus keeps on its workers (distributed and reference tables): it refuses
    triggers there, and their notifications would go to the workers, where nobody listens
    (rampart.db.citus, decision 0019). Rampart's announcements stand for them (`CacheFeed.up`).
    """
    await conn.execute(FUNCTION_SQL)
    placed = await tables_on_workers(conn)
    for table in tables:
        if table not in placed:  # names come from declarations, never from requests
            await conn.execute(
                f"CREATE OR REPLACE TRIGGER {TRIGGER} AFTER INSERT OR UPDATE OR DELETE ON {table}"
                " FOR EACH ROW EXECUTE FUNCTION rampart_notify_change()"
            )
