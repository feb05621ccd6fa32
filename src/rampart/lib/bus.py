"""In-process event bus: handlers subscribe to event-type patterns and run after commit."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

Handler = Callable[[Mapping[str, Any]], Awaitable[None] | None]

logger = logging.getLogger("rampart.bus")


def check_pattern(pattern: str) -> tuple[str, ...]:
    """The segments of a valid event-type pattern ("tasks.*", "*.deleted", "*"); ValueError otherwise."""
    segments = tuple(pattern.split("."))
    for segment in segments:
        # A "*" inside a segment ("task*") would silently never match; refuse it up front.
        if not segment or ("*" in segment and segment != "*"):
            raise ValueError(
                f"invalid event pattern {pattern!r}: use dot-separated names, '*' as a whole segment"
            )
    return segments


def _matches(pattern: tuple[str, ...], event_type: tuple[str, ...]) -> bool:
    """`*` matches one segment; as the last pattern segment it matches one or more ("tasks.*")."""
    if len(event_type) != len(pattern) and not (pattern[-1] == "*" and len(event_type) > len(pattern)):
        return False
    return all(p == "*" or p == e for p, e in zip(pattern, event_type, strict=False))


def pattern_matches(pattern: str, event_type: str) -> bool:
    """Whether `event_type` matches `pattern`, with the bus's rules (raises ValueError on a bad pattern)."""
    return _matches(check_pattern(pattern), tuple(event_type.split(".")))


class EventBus:
    """EventEmitter-style bus. Handlers run one after another in registration order; a failing
    handler is logged and skipped, because one broken subscriber must not starve the others."""

    def __init__(self) -> None:
        self._subscriptions: dict[object, tuple[tuple[str, ...], Handler]] = {}
        # Event types come from code, so there are few: the bound only guards against ad-hoc ones.
        self._handlers_for = functools.lru_cache(maxsize=1024)(self._resolve)

    def on(self, pattern: str, handler: Handler) -> Callable[[], None]:
        """Subscribe `handler` to event types matching `pattern` ("tasks.created", "tasks.*",
        "*.deleted", "*"). Returns a function that unsubscribes; calling it again does nothing."""
        compiled = check_pattern(pattern)
        # A token per subscription, so the same handler registered twice unsubscribes one at a time.
        token = object()
        self._subscriptions[token] = (compiled, handler)
        self._handlers_for.cache_clear()

        def unsubscribe() -> None:
            if self._subscriptions.pop(token, None) is not None:
                self._handlers_for.cache_clear()

        return unsubscribe

    def _resolve(self, event_type: str) -> tuple[Handler, ...]:
        segments = tuple(event_type.split("."))
        # dicts keep insertion order, so this is registration order.
        return tuple(h for p, h in self._subscriptions.values() if _matches(p, segments))

    async def emit(self, event: Mapping[str, Any], *, request_id: str | None = None) -> None:
        """Deliver `event` (which needs a str "type") to every matching handler; never raises
        because of a handler."""
        event_type = event.get("type")
        if not isinstance(event_type, str):
            raise ValueError(f"event needs a str 'type', got {event_type!r}")
        # The resolved tuple is a snapshot: handlers that (un)subscribe mid-emit affect later events only.
        for handler in self._handlers_for(event_type):
            try:
                result = handler(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                event_id = event.get("id")
                logger.exception(
                    "event handler %s failed for event %s (type %s, request %s)",
                    getattr(handler, "__qualname__", repr(handler)),
                    event_id,
                    event_type,
                    request_id,
                    extra={"event_id": event_id, "event_type": event_type, "request_id": request_id},
                )
