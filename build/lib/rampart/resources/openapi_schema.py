"""JSON Schemas and OpenAPI parameters derived from a resource declaration."""

from __future__ import annotations

from typing import Any

from rampart.resources.query import MAX_CONTAINS_LENGTH
from rampart.resources.spec import Resource

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_STATUS_TEXT = {
    400: "Malformed request or bad query",
    401: "Not authenticated",
    403: "Not allowed",
    404: "Absent or not visible",
    405: "Method not allowed",
    409: "Conflict",
    412: "Precondition failed",
    413: "Body too large",
    415: "Body is not JSON",
    422: "Validation failed",
    429: "Rate limited",
    503: "Unavailable",
    504: "Timed out",
}


def problem_responses(*statuses: int) -> dict[str, Any]:
    return {
        str(s): {
            "description": _STATUS_TEXT[s],
            "content": {"application/problem+json": {"schema": PROBLEM_REF}},
        }
        for s in statuses
    }


def _field_schema(resource: Resource, name: str) -> dict[str, Any]:
    field = resource.all_fields[name]
    schema = field.type.schema()
    if field.nullable:
        schema = {**schema, "type": [schema["type"], "null"]} if "type" in schema else schema
    if field.read_only:
        schema["readOnly"] = True
    if field.description:
        schema["description"] = field.description
    return schema


def item_schema(resource: Resource) -> dict[str, Any]:
    """The schema of an item as the API returns it (every field; sparse fields may omit some)."""
    return {
        "type": "object",
        "properties": {name: _field_schema(resource, name) for name in resource.all_fields},
    }


def create_schema(resource: Resource) -> dict[str, Any]:
    parent_field = resource.parent.field if resource.parent else None
    props = {n: _field_schema(resource, n) for n in resource.writable_fields if n != parent_field}
    required = [n for n, f in resource.writable_fields.items() if f.required and n != parent_field]
    out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        out["required"] = required
    return out


def update_schema(resource: Resource) -> dict[str, Any]:
    parent_field = resource.parent.field if resource.parent else None
    props = {
        n: _field_schema(resource, n)
        for n, f in resource.writable_fields.items()
        if not f.immutable and n != parent_field
    }
    return {"type": "object", "properties": props, "additionalProperties": False}


def list_parameters(resource: Resource) -> list[dict[str, Any]]:
    """Query parameters of a list: each filter operator, sort, limit, cursor, fields, include_total."""
    params: list[dict[str, Any]] = []
    for name, field in resource.all_fields.items():
        for op in field.operators:
            key = name if op == "eq" else f"{name}[{op}]"
            schema: dict[str, Any] = {"type": "string"}
            if op == "is":
                schema = {"type": "string", "enum": ["null", "not_null"]}
            elif op == "contains":
                schema = {"type": "string", "maxLength": MAX_CONTAINS_LENGTH}
            elif op != "in":
                schema = field.type.filter_schema()
            params.append(
                {
                    "name": key,
                    "in": "query",
                    "required": False,
                    "schema": schema,
                    "description": f"Filter on {name} ({op}).",
                }
            )
    sortable = [n for n, f in resource.all_fields.items() if f.sort]
    params += [
        {
            "name": "sort",
            "in": "query",
            "required": False,
            "schema": {"type": "string"},
            "description": f"Comma-separated; prefix '-' for descending. Sortable: {', '.join(sortable)}.",
        },
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
        },
        {
            "name": "cursor",
            "in": "query",
            "required": False,
            "schema": {"type": "string"},
            "description": "Opaque cursor from meta.next_cursor.",
        },
        {
            "name": "fields",
            "in": "query",
            "required": False,
            "schema": {"type": "string"},
            "description": f"Sparse fields, comma-separated from: {', '.join(resource.all_fields)}.",
        },
        {
            "name": "include_total",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "enum": ["true", "false"]},
        },
    ]
    return params
