"""The dispatcher: at-least-once delivery from the outbox, fan-out by pattern, leases so two dispatchers
never run one delivery at once, retries with backoff, dead letters and replay, pruning."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pytest

from rampart.db.listener import Listener
from rampart.db.outbox import write_event
from rampart.db.pool import Database
from rampart.errors import ServiceUnavailable
from rampart.events.dispatcher import Dispatcher, RetryPolicy, Subscriber, dead_letters, prune, replay
from tests.events.conftest import emit, emit_aged, kind

FAST = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05)


async def until(condition: Callable[[], Awaitable[bool]], *, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def drain(dispatcher: Dispatcher, condition: Callable[[], bool], *, timeout: float = 10.0) -> None:
    """Run dispatcher rounds until `condition()` holds (bounded)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the dispatcher did not get there in time"
        if not await dispatcher.run_once():
            await asyncio.sleep(0.02)


async def status_of(db: Database, event_id: str, subscriber: str) -> dict[str, Any]:
    row = await db.fetchrow(
        "SELECT status, attempts, last_error FROM event_deliveries WHERE event_id = $1 AND subscriber = $2",
        uuid.UUID(event_id),
        subscriber,
    )
    assert row is not None
    return dict(row)


def recorder() -> tuple[list[Mapping[str, Any]], Callable[[Mapping[str, Any]], Awaitable[None]]]:
    seen: list[Mapping[str, Any]] = []

    async def handle(event: Mapping[str, Any]) -> None:
        seen.append(event)

    return seen, handle


async def test_each_event_reaches_each_matching_subscriber_once(db: Database) -> None:
    a, b = kind(), kind()
    all_a, handle_all_a = recorder()
    created_b, handle_created_b = recorder()
    dispatcher = Dispatcher(
        db=db,
        subscribers=[
            Subscriber(f"all-{a}", f"{a}.*", handle_all_a),
            Subscriber(f"created-{b}", f"{b}.created", handle_created_b),
        ],
    )
    ids_a = [await emit(db, a, "created"), await emit(db, a, "deleted")]
    ids_b = [await emit(db, b, "created", title="x"), await emit(db, b, "updated")]
    await drain(dispatcher, lambda: len(all_a) == 2 and len(created_b) == 1)
    await dispatcher.run_once()  # one more round must not hand anything out again
    assert sorted(e["id"] for e in all_a) == sorted(ids_a)
    assert [e["id"] for e in created_b] == [ids_b[0]]
    assert created_b[0]["data"] == {"title": "x"}
    assert created_b[0]["type"] == f"{b}.created"
    assert (await status_of(db, ids_a[0], f"all-{a}"))["status"] == "delivered"
    undelivered = await db.fetchval(
        "SELECT count(*) FROM event_queue WHERE id = ANY($1::uuid[])",
        [uuid.UUID(i) for i in ids_a + ids_b],
    )
    assert undelivered == 0


async def test_two_dispatchers_never_deliver_one_event_at_the_same_time(db: Database) -> None:
    r = kind()
    in_flight: set[str] = set()
    overlaps: list[str] = []
    deliveries: list[str] = []

    async def slow(event: Mapping[str, Any]) -> None:
        if event["id"] in in_flight:
            overlaps.append(event["id"])
        in_flight.add(event["id"])
        await asyncio.sleep(0.01)
        deliveries.append(event["id"])
        in_flight.discard(event["id"])

    def make() -> Dispatcher:
        # Tiny batches and a short lease: the two race for the same rows all the time.
        return Dispatcher(
            db=db, subscribers=[Subscriber(f"s-{r}", f"{r}.*", slow, timeout=5)], batch_size=3, lease=6
        )

    ids = [await emit(db, r) for _ in range(30)]
    one, two = make(), make()

    async def loop(dispatcher: Dispatcher) -> None:
        await drain(dispatcher, lambda: len(set(deliveries)) == len(ids), timeout=20)

    await asyncio.gather(loop(one), loop(two))
    assert overlaps == []
    assert sorted(deliveries) == sorted(ids)  # nothing failed, so nothing was delivered twice


