"""The outer request pipeline, as one pure ASGI middleware (no per-request middleware stack to walk).

In order: CORS (preflight answered without auth) → request id → security headers → body size limit and
content-type check → request timeout → [router: authentication → rate limit → handler] → problem+json
for every error, access log and metrics.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rampart.api.problems import PROBLEM_TYPE, problem
from rampart.errors import MalformedJSON, PayloadTooLarge, RampartError, RequestTimeout, UnsupportedMediaType
from rampart.lib.ids import new_id_text
from rampart.lib.security_headers import API_CSP, SECURITY_HEADERS

log = logging.getLogger("rampart.request")
access_log = logging.getLogger("rampart.access")

_REQUEST_ID_RE = re.compile(rb"[A-Za-z0-9._-]{1,128}")  # used with fullmatch: `$` would allow "\n"
_UTF8_CHARSET = re.compile(rb'charset\s*=\s*(?:utf-8|"utf-8")\s*;?', re.IGNORECASE)
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_DOCS_CSP = (
    b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
)
# Browser pages (the console): our own scripts, styles and images only; forms post only to us.
PAGES_CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self';"
    b" form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_FORM = b"application/x-www-form-urlencoded"
_EXPOSE = b"X-Request-ID, ETag, Location, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, Retry-After"
_ALLOW_HEADERS = b"Authorization, Content-Type, If-Match, If-None-Match, Last-Event-ID, X-Request-ID"
_ALLOW_METHODS = b"GET, POST, PATCH, DELETE, OPTIONS"

Observer = Callable[[Scope, int, float], None]


class Pipeline:
    """Wraps the router; see the module docstring for what it does, in order."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        cors_origins: Iterable[str],
        body_limit: int,
        timeout: float,
        debug: bool,
        access_log_enabled: bool,
        observers: Iterable[Observer] = (),
        pages: str | None = None,
    ) -> None:
        self.app = app
        # The path prefix of browser pages (`/console`): their CSP, and HTML forms as bodies.
        self.pages = pages
        self.origins = frozenset(o.encode() for o in cors_origins if o)
        self.body_limit = body_limit
        self.timeout = timeout
        self.debug = debug
        self.access_log_enabled = access_log_enabled
        self.observers = tuple(observers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope["headers"])
        incoming = headers.get(b"x-request-id")
        request_id = incoming.decode() if incoming and _REQUEST_ID_RE.fullmatch(incoming) else new_id_text()
        scope["rampart.request_id"] = request_id
        origin = headers.get(b"origin", b"")
        cors = origin in self.origins
        path: str = scope["path"]
        extra: list[tuple[bytes, bytes]] = [(b"x-request-id", request_id.encode()), *SECURITY_HEADERS]
        if path.startswith("/api/"):  # the hot path: one test
            csp = API_CSP
        elif path == "/docs" or path.startswith("/docs/"):
            csp = _DOCS_CSP
        elif self.pages is not None and (path == self.pages or path.startswith(self.pages + "/")):
            csp = PAGES_CSP
        else:
            csp = API_CSP
        extra.append((b"content-security-policy", csp))
        if scope.get("scheme") == "https":
            extra.append((b"strict-transport-security", b"max-age=31536000; includeSubDomains"))
        if cors:
            extra += [
                (b"access-control-allow-origin", origin),
                (b"vary", b"Origin"),
                (b"access-control-expose-headers", _EXPOSE),
            ]
        status = 0  # until the response starts

        async def send_wrapped(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # The router may leave headers for whatever response goes out (RateLimit-*, errors too).
                message["headers"] = [
                    *message.get("headers", []),
                    *extra,
                    *scope.get("rampart.response_headers", ()),
                ]
            await send(message)

        try:
            if scope["method"] == "OPTIONS" and b"access-control-request-method" in headers:
                await self._preflight(cors, send_wrapped)
            else:
                # Reading the body counts against the time limit too: a trickled upload must not hold on.
                async with asyncio.timeout(self.timeout) as deadline:
                    # A streaming route lifts it once authenticated (RouteSpec.streaming).
                    scope["rampart.deadline"] = deadline
                    body = await self._read_body(scope, headers, receive)
                    scope["rampart.body"] = body
                    await self.app(scope, _replay(body, receive), send_wrapped)
        except Exception as exc:
            await self._fail(exc, status != 0, request_id, send_wrapped)
        duration = time.perf_counter() - started
        for observe in self.observers:
            observe(scope, status, duration)
        if self.access_log_enabled:
            access_log.info(
                "%s %s %s %.1fms",
                scope["method"],
                scope.get("rampart.route", path),
                status,
                duration * 1000,
                extra={
                    "request_id": request_id,
                    "method": scope["method"],
                    "status": status,
                    "route": scope.get("rampart.route"),
                    "duration_ms": round(duration * 1000, 2),
                    "user_id": scope.get("rampart.user_id"),
                },
            )

    async def _preflight(self, cors: bool, send: Send) -> None:
        headers = [(b"content-length", b"0")]
        if cors:
            headers += [
                (b"access-control-allow-methods", _ALLOW_METHODS),
                (b"access-control-allow-headers", _ALLOW_HEADERS),
                (b"access-control-max-age", b"600"),
            ]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async def _read_body(self, scope: Scope, headers: dict[bytes, bytes], receive: Receive) -> bytes:
        if scope["method"] not in _BODY_METHODS:
            return b""
        length = headers.get(b"content-length")
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        if length is not None:
            if not length.isdigit():
                raise MalformedJSON("Content-Length is not a number.")
            if int(length) > self.body_limit:
                raise PayloadTooLarge(f"The body is larger than {self.body_limit} bytes.")
        if (length is None or length == b"0") and not chunked:
            return b""
        content_type = headers.get(b"content-type", b"")
        if (
            content_type != b"application/json"
            and not _is_json(content_type)
            and not self._form(scope, content_type)
        ):
            raise UnsupportedMediaType("The request body must be application/json (charset utf-8, if any).")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise MalformedJSON("The client went away before sending the whole body.")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.body_limit:
                raise PayloadTooLarge(f"The body is larger than {self.body_limit} bytes.")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _form(self, scope: Scope, content_type: bytes) -> bool:
        """An HTML form posted to a browser page (asked only once the body is not JSON)."""
        path: str = scope["path"]
        return (
            self.pages is not None
            and path.startswith(self.pages + "/")
            and content_type.partition(b";")[0].strip().lower() == _FORM
        )

    async def _fail(self, error: Exception, started: bool, request_id: str, send: Send) -> None:
        if isinstance(error, TimeoutError):  # the time limit (`asyncio.timeout` above) ran out
            error = RequestTimeout("The request took too long.")
        if isinstance(error, RequestTimeout):
            log.warning("request timed out", extra={"request_id": request_id})
        elif not isinstance(error, RampartError):
            log.error("unhandled error", exc_info=error, extra={"request_id": request_id})
        if started:
            return  # the response is on its way; nothing sensible can be sent any more
        status, headers, body = problem(error, request_id=request_id, debug=self.debug)
        headers += [(b"content-type", PROBLEM_TYPE.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _is_json(content_type: bytes) -> bool:
    """`application/json`, any case and spacing, with at most one parameter: `charset=utf-8`.

    Nothing else: a `+json` type promises semantics (merge patch, JSON-LD, ...) that the API does not
    implement, and another charset would be decoded as UTF-8 regardless.
    """
    media_type, _, params = content_type.partition(b";")
    if media_type.strip().lower() != b"application/json":
        return False
    params = params.strip()
    return not params or _UTF8_CHARSET.fullmatch(params) is not None


def _replay(body: bytes, downstream: Receive) -> Receive:
    """A receive() that hands the already-read body to the app, then passes on the server's messages, so
    a long response (a stream) hears `http.disconnect`."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        while True:
            message = await downstream()
            if message["type"] != "http.request":  # the body was read already: skip what is left of it
                return message

    return receive
