"""The one mapping from errors to HTTP: RFC 9457 problem+json responses.

Domain errors carry their public detail; anything else is a 500 whose internals never reach a client
outside development mode (where a `debug` member helps the developer).
"""

from __future__ import annotations

import math
import traceback
from typing import Any

import orjson

from rampart import errors as e

PROBLEM_TYPE = "application/problem+json"

# A body of 60,000 unknown keys fits in the 1 MiB limit; listing every one would answer with megabytes.
MAX_ERRORS = 100
_UNEXPECTED = "An unexpected error occurred; it has been logged."


class _Unexpected(e.RampartError, code="internal_error", title="Internal server error"):
    """Anything raised that is not a Rampart error: its internals never reach a client."""


def rate_limit_headers(limit: int, remaining: int, reset_after: float) -> list[tuple[bytes, bytes]]:
    """What every response of a rate-limited route says is left, errors included."""
    return [
        (b"ratelimit-limit", str(limit).encode()),
        (b"ratelimit-remaining", str(remaining).encode()),
        (b"ratelimit-reset", str(max(0, math.ceil(reset_after))).encode()),
    ]


def problem(
    exc: BaseException, *, request_id: str, debug: bool
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, extra headers and body of the problem response for `exc`."""
    headers: list[tuple[bytes, bytes]] = []
    error = exc if isinstance(exc, e.RampartError) else _Unexpected(_UNEXPECTED)
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "code": error.code,
    }
    if error.errors:
        shown = error.errors[:MAX_ERRORS]
        body["errors"] = [{"field": f.field, "code": f.code, "message": f.message} for f in shown]
        if len(error.errors) > MAX_ERRORS:
            body["detail"] = (
                f"{error.detail} The first {MAX_ERRORS} of {len(error.errors)} errors are listed."
            )
    if isinstance(exc, e.Unauthorized):
        value = 'Bearer error="invalid_token"' if exc.token_present else "Bearer"
        headers.append((b"www-authenticate", value.encode()))
    elif isinstance(exc, e.RateLimited):
        headers.append((b"retry-after", str(max(1, math.ceil(exc.retry_after))).encode()))
        if exc.limit:
            headers += rate_limit_headers(exc.limit, exc.remaining, exc.reset_after)
    elif isinstance(exc, e.MethodNotAllowed):
        headers.append((b"allow", ", ".join(exc.allow).encode()))
    # Only in development mode: what raised it (the cause of a Rampart error, anything else itself).
    cause = exc.__cause__ if error is exc else exc
    body["request_id"] = request_id
    if debug and cause is not None:
        body["debug"] = {
            "exception": f"{type(cause).__name__}: {cause}",
            "traceback": traceback.format_exception(cause)[-6:],
        }
    return error.status, headers, orjson.dumps(body)
