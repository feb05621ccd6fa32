"""Read replicas: where each read goes, and read-your-writes for the caller who just wrote.

- Writes, and every read inside a transaction, use the primary.
- A read outside a transaction goes to a streaming replica that is up, no more than `max_lag` seconds
  behind and, when its caller wrote recently, has replayed the caller's last commit. Otherwise it goes
  to the primary. A replica that fails during a read is skipped for `retry_after` seconds and the read
  runs again on the primary, so a replica going down costs no failed request.
- After a caller's write commits, `wrote(subject)` records the primary's WAL insert position in a shared
  `Store` (Redis: every worker and instance sees it) as the caller's *mark*. A replica may serve that
  caller once `pg_last_wal_replay_lsn()` has reached the mark.
- Each replica's replay position and lag are probed on a connection of its own at most every
  `probe_ttl` seconds (20 ms), so a read costs one store lookup (decision 0010).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg

from rampart.db.pool import Database
from rampart.errors import ServiceUnavailable
from rampart.lib.store import Store

log = logging.getLogger("rampart.db.replicas")

T = TypeVar("T")

# The insert position, not pg_current_wal_lsn() (the write position): read after COMMIT returned, it
# is past the commit record even with synchronous_commit = off, when the write position may not be yet.
_PRIMARY_LSN = "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint"
# One round trip: is it a standby, is it streaming, how far has it replayed, and how far behind is it.
# Lag is 0 when it has replayed all it received; otherwise the age of the last transaction it replayed
# (an overestimate after an idle spell, never an underestimate of replay lag).
_PROBE = """
SELECT pg_is_in_recovery() AS standby,
       EXISTS (SELECT 1 FROM pg_stat_wal_receiver) AS streaming,
       (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint AS replayed,
       CASE WHEN pg_last_wal_receive_lsn() IS NULL
                 OR pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0.0
            ELSE COALESCE(extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8,
                          'Infinity'::float8)
       END AS lag
"""
MARK_PREFIX = "rw:"
# How long a caller's mark is kept. It only has to outlive the lag of every replica still in use, which
# `max_lag` (at most 60 s) bounds; past it, any replica in use has replayed the write.
MARK_TTL = 300.0


@dataclass(frozen=True, slots=True)
class ReplicaState:
    """What a probe found. `problem` is None when the replica may serve reads (given the marks)."""

    replayed: int
    lag: float
    problem: str | None
    checked_at: float


@dataclass(eq=False, repr=False, slots=True)  # no repr: the DSN may hold a password
class Replica:
    """One streaming replica: a pool for reads, and a probe connection for its position."""

    name: str
    dsn: str
    db: Database
    max_lag: float
    probe_timeout: float
    retry_after: float
    cache_size: int  # statements the probe connection keeps prepared (none behind a pooler)
    state: ReplicaState | None = None
    down_until: float = 0.0
    down_reason: str = ""
    _conn: asyncpg.Connection | None = None
    _probing: asyncio.Task[ReplicaState | None] | None = None

    async def current(self, ttl: float, *, usable_for: float = 0.0) -> ReplicaState | None:
        """The probed state; None when the replica cannot be reached.

        Younger than `ttl`: as cached. Younger than `usable_for`: as cached too, while a probe refreshes it
        in the background (the read does not wait for it). Older: after a probe. An old state understates
        how far the replica has replayed (so it never lets a caller's read miss their write; it only sends
        more reads to the primary), and may miss lag that began after it: for at most `usable_for`.
        """
        state = self.state
        age = time.monotonic() - state.checked_at if state is not None else math.inf
        if age < ttl:
            return state
        if self._probing is None:
            self._probing = asyncio.get_running_loop().create_task(
                self._probe(), name="rampart-replica-probe"
            )
            self._probing.add_done_callback(self._probe_done)
        if age < usable_for:
            return state
        # Shielded: one caller's request timing out must not cancel the probe the others wait for.
        return await asyncio.shield(self._probing)

    def _probe_done(self, _task: asyncio.Task[ReplicaState | None]) -> None:
        self._probing = None

    async def _probe(self) -> ReplicaState | None:
        try:
            async with asyncio.timeout(self.probe_timeout):
                if self._conn is None or self._conn.is_closed():
                    self._conn = await asyncpg.connect(
                        self.dsn,
                        statement_cache_size=self.cache_size,
                        server_settings={"application_name": "rampart-replica-probe"},
                    )
                row = await self._conn.fetchrow(_PROBE)
        except Exception as exc:  # whatever the failure, the replica is not fit to serve
            await self._drop_probe_connection()
            self.mark_down(f"probe failed: {type(exc).__name__}")
            return None
        assert row is not None
        problem = None
        lag = float(row["lag"])
        if not row["standby"]:
            problem = "not a standby"
        elif not row["streaming"] or row["replayed"] is None:
            problem = "not streaming"
        elif lag > self.max_lag:
            problem = f"lagging {lag:.1f} s"
        if self.down_until:
            log.info("replica %s is back (%s)", self.name, problem or "ok")
            self.down_until = 0.0
        self.state = ReplicaState(row["replayed"] or 0, lag, problem, time.monotonic())
        return self.state

    def mark_down(self, reason: str) -> None:
        """Skip this replica for a while (`retry_after`); reads go elsewhere meanwhile."""
        if not self.down_until:
            log.warning("replica %s is down (%s): its reads go elsewhere", self.name, reason)
        self.down_until = time.monotonic() + self.retry_after
        self.down_reason = reason
        self.state = None

    async def _drop_probe_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()

    async def close(self) -> None:
        if self._probing is not None:
            self._probing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._probing
        await self._drop_probe_connection()
        await self.db.close()


class Replicas:
    """The read router of one worker process. `read_where(subject, work)` runs `work(conn)` where it may."""

    def __init__(
        self,
        primary: Database,
        dsns: Sequence[str],
        *,
        marks: Store,
        max_lag: float = 1.0,
        probe_ttl: float = 0.02,
        probe_timeout: float = 1.0,
        retry_after: float = 1.0,
        make_pool: Callable[[str], Database] | None = None,
        transaction_pooling: bool = False,
    ) -> None:
        if not dsns:
            raise ValueError("Replicas needs at least one replica URL")
        self._primary = primary
        self._marks = marks
        self._probe_ttl = probe_ttl
        make_pool = make_pool or Database
        cache_size = 0 if transaction_pooling else 100
        self.replicas = [
            Replica(f"replica_{i}", dsn, make_pool(dsn), max_lag, probe_timeout, retry_after, cache_size)
            for i, dsn in enumerate(dsns, start=1)
        ]
        self._next = 0
        # Plain integers (no metric call per read); the metrics module copies them at scrape time.
        self.counts = {"primary": 0, "replica": 0}

    async def wrote(self, subject: Any) -> None:
        """`subject` just committed a write: from now on, their reads need a replica that has replayed it.

        Called after COMMIT, so the position read now is past the commit record. A failure is logged, not
        raised: the write has committed and must be answered. (Without Redis nothing is lost but this
        worker's mark; with Redis down, the rate limiter already refuses every request.)
        """
        if subject is None:
            return
        try:
            position = await self._primary.fetchval(_PRIMARY_LSN)
            # Fixed width, so that comparing the bytes (Store.set_max) compares the positions.
            await self._marks.set_max(MARK_PREFIX + str(subject), f"{position:016x}".encode(), ttl=MARK_TTL)
        except Exception:
            log.warning(
                "could not record a read-your-writes mark: this caller may read stale data", exc_info=True
            )

    async def read_where(
        self, subject: Any, work: Callable[[asyncpg.Connection], Awaitable[T]]
    ) -> tuple[T, bool]:
        """Run the read-only `work` on a replica that may serve `subject` (None: anyone), else the primary
        (inside a transaction: on the transaction's connection); and whether it ran on a replica (a cache
        must not keep what a replica answered)."""
        if not self._primary.in_transaction():
            replica = await self._choose(subject)
            if replica is not None:
                try:
                    async with replica.db.connection() as conn:
                        result = await work(conn)
                except ServiceUnavailable as exc:
                    # Unreachable, or its pool exhausted: the primary answers this read either way, but
                    # only an unreachable replica is taken out of the rotation.
                    if not isinstance(exc.__cause__, TimeoutError):
                        replica.mark_down(f"read failed: {type(exc.__cause__).__name__}")
                except (asyncpg.SerializationError, asyncpg.DeadlockDetectedError):
                    # Cancelled by a conflict with recovery (the replica replayed a change the query needed
                    # gone, or a lock it waited on): the primary has no such conflict.
                    log.info("read on %s cancelled by recovery; retrying on the primary", replica.name)
                else:
                    self.counts["replica"] += 1
                    return result, True
        self.counts["primary"] += 1
        async with self._primary.connection() as conn:
            return await work(conn), False

    async def fetch(self, subject: Any, sql: str, *args: Any) -> list[asyncpg.Record]:
        rows, _ = await self.read_where(subject, lambda conn: conn.fetch(sql, *args))
        return rows

    async def fetchrow(self, subject: Any, sql: str, *args: Any) -> asyncpg.Record | None:
        row, _ = await self.read_where(subject, lambda conn: conn.fetchrow(sql, *args))
        return row

    async def _choose(self, subject: Any) -> Replica | None:
        needed = 0
        if subject is not None:
            try:
                mark = await self._marks.get(MARK_PREFIX + str(subject))
            except Exception:  # the store is down: the primary is the one place sure to hold the writes
                log.debug("read-your-writes mark unavailable; reading from the primary", exc_info=True)
                return None
            if mark is not None:
                needed = int(mark, 16)
        count = len(self.replicas)
        start, self._next = self._next, (self._next + 1) % count  # spread reads over the replicas
        now = time.monotonic()
        for i in range(count):
            replica = self.replicas[(start + i) % count]
            if replica.down_until > now:
                continue
            state = await replica.current(self._probe_ttl, usable_for=self._probe_ttl * 5)
            if state is not None and state.problem is None and state.replayed >= needed:
                return replica
        return None

    async def report(self) -> dict[str, str]:
        """Each replica's condition, probed now: "ok", "down (...)", "lagging 2.5 s", "not streaming"."""
        states = await asyncio.gather(*(r.current(0.0) for r in self.replicas))  # fresh probes, all of them
        return {
            r.name: f"down ({r.down_reason})" if state is None else state.problem or "ok"
            for r, state in zip(self.replicas, states, strict=True)
        }

    async def close(self) -> None:
        for replica in self.replicas:
            await replica.close()
