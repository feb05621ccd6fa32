"""The dispatcher: delivers every committed event to every subscriber at least once, across crashes
(decision 0008). A round fans out a batch of `event_queue` (claimed by deleting it) into one
`event_deliveries` row per matching subscriber, then claims due deliveries and leases them: the claim
pushes `next_attempt_at` past the lease and counts the attempt, and the outcome is written only while the
row still carries that attempt. Each step is a short transaction, none open while a subscriber runs, and
each delivery runs in its own task with its own timeout. Failures are retried with backoff and jitter;
after `max_attempts` a delivery is `dead` until replayed. The event's `id` is the idempotency key.

On a Citus cluster (decision 0019) `events` and `event_queue` are distributed, and Citus runs no
`FOR UPDATE` (nor `SKIP LOCKED`) over several shards: the fan-out claims its batch without it, and the
pruning picks its events without it, each under an advisory lock on the coordinator, which every
dispatcher's connection goes to, so two never claim the same events. Deliveries (`event_deliveries`) stay
on the coordinator, claimed as above. Nothing there deletes a pruned event's delivery rows for it (a
local table cannot reference a distributed one): the pruning does.

Wake-ups: `rampart_events` and the `also_wake_on` channels on the worker's listener (decision 0012), at
most every `coalesce` seconds; polling every `poll_interval` seconds covers a lost listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg

from rampart.db.listener import Listener
from rampart.db.pool import Database
from rampart.errors import ServiceUnavailable
from rampart.events.log import to_event
from rampart.lib.aio import cancel_and_wait
from rampart.lib.bus import check_pattern, pattern_matches

log = logging.getLogger("rampart.events")

CHANNEL = "rampart_events"
_MEASURE_INTERVAL = 10.0  # seconds between two measurements of the dispatcher lag
Handler = Callable[[Mapping[str, Any]], Awaitable[None] | None]
# (outcome, event type): outcomes are "delivered", "retried", "dead_lettered".
Observer = Callable[[str, str], None]


class DeliveryFailed(Exception):
    """An expected failure a subscriber reports (a receiver answered 500): retried and logged without a
    traceback, like `ServiceUnavailable`; any other exception is retried too, but logged as a bug."""


@dataclass(frozen=True, slots=True)
class Subscriber:
    """A named consumer of events matching `pattern` (or any of several patterns). The name keys its
    delivery state: keep it stable across restarts."""

    name: str
    pattern: str | tuple[str, ...]
    handler: Handler
    timeout: float = 30.0

    def __post_init__(self) -> None:
        for pattern in self.patterns:
            check_pattern(pattern)

    @property
    def patterns(self) -> tuple[str, ...]:
        return (self.pattern,) if isinstance(self.pattern, str) else self.pattern

    def matches(self, event_type: str) -> bool:
        return any(pattern_matches(p, event_type) for p in self.patterns)


class SubscriberSource(Protocol):
    """Subscribers that come and go at run time (webhooks): asked again before every round."""

    async def subscribers(self) -> Sequence[Subscriber]: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter: attempt n waits base·2^(n-1), capped, times a random 0.5–1."""

    max_attempts: int = 8
    base_delay: float = 2.0
    max_delay: float = 3600.0

    def delay(self, attempts: int) -> float:
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** max(0, attempts - 1))
        # Jitter spreads the retries of many deliveries that failed together (a receiver outage).
        return ceiling * random.uniform(0.5, 1.0)  # noqa: S311 - not for security


