"""/openapi.json describes every mounted route (OpenAPI 3.1), list routes document their query language,
and /docs works offline: its page references only assets the service itself serves."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from rampart.app import Rampart
from rampart.resources.endpoints import RouteSpec
from tests.conftest import User

METHODS = ("get", "post", "put", "patch", "delete")


def mounted(app: Rampart) -> tuple[list[RouteSpec], list[Route]]:
    """The RouteSpecs behind the router, and the plain Starlette routes (health, metrics, docs)."""
    router = app._app.app  # type: ignore[attr-defined]  # Rampart -> Pipeline -> Router
    specs: list[RouteSpec] = []
    plain: list[Route] = []
    for route in router.routes:
        endpoint = getattr(route, "endpoint", None)
        if hasattr(endpoint, "specs"):
            # The console's pages (browser routes) are no part of the API's description.
            specs += [s for m, s in endpoint.specs.items() if m != "HEAD" and not s.browser]
        elif not route.path.startswith("/console/"):  # the console's static files, likewise
            plain.append(route)
    assert specs, "no RouteSpec found behind the router"
    return specs, plain


@pytest.fixture(scope="module")
async def raw_document(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/openapi.json")  # public: no token
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    doc: dict[str, Any] = r.json()
    return doc


def resolve(doc: dict[str, Any], node: Any = None) -> Any:
    """`node` (the whole document by default) with every `$ref` replaced by what it names."""
    if node is None:
        node = doc
    if isinstance(node, dict):
        if "$ref" in node:
            target: Any = doc
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            return resolve(doc, {**target, **{k: v for k, v in node.items() if k != "$ref"}})
        return {k: resolve(doc, v) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve(doc, v) for v in node]
    return node


@pytest.fixture(scope="module")
def document(raw_document: dict[str, Any]) -> dict[str, Any]:
    """The document with its references resolved, as a reader follows them."""
    resolved: dict[str, Any] = resolve(raw_document)
    return resolved


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, m, op) for path, item in doc["paths"].items() for m, op in item.items() if m in METHODS]


# ----- the document -----------------------------------------------------------------------------------
def test_document_is_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    assert document["info"]["title"]
    assert document["info"]["version"]
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }
    assert document["security"] == [{"bearer": []}]  # authenticated by default
    problem = document["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "code"} <= set(problem["required"])


def test_every_mounted_route_spec_is_documented(app: Rampart, document: dict[str, Any]) -> None:
    specs, _ = mounted(app)
    missing = [
        f"{s.method} {s.path}" for s in specs if s.method.lower() not in document["paths"].get(s.path, {})
    ]
    assert missing == []
    for spec in specs:
        op = document["paths"][spec.path][spec.method.lower()]
        assert op["operationId"] == spec.name
        if spec.public:
            assert op.get("security") == [], spec.name
        else:
            assert "security" not in op or op["security"], spec.name  # inherits bearer
            assert "401" in op["responses"], spec.name


def test_every_plain_route_is_documented_and_nothing_else(app: Rampart, document: dict[str, Any]) -> None:
    specs, plain = mounted(app)
    served = {(s.path, s.method.lower()) for s in specs}
    for route in plain:
        if route.path.startswith("/docs/assets"):
            continue  # static files of the docs page, not API operations
        for method in route.methods or ():
            if method != "HEAD":
                served.add((route.path, method.lower()))
    documented = {(path, method) for path, method, _ in operations(document)}
    assert documented == served
    # The API.md operations routes are among them.
    for path in ("/health/live", "/health/ready", "/metrics", "/openapi.json", "/docs"):
        assert (path, "get") in documented
        assert document["paths"][path]["get"]["security"] == []


def test_operation_ids_are_unique_and_every_operation_has_a_success(document: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in operations(document)]
    assert len(ids) == len(set(ids))
    for path, method, op in operations(document):
        # A sign-in step succeeds by redirecting the browser (302), like GET /api/v1/auth/google/login.
        assert any(code.startswith(("2", "302")) for code in op["responses"]), f"{method} {path}"


def test_path_parameters_are_declared(document: dict[str, Any]) -> None:
    for path, method, op in operations(document):
        names = set(re.findall(r"{([^}]+)}", path))
        declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
        assert declared == names, f"{method} {path}"
        for p in op.get("parameters", []):
            if p["in"] == "path":
                assert p["required"] is True


def test_errors_are_documented_as_problems(document: dict[str, Any]) -> None:
    for path, method, op in operations(document):
        for code, response in op["responses"].items():
            if code[0] in "45":
                content = response["content"]
                assert list(content) == ["application/problem+json"], f"{method} {path} {code}"
                assert (
                    content["application/problem+json"]["schema"]
                    == document["components"]["schemas"]["Problem"]
                )


def test_permission_routes_document_403(app: Rampart, document: dict[str, Any]) -> None:
    specs, _ = mounted(app)
    for spec in specs:
        if spec.permission is not None:
            assert "403" in document["paths"][spec.path][spec.method.lower()]["responses"], spec.name


# ----- list routes: the query language -----------------------------------------------------------------
def list_specs(app: Rampart) -> list[RouteSpec]:
    return [s for s in mounted(app)[0] if s.name.endswith(".list")]


def test_list_routes_document_every_filter_and_the_paging_parameters(
    app: Rampart, document: dict[str, Any]
) -> None:
    specs = list_specs(app)
    assert {s.name for s in specs} >= {"projects.list", "tasks.list", "members.list", "users.list"}
    for spec in specs:
        resource = app.services.registry.get(spec.name.removesuffix(".list"))
        params = {
            p["name"]: p for p in document["paths"][spec.path]["get"]["parameters"] if p["in"] == "query"
        }
        expected = {
            name if op == "eq" else f"{name}[{op}]"
            for name, field in resource.all_fields.items()
            for op in field.operators
        }
        expected |= {"sort", "limit", "cursor", "fields", "include_total"}
        assert set(params) == expected, spec.name
        assert params["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}
        for param in params.values():
            assert param["required"] is False


def test_tasks_list_documents_the_api_md_examples(document: dict[str, Any]) -> None:
    params = {p["name"]: p for p in document["paths"]["/api/v1/tasks"]["get"]["parameters"]}
    for name in (
        "status",
        "priority[gte]",
        "due_date[lt]",
        "title[contains]",
        "assignee_id[is]",
        "status[in]",
    ):
        assert name in params, name
    assert params["priority[gte]"]["schema"]["type"] == "integer"
    assert params["assignee_id[is]"]["schema"]["enum"] == ["null", "not_null"]
    assert set(params["status"]["schema"]["enum"]) == {"todo", "in_progress", "done"}
    assert "priority" in params["sort"]["description"]
    assert "description[contains]" not in params  # not declared filterable


def _example(name: str, schema: dict[str, Any]) -> str:
    """A valid query value for a documented parameter; `schema` is the field's schema for list operators."""
    base = name.split("[")[0]
    if name.endswith("[is]"):
        return "null"
    if name.endswith("[in]"):
        return ",".join([_example(base, schema)] * 2)
    if name.endswith("[contains]"):
        return "abc"
    types = schema.get("type")
    kind = next((t for t in types if t != "null"), "string") if isinstance(types, list) else types
    if "enum" in schema:
        return str(schema["enum"][0])
    if schema.get("format") == "uuid" or base == "id" or base.endswith("_id"):
        return str(uuid.uuid4())
    if schema.get("format") == "date":
        return "2026-12-01"
    if schema.get("format") == "date-time":
        return "2026-12-01T00:00:00Z"
    if kind == "integer":
        return "3"
    if kind == "boolean":
        return "true"
    return "abc"


