"""Alembic environment. `make_migration` passes the declared tables (`target_metadata`) and the names of
the tables to compare (`compared_tables`) as attributes; upgrading needs neither (it runs the files)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import sqlalchemy as sa
from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from rampart.db.migrate import ADVISORY_LOCK_KEY

config = context.config
target_metadata: sa.MetaData | None = config.attributes.get("target_metadata")
compared_tables: frozenset[str] = config.attributes.get("compared_tables", frozenset())


def _include_name(name: str | None, type_: str, parent_names: object) -> bool:
    # Only Rampart's tables and the app's are compared: a table of the database that is neither, such as
    # another app's or the demo's left by an older Rampart, is never dropped.
    return type_ != "table" or name in compared_tables


SHARD_KEY = "shard_key"  # rampart.db.citus


def _columns(obj: object) -> list[str]:
    columns = getattr(obj, "columns", None)
    return [c.name for c in columns] if columns is not None else []


def _placement_aside(distributed: set[str]) -> Callable[..., bool]:
    """On a Citus coordinator, what `rampart migrate` made of a table it distributed (rampart.db.citus) is
    not the app's to change: its shard key, the index on its id, and the unique constraints and references
    rebuilt with the shard key are left out of the comparison, with what they stand for."""

    def include(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
        if type_ == "foreign_key_constraint" and not reflected:
            # One to a distributed table is kept with the shard key on both sides, or (from a table that is
            # not distributed) dropped: Citus keeps no other.
            return getattr(getattr(obj, "referred_table", None), "name", None) not in distributed
        if getattr(getattr(obj, "table", None), "name", None) not in distributed:
            return True
        if type_ == "column":
            return name != SHARD_KEY
        if type_ in ("index", "unique_constraint"):
            placed = SHARD_KEY in _columns(obj) or SHARD_KEY in _columns(compare_to)
            return not placed and not (reflected and type_ == "index" and _columns(obj) == ["id"])
        if type_ == "foreign_key_constraint":
            return SHARD_KEY not in _columns(obj)
        return True

    return include


def _distributed(connection: Connection) -> set[str]:
    exists = connection.execute(sa.text("SELECT to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL"))
    if not exists.scalar():
        return set()
    rows = connection.execute(
        sa.text("SELECT logicalrelid::regclass::text FROM pg_dist_partition WHERE partmethod = 'h'")
    )
    return {r[0] for r in rows}


def _distributed_now(connection: Connection) -> set[str]:
    """`_distributed`, read in a transaction of its own (Alembic's must be the one it begins)."""
    try:
        return _distributed(connection)
    finally:
        connection.rollback()


def _references_aside(distributed: set[str]) -> Callable[..., None]:
    """A new table's references to distributed tables are left out when it is made on a Citus coordinator:
    Citus keeps none from a table that is not distributed (and the table is not, until `rampart migrate`
    places it, which adds the reference it is placed by, with the shard key on both sides)."""

    def before_create(table: sa.Table, connection: object, **kw: object) -> None:
        for constraint in list(table.constraints):
            if isinstance(constraint, sa.ForeignKeyConstraint) and constraint.elements:
                target = constraint.elements[0].target_fullname.rpartition(".")[0]
                if target in distributed:
                    table.constraints.discard(constraint)

    return before_create


def _run(connection: Connection) -> None:
    distributed = _distributed_now(connection)
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        include_name=_include_name,
        include_object=_placement_aside(distributed) if distributed else None,
    )
    aside = _references_aside(distributed)
    if distributed:
        sa.event.listen(sa.Table, "before_create", aside)
    try:
        with context.begin_transaction():
            # Held until this transaction commits: concurrent `migrate` runs queue here, then find no work.
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
            # On a Citus coordinator, DDL on a reference table after DDL on a distributed one in the same
            # transaction fails ("there was a parallel DDL access to distributed table"); one connection
            # per worker avoids it (decision 0019). On plain PostgreSQL this only sets an unused placeholder.
            connection.execute(sa.text("SET LOCAL citus.multi_shard_modify_mode TO 'sequential'"))
            context.run_migrations()
    finally:
        if distributed:
            sa.event.remove(sa.Table, "before_create", aside)


async def _online() -> None:
    engine = create_async_engine(config.get_main_option("sqlalchemy.url") or "", poolclass=sa.pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata, literal_binds=True
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_online())