# Claim a batch of queued events by removing it from the queue: in the fan-out's transaction, so a
# crash before the commit leaves them queued.
_FAN_OUT_CLAIM = (
    "DELETE FROM event_queue WHERE id IN"
    " (SELECT id FROM event_queue ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) RETURNING id, type"
)
# On a Citus cluster: without the row locks (refused over several shards), under CLAIM_LOCK.
CLAIM_LOCK = "SELECT pg_advisory_xact_lock(7272740004)"
_FAN_OUT_CLAIM_CITUS = (
    "DELETE FROM event_queue WHERE (shard_key, id) IN"
    " (SELECT shard_key, id FROM event_queue ORDER BY id LIMIT $1) RETURNING id, type"
)
_FAN_OUT_INSERT = (
    "INSERT INTO event_deliveries (event_id, subscriber)"
    " SELECT * FROM unnest($1::uuid[], $2::text[]) ON CONFLICT DO NOTHING"
)
_CLAIM = """
UPDATE event_deliveries d
SET attempts = d.attempts + 1, next_attempt_at = now() + make_interval(secs => $2), updated_at = now()
FROM (
    SELECT event_id, subscriber FROM event_deliveries
    WHERE status = 'pending' AND next_attempt_at <= now() AND subscriber = ANY($3::text[])
    ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED
) due
WHERE d.event_id = due.event_id AND d.subscriber = due.subscriber
RETURNING d.event_id, d.subscriber, d.attempts
"""
_EVENTS = (
    "SELECT id, type, resource, resource_id, actor_id, impersonator_id, occurred_at, data, changes,"
    " request_id FROM events WHERE id = ANY($1::uuid[])"
)
# The outcome of a claimed attempt, written only while the row still carries that attempt (the fence).
_OUTCOME = (
    "UPDATE event_deliveries SET status = $4, last_error = $5, updated_at = now(),"
    " next_attempt_at = now() + make_interval(secs => $6),"
    " delivered_at = CASE WHEN $4 = 'delivered' THEN now() ELSE delivered_at END"
    " WHERE event_id = $1 AND subscriber = $2 AND attempts = $3"
)
# Events are made with UUIDv7 ids, so `id < $1` (the first id of the cutoff's millisecond) reads the old
# ones from the start of the primary key and stops there, instead of testing every event's time.
_PRUNE = """
DELETE FROM events WHERE id IN (
    SELECT e.id FROM events e
    WHERE e.id < $1 AND e.occurred_at < now() - make_interval(secs => $2)
      AND NOT EXISTS (SELECT 1 FROM event_queue q WHERE q.id = e.id)
      AND NOT EXISTS (
          SELECT 1 FROM event_deliveries d WHERE d.event_id = e.id AND d.status = 'pending'
      )
    ORDER BY e.id LIMIT $3 FOR UPDATE SKIP LOCKED
)
"""
# On a Citus cluster, in steps under CLAIM_LOCK: the candidates (co-located with their queue rows), those
# still waiting for a delivery left out, then the events and their delivery rows (no reference cascades).
_PRUNE_CANDIDATES_CITUS = """
SELECT e.id FROM events e
WHERE e.id < $1 AND e.occurred_at < now() - make_interval(secs => $2)
  AND NOT EXISTS (SELECT 1 FROM event_queue q WHERE q.shard_key = e.shard_key AND q.id = e.id)
ORDER BY e.id LIMIT $3
"""
_PENDING = (
    "SELECT DISTINCT event_id FROM event_deliveries WHERE event_id = ANY($1::uuid[]) AND status = 'pending'"
)
_PRUNE_CITUS = (
    "DELETE FROM events WHERE id = ANY($1::uuid[])",
    "DELETE FROM event_deliveries WHERE event_id = ANY($1::uuid[])",
    "DELETE FROM webhook_attempts WHERE event_id = ANY($1::uuid[])",
)
_PRUNE_DELETED_CITUS = """
DELETE FROM {table} WHERE id IN (
    SELECT id FROM {table} WHERE deleted_at < now() - make_interval(secs => $1) ORDER BY deleted_at LIMIT $2
)
"""
_PRUNE_DELETED = """
DELETE FROM {table} WHERE id IN (
    SELECT id FROM {table} WHERE deleted_at < now() - make_interval(secs => $1)
    ORDER BY deleted_at LIMIT $2 FOR UPDATE SKIP LOCKED
)
"""
_LAG = """
SELECT GREATEST(
    (SELECT extract(epoch FROM now() - occurred_at) FROM events
     WHERE id = (SELECT id FROM event_queue ORDER BY id LIMIT 1)),
    (SELECT extract(epoch FROM now() - min(next_attempt_at)) FROM event_deliveries
     WHERE status = 'pending' AND next_attempt_at <= now()),
    0
)
"""