async def test_every_documented_tasks_filter_is_accepted(
    client: httpx.AsyncClient, document: dict[str, Any], alice: User
) -> None:
    operation = document["paths"]["/api/v1/tasks"]["get"]
    item = operation["responses"]["200"]["content"]["application/json"]["schema"]["properties"]["data"][
        "items"
    ]
    for param in operation["parameters"]:
        if param["name"] in ("sort", "cursor", "fields") or param["in"] != "query":
            continue
        base = param["name"].split("[")[0]
        value = _example(param["name"], item["properties"].get(base, param["schema"]))
        r = await client.get("/api/v1/tasks", params={param["name"]: value}, headers=alice.headers)
        assert r.status_code == 200, (param["name"], value, r.text)
    r = await client.get("/api/v1/tasks", params={"description[contains]": "x"}, headers=alice.headers)
    assert r.status_code == 400  # and what is not documented is refused


async def test_filter_schemas_admit_what_the_filter_accepts(
    client: httpx.AsyncClient, document: dict[str, Any], alice: User
) -> None:
    # Found by `make verify-fuzz`: `title` kept the field's maxLength (200) as a filter, but a longer value
    # is a valid filter (it matches nothing), so the document called an accepted request invalid.
    params = {p["name"]: p["schema"] for p in document["paths"]["/api/v1/tasks"]["get"]["parameters"]}
    no_nul = "^[^\\x00]*$"  # NUL is refused by text filters: PostgreSQL text cannot hold it
    assert params["title"] == {"type": "string", "pattern": no_nul}
    assert params["title[contains]"] == {"type": "string", "maxLength": 200, "pattern": no_nul}
    r = await client.get("/api/v1/tasks", params={"title": "x" * 300}, headers=alice.headers)
    assert r.status_code == 200, r.text
    r = await client.get("/api/v1/tasks", params={"title[contains]": "x" * 201}, headers=alice.headers)
    assert r.status_code == 400, r.text
    # and `priority[ne]=6` (over the field's maximum of 5) is a valid filter: the column's range applies
    assert params["priority[ne]"] == {"type": "integer", "minimum": -32768, "maximum": 32767}
    for value, status in (("6", 200), ("32767", 200), ("32768", 400)):
        r = await client.get("/api/v1/tasks", params={"priority[ne]": value}, headers=alice.headers)
        assert r.status_code == status, (value, r.text)


