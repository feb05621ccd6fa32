"""Webhooks in the console: create and edit, the delivery log with each attempt's status and error,
redelivery, and the dead letters of every subscriber with replay (what `rampart events` does on the
command line). Everything goes through the webhooks resource's manager (its actions included) and the
dispatcher's functions, as the API does."""

from __future__ import annotations

import uuid
from typing import Any

from starlette.responses import Response

from rampart.console import PREFIX
from rampart.console.pages import Pages, context, redirect, require
from rampart.errors import NotFound, ValidationFailed
from rampart.events.dispatcher import dead_letters, replay
from rampart.events.log import READ_ANY
from rampart.events.webhooks import PERMISSION, SUBSCRIBER_PREFIX
from rampart.lib.ids import parse_uuid
from rampart.resources.endpoints import Call, RouteSpec

BASE = f"{PREFIX}/webhooks"


def _patterns(text: str) -> list[str]:
    return [p for p in text.replace(",", " ").split() if p]


def webhook_routes(pages: Pages) -> list[RouteSpec]:
    parts = pages.parts
    webhooks = parts.managers["webhooks"]

    def admin(call: Call) -> None:
        require(call).require(PERMISSION)

    async def form_page(
        call: Call,
        *,
        webhook: dict[str, Any] | None,
        values: dict[str, Any],
        errors: dict[str, str],
        status: int = 200,
    ) -> Response:
        return await pages.render(
            call,
            "webhook_form.html",
            title="Edit webhook" if webhook else "New webhook",
            status=status,
            webhook=webhook,
            values=values,
            errors=errors,
            action=f"{BASE}/{webhook['id']}/edit" if webhook else f"{BASE}/new",
            cancel=f"{BASE}/{webhook['id']}" if webhook else BASE,
        )

    def body_of(call: Call, *, creating: bool) -> tuple[dict[str, Any], dict[str, Any]]:
        form = call.form()
        values: dict[str, Any] = {
            "url": form.get("url", ""),
            "events": form.get("events", ""),
            "description": form.get("description", ""),
            "secret": form.get("secret", ""),
            "active": "true" in form.getlist("active"),
        }
        body: dict[str, Any] = {
            "url": values["url"],
            "events": _patterns(str(values["events"])),
            "description": values["description"],
            "active": values["active"],
        }
        if (values["secret"] or not creating) and values["secret"]:
            body["secret"] = values["secret"]
        return body, values

    def key(text: str) -> uuid.UUID:
        found = parse_uuid(text)
        if found is None:
            raise webhooks.not_found()
        return found

    async def index(call: Call) -> Response:
        admin(call)
        query = {"limit": "50"}
        cursor = call.request.query_params.get("cursor")
        if cursor:
            query["cursor"] = cursor
        page = await webhooks.list(context(call), query)
        return await pages.render(
            call, "webhooks.html", title="Webhooks", items=page.items, next_cursor=page.next_cursor
        )

    async def new(call: Call) -> Response:
        admin(call)
        return await form_page(
            call,
            webhook=None,
            values={"url": "", "events": "*", "description": "", "active": True},
            errors={},
        )

    async def create(call: Call) -> Response:
        admin(call)
        body, values = body_of(call, creating=True)
        try:
            created = await webhooks.create(context(call), body)
        except ValidationFailed as exc:
            errors = {e.field: e.message for e in exc.errors}
            return await form_page(call, webhook=None, values=values, errors=errors)
        # The secret is shown once, now: only its holder can check the signatures.
        return await detail(call, webhook_id=created["id"], secret=created["secret"])

    async def detail(call: Call, *, webhook_id: str | None = None, secret: str | None = None) -> Response:
        admin(call)
        wid = key(webhook_id or call.path["id"])
        webhook = await webhooks.get(context(call), wid)
        after = parse_uuid(call.request.query_params.get("after", ""))
        attempts = await webhooks.act(context(call), "deliveries", wid, query={"after": after, "limit": 50})
        subscriber = SUBSCRIBER_PREFIX + webhook["id"]
        dead = [d for d in await dead_letters(parts.db, limit=500) if d["subscriber"] == subscriber][:50]
        return await pages.render(
            call,
            "webhook.html",
            title=f"Webhook {webhook['url']}",
            webhook=webhook,
            secret=secret,
            attempts=attempts.items,
            dead=dead,
            next_after=attempts.next_cursor,
        )

    async def show(call: Call) -> Response:
        return await detail(call)

    async def edit(call: Call) -> Response:
        admin(call)
        webhook = await webhooks.get(context(call), key(call.path["id"]))
        values = {**webhook, "events": " ".join(webhook["events"]), "secret": ""}
        return await form_page(call, webhook=webhook, values=values, errors={})

    async def update(call: Call) -> Response:
        admin(call)
        wid = key(call.path["id"])
        webhook = await webhooks.get(context(call), wid)
        body, values = body_of(call, creating=False)
        try:
            await webhooks.update(context(call), wid, body)
        except ValidationFailed as exc:
            errors = {e.field: e.message for e in exc.errors}
            return await form_page(call, webhook=webhook, values=values, errors=errors)
        return redirect(f"{BASE}/{webhook['id']}", done="saved")

    async def delete_page(call: Call) -> Response:
        admin(call)
        webhook = await webhooks.get(context(call), key(call.path["id"]))
        return await pages.render(
            call,
            "confirm.html",
            title="Delete this webhook?",
            message=f"The webhook to {webhook['url']} and its waiting deliveries will be deleted.",
            action=f"{BASE}/{webhook['id']}/delete",
            button="Delete",
            danger=True,
            cancel=f"{BASE}/{webhook['id']}",
        )

    async def delete(call: Call) -> Response:
        admin(call)
        await webhooks.delete(context(call), key(call.path["id"]))
        return redirect(BASE, done="deleted")

    async def redeliver(call: Call) -> Response:
        admin(call)
        wid = key(call.path["id"])
        await webhooks.act(context(call), "redeliver", wid, path={"event_id": call.path["event_id"]})
        return redirect(f"{BASE}/{wid}", done="redelivered")

    async def dead_page(call: Call) -> Response:
        admin(call)
        require(call).require(READ_ANY)
        items = await dead_letters(parts.db, limit=200)
        return await pages.render(call, "dead_letters.html", title="Dead letters", items=items)

    async def replay_dead(call: Call) -> Response:
        admin(call)
        require(call).require(READ_ANY)
        form = call.form()
        subscriber = form.get("subscriber") or None
        event_id = None
        if form.get("event_id"):
            event_id = parse_uuid(form.get("event_id", ""))
            if event_id is None:
                raise NotFound("No such event.")
        await replay(parts.db, subscriber=subscriber, event_id=event_id)
        back = form.get("back", "")
        target = (
            back
            if back.startswith(f"{BASE}/") and parse_uuid(back[len(BASE) + 1 :])
            else f"{PREFIX}/dead-letters"
        )
        return redirect(target, done="replayed")

    def route(method: str, path: str, handler: Any, name: str) -> RouteSpec:
        return RouteSpec(method, path, handler, name, browser=True)

    return [
        route("GET", BASE, index, "console.webhooks"),
        route("GET", f"{BASE}/new", new, "console.webhook_new"),
        route("POST", f"{BASE}/new", create, "console.webhook_create"),
        route("GET", f"{BASE}/{{id}}", show, "console.webhook"),
        route("GET", f"{BASE}/{{id}}/edit", edit, "console.webhook_edit"),
        route("POST", f"{BASE}/{{id}}/edit", update, "console.webhook_update"),
        route("GET", f"{BASE}/{{id}}/delete", delete_page, "console.webhook_delete_confirm"),
        route("POST", f"{BASE}/{{id}}/delete", delete, "console.webhook_delete"),
        route("POST", f"{BASE}/{{id}}/redeliver/{{event_id}}", redeliver, "console.webhook_redeliver"),
        route("GET", f"{PREFIX}/dead-letters", dead_page, "console.dead_letters"),
        route("POST", f"{PREFIX}/dead-letters/replay", replay_dead, "console.replay"),
    ]
