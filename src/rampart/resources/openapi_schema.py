"""The OpenAPI description of a resource, derived from its declaration: named schemas (the item, the
create and update bodies, the page), the list's query parameters exactly as `rampart.resources.query`
parses them, and the words (summaries, descriptions, examples) taken from `Resource.description` and the
fields' descriptions.
"""

from __future__ import annotations

import re
from typing import Any

from rampart.resources.fields import (
    NO_NUL_PATTERN,
    Boolean,
    Choice,
    Date,
    FieldType,
    Id,
    Integer,
    Text,
    Timestamp,
)
from rampart.resources.openapi_parts import Named, named, nullable, problems
from rampart.resources.query import (
    DEFAULT_LIMIT,
    MAX_CONTAINS_LENGTH,
    MAX_IN_VALUES,
    MAX_LIMIT,
    sort_key_limit,
)
from rampart.resources.spec import MISSING, Field, Resource, pascal_case

# Kept for route modules written against the earlier name.
problem_responses = problems

# Sparse lists (`fields=`) hold only some fields of each item: a different representation, with its own
# media type and schema, so that the full item keeps every field required (decision 0022).
SPARSE_JSON = "application/vnd.rampart.fields+json"
# One value of an `[in]` list: not empty, no comma (the separator), no NUL (refused by text fields).
_LIST_ITEM_PATTERN = r"^[^,\x00]+$"
_SERVER_FIELD_WORDS = {
    "id": "The id, made by the server (a UUIDv7: ids sort by creation time).",
    "created_at": "When it was created.",
    "updated_at": "When it last changed.",
    "version": "Starts at 1 and grows by one with each change; the ETag is this number in quotes.",
}
_OWNER_WORDS = "The user who created it."


def words(resource: Resource) -> str:
    """The resource's noun in words, singular: `tasks` -> "task", `TaskComment` -> "task comment"."""
    return re.sub(r"(?<!^)([A-Z])", r" \1", resource.schema_name).lower()


def article(noun: str) -> str:
    """`task` -> "a task", `event` -> "an event", `user` -> "a user", `update` -> "an update"."""
    # A leading "u" sounds like "you" before one consonant and a vowel (user, unit, usage).
    you = re.match(r"u[^aeiou][aeiouy]", noun) is not None
    return f"an {noun}" if noun[:1] in "aeiou" and not you else f"a {noun}"


def names(resource: Resource) -> dict[str, str]:
    """The component names of a resource: item, create, update, page, sparse item, sparse page."""
    base = resource.schema_name
    return {
        "item": base,
        "create": f"{base}Create",
        "update": f"{base}Update",
        "page": f"{base}Page",
        "fields": f"{base}Fields",
        "fields_page": f"{base}FieldsPage",
        "created": f"New{base}",  # with write-only fields: the create's answer, which shows them
    }


def _example(field: Field) -> Any:
    """An example value that validation accepts, or None when no generic one fits (a text pattern)."""
    kind = field.type
    generated = callable(field.default)  # made on each create: no one value is an example
    if field.default is not None and field.default is not MISSING and field.default != "" and not generated:
        return field.default
    if generated or field.write_only:
        return None
    if isinstance(kind, Id):
        return "0193b4d2-6a1e-7c3d-9f0a-5b8e2c4d6f10"
    if isinstance(kind, Timestamp):
        return "2026-11-26T06:41:18.123Z"
    if isinstance(kind, Date):
        return "2026-12-01"
    if isinstance(kind, Boolean):
        return False
    if isinstance(kind, Integer):
        return max(kind.minimum, min(kind.maximum, 1))
    if isinstance(kind, Choice):
        return kind.values[0]
    if isinstance(kind, Text) and kind.pattern is None:
        sample = "Write the launch plan"
        return sample[: kind.max_length] if len(sample) >= kind.min_length else None
    return None


def choice_schema(resource: Resource, name: str) -> Named:
    """A choice field's values as one named enum (`TaskStatus`), shared by the item, bodies and filters."""
    field = resource.all_fields[name]
    schema = field.type.schema()
    if field.description:
        schema["description"] = field.description
    return named(resource.schema_name + pascal_case(name), schema)


def field_schema(field: Field, *, description: str = "") -> dict[str, Any]:
    """A field's value inline: its type's schema, null allowed when nullable, its description (else
    `description`)."""
    schema = field.type.schema()
    if field.nullable:
        schema = nullable(schema)
    text = field.description or description
    if text:
        schema["description"] = text
    return schema


def value_schema(resource: Resource, name: str, *, description: str = "") -> dict[str, Any] | Named:
    """The JSON Schema of a field's value in a body or an item."""
    field = resource.all_fields[name]
    if isinstance(field.type, Choice):
        return nullable(choice_schema(resource, name)) if field.nullable else choice_schema(resource, name)
    schema = field_schema(field, description=description)
    if field.read_only:
        schema["readOnly"] = True
    if field.write_only:
        schema["writeOnly"] = True
    example = _example(field)
    if example is not None:
        schema["examples"] = [example]
    return schema


