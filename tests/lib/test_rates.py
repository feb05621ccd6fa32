"""Tests for rampart.lib.rates."""

from __future__ import annotations

import pytest

from rampart.lib.rates import Rate, parse_rate


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("600/minute", Rate(600, 60.0)),
        ("20/min", Rate(20, 60.0)),
        ("20/m", Rate(20, 60.0)),
        ("20/minutes", Rate(20, 60.0)),
        ("10/second", Rate(10, 1.0)),
        ("10/s", Rate(10, 1.0)),
        ("10/sec", Rate(10, 1.0)),
        ("1000/hour", Rate(1000, 3600.0)),
        ("5/h", Rate(5, 3600.0)),
        ("5/hr", Rate(5, 3600.0)),
        ("100/day", Rate(100, 86400.0)),
        ("100/d", Rate(100, 86400.0)),
        ("100/5minutes", Rate(100, 300.0)),
        ("100/5m", Rate(100, 300.0)),
        ("100/5minute", Rate(100, 300.0)),
        ("3/2days", Rate(3, 172800.0)),
        ("5/0.5s", Rate(5, 0.5)),
        ("1/1s", Rate(1, 1.0)),
        ("600/MINUTE", Rate(600, 60.0)),
        ("  600 / minute ", Rate(600, 60.0)),
    ],
)
def test_parse_rate_accepts(text: str, expected: Rate) -> None:
    assert parse_rate(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected '<count>/"),
        ("600", "expected '<count>/"),
        ("600/", "expected '<count>/"),
        ("/minute", "expected '<count>/"),
        ("0/minute", "count must be at least 1"),
        ("-1/minute", "expected '<count>/"),
        ("1.5/minute", "expected '<count>/"),
        ("1_000/minute", "expected '<count>/"),
        ("+5/minute", "expected '<count>/"),
        ("\u0665/minute", "expected '<count>/"),  # ARABIC-INDIC DIGIT FIVE
        ("10/fortnight", "unknown unit 'fortnight'"),
        ("10/ms", "unknown unit 'ms'"),
        ("10/0minutes", "multiplier must be positive"),
        ("10/-5m", "expected '<count>/"),
        ("10/5", "expected '<count>/"),
        ("10 per minute", "expected '<count>/"),
        ("10/minute/extra", "expected '<count>/"),
    ],
)
def test_parse_rate_rejects_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="invalid rate") as info:
        parse_rate(text)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("rate", "text"),
    [
        (Rate(600, 60.0), "600/minute"),
        (Rate(10, 1.0), "10/second"),
        (Rate(5, 3600.0), "5/hour"),
        (Rate(100, 86400.0), "100/day"),
        (Rate(100, 300.0), "100/5minutes"),
        (Rate(1, 7200.0), "1/2hours"),
        (Rate(1, 90.0), "1/90seconds"),
        (Rate(5, 0.5), "5/0.5seconds"),
        (Rate(5, 1e-05), "5/0.00001seconds"),
    ],
)
def test_str_is_canonical_and_parses_back(rate: Rate, text: str) -> None:
    assert str(rate) == text
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["20/min", "100/5m", "3/2days", "7/0.3s", "1/1s"])
def test_str_of_a_parsed_rate_round_trips(text: str) -> None:
    rate = parse_rate(text)
    assert parse_rate(str(rate)) == rate


@pytest.mark.parametrize(
    ("count", "period"),
    [(0, 1.0), (-1, 1.0), (True, 1.0), (1.5, 1.0), (1, 0.0), (1, -1.0), (1, float("inf")), (1, float("nan"))],
)
def test_rate_refuses_invalid_values(count: int, period: float) -> None:
    with pytest.raises(ValueError, match=r"rate (count|period)"):
        Rate(count, period)


def test_rate_is_frozen() -> None:
    rate = Rate(1, 1.0)
    with pytest.raises(AttributeError):
        rate.count = 2  # type: ignore[misc]
