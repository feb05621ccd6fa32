"""The attack surface, read from the app itself: every operation the router serves, with what the router
knows of it (public, the permission it needs, streaming). The security tests are parametrized over it, so
a route added tomorrow is attacked tomorrow without anyone editing a list.

The app is built at import time, because parametrization happens before fixtures exist. `create_app`
connects to nothing (the pool opens lazily), so the database URL below is never used;
`test_api9_inventory` checks that this list is exactly what the session's running app serves.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from rampart.app import Rampart, create_app
from rampart.config import DEFAULT_ROLE_PERMISSIONS
from tests.conftest import make_settings

API = "/api/v1"
USER_PERMISSIONS = frozenset(DEFAULT_ROLE_PERMISSIONS["user"])
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Operation:
    """One method of one path template, as the router serves it."""

    method: str
    path: str
    name: str
    public: bool
    permission: str | None
    streaming: bool
    rate_class: str

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def params(self) -> tuple[str, ...]:
        return tuple(re.findall(r"{([^}]+)}", self.path))

    @property
    def admin_only(self) -> bool:
        """Needs a permission that the default `user` role does not have."""
        return self.permission is not None and self.permission not in USER_PERMISSIONS

    def url(self, values: Mapping[str, str] | None = None, **more: str) -> str:
        """The path with its parameters filled: from `values`, else a random UUID (names nothing)."""
        given = {**(values or {}), **more}
        return re.sub(r"{([^}]+)}", lambda m: given.get(m.group(1)) or str(uuid.uuid4()), self.path)


def served(app: Rampart) -> tuple[list[Operation], list[tuple[str, str]]]:
    """The operations behind the router (HEAD aside: it is GET), and the plain routes as (method, path)."""
    router: Any = app._app.app  # type: ignore[attr-defined]  # Rampart -> Pipeline -> Router
    operations: list[Operation] = []
    plain: list[tuple[str, str]] = []
    for route in router.routes:
        endpoint = getattr(route, "endpoint", None)
        if hasattr(endpoint, "specs"):
            for method, spec in endpoint.specs.items():
                # The console's pages are a browser surface of their own (`console_pages` below).
                if method != "HEAD" and not spec.browser:
                    operations.append(
                        Operation(
                            spec.method,
                            spec.path,
                            spec.name,
                            spec.public,
                            spec.permission,
                            spec.streaming,
                            spec.rate_class,
                        )
                    )
        elif not route.path.startswith("/console/"):  # the console's static files: console_pages
            plain += [(m, route.path) for m in sorted(route.methods or ()) if m != "HEAD"]
    return operations, plain


def console_pages(app: Rampart) -> list[tuple[str, str, bool]]:
    """The console's browser routes as (method, path, public), and its static files' route (GET)."""
    router: Any = app._app.app  # type: ignore[attr-defined]
    pages: list[tuple[str, str, bool]] = []
    for route in router.routes:
        endpoint = getattr(route, "endpoint", None)
        if hasattr(endpoint, "specs"):
            pages += [(m, s.path, s.public) for m, s in endpoint.specs.items() if m != "HEAD" and s.browser]
        elif route.path.startswith("/console/"):
            pages += [(m, route.path, True) for m in sorted(route.methods or ()) if m != "HEAD"]
    return pages


def openapi_document(app: Rampart) -> dict[str, Any]:
    """What GET /openapi.json answers, read from the route's own endpoint."""
    router: Any = app._app.app  # type: ignore[attr-defined]
    route = next(r for r in router.routes if getattr(r, "path", None) == "/openapi.json")
    response = asyncio.run(route.endpoint(None))
    document: dict[str, Any] = orjson.loads(response.body)
    return document


def _enumerate() -> tuple[list[Operation], list[tuple[str, str]], dict[str, Any]]:
    app = create_app(make_settings("postgresql://surface@127.0.0.1:1/never_connected"))
    return (*served(app), openapi_document(app))


OPERATIONS, PLAIN, DOCUMENT = _enumerate()
PROTECTED = [op for op in OPERATIONS if not op.public]
ADMIN_ONLY = [op for op in OPERATIONS if op.admin_only]


def ids(operations: list[Operation]) -> list[str]:
    return [op.id for op in operations]


def without_request_id(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "request_id"}
