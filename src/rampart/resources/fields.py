"""Field types of the resource framework: how a value is checked, parsed from a query, stored and shown.

A field type knows its PostgreSQL type, its JSON Schema, the filter operators that make sense for it,
how to check a JSON value strictly (`"3"` is not an integer) and how to parse a query-string value.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from rampart.lib.ids import parse_uuid

if TYPE_CHECKING:  # SQLAlchemy is loaded only to build migrations, never in a serving worker
    import sqlalchemy as sa

ALL_COMPARISONS = ("eq", "ne", "gt", "gte", "lt", "lte", "in")
# The JSON Schema `pattern` of text without NUL characters (ECMA-262 syntax, as OpenAPI 3.1 uses).
NO_NUL_PATTERN = r"^[^\x00]*$"
# What str.strip() removes, in a pattern both Python and ECMA-262 read alike (see auth/users.py).
_STRIPPED = r"[\s\x1c-\x1f\x85]*"
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# RFC 3339 with a mandatory offset; fromisoformat alone would also take naive times.
_TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?([Zz]|[+-]\d{2}:\d{2})$")
_TS_FORMAT = 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'
_INFINITE = (dt.datetime.min.replace(tzinfo=dt.UTC), dt.datetime.max.replace(tzinfo=dt.UTC))
# A character that is not blank for Python (str.isspace) nor for ECMA-262 (`\s`): a text with
# `min_length` >= 1 must hold one, so "   " is as empty as "" (and the OpenAPI pattern says the same).
_VISIBLE = r"[^\s\x00\x1c-\x1f\x85\ufeff]"
_VISIBLE_RE = re.compile(_VISIBLE)


class FieldInvalid(Exception):
    """A value does not fit its field; `code` is the stable machine-readable reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class FieldType:
    """Base of all field types."""

    pg_type = "text"
    operators: tuple[str, ...] = ("eq", "ne", "in")
    sortable = True  # keyset cursors compare its values

    def check(self, value: Any) -> Any:
        """Check a JSON value (already parsed) and return the value to store."""
        raise NotImplementedError

    def parse(self, text: str) -> Any:
        """Parse a query-string or cursor value into the value bound to SQL."""
        return self.check(text)

    def select(self, column: str) -> str:
        """The SQL expression that reads the column in its JSON-ready form."""
        return column

    def select_immutable(self, column: str) -> str:
        """`select` with IMMUTABLE functions only, for RETURNING on a Citus cluster (which refuses others
        there): the same text."""
        return self.select(column)

    def sa_type(self) -> sa.types.TypeEngine[Any]:
        """The column's SQLAlchemy type, from `pg_type` (for migrations only)."""
        import sqlalchemy as sa
        from sqlalchemy.dialects import postgresql as pg

        types: dict[str, Callable[[], sa.types.TypeEngine[Any]]] = {
            "text": sa.Text,
            "text[]": lambda: pg.ARRAY(sa.Text()),
            "integer": sa.Integer,
            "smallint": sa.SmallInteger,
            "boolean": sa.Boolean,
            "date": sa.Date,
            "timestamptz": lambda: pg.TIMESTAMP(timezone=True, precision=3),
            "uuid": lambda: pg.UUID(as_uuid=True),
        }
        return types[self.pg_type]()

    def schema(self) -> dict[str, Any]:
        """The JSON Schema of a value, for OpenAPI."""
        raise NotImplementedError

    def filter_schema(self) -> dict[str, Any]:
        """The JSON Schema of a filter value (what `parse` accepts), for OpenAPI.

        A filter value is compared, not stored: any length or format parses (it may match nothing), so
        only the type's other constraints (enum, format) apply.
        """
        schema = self.schema()
        for constraint in ("minLength", "maxLength", "pattern"):
            schema.pop(constraint, None)
        return schema

    def to_json(self, value: Any) -> Any:
        """A stored Python value (as bound to SQL) in its JSON form, as `select` would give it."""
        return value


