"""The refresh token as a cookie, for browser clients of the same site.

`rampart_refresh` holds the refresh token: HttpOnly (no script reads it), Secure, SameSite=Strict, and
sent only to /api/v1/auth. A cookie is sent by the browser on its own, so the cookie path of
`POST /auth/refresh` also needs proof that the page itself asked: the `X-CSRF-Token` header must equal
the `rampart_csrf` cookie, which scripts of our own site can read and other sites cannot (double submit).
"""

from __future__ import annotations

import hmac
import secrets

from starlette.requests import Request
from starlette.responses import Response

from rampart.auth.sessions import TokenPair
from rampart.errors import Forbidden
from rampart.resources.routes import API_PREFIX

REFRESH_COOKIE = "rampart_refresh"
CSRF_COOKIE = "rampart_csrf"
CSRF_HEADER = "x-csrf-token"
COOKIE_PATH = f"{API_PREFIX}/auth"


class CsrfFailed(Forbidden):
    code = "csrf_failed"
    title = "CSRF check failed"


def set_token_cookies(response: Response, pair: TokenPair, *, max_age: int) -> None:
    response.set_cookie(
        REFRESH_COOKIE,
        pair.refresh_token,
        max_age=max_age,
        path=COOKIE_PATH,
        secure=True,
        httponly=True,
        samesite="strict",
    )
    response.set_cookie(
        CSRF_COOKIE, secrets.token_urlsafe(24), max_age=max_age, path="/", secure=True, samesite="strict"
    )


def clear_token_cookies(response: Response) -> None:
    response.delete_cookie(REFRESH_COOKIE, path=COOKIE_PATH, secure=True, httponly=True, samesite="strict")
    response.delete_cookie(CSRF_COOKIE, path="/", secure=True, samesite="strict")


def refresh_cookie(request: Request) -> str | None:
    """The refresh token of the cookie, after the CSRF check; None when there is no such cookie."""
    token = request.cookies.get(REFRESH_COOKIE)
    if not token:
        return None
    expected = request.cookies.get(CSRF_COOKIE, "")
    sent = request.headers.get(CSRF_HEADER, "")
    if not expected or not hmac.compare_digest(expected.encode(), sent.encode()):
        raise CsrfFailed("The X-CSRF-Token header must repeat the rampart_csrf cookie.")
    return token
