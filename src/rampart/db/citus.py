"""Placing tables on a Citus cluster: hash-distributed, reference (a copy on every node) or local.

Citus (the PostgreSQL extension) shards a distributed table by one column over its worker nodes,
routing a statement to one shard when it pins that column; a reference table is copied to every node
(joins with it never leave a node; every write goes to all of them); a local table stays on the
coordinator. Migrations create every table as a plain PostgreSQL table; `place_tables` then gives each
one its declared placement, on a database where the `citus` extension exists, and does nothing on
plain PostgreSQL. It is idempotent: a table already placed as declared is left alone, so it runs after
every `rampart migrate` (a new resource's table is placed the first time it exists).

What Citus refuses, and how it is handled here (docs/decisions/0019-citus-placement.md):

- **Triggers** on distributed and reference tables: Rampart's row-change trigger
  (`rampart_cache_notify`) is dropped from them. Their notifications could not work anyway: a trigger
  fires on the worker holding the shard, where nobody listens, and a NOTIFY in a transaction Citus
  commits in two phases (every write to a reference table) fails it ("cannot PREPARE a transaction
  that has executed LISTEN, UNLISTEN, or NOTIFY"). Any other trigger is left to its author: an error.
- **Primary keys without the distribution column** ("Distributed relations cannot have UNIQUE, EXCLUDE,
  or PRIMARY KEY constraints that do not include the partition column"): the key becomes
  (distribution column, key columns), and the old key columns keep an index of their own (reads by id).
  Another unique constraint without the column cannot be kept: an error.
- **Unique constraints without the distribution column**: one that holds the column the shard key
  follows (`TablePlacement.follows`: a task's `project_id`, whose shard key it copies) or the id is
  rebuilt with the distribution column first, which changes nothing it accepts; any other is an error.
- **Foreign keys between tables being distributed together** (a local table may not reference a
  distributed one, so the referenced table cannot go first while its referrers are local): they are
  dropped, the tables placed, and added back; between two distributed tables Citus wants the
  distribution column on both sides, so `(project_id) -> projects (id)` comes back as
  `(shard_key, project_id) -> projects (shard_key, id)`, which only the reference the shard key follows
  can be. A reference from a table that stays local (or becomes a reference table) to a distributed one
  is not allowed by Citus: it is dropped when the local table's placement names the target as `loose`
  (the event deliveries' reference to `events`: the id still joins), an error otherwise.
- **Functions** a worker runs for Rampart's statements (the shard key's, the timestamp formatting in
  `RETURNING`) are distributed objects, so a worker added later gets them too.
- Changing the placement of a table already placed (another distribution column, distributed to
  reference): an error; that is a data move for an operator (`alter_distributed_table`,
  `undistribute_table`), not something a migration should start by itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rampart.lib.ids import shard_key_of

ADVISORY_LOCK_KEY = 7_272_740_003  # one placement at a time (several instances migrating at once)
# Rampart's own triggers, which notify (and queue events): they cannot stay on a table Citus places on
# the workers. Rampart does their work itself on a cluster (decision 0019).
NOTIFYING_TRIGGERS = ("rampart_cache_notify", "events_notify")
# Rampart's functions that its statements run on the workers, made when tables are first placed: a row's
# shard key from its id (`rampart.lib.ids.shard_key_of`), and the formatting of timestamps and dates in
# `RETURNING`, where Citus allows only IMMUTABLE functions (`to_char` is STABLE for the locale-dependent
# patterns, which these formats do not use: the same text as `rampart.resources.fields`' select).
FUNCTIONS = {
    "rampart_shard_key(uuid)": "RETURNS integer LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE"
    " AS $$ SELECT ('x' || right($1::text, 8))::bit(32)::integer $$",
    "rampart_ts(timestamptz)": "RETURNS text LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE"
    """ AS $$ SELECT to_char($1 AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') $$""",
    "rampart_date(date)": "RETURNS text LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE"
    " AS $$ SELECT to_char($1, 'YYYY-MM-DD') $$",
}
SHARD_KEY = "shard_key"
# The ids whose last 32 bits are not their shard key: rows made before their table was distributed
# (a task older than the move onto Citus lives with its project, whatever its id says). A local table.
EXCEPTIONS_TABLE = "rampart_shard_keys"


