"""OpenAPI fragments that every route module describes itself with, generated from data.

A route's `openapi` dict names its problems (`problems(404, 409)`), its headers (`headers("ETag")`) and
its named schemas (`named("Task", {...})`); `rampart.api.openapi.build_spec` turns each `Named` into a
`$ref` to `components`, defines the shared responses, headers and parameters referred to here, and adds
what every operation has (X-Request-ID, the rate-limit headers, 401/429/5xx). One description of each
problem and header, instead of a copy per route.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

JSON = "application/json"
PROBLEM_JSON = "application/problem+json"
REF = "#/components"

# Every problem status the service answers with, by the name of its shared response.
PROBLEM_RESPONSES: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "The request is malformed: bad JSON, a bad query parameter or header"),
    401: ("Unauthorized", "Not authenticated: no token, or one that is invalid, expired or revoked"),
    403: ("Forbidden", "Authenticated, but the caller's role or the object's rules do not allow it"),
    404: ("NotFound", "Absent, or not visible to the caller (the two are never told apart)"),
    409: ("Conflict", "A unique value is taken, or the change conflicts with the current state"),
    412: ("PreconditionFailed", "If-Match names a version that is no longer current"),
    413: ("PayloadTooLarge", "The body is over the size limit"),
    415: ("UnsupportedMediaType", "The body is not application/json"),
    422: ("ValidationFailed", "The body is invalid: `errors` has one entry per bad field"),
    429: ("RateLimited", "Too many requests: wait `Retry-After` seconds"),
    500: ("InternalError", "An unexpected error; it was logged under the request id"),
    503: ("ServiceUnavailable", "A dependency is down, or the server is overloaded; retry later"),
    504: ("Timeout", "The request took longer than the time limit; its database work was cancelled"),
}


@dataclass(frozen=True, slots=True)
class Named:
    """A schema with a name: `components/schemas/<name>` in the document, one class in a generated client.

    The same name may be used by several operations, with the same schema."""

    name: str
    schema: dict[str, Any]


def named(name: str, schema: dict[str, Any]) -> Named:
    return Named(name, schema)


def ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"{REF}/{kind}/{name}"}


def problems(*statuses: int) -> dict[str, Any]:
    """The responses of these problem statuses (each a shared response: Problem, its codes, headers)."""
    return {str(s): ref("responses", PROBLEM_RESPONSES[s][0]) for s in statuses}


def headers(*names: str) -> dict[str, Any]:
    """Response headers, by name, from the shared definitions (`ETag`, `Location`, `Set-Cookie`, ...)."""
    return {name: ref("headers", name) for name in names}


def json_content(schema: dict[str, Any] | Named, media: str = JSON) -> dict[str, Any]:
    return {media: {"schema": schema}}


def response(
    description: str,
    schema: dict[str, Any] | Named | None = None,
    *,
    header_names: tuple[str, ...] = (),
    media: str = JSON,
) -> dict[str, Any]:
    """A success response: its description, its JSON body (if any) and the headers it carries."""
    out: dict[str, Any] = {"description": description}
    if header_names:
        out["headers"] = headers(*header_names)
    if schema is not None:
        out["content"] = json_content(schema, media)
    return out


def json_body(
    schema: dict[str, Any] | Named, *, required: bool = True, description: str = ""
) -> dict[str, Any]:
    body: dict[str, Any] = {"required": required, "content": json_content(schema)}
    if description:
        body["description"] = description
    return body


def data(schema: dict[str, Any] | Named, name: str = "") -> dict[str, Any] | Named:
    """`{"data": <schema>}`, the envelope of every success body: named `<name>Response` for a named schema
    (or `name`), so that a generated client has one class for it, not one per operation."""
    envelope = {"type": "object", "required": ["data"], "properties": {"data": schema}}
    if name or isinstance(schema, Named):
        return named(name or f"{schema.name}Response", envelope)  # type: ignore[union-attr]
    return envelope


def nullable(schema: dict[str, Any] | Named) -> dict[str, Any]:
    """`schema` or null."""
    if isinstance(schema, Named) or "enum" in schema or "type" not in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    kind = schema["type"]
    return {**schema, "type": [*(kind if isinstance(kind, list) else [kind]), "null"]}


def query(name: str, schema: dict[str, Any] | Named, description: str = "", **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "in": "query", "required": False, "schema": schema}
    if description:
        out["description"] = description
    return {**out, **extra}


def path_id(name: str = "id", description: str = "") -> dict[str, Any]:
    """A UUID in the path (a malformed one answers 404, like an id that names nothing)."""
    out: dict[str, Any] = {"name": name, "in": "path", "required": True, "schema": UUID}
    if description:
        out["description"] = description
    return out


UUID: dict[str, Any] = {"type": "string", "format": "uuid"}
TIMESTAMP: dict[str, Any] = {"type": "string", "format": "date-time"}
