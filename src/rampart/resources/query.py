"""The list query language of API.md: filters with operators, multi-key sort, keyset cursors,
sparse fields, limits. Parsing turns a query string into a `ListQuery` or an `InvalidQuery` naming the
parameter; `build_list_sql` turns a `ListQuery` into SQL where every value is a bound parameter and every
identifier comes from the resource declaration.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from rampart.errors import bad_query
from rampart.resources.fields import FieldInvalid
from rampart.resources.spec import Binder, Resource

RESERVED = frozenset({"sort", "limit", "cursor", "fields", "include_total"})
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_IN_VALUES = 100
MAX_CONTAINS_LENGTH = 200
_KEY_RE = re.compile(r"^([a-z_][a-z0-9_]{0,62})(?:\[([a-z_]{1,16})\])?$")
_COMPARE = {"eq": "=", "ne": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_LIKE_ESCAPE = str.maketrans({"\\": "\\\\", "%": "\\%", "_": "\\_"})


def sort_key_limit(resource: Resource) -> int:
    """How many keys `sort` may name: as many as there are sortable fields (a longer list repeats one)."""
    return sum(1 for f in resource.all_fields.values() if f.sort)


@dataclass(frozen=True, slots=True)
class Filter:
    field: str
    op: str
    value: Any


@dataclass(frozen=True, slots=True)
class ListQuery:
    filters: tuple[Filter, ...]
    sort: tuple[tuple[str, bool], ...]  # (field, descending); always ends with the key for stability
    limit: int
    after: tuple[Any, ...] | None
    fields: tuple[str, ...] | None
    include_total: bool

    @property
    def sort_key(self) -> str:
        return ",".join(("-" if desc else "") + name for name, desc in self.sort)


class CursorCodec:
    """Opaque, tamper-evident cursors: base64url JSON plus an HMAC over it."""

    def __init__(self, secret: bytes) -> None:
        self._key = hashlib.sha256(b"rampart-cursor:" + secret).digest()

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:16]

    def encode(self, sort_key: str, values: Iterable[Any]) -> str:
        payload = orjson.dumps({"s": sort_key, "v": [_cursor_text(v) for v in values]})
        raw = payload + self._mac(payload)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def decode(self, token: str, sort_key: str) -> list[str]:
        try:
            if len(token) > 2048:
                raise ValueError("too long")
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            # Only the spelling `encode` gives: the last character's unused bits could otherwise
            # change (a different token) and still decode to the same signed bytes.
            if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != token:
                raise ValueError("not canonical")
            payload, mac = raw[:-16], raw[-16:]
            if len(raw) <= 16 or not hmac.compare_digest(mac, self._mac(payload)):
                raise ValueError("bad signature")
            data = orjson.loads(payload)
        except (ValueError, binascii.Error, orjson.JSONDecodeError):
            raise bad_query("cursor", "invalid_cursor", "The cursor is malformed or was altered.") from None
        if data.get("s") != sort_key:
            raise bad_query("cursor", "invalid_cursor", "The cursor belongs to a different sort order.")
        values = data.get("v")
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise bad_query("cursor", "invalid_cursor", "The cursor is malformed or was altered.")
        return values


def _cursor_text(value: Any) -> str | None:
    """A sort value as the field type's `parse` reads it back (booleans as true/false)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _single(params: Any, name: str) -> str:
    values: list[str] = params.getlist(name)
    if len(values) != 1:
        raise bad_query(name, "repeated_parameter", f"{name} may be given only once.")
    return values[0]