class Dispatcher:
    """One per process; `start()` in the app's lifespan, `stop()` at shutdown."""

    def __init__(
        self,
        *,
        db: Database,
        listener: Listener | None = None,
        also_wake_on: Iterable[str] = (),
        subscribers: Iterable[Subscriber] = (),
        sources: Iterable[SubscriberSource] = (),
        retry: RetryPolicy | None = None,
        lease: float = 60.0,
        poll_interval: float = 5.0,
        coalesce: float = 0.05,
        batch_size: int = 100,
        concurrency: int = 16,
        retention: float | None = None,
        deleted_tables: Sequence[str] = (),
        prune_interval: float = 3600.0,
        observer: Observer | None = None,
    ) -> None:
        self.db = db
        if listener is not None:  # without one the dispatcher only polls
            listener.subscribe(CHANNEL, lambda _payload: self.wake(), on_up=lambda _conn: self.wake())
            for channel in also_wake_on:
                listener.subscribe(channel, lambda _payload: self.wake())
        self._subscribers = {s.name: s for s in subscribers}
        self._sources = list(sources)
        self.retry = retry or RetryPolicy()
        self.lease = lease
        self.poll_interval = poll_interval
        # Woken rounds start at most this often: under load one round takes the events of many commits.
        self.coalesce = coalesce
        self.batch_size = batch_size
        self._slots = asyncio.Semaphore(concurrency)
        self.retention = retention
        self.deleted_tables = tuple(deleted_tables)  # the resources' records of deleted rows
        self.prune_interval = prune_interval
        self._observer = observer
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_prune = -prune_interval
        self._last_measure = -_MEASURE_INTERVAL
        self.lag_seconds = 0.0

    def subscribe(self, subscriber: Subscriber) -> None:
        """Add a subscriber (before `start()`); its name must be unique."""
        if subscriber.name in self._subscribers:
            raise ValueError(f"subscriber {subscriber.name!r} is declared twice")
        self._subscribers[subscriber.name] = subscriber

    def wake(self) -> None:
        """Look for work now instead of at the next poll."""
        self._wake.set()

    def start(self) -> None:
        """Run in the background of the current event loop until `stop()`."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="rampart-dispatcher")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _run(self) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            started = loop.time()
            try:
                busy = await self.run_once()
                await self._housekeeping()
                failures = 0
            except Exception:
                # The database is down or a statement failed: keep the process up and try again later.
                failures += 1
                log.warning("event dispatcher round failed (%d in a row)", failures, exc_info=True)
                await asyncio.sleep(min(self.poll_interval, 0.5 * 2 ** min(failures, 10)))
                continue
            if not busy:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_interval):
                        await self._wake.wait()
                await asyncio.sleep(self.coalesce - (loop.time() - started))  # at once when negative

    async def run_once(self) -> bool:
        """Fan out and deliver one batch each; True when a batch was full (more work is waiting)."""
        subscribers = dict(self._subscribers)
        for source in self._sources:
            subscribers.update((s.name, s) for s in await source.subscribers())
        fanned = await self.fan_out(subscribers)
        delivered = await self.deliver_due(subscribers)
        return fanned >= self.batch_size or delivered >= self.batch_size

    async def fan_out(self, subscribers: Mapping[str, Subscriber]) -> int:
        """Turn a batch of new events into delivery rows; returns how many events were claimed."""
        citus = await self.db.on_citus()
        if not subscribers and not citus:  # nothing to write but the claim: one statement, no transaction
            return len(await self.db.fetch(_FAN_OUT_CLAIM, self.batch_size))
        async with self.db.transaction() as conn:
            if citus:
                await conn.execute(CLAIM_LOCK)
                rows = await conn.fetch(_FAN_OUT_CLAIM_CITUS, self.batch_size)
            else:
                rows = await conn.fetch(_FAN_OUT_CLAIM, self.batch_size)
            pairs = [(r["id"], s.name) for r in rows for s in subscribers.values() if s.matches(r["type"])]
            if pairs:
                await conn.execute(_FAN_OUT_INSERT, *map(list, zip(*pairs, strict=True)))
        return len(rows)

    async def deliver_due(self, subscribers: Mapping[str, Subscriber]) -> int:
        """Claim and run a batch of due deliveries; returns how many were claimed."""
        if not subscribers:
            return 0
        lease = max(self.lease, *(s.timeout + 1.0 for s in subscribers.values()))
        async with self.db.transaction() as conn:
            claimed = await conn.fetch(_CLAIM, self.batch_size, lease, list(subscribers))
            rows = await conn.fetch(_EVENTS, [c["event_id"] for c in claimed])
        events = {r["id"]: to_event(r) for r in rows}
        results = await asyncio.gather(
            *(
                self._deliver(subscribers[c["subscriber"]], events[c["event_id"]], c["attempts"])
                for c in claimed
                if c["event_id"] in events
            ),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                # Recording an outcome failed (database gone): the lease runs out and the delivery is retried.
                log.warning("recording a delivery outcome failed", exc_info=result)
        return len(claimed)

    async def _deliver(self, subscriber: Subscriber, event: dict[str, Any], attempt: int) -> None:
        extra = {"event_id": event["id"], "subscriber": subscriber.name}
        error: str | None = None
        async with self._slots:
            try:
                async with asyncio.timeout(subscriber.timeout):
                    result = subscriber.handler(event)
                    if inspect.isawaitable(result):
                        await result
            except TimeoutError:
                error = f"timed out after {subscriber.timeout:g} s"
            except Exception as exc:
                expected = isinstance(exc, DeliveryFailed | ServiceUnavailable)  # retried, no traceback
                error = (str(exc) or type(exc).__name__) if expected else f"{type(exc).__name__}: {exc}"
                error = error[:1000]
                log.log(
                    logging.INFO if expected else logging.ERROR,
                    "subscriber %s: event %s not delivered (attempt %d): %s",
                    subscriber.name,
                    event["id"],
                    attempt,
                    error,
                    exc_info=not expected,
                    extra=extra,
                )
        if error is None:
            status, outcome = "delivered", "delivered"
        elif attempt >= self.retry.max_attempts:
            status, outcome = "dead", "dead_lettered"
            log.error(
                "event %s dead-lettered for subscriber %s after %d attempts",
                event["id"],
                subscriber.name,
                attempt,
                extra=extra,
            )
        else:
            status, outcome = "pending", "retried"
        delay = self.retry.delay(attempt)  # read only while pending
        await self.db.execute(
            _OUTCOME, uuid.UUID(event["id"]), subscriber.name, attempt, status, error, delay
        )
        if self._observer is not None:
            try:
                self._observer(outcome, event["type"])
            except Exception:  # metrics must never break delivery
                log.debug("event observer failed", exc_info=True)

    async def _housekeeping(self) -> None:
        now = time.monotonic()
        if now - self._last_measure >= _MEASURE_INTERVAL:
            self._last_measure = now
            self.lag_seconds = float(await self.db.fetchval(_LAG) or 0.0)
        if self.retention is not None and now - self._last_prune >= self.prune_interval:
            self._last_prune = now
            pruned = await prune(self.db, retention=self.retention, deleted_tables=self.deleted_tables)
            if pruned:
                log.info("pruned %d events older than %g days", pruned, self.retention / 86_400)


async def prune(
    db: Database,
    *,
    retention: float,
    deleted_tables: Sequence[str] = (),
    batch: int = 5000,
    max_batches: int = 100,
) -> int:
    """Delete handed-out events older than `retention` seconds (with their delivery rows), and the rows
    deleted as long ago from the records of deleted rows; returns how many events went.

    Events still waiting for a delivery are kept whatever their age, so pruning never loses a delivery.
    Each batch is its own short statement (its rows locked, SKIP LOCKED for the other workers' rounds),
    so writers never wait on a long prune.
    """
    cutoff = uuid.UUID(int=max(0, int((time.time() - retention) * 1000)) << 80)
    if await db.on_citus():
        return await _prune_on_citus(
            db,
            cutoff=cutoff,
            retention=retention,
            deleted_tables=deleted_tables,
            batch=batch,
            max_batches=max_batches,
        )
    total = 0
    for _ in range(max_batches):  # bounded, so one round never runs away; the next round goes on
        deleted = _count(await db.execute(_PRUNE, cutoff, retention, batch))
        total += deleted
        if deleted < batch:
            break
    for table in deleted_tables:
        for _ in range(max_batches):
            if _count(await db.execute(_PRUNE_DELETED.format(table=table), retention, batch)) < batch:
                break
    return total


async def _prune_on_citus(
    db: Database,
    *,
    cutoff: uuid.UUID,
    retention: float,
    deleted_tables: Sequence[str],
    batch: int,
    max_batches: int,
) -> int:
    """`prune` on a Citus cluster: each batch a short transaction under CLAIM_LOCK (see the module)."""
    total = 0
    for _ in range(max_batches):
        async with db.transaction() as conn:
            await conn.execute(CLAIM_LOCK)
            found = [r["id"] for r in await conn.fetch(_PRUNE_CANDIDATES_CITUS, cutoff, retention, batch)]
            waiting = {r["event_id"] for r in await conn.fetch(_PENDING, found)} if found else set()
            gone = [event_id for event_id in found if event_id not in waiting]
            if gone:
                for statement in _PRUNE_CITUS:
                    await conn.execute(statement, gone)
        total += len(gone)
        if len(found) < batch:
            break
    for table in deleted_tables:
        for _ in range(max_batches):
            async with db.transaction() as conn:
                await conn.execute(CLAIM_LOCK)
                deleted = _count(
                    await conn.execute(_PRUNE_DELETED_CITUS.format(table=table), retention, batch)
                )
            if deleted < batch:
                break
    return total


def _count(status: str) -> int:
    """The row count of a command status (`DELETE 5000`)."""
    return int(status.rsplit(" ", 1)[-1])


async def replay(db: Database, *, subscriber: str | None = None, event_id: uuid.UUID | None = None) -> int:
    """Make dead deliveries pending again (all, or those of one subscriber and/or event); returns how many."""
    status = await db.execute(
        "UPDATE event_deliveries SET status = 'pending', attempts = 0, next_attempt_at = now(),"
        " updated_at = now() WHERE status = 'dead' AND ($1::text IS NULL OR subscriber = $1)"
        " AND ($2::uuid IS NULL OR event_id = $2)",
        subscriber,
        event_id,
    )
    await db.execute(f"NOTIFY {CHANNEL}")
    return _count(status)


async def redeliver(db: Database | asyncpg.Connection, *, subscriber: str, event_id: uuid.UUID) -> None:
    """Queue `event_id` for `subscriber` again, whatever happened to it before (in the transaction of the
    connection given: the dispatchers hear of it once it commits)."""
    await db.execute(
        "INSERT INTO event_deliveries (event_id, subscriber) VALUES ($1, $2)"
        " ON CONFLICT (event_id, subscriber) DO UPDATE SET status = 'pending', attempts = 0,"
        " next_attempt_at = now(), last_error = NULL, updated_at = now()",
        event_id,
        subscriber,
    )
    await db.execute(f"NOTIFY {CHANNEL}")


# Counted up to a bound: the overview must stay fast when a backlog is huge ("10000+" says enough).
BACKLOG_BOUND = 10_000
_BACKLOG = f"""
SELECT
    (SELECT count(*) FROM (SELECT 1 FROM event_queue LIMIT {BACKLOG_BOUND + 1}) q) AS queued,
    (SELECT count(*) FROM (SELECT 1 FROM event_deliveries WHERE status = 'pending'
        LIMIT {BACKLOG_BOUND + 1}) p) AS pending,
    (SELECT count(*) FROM (SELECT 1 FROM event_deliveries WHERE status = 'dead'
        LIMIT {BACKLOG_BOUND + 1}) d) AS dead
"""


async def backlog(db: Database) -> dict[str, int]:
    """Events waiting to be fanned out, deliveries waiting (or retrying), dead deliveries; each counted
    up to BACKLOG_BOUND + 1."""
    row = await db.fetchrow(_BACKLOG)
    assert row is not None
    return {"queued": row["queued"], "pending": row["pending"], "dead": row["dead"]}


async def dead_letters(db: Database, *, limit: int = 100) -> list[dict[str, Any]]:
    """The most recent dead deliveries: event, subscriber, attempts, last error."""
    rows = await db.fetch(
        "SELECT d.event_id::text, e.type, d.subscriber, d.attempts, d.last_error, d.updated_at AS dead_since"
        " FROM event_deliveries d JOIN events e ON e.id = d.event_id"
        " WHERE d.status = 'dead' ORDER BY d.updated_at DESC LIMIT $1",
        limit,
    )
    return [
        {**r, "dead_since": r["dead_since"].isoformat(timespec="milliseconds").replace("+00:00", "Z")}
        for r in rows
    ]