def _field_words(resource: Resource, name: str) -> str:
    if name in _SERVER_FIELD_WORDS:
        return _SERVER_FIELD_WORDS[name]
    if name == resource.owner_field:
        return _OWNER_WORDS
    return ""


def item_schema(resource: Resource) -> dict[str, Any]:
    """The item as the API returns it: every field but the write-only ones, always (a sparse list has its
    own schema)."""
    props = {
        n: value_schema(resource, n, description=_field_words(resource, n)) for n in resource.shown_fields
    }
    out: dict[str, Any] = {"type": "object", "required": list(props), "properties": props}
    if resource.description:
        out["description"] = resource.description
    return out


def created_schema(resource: Resource) -> dict[str, Any]:
    """The item as its create answers it: with the write-only fields it was made with, shown this once."""
    out = item_schema(resource)
    fields = resource.all_fields
    for name in resource.write_only:
        schema = value_schema(resource, name)  # without `writeOnly`: this answer holds it
        out["properties"][name] = (
            {k: v for k, v in schema.items() if k != "writeOnly"} if isinstance(schema, dict) else schema
        )
        if fields[name].required or fields[name].default is not MISSING:
            out["required"].append(name)
    out["description"] = (
        f"{article(words(resource)).capitalize()} as its creation answers it: with its write-only fields"
        f" ({', '.join(resource.write_only)}), shown this once."
    )
    return out


def sparse_item_schema(resource: Resource) -> dict[str, Any]:
    """An item of a sparse list (`fields=`): the fields named there, and no others."""
    full = item_schema(resource)
    return {
        "type": "object",
        "properties": full["properties"],
        "description": f"Some fields of {article(words(resource))}: those named by `fields`.",
    }


def create_schema(resource: Resource) -> dict[str, Any]:
    parent_field = resource.parent.field if resource.parent else None
    fields = {n: f for n, f in resource.writable_fields.items() if n != parent_field}
    props = {n: value_schema(resource, n) for n in fields}
    required = [n for n, f in fields.items() if f.required]
    out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        out["required"] = required
    out["description"] = f"A new {words(resource)}: fields left out get their default."
    return out


def update_schema(resource: Resource) -> dict[str, Any]:
    parent_field = resource.parent.field if resource.parent else None
    props = {
        n: value_schema(resource, n)
        for n, f in resource.writable_fields.items()
        if not f.immutable and n != parent_field
    }
    return {
        "type": "object",
        "properties": props,
        "additionalProperties": False,
        "description": f"The fields of the {words(resource)} to change; those left out stay as they are.",
    }


PAGE_META: dict[str, Any] = {
    "type": "object",
    "required": ["next_cursor", "limit"],
    "properties": {
        "next_cursor": {
            "type": ["string", "null"],
            "description": "Send as `cursor` (with the same filters and sort) for the next page; null on the "
            "last page.",
        },
        "limit": {"type": "integer", "description": "The page size that applied."},
        "total": {"type": "integer", "description": "Every matching item, with `include_total=true`."},
    },
}


def page_meta() -> Named:
    return named("PageMeta", PAGE_META)


def page_schema(items: Any, description: str = "") -> dict[str, Any]:
    """A page of `items` (a schema): `{"data": [...], "meta": PageMeta}`."""
    out: dict[str, Any] = {
        "type": "object",
        "required": ["data", "meta"],
        "properties": {"data": {"type": "array", "items": items}, "meta": page_meta()},
    }
    if description:
        out["description"] = description
    return out


def schemas(resource: Resource) -> dict[str, Named]:
    """The named schemas of a resource (see `names`)."""
    n = names(resource)
    item = named(n["item"], item_schema(resource))
    sparse = named(n["fields"], sparse_item_schema(resource))

    noun = words(resource)
    created = {"created": named(n["created"], created_schema(resource))} if resource.write_only else {}
    return {
        **created,
        "item": item,
        "create": named(n["create"], create_schema(resource)),
        "update": named(n["update"], update_schema(resource)),
        "page": named(n["page"], page_schema(item, f"A page of {noun} items.")),
        "fields": sparse,
        "fields_page": named(
            n["fields_page"], page_schema(sparse, f"A page of {noun} items, sparse (`fields=`).")
        ),
    }


# ----- the list's query parameters ---------------------------------------------------------------------
def filter_schema(field_type: FieldType) -> dict[str, Any]:
    """A filter value, as `FieldType.parse` takes it (text: anything without NUL)."""
    schema = field_type.filter_schema()
    if isinstance(field_type, Text):
        schema["pattern"] = NO_NUL_PATTERN
    return schema