async def test_a_failing_subscriber_retries_then_dead_letters_without_holding_up_others(db: Database) -> None:
    r = kind()
    good, handle_good = recorder()
    calls: list[float] = []
    healthy = False

    async def flaky(event: Mapping[str, Any]) -> None:
        calls.append(time.monotonic())
        if not healthy:
            raise RuntimeError("receiver said no")

    dispatcher = Dispatcher(
        db=db,
        subscribers=[Subscriber(f"bad-{r}", f"{r}.*", flaky), Subscriber(f"good-{r}", f"{r}.*", handle_good)],
        retry=FAST,
    )
    event_id = await emit(db, r)

    async def dead() -> bool:
        return (await status_of(db, event_id, f"bad-{r}"))["status"] == "dead"

    deadline = time.monotonic() + 10
    await dispatcher.run_once()
    while not await dead():
        assert time.monotonic() < deadline
        await dispatcher.run_once()
        await asyncio.sleep(0.02)
    assert [e["id"] for e in good] == [event_id]
    state = await status_of(db, event_id, f"bad-{r}")
    assert state["attempts"] == 3
    assert "RuntimeError: receiver said no" in state["last_error"]
    assert len(calls) == 3
    assert any(d["event_id"] == event_id and d["subscriber"] == f"bad-{r}" for d in await dead_letters(db))
    for _ in range(3):  # dead stays dead
        await dispatcher.run_once()
    assert len(calls) == 3

    healthy = True
    assert await replay(db, subscriber=f"bad-{r}") == 1
    await drain(dispatcher, lambda: len(calls) == 4)
    assert (await status_of(db, event_id, f"bad-{r}"))["status"] == "delivered"
    assert [e["id"] for e in good] == [event_id]  # the healthy subscriber got it once, not again


async def test_the_visible_effect_is_exactly_once_when_an_acknowledgement_is_lost(db: Database) -> None:
    """At-least-once delivery + the event id as idempotency key = one effect."""
    r = kind()
    await db.execute("CREATE TABLE IF NOT EXISTS test_effects (event_id uuid PRIMARY KEY, subscriber text)")
    calls: list[str] = []

    async def apply(event: Mapping[str, Any]) -> None:
        calls.append(event["id"])
        await db.execute(
            "INSERT INTO test_effects VALUES ($1, $2) ON CONFLICT (event_id) DO NOTHING",
            uuid.UUID(event["id"]),
            r,
        )
        if calls.count(event["id"]) == 1:
            raise ConnectionResetError("the acknowledgement was lost")  # effect done, delivery not recorded

    dispatcher = Dispatcher(db=db, subscribers=[Subscriber(f"fx-{r}", f"{r}.*", apply)], retry=FAST)
    ids = [await emit(db, r) for _ in range(3)]
    await drain(dispatcher, lambda: len(calls) == 6)
    assert sorted(calls) == sorted(ids * 2)
    assert await db.fetchval("SELECT count(*) FROM test_effects WHERE subscriber = $1", r) == 3


async def test_a_notification_wakes_a_running_dispatcher(db: Database, own_database_url: str) -> None:
    r = kind()
    seen, handle = recorder()
    # Polling every 30 s: only LISTEN/NOTIFY can deliver within the 5 s the test waits.
    listener = Listener(own_database_url)
    dispatcher = Dispatcher(
        db=db, listener=listener, subscribers=[Subscriber(f"n-{r}", f"{r}.*", handle)], poll_interval=30
    )
    listener.start()
    dispatcher.start()
    try:
        await asyncio.sleep(0.3)  # the first round runs and the dispatcher goes to sleep
        event_id = await emit(db, r)

        async def arrived() -> bool:
            return [e["id"] for e in seen] == [event_id]

        await until(arrived, timeout=5)
    finally:
        await dispatcher.stop()
        await listener.stop()


