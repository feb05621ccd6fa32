"""Write-only fields (`Field(..., write_only=True)`) on resources of these tests' own: accepted and stored,
shown by the create's answer only, never by a read, a list, an event, the audit log, the row cache or the
record of deleted rows; a changed one is told as changed, never shown. Every scenario runs on a resource
without hooks (one-statement writes) and on one with a no-op hook (transactional writes), and also through
generated defaults (a function called for each create)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from rampart import Field, HookContext, Hooks, Resource, Text
from tests.conftest import MakeUser, User
from tests.declared import Served, serve

_counter = itertools.count()


def _token() -> str:
    return f"generated-token-{next(_counter):06d}"


def _fields() -> dict[str, Field]:
    return {
        "name": Field(Text(max_length=50), required=True, filter=True, sort=True),
        "token": Field(Text(min_length=8, max_length=60), default=_token, write_only=True),
    }


async def _nothing(*, ctx: HookContext, current: Any, changes: Any) -> None:
    return None


plain = Resource(name="wo_plain", fields=_fields())
hooked = Resource(name="wo_hooked", fields=_fields(), hooks=Hooks(before_update=_nothing))
KINDS = ["wo_plain", "wo_hooked"]


@pytest.fixture(scope="module")
async def served(database_url: str) -> AsyncIterator[Served]:
    async with serve(database_url, [plain, hooked]) as running:
        yield running


async def _create(served: Served, owner: User, path: str, **body: Any) -> dict[str, Any]:
    r = await served.client.post(path, json={"name": "n", **body}, headers=owner.headers)
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()["data"]
    return created


@pytest.mark.parametrize("name", KINDS)
async def test_only_the_create_answer_shows_it(served: Served, make_user: MakeUser, name: str) -> None:
    owner, c, path = await make_user(), served.client, f"/api/v1/{name}"
    served.events.clear()
    given = await _create(served, owner, path, token="given-secret-1")
    assert given["token"] == "given-secret-1"
    made, other = await _create(served, owner, path), await _create(served, owner, path)
    assert made["token"].startswith("generated-token-")
    assert made["token"] != other["token"]  # the default is made for each create
    stored = await served.app.services.db.fetchval(
        f"SELECT token FROM {name} WHERE id = $1", uuid.UUID(given["id"])
    )
    assert stored == "given-secret-1"

    answers = [
        await c.get(f"{path}/{given['id']}", headers=owner.headers),
        await c.get(f"{path}/{given['id']}", headers=owner.headers),  # through the row cache
        await c.get(path, params={"limit": 100}, headers=owner.headers),
        await c.patch(f"{path}/{given['id']}", json={"name": "m"}, headers=owner.headers),
        await c.get("/api/v1/events", params={"resource": name, "limit": 100}, headers=owner.headers),
    ]
    for r in answers:
        assert r.status_code == 200, r.text
        assert "given-secret-1" not in r.text
        assert made["token"] not in r.text
        assert '"token"' not in r.text
    assert served.fired(given["id"]) == [f"{name}.created", f"{name}.updated"]
    assert all("token" not in e["data"] and "token" not in (e["changes"] or {}) for e in served.events)


@pytest.mark.parametrize("name", KINDS)
async def test_a_change_is_told_never_shown(served: Served, make_user: MakeUser, name: str) -> None:
    owner, c, path = await make_user(), served.client, f"/api/v1/{name}"
    item = await _create(served, owner, path, token="first-secret")
    url = f"{path}/{item['id']}"
    served.events.clear()
    same = await c.patch(url, json={"token": "first-secret"}, headers=owner.headers)
    assert same.status_code == 200
    assert same.json()["data"]["version"] == 1
    changed = await c.patch(url, json={"token": "second-secret", "name": "x"}, headers=owner.headers)
    assert changed.status_code == 200, changed.text
    assert changed.json()["data"]["version"] == 2
    assert "token" not in changed.json()["data"]
    assert served.fired() == [f"{name}.updated"]
    assert served.events[0]["changes"] == {"token": {"changed": True}, "name": {"from": "n", "to": "x"}}
    log = await c.get("/api/v1/events", params={"resource_id": item["id"]}, headers=owner.headers)
    assert "second-secret" not in log.text
    assert "first-secret" not in log.text
    assert log.json()["data"][-1]["changes"]["token"] == {"changed": True}
    stored = await served.app.services.db.fetchval(
        f"SELECT token FROM {name} WHERE id = $1", uuid.UUID(item["id"])
    )
    assert stored == "second-secret"
    bad = await c.patch(url, json={"token": "short"}, headers=owner.headers)
    assert bad.status_code == 422
    assert [(e["field"], e["code"]) for e in bad.json()["errors"]] == [("token", "too_short")]


@pytest.mark.parametrize("name", KINDS)
async def test_a_deleted_rows_record_keeps_no_write_only_value(
    served: Served, make_user: MakeUser, name: str
) -> None:
    owner, path = await make_user(), f"/api/v1/{name}"
    item = await _create(served, owner, path, token="deleted-secret")
    r = await served.client.delete(f"{path}/{item['id']}", headers=owner.headers)
    assert r.status_code == 204
    db = served.app.services.db
    kept = await db.fetchrow(f"SELECT * FROM {name}_deleted WHERE id = $1", uuid.UUID(item["id"]))
    assert kept is not None
    assert kept["name"] == "n"
    assert "token" not in dict(kept)
    assert "token" not in served.events[-1]["data"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"fields": "id,token"}, "fields"),
        ({"token": "x"}, "token"),
        ({"sort": "token"}, "sort"),
    ],
)
async def test_it_is_neither_listed_filtered_nor_sorted(
    served: Served, make_user: MakeUser, query: dict[str, str], field: str
) -> None:
    owner = await make_user()
    r = await served.client.get("/api/v1/wo_plain", params=query, headers=owner.headers)
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0]["field"] == field


async def test_the_document_shows_it_on_writes_and_the_create_answer(served: Served) -> None:
    doc = (await served.client.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    assert "token" not in schemas["WoPlain"]["properties"]
    assert schemas["WoPlainCreate"]["properties"]["token"]["writeOnly"] is True
    assert schemas["WoPlainUpdate"]["properties"]["token"]["writeOnly"] is True
    assert "examples" not in schemas["WoPlainCreate"]["properties"]["token"]  # generated: no one example
    created = schemas["NewWoPlain"]
    assert "writeOnly" not in created["properties"]["token"]
    assert set(created["required"]) == {*schemas["WoPlain"]["required"], "token"}
    answer = doc["paths"]["/api/v1/wo_plain"]["post"]["responses"]["201"]["content"]["application/json"]
    assert answer["schema"] == {"$ref": "#/components/schemas/NewWoPlainResponse"}
    listing = doc["paths"]["/api/v1/wo_plain"]["get"]["parameters"]
    fields = next(p for p in listing if p["name"] == "fields")
    assert "token" not in fields["schema"]["pattern"]


@pytest.mark.parametrize(
    "options",
    [
        {"filter": True},
        {"sort": True},
        {"unique": True},
        {"read_only": True},
    ],
)
def test_a_write_only_field_that_would_be_read_back_is_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="write-only"):
        Resource(name="wo_bad", fields={"token": Field(Text(), write_only=True, **options)})


def test_a_write_only_key_is_refused() -> None:
    with pytest.raises(ValueError, match="the key"):
        Resource(name="wo_bad", fields={"code": Field(Text(), write_only=True)}, key="code")