class Text(FieldType):
    def __init__(
        self,
        *,
        min_length: int = 0,
        max_length: int = 10_000,
        pattern: str | None = None,
        strip: bool = False,
        lower: bool = False,
    ) -> None:
        self.min_length = min_length
        self.max_length = max_length
        self.pattern = re.compile(pattern) if pattern else None
        self.strip = strip
        self.lower = lower
        self.operators = ("eq", "ne", "in", "contains")

    def check(self, value: Any) -> Any:
        if not isinstance(value, str):
            raise FieldInvalid("invalid_type", "Must be a string.")
        value = self.parse(value)  # NUL refused, then normalised as declared
        if len(value) < self.min_length:
            code = "required" if not value else "too_short"
            raise FieldInvalid(code, f"Must be at least {self.min_length} characters long.")
        if self.min_length and not _VISIBLE_RE.search(value):
            raise FieldInvalid("required", "Must not be blank.")
        if len(value) > self.max_length:
            raise FieldInvalid("too_long", f"Must be at most {self.max_length} characters long.")
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise FieldInvalid("invalid_format", "Has an invalid format.")
        return value

    def parse(self, text: str) -> str:
        if "\x00" in text:
            raise FieldInvalid("invalid_characters", "Must not contain NUL characters.")
        # Filters compare with stored values, which were normalised the same way on write.
        if self.strip:
            text = text.strip()
        return text.lower() if self.lower else text

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "string", "maxLength": self.max_length}
        if self.min_length:
            out["minLength"] = self.min_length
        # NUL is refused by `check` (PostgreSQL text cannot hold it); a declared pattern says the rest.
        out["pattern"] = NO_NUL_PATTERN
        if self.pattern is not None:
            # `check` matches the whole (stripped) value; a JSON Schema pattern matches anywhere.
            edge = _STRIPPED if self.strip else ""
            out["pattern"] = f"^{edge}(?:{self.pattern.pattern}){edge}$"
        if self.min_length:
            # Not blank (see _VISIBLE): a lookahead, so it combines with either pattern above.
            out["pattern"] = f"^(?=[\\s\\S]*{_VISIBLE})" + out["pattern"].removeprefix("^")
        return out


class TextList(FieldType):
    """A list of texts (PostgreSQL `text[]`): `min_items` to `max_items` of them, each held to the rules of
    `Text` (the other options); a value given twice is kept once, where it first appears. Neither
    filterable nor sortable."""

    pg_type = "text[]"
    operators = ()
    sortable = False

    def __init__(
        self,
        *,
        min_items: int = 0,
        max_items: int = 100,
        min_length: int = 0,
        max_length: int = 200,
        pattern: str | None = None,
        strip: bool = False,
        lower: bool = False,
    ) -> None:
        if not 0 <= min_items <= max_items:
            raise ValueError("TextList needs 0 <= min_items <= max_items")
        self.min_items = min_items
        self.max_items = max_items
        self.item = Text(
            min_length=min_length, max_length=max_length, pattern=pattern, strip=strip, lower=lower
        )

    def check(self, value: Any) -> Any:
        if not isinstance(value, list):
            raise FieldInvalid("invalid_type", "Must be an array of strings.")
        if len(value) > self.max_items:  # before the items are read: the work is bounded
            raise FieldInvalid("too_long", f"Must hold at most {self.max_items} items.")
        items = []
        for i, item in enumerate(value):
            try:
                items.append(self.item.check(item))
            except FieldInvalid as exc:
                raise FieldInvalid(exc.code, f"Item {i + 1}: {exc.message}") from None
        kept = list(dict.fromkeys(items))
        if len(kept) < self.min_items:
            code = "required" if not kept else "too_short"
            raise FieldInvalid(code, f"Must hold at least {self.min_items} different items.")
        return kept

    def parse(self, text: str) -> Any:
        raise FieldInvalid("invalid_value", "A list is not compared in a query.")

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "array", "items": self.item.schema(), "maxItems": self.max_items}
        if self.min_items:
            out["minItems"] = self.min_items
        return out

    def filter_schema(self) -> dict[str, Any]:
        return self.schema()

    def to_json(self, value: Any) -> Any:
        return list(value) if isinstance(value, tuple | list) else value


class Integer(FieldType):
    pg_type = "integer"

    def __init__(
        self, *, minimum: int | None = None, maximum: int | None = None, small: bool = False
    ) -> None:
        bits = 15 if small else 31
        # The column's range. Bounds never exceed it, so a valid body value always fits the column.
        self.lowest, self.highest = -(2**bits), 2**bits - 1
        self.minimum = self.lowest if minimum is None else max(self.lowest, minimum)
        self.maximum = self.highest if maximum is None else min(self.highest, maximum)
        self.pg_type = "smallint" if small else "integer"
        self.operators = ALL_COMPARISONS

    def check(self, value: Any) -> Any:
        # bool is an int subclass in Python; JSON true is not a number.
        if isinstance(value, bool) or not isinstance(value, int):
            raise FieldInvalid("invalid_type", "Must be an integer.")
        if value < self.minimum:
            raise FieldInvalid("too_small", f"Must be at least {self.minimum}.")
        if value > self.maximum:
            raise FieldInvalid("too_large", f"Must be at most {self.maximum}.")
        return value

    def parse(self, text: str) -> Any:
        # ASCII digits only: \d and int() would also take other scripts' digits ("\u0663" == 3).
        if not re.fullmatch(r"-?[0-9]{1,10}", text):
            raise FieldInvalid("invalid_value", "Must be an integer.")
        number = int(text)
        # The column's own range: a bound value PostgreSQL cannot hold fails the whole query.
        if not self.lowest <= number <= self.highest:
            raise FieldInvalid("invalid_value", "Is out of range.")
        return number

    def schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": self.minimum, "maximum": self.maximum}

    def filter_schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": self.lowest, "maximum": self.highest}  # as `parse` checks


