"""API9:2023 Improper inventory management: no route that is not documented, no documented route that is
not served, one API version, and no leftovers (debug, admin consoles, old versions) answering.

- The router's routes and /openapi.json list the same operations, checked on the data and over HTTP:
  every documented operation is routed, every other method of a documented path is 405 with an `Allow`
  naming exactly the documented ones, and the router's fast lookup table holds nothing else.
- Every documented path is described in the prose docs (API.md, docs/), and every permission a route
  needs is in the configuration guide's permission table.
- Paths that exist in many deployments by accident answer 404.

tests/api/test_openapi_docs.py checks the document's shape (ids, parameters, problem responses).
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from rampart.app import Rampart
from rampart.config import DEFAULT_ROLE_PERMISSIONS
from tests.security.surface import DOCUMENT, OPERATIONS, PLAIN, Operation, console_pages, served

ROOT = Path(__file__).resolve().parents[2]
METHODS = ("get", "post", "put", "patch", "delete")
DOCUMENTED = sorted((m.upper(), p) for p, item in DOCUMENT["paths"].items() for m in item if m in METHODS)
DOC_PATHS = sorted(DOCUMENT["paths"])
PROSE = [ROOT.parent / "shared" / "API.md", ROOT / "README.md", ROOT / "docs" / "api-notes.md"]
PROSE += sorted((ROOT / "docs" / "guide").glob("*.md"))


def test_the_surface_under_test_is_what_the_running_app_serves(app: Rampart) -> None:
    """surface.py enumerates an app built at import time; the session's running app serves the same."""
    assert served(app) == (OPERATIONS, PLAIN)


def test_the_document_and_the_router_list_the_same_operations() -> None:
    routed = {(op.method, op.path) for op in OPERATIONS}
    routed |= {(m, p) for m, p in PLAIN if not p.startswith("/docs/assets")}  # static files of /docs
    assert set(DOCUMENTED) == routed


def test_the_fast_lookup_table_serves_only_declared_routes(app: Rampart) -> None:
    router = app._app.app  # type: ignore[attr-defined]
    endpoints = {id(getattr(route, "endpoint", None)) for route in router.routes}
    table = [entry for entries in router._table.values() for entry in entries]
    assert table
    assert all(id(endpoint) in endpoints for _, _, endpoint in table)


@pytest.mark.parametrize(("method", "path"), DOCUMENTED, ids=[f"{m} {p}" for m, p in DOCUMENTED])
async def test_every_documented_operation_is_routed(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    url = Operation(method, path, "", False, None, False, "").url()
    r = await client.request(method, url, headers={"Origin": "https://x.test"})
    if r.status_code == 404:
        assert r.json()["detail"] != "No such route.", f"{method} {path} is documented but not routed"
    assert r.status_code != 405


@pytest.mark.parametrize("path", DOC_PATHS)
async def test_other_methods_are_405_with_the_documented_allow(client: httpx.AsyncClient, path: str) -> None:
    documented = sorted(m.upper() for m in DOCUMENT["paths"][path] if m in METHODS)
    url = Operation("GET", path, "", False, None, False, "").url()
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        if method in documented:
            continue
        r = await client.request(method, url)
        assert r.status_code == 405, (method, path, r.text)
        assert sorted(r.headers["allow"].split(", ")) == documented


@pytest.mark.parametrize(
    "path",
    [
        "/api/v0/projects",
        "/api/v2/projects",
        "/api/projects",
        "/v1/projects",
        "/api/v1/users",
        "/api/v1/admin",
        "/api/v1/admin/sessions",
        "/api/v1/admin/events",
        "/api/v1/internal",
        "/api/v1/debug",
        "/api/v1/openapi.json",
        "/api/v1/auth/token",
        "/api/v1/auth/login",
        "/api/v1/auth/register",
        "/api/v1/events/replay",
        "/admin",
        "/debug",
        "/_debug",
        "/console/debug",
        "/console/admin",
        "/graphql",
        "/swagger.json",
        "/swagger-ui.html",
        "/redoc",
        "/openapi.yaml",
        "/.env",
        "/.git/config",
        "/server-status",
        "/actuator/health",
        "/health",
        "/metrics.json",
        "/static/app.js",
    ],
)
async def test_leftover_and_guessable_paths_are_not_found(client: httpx.AsyncClient, path: str) -> None:
    for method in ("GET", "POST"):
        r = await client.request(method, path, json={} if method == "POST" else None)
        assert r.status_code == 404, (method, path, r.status_code)
        assert r.headers["content-type"] == "application/problem+json"


async def test_every_console_page_is_closed_to_a_signed_out_browser(
    app: Rampart, client: httpx.AsyncClient
) -> None:
    """The console (a browser surface, no part of the API's document) lives under /console only; signed
    out, a page sends to the sign-in page and a POST is refused, except the sign-in routes themselves."""
    pages = console_pages(app)
    assert pages
    assert all(path.startswith("/console") for _, path, _ in pages)
    open_pages = {path for _, path, public in pages if public}
    assert open_pages == {
        "/console/sign-in",
        "/console/sign-in/link",
        "/console/sign-in/oidc",
        "/console/static/{name}",
    }
    for method, path, public in pages:
        if public:
            continue
        url = Operation(method, path, "", False, None, False, "").url({"name": "tasks"})
        r = await client.request(method, url, data={"x": "1"} if method == "POST" else None)
        if method == "GET":
            assert r.status_code == 303, (method, path, r.status_code)
            assert r.headers["location"] == "/console/sign-in"
        else:
            assert r.status_code == 403, (method, path, r.status_code)  # no session, no CSRF token
            assert "csrf" in r.text.lower() or "out of date" in r.text


def _prose() -> str:
    return "\n".join(p.read_text() for p in PROSE if p.exists())


def _mentioned(path: str, text: str) -> bool:
    """The path in the prose, with any parameter names; a resource route may be in the generic form
    of API.md (`/api/v1/R/{id}`)."""
    pattern = re.sub(r"\\{[^}]*\\}", r"{[^}]+}", re.escape(path)) + r"(?![\w/{])"
    if re.search(pattern, text):
        return True
    generic = re.sub(r"^/api/v1/[a-z_]+(?=/{[^}]+}$)", "/api/v1/R", path)
    return generic != path and re.sub(r"\\{[^}]*\\}", "{id}", re.escape(generic)).replace("\\", "") in text


@pytest.mark.parametrize("path", DOC_PATHS)
def test_every_documented_path_is_described_in_the_prose(path: str) -> None:
    assert _mentioned(path, _prose()), f"{path} is served and in OpenAPI, but no guide or API.md names it"


def test_every_permission_is_in_the_configuration_guide() -> None:
    guide = (ROOT / "docs" / "guide" / "configuration.md").read_text()
    table = set(re.findall(r"^\| `([a-z_]+:[a-z_]+)`", guide, re.M))
    table |= {
        p
        for row in re.findall(r"^\| (`[a-z_]+:[a-z_]+`(?:, `[a-z_]+:[a-z_]+`)+) \|", guide, re.M)
        for p in re.findall(r"`([^`]+)`", row)
    }
    needed = {op.permission for op in OPERATIONS if op.permission}
    needed |= {p for perms in DEFAULT_ROLE_PERMISSIONS.values() for p in perms}
    assert sorted(needed - table) == []
