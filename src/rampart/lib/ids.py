"""Identifiers: time-ordered UUIDv7 generation, the shard key an id carries, and strict UUID parsing.

On a Citus cluster a row is found by its id alone: the id's last 32 bits are its shard key (decision
0019). A row placed with another (a task with its project) gets an id whose last 32 bits are that row's,
so `shard_key_of(task_id)` names the project's shard without asking the database.
"""

from __future__ import annotations

import re
import uuid

import uuid_utils

# Only the canonical 8-4-4-4-12 form: uuid.UUID() alone would also accept braces, "urn:uuid:" and
# bare 32-hex strings, and a path id must have exactly one spelling. ASCII ranges keep out
# non-ASCII digits that str.isdigit-style checks would let through.
_CANONICAL = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_LOW = 0xFFFFFFFF


def new_id(shard_key: int | None = None) -> uuid.UUID:
    """Return a new UUIDv7: time-ordered, so B-tree inserts stay local and ids sort by creation.

    With `shard_key`, its last 32 bits are that key (a signed 32-bit integer, as `shard_key_of` returns),
    so the id names the shard of the row it belongs with. It is still a UUIDv7: uuid_utils keeps its
    per-millisecond counter (42 bits, randomly seeded) above the last 32 bits, which are random otherwise,
    so ids made with one key stay unique and in creation order.
    """
    # bytes= skips formatting and re-parsing the hex text.
    made = uuid.UUID(bytes=uuid_utils.uuid7().bytes)
    if shard_key is None:
        return made
    if not -(2**31) <= shard_key < 2**31:
        raise ValueError(f"a shard key is a signed 32-bit integer, not {shard_key}")
    return uuid.UUID(int=(made.int & ~_LOW) | (shard_key & _LOW))


def shard_key_of(value: uuid.UUID) -> int:
    """The shard key an id carries: its last 32 bits, as a signed 32-bit integer (PostgreSQL `integer`,
    the same as the SQL function `rampart_shard_key(uuid)`)."""
    low = value.int & _LOW
    return low - 2**32 if low >= 2**31 else low


def new_id_text() -> str:
    """A new UUIDv7 as its canonical text (request ids), formatted by uuid_utils: ten times faster than
    through `uuid.UUID`."""
    return str(uuid_utils.uuid7())


def parse_uuid(text: str) -> uuid.UUID | None:
    """Parse the canonical hyphenated form (either case); return None for anything else. Never raises."""
    if not isinstance(text, str) or len(text) != 36 or _CANONICAL.fullmatch(text) is None:
        return None
    return uuid.UUID(text)