async def test_a_hanging_subscriber_times_out_and_is_retried(db: Database) -> None:
    r = kind()

    async def hang(event: Mapping[str, Any]) -> None:
        await asyncio.sleep(60)

    dispatcher = Dispatcher(
        db=db, subscribers=[Subscriber(f"h-{r}", f"{r}.*", hang, timeout=0.1)], retry=FAST
    )
    event_id = await emit(db, r)
    started = time.monotonic()
    await dispatcher.run_once()
    assert time.monotonic() - started < 5
    state = await status_of(db, event_id, f"h-{r}")
    assert state["status"] == "pending"
    assert state["attempts"] == 1
    assert "timed out" in state["last_error"]


async def test_a_database_outage_in_a_subscriber_is_retried_without_an_error_log(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    # Found by tests/reliability: every delivery during a PostgreSQL restart logged an error with a
    # traceback (and would page whoever watches error logs), for an outage, not a bug.
    r = kind()

    async def database_down(event: Mapping[str, Any]) -> None:
        raise ServiceUnavailable("The database is unavailable.")

    dispatcher = Dispatcher(db=db, subscribers=[Subscriber(f"u-{r}", f"{r}.*", database_down)], retry=FAST)
    event_id = await emit(db, r)
    caplog.set_level("INFO", logger="rampart.events")
    await dispatcher.run_once()
    state = await status_of(db, event_id, f"u-{r}")
    assert state["status"] == "pending"
    assert state["attempts"] == 1
    assert "unavailable" in state["last_error"]
    assert [rec for rec in caplog.records if rec.levelname == "ERROR" or rec.exc_info] == []


async def test_pruning_keeps_recent_events_and_those_still_waiting(db: Database) -> None:
    r = kind()
    dispatcher = Dispatcher(db=db, subscribers=[Subscriber(f"p-{r}", f"{r}.created", recorder()[1])])
    old_done, old_waiting = await emit_aged(db, r, 40), await emit_aged(db, r, 40, "updated")
    recent = await emit(db, r)
    await drain(dispatcher, lambda: True)
    await dispatcher.run_once()
    # `updated` had no subscriber; give it one that is still waiting (pending) to be delivered.
    await db.execute(
        "INSERT INTO event_deliveries (event_id, subscriber, next_attempt_at)"
        " VALUES ($1, 'nobody-runs-me', now() + interval '1 hour')",
        uuid.UUID(old_waiting),
    )
    assert await prune(db, retention=30 * 86_400) >= 1
    left = await db.fetch(
        "SELECT id FROM events WHERE id = ANY($1::uuid[])",
        [uuid.UUID(i) for i in (old_done, old_waiting, recent)],
    )
    assert {str(row["id"]) for row in left} == {old_waiting, recent}


async def test_an_event_not_fanned_out_yet_is_never_pruned_and_counts_in_the_lag(db: Database) -> None:
    r = kind()
    dispatcher = Dispatcher(db=db, subscribers=[Subscriber(f"q-{r}", f"{r}.*", recorder()[1])])
    while await dispatcher.fan_out({}):  # an empty queue: whatever earlier tests left is taken
        pass
    queued = await emit_aged(db, r, 40)
    assert await db.fetchval("SELECT count(*) FROM event_queue WHERE id = $1", uuid.UUID(queued)) == 1
    await prune(db, retention=30 * 86_400)
    assert await db.fetchval("SELECT count(*) FROM events WHERE id = $1", uuid.UUID(queued)) == 1
    await dispatcher._housekeeping()
    assert dispatcher.lag_seconds > 39 * 86_400  # the oldest event still waiting for its fan-out

    await dispatcher.run_once()  # fanned out: off the queue, no longer lagging, prunable
    dispatcher._last_measure = -1e9
    await dispatcher._housekeeping()
    assert dispatcher.lag_seconds < 60
    assert await db.fetchval("SELECT count(*) FROM event_queue WHERE id = $1", uuid.UUID(queued)) == 0


@pytest.mark.parametrize("attempts", [1, 2, 5, 30])
def test_backoff_grows_exponentially_with_jitter_and_a_cap(attempts: int) -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=60.0)
    ceiling = min(60.0, 2.0 ** (attempts - 1))
    delays = [policy.delay(attempts) for _ in range(50)]
    assert all(ceiling / 2 <= d <= ceiling for d in delays)
    assert len(set(delays)) > 1  # jittered