@dataclass(frozen=True, slots=True)
class TablePlacement:
    """How one table is placed: `distributed` by `column` (co-located with `colocate_with`), a
    `reference` table, or `local`.

    `follows`: the column the distribution column is a function of (its row's shard key is that
    reference's), so unique constraints and the reference that hold it may carry the distribution column.
    `loose`: tables this (local) table references that Citus will distribute: those references are
    dropped (Citus allows none from a local table to a distributed one).
    `fill`: when the table has no distribution column yet (a table made by the migrations, which know
    nothing of Citus), it is added and filled with this SQL expression on the table's rows (alias `t`):
    the rows of a table moved onto Citus get their shard keys. `ids`: the table's rows are a resource's,
    whose ids should carry their shard key: those that do not (made before) are listed in
    `rampart_shard_keys`, and new rows must (a CHECK, once the table is distributed; `checked`).
    `references`: the table `follows` refers to and the reference's ON DELETE action: the reference is made
    (with the distribution column on both sides) when the table has none, as when the migrations made it on
    the cluster (they leave out a new table's references to distributed tables: rampart.migrations.env).
    """

    kind: str
    column: str | None = None
    colocate_with: str | None = None
    follows: str | None = None
    loose: tuple[str, ...] = ()
    fill: str | None = None
    ids: bool = False
    checked: bool = False
    references: tuple[str, str] | None = None  # `follows` references (table, ON DELETE action)

    @classmethod
    def distributed(
        cls,
        column: str,
        *,
        colocate_with: str | None = None,
        follows: str | None = None,
        fill: str | None = None,
        ids: bool = False,
        checked: bool = False,
        references: tuple[str, str] | None = None,
    ) -> TablePlacement:
        return cls("distributed", column, colocate_with, follows, (), fill, ids, checked, references)

    @classmethod
    def reference(cls) -> TablePlacement:
        return cls("reference")

    @classmethod
    def local(cls, *, loose: Sequence[str] = ()) -> TablePlacement:
        return cls("local", loose=tuple(loose))


class ShardKeys:
    """A row's shard key from its id, on a cluster: the id's last 32 bits (`rampart.lib.ids`), except for
    the rows made before their table was distributed, listed in `rampart_shard_keys` by whoever moved
    the database (decision 0019). Those ids are all older than the newest listed one, so only an id no
    newer than that is looked up: nothing is asked on a cluster that started empty, or for a row made
    since the move."""

    def __init__(self, newest: uuid.UUID | None = None) -> None:
        self.newest = newest

    @classmethod
    async def load(cls, conn: Any) -> ShardKeys:
        if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", EXCEPTIONS_TABLE):
            return cls()
        return cls(await conn.fetchval(f"SELECT id FROM {EXCEPTIONS_TABLE} ORDER BY id DESC LIMIT 1"))

    def known(self, value: uuid.UUID) -> int | None:
        """The shard key when the id alone says it, else None (ask `lookup`)."""
        if self.newest is not None and value <= self.newest:
            return None
        return shard_key_of(value)

    async def lookup(self, conn: Any, value: uuid.UUID) -> int:
        found: int | None = await conn.fetchval(
            f"SELECT shard_key FROM {EXCEPTIONS_TABLE} WHERE id = $1", value
        )
        return shard_key_of(value) if found is None else found


class PlacementError(Exception):
    """A declared placement Citus cannot give this schema (the message says which table and why)."""


@dataclass(frozen=True, slots=True)
class _Current:
    kind: str  # "distributed", "reference", "local" (a Citus local table) or "" (a plain table)
    column: str | None
    colocation: int | None


async def tables_on_workers(conn: Any) -> set[str]:
    """The distributed and reference tables: those whose rows Citus keeps on its workers (none on
    plain PostgreSQL)."""
    if await conn.fetchval("SELECT to_regclass('pg_catalog.pg_dist_partition') IS NULL"):
        return set()
    rows = await conn.fetch(
        "SELECT logicalrelid::regclass::text AS t FROM pg_dist_partition"
        " WHERE partmethod = 'h' OR repmodel = 't'"
    )
    return {r["t"] for r in rows}


async def citus_enabled(conn: Any) -> bool:
    """Whether the `citus` extension exists in this database (then `conn` is on a coordinator)."""
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')"))


