"""In-process event bus: handlers subscribe to event-type patterns and run after commit."""

from __future__ import annotations

import functools
import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

Handler = Callable[[Mapping[str, Any]], Awaitable[None] | None]

logger = logging.getLogger("rampart.bus")


@functools.lru_cache(maxsize=1024)
def check_pattern(pattern: str) -> re.Pattern[str]:
    """A valid event-type pattern ("tasks.*", "*.deleted", "*") as a regular expression; ValueError
    otherwise. `*` matches one segment; as the last segment it matches one or more ("tasks.*")."""
    segments = pattern.split(".")
    for segment in segments:
        # A "*" inside a segment ("task*") would silently never match; refuse it up front.
        if not segment or ("*" in segment and segment != "*"):
            raise ValueError(
                f"invalid event pattern {pattern!r}: use dot-separated names, '*' as a whole segment"
            )
    body = r"\.".join("[^.]*" if s == "*" else re.escape(s) for s in segments)
    return re.compile(body + (r"(\.[^.]*)*" if segments[-1] == "*" else ""))


def pattern_matches(pattern: str, event_type: str) -> bool:
    """Whether `event_type` matches `pattern`, with the bus's rules (raises ValueError on a bad pattern)."""
    return check_pattern(pattern).fullmatch(event_type) is not None


class EventBus:
    """EventEmitter-style bus. Handlers run one after another in registration order; a failing
    handler is logged and skipped, because one broken subscriber must not starve the others."""

    def __init__(self) -> None:
        self._subscriptions: dict[object, tuple[re.Pattern[str], Handler]] = {}
        # Event types come from code, so there are few: the bound only guards against ad-hoc ones.
        self._handlers_for = functools.lru_cache(maxsize=1024)(self._resolve)

    def on(self, pattern: str, handler: Handler) -> Callable[[], None]:
        """Subscribe `handler` to the event types `pattern` matches; returns the (idempotent) unsubscribe."""
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
        # dicts keep insertion order, so this is registration order.
        return tuple(h for p, h in self._subscriptions.values() if p.fullmatch(event_type))

    async def emit(self, event: Mapping[str, Any], *, request_id: str | None = None) -> None:
        """Deliver `event` (which needs a str "type") to every matching handler."""
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