async def test_text_body_schemas_exclude_nul_as_validation_does(
    client: httpx.AsyncClient, document: dict[str, Any], alice: User
) -> None:
    # Found by `make verify-fuzz`: a NUL character satisfied the schema of `name` but got a 422.
    create = document["paths"]["/api/v1/projects"]["post"]["requestBody"]["content"]["application/json"]
    pattern = create["schema"]["properties"]["name"]["pattern"]
    assert re.search(pattern, "plain")
    assert not re.search(pattern, "a\x00b")
    r = await client.post("/api/v1/projects", json={"name": "a\x00b"}, headers=alice.headers)
    assert r.status_code == 422
    assert r.json()["errors"][0]["code"] == "invalid_characters"


async def test_email_schema_matches_the_whole_value_as_validation_does(
    client: httpx.AsyncClient, document: dict[str, Any], admin: User
) -> None:
    # Found by `make verify-fuzz`: the pattern matched anywhere in the value (JSON Schema semantics) and
    # ECMA's \\s lacks \\x1c-\\x1f, so "00@\\x1d..." passed the document and got a 422.
    create = document["paths"]["/api/v1/admin/users"]["post"]["requestBody"]["content"]["application/json"]
    pattern = create["schema"]["properties"]["email"]["pattern"]
    assert pattern.startswith("^")
    assert pattern.endswith("$")
    for email in ("00@\x1d", "a b@c", "a@b@c", "a\x00@b"):
        assert not re.search(pattern, email), email
        r = await client.post("/api/v1/admin/users", json={"email": email}, headers=admin.headers)
        assert r.status_code == 422, (email, r.text)
    assert re.search(pattern, " Ab@example.test ")  # stored trimmed and lower-cased


def test_bodies_exclude_server_owned_fields(document: dict[str, Any]) -> None:
    create = document["paths"]["/api/v1/tasks"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]
    assert create["additionalProperties"] is False
    assert set(create["required"]) == {"project_id", "title"}
    server_owned = {"id", "owner_id", "created_at", "updated_at", "version"}
    assert not server_owned & set(create["properties"])
    update = document["paths"]["/api/v1/tasks/{id}"]["patch"]["requestBody"]["content"]["application/json"][
        "schema"
    ]
    assert not (server_owned | {"project_id"}) & set(update["properties"])  # project_id is immutable
    assert update["properties"]["priority"] == {
        "type": "integer",
        "minimum": 0,
        "maximum": 5,
        "description": "From 0 (none) to 5 (most urgent).",  # the field's own description
        "examples": [0],
    }


# ----- /docs works offline -----------------------------------------------------------------------------
async def test_docs_page_references_only_local_assets_that_are_served(client: httpx.AsyncClient) -> None:
    r = await client.get("/docs")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    html = r.text
    assert not re.search(r"https?://", html), "the docs page must not load anything from a CDN"
    assert "//" not in re.sub(r"<!--.*?-->", "", html).replace("://", "")  # no protocol-relative URLs
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert refs, html
    kinds = set()
    for ref in refs:
        assert ref.startswith("/"), ref
        asset = await client.get(ref)
        assert asset.status_code == 200, ref
        content_type = asset.headers["content-type"]
        assert content_type.split(";")[0] in ("text/javascript", "application/javascript", "text/css"), ref
        assert asset.content
        kinds.add("css" if "css" in content_type else "js")
    assert kinds == {"css", "js"}
    # The page's policy allows only its own origin.
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp
    assert "http" not in csp


async def test_docs_initialiser_points_at_the_local_document(client: httpx.AsyncClient) -> None:
    r = await client.get("/docs/assets/init.js")
    assert r.status_code == 200
    assert "/openapi.json" in r.text
    assert not re.search(r"https?://", r.text)


@pytest.mark.parametrize(
    "path",
    ["/docs/assets/nope.js", "/docs/assets/..%2F..%2Fpyproject.toml", "/docs/assets/%2Fetc%2Fpasswd"],
)
async def test_unknown_docs_assets_are_404(client: httpx.AsyncClient, path: str) -> None:
    r = await client.get(path)
    assert r.status_code == 404
    assert b"[project]" not in r.content
    assert b"root:" not in r.content