async def place_tables(conn: Any, placements: Mapping[str, TablePlacement]) -> list[str]:
    """Give every table its placement; returns what was done, one line per step (empty: nothing).

    On plain PostgreSQL it does nothing. One transaction: a placement that fails leaves every table as
    it was. `conn` must not be in a transaction.
    """
    if not await citus_enabled(conn):
        return []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", ADVISORY_LOCK_KEY)
        # DDL over several distributed tables in one transaction: one connection per worker, so each
        # statement sees what the previous ones did (Citus otherwise refuses some sequences).
        await conn.execute("SET LOCAL citus.multi_shard_modify_mode TO 'sequential'")
        # Dropping Rampart's own triggers from tables Citus already knows needs this.
        await conn.execute("SET LOCAL citus.enable_unsafe_triggers TO on")
        for placement in placements.values():
            if placement.kind not in ("distributed", "reference", "local"):
                raise PlacementError(f"unknown placement {placement.kind!r}")
        steps = await _place(conn, placements)
        if any(p.kind != "local" for p in placements.values()):
            await _distribute_functions(conn, steps)
        return steps


async def _place(conn: Any, placements: Mapping[str, TablePlacement]) -> list[str]:
    current = await _current(conn)
    existing = await _existing_tables(conn)
    for table in placements:
        if table not in existing:
            raise PlacementError(f"{table}: no such table (run the migrations first)")
    _check_changes(placements, current)
    todo = _to_place(placements, current)
    if not todo:
        return []
    order = _order(todo, placements)
    steps: list[str] = []
    await _make_functions(conn, steps)
    # Shard keys first, in the order given (a table's rows may take theirs from a table before it).
    exceptions: dict[str, uuid.UUID | None] = {}  # table -> the newest of its ids made before the move
    for table, wanted in placements.items():
        if table in todo and wanted.kind == "distributed":
            exceptions[table] = await _shard_keys(conn, table, wanted, steps)
    foreign = await _foreign_keys(conn)
    loose = _check_references(foreign, placements)
    for fk in loose:
        await conn.execute(f'ALTER TABLE "{fk.table}" DROP CONSTRAINT "{fk.name}"')
        steps.append(f"{fk.table}: dropped {fk.name} (a local table cannot reference {fk.target} on Citus)")
    # References among the tables about to be distributed (or made reference tables) go while they move,
    # and those of a table about to be distributed to anything: one that references a reference table is
    # a "Citus local table" already, which Citus will not distribute with another table.
    moving = set(order)
    dropped = [
        fk
        for fk in foreign
        if fk.table != fk.target
        and fk not in loose
        and (
            (fk.table in moving and fk.target in moving)
            or (fk.table in moving and placements[fk.table].kind == "distributed")
        )
    ]
    for fk in dropped:
        await conn.execute(f'ALTER TABLE "{fk.table}" DROP CONSTRAINT "{fk.name}"')
    for table in order:
        wanted = placements[table]
        await _drop_notifying_triggers(conn, table, steps)
        if wanted.kind == "reference":
            await conn.execute("SELECT create_reference_table($1)", table)
            steps.append(f"{table}: reference table")
        else:
            column, colocate = wanted.column, wanted.colocate_with
            assert column is not None
            await _key_with_column(conn, table, column, steps)
            await _unique_with_column(conn, table, column, wanted.follows, steps)
            await conn.execute(
                "SELECT create_distributed_table($1, $2, colocate_with => $3)",
                table,
                column,
                colocate or "default",
            )
            steps.append(f"{table}: distributed by {column}" + (f" with {colocate}" if colocate else ""))
    for table in order:
        wanted = placements[table]
        if wanted.checked:
            # A row made before the move (listed in rampart_shard_keys) may not meet it, and must still be
            # updated: the ids up to the newest of those are let through (NOT VALID would not do: an
            # UPDATE checks the row again). Every row made since has a newer id.
            newest = exceptions.get(table)
            old = f" OR id <= '{newest}'::uuid" if newest is not None else ""
            check = f"{table}_{SHARD_KEY}_check"
            await conn.execute(
                f'ALTER TABLE "{table}" ADD CONSTRAINT "{check}"'
                f" CHECK ({SHARD_KEY} = rampart_shard_key(id){old})"
            )
            since = f", but for ids up to {newest}" if newest is not None else ""
            steps.append(f"{table}: {check} (new rows' ids carry their shard key{since})")
    for fk in dropped:
        definition = _definition_on(fk, placements)
        await conn.execute(f'ALTER TABLE "{fk.table}" ADD CONSTRAINT "{fk.name}" {definition}')
        if definition != fk.definition:
            steps.append(f"{fk.table}: {fk.name} {definition}")
    kept = {(fk.table, fk.target) for fk in dropped}
    for table in order:
        wanted = placements[table]
        if wanted.references is None or (table, wanted.references[0]) in kept:
            continue
        target, action = wanted.references
        name = f"{table}_{wanted.follows}_fkey"
        definition = (
            f"FOREIGN KEY ({wanted.column}, {wanted.follows}) REFERENCES {target}({wanted.column}, id)"
            f" ON DELETE {action}"
        )
        await conn.execute(f'ALTER TABLE "{table}" ADD CONSTRAINT "{name}" {definition}')
        steps.append(f"{table}: {name} {definition}")
    return steps


