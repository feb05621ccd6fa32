"""Alembic environment: the target metadata is built from the declared resources."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from rampart.db.migrate import ADVISORY_LOCK_KEY
from rampart.schema import build_metadata

config = context.config
target_metadata = build_metadata()


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
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
