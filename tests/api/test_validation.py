"""Body validation on POST/PATCH of tasks and projects, end to end (API.md "Resources").

Every invalid body is a 422 `validation_failed` with exactly one `errors` entry per bad field; a body
that is not JSON is a 400; a referenced project the caller may not use looks exactly like a missing one.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rampart.app import Rampart
from tests.conftest import User, new_user

TASKS = "/api/v1/tasks"
PROJECTS = "/api/v1/projects"
DROP = object()  # in a scenario: leave this key out of the base body
A_UUID = "0190a6d2-7c1e-7b4a-9a31-6f2f8d1c2e3b"


@dataclass
class World:
    alice: User  # owns `project`, is a viewer of `viewed`
    bob: User  # owns `hidden`
    project: dict[str, Any]
    hidden: dict[str, Any]
    viewed: dict[str, Any]
    task: dict[str, Any]  # a task of `project` that only failing requests touch
    alice_project: dict[str, Any]  # a project of alice's that only failing requests touch


async def created(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


@pytest.fixture(scope="module")
async def world(app: Rampart, client: httpx.AsyncClient) -> World:
    alice, bob, carol = [await new_user(app) for _ in range(3)]
    project = await created(await client.post(PROJECTS, json={"name": "mine"}, headers=alice.headers))
    hidden = await created(await client.post(PROJECTS, json={"name": "bob's"}, headers=bob.headers))
    viewed = await created(await client.post(PROJECTS, json={"name": "carol's"}, headers=carol.headers))
    r = await client.post(
        f"{PROJECTS}/{viewed['id']}/members",
        json={"user_id": alice.id, "role": "viewer"},
        headers=carol.headers,
    )
    assert r.status_code == 201, r.text
    task = await created(
        await client.post(TASKS, json={"project_id": project["id"], "title": "keep"}, headers=alice.headers)
    )
    untouched = await created(await client.post(PROJECTS, json={"name": "untouched"}, headers=alice.headers))
    return World(alice, bob, project, hidden, viewed, task, untouched)


def with_changes(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    body = {**base, **changes}
    return {k: v for k, v in body.items() if v is not DROP}


def assert_422(r: httpx.Response, expected: set[tuple[str, str]]) -> None:
    """A validation problem whose errors are exactly `expected` (field, code) pairs, one entry each."""
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == "validation_failed"
    assert body["status"] == 422
    pairs = [(e["field"], e["code"]) for e in body["errors"]]
    assert len(pairs) == len(set(pairs)), "one entry per bad field"
    assert set(pairs) == expected
    assert all(isinstance(e["message"], str) and e["message"] for e in body["errors"])


# ----- POST /tasks -----------------------------------------------------------------------------------------

TASK_CREATE_INVALID: list[tuple[str, dict[str, Any], set[tuple[str, str]]]] = [
    # required fields
    (
        "empty object",
        {"project_id": DROP, "title": DROP},
        {("project_id", "required"), ("title", "required")},
    ),
    ("no title", {"title": DROP}, {("title", "required")}),
    ("no project_id", {"project_id": DROP}, {("project_id", "required")}),
    ("empty title", {"title": ""}, {("title", "required")}),
    # lengths
    ("title of 201", {"title": "x" * 201}, {("title", "too_long")}),
    ("title of 201 non-ASCII", {"title": "\u00e9" * 201}, {("title", "too_long")}),
    ("description of 10001", {"description": "x" * 10_001}, {("description", "too_long")}),
    # strict JSON types for strings
    ("title a number", {"title": 5}, {("title", "invalid_type")}),
    ("title an object", {"title": {"text": "x"}}, {("title", "invalid_type")}),
    ("title an array", {"title": ["x"]}, {("title", "invalid_type")}),
    ("title true", {"title": True}, {("title", "invalid_type")}),
    ("title with NUL", {"title": "a\x00b"}, {("title", "invalid_characters")}),
    ("description a number", {"description": 1.5}, {("description", "invalid_type")}),
    # strict JSON types for integers, and range
    ("priority a string", {"priority": "3"}, {("priority", "invalid_type")}),
    ("priority true", {"priority": True}, {("priority", "invalid_type")}),
    ("priority false", {"priority": False}, {("priority", "invalid_type")}),
    ("priority 1.5", {"priority": 1.5}, {("priority", "invalid_type")}),
    ("priority 3.0", {"priority": 3.0}, {("priority", "invalid_type")}),
    ("priority an array", {"priority": [3]}, {("priority", "invalid_type")}),
    ("priority -1", {"priority": -1}, {("priority", "too_small")}),
    ("priority 6", {"priority": 6}, {("priority", "too_large")}),
    ("priority 2**40", {"priority": 2**40}, {("priority", "too_large")}),
    ("priority -(2**63)", {"priority": -(2**63)}, {("priority", "too_small")}),
    # enum
    ("status TODO", {"status": "TODO"}, {("status", "invalid_choice")}),
    ("status empty", {"status": ""}, {("status", "invalid_choice")}),
    ("status a number", {"status": 1}, {("status", "invalid_choice")}),
    ("status an array", {"status": ["todo"]}, {("status", "invalid_choice")}),
    # dates
    ("due_date 2026-02-30", {"due_date": "2026-02-30"}, {("due_date", "invalid_date")}),
    ("due_date 2025-02-29", {"due_date": "2025-02-29"}, {("due_date", "invalid_date")}),
    ("due_date 26-1-1", {"due_date": "26-1-1"}, {("due_date", "invalid_date")}),
    ("due_date 2026-1-1", {"due_date": "2026-1-1"}, {("due_date", "invalid_date")}),
    ("due_date a timestamp", {"due_date": "2026-01-01T00:00:00Z"}, {("due_date", "invalid_date")}),
    ("due_date a number", {"due_date": 20260101}, {("due_date", "invalid_date")}),
    ("due_date empty", {"due_date": ""}, {("due_date", "invalid_date")}),
    ("due_date year 0", {"due_date": "0000-01-01"}, {("due_date", "invalid_date")}),
    # ids
    ("project_id not a uuid", {"project_id": "nope"}, {("project_id", "invalid_id")}),
    ("project_id a number", {"project_id": 123}, {("project_id", "invalid_id")}),
    ("project_id in braces", {"project_id": "{" + A_UUID + "}"}, {("project_id", "invalid_id")}),
    ("project_id without dashes", {"project_id": A_UUID.replace("-", "")}, {("project_id", "invalid_id")}),
    ("assignee_id not a uuid", {"assignee_id": "bob"}, {("assignee_id", "invalid_id")}),
    # null where the field is not nullable
    ("title null", {"title": None}, {("title", "null_not_allowed")}),
    ("project_id null", {"project_id": None}, {("project_id", "null_not_allowed")}),
    ("priority null", {"priority": None}, {("priority", "null_not_allowed")}),
    ("status null", {"status": None}, {("status", "null_not_allowed")}),
    ("description null", {"description": None}, {("description", "null_not_allowed")}),
    # no mass assignment: unknown and server-owned fields
    ("unknown field", {"colour": "red"}, {("colour", "unknown_field")}),
    ("field in another case", {"Title": "x"}, {("Title", "unknown_field")}),
    ("empty field name", {"": 1}, {("", "unknown_field")}),
    ("id", {"id": A_UUID}, {("id", "read_only")}),
    ("owner_id", {"owner_id": A_UUID}, {("owner_id", "read_only")}),
    ("created_at", {"created_at": "2026-01-01T00:00:00Z"}, {("created_at", "read_only")}),
    ("updated_at", {"updated_at": "2026-01-01T00:00:00Z"}, {("updated_at", "read_only")}),
    ("version", {"version": 7}, {("version", "read_only")}),
    # every bad field is reported, not only the first
    (
        "six bad fields",
        {"title": "", "priority": "3", "status": "nope", "due_date": "2026-02-30", "id": A_UUID, "extra": 1},
        {
            ("title", "required"),
            ("priority", "invalid_type"),
            ("status", "invalid_choice"),
            ("due_date", "invalid_date"),
            ("id", "read_only"),
            ("extra", "unknown_field"),
        },
    ),
    (
        "missing and wrong",
        {"project_id": DROP, "title": DROP, "priority": 9, "version": 1},
        {
            ("project_id", "required"),
            ("title", "required"),
            ("priority", "too_large"),
            ("version", "read_only"),
        },
    ),
]


@pytest.mark.parametrize(
    ("changes", "errors"), [c[1:] for c in TASK_CREATE_INVALID], ids=[c[0] for c in TASK_CREATE_INVALID]
)
async def test_invalid_task_is_422_with_one_entry_per_bad_field(
    client: httpx.AsyncClient, world: World, changes: dict[str, Any], errors: set[tuple[str, str]]
) -> None:
    base = {"project_id": world.project["id"], "title": "ok"}
    r = await client.post(TASKS, json=with_changes(base, changes), headers=world.alice.headers)
    assert_422(r, errors)


TASK_CREATE_VALID: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "defaults",
        {},
        {
            "description": "",
            "status": "todo",
            "priority": 0,
            "due_date": None,
            "assignee_id": None,
            "version": 1,
        },
    ),
    ("one-character title", {"title": "x"}, {"title": "x"}),
    ("200-character title", {"title": "t" * 200}, {"title": "t" * 200}),
    ("200 non-ASCII characters", {"title": "\U0001f642" * 200}, {"title": "\U0001f642" * 200}),
    ("10000-character description", {"description": "d" * 10_000}, {"description": "d" * 10_000}),
    ("priority 0", {"priority": 0}, {"priority": 0}),
    ("priority 5", {"priority": 5}, {"priority": 5}),
    ("status done", {"status": "done"}, {"status": "done"}),
    ("status in_progress", {"status": "in_progress"}, {"status": "in_progress"}),
    ("leap day", {"due_date": "2028-02-29"}, {"due_date": "2028-02-29"}),
    ("due_date null", {"due_date": None}, {"due_date": None}),
    ("assignee_id null", {"assignee_id": None}, {"assignee_id": None}),
]


@pytest.mark.parametrize(
    ("changes", "expected"), [c[1:] for c in TASK_CREATE_VALID], ids=[c[0] for c in TASK_CREATE_VALID]
)
async def test_valid_task_is_created(
    client: httpx.AsyncClient, world: World, changes: dict[str, Any], expected: dict[str, Any]
) -> None:
    base = {"project_id": world.project["id"], "title": "ok"}
    r = await client.post(TASKS, json=with_changes(base, changes), headers=world.alice.headers)
    data = await created(r)
    assert {k: data[k] for k in expected} == expected
    assert data["owner_id"] == world.alice.id
    assert data["project_id"] == world.project["id"]


async def test_assignee_may_be_any_existing_user(client: httpx.AsyncClient, world: World) -> None:
    body = {"project_id": world.project["id"], "title": "for bob", "assignee_id": world.bob.id}
    data = await created(await client.post(TASKS, json=body, headers=world.alice.headers))
    assert data["assignee_id"] == world.bob.id


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_assignee_that_does_not_exist_is_422(
    client: httpx.AsyncClient, world: World, method: str
) -> None:
    if method == "POST":
        body = {"project_id": world.project["id"], "title": "x", "assignee_id": str(uuid.uuid4())}
        r = await client.post(TASKS, json=body, headers=world.alice.headers)
    else:
        r = await client.patch(
            f"{TASKS}/{world.task['id']}",
            json={"assignee_id": str(uuid.uuid4())},
            headers=world.alice.headers,
        )
    assert_422(r, {("assignee_id", "not_found")})


async def test_project_the_caller_cannot_use_looks_exactly_like_a_missing_one(
    client: httpx.AsyncClient, world: World
) -> None:
    bodies = {}
    for name, project_id in [
        ("does not exist", str(uuid.uuid4())),
        ("another user's", world.hidden["id"]),
        ("viewer only", world.viewed["id"]),
    ]:
        r = await client.post(
            TASKS, json={"project_id": project_id, "title": "x"}, headers=world.alice.headers
        )
        assert_422(r, {("project_id", "not_found")})
        body = r.json()
        assert body.pop("request_id") == r.headers["x-request-id"]
        bodies[name] = body
    assert bodies["another user's"] == bodies["does not exist"]
    assert bodies["viewer only"] == bodies["does not exist"]


async def test_an_admin_may_use_any_project(client: httpx.AsyncClient, world: World, admin: User) -> None:
    data = await created(
        await client.post(TASKS, json={"project_id": world.hidden["id"], "title": "x"}, headers=admin.headers)
    )
    assert data["project_id"] == world.hidden["id"]


# ----- PATCH /tasks/{id} -----------------------------------------------------------------------------------

TASK_UPDATE_INVALID: list[tuple[str, dict[str, Any], set[tuple[str, str]]]] = [
    ("priority a string", {"priority": "3"}, {("priority", "invalid_type")}),
    ("priority true", {"priority": True}, {("priority", "invalid_type")}),
    ("priority 6", {"priority": 6}, {("priority", "too_large")}),
    ("title null", {"title": None}, {("title", "null_not_allowed")}),
    ("title empty", {"title": ""}, {("title", "required")}),
    ("title of 201", {"title": "x" * 201}, {("title", "too_long")}),
    ("title an object", {"title": {}}, {("title", "invalid_type")}),
    ("status DONE", {"status": "DONE"}, {("status", "invalid_choice")}),
    ("status null", {"status": None}, {("status", "null_not_allowed")}),
    ("due_date 2026-02-30", {"due_date": "2026-02-30"}, {("due_date", "invalid_date")}),
    ("assignee_id not a uuid", {"assignee_id": 7}, {("assignee_id", "invalid_id")}),
    ("project_id (immutable)", {"project_id": A_UUID}, {("project_id", "immutable")}),
    ("project_id null", {"project_id": None}, {("project_id", "immutable")}),
    ("id", {"id": A_UUID}, {("id", "read_only")}),
    ("owner_id", {"owner_id": A_UUID}, {("owner_id", "read_only")}),
    ("created_at", {"created_at": "2026-01-01T00:00:00Z"}, {("created_at", "read_only")}),
    ("updated_at", {"updated_at": "2026-01-01T00:00:00Z"}, {("updated_at", "read_only")}),
    ("version", {"version": 2}, {("version", "read_only")}),
    ("unknown field", {"colour": "red"}, {("colour", "unknown_field")}),
    (
        "unknown, server-owned and badly typed at once",
        {"bogus": 1, "priority": "3", "version": 5, "title": None},
        {
            ("bogus", "unknown_field"),
            ("priority", "invalid_type"),
            ("version", "read_only"),
            ("title", "null_not_allowed"),
        },
    ),
]


@pytest.mark.parametrize(
    ("body", "errors"), [c[1:] for c in TASK_UPDATE_INVALID], ids=[c[0] for c in TASK_UPDATE_INVALID]
)
async def test_invalid_task_update_is_422_and_changes_nothing(
    client: httpx.AsyncClient, world: World, body: dict[str, Any], errors: set[tuple[str, str]]
) -> None:
    url = f"{TASKS}/{world.task['id']}"
    assert_422(await client.patch(url, json=body, headers=world.alice.headers), errors)
    r = await client.get(url, headers=world.alice.headers)
    assert r.status_code == 200
    assert r.json()["data"] == world.task


async def test_patch_to_the_same_project_is_still_refused(client: httpx.AsyncClient, world: World) -> None:
    r = await client.patch(
        f"{TASKS}/{world.task['id']}", json={"project_id": world.project["id"]}, headers=world.alice.headers
    )
    assert_422(r, {("project_id", "immutable")})


async def test_nullable_fields_accept_null_on_update(client: httpx.AsyncClient, world: World) -> None:
    body = {
        "project_id": world.project["id"],
        "title": "due",
        "due_date": "2026-05-01",
        "assignee_id": world.bob.id,
    }
    task = await created(await client.post(TASKS, json=body, headers=world.alice.headers))
    r = await client.patch(
        f"{TASKS}/{task['id']}", json={"due_date": None, "assignee_id": None}, headers=world.alice.headers
    )
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["due_date"] is None
    assert data["assignee_id"] is None
    assert data["version"] == 2


# ----- projects --------------------------------------------------------------------------------------------

PROJECT_CREATE_INVALID: list[tuple[str, dict[str, Any], set[tuple[str, str]]]] = [
    ("empty object", {}, {("name", "required")}),
    ("empty name", {"name": ""}, {("name", "required")}),
    ("name of 121", {"name": "n" * 121}, {("name", "too_long")}),
    ("name a number", {"name": 1}, {("name", "invalid_type")}),
    ("name an array", {"name": ["x"]}, {("name", "invalid_type")}),
    ("name null", {"name": None}, {("name", "null_not_allowed")}),
    ("description of 5001", {"name": "p", "description": "d" * 5001}, {("description", "too_long")}),
    ("description null", {"name": "p", "description": None}, {("description", "null_not_allowed")}),
    ("description an object", {"name": "p", "description": {}}, {("description", "invalid_type")}),
    ("owner_id", {"name": "p", "owner_id": A_UUID}, {("owner_id", "read_only")}),
    ("id", {"name": "p", "id": A_UUID}, {("id", "read_only")}),
    ("version", {"name": "p", "version": 1}, {("version", "read_only")}),
    ("created_at", {"name": "p", "created_at": "2026-01-01T00:00:00Z"}, {("created_at", "read_only")}),
    ("updated_at", {"name": "p", "updated_at": "2026-01-01T00:00:00Z"}, {("updated_at", "read_only")}),
    ("unknown field", {"name": "p", "members": []}, {("members", "unknown_field")}),
    (
        "everything wrong",
        {"name": 5, "description": None, "owner_id": A_UUID, "x": 1},
        {
            ("name", "invalid_type"),
            ("description", "null_not_allowed"),
            ("owner_id", "read_only"),
            ("x", "unknown_field"),
        },
    ),
]


@pytest.mark.parametrize(
    ("body", "errors"), [c[1:] for c in PROJECT_CREATE_INVALID], ids=[c[0] for c in PROJECT_CREATE_INVALID]
)
async def test_invalid_project_is_422(
    client: httpx.AsyncClient, world: World, body: dict[str, Any], errors: set[tuple[str, str]]
) -> None:
    assert_422(await client.post(PROJECTS, json=body, headers=world.alice.headers), errors)


@pytest.mark.parametrize(
    "body",
    [
        {"name": "p"},
        {"name": "n" * 120},
        {"name": "p", "description": "d" * 5000},
        {"name": "p", "description": ""},
    ],
    ids=["one character", "120 characters", "5000-character description", "empty description"],
)
async def test_valid_project_is_created(
    client: httpx.AsyncClient, world: World, body: dict[str, Any]
) -> None:
    data = await created(await client.post(PROJECTS, json=body, headers=world.alice.headers))
    assert data["name"] == body["name"]
    assert data["description"] == body.get("description", "")
    assert data["owner_id"] == world.alice.id


PROJECT_UPDATE_INVALID: list[tuple[str, dict[str, Any], set[tuple[str, str]]]] = [
    ("name of 121", {"name": "n" * 121}, {("name", "too_long")}),
    ("name null", {"name": None}, {("name", "null_not_allowed")}),
    ("name empty", {"name": ""}, {("name", "required")}),
    ("owner_id", {"owner_id": A_UUID}, {("owner_id", "read_only")}),
    ("version", {"version": 9}, {("version", "read_only")}),
    ("id", {"id": A_UUID}, {("id", "read_only")}),
    ("unknown and bad", {"colour": 1, "name": 2}, {("colour", "unknown_field"), ("name", "invalid_type")}),
]


@pytest.mark.parametrize(
    ("body", "errors"), [c[1:] for c in PROJECT_UPDATE_INVALID], ids=[c[0] for c in PROJECT_UPDATE_INVALID]
)
async def test_invalid_project_update_is_422_and_changes_nothing(
    client: httpx.AsyncClient, world: World, body: dict[str, Any], errors: set[tuple[str, str]]
) -> None:
    url = f"{PROJECTS}/{world.alice_project['id']}"
    assert_422(await client.patch(url, json=body, headers=world.alice.headers), errors)
    r = await client.get(url, headers=world.alice.headers)
    assert r.status_code == 200
    assert r.json()["data"] == world.alice_project


# ----- bodies that are not a JSON object, or not JSON ------------------------------------------------------


def _targets(world: World) -> dict[str, tuple[str, str]]:
    return {
        "POST tasks": ("POST", TASKS),
        "PATCH task": ("PATCH", f"{TASKS}/{world.task['id']}"),
        "POST projects": ("POST", PROJECTS),
        "PATCH project": ("PATCH", f"{PROJECTS}/{world.alice_project['id']}"),
    }


TARGETS = ["POST tasks", "PATCH task", "POST projects", "PATCH project"]
NOT_OBJECTS = ["[]", '[{"name": "p", "title": "t"}]', '"a string"', "3", "-1.5", "true", "null"]
NOT_JSON = [
    "{",
    '{"title": }',
    "{'title': 'x'}",
    '{"title": "x",}',
    '{"title": "x"} {"title": "y"}',
    "NaN",
    "1e400",
    '{"title": "\\ud800"}',
    "[" * 2000 + "]" * 2000,
    "\ufeff{}",
]


@pytest.mark.parametrize("raw", NOT_OBJECTS)
@pytest.mark.parametrize("target", TARGETS)
async def test_a_body_that_is_not_an_object_is_422(
    client: httpx.AsyncClient, world: World, target: str, raw: str
) -> None:
    method, url = _targets(world)[target]
    headers = {**world.alice.headers, "Content-Type": "application/json"}
    r = await client.request(method, url, content=raw.encode(), headers=headers)
    assert_422(r, {("", "invalid_type")})  # "": the whole body (a JSON Pointer)


@pytest.mark.parametrize("raw", [*NOT_JSON, b"\xff\xfe", b'{"title": "\xc3"}'], ids=repr)
@pytest.mark.parametrize("target", TARGETS)
async def test_malformed_json_is_400(
    client: httpx.AsyncClient, world: World, target: str, raw: str | bytes
) -> None:
    method, url = _targets(world)[target]
    headers = {**world.alice.headers, "Content-Type": "application/json"}
    content = raw.encode() if isinstance(raw, str) else raw
    r = await client.request(method, url, content=content, headers=headers)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "malformed_json"


@pytest.mark.parametrize("target", TARGETS)
async def test_an_empty_json_body_is_400(client: httpx.AsyncClient, world: World, target: str) -> None:
    method, url = _targets(world)[target]
    r = await client.request(
        method, url, content=b"", headers={**world.alice.headers, "Content-Type": "application/json"}
    )
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "malformed_json"


# ----- property: no JSON body makes a 5xx ------------------------------------------------------------------

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(
        ["2026-02-29", "2028-02-29", "9999-12-31", "0001-01-01", A_UUID, "todo", "done", "", "\x00"]
    ),
)
JSON = st.recursive(
    _SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


def mostly(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually a valid value, one time in five any JSON value."""
    return st.integers(0, 4).flatmap(lambda n: JSON if n == 0 else valid)