def _definition_on(fk: _ForeignKey, placements: Mapping[str, TablePlacement]) -> str:
    """The reference as Citus keeps it: between two distributed tables, with the distribution column on
    both sides (only the reference the source's shard key follows can be such)."""
    source, target = placements.get(fk.table), placements.get(fk.target)
    if source is None or target is None or source.kind != "distributed" or target.kind != "distributed":
        return fk.definition
    assert source.column is not None
    assert target.column is not None
    if fk.definition.startswith(f"FOREIGN KEY ({source.column}"):
        return fk.definition  # already with it
    head = f"FOREIGN KEY ({source.follows}) REFERENCES {fk.target}(id)"
    if source.follows is None or not fk.definition.startswith(head):
        raise PlacementError(
            f"{fk.table} references {fk.target} by {fk.name} ({fk.definition}): between distributed tables"
            f" Citus keeps only the reference the shard key follows ({source.follows or 'none'})"
        )
    rest = fk.definition[len(head) :]
    return (
        f"FOREIGN KEY ({source.column}, {source.follows}) REFERENCES {fk.target}({target.column}, id){rest}"
    )


async def _make_functions(conn: Any, steps: list[str]) -> None:
    for signature, body in FUNCTIONS.items():
        if not await conn.fetchval("SELECT to_regprocedure($1) IS NOT NULL", signature):
            await conn.execute(f"CREATE FUNCTION {signature} {body}")
            steps.append(f"function {signature}")
    if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", EXCEPTIONS_TABLE):
        await conn.execute(
            f"CREATE TABLE {EXCEPTIONS_TABLE} (id uuid PRIMARY KEY, {SHARD_KEY} integer NOT NULL)"
        )
        steps.append(f"{EXCEPTIONS_TABLE}: ids that do not carry their shard key")


async def _shard_keys(conn: Any, table: str, wanted: TablePlacement, steps: list[str]) -> uuid.UUID | None:
    """The distribution column of a table made by the migrations: added, filled from `wanted.fill`, and
    the ids that do not carry their shard key listed. Returns the newest of those (None: there are none)."""
    column = wanted.column
    has = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = $1::regclass AND attname = $2"
        " AND NOT attisdropped)",
        table,
        column,
    )
    if has:
        return None
    if wanted.fill is None:
        raise PlacementError(f"{table} has no column {column} to distribute by")
    await conn.execute(f'ALTER TABLE "{table}" ADD COLUMN "{column}" integer')
    rows = "0"
    # A new table (made by a later migration) is empty: nothing to fill, and its fill may read tables
    # already distributed, which Citus does not join with a local one in an UPDATE.
    if await conn.fetchval(f'SELECT EXISTS (SELECT 1 FROM "{table}")'):
        rows = (await conn.execute(f'UPDATE "{table}" t SET "{column}" = {wanted.fill}')).rsplit(" ", 1)[-1]
    await conn.execute(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" SET NOT NULL')
    steps.append(f"{table}: {column} of {rows} rows")
    if not wanted.ids:
        return None
    listed = await conn.execute(
        f'INSERT INTO {EXCEPTIONS_TABLE} (id, {SHARD_KEY}) SELECT id, {column} FROM "{table}"'
        f" WHERE {column} <> rampart_shard_key(id) ON CONFLICT (id) DO NOTHING"
    )
    count = int(listed.rsplit(" ", 1)[-1])
    if not count:
        return None
    steps.append(f"{table}: {count} ids made before the move listed in {EXCEPTIONS_TABLE}")
    newest: uuid.UUID = await conn.fetchval(
        f'SELECT id FROM "{table}" WHERE {column} <> rampart_shard_key(id) ORDER BY id DESC LIMIT 1'
    )
    return newest


async def _distribute_functions(conn: Any, steps: list[str]) -> None:
    """Rampart's functions as distributed objects: on every worker, and on any worker added later."""
    for signature in FUNCTIONS:
        exists = await conn.fetchval("SELECT to_regprocedure($1) IS NOT NULL", signature)
        if not exists:
            continue  # a database older than the revision that makes it
        known = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_object"
            " WHERE classid = 'pg_proc'::regclass AND objid = to_regprocedure($1))",
            signature,
        )
        if not known:
            await conn.execute("SELECT create_distributed_function($1)", signature)
            steps.append(f"function {signature} distributed")


