"""Tests for rampart.lib.ids."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rampart.lib.ids import new_id, new_id_text, parse_uuid, shard_key_of

CANONICAL = "0190f6b2-3c4d-7e8f-9a0b-1c2d3e4f5a6b"


def test_new_id_is_a_stdlib_uuid7() -> None:
    value = new_id()
    assert type(value) is uuid.UUID
    assert value.version == 7
    assert value.variant == uuid.RFC_4122


def test_new_ids_are_unique_and_time_ordered() -> None:
    ids = [new_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    # uuid_utils keeps v7 monotonic within a millisecond, so generation order is sort order.
    assert ids == sorted(ids)


def test_new_id_text_is_a_canonical_uuid7_and_unique() -> None:
    texts = [new_id_text() for _ in range(1_000)]
    assert len(set(texts)) == len(texts)
    for text in texts[:50]:
        assert parse_uuid(text) is not None
        assert str(uuid.UUID(text)) == text  # canonical, lower case
        assert uuid.UUID(text).version == 7


@pytest.mark.parametrize("text", [CANONICAL, CANONICAL.upper(), "0190F6B2-3c4d-7E8F-9a0b-1C2D3E4F5A6B"])
def test_parse_uuid_accepts_the_canonical_form_in_either_case(text: str) -> None:
    assert parse_uuid(text) == uuid.UUID(CANONICAL)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not-a-uuid",
        "{" + CANONICAL + "}",
        "urn:uuid:" + CANONICAL,
        CANONICAL.replace("-", ""),
        " " + CANONICAL,
        CANONICAL + " ",
        CANONICAL + "\n",
        "\t" + CANONICAL[1:],
        CANONICAL[:-1],
        CANONICAL + "0",
        CANONICAL.replace("-", "_"),
        "0190f6b23-c4d-7e8f-9a0b-1c2d3e4f5a6b",  # hyphens in the wrong places, right length
        "g190f6b2-3c4d-7e8f-9a0b-1c2d3e4f5a6b",
        "\uff10" + CANONICAL[1:],  # FULLWIDTH DIGIT ZERO: a digit to Unicode, not hex to us
        "\ud800" + CANONICAL[1:],  # lone surrogate
        "0190f6b2-3c4d-7e8f-9a0b-1c2d3e4f5a6\x00",
    ],
)
def test_parse_uuid_rejects_every_other_spelling(text: str) -> None:
    assert parse_uuid(text) is None


@settings(database=None, max_examples=300)
@given(st.text(max_size=40) | st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper()))
def test_parse_uuid_never_raises_and_round_trips(text: str) -> None:
    parsed = parse_uuid(text)
    assert parsed is None or str(parsed) == text.lower()


def test_parse_uuid_round_trips_new_ids() -> None:
    value = new_id()
    assert parse_uuid(str(value)) == value


@pytest.mark.parametrize("key", [0, 1, -1, 2**31 - 1, -(2**31), 123_456_789])
def test_an_id_made_with_a_shard_key_carries_it(key: int) -> None:
    value = new_id(shard_key=key)
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert shard_key_of(value) == key


def test_ids_made_with_one_shard_key_are_unique_and_time_ordered() -> None:
    ids = [new_id(shard_key=-42) for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert {shard_key_of(i) for i in ids} == {-42}


def test_a_shard_key_is_the_last_32_bits_as_a_signed_integer() -> None:
    assert shard_key_of(uuid.UUID("0190f6b2-3c4d-7e8f-9a0b-1c2d00000005")) == 5
    assert shard_key_of(uuid.UUID("0190f6b2-3c4d-7e8f-9a0b-1c2dffffffff")) == -1
    assert shard_key_of(uuid.UUID("0190f6b2-3c4d-7e8f-9a0b-1c2d80000000")) == -(2**31)


@pytest.mark.parametrize("key", [2**31, -(2**31) - 1])
def test_a_shard_key_outside_32_bits_is_refused(key: int) -> None:
    with pytest.raises(ValueError, match="signed 32-bit"):
        new_id(shard_key=key)
