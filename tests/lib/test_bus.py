"""Tests for rampart.lib.bus."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pytest

from rampart.lib.bus import EventBus


def event(event_type: str, event_id: str = "evt-1") -> dict[str, Any]:
    return {"id": event_id, "type": event_type, "data": {}}


@pytest.mark.parametrize(
    ("pattern", "event_type", "matches"),
    [
        ("tasks.created", "tasks.created", True),
        ("tasks.created", "tasks.updated", False),
        ("tasks.created", "tasks.created.extra", False),
        ("tasks.created", "tasks", False),
        ("tasks.*", "tasks.created", True),
        ("tasks.*", "tasks.comments.created", True),  # a trailing * takes the rest
        ("tasks.*", "tasks", False),
        ("tasks.*", "projects.created", False),
        ("tasks.*", "tasksx.created", False),
        ("*.deleted", "tasks.deleted", True),
        ("*.deleted", "projects.deleted", True),
        ("*.deleted", "tasks.created", False),
        ("*.deleted", "tasks.comments.deleted", False),  # an inner * is exactly one segment
        ("*.*.deleted", "tasks.comments.deleted", True),
        ("tasks.*.created", "tasks.comments.created", True),
        ("tasks.*.created", "tasks.created", False),
        ("*", "tasks.created", True),
        ("*", "ping", True),
    ],
)
async def test_pattern_matching(pattern: str, event_type: str, matches: bool) -> None:
    bus = EventBus()
    seen: list[str] = []
    bus.on(pattern, lambda e: seen.append(e["type"]))
    await bus.emit(event(event_type))
    assert seen == ([event_type] if matches else [])


@pytest.mark.parametrize(
    "pattern", ["", "tasks.", ".created", "tasks..created", "task*", "tasks.cr*ted", "**"]
)
def test_invalid_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(ValueError, match="invalid event pattern"):
        EventBus().on(pattern, lambda e: None)


async def test_sync_and_async_handlers_run_in_registration_order() -> None:
    bus = EventBus()
    calls: list[str] = []

    async def async_handler(e: Mapping[str, Any]) -> None:
        calls.append("async exact")

    bus.on("*", lambda e: calls.append("sync any"))
    bus.on("tasks.created", async_handler)
    bus.on("tasks.*", lambda e: calls.append("sync tasks"))
    bus.on("projects.*", lambda e: calls.append("never"))
    await bus.emit(event("tasks.created"))
    assert calls == ["sync any", "async exact", "sync tasks"]


async def test_handlers_receive_the_event() -> None:
    bus = EventBus()
    received: list[Mapping[str, Any]] = []
    bus.on("tasks.created", received.append)
    sent = event("tasks.created")
    await bus.emit(sent)
    assert received == [sent]


async def test_a_failing_handler_is_logged_and_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus()
    calls: list[str] = []

    def broken(e: Mapping[str, Any]) -> None:
        raise RuntimeError("sync boom")

    async def broken_async(e: Mapping[str, Any]) -> None:
        raise RuntimeError("async boom")

    bus.on("tasks.*", broken)
    bus.on("tasks.*", broken_async)
    bus.on("tasks.*", lambda e: calls.append("after"))
    with caplog.at_level(logging.ERROR, logger="rampart.bus"):
        await bus.emit(event("tasks.deleted", event_id="evt-42"), request_id="req-7")

    assert calls == ["after"]
    assert len(caplog.records) == 2
    for record, error in zip(caplog.records, ["sync boom", "async boom"], strict=True):
        assert record.name == "rampart.bus"
        assert record.levelno == logging.ERROR
        assert record.event_id == "evt-42"  # type: ignore[attr-defined]
        assert record.request_id == "req-7"  # type: ignore[attr-defined]
        message = record.getMessage()
        assert "evt-42" in message
        assert "tasks.deleted" in message
        assert "req-7" in message
        assert record.exc_info is not None
        assert str(record.exc_info[1]) == error


async def test_request_id_is_optional_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()

    def broken(e: Mapping[str, Any]) -> None:
        raise RuntimeError("boom")

    bus.on("*", broken)
    with caplog.at_level(logging.ERROR, logger="rampart.bus"):
        await bus.emit(event("tasks.created"))
    assert caplog.records[0].request_id is None  # type: ignore[attr-defined]


async def test_unsubscribe_stops_delivery_and_is_idempotent() -> None:
    bus = EventBus()
    calls: list[str] = []
    unsubscribe = bus.on("tasks.*", lambda e: calls.append("x"))
    await bus.emit(event("tasks.created"))
    unsubscribe()
    unsubscribe()
    await bus.emit(event("tasks.created"))
    assert calls == ["x"]


async def test_same_handler_twice_is_unsubscribed_one_at_a_time() -> None:
    bus = EventBus()
    calls: list[str] = []

    def handler(e: Mapping[str, Any]) -> None:
        calls.append(e["type"])

    first = bus.on("tasks.*", handler)
    bus.on("tasks.created", handler)
    await bus.emit(event("tasks.created"))
    first()
    await bus.emit(event("tasks.created"))
    assert calls == ["tasks.created"] * 3


async def test_cached_resolution_sees_later_subscriptions() -> None:
    bus = EventBus()
    calls: list[str] = []
    bus.on("tasks.created", lambda e: calls.append("first"))
    await bus.emit(event("tasks.created"))  # resolves and caches for "tasks.created"
    unsubscribe = bus.on("*", lambda e: calls.append("second"))
    await bus.emit(event("tasks.created"))
    unsubscribe()
    await bus.emit(event("tasks.created"))
    assert calls == ["first", "first", "second", "first"]


async def test_subscription_changes_during_emit_apply_to_the_next_event() -> None:
    bus = EventBus()
    calls: list[str] = []
    unsubscribe_later = bus.on("*", lambda e: None)

    def first(e: Mapping[str, Any]) -> None:
        calls.append("first")
        unsubscribe_later()
        bus.on("*", lambda e: calls.append("added"))

    bus.on("*", first)
    bus.on("*", lambda e: calls.append("last"))
    await bus.emit(event("a"))
    assert calls == ["first", "last"]
    calls.clear()
    await bus.emit(event("a"))
    assert calls == ["first", "last", "added"]


async def test_emit_without_handlers_is_a_no_op() -> None:
    await EventBus().emit(event("nobody.listens"))


@pytest.mark.parametrize("bad", [{}, {"type": None}, {"type": 3}])
async def test_emit_requires_a_string_type(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="'type'"):
        await EventBus().emit(bad)
