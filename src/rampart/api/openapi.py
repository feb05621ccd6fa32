"""OpenAPI 3.1 built from the mounted routes, and the offline `/docs` page (assets ship with the package)."""

from __future__ import annotations

import importlib.util
import mimetypes
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from rampart.api.openapi_components import (
    DESCRIPTION,
    FIELD_PROBLEM,
    HEADERS,
    PARAMETERS,
    RATE_LIMIT_HEADERS,
    problem_codes,
    problem_responses,
    problem_schema,
)
from rampart.errors import NotFound
from rampart.resources.endpoints import RouteSpec
from rampart.resources.openapi_parts import Named, headers, problems, ref

_DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Rampart API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/assets/init.js"></script></body></html>"""
_INIT_JS = "window.ui = SwaggerUIBundle({url: '/openapi.json', dom_id: '#ui', deepLinking: true});"
_ASSETS = {"swagger-ui.css", "swagger-ui-bundle.js"}


_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Tags of the service's own routes; a resource's tag (webhooks' too) is described by its
# `Resource.description`.
_TAGS = {
    "auth": "Who the caller is, tokens, sessions and sign-in.",
    "events": "The audit log and the live stream of changes.",
    "operations": "Health, metrics and this document.",
}


def build_spec(
    specs: Iterable[RouteSpec],
    *,
    title: str,
    version: str,
    extra_paths: dict[str, Any],
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `specs` (and of the plain routes in `extra_paths`).

    Each operation gets, on top of its own description, what the pipeline does for every route: the
    X-Request-ID header both ways, 401 unless public, 403 with a permission, 429 and the rate-limit headers,
    413/415 where a body can be sent, 500/503/504 anywhere. `Named` schemas become `components/schemas`.
    """
    schemas: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    for spec in specs:
        op: dict[str, Any] = {"operationId": spec.name, "summary": spec.summary or spec.name, **spec.openapi}
        if spec.tags:
            op["tags"] = list(spec.tags)
        if spec.public:
            op["security"] = []
        statuses = [429, 500, 503, 504]
        if not spec.public:
            statuses.append(401)
        if spec.permission is not None:
            statuses.append(403)
        if spec.method in _BODY_METHODS:
            statuses += [400, 413, 415]
        paths.setdefault(spec.path, {})[spec.method.lower()] = _complete(op, statuses, limited=True)
    for path, item in extra_paths.items():
        for method, op in item.items():
            paths.setdefault(path, {})[method] = _complete(dict(op), [500, 504], limited=False)
    paths = _hoist(paths, schemas)
    _link_created_items(paths)
    codes = problem_codes()
    taken = {"Problem", "FieldProblem"} & set(schemas)
    if taken:
        raise ValueError(
            f"OpenAPI schema names {sorted(taken)} are the service's own: set Resource.schema_name"
        )
    schemas = {
        "Problem": problem_schema(codes),
        "FieldProblem": FIELD_PROBLEM,
        **dict(sorted(schemas.items())),
    }
    described = {**_TAGS, **(tags or {})}
    used = sorted({tag for item in paths.values() for op in item.values() for tag in op.get("tags", ())})
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": DESCRIPTION},
        "servers": [{"url": "/"}],
        "tags": [{"name": t, **({"description": described[t]} if described.get(t) else {})} for t in used],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": problem_responses(codes),
            "headers": HEADERS,
            "parameters": PARAMETERS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
        "security": [{"bearer": []}],
    }


def _complete(op: dict[str, Any], statuses: list[int], *, limited: bool) -> dict[str, Any]:
    """Add the X-Request-ID parameter, the problems every such route may answer, and the headers of
    every response."""
    request_id = ref("parameters", "X-Request-ID")
    if request_id not in op.get("parameters", []):
        op["parameters"] = [*op.get("parameters", []), request_id]
    responses = dict(op.get("responses", {}))
    for status, answer in problems(*statuses).items():
        responses.setdefault(status, answer)
    sent = ("X-Request-ID", *RATE_LIMIT_HEADERS) if limited else ("X-Request-ID",)
    for status, answer in responses.items():
        if "$ref" not in answer:  # shared problem responses carry their headers already
            responses[status] = {**answer, "headers": {**headers(*sent), **answer.get("headers", {})}}
    op["responses"] = dict(sorted(responses.items()))
    return op


def _link_created_items(paths: dict[str, Any]) -> None:
    """OpenAPI links from each 201 of a collection to the operations under the item it created: a
    client (or schemathesis' stateful phase) learns that POST /projects gives the `{parent_id}` of
    /projects/{parent_id}/members, not only the `{id}` of /projects/{id}."""
    for collection, item in paths.items():
        created = item.get("post", {}).get("responses", {}).get("201")
        if created is None or "$ref" in created:
            continue
        below = re.compile(re.escape(collection) + r"/\{([a-z_][a-z0-9_]*)\}(?:/.*)?")
        links: dict[str, Any] = {}
        for path, other in paths.items():
            match = below.fullmatch(path)
            if match is None:
                continue
            key = match.group(1)
            # A nested collection's `{parent_id}` is the parent's `id`; an item's key is its own field.
            parameters = {key: f"$response.body#/data/{'id' if key == 'parent_id' else key}"}
            for name in re.findall(r"\{([a-z_][a-z0-9_]*)\}", collection):
                parameters[name] = f"$request.path.{name}"
            for method, op in other.items():
                if method in ("get", "patch", "delete", "post", "put"):
                    links[op["operationId"]] = {"operationId": op["operationId"], "parameters": parameters}
        if links:
            created["links"] = links


def _hoist(value: Any, schemas: dict[str, Any]) -> Any:
    """`value` with every `Named` replaced by a `$ref`, its schema added to `schemas` (a name may be used
    again only for the same schema)."""
    if isinstance(value, Named):
        schema = _hoist(value.schema, schemas)
        if schemas.setdefault(value.name, schema) != schema:
            raise ValueError(f"two different OpenAPI schemas are named {value.name!r}")
        return ref("schemas", value.name)
    if isinstance(value, dict):
        return {k: _hoist(v, schemas) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_hoist(v, schemas) for v in value]
    return value


def docs_routes(spec: dict[str, Any]) -> list[BaseRoute]:
    body = orjson.dumps(spec)
    # Only the package's files are served: finding it without importing it spares each worker the ~15 MB
    # of its Jinja-based renderer.
    spec_of = importlib.util.find_spec("swagger_ui")
    assert spec_of is not None
    assert spec_of.submodule_search_locations
    static = Path(next(iter(spec_of.submodule_search_locations))) / "static"

    async def openapi_json(request: Request) -> Response:
        return Response(body, media_type="application/json")

    async def docs(request: Request) -> Response:
        return HTMLResponse(_DOCS_HTML)

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name == "init.js":
            return Response(_INIT_JS, media_type="text/javascript")
        if name not in _ASSETS:  # a fixed allow-list: no path from the request reaches the file system
            raise NotFound("No such asset.")
        media = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return Response(
            (static / name).read_bytes(), media_type=media, headers={"Cache-Control": "public, max-age=86400"}
        )

    return [
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Route("/docs/assets/{name}", asset, methods=["GET"]),
    ]
