"""The audit log (filters, each change's before and after) and the live view of the event stream.

Both read the event log as the signed-in caller (`EventLog`): an administrator sees every event, a user
(while impersonated) the events of what they can see. Event ids are time-ordered, so "since" is a
cursor: the page starts at the first event of that minute and moves forward.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from starlette.datastructures import QueryParams
from starlette.responses import Response

from rampart.access.impersonation import MANAGE_USERS
from rampart.console import PREFIX
from rampart.console.pages import Pages, context, require
from rampart.errors import FieldError, InvalidQuery
from rampart.events.log import parse_log_query
from rampart.resources.endpoints import Call, RouteSpec

DEFAULT_SINCE_HOURS = 24


def floor_id(moment: dt.datetime) -> uuid.UUID:
    """The smallest UUIDv7 of that millisecond: every event id from then on is greater."""
    return uuid.UUID(int=max(int(moment.timestamp() * 1000), 0) << 80)


def _since(text: str) -> dt.datetime:
    """A `datetime-local` value (taken as UTC), or the default window's start."""
    if not text:
        return dt.datetime.now(dt.UTC) - dt.timedelta(hours=DEFAULT_SINCE_HOURS)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidQuery(
            "since must be a date and time.", errors=[FieldError("since", "invalid", "Not a date and time.")]
        ) from None
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment


def changes_of(event: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(field, before, after) of an event: an update's changes, a creation's or deletion's data."""
    changes = event.get("changes") or {}
    data = event.get("data") or {}
    action = str(event["type"]).rpartition(".")[2]
    if changes:
        rows = []
        for name, change in changes.items():
            if isinstance(change, dict) and ("from" in change or "to" in change):
                rows.append((name, change.get("from"), change.get("to")))
            else:
                rows.append((name, None, change))
        return rows
    if action == "deleted":
        return [(k, v, None) for k, v in data.items()]
    return [(k, None, v) for k, v in data.items()]


def audit_routes(pages: Pages) -> list[RouteSpec]:
    parts = pages.parts

    async def names(call: Call, ids: set[str]) -> dict[str, str]:
        """Emails of the users among `ids`, when the caller may read users (one query)."""
        actor = call.user
        ids.discard("")
        if not ids or not actor.can(MANAGE_USERS):
            return {}
        page = await parts.managers["users"].list(
            context(call), {"id[in]": ",".join(sorted(ids)[:100]), "fields": "id,email", "limit": "100"}
        )
        return {str(r["id"]): str(r["email"]) for r in page.items}

    async def log_page(call: Call) -> Response:
        actor = require(call)
        query = call.request.query_params
        values = {k: query.get(k, "") for k in ("resource", "type", "actor_id", "resource_id", "limit")}
        since_text = query.get("since", "")
        errors: dict[str, str] = {}
        events: list[dict[str, Any]] = []
        more = False
        try:
            after = query.get("after") or str(floor_id(_since(since_text)))
            params = {k: v for k, v in values.items() if v}
            parsed = parse_log_query(QueryParams({**params, "after": after}))
            events, more = await parts.event_log.page(actor, parsed, replica=True)
        except InvalidQuery as exc:
            errors = {e.field: e.message for e in exc.errors}
        who = await names(
            call,
            {str(e["actor_id"] or "") for e in events} | {str(e["impersonator_id"] or "") for e in events},
        )
        rows = [
            {
                **event,
                "actor": who.get(str(event["actor_id"]), str(event["actor_id"] or "system")),
                "impersonator": who.get(str(event["impersonator_id"]), event["impersonator_id"]),
                "changes_list": changes_of(event),
            }
            for event in events
        ]
        shown = {k: v for k, v in {**values, "since": since_text}.items() if v}
        return await pages.render(
            call,
            "audit.html",
            title="Audit log",
            values=values,
            since=since_text,
            resources=[*parts.managers, "webhooks"],
            errors=errors,
            other_errors=[(f, m) for f, m in errors.items() if f not in (*values, "since")],
            rows=rows,
            next_after=events[-1]["id"] if more and events else None,
            current=shown,
        )

    async def live_page(call: Call) -> Response:
        require(call)
        return await pages.render(call, "live.html", title="Live events")

    async def stream(call: Call) -> Any:
        actor = require(call)
        authenticator = parts.sessions.authenticator
        session = actor.session_id

        async def recheck() -> Any:
            return await authenticator.session_actor(session)

        return await parts.stream.open(call, recheck=recheck)

    def route(method: str, path: str, handler: Any, name: str, **options: Any) -> RouteSpec:
        return RouteSpec(method, path, handler, name, browser=True, **options)

    return [
        route("GET", f"{PREFIX}/audit", log_page, "console.audit"),
        route("GET", f"{PREFIX}/audit/live", live_page, "console.live"),
        route("GET", f"{PREFIX}/audit/stream", stream, "console.stream", streaming=True),
    ]
