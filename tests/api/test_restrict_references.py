"""A row that a RESTRICT reference still points to cannot be deleted: 409, and nothing changes."""

from __future__ import annotations

import asyncpg
import httpx

from rampart.app import create_app
from tests.apps.library import CREATE_TABLES
from tests.conftest import User, make_settings


async def test_deleting_a_restrict_referenced_row_is_a_conflict(database_url: str, alice: User) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(CREATE_TABLES)
    finally:
        await conn.close()
    app = create_app(make_settings(database_url, app="tests.apps.library:declare"))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            shelf = (await http.post("/api/v1/shelves", json={"name": "s"}, headers=alice.headers)).json()[
                "data"
            ]
            r = await http.post(
                "/api/v1/books", json={"title": "b", "shelf_id": shelf["id"]}, headers=alice.headers
            )
            assert r.status_code == 201, r.text
            book = r.json()["data"]

            r = await http.delete(f"/api/v1/shelves/{shelf['id']}", headers=alice.headers)
            assert r.status_code == 409
            assert r.json()["code"] == "conflict"
            assert (
                await http.get(f"/api/v1/shelves/{shelf['id']}", headers=alice.headers)
            ).status_code == 200
            events = await app.services.db.fetchval(
                "SELECT count(*) FROM events WHERE type = 'shelves.deleted' AND resource_id = $1", shelf["id"]
            )
            assert events == 0

            assert (
                await http.delete(f"/api/v1/books/{book['id']}", headers=alice.headers)
            ).status_code == 204
            assert (
                await http.delete(f"/api/v1/shelves/{shelf['id']}", headers=alice.headers)
            ).status_code == 204
    finally:
        await app.aclose()
