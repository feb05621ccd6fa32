"""The shared parts of the OpenAPI document: the Problem schema with every `code` the service can answer,
one response per problem status, the headers the service sends and the ones it reads.

The codes come from the error classes themselves (every subclass of `RampartError` loaded when the app
is built, the app's own included), so a new error is documented by being declared.
"""

from __future__ import annotations

from typing import Any

from rampart import errors as e
from rampart.api.problems import MAX_ERRORS
from rampart.resources.openapi_parts import PROBLEM_JSON, PROBLEM_RESPONSES, ref

# Codes of problems written outside the error classes: an unexpected error, readiness, and the answers of
# the HTTP protocol to a request that never reached the application (rampart.ops.http_protocol).
_OTHER_CODES = {"internal_error": 500, "not_ready": 503, "malformed_request": 400, "header_too_large": 431}
_REQUEST_ID = {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,128}$"}
RATE_LIMIT_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")


def problem_codes() -> dict[str, int]:
    """Every problem `code`, with its status."""
    codes = dict(_OTHER_CODES)
    pending: list[type[e.RampartError]] = [e.RampartError]
    while pending:
        cls = pending.pop()
        pending += cls.__subclasses__()
        if not cls.pages_only:
            codes.setdefault(cls.code, cls.status)
    return dict(sorted(codes.items()))


def problem_schema(codes: dict[str, int]) -> dict[str, Any]:
    return {
        "type": "object",
        "description": "An RFC 9457 problem. Switch on `code`, which is stable; `title` and `detail` are "
        "for people.",
        "required": ["type", "title", "status", "detail", "code", "request_id"],
        "properties": {
            "type": {"type": "string", "description": "`about:blank`: the status and `code` say it all."},
            "title": {"type": "string", "description": "A short summary of the status."},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string", "description": "What went wrong, for people."},
            "code": {
                "type": "string",
                "enum": list(codes),
                "description": "What went wrong, for programs.",
            },
            "request_id": {
                **_REQUEST_ID,
                "description": "The X-Request-ID of the request, also in the logs.",
            },
            "errors": {
                "type": "array",
                "maxItems": MAX_ERRORS,
                "items": ref("schemas", "FieldProblem"),
                "description": f"One entry per bad field or parameter (at most {MAX_ERRORS}).",
            },
            "checks": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "Readiness only: each dependency and its state.",
            },
            "debug": {
                "type": "object",
                "description": "Development mode only: the exception and the end of its traceback.",
            },
        },
    }


FIELD_PROBLEM: dict[str, Any] = {
    "type": "object",
    "required": ["field", "code", "message"],
    "properties": {
        "field": {
            "type": "string",
            "description": 'The body field, query parameter or header at fault; `""` is the whole body.',
            "examples": ["title"],
        },
        "code": {
            "type": "string",
            "description": "Why, for programs: `required`, `too_long`, `invalid_type`, `unknown_field`, ...",
            "examples": ["too_long"],
        },
        "message": {"type": "string", "description": "Why, for people."},
    },
}


def problem_responses(codes: dict[str, int]) -> dict[str, Any]:
    """One shared response per problem status, naming the codes it can carry."""
    out = {}
    for status, (name, text) in PROBLEM_RESPONSES.items():
        which = [code for code, of in codes.items() if of == status]
        header_names = ["X-Request-ID", *RATE_LIMIT_HEADERS]
        if status == 401:
            header_names.append("WWW-Authenticate")
        if status == 429:
            header_names.append("Retry-After")
        described = f"{text}. Codes: {', '.join(f'`{c}`' for c in which)}." if which else f"{text}."
        out[name] = {
            "description": described,
            "headers": {h: ref("headers", h) for h in header_names},
            "content": {PROBLEM_JSON: {"schema": ref("schemas", "Problem")}},
        }
    return out


def _header(description: str, schema: dict[str, Any], *, required: bool) -> dict[str, Any]:
    return {"description": description, "required": required, "schema": schema}


