"""The document generates clean clients and the server keeps to it (decision 0022).

The document: one named schema per resource (item with every field required, create, update, page,
sparse page) and per choice field; `Problem` with its codes enumerated; the problems, headers and
parameters every operation has. The server: what the document allows it accepts, and what it forbids it
refuses (each case here was a disagreement before: the old server answered otherwise).
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from rampart.api.openapi_components import problem_codes
from rampart.app import Rampart
from tests.conftest import User

METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture(scope="module")
async def doc(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    body: dict[str, Any] = r.json()
    return body


def _ops(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, m, op) for path, item in doc["paths"].items() for m, op in item.items() if m in METHODS]


# ----- the document ---------------------------------------------------------------------------------------
def test_each_resource_has_its_named_schemas(app: Rampart, doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    for resource in app.services.registry:
        base = resource.schema_name
        item = schemas[base]
        # every field, always sent; a write-only one (webhooks' secret) only by the create, in `New<base>`
        assert set(item["required"]) == set(resource.shown_fields), base
        if resource.write_only:
            assert set(schemas[f"New{base}"]["required"]) == set(resource.all_fields), base
        assert item.get("description") == (resource.description or None)
        page = schemas[f"{base}Page"]
        assert page["properties"]["data"]["items"] == {"$ref": f"#/components/schemas/{base}"}
        assert "required" not in schemas[f"{base}Fields"]  # a sparse item holds what `fields` named
        assert f"{base}Response" in schemas
    assert schemas["TaskStatus"] == {
        "type": "string",
        "enum": ["todo", "in_progress", "done"],
        "description": "Where the task stands.",  # the field's description
    }
    assert schemas["Task"]["properties"]["status"] == {"$ref": "#/components/schemas/TaskStatus"}
    assert {"Task", "TaskCreate", "TaskUpdate", "TaskPage", "Project", "Member", "User"} <= set(schemas)


def test_resource_operations_reference_the_named_schemas(doc: dict[str, Any]) -> None:
    tasks = doc["paths"]["/api/v1/tasks"]
    assert tasks["post"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TaskCreate"
    }
    created = tasks["post"]["responses"]["201"]
    assert created["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/TaskResponse"}
    assert {"Location", "ETag", "X-Request-ID"} <= set(created["headers"])
    listed = tasks["get"]["responses"]["200"]["content"]
    assert listed["application/json"]["schema"] == {"$ref": "#/components/schemas/TaskPage"}
    assert listed["application/vnd.rampart.fields+json"]["schema"] == {
        "$ref": "#/components/schemas/TaskFieldsPage"
    }
    item = doc["paths"]["/api/v1/tasks/{id}"]
    assert item["get"]["responses"]["200"]["headers"]["ETag"] == {"$ref": "#/components/headers/ETag"}
    assert {"$ref": "#/components/parameters/If-Match"} in item["patch"]["parameters"]
    assert item["patch"]["summary"] == "Change a task"
    assert "A task of a project." in item["patch"]["description"]  # Resource.description


def test_problem_codes_are_enumerated_from_the_error_classes(doc: dict[str, Any]) -> None:
    code = doc["components"]["schemas"]["Problem"]["properties"]["code"]
    codes = set(code["enum"])
    assert set(problem_codes()) == codes
    expected = {"validation_failed", "not_found", "invalid_query", "invalid_header", "internal_error"}
    assert expected | {"precondition_failed", "rate_limited", "too_many_streams", "not_ready"} <= codes
    not_found = doc["components"]["responses"]["NotFound"]
    assert "`not_found`" in not_found["description"]
    # Those of impersonation, sign-in, the last admin, media types, and of the HTTP protocol below the app.
    assert {
        "impersonation_refused",
        "user_disabled",
        "last_admin",
        "sign_in_browser_mismatch",
        "unsupported_media_type",
        "malformed_request",
        "header_too_large",
    } <= codes
    assert "`user_disabled`" in doc["components"]["responses"]["Conflict"]["description"]
    assert "console_forbidden" not in codes  # the console's pages only: no API route answers it


def test_impersonation_and_sessions_are_described_with_named_schemas(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    opened = doc["paths"]["/api/v1/admin/users/{id}/impersonate"]["post"]
    created = opened["responses"]["201"]
    assert created["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ImpersonationTokensResponse"
    }
    assert {"Cache-Control", "X-Request-ID"} <= set(created["headers"])
    assert {"403", "404", "409"} <= set(opened["responses"])
    tokens = schemas["ImpersonationTokens"]
    assert {"access_token", "refresh_token", "session_id", "session_expires_at"} <= set(tokens["required"])
    listed = doc["paths"]["/api/v1/admin/impersonations"]["get"]["responses"]["200"]
    assert listed["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ImpersonationList"
    }
    assert set(schemas["Impersonation"]["required"]) == set(schemas["Impersonation"]["properties"])
    ended = doc["paths"]["/api/v1/admin/impersonations/{id}"]["delete"]
    assert {"204", "404"} <= set(ended["responses"])
    for name in ("Session", "Event"):  # always sent: null unless an admin was impersonating
        assert "impersonator_id" in schemas[name]["required"], name
        assert schemas[name]["properties"]["impersonator_id"]["type"] == ["string", "null"], name
    login = doc["paths"]["/api/v1/auth/google/login"]["get"]["responses"]["302"]
    assert login["headers"]["Set-Cookie"]["required"] is True
    assert "rampart_signin_" in login["headers"]["Set-Cookie"]["description"]


def test_every_operation_documents_the_problems_and_headers_every_route_has(doc: dict[str, Any]) -> None:
    for path, method, op in _ops(doc):
        where = f"{method} {path}"
        assert {"$ref": "#/components/parameters/X-Request-ID"} in op["parameters"], where
        assert {"500", "504"} <= set(op["responses"]), where
        for status, response in op["responses"].items():
            if "$ref" in response:
                assert response["$ref"].startswith("#/components/responses/"), where
                continue
            assert "X-Request-ID" in response["headers"], (where, status)
        if path.startswith("/api/") or path.startswith("/.well-known/"):
            assert {"429", "503"} <= set(op["responses"]), where
            if op.get("security") != []:
                assert "401" in op["responses"], where
            if method in ("post", "patch", "delete"):
                assert {"413", "415"} <= set(op["responses"]), where
    responses = doc["components"]["responses"]
    assert "WWW-Authenticate" in responses["Unauthorized"]["headers"]
    assert "Retry-After" in responses["RateLimited"]["headers"]
    assert doc["components"]["headers"]["Retry-After"]["required"] is True


def test_parameters_are_typed_exactly(doc: dict[str, Any]) -> None:
    for path, method, op in _ops(doc):
        for param in op["parameters"]:
            if param.get("in") == "path":
                assert param["schema"] == {"type": "string", "format": "uuid"}, (method, path, param)
    tasks = {p["name"]: p for p in doc["paths"]["/api/v1/tasks"]["get"]["parameters"] if "name" in p}
    status_in = tasks["status[in]"]
    assert status_in["schema"] == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/TaskStatus"},
        "minItems": 1,
        "maxItems": 100,
    }
    assert (status_in["style"], status_in["explode"]) == ("form", False)
    assert tasks["id[in]"]["schema"]["items"] == {"type": "string", "format": "uuid"}
    sort = re.compile(tasks["sort"]["schema"]["pattern"])
    for ok in ("-priority", "title,-created_at", "id", "priority,priority"):
        assert sort.search(ok), ok
    assert sort.search(",".join(["title"] * 6))  # as many keys as the sortable fields: id, title, ...
    for bad in ("", "-", "nope", "title,", "description", "--title", ",".join(["title"] * 7)):
        assert not sort.search(bad), bad
    fields = re.compile(tasks["fields"]["schema"]["pattern"])
    assert fields.search("id,title")
    for bad in ("", ",", "id,", "id,,title", "nope"):
        assert not fields.search(bad), bad
    assert "same `sort`, filters" in tasks["cursor"]["description"]
    events = {p["name"]: p for p in doc["paths"]["/api/v1/events"]["get"]["parameters"] if "name" in p}
    assert events["after"]["schema"] == {"type": "string", "format": "uuid"}
    assert events["resource"]["schema"] == {"$ref": "#/components/schemas/EventResource"}


# ----- the server keeps to it ---------------------------------------------------------------------------
async def _task(client: httpx.AsyncClient, user: User) -> dict[str, Any]:
    r = await client.post("/api/v1/projects", json={"name": "contract"}, headers=user.headers)
    assert r.status_code == 201, r.text
    r = await client.post(
        "/api/v1/tasks", json={"project_id": r.json()["data"]["id"], "title": "t"}, headers=user.headers
    )
    assert r.status_code == 201, r.text
    task: dict[str, Any] = r.json()["data"]
    return task


@pytest.mark.parametrize(
    ("header", "status"),
    [
        ('"1"', 200),
        ("*", 200),
        ('"2"', 412),
        ('W/"1"', 412),  # If-Match compares strongly
        ("", 412),  # an empty list matches nothing
        ("1", 400),  # not an entity tag: malformed, not "has changed"
        ("garbage", 400),
        ('"1', 400),
    ],
)
async def test_if_match_is_read_as_rfc_9110_defines_it(
    client: httpx.AsyncClient, alice: User, header: str, status: int
) -> None:
    task = await _task(client, alice)
    r = await client.patch(
        f"/api/v1/tasks/{task['id']}", json={"title": "u"}, headers={**alice.headers, "If-Match": header}
    )
    assert r.status_code == status, r.text
    if status == 400:
        assert r.json()["code"] == "invalid_header"
        assert r.json()["errors"][0]["field"] == "If-Match"
    other = await _task(client, alice)
    r = await client.delete(f"/api/v1/tasks/{other['id']}", headers={**alice.headers, "If-Match": header})
    assert r.status_code == (204 if status == 200 else status), r.text


@pytest.mark.parametrize(("header", "status"), [('"1"', 304), ('W/"1"', 304), ("", 200), ("x", 400)])
async def test_if_none_match_is_read_as_rfc_9110_defines_it(
    client: httpx.AsyncClient, alice: User, header: str, status: int
) -> None:
    task = await _task(client, alice)
    r = await client.get(f"/api/v1/tasks/{task['id']}", headers={**alice.headers, "If-None-Match": header})
    assert r.status_code == status, r.text
    assert r.headers.get("etag") == ('"1"' if status != 400 else None)


async def test_event_log_refuses_a_resource_there_is_none_of(client: httpx.AsyncClient, alice: User) -> None:
    r = await client.get("/api/v1/events", params={"resource": "nope"}, headers=alice.headers)
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0]["field"] == "resource"
    for known in ("tasks", "webhooks", "users"):
        r = await client.get("/api/v1/events", params={"resource": known}, headers=alice.headers)
        assert r.status_code == 200, (known, r.text)


async def test_refresh_without_a_body_or_cookie_is_401(client: httpx.AsyncClient) -> None:
    # The body is optional (the cookie may carry the token): its absence is missing credentials, not JSON.
    r = await client.post("/api/v1/auth/refresh")
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == "Bearer"
    # found by `make verify-fuzz`: an empty rampart_refresh cookie is no cookie (it was a 422)
    r = await client.post("/api/v1/auth/refresh", headers={"Cookie": "rampart_refresh="})
    assert r.status_code == 401, r.text


async def test_logout_flag_is_a_boolean(client: httpx.AsyncClient, alice: User) -> None:
    for value in ("1", "0", "yes", ""):
        r = await client.post("/api/v1/auth/logout", params={"all": value}, headers=alice.headers)
        assert r.status_code == 400, (value, r.text)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "", "events": ["tasks.*"]}, "url"),
        ({"url": "https://example.test/hook", "events": [""]}, "events"),
        ({"url": "https://example.test/hook", "events": ["tasks.*"], "description": "a\x00b"}, "description"),
        ({"url": "https://example.test/hook", "events": ["tasks.*"], "secret": "s" * 16 + "\x00"}, "secret"),
        ({"url": "https://example.test/hook", "events": ["tasks\x00.*"]}, "events"),
        # found by `make verify-fuzz`: a host label over 63 characters made the resolver raise (a 500)
        ({"url": "HTTPS://" + "0" * 70 + "/", "events": ["tasks.*"]}, "url"),
    ],
)
async def test_webhook_bodies_the_document_forbids_are_422(
    client: httpx.AsyncClient, admin: User, body: dict[str, Any], field: str
) -> None:
    r = await client.post("/api/v1/admin/webhooks", json=body, headers=admin.headers)
    assert r.status_code == 422, r.text
    assert field in {error["field"] for error in r.json()["errors"]}, r.text


async def test_every_problem_code_answered_is_documented(
    client: httpx.AsyncClient, doc: dict[str, Any], alice: User
) -> None:
    codes = set(doc["components"]["schemas"]["Problem"]["properties"]["code"]["enum"])
    answers = [
        await client.get("/api/v1/tasks", params={"nope": "1"}, headers=alice.headers),
        await client.get("/api/v1/tasks/not-an-id", headers=alice.headers),
        await client.post("/api/v1/tasks", json={}, headers=alice.headers),
        await client.get("/api/v1/tasks"),
        await client.get(f"/api/v1/tasks/{'0' * 8}-0000-0000-0000-{'0' * 12}", headers=alice.headers),
    ]
    for r in answers:
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] in codes, r.text


def test_created_items_link_to_the_operations_under_them(doc: dict[str, Any]) -> None:
    links = doc["paths"]["/api/v1/projects"]["post"]["responses"]["201"]["links"]
    assert links["projects.get"]["parameters"] == {"id": "$response.body#/data/id"}
    assert links["members.list"]["parameters"] == {"parent_id": "$response.body#/data/id"}
    member = doc["paths"]["/api/v1/projects/{parent_id}/members"]["post"]["responses"]["201"]["links"]
    assert member["members.delete"]["parameters"] == {
        "user_id": "$response.body#/data/user_id",
        "parent_id": "$request.path.parent_id",
    }
