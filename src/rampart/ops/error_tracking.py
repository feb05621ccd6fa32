"""Error tracking with Sentry (sentry-sdk), turned on by `RAMPART_SENTRY_DSN`.

Sentry's logging integration turns the error-level records already logged (the pipeline's "unhandled
error", the bus's failing handlers, the dispatcher's dead letters) into Sentry events, keeping their
`extra` (request_id, event_id): a Sentry issue leads straight to the log lines of its request or event.
Nothing secret leaves: no default PII, no local variables, no request bodies, and every event passes
`scrub` first (values under sensitive keys, bearer tokens, JWTs and URL passwords masked).
"""

from __future__ import annotations

import re
from typing import Any

FILTERED = "[Filtered]"
_SENSITIVE_KEY = re.compile(
    r"authorization|cookie|secret|passw|token|signature|dsn|api[-_]?key|credential|refresh", re.IGNORECASE
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}")


def scrub_text(text: str) -> str:
    """Mask bearer tokens, JWTs and URL passwords inside free text."""
    text = _BEARER.sub(lambda m: f"{m.group(1)} {FILTERED}", text)
    text = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}{FILTERED}@", text)
    return _JWT.sub(FILTERED, text)


def scrub(value: Any, *, depth: int = 0) -> Any:
    """A copy of `value` with sensitive keys' values and secrets inside strings replaced."""
    if depth > 20:
        return FILTERED
    if isinstance(value, dict):
        return {
            k: FILTERED if isinstance(k, str) and _SENSITIVE_KEY.search(k) else scrub(v, depth=depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        # Header lists come as [name, value] pairs.
        if len(value) == 2 and isinstance(value[0], str) and _SENSITIVE_KEY.search(value[0]):
            return [value[0], FILTERED]
        return [scrub(v, depth=depth + 1) for v in value]
    if isinstance(value, str):
        return scrub_text(value)
    return value


def _scrubbed(item: Any, hint: Any) -> Any:
    """Sentry's hook for events and breadcrumbs alike."""
    return scrub(item)


def init_error_tracking(dsn: str, *, environment: str, release: str) -> None:
    """Start sending error-level logs and unhandled exceptions to Sentry (once per process)."""
    import sentry_sdk

    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        release=f"rampart@{release}",
        send_default_pii=False,
        include_local_variables=False,
        max_request_body_size="never",
        # Only the defaults (logging, excepthook, threading, ...): the auto-enabled framework integrations
        # would patch Starlette and asyncpg underneath the pipeline, which already reports its errors.
        auto_enabling_integrations=False,
        before_send=_scrubbed,
        before_breadcrumb=_scrubbed,
    )