HEADERS: dict[str, Any] = {
    "X-Request-ID": _header(
        "The request's id: the client's own X-Request-ID when it is valid, else a new one.",
        _REQUEST_ID,
        required=True,
    ),
    "ETag": _header(
        'The item\'s version as a strong entity tag (`"3"`): send it back in If-Match or If-None-Match.',
        {"type": "string", "pattern": '^"[0-9]+"$'},
        required=True,
    ),
    "Location": _header("The URL path of the new item.", {"type": "string"}, required=True),
    "RateLimit-Limit": _header(
        "Requests allowed in the window (on rate-limited routes).", {"type": "string"}, required=False
    ),
    "RateLimit-Remaining": _header(
        "Requests left in the window (on rate-limited routes).", {"type": "string"}, required=False
    ),
    "RateLimit-Reset": _header(
        "Seconds until the window resets (on rate-limited routes).", {"type": "string"}, required=False
    ),
    "Retry-After": _header("Seconds to wait before trying again.", {"type": "string"}, required=True),
    "WWW-Authenticate": _header(
        '`Bearer`, or `Bearer error="invalid_token"` when a token was sent but refused.',
        {"type": "string"},
        required=True,
    ),
    "Set-Cookie": _header(
        "`rampart_refresh` (HttpOnly, path /api/v1/auth) and `rampart_csrf`, for browser clients: set by "
        "sign-in and by a refresh that used the cookie, cleared by logout.",
        {"type": "string"},
        required=False,
    ),
    "Cache-Control": _header(
        "`no-store` on token responses, `no-cache` on the live stream, `public, max-age=60` on the JWKS.",
        {"type": "string"},
        required=True,
    ),
}

PARAMETERS: dict[str, Any] = {
    "X-Request-ID": {
        "name": "X-Request-ID",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "Your id for the request (at most 128 of `A-Z a-z 0-9 . _ -`), echoed back and "
        "logged; any other value is replaced by a new id.",
    },
    "If-Match": {
        "name": "If-Match",
        "in": "header",
        "required": False,
        # The grammar is in words, not a `pattern`: tools that know If-Match (schemathesis) generate
        # entity tags for a plain string, and the server checks it (PRECONDITION_PATTERN, decision 0022).
        "schema": {"type": "string"},
        "description": 'Change only if the item is still at this version: its ETag (`"3"`), a comma-'
        'separated list of them, or `*` (any version). A weak tag (`W/"3"`) never matches, nor does an '
        "empty list. 412 when none matches; a value that is not a list of entity tags is a 400 "
        "`invalid_header`.",
    },
    "If-None-Match": {
        "name": "If-None-Match",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": '304 with no body when the item is still at this version: its ETag (`"3"`, weak '
        "or strong), a comma-separated list of them, or `*`. A value that is not entity tags is a 400 "
        "`invalid_header`.",
    },
}

DESCRIPTION = """Rampart HTTP API.

- **Bodies** are JSON (`application/json`, at most 1 MiB): `{"data": ...}` on success, with `meta` on pages.
  A request body of any other media type is 415, `+json` types included; `charset=utf-8` is the one
  parameter accepted.
- **Errors** are RFC 9457 problems (`application/problem+json`, schema `Problem`): switch on `code`;
  `errors` names each bad field or parameter. Any operation may also answer 500, 503 (a dependency down,
  the server overloaded or draining) and 504 (over the time limit). A request the server cannot read
  as HTTP is refused before any operation, also as a problem: 400 `malformed_request`, or 431
  `header_too_large` for a request head over 64 KiB.
- **Pages**: `meta.next_cursor` is sent back as `cursor` with the same filters and sort; null on the last
  page. Lists whose `fields` names some fields answer `application/vnd.rampart.fields+json`, whose items
  hold just those fields.
- **Versions**: items carry `version`, sent as `ETag`; `If-Match` makes a change conditional (412 when the
  item changed), `If-None-Match` makes a read conditional (304).
- **Headers** on every response: `X-Request-ID`, `X-Content-Type-Options: nosniff`,
  `Referrer-Policy: no-referrer`, `X-Frame-Options: DENY`, `Cross-Origin-Opener-Policy: same-origin`,
  `Content-Security-Policy`, and `Strict-Transport-Security` over HTTPS. Rate-limited routes add
  `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`; a 429 adds `Retry-After`, a 401
  `WWW-Authenticate`, a 405 (a method the path does not have) `Allow`.
- **Authentication**: `Authorization: Bearer <access token>` unless an operation says otherwise.
- **CORS**: origins on the configured allow-list get `Access-Control-Allow-Origin` and the headers
  above exposed; a preflight (`OPTIONS` with `Access-Control-Request-Method`) is answered without auth.
"""