def _in_item_schema(resource: Resource, name: str) -> dict[str, Any] | Named:
    field_type = resource.all_fields[name].type
    if isinstance(field_type, Choice):
        return choice_schema(resource, name)
    schema = filter_schema(field_type)
    if schema.get("type") == "string" and "format" not in schema:
        schema = {**schema, "minLength": 1, "pattern": _LIST_ITEM_PATTERN}
    return schema


NULL_CHECK = named("NullCheck", {"type": "string", "enum": ["null", "not_null"]})


def _alternatives(names: list[str]) -> str:
    return "(?:" + "|".join(re.escape(n) for n in names) + ")"


def _in_query(name: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False}


def _filter_parameter(resource: Resource, name: str, field: Field, op: str) -> dict[str, Any]:
    key = name if op == "eq" else f"{name}[{op}]"
    what = {
        "eq": f"`{name}` equals this",
        "ne": f"`{name}` differs from this",
        "gt": f"`{name}` is greater than this",
        "gte": f"`{name}` is at least this",
        "lt": f"`{name}` is less than this",
        "lte": f"`{name}` is at most this",
        "in": f"`{name}` is one of these (comma-separated, or the parameter repeated; 1 to {MAX_IN_VALUES})",
        "contains": f"`{name}` contains this text (case-insensitive)",
        "is": f"`{name}` is null (`null`) or set (`not_null`)",
    }[op]
    param: dict[str, Any] = {
        **_in_query(key),
        "description": f"Only items where {what}.",
    }
    if op == "is":
        param["schema"] = NULL_CHECK
    elif op == "contains":
        param["schema"] = {"type": "string", "maxLength": MAX_CONTAINS_LENGTH, "pattern": NO_NUL_PATTERN}
    elif op == "in":
        param["schema"] = {
            "type": "array",
            "items": _in_item_schema(resource, name),
            "minItems": 1,
            "maxItems": MAX_IN_VALUES,
        }
        param["style"] = "form"
        param["explode"] = False
    elif isinstance(field.type, Choice):
        param["schema"] = choice_schema(resource, name)
    else:
        param["schema"] = filter_schema(field.type)
    return param


def list_parameters(resource: Resource) -> list[dict[str, Any]]:
    """Query parameters of a list: each filter operator, sort, limit, cursor, fields, include_total."""
    params = [
        _filter_parameter(resource, name, field, op)
        for name, field in resource.all_fields.items()
        for op in field.operators
    ]
    sortable = [n for n, f in resource.all_fields.items() if f.sort]
    one_sort = "-?" + _alternatives(sortable)
    most_keys = sort_key_limit(resource)
    one_field = _alternatives(list(resource.shown_fields))
    params += [
        {
            **_in_query("sort"),
            "schema": {
                "type": "string",
                "pattern": f"^{one_sort}(?:,{one_sort}){{0,{most_keys - 1}}}$",
                "default": resource.default_sort,
                "examples": [resource.default_sort],
            },
            "description": "Sort keys, comma-separated, each `-` first for descending; a key named again is "
            f"ignored; at most {most_keys} keys. Sortable: {', '.join(sortable)}. Ties are broken by `id`.",
        },
        {
            **_in_query("limit"),
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
            "description": "The page size.",
        },
        {
            **_in_query("cursor"),
            "schema": {"type": "string", "minLength": 1, "maxLength": 2048, "pattern": "^[A-Za-z0-9_-]+$"},
            "description": "Where the next page starts: `meta.next_cursor` of the previous page, opaque and "
            "signed (an altered one is refused). Send the same `sort`, filters and `fields` as the request "
            "that returned it: the cursor holds a position in the sort order, not the query. Pages are "
            "stable under inserts (keyset pagination).",
        },
        {
            **_in_query("fields"),
            "schema": {"type": "string", "pattern": f"^{one_field}(?:,{one_field})*$"},
            "description": "Sparse fields, comma-separated, from: "
            f"{', '.join(resource.shown_fields)}. The page is then `{names(resource)['fields_page']}` "
            f"(media type `{SPARSE_JSON}`): each item holds these fields only.",
        },
        {
            **_in_query("include_total"),
            "schema": {"type": "boolean", "default": False},
            "description": "Count every matching item into `meta.total` (one more query).",
        },
    ]
    return params


def key_parameter(resource: Resource) -> dict[str, Any]:
    """The item's key in the path (a malformed one answers 404)."""
    schema = resource.all_fields[resource.key].type.filter_schema()
    return {
        "name": resource.key,
        "in": "path",
        "required": True,
        "schema": schema,
        "description": f"The {words(resource)}'s `{resource.key}`.",
    }


def parent_parameter(parent: Resource) -> dict[str, Any]:
    return {
        "name": "parent_id",
        "in": "path",
        "required": True,
        "schema": parent.all_fields[parent.key].type.filter_schema(),
        "description": f"The {words(parent)}'s id.",
    }
