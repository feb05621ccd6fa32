"""Domain errors. They carry no HTTP: `rampart.api.problems` is the one place that maps them to responses.

Each error has a public `detail` (safe to show a client) and an optional internal `cause` that is logged
but never sent outside development mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with one input field or query parameter."""

    field: str
    code: str
    message: str


class RampartError(Exception):
    """Base of every error the service reports to a client on purpose."""

    code: ClassVar[str] = "error"
    title: ClassVar[str] = "Error"
    status: ClassVar[int] = 500  # the HTTP status `rampart.api.problems` answers it with
    # Raised by browser pages only (the console's), never by an API route: its code is left out of the
    # OpenAPI document's `Problem.code` enum, which would otherwise depend on whether the console is on.
    pages_only: ClassVar[bool] = False

    def __init__(self, detail: str, *, errors: list[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []

    def __init_subclass__(cls, *, code: str = "", title: str = "", status: int = 0, **options: Any) -> None:
        """`class NotFound(RampartError, code="not_found", title="Not found", status=404)`; what is not
        given (or set in the class body) is the base's."""
        super().__init_subclass__(**options)
        cls.code, cls.title, cls.status = code or cls.code, title or cls.title, status or cls.status


class InvalidRequest(RampartError, code="bad_request", title="Bad request", status=400): ...


class MalformedJSON(InvalidRequest, code="malformed_json", title="Malformed JSON"): ...


class InvalidQuery(InvalidRequest, code="invalid_query", title="Invalid query"): ...


def bad_query(field: str, code: str, message: str) -> InvalidQuery:
    """One query parameter (or header) is wrong: its message is the error's detail too."""
    return InvalidQuery(message, errors=[FieldError(field, code, message)])


class InvalidHeader(InvalidRequest, code="invalid_header", title="Invalid header"): ...


class Unauthorized(RampartError, code="unauthorized", title="Unauthorized", status=401):
    def __init__(self, detail: str, *, token_present: bool = False) -> None:
        super().__init__(detail)
        self.token_present = token_present


class Forbidden(RampartError, code="forbidden", title="Forbidden", status=403): ...


class NotFound(RampartError, code="not_found", title="Not found", status=404): ...


class MethodNotAllowed(RampartError, code="method_not_allowed", title="Method not allowed", status=405):
    def __init__(self, detail: str, *, allow: list[str]) -> None:
        super().__init__(detail)
        self.allow = allow


class Conflict(RampartError, code="conflict", title="Conflict", status=409): ...


class PreconditionFailed(
    RampartError, code="precondition_failed", title="Precondition failed", status=412
): ...


class PayloadTooLarge(RampartError, code="payload_too_large", title="Payload too large", status=413): ...


class UnsupportedMediaType(
    RampartError, code="unsupported_media_type", title="Unsupported media type", status=415
): ...


class ValidationFailed(RampartError, code="validation_failed", title="Validation failed", status=422):
    def __init__(self, errors: list[FieldError], detail: str = "The request has invalid fields.") -> None:
        super().__init__(detail, errors=errors)


class RateLimited(RampartError, code="rate_limited", title="Too many requests", status=429):
    def __init__(
        self, detail: str, *, retry_after: float, limit: int = 0, remaining: int = 0, reset_after: float = 0.0
    ) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
        self.limit = limit
        self.remaining = remaining
        self.reset_after = reset_after


class ServiceUnavailable(
    RampartError, code="service_unavailable", title="Service unavailable", status=503
): ...


class RequestTimeout(RampartError, code="timeout", title="Request timed out", status=504): ...