_TEXT = st.text(st.characters(exclude_characters="\x00"), max_size=60)


def task_like(project_id: str) -> st.SearchStrategy[dict[str, Any]]:
    """Task bodies that are often valid, so that the property covers successes as well as refusals."""
    fields = st.fixed_dictionaries(
        {
            "project_id": mostly(st.just(project_id)),
            "title": mostly(st.text(st.characters(exclude_characters="\x00"), min_size=1, max_size=200)),
        },
        optional={
            "description": mostly(_TEXT),
            "status": mostly(st.sampled_from(["todo", "in_progress", "done"])),
            "priority": mostly(st.integers(min_value=0, max_value=5)),
            "due_date": mostly(st.one_of(st.none(), st.dates().map(str))),
            "assignee_id": mostly(st.one_of(st.none(), st.uuids().map(str))),
        },
    )
    extra_keys = st.one_of(
        st.sampled_from(["id", "version", "owner_id", "created_at", "colour"]), st.text(max_size=8)
    )
    extras = st.integers(0, 4).flatmap(
        lambda n: st.dictionaries(extra_keys, JSON, min_size=1, max_size=2) if n == 0 else st.just({})
    )
    return st.tuples(fields, extras).map(lambda pair: {**pair[0], **pair[1]})


def _check_response(r: httpx.Response, sent: Any, *, success: int) -> None:
    assert r.status_code in (success, 400, 422), (sent, r.text)
    if r.status_code == 422:
        body = r.json()
        assert body["code"] == "validation_failed", body
        assert body["errors"], body
        fields = {e["field"] for e in body["errors"]}
        known = {
            "project_id",
            "title",
            "description",
            "status",
            "priority",
            "due_date",
            "assignee_id",
            "",  # the body as a whole
        }
        assert fields <= known | (set(sent) if isinstance(sent, dict) else set()), body
    elif r.status_code == success:
        data = r.json()["data"]
        for key, value in sent.items():
            assert data[key] == value, (key, sent, data)


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
async def test_random_json_bodies_never_make_a_5xx(
    client: httpx.AsyncClient, world: World, data: st.DataObject
) -> None:
    body = data.draw(st.one_of(task_like(world.project["id"]), JSON), label="body")
    raw = json.dumps(body).encode()  # the standard library also writes integers beyond 64 bits
    r = await client.post(
        TASKS, content=raw, headers={**world.alice.headers, "Content-Type": "application/json"}
    )
    _check_response(r, body, success=201)


