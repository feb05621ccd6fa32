"""Sign-in with an OpenID Connect provider: GET /auth/google/login and GET /auth/google/callback.

The paths say "google" (API.md); any provider found by discovery from the configured issuer works.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from functools import partial
from typing import Any
from urllib.parse import urlencode

from starlette.responses import RedirectResponse, Response

from rampart.access.actor import Roles
from rampart.access.impersonation import MANAGE_USERS
from rampart.auth.browser import SIGN_IN_MARK, BrowserSessions
from rampart.auth.cookies import set_token_cookies
from rampart.auth.oidc import InvalidState, OIDCClient, SignInDenied, SignInNotConfigured
from rampart.auth.oidc_login import (
    STATE_TTL,
    check_browser,
    check_redirect,
    link_user,
    open_login_session,
    start_login,
    take_state,
)
from rampart.auth.routes_sessions import NO_STORE, TOKEN_PAIR
from rampart.auth.tokens import TokenIssuer
from rampart.db.pool import Database
from rampart.resources.endpoints import Call, RouteSpec, json_response
from rampart.resources.manager import ResourceManager
from rampart.resources.openapi_parts import data, headers, named, problems, query, response
from rampart.resources.openapi_schema import schemas
from rampart.resources.routes import API_PREFIX

CALLBACK_PATH = f"{API_PREFIX}/auth/google/callback"
_OAUTH_ERROR = re.compile(r"[a-z_]{1,64}")


async def sign_in_redirect(
    call: Call, *, db: Database, client: OIDCClient, redirect_to: str | None
) -> RedirectResponse:
    """The redirect to the provider that starts a sign-in, with the cookie that binds it to this browser
    (the callback is refused without it: login CSRF). Used by the API's login and the console's."""
    url, binding = await start_login(db=db, client=client, redirect_to=redirect_to)
    response = RedirectResponse(url, status_code=302, headers=NO_STORE)
    # Lax: sent on the provider's redirect back (a top-level GET from another site), not on a cross-site
    # subrequest. Secure whenever the browser is on HTTPS (here, or at the public URL).
    response.set_cookie(
        binding.name,
        binding.value,
        max_age=STATE_TTL,
        path=CALLBACK_PATH,
        httponly=True,
        samesite="lax",
        secure=call.request.url.scheme == "https" or client.redirect_uri.startswith("https:"),
    )
    return response


def oidc_routes(
    *,
    client: OIDCClient | None,
    db: Database,
    users: ResourceManager,
    tokens: TokenIssuer,
    session_ttl: int,
    redirect_allowlist: Sequence[str],
    admin_emails: Sequence[str],
    browser: BrowserSessions | None = None,
    roles: Roles | None = None,
) -> list[RouteSpec]:
    """`browser` (with `roles`): the console's sessions, for sign-ins the console started."""

    def configured() -> OIDCClient:
        if client is None:
            raise SignInNotConfigured("Sign-in with an identity provider is not configured on this server.")
        return client

    async def login(call: Call) -> Any:
        redirect_to = call.request.query_params.get("redirect_to")
        if redirect_to is not None:
            redirect_to = check_redirect(redirect_to, redirect_allowlist)
        return await sign_in_redirect(call, db=db, client=configured(), redirect_to=redirect_to)

    async def callback(call: Call) -> Any:
        oidc = configured()
        params = call.request.query_params
        state = params.get("state") or ""
        error = params.get("error")
        if state or error is None:
            # Before anything is read or spent: another browser's visit (login CSRF) changes nothing.
            check_browser(state, call.request.cookies)
        if error is not None:
            if state:
                with contextlib.suppress(InvalidState):
                    await take_state(db, state)  # spent either way: this sign-in is over
            shown = error if _OAUTH_ERROR.fullmatch(error) else "error"
            raise SignInDenied(f"The identity provider refused the sign-in ({shown}).")
        issued_by = params.get("iss")
        if issued_by is not None and issued_by.rstrip("/") != oidc.issuer:
            raise InvalidState("The sign-in response came from another identity provider.")  # RFC 9207
        code = params.get("code")
        login_state = await take_state(db, state)
        if not code:
            raise InvalidState("The sign-in response has no authorization code.")
        id_token = await oidc.exchange(code=code, code_verifier=login_state.code_verifier)
        identity = await oidc.verify(id_token, nonce=login_state.nonce)
        user = await link_user(db=db, users=users, identity=identity, admin_emails=admin_emails)
        client_addr = call.request.client
        console = login_state.redirect_to == SIGN_IN_MARK and browser is not None and roles is not None
        if console and roles is not None and MANAGE_USERS not in roles.permissions(str(user["role"])):
            raise SignInDenied("The console is for administrators; this account is not one.")
        pair = await open_login_session(
            db=db,
            tokens=tokens,
            user=user,
            session_ttl=browser.ttl if console and browser is not None else session_ttl,
            user_agent=call.request.headers.get("user-agent"),
            ip=client_addr.host if client_addr else None,
        )
        if console and browser is not None:  # the console's session: a cookie, no tokens handed out
            return browser.continue_page(call.request, pair.session_id)
        response: Response
        if login_state.redirect_to and login_state.redirect_to != SIGN_IN_MARK:
            fragment = urlencode({k: str(v) for k, v in pair.as_json().items()})
            response = RedirectResponse(
                f"{login_state.redirect_to}#{fragment}", status_code=302, headers=NO_STORE
            )
        else:
            response = json_response({"data": {**pair.as_json(), "user": user}}, headers=NO_STORE)
        set_token_cookies(response, pair, max_age=session_ttl)  # for browser clients of this site
        return response

    signed_in = named(
        "SignedIn",
        {
            "type": "object",
            "required": [*TOKEN_PAIR.schema["required"], "user"],
            "properties": {**TOKEN_PAIR.schema["properties"], "user": schemas(users.resource)["item"]},
        },
    )
    tokens_set = ("Set-Cookie", "Cache-Control")
    sign_in_route = partial(RouteSpec, public=True, rate_class="auth", tags=("auth",))
    return [
        sign_in_route(
            "GET",
            f"{API_PREFIX}/auth/google/login",
            login,
            "auth.oidc.login",
            summary="Start signing in with the identity provider (302 to its authorize URL)",
            openapi={
                "parameters": [
                    query(
                        "redirect_to",
                        {"type": "string"},
                        "Where to send the browser with the tokens (must be allow-listed)",
                    )
                ],
                "responses": {
                    "302": {
                        "description": "To the provider's authorize URL",
                        "headers": {
                            **headers("Location", "Cache-Control"),
                            "Set-Cookie": {
                                "description": "`rampart_signin_<id>`: binds the sign-in to this browser "
                                "(HttpOnly, SameSite=Lax, Path=/api/v1/auth/google/callback, 10 minutes); "
                                "the callback refuses a browser without it (403 `sign_in_browser_mismatch`).",
                                "required": True,
                                "schema": {"type": "string"},
                            },
                        },
                    },
                    **problems(400, 404),
                },
            },
        ),
        sign_in_route(
            "GET",
            CALLBACK_PATH,
            callback,
            "auth.oidc.callback",
            summary="Where the identity provider sends the browser back: a session for the user",
            openapi={
                "description": "Only the browser that started the sign-in gets a session: without its "
                "`rampart_signin_<id>` cookie the answer is 403 `sign_in_browser_mismatch` and the sign-in "
                "stays unspent. A sign-in the web console started ends on a page that continues to the "
                "console (its session is a cookie; no tokens are handed out).",
                "parameters": [query(name, {"type": "string"}) for name in ("code", "state", "error", "iss")],
                "responses": {
                    "200": response(
                        "Signed in: a token pair and the user", data(signed_in), header_names=tokens_set
                    ),
                    "302": response(
                        "Signed in: to redirect_to, with the token pair in the fragment",
                        header_names=("Location", *tokens_set),
                    ),
                    **problems(400, 401, 403, 404, 409),
                },
            },
        ),
    ]
