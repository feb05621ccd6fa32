"""`Policy.read_permission` (docs/guide/resources.md): lists and reads by id need it (403, a missing row
too), whatever bypass permissions the caller holds; a write still returns its row."""

from __future__ import annotations

import uuid

import asyncpg
import httpx

from rampart.app import create_app
from rampart.config import DEFAULT_ROLE_PERMISSIONS
from tests.apps.guarded import READ
from tests.apps.library import CREATE_TABLES
from tests.conftest import make_settings, new_user


async def test_reads_need_the_read_permission_writes_do_not(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(CREATE_TABLES)
    finally:
        await conn.close()
    # Only the `user` role may read; `admin` keeps its bypass permissions but not this one.
    roles = {**DEFAULT_ROLE_PERMISSIONS, "user": [*DEFAULT_ROLE_PERMISSIONS["user"], READ]}
    app = create_app(make_settings(database_url, app="tests.apps.guarded:declare", role_permissions=roles))
    try:
        admin, reader = await new_user(app, role="admin"), await new_user(app)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            r = await http.post("/api/v1/shelves", json={"name": "s"}, headers=admin.headers)
            assert r.status_code == 201, r.text  # the written row comes back without the permission
            shelf = r.json()["data"]["id"]
            for url in ("/api/v1/shelves", f"/api/v1/shelves/{shelf}", f"/api/v1/shelves/{uuid.uuid4()}"):
                r = await http.get(url, headers=admin.headers)
                assert (r.status_code, r.json()["code"]) == (403, "forbidden"), url
            # the control: with the permission, the usual rules apply (`visible`: own rows only)
            assert (await http.get("/api/v1/shelves", headers=reader.headers)).json()["data"] == []
            assert (await http.get(f"/api/v1/shelves/{shelf}", headers=reader.headers)).status_code == 404
            r = await http.post("/api/v1/shelves", json={"name": "mine"}, headers=reader.headers)
            mine = r.json()["data"]["id"]
            assert (await http.get(f"/api/v1/shelves/{mine}", headers=reader.headers)).status_code == 200
    finally:
        await app.aclose()