_ON_WORKERS = ("distributed", "reference")


def _to_place(placements: Mapping[str, TablePlacement], current: Mapping[str, _Current]) -> list[str]:
    """The tables declared distributed or reference that are not placed yet."""
    return [
        table
        for table, wanted in placements.items()
        if wanted.kind in _ON_WORKERS and (table not in current or current[table].kind not in _ON_WORKERS)
    ]


def _check_changes(placements: Mapping[str, TablePlacement], current: Mapping[str, _Current]) -> None:
    for table, wanted in placements.items():
        now = current.get(table)
        if now is None or now.kind not in _ON_WORKERS:
            continue
        if wanted.kind != now.kind or (wanted.kind == "distributed" and wanted.column != now.column):
            have = now.kind + (f" by {now.column}" if now.column else "")
            want = f"distributed by {wanted.column}" if wanted.kind == "distributed" else wanted.kind
            raise PlacementError(
                f"{table} is already {have}, declared {want}: changing a placement moves data"
                " (alter_distributed_table, undistribute_table): do it by hand"
            )


def _order(todo: Sequence[str], placements: Mapping[str, TablePlacement]) -> list[str]:
    """Reference tables first (distributed ones may reference them), then each distributed table after
    the table it is co-located with."""
    ordered = [t for t in todo if placements[t].kind == "reference"]
    pending = [t for t in todo if placements[t].kind == "distributed"]
    while pending:
        progressed = False
        for table in list(pending):
            colocate = placements[table].colocate_with
            if colocate is None or colocate not in pending:
                ordered.append(table)
                pending.remove(table)
                progressed = True
        if not progressed:
            raise PlacementError(f"co-location goes round in a circle: {', '.join(pending)}")
    return ordered


@dataclass(frozen=True, slots=True)
class _ForeignKey:
    name: str
    table: str
    target: str
    definition: str  # as pg_get_constraintdef writes it: FOREIGN KEY (...) REFERENCES ...


async def _foreign_keys(conn: Any) -> list[_ForeignKey]:
    rows = await conn.fetch(
        "SELECT c.conname, c.conrelid::regclass::text AS tbl, c.confrelid::regclass::text AS target,"
        " pg_get_constraintdef(c.oid) AS def FROM pg_constraint c"
        " JOIN pg_namespace n ON n.oid = c.connamespace"
        " WHERE c.contype = 'f' AND n.nspname = current_schema()"
    )
    return [_ForeignKey(r["conname"], r["tbl"], r["target"], r["def"]) for r in rows]


def _check_references(
    foreign: Sequence[_ForeignKey], placements: Mapping[str, TablePlacement]
) -> list[_ForeignKey]:
    """Citus lets a distributed table reference any table it is co-located with (by its distribution
    column) and any reference table, and a local or reference table reference only local or reference
    tables. The first rule is Citus's own check (and `_definition_on`'s); the second is made here,
    before anything changes. Returns the references to drop: a local table's to a table it names loose."""
    local = TablePlacement.local()
    loose = []
    for fk in foreign:
        source = placements.get(fk.table, local)
        target = placements.get(fk.target, local).kind
        if source.kind != "distributed" and target == "distributed":
            if source.kind == "local" and fk.target in source.loose:
                loose.append(fk)
                continue
            raise PlacementError(
                f"{fk.table} ({source.kind}) references {fk.target} (distributed) by {fk.name}: Citus allows"
                " a reference to a distributed table only from a table distributed with it"
            )
        if source.kind == "distributed" and target == "local":
            raise PlacementError(
                f"{fk.table} (distributed) references {fk.target} (local) by {fk.name}: Citus allows a"
                " distributed table to reference only reference tables and the tables distributed with it"
            )
    return loose


