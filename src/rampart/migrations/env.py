"""Alembic environment. `make_migration` passes the declared tables (`target_metadata`) and the names of
the tables to compare (`compared_tables`) as attributes; upgrading needs neither (it runs the files)."""

from __future__ import annotations

import asyncio

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


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        include_name=_include_name,
    )
    with context.begin_transaction():
        # Held until this transaction commits: concurrent `migrate` runs queue here, then find no work.
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
        # On a Citus coordinator, DDL on a reference table after DDL on a distributed one in the same
        # transaction fails ("there was a parallel DDL access to distributed table"); one connection per
        # worker avoids it (decision 0019). On plain PostgreSQL this only sets an unused placeholder.
        connection.execute(sa.text("SET LOCAL citus.multi_shard_modify_mode TO 'sequential'"))
        context.run_migrations()


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
