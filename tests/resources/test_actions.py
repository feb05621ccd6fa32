"""Actions (`Resource(actions=[Action(...)])`) on resources of these tests' own: the item is loaded as the
caller first (404 when not visible; a POST action also needs the write rule, 403, and runs in a
transaction that a refusal rolls back), the action's path parameters, query and body are checked from
their declarations, the handler's answer is sent with the declared status, and the document describes it.
Also an admin-only resource (`permission=`, `Policy.admin_only`) whose events only auditors see
(`Policy.audit_permission`)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from rampart import (
    Action,
    ActionContext,
    Conflict,
    Field,
    Id,
    Integer,
    Page,
    Policy,
    Resource,
    Text,
    create_app,
)
from rampart.access.actor import Actor
from rampart.resources.context import Context
from tests.conftest import MakeUser, User, make_settings, new_user
from tests.declared import Served, create_tables, serve


async def summary(*, ctx: ActionContext, row: dict[str, Any]) -> dict[str, Any]:
    return {"name": row["name"], "times": ctx.query["times"], "who": str(ctx.actor.user_id)}


async def stamp(*, ctx: ActionContext, row: dict[str, Any]) -> dict[str, Any]:
    label = ctx.path["label"]
    # Another manager call, as the same caller, in the action's transaction (its event included).
    await ctx.resources["ac_boxes"].update(ctx, row["id"], {"name": f"{label}: {ctx.body['note']}"})
    if ctx.body["note"] == "refuse":
        raise Conflict("Refused after the change: nothing of it stays.")
    return {"stamped": label}


async def history(*, ctx: ActionContext, row: dict[str, Any]) -> Page:
    rows = await ctx.conn.fetch(
        "SELECT id::text AS id, type FROM events WHERE resource_id = $1 ORDER BY id LIMIT $2",
        row["id"],
        ctx.query["limit"],
    )
    return Page([dict(r) for r in rows], None, ctx.query["limit"], None)


boxes = Resource(
    name="ac_boxes",
    fields={"name": Field(Text(max_length=100), required=True)},
    policy=Policy.shared(),  # everyone sees a box; only its owner changes it
    actions=[
        Action(
            "summary",
            summary,
            method="GET",
            query={"times": Field(Integer(minimum=1, maximum=5), default=2, description="How often.")},
            response={"type": "object"},
        ),
        Action(
            "stamp",
            stamp,
            path="stamps/{label}",
            params={"label": Integer(minimum=1, maximum=99)},
            body={"note": Field(Text(min_length=1, max_length=20), required=True)},
            response={"type": "object", "properties": {"stamped": {"type": "integer"}}},
            status=202,
            problems=(409,),
        ),
        Action(
            "history",
            history,
            method="GET",
            query={"limit": Field(Integer(minimum=1, maximum=10), default=10)},
            response={"type": "object"},
            page=True,
        ),
    ],
)
safes = Resource(  # only its owner sees a safe
    name="ac_safes",
    fields={"name": Field(Text(max_length=100), required=True)},
    actions=[Action("summary", summary, method="GET", query={"times": Field(Integer(), default=1)})],
)


@pytest.fixture(scope="module")
async def served(database_url: str) -> AsyncIterator[Served]:
    async with serve(database_url, [boxes, safes]) as running:
        yield running


async def _box(served: Served, owner: User, path: str = "/api/v1/ac_boxes") -> dict[str, Any]:
    r = await served.client.post(path, json={"name": "box"}, headers=owner.headers)
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()["data"]
    return created


async def test_a_get_action_reads_a_visible_item(served: Served, make_user: MakeUser) -> None:
    owner, other = await make_user(), await make_user()
    box = await _box(served, owner)
    c = served.client
    r = await c.get(f"/api/v1/ac_boxes/{box['id']}/summary", headers=other.headers)
    assert r.status_code == 200, r.text
    assert r.json() == {"data": {"name": "box", "times": 2, "who": other.id}}  # a default, parsed
    r = await c.get(f"/api/v1/ac_boxes/{box['id']}/summary", params={"times": "5"}, headers=owner.headers)
    assert r.json()["data"]["times"] == 5
    safe = await _box(served, owner, "/api/v1/ac_safes")
    hidden = await c.get(f"/api/v1/ac_safes/{safe['id']}/summary", headers=other.headers)
    missing = await c.get(f"/api/v1/ac_safes/{uuid.uuid4()}/summary", headers=other.headers)
    assert (hidden.status_code, missing.status_code) == (404, 404)
    assert hidden.json()["detail"] == missing.json()["detail"]  # not visible is absent
    assert (await c.get(f"/api/v1/ac_safes/{safe['id']}/summary", headers=owner.headers)).status_code == 200
    assert (await c.get("/api/v1/ac_boxes/not-an-id/summary", headers=owner.headers)).status_code == 404


@pytest.mark.parametrize(
    ("params", "field", "code"),
    [
        ({"times": "6"}, "times", "invalid_value"),
        ({"times": "two"}, "times", "invalid_value"),
        ({"times": ["1", "2"]}, "times", "repeated_parameter"),
        ({"nope": "1"}, "nope", "unknown_parameter"),
    ],
)
async def test_a_bad_query_parameter_is_400(
    served: Served, make_user: MakeUser, params: dict[str, Any], field: str, code: str
) -> None:
    owner = await make_user()
    box = await _box(served, owner)
    r = await served.client.get(f"/api/v1/ac_boxes/{box['id']}/summary", params=params, headers=owner.headers)
    assert r.status_code == 400, r.text
    assert [(e["field"], e["code"]) for e in r.json()["errors"]] == [(field, code)]


async def test_a_post_action_needs_the_write_rule_and_commits_with_its_events(
    served: Served, make_user: MakeUser
) -> None:
    owner, other = await make_user(), await make_user()
    box = await _box(served, owner)
    c, url = served.client, f"/api/v1/ac_boxes/{box['id']}/stamps"
    served.events.clear()
    refused = await c.post(f"{url}/7", json={"note": "hi"}, headers=other.headers)
    assert refused.status_code == 403, refused.text  # visible, not writable
    r = await c.post(f"{url}/7", json={"note": "hi"}, headers=owner.headers)
    assert r.status_code == 202, r.text
    assert r.json() == {"data": {"stamped": 7}}
    assert served.fired(box["id"]) == ["ac_boxes.updated"]
    rolled = await c.post(f"{url}/8", json={"note": "refuse"}, headers=owner.headers)
    assert rolled.status_code == 409, rolled.text
    assert served.fired(box["id"]) == ["ac_boxes.updated"]  # the refused change left no event
    now = await c.get(f"/api/v1/ac_boxes/{box['id']}", headers=owner.headers)
    assert now.json()["data"]["name"] == "7: hi"
    assert now.json()["data"]["version"] == 2


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("stamps/100", {"note": "x"}, 404),  # a path parameter out of its bounds names nothing
        ("stamps/x", {"note": "x"}, 404),
        ("stamps/1", {"note": ""}, 422),
        ("stamps/1", {"note": "x", "colour": "red"}, 422),
        ("stamps/1", ["note"], 422),
        ("stamps/1", None, 400),  # no body at all
    ],
)
async def test_path_parameters_and_bodies_are_checked(
    served: Served, make_user: MakeUser, path: str, body: Any, status: int
) -> None:
    owner = await make_user()
    box = await _box(served, owner)
    url = f"/api/v1/ac_boxes/{box['id']}/{path}"
    r = await (
        served.client.post(url, headers=owner.headers)
        if body is None
        else served.client.post(url, json=body, headers=owner.headers)
    )
    assert r.status_code == status, r.text


async def test_a_page_and_a_manager_call(served: Served, make_user: MakeUser) -> None:
    owner = await make_user()
    box = await _box(served, owner)
    r = await served.client.get(f"/api/v1/ac_boxes/{box['id']}/history", headers=owner.headers)
    assert r.status_code == 200, r.text
    assert r.json()["meta"] == {"next_cursor": None, "limit": 10}
    assert [e["type"] for e in r.json()["data"]] == ["ac_boxes.created"]
    # The console (and an app's own code) calls the same action through the manager.
    manager = served.app.services.managers["ac_boxes"]
    actor = Actor(uuid.UUID(owner.id), owner.role, owner.session_id, frozenset())
    done = await manager.act(Context(actor=actor), "summary", box["id"], query={"times": 3})
    assert done["times"] == 3


async def test_the_document_describes_each_action(served: Served) -> None:
    doc = (await served.client.get("/openapi.json")).json()
    summary_op = doc["paths"]["/api/v1/ac_boxes/{id}/summary"]["get"]
    assert summary_op["operationId"] == "ac_boxes.summary"
    times = next(p for p in summary_op["parameters"] if p.get("name") == "times")
    assert times["schema"] == {"type": "integer", "minimum": 1, "maximum": 5, "default": 2}
    stamp_op = doc["paths"]["/api/v1/ac_boxes/{id}/stamps/{label}"]["post"]
    assert {"202", "400", "403", "404", "409", "422"} <= set(stamp_op["responses"])
    assert stamp_op["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/AcBoxStamp"
    }
    label = next(p for p in stamp_op["parameters"] if p.get("name") == "label")
    assert label["in"] == "path"
    assert label["schema"]["type"] == "integer"
    page = doc["paths"]["/api/v1/ac_boxes/{id}/history"]["get"]["responses"]["200"]
    assert page["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/AcBoxHistoryPage"}
    schemas = doc["components"]["schemas"]
    assert schemas["AcBoxHistoryPage"]["properties"]["meta"] == {"$ref": "#/components/schemas/PageMeta"}
    result = summary_op["responses"]["200"]["content"]["application/json"]["schema"]
    assert result == {"$ref": "#/components/schemas/AcBoxSummaryResultResponse"}  # one class in a client
    assert schemas["AcBoxSummaryResultResponse"]["properties"]["data"] == {
        "$ref": "#/components/schemas/AcBoxSummaryResult"
    }


async def _noop(*, ctx: ActionContext, row: dict[str, Any]) -> None:
    return None


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: Action("x", _noop, path="a/{b}"), ValueError),  # {b} not declared
        (lambda: Action("x", _noop, params={"b": Id()}), ValueError),  # declared, not in the path
        (lambda: Action("x", _noop, method="DELETE"), ValueError),
        (lambda: Action("x", _noop, method="GET", body={}), ValueError),
        (lambda: Action("x", _noop, path="a b"), ValueError),
        (lambda: Action("x", lambda **_: None), TypeError),  # not async
        (lambda: Action("x", summary, page=True), ValueError),  # a page needs its items' schema
    ],
)
def test_a_bad_declaration_is_refused(make: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        make()


def test_two_actions_at_one_path_or_a_taken_parameter_are_refused() -> None:
    with pytest.raises(ValueError, match="two actions"):
        Resource(name="ac_x", fields={}, actions=[Action("a", _noop), Action("b", _noop, path="a")])
    with pytest.raises(ValueError, match="path parameter"):
        Resource(name="ac_x", fields={}, actions=[Action("a", _noop, path="{id}", params={"id": Id()})])


# ----- an admin-only resource whose events are the auditors' -----------------------------------------------
vault = Resource(
    name="ac_vault",
    path="admin/vault",
    owner_field=None,
    permission="vault:manage",
    fields={"name": Field(Text(max_length=50), required=True)},
    policy=Policy.admin_only(
        bypass_read="vault:manage",
        bypass_write="vault:manage",
        create_permission="vault:manage",
        audit_permission="events:read_any",
    ),
    actions=[Action("summary", summary, method="GET", query={"times": Field(Integer(), default=1)})],
)
# The users table admits the roles `admin` and `user` only: here the admin is an auditor, who may read
# every event but not manage the vault, and the user keeps the vault.
ROLES = {"admin": ["events:read_any"], "user": ["vault:manage"]}


async def test_an_admin_only_resource_and_its_auditors(database_url: str) -> None:
    await create_tables(database_url, [vault])
    app = create_app(make_settings(database_url, role_permissions=ROLES), resources=[vault])
    await app.startup()
    try:
        import httpx

        users = {"keeper": await new_user(app, role="user"), "auditor": await new_user(app, role="admin")}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            base = "/api/v1/admin/vault"
            r = await c.post(base, json={"name": "gold"}, headers=users["keeper"].headers)
            assert r.status_code == 201, r.text
            item = r.json()["data"]
            # The permission guards every route, actions included.
            headers = users["auditor"].headers
            assert (await c.get(base, headers=headers)).status_code == 403
            assert (await c.get(f"{base}/{item['id']}/summary", headers=headers)).status_code == 403
            assert (await c.post(base, json={"name": "x"}, headers=headers)).status_code == 403
            keeper = users["keeper"].headers
            assert (await c.get(f"{base}/{item['id']}/summary", headers=keeper)).status_code == 200
            seen = {}
            for who, user in users.items():
                r = await c.get("/api/v1/events", params={"resource_id": item["id"]}, headers=user.headers)
                assert r.status_code == 200, r.text
                seen[who] = [e["type"] for e in r.json()["data"]]
            # The keeper sees every vault row, but its history is the auditors'.
            assert seen == {"keeper": [], "auditor": ["ac_vault.created"]}
    finally:
        await app.aclose()