async def test_an_event_written_with_a_row_change_wakes_the_dispatcher_with_one_notification(
    db: Database, own_database_url: str
) -> None:
    """The change trigger already notified (and marked the transaction): the event is queued without a
    notification of its own, and the dispatcher wakes on the change trigger's channel."""
    r = kind()
    seen, handle = recorder()
    heard: list[str] = []
    listener = Listener(own_database_url)
    listener.subscribe("rampart_events", heard.append)
    dispatcher = Dispatcher(
        db=db,
        listener=listener,
        also_wake_on=("test_changes",),
        subscribers=[Subscriber(f"w-{r}", f"{r}.*", handle)],
        poll_interval=30,
    )
    listener.start()
    dispatcher.start()
    try:
        await asyncio.sleep(0.3)  # connected, first round done, asleep for 30 s
        async with db.transaction() as conn:  # what a resource's change trigger does, then the event
            await conn.execute(
                "SELECT set_config('rampart.notified', 'on', true), pg_notify('test_changes', 'x')"
            )
            event = await write_event(
                conn, resource=r, action="created", resource_id="1", actor_id=None, data={}
            )

        async def arrived() -> bool:
            return [e["id"] for e in seen] == [event["id"]]

        await until(arrived, timeout=5)
        assert heard == []  # no second notification for the event
        await emit(db, r, "updated")  # an event on its own still notifies
        await until(lambda: asyncio.sleep(0, len(heard) == 1), timeout=5)
    finally:
        await dispatcher.stop()
        await listener.stop()


async def test_a_dispatcher_outlives_a_database_outage(caplog: pytest.LogCaptureFixture) -> None:
    down = Database("postgresql://postgres@127.0.0.1:1/nowhere", connect_timeout=0.5)
    dispatcher = Dispatcher(db=down, subscribers=[], poll_interval=0.1)
    dispatcher.start()
    try:
        await asyncio.sleep(1.0)
        assert dispatcher._task is not None
        assert not dispatcher._task.done()  # still trying, not dead
    finally:
        await dispatcher.stop()
        await down.close()
    assert any("dispatcher round failed" in r.message for r in caplog.records)


async def test_pruning_goes_in_short_batches_and_drops_the_rows_deleted_as_long_ago(db: Database) -> None:
    r = kind()
    old = [await emit_aged(db, r, 40) for _ in range(5)]
    recent = await emit_aged(db, r, 20)
    dispatcher = Dispatcher(db=db)
    while await dispatcher.fan_out({}):  # handed out (no subscriber): prunable once old enough
        pass
    gone_long_ago, gone_lately = uuid.uuid4(), uuid.uuid4()
    await db.execute(
        "INSERT INTO tasks_deleted (id, title, deleted_at) VALUES"
        " ($1, 'old', now() - interval '40 days'), ($2, 'new', now() - interval '20 days')",
        gone_long_ago,
        gone_lately,
    )
    assert await prune(db, retention=30 * 86_400, deleted_tables=["tasks_deleted"], batch=2) >= 5
    left = await db.fetch(
        "SELECT id FROM events WHERE id = ANY($1::uuid[])", [uuid.UUID(i) for i in (*old, recent)]
    )
    assert [str(row["id"]) for row in left] == [recent]
    kept = await db.fetch(
        "SELECT id FROM tasks_deleted WHERE id = ANY($1::uuid[])", [gone_long_ago, gone_lately]
    )
    assert [row["id"] for row in kept] == [gone_lately]
