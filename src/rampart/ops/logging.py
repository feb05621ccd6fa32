"""Structured logging: JSON lines in production, readable text in development.

Log records carry the request id, user id, route template, status and duration as fields. Tokens and
secrets never reach a record: handlers log ids, never headers or bodies, and `redact` scrubs messages.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import sys
from typing import Any

import orjson

_FIELDS = ("request_id", "user_id", "route", "method", "status", "duration_ms", "event_id", "event_type")
# Bearer tokens, JWTs and key=value secrets that might slip into an exception message.
_SECRET_RE = re.compile(
    r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+|eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"
    r"|((?:password|secret|token|api_key)[\"']?\s*[=:]\s*)\S+"  # also "password": "x" in JSON or a repr
    r"|([a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s/]+@"  # the password of any DSN: postgresql, redis, ...
)


def redact(text: str) -> str:
    """Replace anything that looks like a credential with `***`."""

    def sub(match: re.Match[str]) -> str:
        prefix = match.group(1) or match.group(2) or match.group(3)
        return f"{prefix}***" + ("@" if match.group(3) else "") if prefix else "***"

    return _SECRET_RE.sub(sub, text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for name in _FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(out).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = redact(super().format(record))
        rid = getattr(record, "request_id", None)
        return f"{text} [request_id={rid}]" if rid else text


def configure_logging(*, json: bool, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        JsonFormatter() if json else TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("uvicorn.access").disabled = True
