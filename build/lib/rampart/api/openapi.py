"""OpenAPI 3.1 built from the mounted routes, and the offline `/docs` page (assets ship with the package)."""

from __future__ import annotations

import importlib.util
import mimetypes
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from rampart.errors import NotFound
from rampart.resources.endpoints import RouteSpec

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "code"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "request_id": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "code", "message"],
                "properties": {
                    "field": {"type": "string"},
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                },
            },
        },
        "debug": {"type": "object"},
    },
}

_DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Rampart API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/assets/init.js"></script></body></html>"""
_INIT_JS = "window.ui = SwaggerUIBundle({url: '/openapi.json', dom_id: '#ui', deepLinking: true});"
_ASSETS = {"swagger-ui.css", "swagger-ui-bundle.js"}


def build_spec(
    specs: Iterable[RouteSpec], *, title: str, version: str, extra_paths: dict[str, Any]
) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for spec in specs:
        op: dict[str, Any] = {"operationId": spec.name, "summary": spec.summary or spec.name, **spec.openapi}
        if spec.tags:
            op["tags"] = list(spec.tags)
        if spec.public:
            op["security"] = []
        paths.setdefault(spec.path, {})[spec.method.lower()] = op
    paths.update(extra_paths)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "Rampart HTTP API. Errors are RFC 9457 problem+json.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": {"Problem": PROBLEM_SCHEMA},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
        "security": [{"bearer": []}],
    }


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
