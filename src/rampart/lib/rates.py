"""Rates such as "600/minute": parsing, validation and a canonical text form."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal

# Largest first, so __str__ picks the coarsest unit that divides the period exactly; then the other names.
_UNITS = (
    ("day", 86400, "d days"),
    ("hour", 3600, "h hr hours"),
    ("minute", 60, "m min minutes"),
    ("second", 1, "s sec seconds"),
)
_UNIT_SECONDS = {alias: seconds for name, seconds, other in _UNITS for alias in (name, *other.split())}

# ASCII digits only: int() would also take "1_000", "+5" or non-ASCII digits, which config should not.
_RATE = re.compile(r"\s*(?P<count>[0-9]+)\s*/\s*(?P<mult>[0-9]+(?:\.[0-9]+)?)?\s*(?P<unit>[A-Za-z]+)\s*")


@dataclass(frozen=True, slots=True)
class Rate:
    """At most `count` events per `period` seconds."""

    count: int
    period: float

    def __post_init__(self) -> None:
        # Validated here too, so a Rate built in code is as safe as one parsed from config.
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"rate count must be an integer >= 1, got {self.count!r}")
        if not math.isfinite(self.period) or self.period <= 0:
            raise ValueError(f"rate period must be a positive number of seconds, got {self.period!r}")

    def __str__(self) -> str:
        """Canonical form that parse_rate() reads back to an equal Rate, e.g. "100/5minutes"."""
        for name, seconds, _ in _UNITS:
            multiple = self.period / seconds
            if multiple >= 1 and multiple == int(multiple):
                if multiple == 1:
                    return f"{self.count}/{name}"
                return f"{self.count}/{int(multiple)}{name}s"
        # Plain decimal, never exponent notation (repr(1e-05)), so the parser can read it back.
        return f"{self.count}/{format(Decimal(repr(self.period)), 'f')}seconds"


def parse_rate(text: str) -> Rate:
    """Parse "<count>/[<multiplier>]<unit>", e.g. "600/minute", "10/s", "100/5m", "5/0.5s".

    Units: s/sec/second(s), m/min/minute(s), h/hr/hour(s), d/day(s), case-insensitive.
    Raises ValueError naming the problem when the text is not a valid rate.
    """
    match = _RATE.fullmatch(text)
    if match is None:
        raise ValueError(
            f"invalid rate {text!r}: expected '<count>/[<multiplier>]<unit>', e.g. '600/minute' or '100/5m'"
        )
    unit = match["unit"].lower()
    if unit not in _UNIT_SECONDS:
        raise ValueError(f"invalid rate {text!r}: unknown unit {match['unit']!r} (use s, m, h or d)")
    count = int(match["count"])
    if count < 1:
        raise ValueError(f"invalid rate {text!r}: count must be at least 1")
    multiplier = float(match["mult"]) if match["mult"] is not None else 1.0
    if multiplier <= 0:
        raise ValueError(f"invalid rate {text!r}: period multiplier must be positive")
    return Rate(count=count, period=multiplier * _UNIT_SECONDS[unit])
