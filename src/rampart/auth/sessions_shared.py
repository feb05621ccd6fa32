"""The shared tier of the session cache: session state in a Store (Redis) for every worker and instance.

Each worker's `Authenticator` keeps its own dictionary in front; on a miss there it asks this tier, and
only on a miss here the database. One database read then serves every worker and instance for the rest
of its second. The rules that keep API.md's 1 s revocation bound across both tiers:

- **An entry lives at most `ttl` from its database read.** Its deadline is an instant of the store's own
  clock, read just before the query (`Miss.clock`), so it never depends on two hosts' clocks agreeing,
  and a write that reaches the store late keeps nothing past it (`Store.set_until`). A worker that takes
  an entry from here keeps it in memory only for the time the store says it has left, counted from
  before it asked: never a fresh `ttl`.
- **Announcements drop entries at once.** Every worker hearing one drops its own memory entries and
  deletes the entry here (a user's: through the group of their sessions). Until its deletions are
  applied, the worker does not read this tier; its writes and deletions go out in order, one at a time,
  so none of its own writes lands after a deletion it queued later.
- **Redis failing never fails a request nor stretches the bound.** Reads then go to the database. The
  tier is used again once Redis answers and at least a second (the longest an entry lives) has passed
  since the last failure and since the last deletion it could not apply: every entry a missed deletion
  should have removed has expired by then.

Residual race: a worker that read the database before a revocation and stores that answer before the
announcement reaches it leaves a stale entry that other workers may read until its deadline, at most
`ttl` (≤ 1 s) after that read. The bound holds; "at once" does not, for that one entry.

Keys (under the store's namespace): `s:<session id>` holds `<user id>:<role>`, or nothing for "no live
session"; a user's live-session entries form the group `u:<user id>`. Never any token text, and never a
live impersonation session (the Authenticator keeps those out: their end is announced under the
impersonator's name, which these groups do not follow).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from typing import Literal, NamedTuple

from rampart.lib.aio import cancel_and_wait
from rampart.lib.store import Store

log = logging.getLogger("rampart.auth.sessions")

State = tuple[uuid.UUID, str] | None  # (user id, role) of a live session; None: no live session

_MAX_QUEUED = 10_000  # writes beyond this are dropped while the store is slow (deletions never are)
# After a failure, the tier stays unused at least this long: the longest an entry may live (the revocation
# bound, which caps every Authenticator's ttl), so whatever a missed deletion should have removed is gone.
_QUIET = 1.0


class Hit(NamedTuple):
    state: State
    ttl: float  # seconds the entry has left, as the store counted them


class Miss(NamedTuple):
    clock: float  # the store's clock at the lookup, before the database read: a deadline's base


class _Op(NamedTuple):
    kind: Literal["keep", "session", "user", "all"]
    key: str
    value: bytes = b""
    deadline: float = 0.0
    group: str | None = None


class SharedSessions:
    """Session state in a `Store`, shared by every worker; `start()`/`stop()` run its writer task."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._queue: deque[_Op] = deque()
        self._drops = 0  # deletions queued or being applied: meanwhile reads skip the tier
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._down = False
        self._outages = 0  # counts failures, so the writer knows its queue was dropped under it
        self._quiet_until = 0.0  # monotonic: not used again before this, even if Redis answers

    # ----- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._write(), name="rampart-sessions")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)  # which cancels again should redis-py swallow the cancel
        self._queue.clear()
        self._drops = 0

    @property
    def usable(self) -> bool:
        """Whether reads may ask the store now."""
        return self._task is not None and not self._down and not self._drops

    # ----- reads and what they keep -----------------------------------------------------------------
    async def lookup(self, session_id: uuid.UUID) -> Hit | Miss | None:
        """The entry (Hit), or the store's clock for a deadline (Miss); None: do not use the tier now."""
        if not self.usable:
            return None
        try:
            entry = await self._store.get_entry(f"s:{session_id}")
        except Exception as exc:
            self._failed("a lookup", exc)
            return None
        if entry.value is None or entry.ttl is None:
            return Miss(entry.clock)
        if not entry.value:
            return Hit(None, entry.ttl)
        user_id, _, role = entry.value.decode().partition(":")
        try:
            return Hit((uuid.UUID(user_id), role), entry.ttl)
        except ValueError:  # not written by us: read the database and write it over
            return Miss(entry.clock)

    def keep(self, session_id: uuid.UUID, state: State, *, deadline: float) -> None:
        """Queue the state read from the database, kept until `deadline` (the store's clock)."""
        if self._task is None or self._down or len(self._queue) >= _MAX_QUEUED:
            return
        if state is None:
            op = _Op("keep", f"s:{session_id}", b"", deadline)
        else:
            op = _Op("keep", f"s:{session_id}", f"{state[0]}:{state[1]}".encode(), deadline, f"u:{state[0]}")
        self._queue.append(op)
        self._wake.set()

    # ----- deletions --------------------------------------------------------------------------------
    def drop_session(self, session_id: uuid.UUID) -> None:
        self._drop(_Op("session", f"s:{session_id}"))

    def drop_user(self, user_id: uuid.UUID) -> None:
        self._drop(_Op("user", f"u:{user_id}"))

    def drop_all(self) -> None:
        self._drop(_Op("all", ""))

    def _drop(self, op: _Op) -> None:
        if self._task is None:
            return
        if self._down:  # it cannot be applied: what it should remove must expire before the tier is used
            self._quiet_until = max(self._quiet_until, time.monotonic() + _QUIET)
            return
        self._drops += 1
        self._queue.append(op)
        self._wake.set()

    # ----- the writer -------------------------------------------------------------------------------
    async def _write(self) -> None:
        """Apply queued writes and deletions in order, one at a time; while Redis is down, probe it."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._down:
                await asyncio.sleep(max(0.0, self._quiet_until - time.monotonic()))
                await self._probe()
                continue
            while self._queue and not self._down:
                op = self._queue.popleft()
                outages = self._outages
                try:
                    await self._apply(op)
                except Exception as exc:
                    self._failed("a write" if op.kind == "keep" else "a deletion", exc)
                    break
                if op.kind != "keep" and outages == self._outages:
                    self._drops -= 1

    async def _apply(self, op: _Op) -> None:
        if op.kind == "keep":
            await self._store.set_until(op.key, op.value, deadline=op.deadline, group=op.group)
        elif op.kind == "session":
            await self._store.delete(op.key)
        elif op.kind == "user":
            await self._store.delete_group(op.key)
        else:
            await self._store.delete_prefix(op.key)

    async def _probe(self) -> None:
        """Back in use when Redis answers and the quiet time (extended by missed deletions) is over."""
        try:
            if time.monotonic() >= self._quiet_until:
                await self._store.get_entry("probe")
        except Exception:
            self._quiet_until = time.monotonic() + _QUIET
        if time.monotonic() < self._quiet_until:
            self._wake.set()  # not yet: wait again
            return
        self._down = False
        log.info("session cache: Redis answers again; the shared tier is back in use")

    def _failed(self, what: str, exc: Exception) -> None:
        """Stop using the tier: reads go to the database until Redis answers and `_QUIET` has passed."""
        if not self._down:
            # The exception's type only: its text may name the server, and adds nothing here.
            log.warning(
                "session cache: Redis failed during %s (%s); sessions are checked in the database "
                "until it answers again",
                what,
                type(exc).__name__,
            )
        self._down = True
        self._outages += 1
        self._quiet_until = max(self._quiet_until, time.monotonic() + _QUIET)
        # What was queued is dropped; a deletion among it counts as missed, which the quiet time covers.
        self._queue.clear()
        self._drops = 0
        self._wake.set()