async def _drop_notifying_triggers(conn: Any, table: str, steps: list[str]) -> None:
    names = await conn.fetch(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal", table
    )
    for (name,) in names:
        if name not in NOTIFYING_TRIGGERS:
            raise PlacementError(
                f"{table} has trigger {name}: Citus runs triggers on the worker that holds each shard;"
                " drop it, or keep the table local"
            )
        await conn.execute(f'DROP TRIGGER "{name}" ON "{table}"')
        steps.append(f"{table}: dropped trigger {name} (changes are announced by Rampart after commit)")


async def _key_with_column(conn: Any, table: str, column: str, steps: list[str]) -> None:
    """Make the primary key start with the distribution column; the old key keeps an index (by id)."""
    row = await conn.fetchrow(
        "SELECT c.conname, array_agg(a.attname ORDER BY k.ord)::text[] AS cols FROM pg_constraint c"
        " CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)"
        " JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum"
        " WHERE c.conrelid = $1::regclass AND c.contype = 'p' GROUP BY c.conname",
        table,
    )
    if row is None:
        raise PlacementError(f"{table} has no primary key")
    cols: list[str] = list(row["cols"])
    if column in cols:
        return
    name = row["conname"]
    listed = ", ".join(f'"{c}"' for c in cols)
    # Separate statements: Citus refuses ADD CONSTRAINT beside other subcommands of one ALTER TABLE.
    await conn.execute(f'ALTER TABLE "{table}" DROP CONSTRAINT "{name}"')
    await conn.execute(f'ALTER TABLE "{table}" ADD CONSTRAINT "{name}" PRIMARY KEY ("{column}", {listed})')
    index = f"{table}_{'_'.join(cols)}_idx"
    await conn.execute(f'CREATE INDEX IF NOT EXISTS "{index}" ON "{table}" ({listed})')
    steps.append(f"{table}: primary key ({column}, {', '.join(cols)}), index {index}")


async def _unique_with_column(
    conn: Any, table: str, column: str, follows: str | None, steps: list[str]
) -> None:
    """A unique constraint or index must hold the distribution column (Citus enforces uniqueness within a
    shard). One that holds `follows` (or `id`), of which the distribution column is a function, is
    rebuilt with it first: it accepts exactly the rows it accepted. Any other cannot be kept."""
    rows = await conn.fetch(
        "SELECT i.indexrelid::regclass::text AS name, c.conname,"
        " ARRAY(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)"
        "  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
        "  ORDER BY k.ord)::text[] AS cols"
        " FROM pg_index i LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.contype = 'u'"
        " WHERE i.indrelid = $1::regclass AND i.indisunique AND NOT i.indisprimary",
        table,
    )
    refused = []
    for row in rows:
        cols: list[str] = list(row["cols"])
        if column in cols:
            continue
        if not ({follows, "id"} & set(cols)):
            refused.append(row["name"])
            continue
        listed = ", ".join(f'"{c}"' for c in [column, *cols])
        if row["conname"] is not None:
            name = row["conname"]
            await conn.execute(f'ALTER TABLE "{table}" DROP CONSTRAINT "{name}"')
            await conn.execute(f'ALTER TABLE "{table}" ADD CONSTRAINT "{name}" UNIQUE ({listed})')
        else:
            name = row["name"]
            await conn.execute(f'DROP INDEX "{name}"')
            await conn.execute(f'CREATE UNIQUE INDEX "{name}" ON "{table}" ({listed})')
        steps.append(f"{table}: unique {name} ({', '.join([column, *cols])})")
    if refused:
        raise PlacementError(
            f"{table}: unique index {', '.join(refused)} does not include the distribution column {column};"
            " Citus enforces uniqueness only within a shard: add the column to it or drop it"
        )


async def _current(conn: Any) -> dict[str, _Current]:
    rows = await conn.fetch(
        "SELECT p.logicalrelid::regclass::text AS tbl, p.partmethod::text, p.colocationid, p.repmodel::text,"
        " CASE WHEN p.partmethod = 'h' THEN column_to_column_name(p.logicalrelid, p.partkey) END AS col"
        " FROM pg_dist_partition p"
    )
    found = {}
    for r in rows:
        if r["partmethod"] == "h":
            kind = "distributed"
        elif r["repmodel"] == "t":
            kind = "reference"
        else:
            kind = "local"
        found[r["tbl"]] = _Current(kind, r["col"], r["colocationid"])
    return found


async def _existing_tables(conn: Any) -> set[str]:
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')"
    )
    return {r["relname"] for r in rows}
