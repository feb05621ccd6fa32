"""The audit log's statements on a Citus cluster, where `events` is distributed by the shard key of the row
each event is about, co-located with the distributed resources (decision 0019).

The rule is the one of `rampart.events.log`, decided in SQL by the resources' own visibility rules; only
the statements differ, because Citus runs a statement over several shards only when each shard can answer
its part alone:

- **Judged one by one**: the events after the cursor, each with its row found on its own shard
  (`o.shard_key = e.shard_key`: Citus pushes the correlated subquery down to each shard, and every
  worker returns its first events by id; the coordinator merges them). A reference resource's row is on
  every node; a local resource's visible ids are read first, once, and handed to the workers.
- **Found through the visible objects**: each resource's visible objects with their shard key, and the
  events of each on its shard through the index on (resource_id, id).

The plain statement picks between the two inside one statement (a CTE that counts the window); Citus
plans such a CTE on its own, over all shards, so here the count is a statement of its own first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rampart.access.actor import Actor
from rampart.resources.manager import ResourceManager
from rampart.resources.placement import SHARD_KEY, Alias
from rampart.resources.spec import Binder

_UUID_OF = (
    "(CASE WHEN {e}.resource_id ~ '^[0-9a-f]{{8}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{12}}$'"
    " THEN {e}.resource_id::uuid END)"
)


def window_sql(query: Any, window: int, bind: Binder, *, filters: list[str], order: str) -> str:
    """How many of the next `window` events after the cursor (of anyone) there are."""
    after = bind(query.after) if query.after is not None else None
    where = " AND ".join([*([f"w.id > {after}"] if after else []), *filters]) or "TRUE"
    return f"SELECT count(*) FROM (SELECT 1 FROM events w WHERE {where} ORDER BY {order} LIMIT {window}) w"


def judged_sql(
    actor: Actor,
    query: Any,
    managers: list[tuple[str, ResourceManager]],
    bind: Binder,
    *,
    columns: str,
    filters: list[str],
    order: str,
    after: str,
) -> str:
    """The page, each event judged with its row (live, or as it was deleted) on its own shard."""
    e = "e"
    row_id = _UUID_OF.format(e=e)
    judged = []
    for name, manager in managers:
        resource = bind(name)
        kind = manager.resource.placement.kind
        o = Alias("o", f"o.{SHARD_KEY}") if kind == "distributed" else Alias("o")
        if kind == "local":  # not on the workers: its visible objects first, then their events
            # (Asked for the ids alone: a condition bound but left out of the text would leave its
            # parameters without a type.)
            ids = manager.rules.events_visible_ids_sql(actor, bind, alias=Alias("o"))
            judged.append(
                f"{e}.resource = {resource}"
                if ids is None  # every event of this resource is visible
                else f"({e}.resource = {resource}"
                f" AND {e}.resource_id = ANY(ARRAY(SELECT v.id::text FROM ({ids}) v)))"
            )
            continue
        live = manager.events_visible_sql(actor, o, bind)
        if live is None:  # every event of this resource is visible
            judged.append(f"{e}.resource = {resource}")
            continue
        gone = manager.events_visible_sql(actor, o, bind)
        same = f" AND o.{SHARD_KEY} = {e}.{SHARD_KEY}" if kind == "distributed" else ""
        judged.append(
            f"({e}.resource = {resource} AND (EXISTS (SELECT 1 FROM {manager.resource.table} o"
            f" WHERE o.id = {row_id}{same} AND {live}) OR EXISTS (SELECT 1 FROM"
            f" {manager.resource.deleted_table} o WHERE o.id = {row_id}{same} AND {gone})))"
        )
    where = " AND ".join([f"{e}.id > {after}", *filters, f"({' OR '.join(judged)})"])
    return f"SELECT {columns} FROM events {e} WHERE {where} ORDER BY {order} LIMIT {query.limit + 1}"


def found_sql(
    actor: Actor,
    query: Any,
    managers: list[tuple[str, ResourceManager]],
    bind: Binder,
    *,
    columns: str,
    given: list[tuple[str, Any]],
    of_all: Callable[[str], list[str]],
    target: Any,
    after: str,
) -> str:
    """The page, read through the objects the caller may see: on their shards for a distributed resource."""
    n = query.limit + 1
    found = []
    for name, manager in managers:
        resource = bind(name)
        kind = manager.resource.placement.kind
        sharded = kind == "distributed"
        o = Alias("o", f"o.{SHARD_KEY}") if sharded else Alias("o")
        ids = manager.rules.events_visible_ids_sql(actor, bind, alias=o, shard_key=sharded)
        if ids is None:  # every event of this resource is visible
            where = " AND ".join(of_all(name))
            found.append(f"(SELECT e.id FROM events e WHERE {where} ORDER BY e.id LIMIT {n})")
            continue
        if target is not None:  # one object: found by its id in the table or its record of deleted rows
            ids = f"SELECT v.* FROM ({ids}) v WHERE v.id = {bind(target)}"
        of_object = " AND ".join(
            [f"e.resource = {resource}", f"e.id > {after}"]
            + [f"e.{column} = {bind(value)}" for column, value in given if column != "resource"]
        )
        if sharded:
            found.append(
                f"(SELECT ev.id FROM ({ids}) o CROSS JOIN LATERAL (SELECT e.id FROM events e"
                f" WHERE e.{SHARD_KEY} = o.{SHARD_KEY} AND e.resource_id = o.id::text AND {of_object}"
                f" ORDER BY e.resource_id, e.id LIMIT {n}) ev ORDER BY ev.id LIMIT {n})"
            )
        else:
            found.append(
                f"(SELECT e.id FROM events e"
                f" WHERE e.resource_id = ANY(ARRAY(SELECT v.id::text FROM ({ids}) v))"
                f" AND {of_object} ORDER BY e.id LIMIT {n})"
            )
    return (
        f"SELECT {columns} FROM events e WHERE e.id = ANY(ARRAY("
        f"SELECT c.id FROM ({' UNION ALL '.join(found)}) c ORDER BY c.id LIMIT {n}"
        f")) ORDER BY e.id"
    )