@pytest.fixture(scope="module")
async def patch_target(client: httpx.AsyncClient, world: World) -> dict[str, Any]:
    body = {"project_id": world.project["id"], "title": "fuzzed"}
    return await created(await client.post(TASKS, json=body, headers=world.alice.headers))


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
async def test_random_json_patches_never_make_a_5xx(
    client: httpx.AsyncClient, world: World, patch_target: dict[str, Any], data: st.DataObject
) -> None:
    body = data.draw(st.one_of(task_like(world.project["id"]), JSON), label="body")
    raw = json.dumps(body).encode()
    url = f"{TASKS}/{patch_target['id']}"
    r = await client.patch(
        url, content=raw, headers={**world.alice.headers, "Content-Type": "application/json"}
    )
    assert r.status_code in (200, 400, 422), (body, r.text)
    if r.status_code == 422:
        assert r.json()["code"] == "validation_failed"
        assert r.json()["errors"]


@pytest.mark.parametrize("due", ["9999-12-31", "0001-01-01", "2026-02-28"])
async def test_every_valid_date_is_stored_as_sent(client: httpx.AsyncClient, world: World, due: str) -> None:
    """asyncpg's binary codec sent the first and last dates as -infinity and infinity: they came back null."""
    body = {"project_id": world.project["id"], "title": "dated", "due_date": due}
    r = await client.post("/api/v1/tasks", json=body, headers=world.alice.headers)
    assert r.status_code == 201, r.text
    assert r.json()["data"]["due_date"] == due
    r = await client.get(f"/api/v1/tasks/{r.json()['data']['id']}", headers=world.alice.headers)
    assert r.json()["data"]["due_date"] == due
    r = await client.get(
        "/api/v1/tasks",
        params={"due_date": due, "project_id": world.project["id"]},
        headers=world.alice.headers,
    )
    assert [t["due_date"] for t in r.json()["data"]] == [due] * len(r.json()["data"])
    assert r.json()["data"]
