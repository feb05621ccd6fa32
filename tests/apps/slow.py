"""A test-only app: one resource whose create hook misbehaves on request.

`mode` picks the misbehaviour: "sleep" runs `pg_sleep(seconds)` inside the transaction (timeouts, pool
exhaustion), "boom" raises a RuntimeError carrying internals that must never reach a client (500s),
anything else creates the row normally. Load it with `make_settings(..., app="tests.apps.slow:declare")`
after running `CREATE_TABLE` (migrations cover only the demo app).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx

from rampart import Field, HookContext, Hooks, Integer, Policy, Rampart, Resource, Settings, Text, create_app

TABLE = "pipeline_probes"
BOOM = "secret sql detail: SELECT password FROM users WHERE id = 1 (/srv/rampart/hooks.py)"

CREATE_TABLE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id uuid PRIMARY KEY,
    mode text NOT NULL DEFAULT 'ok',
    seconds integer NOT NULL DEFAULT 0,
    owner_id uuid NOT NULL REFERENCES users (id),
    created_at timestamptz(3) NOT NULL DEFAULT now(),
    updated_at timestamptz(3) NOT NULL DEFAULT now(),
    version integer NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS {TABLE}_deleted (LIKE {TABLE}, deleted_at timestamptz(3) NOT NULL DEFAULT now())
"""


def _own(actor: Any, alias: str, bind: Any) -> str:
    return f"{alias}.owner_id = {bind(actor.user_id)}"


async def before_create(*, ctx: HookContext, data: dict[str, Any]) -> None:
    if data.get("mode") == "sleep":
        await ctx.conn.execute("SELECT pg_sleep($1)", float(data.get("seconds", 0)))
    elif data.get("mode") == "boom":
        raise RuntimeError(BOOM)


probes = Resource(
    name=TABLE,
    fields={
        "mode": Field(Text(max_length=20), default="ok"),
        "seconds": Field(Integer(minimum=0, maximum=10), default=0),
    },
    policy=Policy(visible=_own, writable=_own),
    hooks=Hooks(before_create=before_create),
)


def declare() -> list[Resource]:
    return [probes]


@asynccontextmanager
async def serve(
    settings: Settings, *, base_url: str = "http://testserver"
) -> AsyncIterator[tuple[Rampart, httpx.AsyncClient]]:
    """An app built from `settings` (its probe table created first) and an httpx client talking to it."""
    assert settings.database_url is not None
    conn = await asyncpg.connect(settings.database_url.get_secret_value())
    try:
        await conn.execute(CREATE_TABLE)
    finally:
        await conn.close()
    app = create_app(settings)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url) as client:
            yield app, client
    finally:
        await app.aclose()
