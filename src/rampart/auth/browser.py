"""Browser sessions (the console): an HttpOnly, SameSite=Strict cookie that names a server-side session.

The cookie holds `<session id>.<tag>`, the tag an HMAC of the session id under a key derived from the
server secret, so only this server makes one. The session is a row of `sessions` like any other:
revoking it, disabling its user or demoting them, and the 1 s bound of the session check apply unchanged
(the check is the `Authenticator`'s), and it shows in the user's session list.

While an administrator acts as a user, a second cookie names the impersonation session; it is honoured
only while that session lives and was opened by the session of the first cookie.

CSRF: every state-changing request carries a token in its form (`csrf_token`) or an `X-CSRF-Token`
header. Signed in, the token is an HMAC of the session id under another derived key (a synchronizer
token that needs no storage, and differs per session); signed out (the sign-in forms), it is a random
value that must also be in the `rampart_console_pre` cookie (double submit). SameSite=Strict keeps the
cookies off requests that other sites start.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from rampart.access.actor import Actor
from rampart.auth.cookies import CsrfFailed
from rampart.auth.sessions import Authenticator
from rampart.errors import Unauthorized
from rampart.lib.ids import parse_uuid

COOKIE = "rampart_console"
AS_COOKIE = "rampart_console_as"
PRE_COOKIE = "rampart_console_pre"
CSRF_FIELD = "csrf_token"
# The `redirect_to` of a sign-in with the identity provider started by the console: no URL a client could
# pass (those must be absolute and allow-listed), so the callback knows it is the console's.
SIGN_IN_MARK = "console:"
CSRF_HEADER = "x-csrf-token"
_SAFE_METHODS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True, slots=True)
class BrowserCaller:
    """Who a browser request comes from.

    `actor`: who acts (the impersonated user while an impersonation lasts), None when signed out.
    `session_id`: the browser's own session (the administrator's, also while impersonating).
    `csrf_token`: what this browser's forms must carry. `fresh_pre`: a new pre-session token to set.
    `impersonation_ended`: the impersonation cookie names a session that is over (to clear).
    """

    actor: Actor | None
    session_id: uuid.UUID | None
    csrf_token: str
    fresh_pre: bool = False
    impersonation_ended: bool = False


class BrowserSessions:
    """Makes and reads the console's cookies and CSRF tokens; see the module docstring."""

    def __init__(
        self, *, secret: bytes, authenticator: Authenticator, path: str, ttl: int, https: bool
    ) -> None:
        self._cookie_key = hashlib.sha256(b"rampart-browser-session:" + secret).digest()
        self._csrf_key = hashlib.sha256(b"rampart-browser-csrf:" + secret).digest()
        self.authenticator = authenticator
        self.path = path
        self.ttl = ttl
        self.https = https  # the public URL is https: cookies are Secure whatever the request says

    # ----- cookie values and tokens ------------------------------------------------------------------
    def _tag(self, key: bytes, session_id: uuid.UUID) -> str:
        mac = hmac.new(key, session_id.bytes, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def cookie_value(self, session_id: uuid.UUID) -> str:
        return f"{session_id}.{self._tag(self._cookie_key, session_id)}"

    def session_of(self, value: str | None) -> uuid.UUID | None:
        """The session a cookie value names, if this server made it."""
        if not value or len(value) > 200:
            return None
        raw_id, _, tag = value.partition(".")
        session_id = parse_uuid(raw_id)
        if session_id is None or not hmac.compare_digest(
            self._tag(self._cookie_key, session_id).encode(), tag.encode()
        ):
            return None
        return session_id

    def csrf_token(self, session_id: uuid.UUID) -> str:
        return self._tag(self._csrf_key, session_id)

    # ----- requests ----------------------------------------------------------------------------------
    async def caller(self, request: Request) -> BrowserCaller:
        """Who sends `request` (signed out when the cookie is absent, forged or its session is over)."""
        cookies = request.cookies
        session_id = self.session_of(cookies.get(COOKIE))
        own: Actor | None = None
        if session_id is not None:
            try:
                own = await self.authenticator.session_actor(session_id)
            except Unauthorized:
                own = None
        if own is None or session_id is None:
            pre = cookies.get(PRE_COOKIE, "")
            fresh = not (32 <= len(pre) <= 64 and pre.isascii())
            return BrowserCaller(None, None, secrets.token_urlsafe(32) if fresh else pre, fresh_pre=fresh)
        token = self.csrf_token(session_id)
        as_value = cookies.get(AS_COOKIE)
        if as_value is None:
            return BrowserCaller(own, session_id, token)
        acting = self.session_of(as_value)
        if acting is not None:
            try:
                actor = await self.authenticator.session_actor(acting, opened_by=session_id)
                return BrowserCaller(actor, session_id, token)
            except Unauthorized:
                pass
        return BrowserCaller(own, session_id, token, impersonation_ended=True)

    def check_csrf(self, request: Request, caller: BrowserCaller, form_token: str | None) -> None:
        """Refuse a state-changing request that does not carry this browser's token."""
        if request.method in _SAFE_METHODS:
            return
        sent = form_token or request.headers.get(CSRF_HEADER, "")
        expected = caller.csrf_token
        if caller.session_id is None and request.cookies.get(PRE_COOKIE) != expected:
            expected = ""  # signed out: the token must also be the cookie's (double submit)
        if not expected or not hmac.compare_digest(expected.encode(), sent.encode()):
            raise CsrfFailed("The form is out of date or did not come from this console; reload the page.")

    # ----- responses ---------------------------------------------------------------------------------
    def continue_page(self, request: Request, session_id: uuid.UUID) -> Response:
        """After the identity provider's redirect: a page that moves on to the console by itself.

        A redirect would not do: the browser's way here began on another site, and a SameSite=Strict
        cookie is not sent on the rest of such a chain; a navigation this page starts is same-site.
        """
        target = self.path
        html = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="refresh" content="0;url={target}"><title>Signed in</title></head>'
            f'<body><main><p>Signed in. <a href="{target}">Continue to the console</a>.</p></main>'
            "</body></html>"
        )
        response = Response(html, media_type="text/html", headers={"Cache-Control": "no-store"})
        self.sign_in(response, request, session_id)
        return response

    def _secure(self, request: Request) -> bool:
        return self.https or request.url.scheme == "https"

    def sign_in(self, response: Response, request: Request, session_id: uuid.UUID) -> None:
        """Set the session cookie (and drop a stale impersonation and the pre-session token)."""
        response.set_cookie(
            COOKIE,
            self.cookie_value(session_id),
            max_age=self.ttl,
            path=self.path,
            secure=self._secure(request),
            httponly=True,
            samesite="strict",
        )
        self.forget(response, request, AS_COOKIE)
        self.forget(response, request, PRE_COOKIE)

    def act_as(self, response: Response, request: Request, session_id: uuid.UUID, *, max_age: int) -> None:
        response.set_cookie(
            AS_COOKIE,
            self.cookie_value(session_id),
            max_age=max_age,
            path=self.path,
            secure=self._secure(request),
            httponly=True,
            samesite="strict",
        )

    def set_pre(self, response: Response, request: Request, token: str) -> None:
        response.set_cookie(
            PRE_COOKIE,
            token,
            max_age=3600,
            path=self.path,
            secure=self._secure(request),
            httponly=True,
            samesite="strict",
        )

    def forget(self, response: Response, request: Request, name: str) -> None:
        response.delete_cookie(
            name, path=self.path, secure=self._secure(request), httponly=True, samesite="strict"
        )
