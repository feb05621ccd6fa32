"""Rendering the console's pages: the Jinja2 templates, the frame every page shares, errors as pages."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.responses import HTMLResponse, RedirectResponse, Response

from rampart.access.actor import Actor
from rampart.access.impersonation import MANAGE_USERS
from rampart.console import PREFIX
from rampart.console.parts import ConsoleParts
from rampart.errors import Forbidden, RampartError, Unauthorized
from rampart.events.log import READ_ANY
from rampart.events.webhooks import PERMISSION as MANAGE_WEBHOOKS
from rampart.resources.context import Context
from rampart.resources.endpoints import Call

NO_STORE = {"Cache-Control": "no-store"}
# What a `?done=` after a change says: a fixed set, so no text of the URL is ever shown on the page.
NOTICES = {
    "created": "Created.",
    "saved": "Saved.",
    "deleted": "Deleted.",
    "revoked": "The session was revoked.",
    "disabled": "The user was disabled: every session of theirs has ended.",
    "enabled": "The user was enabled.",
    "role": "The role was changed.",
    "impersonating": "You are now acting as this user. Everything you do is recorded with your name.",
    "stopped": "You stopped acting as another user.",
    "ended": "The impersonation has ended.",
    "redelivered": "The delivery was queued again.",
    "replayed": "The dead deliveries were queued again.",
    "signed_out": "You are signed out.",
}


class NotAnAdministrator(Forbidden):
    code = "console_forbidden"
    title = "Not an administrator"
    pages_only = True


def display_time(value: Any) -> str:
    """A timestamp as `2026-12-06 09:41:18 UTC` (the API's RFC 3339 text, or a datetime)."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return str(value)
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return "" if value is None else str(value)


def _short(value: Any) -> str:
    """A UUID cut to its first 8 characters (enough to tell rows apart on a page); anything else as is."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = "" if value is None else str(value)
    return text[:8] if len(text) == 36 else text


def _query(base: Mapping[str, Any], **changes: Any) -> str:
    """`base` (the current query) with `changes` applied, empty values left out, as `?a=b&...`."""
    merged = {k: v for k, v in {**base, **changes}.items() if v not in (None, "")}
    return "?" + urlencode(merged) if merged else "?"


_env = Environment(
    loader=PackageLoader("rampart.console", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    extensions=["jinja2.ext.do"],
)
_env.filters["time"] = display_time
_env.filters["short"] = _short
_env.globals["query"] = _query
_env.globals["prefix"] = PREFIX


@dataclass(frozen=True, slots=True)
class NavItem:
    label: str
    href: str
    current: bool


def console_allowed(actor: Actor) -> bool:
    """Administrators use the console; so does one acting as a user (impersonation), as that user."""
    return actor.can(MANAGE_USERS) or actor.impersonator_id is not None


def require(call: Call) -> Actor:
    """The signed-in caller, if the console is theirs to use."""
    actor = call.user
    if not console_allowed(actor):
        raise NotAnAdministrator("The console is for administrators; your account is not one.")
    return actor


def context(call: Call) -> Context:
    return Context(actor=call.user, request_id=call.request_id)


def redirect(path: str, **query: Any) -> Response:
    """303 See Other after a change (the browser then GETs the page: reloading does not post again)."""
    return RedirectResponse(path + (_query({}, **query) if query else ""), status_code=303, headers=NO_STORE)


class Pages:
    """Renders pages with the shared frame (navigation, the impersonation banner, notices).

    A form drawn again with the API's errors beside its fields answers 200: it is the page the browser
    asked for (a 4xx document is also logged as an error in the browser's console). Errors that replace
    the page (401, 403, 404, 409) keep their status.
    """

    def __init__(self, parts: ConsoleParts) -> None:
        self.parts = parts

    def navigation(self, actor: Actor | None, path: str) -> list[NavItem]:
        if actor is None or not console_allowed(actor):
            return []
        items: list[tuple[str, str]] = []
        if actor.can(MANAGE_USERS):
            items.append(("Overview", PREFIX))
        for name, manager in self.parts.managers.items():
            # Rampart's own resources have entries (and pages) of their own below.
            if "list" in manager.resource.operations and name not in ("users", "webhooks"):
                items.append((name.replace("_", " ").capitalize(), f"{PREFIX}/resources/{name}"))
        if actor.can(MANAGE_USERS):
            items.append(("Users", f"{PREFIX}/resources/users"))
        items.append(("Audit log", f"{PREFIX}/audit"))
        items.append(("Live events", f"{PREFIX}/audit/live"))
        if actor.can(MANAGE_WEBHOOKS):
            items.append(("Webhooks", f"{PREFIX}/webhooks"))
        if actor.can(MANAGE_WEBHOOKS) and actor.can(READ_ANY):
            items.append(("Dead letters", f"{PREFIX}/dead-letters"))

        def current(href: str) -> bool:
            return path == href or (href != PREFIX and path.startswith(href + "/"))

        return [NavItem(label, href, current(href)) for label, href in items]

    async def render(
        self, call: Call, template: str, *, title: str, status: int = 200, **values: Any
    ) -> Response:
        actor = call.actor
        acting = None
        if actor is not None and actor.impersonator_id is not None:
            acting = await self.parts.managers["users"].get(Context(actor=actor), actor.user_id)
        done = call.request.query_params.get("done", "")
        html = _env.get_template(template).render(
            title=title,
            actor=actor,
            acting=acting,
            csrf=call.csrf_token or "",
            nav=self.navigation(actor, call.request.url.path),
            notice=NOTICES.get(done),
            **values,
        )
        return HTMLResponse(html, status_code=status, headers=NO_STORE)

    async def error(self, call: Call, exc: RampartError) -> Response:
        """A Rampart error of a console route, as a page; signed out, the sign-in page instead."""
        if isinstance(exc, Unauthorized) and exc.code == Unauthorized.code and call.actor is None:
            return redirect(f"{PREFIX}/sign-in")
        status = exc.status
        return await self.render(
            call,
            "error.html",
            title=exc.title,
            status=status,
            detail=exc.detail,
            errors=exc.errors,
            code=exc.code,
            request_id=call.request_id,
        )


def user_label(row: Mapping[str, Any] | None, fallback: uuid.UUID | str | None = None) -> str:
    if row is None:
        return _short(fallback)
    return str(row.get("email") or row.get("name") or _short(row.get("id")))
