"""Object-level access control of the demo app, as a table: every projects/tasks/members route, called by
a stranger, a viewer member, an editor member, the owner and an admin (API.md "Resources").

Not visible → 404 that reveals nothing (the body equals the one for a random id, apart from request_id);
visible but not writable → 403; lists and totals never count invisible rows. Each scenario also checks
the events: a successful write writes exactly one event of its type with the caller as actor, anything
else writes none.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from rampart.app import Rampart
from tests.conftest import MakeUser, User

API = "/api/v1"
CALLERS = ("stranger", "viewer", "editor", "owner", "admin")


@dataclass
class World:
    """Project P of `owner` (members: viewer, editor, extra as viewer) with task T, and project Q of
    `extra` with task U that none of the callers but the admin may see. Names carry a unique marker."""

    users: dict[str, User]
    marker: str
    ids: dict[str, str] = field(default_factory=dict)

    def fill(self, value: Any, **extra: str) -> Any:
        subs = {**self.ids, "marker": self.marker, **extra}
        if isinstance(value, str):
            return value.format(**subs)
        if isinstance(value, dict):
            return {k: self.fill(v, **extra) for k, v in value.items()}
        return value


async def _created(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


@pytest.fixture
async def world(client: httpx.AsyncClient, make_user: MakeUser) -> World:
    users = {
        name: await make_user() for name in ("stranger", "viewer", "editor", "owner", "extra", "newcomer")
    }
    users["admin"] = await make_user("admin")
    w = World(users, marker=uuid.uuid4().hex[:12])
    owner, extra = users["owner"].headers, users["extra"].headers
    p = await _created(await client.post(f"{API}/projects", json={"name": f"P {w.marker}"}, headers=owner))
    w.ids["project"] = p["id"]
    for name, role in (("viewer", "viewer"), ("editor", "editor"), ("extra", "viewer")):
        body = {"user_id": users[name].id, "role": role}
        m = await _created(await client.post(f"{API}/projects/{p['id']}/members", json=body, headers=owner))
        w.ids[f"{name}_member"] = m["id"]
    body = {"project_id": p["id"], "title": f"T {w.marker}"}
    w.ids["task"] = (await _created(await client.post(f"{API}/tasks", json=body, headers=owner)))["id"]
    q = await _created(await client.post(f"{API}/projects", json={"name": f"Q {w.marker}"}, headers=extra))
    w.ids["other_project"] = q["id"]
    body = {"project_id": q["id"], "title": f"U {w.marker}"}
    w.ids["other_task"] = (await _created(await client.post(f"{API}/tasks", json=body, headers=extra)))["id"]
    w.ids["extra"] = users["extra"].id
    w.ids["newcomer"] = users["newcomer"].id
    return w


async def events_by(app: Rampart, actor: User) -> list[tuple[str, str]]:
    rows = await app.services.db.fetch(
        "SELECT type, resource_id FROM events WHERE actor_id = $1 ORDER BY id", uuid.UUID(actor.id)
    )
    return [(r["type"], r["resource_id"]) for r in rows]


async def events_of(app: Rampart, resource_id: str) -> list[tuple[str, str, str]]:
    rows = await app.services.db.fetch(
        "SELECT type, resource_id, actor_id FROM events WHERE resource_id = $1 ORDER BY id", resource_id
    )
    return [(r["type"], r["resource_id"], str(r["actor_id"])) for r in rows]


def without_request_id(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "request_id"}


def by_caller(stranger: int, viewer: int, editor: int, owner: int, admin: int) -> dict[str, int]:
    return dict(zip(CALLERS, (stranger, viewer, editor, owner, admin), strict=True))


@dataclass(frozen=True)
class Scenario:
    name: str
    method: str
    path: str
    body: dict[str, Any] | None
    expect: dict[str, int]
    event: str | None = None  # the event a success writes
    target: str | None = None  # the ids key of the object written (None: the created one)
    ghost: str | None = None  # the ids key a random uuid replaces to get the "does not exist" answer
    check: str | None = None  # a URL whose item must be gone (delete) or changed (update) afterwards


SCENARIOS = [
    # projects: visible to owner, members, admins; only the owner (or an admin) changes or deletes
    Scenario(
        "projects.get",
        "GET",
        "/projects/{project}",
        None,
        by_caller(404, 200, 200, 200, 200),
        ghost="project",
    ),
    Scenario(
        "projects.create",
        "POST",
        "/projects",
        {"name": "New {marker}"},
        by_caller(201, 201, 201, 201, 201),
        event="projects.created",
    ),
    Scenario(
        "projects.update",
        "PATCH",
        "/projects/{project}",
        {"name": "Renamed {marker}"},
        by_caller(404, 403, 403, 200, 200),
        event="projects.updated",
        target="project",
        ghost="project",
        check="/projects/{project}",
    ),
    Scenario(
        "projects.delete",
        "DELETE",
        "/projects/{project}",
        None,
        by_caller(404, 403, 403, 204, 204),
        event="projects.deleted",
        target="project",
        ghost="project",
        check="/projects/{project}",
    ),
    # tasks: visible with their project; editors and the owner write them
    Scenario("tasks.get", "GET", "/tasks/{task}", None, by_caller(404, 200, 200, 200, 200), ghost="task"),
    Scenario(
        "tasks.create",
        "POST",
        "/tasks",
        {"project_id": "{project}", "title": "New {marker}"},
        by_caller(422, 422, 201, 201, 201),
        event="tasks.created",
        ghost="project",
    ),
    Scenario(
        "tasks.update",
        "PATCH",
        "/tasks/{task}",
        {"status": "done", "priority": 4},
        by_caller(404, 403, 200, 200, 200),
        event="tasks.updated",
        target="task",
        ghost="task",
        check="/tasks/{task}",
    ),
    Scenario(
        "tasks.delete",
        "DELETE",
        "/tasks/{task}",
        None,
        by_caller(404, 403, 204, 204, 204),
        event="tasks.deleted",
        target="task",
        ghost="task",
        check="/tasks/{task}",
    ),
    # members: listed to whoever sees the project; managed by the owner and admins
    Scenario(
        "members.list",
        "GET",
        "/projects/{project}/members",
        None,
        by_caller(404, 200, 200, 200, 200),
        ghost="project",
    ),
    Scenario(
        "members.create",
        "POST",
        "/projects/{project}/members",
        {"user_id": "{newcomer}", "role": "editor"},
        by_caller(404, 403, 403, 201, 201),
        event="members.created",
        ghost="project",
    ),
    Scenario(
        "members.delete",
        "DELETE",
        "/projects/{project}/members/{extra}",
        None,
        by_caller(404, 403, 403, 204, 204),
        event="members.deleted",
        target="extra_member",
        ghost="project",
    ),
]


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
async def test_access_matrix(
    client: httpx.AsyncClient, app: Rampart, world: World, scenario: Scenario, caller: str
) -> None:
    user = world.users[caller]
    before = await events_by(app, user)
    expected = scenario.expect[caller]

    r = await client.request(
        scenario.method, API + world.fill(scenario.path), json=world.fill(scenario.body), headers=user.headers
    )

    assert r.status_code == expected, r.text
    new_events = (await events_by(app, user))[len(before) :]
    success = expected < 400
    if not success or scenario.event is None:
        assert new_events == [], "a refused write or a read wrote an event"
    if expected == 403:
        assert r.json()["code"] == "forbidden"
    if expected in (404, 422) and scenario.ghost:
        # the answer must be exactly the one for an id that does not exist at all
        assert r.json()["code"] == ("not_found" if expected == 404 else "validation_failed")
        ghost = await client.request(
            scenario.method,
            API + world.fill(scenario.path, **{scenario.ghost: str(uuid.uuid4())}),
            json=world.fill(scenario.body, **{scenario.ghost: str(uuid.uuid4())}),
            headers=user.headers,
        )
        assert ghost.status_code == expected
        assert without_request_id(r.json()) == without_request_id(ghost.json())
    if expected == 422:
        assert [e["field"] for e in r.json()["errors"]] == ["project_id"]

    db = app.services.db
    if scenario.name == "tasks.create" and not success:
        assert await db.fetchval("SELECT count(*) FROM tasks WHERE title = $1", f"New {world.marker}") == 0
    if scenario.name == "members.create" and not success:
        newcomer = uuid.UUID(world.ids["newcomer"])
        assert await db.fetchval("SELECT count(*) FROM project_members WHERE user_id = $1", newcomer) == 0
    owner = world.users["owner"].headers
    if scenario.target is not None and not success:
        # the object is untouched
        if scenario.check:
            still = await client.get(API + world.fill(scenario.check), headers=owner)
            assert still.status_code == 200
            assert still.json()["data"]["version"] == 1
        else:
            listed = await client.get(
                API + world.fill("/projects/{project}/members?user_id={extra}"), headers=owner
            )
            assert len(listed.json()["data"]) == 1
    if success and scenario.event is not None:
        resource_id = world.ids[scenario.target] if scenario.target else r.json()["data"]["id"]
        # The change's own event comes last; a project's delete first writes one per cascaded row.
        assert new_events[-1] == (scenario.event, resource_id)
        cascaded = {event for event, _ in new_events[:-1]}
        assert cascaded <= (
            {"tasks.deleted", "members.deleted"} if scenario.event == "projects.deleted" else set()
        )
        own = [e for e in await events_of(app, resource_id) if e[0] == scenario.event]

        assert own == [(scenario.event, resource_id, user.id)]
        if scenario.method == "POST":
            assert r.headers["location"].startswith(API)
            assert r.headers["location"].endswith(r.json()["data"].get("user_id") or resource_id)
        if scenario.check:
            after = await client.get(API + world.fill(scenario.check), headers=owner)
            if scenario.method == "DELETE":
                assert after.status_code == 404
            else:
                assert after.json()["data"]["version"] == 2
        if scenario.name == "members.delete":
            # the removed member lost access at once
            extra = world.users["extra"].headers
            assert (
                await client.get(API + world.fill("/projects/{project}"), headers=extra)
            ).status_code == 404
            assert (await client.get(API + world.fill("/tasks/{task}"), headers=extra)).status_code == 404


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize(
    ("url", "visible"),
    [
        # the ids keys each caller must see, exactly; P and T are visible to members, Q and U only to admins
        ("/projects?name[contains]={marker}", by_caller(0, 1, 1, 1, 2)),
        ("/tasks?title[contains]={marker}", by_caller(0, 1, 1, 1, 2)),
        ("/tasks?project_id={project}", by_caller(0, 1, 1, 1, 1)),
        ("/tasks?project_id[in]={project},{other_project}", by_caller(0, 1, 1, 1, 2)),
        ("/tasks?project_id={other_project}", by_caller(0, 0, 0, 0, 1)),
        ("/projects?id={other_project}", by_caller(0, 0, 0, 0, 1)),
    ],
    ids=[
        "projects_by_name",
        "tasks_by_title",
        "tasks_of_p",
        "tasks_of_p_or_q",
        "tasks_of_q",
        "project_q_by_id",
    ],
)
async def test_lists_and_totals_count_only_visible_rows(
    client: httpx.AsyncClient, world: World, caller: str, url: str, visible: dict[str, int]
) -> None:
    user = world.users[caller]
    r = await client.get(API + world.fill(url) + "&include_total=true", headers=user.headers)
    assert r.status_code == 200, r.text
    page = r.json()
    assert page["meta"]["total"] == visible[caller] == len(page["data"])
    mine = {world.ids["project"], world.ids["task"]}
    for item in page["data"]:
        if caller != "admin":
            assert item["id"] in mine
    # a page of one must not hint at invisible rows through its cursor
    r = await client.get(API + world.fill(url) + "&limit=1", headers=user.headers)
    assert (r.json()["meta"]["next_cursor"] is not None) is (visible[caller] > 1)


@pytest.mark.parametrize("caller", ["stranger", "viewer"])
async def test_unfiltered_lists_hold_only_what_the_caller_may_see(
    client: httpx.AsyncClient, world: World, caller: str
) -> None:
    user = world.users[caller]
    expected = {"stranger": ([], []), "viewer": ([world.ids["project"]], [world.ids["task"]])}[caller]
    for url, ids in zip(("/projects", "/tasks"), expected, strict=True):
        r = await client.get(f"{API}{url}?include_total=true&limit=100", headers=user.headers)
        assert r.status_code == 200
        assert [item["id"] for item in r.json()["data"]] == ids
        assert r.json()["meta"]["total"] == len(ids)


@pytest.mark.parametrize("caller", CALLERS)
async def test_member_list_contents(client: httpx.AsyncClient, world: World, caller: str) -> None:
    r = await client.get(
        API + world.fill("/projects/{project}/members?include_total=true"),
        headers=world.users[caller].headers,
    )
    if caller == "stranger":
        assert r.status_code == 404
        return
    assert r.status_code == 200
    members = {m["user_id"]: m["role"] for m in r.json()["data"]}
    users = world.users
    assert members == {
        users["viewer"].id: "viewer",
        users["editor"].id: "editor",
        users["extra"].id: "viewer",
    }
    assert r.json()["meta"]["total"] == 3
    # Q has no members; filtering P's members by a user of no membership gives nothing, not Q's rows
    r = await client.get(
        API + world.fill("/projects/{project}/members?user_id={newcomer}"),
        headers=world.users[caller].headers,
    )
    assert r.json()["data"] == []


@pytest.mark.parametrize("caller", ["stranger", "viewer", "editor"])
async def test_invisible_project_stays_invisible_through_every_route(
    client: httpx.AsyncClient, app: Rampart, world: World, caller: str
) -> None:
    """Project Q is not theirs and they are not members: every route answers as if it did not exist."""
    user = world.users[caller]
    q, u = world.ids["other_project"], world.ids["other_task"]
    requests = [
        ("GET", f"/projects/{q}", None),
        ("PATCH", f"/projects/{q}", {"name": "mine now"}),
        ("DELETE", f"/projects/{q}", None),
        ("GET", f"/tasks/{u}", None),
        ("PATCH", f"/tasks/{u}", {"title": "mine now"}),
        ("DELETE", f"/tasks/{u}", None),
        ("GET", f"/projects/{q}/members", None),
        ("POST", f"/projects/{q}/members", {"user_id": user.id, "role": "editor"}),
        ("DELETE", f"/projects/{q}/members/{world.ids['extra']}", None),
    ]
    for method, path, body in requests:
        r = await client.request(method, API + path, json=body, headers=user.headers)
        ghost_path = path.replace(q, str(uuid.uuid4())).replace(u, str(uuid.uuid4()))
        ghost = await client.request(method, API + ghost_path, json=body, headers=user.headers)
        assert r.status_code == ghost.status_code == 404, (method, path, r.text)
        assert without_request_id(r.json()) == without_request_id(ghost.json())
        # conditional headers change nothing either
        r = await client.request(
            method, API + path, json=body, headers={**user.headers, "If-Match": '"1"', "If-None-Match": '"1"'}
        )
        assert r.status_code == 404
    r = await client.post(f"{API}/tasks", json={"project_id": q, "title": "sneaky"}, headers=user.headers)
    assert r.status_code == 422
    assert await events_by(app, user) == []
    assert [e[0] for e in await events_of(app, q)] == ["projects.created"]
    assert [e[0] for e in await events_of(app, u)] == ["tasks.created"]


@pytest.mark.parametrize("caller", ["editor", "owner", "admin"])
async def test_refused_writes_write_no_event(
    client: httpx.AsyncClient, app: Rampart, world: World, caller: str
) -> None:
    """412 and 422 on objects the caller may change: nothing changes and no event is written."""
    user = world.users[caller]
    task, project = world.fill("/tasks/{task}"), world.fill("/projects/{project}")
    attempts: list[tuple[str, str, Any, dict[str, str], int]] = [
        ("PATCH", task, {"status": "done"}, {"If-Match": '"7"'}, 412),
        ("DELETE", task, None, {"If-Match": '"7"'}, 412),
        ("PATCH", task, {"status": "finished"}, {}, 422),
        ("PATCH", task, {"priority": "3"}, {}, 422),
        ("PATCH", task, {"project_id": world.ids["other_project"]}, {}, 422),
        ("PATCH", task, {"owner_id": user.id}, {}, 422),
        ("PATCH", task, {"version": 9}, {}, 422),
        ("POST", "/tasks", {"project_id": world.ids["project"], "title": ""}, {}, 422),
        ("POST", "/tasks", {"project_id": world.ids["project"], "title": "x", "owner_id": user.id}, {}, 422),
        # taking a project over by mass assignment is refused before anything else
        ("PATCH", project, {"owner_id": user.id}, {}, 422),
        ("PATCH", project, {"id": str(uuid.uuid4())}, {}, 422),
    ]
    if caller != "editor":
        attempts += [
            ("PATCH", project, {"name": "x"}, {"If-Match": '"2"'}, 412),
            ("DELETE", project, None, {"If-Match": '"2"'}, 412),
            ("PATCH", project, {"name": ""}, {}, 422),
        ]
    before = await events_by(app, user)
    for method, path, body, extra, status in attempts:
        r = await client.request(method, API + path, json=body, headers={**user.headers, **extra})
        assert r.status_code == status, (method, path, body, r.text)
    assert await events_by(app, user) == before
    for path in (task, project):
        r = await client.get(API + path, headers=user.headers)
        assert r.json()["data"]["version"] == 1
        assert r.json()["data"]["owner_id"] == world.users["owner"].id


MARK = "\x00bad\x00"


@pytest.mark.parametrize(
    "bad",
    [
        "not-a-uuid",
        "1",
        "0",
        "{hex}",
        "{braced}",
        "urn:uuid:{uuid}",
        "{uuid}x",
        "x{uuid}",
        "{uuid} ",
        "' OR '1'='1",
        "ab" * 300,
        "%00",
        "\u0661" * 8,
    ],
    ids=[
        "word",
        "one",
        "zero",
        "hex",
        "braced",
        "urn",
        "suffix",
        "prefix",
        "space",
        "sql",
        "long",
        "nul",
        "arabic_digits",
    ],
)
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/projects/{bad}", None),
        ("PATCH", "/projects/{bad}", {"name": "x"}),
        ("DELETE", "/projects/{bad}", None),
        ("GET", "/tasks/{bad}", None),
        ("PATCH", "/tasks/{bad}", {"title": "x"}),
        ("DELETE", "/tasks/{bad}", None),
        ("GET", "/projects/{bad}/members", None),
        ("POST", "/projects/{bad}/members", {"user_id": "{extra}", "role": "viewer"}),
        ("DELETE", "/projects/{bad}/members/{extra}", None),
        ("DELETE", "/projects/{project}/members/{bad}", None),
    ],
)
async def test_malformed_id_in_path_is_404(
    client: httpx.AsyncClient, app: Rampart, world: World, method: str, path: str, body: Any, bad: str
) -> None:
    project = world.ids["project"]
    bad = bad.format(hex=uuid.UUID(project).hex, braced="{" + project + "}", uuid=project)
    url = API + world.fill(path, bad=MARK).replace(MARK, bad)
    for caller in ("owner", "admin"):  # callers who would succeed with the well-formed id
        user = world.users[caller]
        before = await events_by(app, user)
        r = await client.request(method, url, json=world.fill(body), headers=user.headers)
        assert r.status_code == 404, (caller, r.text)
        assert r.json()["code"] == "not_found"
        assert await events_by(app, user) == before
        # the same answer as for a well-formed id that names nothing
        ghost = await client.request(
            method, API + world.fill(path, bad=str(uuid.uuid4())), json=world.fill(body), headers=user.headers
        )
        assert without_request_id(r.json()) == without_request_id(ghost.json())
