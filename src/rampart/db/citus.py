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
- **Foreign keys between tables being distributed together** (a local table may not reference a
  distributed one, so the referenced table cannot go first while its referrers are local): they are
  dropped, the tables placed, and the same constraints added back. A reference from a table that stays
  local (or becomes a reference table) to a distributed one is not allowed by Citus at all: an error.
- Changing the placement of a table already placed (another distribution column, distributed to
  reference): an error; that is a data move for an operator (`alter_distributed_table`,
  `undistribute_table`), not something a migration should start by itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

# table -> ("distributed", column, colocate_with or None) | ("reference",) | ("local",)
Placement = (
    tuple[Literal["distributed"], str, str | None] | tuple[Literal["reference"]] | tuple[Literal["local"]]
)

ADVISORY_LOCK_KEY = 7_272_740_003  # one placement at a time (several instances migrating at once)
# Rampart's own triggers, which notify: they cannot stay on a table Citus places on the workers.
NOTIFYING_TRIGGERS = ("rampart_cache_notify",)


class PlacementError(Exception):
    """A declared placement Citus cannot give this schema (the message says which table and why)."""


@dataclass(frozen=True, slots=True)
class _Wanted:
    kind: str  # "distributed", "reference" or "local"
    column: str | None = None
    colocate: str | None = None

    @staticmethod
    def of(placement: Placement) -> _Wanted:
        if placement[0] == "distributed":
            return _Wanted("distributed", placement[1], placement[2])
        if placement[0] in ("reference", "local"):
            return _Wanted(placement[0])
        raise PlacementError(f"unknown placement {placement!r}")

    def __str__(self) -> str:
        return f"distributed by {self.column}" if self.kind == "distributed" else self.kind


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


async def place_tables(conn: Any, placements: Mapping[str, Placement]) -> list[str]:
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
        return await _place(conn, {table: _Wanted.of(p) for table, p in placements.items()})


async def _place(conn: Any, placements: Mapping[str, _Wanted]) -> list[str]:
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
    foreign = await _foreign_keys(conn)
    _check_references(foreign, placements)
    # References among the tables about to be distributed (or made reference tables) go while they move.
    moving = set(order)
    dropped = [fk for fk in foreign if fk.table in moving and fk.target in moving and fk.table != fk.target]
    for fk in dropped:
        await conn.execute(f'ALTER TABLE "{fk.table}" DROP CONSTRAINT "{fk.name}"')
    for table in order:
        wanted = placements[table]
        await _drop_notifying_triggers(conn, table, steps)
        if wanted.kind == "reference":
            await conn.execute("SELECT create_reference_table($1)", table)
            steps.append(f"{table}: reference table")
        else:
            column, colocate = wanted.column, wanted.colocate
            assert column is not None
            await _key_with_column(conn, table, column, steps)
            await _check_unique(conn, table, column)
            await conn.execute(
                "SELECT create_distributed_table($1, $2, colocate_with => $3)",
                table,
                column,
                colocate or "default",
            )
            steps.append(f"{table}: distributed by {column}" + (f" with {colocate}" if colocate else ""))
    for fk in dropped:
        await conn.execute(f'ALTER TABLE "{fk.table}" ADD CONSTRAINT "{fk.name}" {fk.definition}')
    return steps


_ON_WORKERS = ("distributed", "reference")


def _to_place(placements: Mapping[str, _Wanted], current: Mapping[str, _Current]) -> list[str]:
    """The tables declared distributed or reference that are not placed yet."""
    return [
        table
        for table, wanted in placements.items()
        if wanted.kind in _ON_WORKERS and (table not in current or current[table].kind not in _ON_WORKERS)
    ]


def _check_changes(placements: Mapping[str, _Wanted], current: Mapping[str, _Current]) -> None:
    for table, wanted in placements.items():
        now = current.get(table)
        if now is None or now.kind not in _ON_WORKERS:
            continue
        if wanted.kind != now.kind or (wanted.kind == "distributed" and wanted.column != now.column):
            have = now.kind + (f" by {now.column}" if now.column else "")
            raise PlacementError(
                f"{table} is already {have}, declared {wanted}: changing a placement moves data"
                " (alter_distributed_table, undistribute_table): do it by hand"
            )


def _order(todo: Sequence[str], placements: Mapping[str, _Wanted]) -> list[str]:
    """Reference tables first (distributed ones may reference them), then each distributed table after
    the table it is co-located with."""
    ordered = [t for t in todo if placements[t].kind == "reference"]
    pending = [t for t in todo if placements[t].kind == "distributed"]
    while pending:
        progressed = False
        for table in list(pending):
            colocate = placements[table].colocate
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


def _check_references(foreign: Sequence[_ForeignKey], placements: Mapping[str, _Wanted]) -> None:
    """Citus lets a distributed table reference any table it is co-located with (by its distribution
    column) and any reference table, and a local or reference table reference only local or reference
    tables. The first rule is Citus's own check; the second is made here, before anything changes."""
    for fk in foreign:
        source = placements.get(fk.table, _Wanted("local")).kind
        target = placements.get(fk.target, _Wanted("local")).kind
        if source != "distributed" and target == "distributed":
            raise PlacementError(
                f"{fk.table} ({source}) references {fk.target} (distributed) by {fk.name}: Citus allows"
                " a reference to a distributed table only from a table distributed with it"
            )


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


async def _check_unique(conn: Any, table: str, column: str) -> None:
    """A unique index without the distribution column cannot be enforced across shards."""
    rows = await conn.fetch(
        "SELECT i.indexrelid::regclass::text AS name FROM pg_index i"
        " WHERE i.indrelid = $1::regclass AND i.indisunique AND NOT EXISTS ("
        "  SELECT 1 FROM pg_attribute a WHERE a.attrelid = i.indrelid AND a.attname = $2"
        "  AND a.attnum = ANY(i.indkey))",
        table,
        column,
    )
    if rows:
        names = ", ".join(r["name"] for r in rows)
        raise PlacementError(
            f"{table}: unique index {names} does not include the distribution column {column}; Citus"
            " enforces uniqueness only within a shard: add the column to it or drop it"
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
