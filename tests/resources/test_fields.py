"""Field types: strict checks of JSON values, parsing of query-string values, and their SQL faces."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

import pytest

from rampart.resources.fields import (
    Boolean,
    Choice,
    Date,
    FieldInvalid,
    FieldType,
    Id,
    Integer,
    Reference,
    Text,
    TextList,
    Timestamp,
)
from rampart.resources.spec import Field, Resource

U = "0190a6d2-7c1e-7b4a-9a31-6f2f8d1c2e3b"
UTC = dt.UTC
PLUS2 = dt.timezone(dt.timedelta(hours=2))

CHECK_OK: list[tuple[FieldType, Any, Any]] = [
    (Text(), "abc", "abc"),
    (Text(), "", ""),
    (Text(min_length=1, max_length=3), "abc", "abc"),
    (Text(max_length=2), "\u00e9\U0001f642", "\u00e9\U0001f642"),  # characters, not bytes
    (Text(strip=True), "  a b  ", "a b"),
    (Text(lower=True), "AbC", "abc"),
    (Text(strip=True, lower=True, pattern=r"[a-z]+"), " ABC ", "abc"),
    (Integer(), 0, 0),
    (Integer(), -(2**31), -(2**31)),
    (Integer(), 2**31 - 1, 2**31 - 1),
    (Integer(minimum=0, maximum=5), 5, 5),
    (Integer(minimum=0, maximum=5), 0, 0),
    (Boolean(), True, True),
    (Boolean(), False, False),
    (Choice(("a", "b")), "b", "b"),
    (Date(), "2028-02-29", dt.date(2028, 2, 29)),
    (Date(), "0001-01-01", dt.date(1, 1, 1)),
    (Date(), "9999-12-31", dt.date(9999, 12, 31)),
    (Timestamp(), "2026-01-02T03:04:05Z", dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
    (Timestamp(), "2026-01-02t03:04:05z", dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
    (Timestamp(), "2026-01-02 03:04:05.5+02:00", dt.datetime(2026, 1, 2, 3, 4, 5, 500_000, tzinfo=PLUS2)),
    (Timestamp(), "2026-01-02T03:04:05.123456Z", dt.datetime(2026, 1, 2, 3, 4, 5, 123_456, tzinfo=UTC)),
    (Timestamp(), "9999-12-31T23:59:59Z", dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
    (Id(), U, uuid.UUID(U)),
    (Id(), U.upper(), uuid.UUID(U)),
    (Reference("users"), U, uuid.UUID(U)),
]


@pytest.mark.parametrize(("field_type", "value", "expected"), CHECK_OK)
def test_check_accepts(field_type: FieldType, value: Any, expected: Any) -> None:
    result = field_type.check(value)
    assert result == expected
    assert type(result) is type(expected)


CHECK_BAD: list[tuple[FieldType, Any, str]] = [
    # text
    (Text(), 5, "invalid_type"),
    (Text(), None, "invalid_type"),
    (Text(), True, "invalid_type"),
    (Text(), ["a"], "invalid_type"),
    (Text(), {"a": "b"}, "invalid_type"),
    (Text(), b"bytes", "invalid_type"),
    (Text(), "a\x00b", "invalid_characters"),
    (Text(min_length=1), "", "required"),
    (Text(min_length=3), "ab", "too_short"),
    (Text(max_length=3), "abcd", "too_long"),
    (Text(strip=True, min_length=1), "   ", "required"),
    (Text(pattern=r"[a-z]+"), "abc1", "invalid_format"),
    (Text(pattern=r"[a-z]+"), "1abc", "invalid_format"),
    (Text(pattern=r"[a-z]+"), "abc\n", "invalid_format"),
    # integer
    (Integer(), "3", "invalid_type"),
    (Integer(), True, "invalid_type"),
    (Integer(), False, "invalid_type"),
    (Integer(), 1.5, "invalid_type"),
    (Integer(), 3.0, "invalid_type"),
    (Integer(), None, "invalid_type"),
    (Integer(), [1], "invalid_type"),
    (Integer(minimum=0), -1, "too_small"),
    (Integer(maximum=5), 6, "too_large"),
    (Integer(), 2**31, "too_large"),
    (Integer(), -(2**31) - 1, "too_small"),
    # boolean
    (Boolean(), "true", "invalid_type"),
    (Boolean(), 1, "invalid_type"),
    (Boolean(), 0, "invalid_type"),
    (Boolean(), None, "invalid_type"),
    # choice
    (Choice(("a", "b")), "c", "invalid_choice"),
    (Choice(("a", "b")), "A", "invalid_choice"),
    (Choice(("a", "b")), "", "invalid_choice"),
    (Choice(("a", "b")), 1, "invalid_choice"),
    (Choice(("a", "b")), ["a"], "invalid_choice"),
    (Choice(("a", "b")), None, "invalid_choice"),
    # date
    (Date(), "2026-02-30", "invalid_date"),
    (Date(), "2025-02-29", "invalid_date"),
    (Date(), "26-1-1", "invalid_date"),
    (Date(), "2026-1-01", "invalid_date"),
    (Date(), "2026-01-01T00:00:00Z", "invalid_date"),
    (Date(), "20260101", "invalid_date"),
    (Date(), 20260101, "invalid_date"),
    (Date(), "0000-01-01", "invalid_date"),
    (Date(), "\uff12\uff10\uff12\uff16-01-01", "invalid_date"),  # fullwidth digits
    (Date(), None, "invalid_date"),
    # timestamp
    (Timestamp(), "2026-01-01", "invalid_timestamp"),
    (Timestamp(), "2026-01-01T00:00:00", "invalid_timestamp"),  # no offset
    (Timestamp(), "2026-01-01T00:00:00+0100", "invalid_timestamp"),
    (Timestamp(), "2026-01-01T00:00:00.1234567Z", "invalid_timestamp"),
    (Timestamp(), "2026-13-01T00:00:00Z", "invalid_timestamp"),
    (Timestamp(), "2026-02-30T00:00:00Z", "invalid_timestamp"),
    (Timestamp(), "2026-01-01T24:00:00Z", "invalid_timestamp"),
    (Timestamp(), "2026-01-01T00:00:00+24:00", "invalid_timestamp"),
    (Timestamp(), "0000-01-01T00:00:00Z", "invalid_timestamp"),
    (Timestamp(), "9999-12-31T23:59:59-01:00", "invalid_timestamp"),  # year 10000 in UTC
    (Timestamp(), "0001-01-01T00:00:00+01:00", "invalid_timestamp"),  # year 0 in UTC
    (Timestamp(), 1_700_000_000, "invalid_timestamp"),
    (Timestamp(), None, "invalid_timestamp"),
    # ids
    (Id(), "nope", "invalid_id"),
    (Id(), 123, "invalid_id"),
    (Id(), None, "invalid_id"),
    (Id(), "{" + U + "}", "invalid_id"),
    (Id(), U.replace("-", ""), "invalid_id"),
    (Id(), "urn:uuid:" + U, "invalid_id"),
    (Id(), U + "\n", "invalid_id"),
    (Id(), U[:-1] + "g", "invalid_id"),
    (Reference("users"), "nope", "invalid_id"),
]


@pytest.mark.parametrize(("field_type", "value", "code"), CHECK_BAD)
def test_check_refuses(field_type: FieldType, value: Any, code: str) -> None:
    with pytest.raises(FieldInvalid) as caught:
        field_type.check(value)
    assert caught.value.code == code
    assert caught.value.message


PARSE_OK: list[tuple[FieldType, str, Any]] = [
    (Text(), "any thing", "any thing"),
    (Text(max_length=3), "longer than three", "longer than three"),  # a filter value, not a stored one
    (Text(), "", ""),
    (Text(), "' OR 1=1--", "' OR 1=1--"),
    (Integer(), "42", 42),
    (Integer(), "-7", -7),
    (Integer(), "0", 0),
    (Integer(), "007", 7),
    (Integer(), "2147483647", 2**31 - 1),
    (Integer(), "-2147483648", -(2**31)),
    (Integer(minimum=0, maximum=5), "40", 40),  # comparisons may name values outside the declared range
    (Integer(small=True), "32767", 2**15 - 1),
    (Integer(small=True), "-32768", -(2**15)),
    (Boolean(), "true", True),
    (Boolean(), "false", False),
    (Choice(("a", "b")), "a", "a"),
    (Date(), "2026-01-10", dt.date(2026, 1, 10)),
    (Timestamp(), "2026-01-02T03:04:05.678Z", dt.datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)),
    (Id(), U, uuid.UUID(U)),
]


@pytest.mark.parametrize(("field_type", "text", "expected"), PARSE_OK)
def test_parse_accepts(field_type: FieldType, text: str, expected: Any) -> None:
    result = field_type.parse(text)
    assert result == expected
    assert type(result) is type(expected)


PARSE_BAD: list[tuple[FieldType, str]] = [
    (Text(), "a\x00"),
    (Integer(), ""),
    (Integer(), "1.5"),
    (Integer(), "0x1"),
    (Integer(), "1e3"),
    (Integer(), " 1"),
    (Integer(), "1 "),
    (Integer(), "+1"),
    (Integer(), "--1"),
    (Integer(), "\u0663"),  # ARABIC-INDIC DIGIT THREE
    (Integer(), "\uff15"),  # FULLWIDTH DIGIT FIVE
    (Integer(), "99999999999"),
    (Integer(), "2147483648"),
    (Integer(), "-2147483649"),
    (Integer(small=True), "32768"),
    (Integer(small=True), "-32769"),
    (Boolean(), "True"),
    (Boolean(), "1"),
    (Boolean(), "yes"),
    (Boolean(), ""),
    (Boolean(), "false "),
    (Choice(("a", "b")), "c"),
    (Choice(("a", "b")), ""),
    (Date(), "2026-02-30"),
    (Date(), "tomorrow"),
    (Timestamp(), "2026-01-01"),
    (Timestamp(), "9999-12-31T23:59:59-01:00"),
    (Id(), "x"),
    (Id(), ""),
]


@pytest.mark.parametrize(("field_type", "text"), PARSE_BAD)
def test_parse_refuses(field_type: FieldType, text: str) -> None:
    with pytest.raises(FieldInvalid):
        field_type.parse(text)


@pytest.mark.parametrize(
    ("field", "operators"),
    [
        (Field(Text(), filter=True), ("eq", "ne", "in", "contains")),
        (Field(Integer(), filter=True), ("eq", "ne", "gt", "gte", "lt", "lte", "in")),
        (Field(Boolean(), filter=True), ("eq", "ne")),
        (Field(Choice(("a",)), filter=True), ("eq", "ne", "in")),
        (Field(Date(), filter=True), ("eq", "ne", "gt", "gte", "lt", "lte")),
        (Field(Timestamp(), filter=True), ("gt", "gte", "lt", "lte")),
        (Field(Id(), filter=True), ("eq", "ne", "in")),
        (Field(Date(), filter=True, nullable=True), ("eq", "ne", "gt", "gte", "lt", "lte", "is")),
        (Field(Text(), filter=("eq", "contains")), ("eq", "contains")),
        (Field(Id(), filter=("eq", "in"), nullable=True), ("eq", "in", "is")),
        (Field(Id(), filter=("eq", "is"), nullable=True), ("eq", "is")),
        (Field(Text()), ()),
        (Field(Text(), nullable=True), ()),
    ],
)
def test_filter_operators_of_a_field(field: Field, operators: tuple[str, ...]) -> None:
    assert field.operators == operators


@pytest.mark.parametrize(
    ("field_type", "pg_type", "select"),
    [
        (Text(), "text", "t.x"),
        (Integer(), "integer", "t.x"),
        (Integer(small=True), "smallint", "t.x"),
        (Boolean(), "boolean", "t.x"),
        (Date(), "date", "to_char(t.x, 'YYYY-MM-DD')"),
        (Id(), "uuid", "t.x::text"),
        (Timestamp(), "timestamptz", "to_char(t.x AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"),
    ],
)
def test_sql_type_and_select_expression(field_type: FieldType, pg_type: str, select: str) -> None:
    assert field_type.pg_type == pg_type
    assert field_type.select("t.x") == select


@pytest.mark.parametrize(
    ("field_type", "value", "shown"),
    [
        (Timestamp(), dt.datetime(2026, 1, 2, 3, 4, 5, 678_900, tzinfo=UTC), "2026-01-02T03:04:05.678Z"),
        (Timestamp(), dt.datetime(2026, 1, 2, 5, 4, 5, tzinfo=PLUS2), "2026-01-02T03:04:05.000Z"),
        (Timestamp(), "2026-01-02T03:04:05.678Z", "2026-01-02T03:04:05.678Z"),
        (Id(), uuid.UUID(U), U),
        (Id(), U, U),
        (Integer(), 3, 3),
        (Date(), None, None),
    ],
)
def test_to_json_matches_what_select_shows(field_type: FieldType, value: Any, shown: Any) -> None:
    assert field_type.to_json(value) == shown


@pytest.mark.parametrize(
    ("field_type", "schema"),
    [
        (
            Text(min_length=1, max_length=5, pattern="[a-z]+"),
            {
                "type": "string",
                "maxLength": 5,
                "minLength": 1,
                "pattern": r"^(?=[\s\S]*[^\s\x00\x1c-\x1f\x85\ufeff])(?:[a-z]+)$",
            },
        ),
        (
            Text(min_length=1),
            {
                "type": "string",
                "maxLength": 10_000,
                "minLength": 1,
                "pattern": r"^(?=[\s\S]*[^\s\x00\x1c-\x1f\x85\ufeff])[^\x00]*$",
            },
        ),
        (
            Text(pattern="[a-z]+", strip=True),
            {
                "type": "string",
                "maxLength": 10_000,
                "pattern": r"^[\s\x1c-\x1f\x85]*(?:[a-z]+)[\s\x1c-\x1f\x85]*$",
            },
        ),
        (Text(max_length=9), {"type": "string", "maxLength": 9, "pattern": "^[^\\x00]*$"}),
        (Integer(minimum=0, maximum=5), {"type": "integer", "minimum": 0, "maximum": 5}),
        (Boolean(), {"type": "boolean"}),
        (Choice(("a", "b")), {"type": "string", "enum": ["a", "b"]}),
        (Date(), {"type": "string", "format": "date"}),
        (Timestamp(), {"type": "string", "format": "date-time"}),
        (Id(), {"type": "string", "format": "uuid"}),
    ],
)
def test_json_schema(field_type: FieldType, schema: dict[str, Any]) -> None:
    assert field_type.schema() == schema


@pytest.mark.parametrize(
    "kwargs",
    [{"must": "read"}, {"must": ""}, {"on_delete": "NO ACTION"}, {"on_delete": "cascade"}],
)
def test_reference_refuses_unknown_options(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="Reference"):
        Reference("users", **kwargs)


@pytest.mark.parametrize("must", ["see", "write", "exist", lambda actor, alias, bind: None])
def test_reference_accepts_its_options(must: Any) -> None:
    ref = Reference("projects", must=must, on_delete="SET NULL")
    assert ref.must is must
    assert ref.target == "projects"
    assert ref.pg_type == "uuid"


@pytest.mark.parametrize("value", [" ", "   ", "\t\n", "\u3000", "\x1c", "\ufeff", "\u00a0 "])
def test_a_blank_text_is_as_empty_as_an_empty_one(value: str) -> None:
    """`Text(min_length=1)` means "something to read": blanks of Python's or ECMA-262's kind are refused,
    by the server and by the OpenAPI pattern alike."""
    with pytest.raises(FieldInvalid) as refused:
        Text(min_length=1).check(value)
    assert refused.value.code == "required"
    assert re.search(Text(min_length=1).schema()["pattern"], value) is None
    assert Text(min_length=1).check(value + "a") == value + "a"
    assert re.search(Text(min_length=1).schema()["pattern"], value + "a")


def test_an_explicit_filter_tuple_is_checked_against_the_type_at_declaration() -> None:
    """docs/guide/resources.md: an operator the type does not offer stops the declaration."""

    def declare(filter_ops: tuple[str, ...], *, nullable: bool = False) -> Resource:
        field = Field(Text(), filter=filter_ops, nullable=nullable, default="")
        return Resource(name="notes", fields={"body": field})

    with pytest.raises(ValueError, match=r"notes\.body: operators \['gt'\] do not apply"):
        declare(("eq", "gt"))
    with pytest.raises(ValueError, match="do not apply"):
        declare(("is",))  # only a nullable field offers `is`
    assert declare(("is",), nullable=True).all_fields["body"].operators == ("is",)
    assert declare(("eq", "in")).all_fields["body"].operators == ("eq", "in")


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z"])
def test_the_instants_asyncpg_sends_as_infinity_are_refused(value: str) -> None:
    with pytest.raises(FieldInvalid) as refused:
        Timestamp().check(value)
    assert refused.value.code == "out_of_range"
    assert Timestamp().parse(value) is not None  # as a filter they still compare (as infinity)
    assert Timestamp().check(value.replace("00:00:00Z", "00:00:01Z").replace(".999999", ".998"))


# ----- TextList -----------------------------------------------------------------------------------------
PATTERNS = TextList(min_items=1, max_items=3, min_length=1, max_length=5, pattern=r"[a-z*.]+")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["a"], ["a"]),
        (["b", "a", "b"], ["b", "a"]),  # kept once each, where first given
        (["a.*", "*", "bcd"], ["a.*", "*", "bcd"]),
    ],
)
def test_a_text_list_keeps_each_value_once_in_order(value: list[str], expected: list[str]) -> None:
    assert PATTERNS.check(value) == expected


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("a", "invalid_type"),
        ({"a": 1}, "invalid_type"),
        ([], "required"),
        (["a", "b", "c", "d"], "too_long"),  # counted before the items are read
        ([1], "invalid_type"),
        ([""], "required"),
        (["abcdef"], "too_long"),
        (["A"], "invalid_format"),
        (["a\x00"], "invalid_characters"),
    ],
)
def test_a_text_list_refuses(value: Any, code: str) -> None:
    with pytest.raises(FieldInvalid) as refused:
        PATTERNS.check(value)
    assert refused.value.code == code


def test_a_text_list_counts_its_different_items() -> None:
    pair = TextList(min_items=2)
    with pytest.raises(FieldInvalid) as refused:
        pair.check(["x", "x"])
    assert refused.value.code == "too_short"
    assert pair.check(["x", "y", "x"]) == ["x", "y"]


def test_a_text_list_is_text_array_and_its_schema_bounds_items() -> None:
    assert PATTERNS.pg_type == "text[]"
    from sqlalchemy.dialects import postgresql

    assert PATTERNS.sa_type().compile(dialect=postgresql.dialect()) == "TEXT[]"  # type: ignore[no-untyped-call]
    schema = PATTERNS.schema()
    assert schema["type"] == "array"
    assert (schema["minItems"], schema["maxItems"]) == (1, 3)
    assert schema["items"]["maxLength"] == 5
    assert schema["items"]["pattern"].endswith("(?:[a-z*.]+)$")
    assert "minItems" not in TextList().schema()
    with pytest.raises(FieldInvalid):
        PATTERNS.parse("a")  # never a filter or a cursor value


def test_a_text_list_is_neither_filterable_nor_sortable() -> None:
    assert Field(PATTERNS, filter=True).operators == ()
    with pytest.raises(ValueError, match="cannot be sortable"):
        Resource(name="tl_things", fields={"tags": Field(PATTERNS, sort=True)})
    with pytest.raises(ValueError, match="do not apply"):
        Resource(name="tl_things", fields={"tags": Field(PATTERNS, filter=("eq",))})
    with pytest.raises(ValueError, match="min_items"):
        TextList(min_items=3, max_items=2)
