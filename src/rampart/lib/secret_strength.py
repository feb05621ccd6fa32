"""How hard a configured secret is to guess, and how to make one that is not.

The estimate is zxcvbn's (Dropbox's strength estimator, PyPI `zxcvbn`): it finds the structure people put
in secrets they choose (repeats, sequences such as `abc` or `123`, keyboard rows, dates, and words from
its lists of common passwords, English words, names and their l33t spellings) and counts the guesses
an attacker who tries those first needs. It is conservative about what it cannot explain, crediting a
random character with 10 possibilities, so a random secret needs about 39 characters to reach 128 bits
(`generate()` makes 64).

Only the first `MAX_LENGTH` characters are estimated (zxcvbn refuses longer input, being quadratic):
a guesser must get those right too, so their strength is a lower bound of the whole secret's.
"""

from __future__ import annotations

import math
import secrets
import sys
from dataclasses import dataclass

MIN_BITS = 128
MAX_LENGTH = 72
_NAMES = {
    "repeat": "repeated text",
    "sequence": "a sequence (abc, 123)",
    "dictionary": "common words or passwords",
    "spatial": "a keyboard pattern",
    "date": "a date",
    "regex": "a year",
}


@dataclass(frozen=True, slots=True)
class Strength:
    """log2 of the guesses needed, and the kinds of guessable structure found (never the text)."""

    bits: float
    found: tuple[str, ...]


def estimate(secret: str) -> Strength:
    """The strength of `secret` (see the module docstring)."""
    loaded = "zxcvbn" in sys.modules
    from zxcvbn import zxcvbn

    try:
        result = zxcvbn(secret[:MAX_LENGTH], max_length=MAX_LENGTH)
    finally:
        # Its word lists take 14 MB once loaded. Checked once at start, before the app is built, and then
        # dropped: the app's own objects reuse that memory (a worker's RSS measured the same with and
        # without the check), where keeping the module would keep the 14 MB in every worker.
        if not loaded:
            for name in [m for m in sys.modules if m == "zxcvbn" or m.startswith("zxcvbn.")]:
                del sys.modules[name]
    kinds = dict.fromkeys(_NAMES[m["pattern"]] for m in result["sequence"] if m["pattern"] in _NAMES)
    return Strength(bits=math.log2(max(1.0, float(result["guesses"]))), found=tuple(kinds))


def generate() -> str:
    """A new secret: 48 random bytes (384 bits) as 64 URL-safe characters."""
    return secrets.token_urlsafe(48)
