"""Every route of the console, and its static files (which ship inside the package: no CDN, no build)."""

from __future__ import annotations

from importlib.resources import files

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from rampart.console import PREFIX
from rampart.console.audit import audit_routes
from rampart.console.overview import overview_routes
from rampart.console.pages import Pages
from rampart.console.parts import ConsoleParts
from rampart.console.resources import resource_routes
from rampart.console.signin import sign_in_routes
from rampart.console.users import user_routes
from rampart.console.webhooks import webhook_routes
from rampart.errors import NotFound
from rampart.resources.endpoints import RouteSpec

_MEDIA = {"console.css": "text/css; charset=utf-8", "console.js": "text/javascript; charset=utf-8"}


def console(parts: ConsoleParts) -> tuple[list[RouteSpec], list[BaseRoute], Pages]:
    """The console's browser routes, its static files' route, and the pages (whose `error` renders the
    errors of browser routes)."""
    pages = Pages(parts)
    specs = [
        *sign_in_routes(pages),
        *overview_routes(pages),
        *resource_routes(pages),
        *user_routes(pages),
        *audit_routes(pages),
        *webhook_routes(pages),
    ]
    static = files("rampart.console") / "static"
    # Read once: a fixed allow-list, so no part of a request path reaches the file system.
    assets = {name: (static / name).read_bytes() for name in _MEDIA}

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        body = assets.get(name)
        if body is None:
            raise NotFound("No such file.")
        return Response(body, media_type=_MEDIA[name], headers={"Cache-Control": "public, max-age=3600"})

    return specs, [Route(f"{PREFIX}/static/{{name}}", asset, methods=["GET"])], pages