class Boolean(FieldType):
    pg_type = "boolean"
    operators = ("eq", "ne")

    def check(self, value: Any) -> Any:
        if not isinstance(value, bool):
            raise FieldInvalid("invalid_type", "Must be true or false.")
        return value

    def parse(self, text: str) -> Any:
        if text not in ("true", "false"):
            raise FieldInvalid("invalid_value", "Must be true or false.")
        return text == "true"

    def schema(self) -> dict[str, Any]:
        return {"type": "boolean"}


class Choice(FieldType):
    def __init__(self, values: Sequence[str]) -> None:
        self.values = tuple(values)

    def check(self, value: Any) -> Any:
        if not isinstance(value, str) or value not in self.values:
            raise FieldInvalid("invalid_choice", f"Must be one of: {', '.join(self.values)}.")
        return value

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "enum": list(self.values)}


class Date(FieldType):
    pg_type = "date"
    operators = ("eq", "ne", "gt", "gte", "lt", "lte")

    def check(self, value: Any) -> Any:
        if not isinstance(value, str) or not _DATE_RE.fullmatch(value):
            raise FieldInvalid("invalid_date", "Must be a date (YYYY-MM-DD).")
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            raise FieldInvalid("invalid_date", "Must be a date (YYYY-MM-DD).") from None

    def select(self, column: str) -> str:
        # Text, like ids and timestamps: a row read is JSON-ready, and a cached row decoded from JSON
        # is the same as one read from the database.
        return f"to_char({column}, 'YYYY-MM-DD')"

    def select_immutable(self, column: str) -> str:
        # rampart_date: the same to_char, declared IMMUTABLE (made by rampart.db.citus on a cluster).
        return f"rampart_date({column})"

    def to_json(self, value: Any) -> Any:
        return value.isoformat() if isinstance(value, dt.date) else value

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "format": "date"}


class Timestamp(FieldType):
    """Timestamps are stored with millisecond precision and shown as RFC 3339 UTC (`...Z`)."""

    pg_type = "timestamptz"
    operators = ("gt", "gte", "lt", "lte")

    def check(self, value: Any) -> Any:
        parsed = self.parse(value)
        if parsed.astimezone(dt.UTC) in _INFINITE:
            # asyncpg sends these two instants as PostgreSQL's -infinity and infinity: stored, they would
            # come back as no time at all.
            raise FieldInvalid(
                "out_of_range", "Must be after 0001-01-01T00:00:00Z and before 9999-12-31T23:59:59.999999Z."
            )
        return parsed

    def parse(self, text: str) -> Any:
        """A filter or cursor value: any RFC 3339 timestamp (the two extreme instants compare as infinity)."""
        if not isinstance(text, str) or not _TIMESTAMP_RE.fullmatch(text):
            raise FieldInvalid("invalid_timestamp", "Must be an RFC 3339 timestamp with a time zone.")
        try:
            parsed = dt.datetime.fromisoformat(text.replace("z", "Z"))
            # 9999-12-31T23:59:59-01:00 parses but is out of range in UTC, where asyncpg converts it.
            parsed.astimezone(dt.UTC)
        except (ValueError, OverflowError):
            raise FieldInvalid("invalid_timestamp", "Must be an RFC 3339 timestamp.") from None
        return parsed

    def select(self, column: str) -> str:
        # Formatting in PostgreSQL keeps per-row Python work out of the hot path.
        return f"to_char({column} AT TIME ZONE 'UTC', '{_TS_FORMAT}')"

    def select_immutable(self, column: str) -> str:
        # rampart_ts: the same to_char, declared IMMUTABLE (made by rampart.db.citus on a cluster).
        return f"rampart_ts({column})"

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "format": "date-time"}

    def to_json(self, value: Any) -> Any:
        if isinstance(value, dt.datetime):
            return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return value


class Id(FieldType):
    """A UUID: primary keys and references. Shown as its canonical text."""

    pg_type = "uuid"

    def check(self, value: Any) -> Any:
        parsed = parse_uuid(value) if isinstance(value, str) else None
        if parsed is None:
            raise FieldInvalid("invalid_id", "Must be a UUID.")
        return parsed

    def select(self, column: str) -> str:
        return f"{column}::text"

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "format": "uuid"}

    def to_json(self, value: Any) -> Any:
        return str(value) if isinstance(value, uuid.UUID) else value


class Reference(Id):
    """A UUID that must name a row of another resource the caller may see (or write, with `must="write"`).

    A reference the caller may not see is reported exactly like one that does not exist.
    """

    def __init__(self, target: str, *, must: Any = "see", on_delete: str = "CASCADE") -> None:
        # `must` is "see", "write", "exist" or a row predicate on the target (see spec.Predicate).
        if not callable(must) and must not in ("see", "write", "exist"):
            raise ValueError("Reference(must=...) is 'see', 'write', 'exist' or a predicate")
        if on_delete not in ("CASCADE", "SET NULL", "RESTRICT"):
            raise ValueError("Reference(on_delete=...) is CASCADE, SET NULL or RESTRICT")
        self.target = target
        self.must = must
        self.on_delete = on_delete
