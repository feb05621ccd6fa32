"""If-Match and If-None-Match as RFC 9110 reads them: entity-tag lists (empty elements ignored) or `*`;
strong comparison for If-Match, weak for If-None-Match; anything else is a malformed header."""

from __future__ import annotations

import re

import pytest

from rampart.errors import InvalidHeader
from rampart.resources.conditional import (
    PRECONDITION_PATTERN,
    check_precondition,
    if_match_fails,
    if_none_match_hits,
)

# (header, If-Match fails at version 3, If-None-Match hits at version 3)
WELL_FORMED = [
    ('"3"', False, True),
    ('"2"', True, False),
    ('W/"3"', True, True),  # a weak tag never matches If-Match (RFC 9110 13.1.1)
    ('"1", "3"', False, True),
    (' "1" ,\tW/"3" ', True, True),
    ('"1",,"3"', False, True),  # empty list elements are ignored
    ("*", False, True),
    (" * ", False, True),
    ("", True, False),  # an empty list: nothing matches
    (",", True, False),
    ('"abc"', True, False),
    ('""', True, False),
]
MALFORMED = ["0", "3", '"3', 'W/ "3"', '*, "3"', "**", '"a"b"', 'w/"3"', '"3";', '"é"', '"\x00"']


@pytest.mark.parametrize(("header", "fails", "hits"), WELL_FORMED)
def test_well_formed_preconditions(header: str, fails: bool, hits: bool) -> None:
    check_precondition("If-Match", header)
    assert if_match_fails(header, 3) is fails
    assert if_none_match_hits(header, 3) is hits
    assert re.search(PRECONDITION_PATTERN, header)


@pytest.mark.parametrize("header", MALFORMED)
def test_malformed_preconditions_are_refused(header: str) -> None:
    with pytest.raises(InvalidHeader) as caught:
        check_precondition("If-Match", header)
    assert caught.value.errors[0].field == "If-Match"
    assert not re.search(PRECONDITION_PATTERN, header)


def test_no_header_is_no_condition() -> None:
    check_precondition("If-Match", None)
    assert not if_match_fails(None, 3)
    assert not if_none_match_hits(None, 3)
