"""Signing in and out of the console: one-time links, the first administrator, the identity provider."""

from __future__ import annotations

import uuid
from typing import Any

from starlette.responses import Response

from rampart.access.impersonation import MANAGE_USERS
from rampart.auth.browser import AS_COOKIE, COOKIE, SIGN_IN_MARK
from rampart.auth.login_links import FIRST_ADMIN, LoginLinkInvalid, create_first_admin, peek_link, use_link
from rampart.auth.routes_oidc import sign_in_redirect
from rampart.auth.sessions import open_session, revoke_session
from rampart.console import LINK_PATH, PREFIX
from rampart.console.pages import NotAnAdministrator, Pages, redirect
from rampart.errors import FieldError, ValidationFailed
from rampart.resources.endpoints import Call, RouteSpec


def sign_in_routes(pages: Pages) -> list[RouteSpec]:
    parts = pages.parts
    db, sessions, roles = parts.db, parts.sessions, parts.roles

    async def sign_in_page(call: Call) -> Response:
        if call.actor is not None:
            return redirect(PREFIX)
        return await pages.render(call, "sign_in.html", title="Sign in", oidc=parts.oidc is not None)

    async def link_page(call: Call) -> Response:
        token = call.request.query_params.get("token", "")
        link = await peek_link(db, token)
        return await pages.render(
            call, "link.html", title="Sign in with a link", token=token, link=link, errors={}, values={}
        )

    async def use(call: Call) -> Response:
        form = call.form()
        token = form.get("token", "")
        client = call.request.client
        async with db.transaction() as conn:
            link = await use_link(conn, token)
            if link.purpose == FIRST_ADMIN:
                email, name = form.get("email", ""), form.get("name", "")
                try:
                    user = await create_first_admin(
                        conn, users=parts.managers["users"], roles=roles, email=email, name=name
                    )
                except ValidationFailed as exc:  # the link is not spent: the transaction rolls back
                    raise _FormInvalid(exc.errors, {"email": email, "name": name}, token) from None
                user_id, role = uuid.UUID(str(user["id"])), str(user["role"])
            else:
                assert link.user_id is not None
                row = await conn.fetchrow(
                    "SELECT role, disabled FROM users WHERE id = $1 FOR SHARE", link.user_id
                )
                if row is None or row["disabled"]:
                    raise LoginLinkInvalid("This account is disabled.")
                if MANAGE_USERS not in roles.permissions(row["role"]):
                    raise NotAnAdministrator("The console is for administrators; this account is not one.")
                user_id, role = link.user_id, row["role"]
            pair = await open_session(
                conn,
                parts.tokens,
                user_id=user_id,
                role=role,
                session_ttl=sessions.ttl,
                user_agent=call.request.headers.get("user-agent"),
                ip=client.host if client else None,
            )
        response = redirect(PREFIX)
        sessions.sign_in(response, call.request, pair.session_id)
        return response

    async def use_or_show_errors(call: Call) -> Response:
        try:
            return await use(call)
        except _FormInvalid as invalid:
            link = await peek_link(db, invalid.token)
            errors = {e.field: e.message for e in invalid.errors}
            return await pages.render(
                call,
                "link.html",
                title="Sign in with a link",
                token=invalid.token,
                link=link,
                errors=errors,
                values=invalid.values,
            )

    async def with_provider(call: Call) -> Response:
        client = parts.oidc
        if client is None:
            return redirect(f"{PREFIX}/sign-in")
        return await sign_in_redirect(call, db=db, client=client, redirect_to=SIGN_IN_MARK)

    async def sign_out(call: Call) -> Response:
        actor = call.user
        own = actor.session_id
        if actor.impersonator_id is not None:  # the browser's own session opened this one
            own = sessions.session_of(call.request.cookies.get(COOKIE)) or own
        async with db.transaction() as conn:
            await revoke_session(conn, own)  # ends the impersonations it opened too
        sessions.authenticator.forget(own)
        response = redirect(f"{PREFIX}/sign-in", done="signed_out")
        for name in (COOKIE, AS_COOKIE):
            sessions.forget(response, call.request, name)
        return response

    def route(method: str, path: str, handler: Any, name: str, **options: Any) -> RouteSpec:
        return RouteSpec(method, path, handler, name, browser=True, **options)

    return [
        route("GET", f"{PREFIX}/sign-in", sign_in_page, "console.sign_in", public=True),
        route("GET", LINK_PATH, link_page, "console.link", public=True, rate_class="auth"),
        route("POST", LINK_PATH, use_or_show_errors, "console.link_use", public=True, rate_class="auth"),
        route("GET", f"{PREFIX}/sign-in/oidc", with_provider, "console.oidc", public=True, rate_class="auth"),
        route("POST", f"{PREFIX}/sign-out", sign_out, "console.sign_out"),
    ]


class _FormInvalid(Exception):
    """The first administrator's form had invalid fields (shown beside them; the link stays usable)."""

    def __init__(self, errors: list[FieldError], values: dict[str, str], token: str) -> None:
        super().__init__("invalid form")
        self.errors, self.values, self.token = errors, values, token
