"""The hook contract (docs/guide/resources.md, "Hooks"), as tables of scenarios that assert the events fired.

- Every scenario of plain CRUD answers the same on a resource without hooks and on one whose six hooks do
  nothing: declaring a hook never changes behaviour (the manager writes in one statement without hooks,
  in a transaction with them).
- A hook edits the data; a hook that raises rolls everything back (no row, no event) and the client gets
  its problem; a `before_update` that empties `changes` writes nothing; a manager call made from a hook
  joins the transaction, and its event fires only if the whole change commits.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from rampart import (
    Conflict,
    Field,
    FieldError,
    Forbidden,
    HookContext,
    Hooks,
    Integer,
    Reference,
    Resource,
    Text,
    ValidationFailed,
)
from tests.conftest import MakeUser, User
from tests.declared import Served, serve

# ----- resources ---------------------------------------------------------------------------------------


def _fields() -> dict[str, Field]:
    return {
        "title": Field(Text(min_length=1, max_length=50), required=True, filter=True, sort=True),
        "size": Field(Integer(minimum=0, maximum=9), default=0),
        "shelf_id": Field(Reference("hk_shelves"), nullable=True),
    }


async def _nothing(**_: Any) -> None:
    return None


shelves = Resource(name="hk_shelves", fields={"name": Field(Text(max_length=50), required=True)})
plain = Resource(name="hk_plain", fields=_fields())
noop = Resource(
    name="hk_noop",
    fields=_fields(),
    hooks=Hooks(
        before_create=_nothing,
        after_create=_nothing,
        before_update=_nothing,
        after_update=_nothing,
        before_delete=_nothing,
        after_delete=_nothing,
    ),
)


async def _before_create(*, ctx: HookContext, data: dict[str, Any]) -> None:
    if data["title"] == "refused":
        raise Conflict("Titles may not say refused.")
    if data["title"] == "invalid":
        raise ValidationFailed([FieldError("title", "reserved", "This title is reserved.")])
    data["size"] = len(data["title"]) % 10  # a hook edits the data


async def _after_create(*, ctx: HookContext, row: dict[str, Any]) -> None:
    if row["title"].startswith("nested"):
        # Another resource's manager, as the same caller, inside this transaction.
        await ctx.resources["hk_shelves"].create(ctx, {"name": f"shelf of {row['id']}"})
    if row["title"] == "nested-then-fail":
        raise Conflict("Changed my mind after the nested write.")


async def _before_update(*, ctx: HookContext, current: dict[str, Any], changes: dict[str, Any]) -> None:
    if changes.get("title") == "ignored":
        changes.clear()  # nothing left to write: no version, no event
    elif "title" in changes:
        changes["size"] = len(changes["title"]) % 10


async def _before_delete(*, ctx: HookContext, row: dict[str, Any]) -> None:
    if row["title"] == "pinned":
        raise Forbidden("Pinned items stay.")


busy = Resource(
    name="hk_busy",
    fields=_fields(),
    hooks=Hooks(
        before_create=_before_create,
        after_create=_after_create,
        before_update=_before_update,
        before_delete=_before_delete,
    ),
)


@pytest.fixture(scope="module")
async def served(database_url: str) -> AsyncIterator[Served]:
    async with serve(database_url, [shelves, plain, noop, busy]) as running:
        yield running


# ----- the same answers with and without hooks ----------------------------------------------------------


async def _scenario(served: Served, name: str, owner: User, stranger: User, path: str) -> list[Any]:
    """Run one scenario; what the client saw (statuses, bodies without ids and times) and the events."""
    c = served.client
    shelf = (await c.post("/api/v1/hk_shelves", json={"name": "s"}, headers=owner.headers)).json()["data"]
    foreign = (await c.post("/api/v1/hk_shelves", json={"name": "f"}, headers=stranger.headers)).json()[
        "data"
    ]
    r = await c.post(path, json={"title": "first", "shelf_id": shelf["id"]}, headers=owner.headers)
    assert r.status_code == 201, r.text
    item = r.json()["data"]
    url = f"{path}/{item['id']}"
    served.events.clear()
    steps: dict[str, list[tuple[str, str, dict[str, str], Any]]] = {
        "create": [("POST", path, owner.headers, {"title": "second", "size": 3})],
        "create-unknown-field": [("POST", path, owner.headers, {"title": "x", "colour": "red"})],
        "create-bad-type": [("POST", path, owner.headers, {"title": "x", "size": "3"})],
        "create-invisible-reference": [
            ("POST", path, owner.headers, {"title": "x", "shelf_id": foreign["id"]})
        ],
        "update": [("PATCH", url, owner.headers, {"title": "renamed"})],
        "update-same-values": [("PATCH", url, owner.headers, {"title": "first", "size": 0})],
        "update-empty": [("PATCH", url, owner.headers, {})],
        "update-invisible-reference": [("PATCH", url, owner.headers, {"shelf_id": foreign["id"]})],
        "update-read-only": [("PATCH", url, owner.headers, {"version": 7})],
        "update-by-stranger": [("PATCH", url, stranger.headers, {"title": "mine now"})],
        "update-if-match-stale": [("PATCH", url, {**owner.headers, "If-Match": '"9"'}, {"title": "late"})],
        "update-if-match-current": [("PATCH", url, {**owner.headers, "If-Match": '"1"'}, {"title": "ok"})],
        "delete": [("DELETE", url, owner.headers, None), ("GET", url, owner.headers, None)],
        "delete-by-stranger": [("DELETE", url, stranger.headers, None)],
        "delete-referenced-shelf": [("DELETE", f"/api/v1/hk_shelves/{shelf['id']}", owner.headers, None)],
    }
    seen: list[Any] = []
    for method, target, headers, body in steps[name]:
        r = await c.request(method, target, json=body, headers=headers)
        payload = r.json() if r.content else None
        if isinstance(payload, dict) and isinstance(payload.get("data"), dict):
            data = payload["data"]
            payload = {k: v for k, v in data.items() if k not in ("id", "shelf_id", "owner_id")}
            payload = {k: v for k, v in payload.items() if not k.endswith("_at")}
        elif isinstance(payload, dict):
            payload = {k: payload.get(k) for k in ("status", "code", "errors")}
        seen.append((r.status_code, payload))
    seen.append([t.split(".", 1)[1] for t in served.fired()])
    return seen


SCENARIOS = [
    "create",
    "create-unknown-field",
    "create-bad-type",
    "create-invisible-reference",
    "update",
    "update-same-values",
    "update-empty",
    "update-invisible-reference",
    "update-read-only",
    "update-by-stranger",
    "update-if-match-stale",
    "update-if-match-current",
    "delete",
    "delete-by-stranger",
    "delete-referenced-shelf",
]


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_a_no_op_hook_changes_nothing_a_client_sees(
    served: Served, make_user: MakeUser, scenario: str
) -> None:
    owner, stranger = await make_user(), await make_user()
    without = await _scenario(served, scenario, owner, stranger, "/api/v1/hk_plain")
    with_hooks = await _scenario(served, scenario, owner, stranger, "/api/v1/hk_noop")
    assert with_hooks == without
    assert without[-1] is not None  # the events are part of what is compared


async def test_the_expected_answers_of_the_plain_scenarios(served: Served, make_user: MakeUser) -> None:
    """The table above compares two paths; this pins what both must say, so both cannot be wrong alike."""
    owner, stranger = await make_user(), await make_user()
    path = "/api/v1/hk_plain"
    expected = {
        "create": [201, ["hk_plain.created"]],
        "create-unknown-field": [422, []],
        "create-invisible-reference": [422, []],
        "update": [200, ["hk_plain.updated"]],
        "update-same-values": [200, []],
        "update-empty": [200, []],
        "update-invisible-reference": [422, []],
        "update-by-stranger": [404, []],
        "update-if-match-stale": [412, []],
        "update-if-match-current": [200, ["hk_plain.updated"]],
        "delete-by-stranger": [404, []],
    }
    for scenario, (status, events) in expected.items():
        seen = await _scenario(served, scenario, owner, stranger, path)
        assert seen[0][0] == status, (scenario, seen)
        assert ["hk_plain." + e for e in seen[-1]] == events, scenario
    seen = await _scenario(served, "update-same-values", owner, stranger, path)
    assert seen[0][1]["version"] == 1  # nothing written


# ----- what hooks do ------------------------------------------------------------------------------------


async def _count(served: Served, table: str, owner: User) -> int:
    value = await served.app.services.db.fetchval(
        f"SELECT count(*) FROM {table} WHERE owner_id = $1", uuid.UUID(owner.id)
    )
    return int(value)


@pytest.mark.parametrize(
    ("title", "status", "code", "rows", "shelves_made", "events"),
    [
        ("hello", 201, None, 1, 0, ["hk_busy.created"]),
        ("refused", 409, "conflict", 0, 0, []),
        ("invalid", 422, "validation_failed", 0, 0, []),
        ("nested", 201, None, 1, 1, ["hk_shelves.created", "hk_busy.created"]),
        ("nested-then-fail", 409, "conflict", 0, 0, []),
    ],
)
async def test_create_hooks(
    served: Served,
    make_user: MakeUser,
    title: str,
    status: int,
    code: str | None,
    rows: int,
    shelves_made: int,
    events: list[str],
) -> None:
    owner = await make_user()
    served.events.clear()
    r = await served.client.post("/api/v1/hk_busy", json={"title": title}, headers=owner.headers)
    assert r.status_code == status, r.text
    if code is not None:
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == code
    else:
        assert r.json()["data"]["size"] == len(title) % 10  # set by before_create
    assert await _count(served, "hk_busy", owner) == rows
    assert await _count(served, "hk_shelves", owner) == shelves_made
    assert served.fired() == events
    stored = await served.app.services.db.fetchval(
        "SELECT count(*) FROM events WHERE actor_id = $1", uuid.UUID(owner.id)
    )
    assert stored == len(events)  # no event row without its change, none for what rolled back


@pytest.mark.parametrize(
    ("change", "status", "version", "size", "events"),
    [
        ({"title": "abcd"}, 200, 2, 4, ["hk_busy.updated"]),
        ({"title": "ignored"}, 200, 1, 5, []),
        ({"size": 9}, 200, 2, 9, ["hk_busy.updated"]),
    ],
)
async def test_update_hooks(
    served: Served,
    make_user: MakeUser,
    change: dict[str, Any],
    status: int,
    version: int,
    size: int,
    events: list[str],
) -> None:
    owner = await make_user()
    item = (
        await served.client.post("/api/v1/hk_busy", json={"title": "hello"}, headers=owner.headers)
    ).json()
    served.events.clear()
    r = await served.client.patch(f"/api/v1/hk_busy/{item['data']['id']}", json=change, headers=owner.headers)
    assert r.status_code == status, r.text
    assert r.json()["data"]["version"] == version
    assert r.json()["data"]["size"] == size
    assert served.fired() == events


async def test_a_delete_hook_that_refuses_keeps_the_row_and_fires_nothing(
    served: Served, make_user: MakeUser
) -> None:
    owner = await make_user()
    pinned = (
        await served.client.post("/api/v1/hk_busy", json={"title": "pinned"}, headers=owner.headers)
    ).json()
    served.events.clear()
    r = await served.client.delete(f"/api/v1/hk_busy/{pinned['data']['id']}", headers=owner.headers)
    assert r.status_code == 403
    assert r.json()["code"] == "forbidden"
    assert await _count(served, "hk_busy", owner) == 1
    assert served.fired() == []


def test_a_hook_must_take_keyword_arguments() -> None:
    async def positional(ctx: Any, data: Any, extra: Any) -> None:
        return None

    def not_async(*, ctx: Any, data: Any) -> None:
        return None

    with pytest.raises(TypeError, match="keyword arguments ctx, data"):
        Hooks(before_create=positional)
    with pytest.raises(TypeError, match="async"):
        Hooks(before_create=not_async)
