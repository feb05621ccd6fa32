"""Serving resources declared inside a test: their tables made from the declarations (as a migration would
make them), the app built by `create_app(resources=...)`, an HTTP client on it, and the events it fires."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx

from rampart import Rampart, Resource, create_app
from tests.conftest import make_settings


async def create_tables(database_url: str, resources: Sequence[Resource]) -> None:
    """CREATE TABLE IF NOT EXISTS for each resource and its record of deleted rows, with constraints and
    indexes, and its change trigger (what `rampart migrate` installs)."""
    import sqlalchemy as sa
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.schema import CreateIndex, CreateTable

    from rampart.resources.caching import install_triggers
    from rampart.resources.tables import define_deleted_table, define_table

    metadata = sa.MetaData()
    tables = {"users": "users", **{r.name: r.table for r in resources}}
    sa.Table("users", metadata, sa.Column("id", postgresql.UUID(), primary_key=True))
    made = [define_table(r, metadata, tables=tables) for r in resources]
    made += [define_deleted_table(r, metadata) for r in resources]  # the audit log's records of deletes
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(7272740099)")  # modules may share tables
            for table in made:
                await conn.execute(str(CreateTable(table, if_not_exists=True).compile(dialect=dialect)))
                for index in table.indexes:
                    await conn.execute(str(CreateIndex(index, if_not_exists=True).compile(dialect=dialect)))
            await install_triggers(conn, [r.table for r in resources])
    finally:
        await conn.close()


@dataclass
class Served:
    app: Rampart
    client: httpx.AsyncClient
    events: list[dict[str, Any]] = field(default_factory=list)

    def fired(self, resource_id: str | None = None) -> list[str]:
        """The types of the events heard so far (of one object, when given), in order."""
        return [e["type"] for e in self.events if resource_id is None or e["resource_id"] == resource_id]


@asynccontextmanager
async def serve(database_url: str, resources: Iterable[Resource], **create: Any) -> AsyncIterator[Served]:
    """The app of `resources` (plus `create_app`'s other arguments), started, with a client."""
    resources = list(resources)
    await create_tables(database_url, resources)
    app = create_app(make_settings(database_url), resources=resources, **create)
    await app.startup()
    served = Served(
        app, httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
    )

    async def hear(event: Any) -> None:
        served.events.append(dict(event))

    app.services.bus.on("*", hear)
    try:
        yield served
    finally:
        await served.client.aclose()
        await app.aclose()