def parse_list_query(resource: Resource, params: Any, cursors: CursorCodec) -> ListQuery:
    """Parse a Starlette `QueryParams` (any multi-dict with `getlist`/`keys`) for a list of `resource`."""
    fields = resource.all_fields
    filters: list[Filter] = []
    for key in dict.fromkeys(params.keys()):
        if key in RESERVED:
            continue
        match = _KEY_RE.fullmatch(key)
        spec = fields.get(match.group(1)) if match else None
        if match is None or spec is None or not spec.operators:
            raise bad_query(key, "unknown_filter", f"{key!r} is not a filterable field of {resource.name}.")
        name, op = match.group(1), match.group(2) or "eq"
        if op not in spec.operators:
            raise bad_query(key, "unknown_operator", f"Operator {op!r} is not allowed on {name}.")
        # An `[in]` list may also be sent as the parameter repeated (what generated clients do).
        raw = ",".join(params.getlist(key)) if op == "in" else _single(params, key)
        try:
            filters.append(Filter(name, op, _parse_filter_value(spec.type, op, raw)))
        except FieldInvalid as exc:
            raise bad_query(key, "invalid_value", f"{key}: {exc.message}") from None

    limit = DEFAULT_LIMIT
    if "limit" in params:
        raw_limit = _single(params, "limit")
        if not re.fullmatch(r"[0-9]{1,4}", raw_limit) or not 1 <= int(raw_limit) <= MAX_LIMIT:
            raise bad_query("limit", "invalid_limit", f"limit must be an integer from 1 to {MAX_LIMIT}.")
        limit = int(raw_limit)

    sort_raw = _single(params, "sort") if "sort" in params else resource.default_sort
    sort: list[tuple[str, bool]] = []
    parts = sort_raw.split(",")
    if len(parts) > 1 and len(parts) > (most := sort_key_limit(resource)):
        # Repeats are ignored, but not without end: the work (and the answer) must not grow with them.
        raise bad_query("sort", "invalid_sort", f"sort names at most {most} keys (the sortable fields).")
    for part in parts:
        desc = part.startswith("-")
        name = part[1:] if desc else part
        spec = fields.get(name)
        if spec is None or not spec.sort:
            raise bad_query("sort", "invalid_sort", f"Cannot sort {resource.name} by {part!r}.")
        if all(existing != name for existing, _ in sort):  # named again: the first one decides
            sort.append((name, desc))
    if not any(name == "id" for name, _ in sort):
        sort.append(("id", False))  # ids are unique, so the order is total and pages never overlap

    sparse: tuple[str, ...] | None = None
    if "fields" in params:
        names = _single(params, "fields").split(",")
        if unknown := [n for n in names if n not in resource.shown_fields]:
            # Named up to ten, each cut short: the answer must not grow with what the client sends.
            named = ", ".join(n[:100] for n in unknown[:10]) + (", ..." if len(unknown) > 10 else "")
            raise bad_query("fields", "invalid_fields", f"Unknown fields: {named or '(an empty name)'}.")
        sparse = tuple(dict.fromkeys(names))

    include_total = False
    if "include_total" in params:
        raw_total = _single(params, "include_total")
        if raw_total not in ("true", "false"):
            raise bad_query("include_total", "invalid_value", "include_total must be true or false.")
        include_total = raw_total == "true"

    query = ListQuery(tuple(filters), tuple(sort), limit, None, sparse, include_total)
    if "cursor" in params:
        texts = cursors.decode(_single(params, "cursor"), query.sort_key)
        try:
            after = tuple(fields[name].type.parse(text) for (name, _), text in zip(sort, texts, strict=True))
        except (FieldInvalid, ValueError):  # ValueError: not one value per sort key
            raise bad_query("cursor", "invalid_cursor", "The cursor is malformed or was altered.") from None
        query = ListQuery(query.filters, query.sort, limit, after, sparse, include_total)
    return query


def _parse_filter_value(field_type: Any, op: str, raw: str) -> Any:
    if op == "is":
        if raw not in ("null", "not_null"):
            raise FieldInvalid("invalid_value", "must be null or not_null.")
        return raw
    if op == "in":
        items = raw.split(",")
        if not 1 <= len(items) <= MAX_IN_VALUES or "" in items:
            raise FieldInvalid(
                "invalid_value", f"needs 1 to {MAX_IN_VALUES} comma-separated values, none of them empty."
            )
        return [field_type.parse(item) for item in items]
    if op == "contains":
        if len(raw) > MAX_CONTAINS_LENGTH:
            raise FieldInvalid("invalid_value", f"is longer than {MAX_CONTAINS_LENGTH} characters.")
        return "%" + field_type.parse(raw).translate(_LIKE_ESCAPE) + "%"
    return field_type.parse(raw)


def filter_sql(resource: Resource, alias: str, filters: Iterable[Filter], bind: Binder) -> list[str]:
    """WHERE conditions for parsed filters; values are bound, identifiers come from the declaration."""
    out = []
    for flt in filters:
        field_type = resource.all_fields[flt.field].type
        column = f"{alias}.{flt.field}"
        if flt.op == "is":
            out.append(f"{column} IS {'NULL' if flt.value == 'null' else 'NOT NULL'}")
        elif flt.op == "in":
            out.append(f"{column} = ANY({bind(flt.value)}::{field_type.pg_type}[])")
        elif flt.op == "contains":
            out.append(f"{column} ILIKE {bind(flt.value)}")
        else:
            out.append(f"{column} {_COMPARE[flt.op]} {bind(flt.value)}")
    return out


def keyset_sql(alias: str, sort: tuple[tuple[str, bool], ...], after: tuple[Any, ...], bind: Binder) -> str:
    """Rows strictly after the cursor row in the sort order: (a > x) OR (a = x AND b > y) ..."""
    ors = []
    for i, (name, desc) in enumerate(sort):
        ands = [f"{alias}.{prev} = {bind(after[j])}" for j, (prev, _) in enumerate(sort[:i])]
        ands.append(f"{alias}.{name} {'<' if desc else '>'} {bind(after[i])}")
        ors.append("(" + " AND ".join(ands) + ")")
    return "(" + " OR ".join(ors) + ")"
