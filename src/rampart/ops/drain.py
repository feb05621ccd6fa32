"""Draining: on SIGTERM, readiness turns 503 first, so the load balancer stops sending before we stop.

uvicorn closes its listening sockets at once on SIGTERM: a balancer probing `/health/ready` would only
see refused connections. With `drain_delay` it sees a 503 for that long while the worker still serves
what is sent meanwhile. Then the worker stops accepting and gives the connections it has just accepted
`settle` seconds to deliver their requests (uvicorn's shutdown closes, unanswered, a connection whose
request has not been read), and only then lets the server shut down.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import threading
from types import FrameType
from typing import Any

from starlette.types import Scope

log = logging.getLogger("rampart.ops.drain")


class Drain:
    """A background worker (start/stop) that wraps the server's SIGTERM handler while the app runs."""

    def __init__(
        self,
        *,
        delay: float,
        settle: float = 0.25,
        max_requests: int | None = None,
        max_requests_jitter: int = 0,
    ) -> None:
        self.delay = delay
        self.settle = settle
        self.draining = False
        self._previous: Any = None
        # Recycling goes through the same drain as SIGTERM (uvicorn's own limit would close connections
        # it had just accepted, unanswered); the jitter keeps workers from all recycling at once.
        self._limit = None if max_requests is None else max_requests + random.randint(0, max_requests_jitter)  # noqa: S311
        self._served = 0

    def observe(self, scope: Scope, status: int, duration: float) -> None:
        """A request was answered; at the limit the worker drains and exits (its supervisor replaces it)."""
        if self._limit is None:
            return
        self._served += 1
        if self._served == self._limit and self._previous is not None:
            log.info("worker recycling after %d requests", self._served)
            os.kill(os.getpid(), signal.SIGTERM)

    def start(self) -> None:
        """Install the handler; call from the lifespan startup, where the server's own handler is set."""
        if self._previous is not None or threading.current_thread() is not threading.main_thread():
            return  # already installed, or not where signals arrive
        previous = signal.getsignal(signal.SIGTERM)
        if not callable(previous):
            return  # no server handler to defer (tests driving the app in-process): nothing to wrap
        loop = asyncio.get_running_loop()

        def stop_accepting(signum: int) -> None:
            # uvicorn's Server is the handler's owner; its asyncio servers are the listening sockets.
            listeners = getattr(getattr(previous, "__self__", None), "servers", None) or []
            for listener in listeners:
                listener.close()  # no new connections here (other workers keep accepting)
            loop.call_later(self.settle if listeners else 0, previous, signum, None)

        def handle(signum: int, frame: FrameType | None) -> None:
            if self.draining:
                previous(signum, frame)  # a second SIGTERM: the server's shutdown now
                return
            self.draining = True
            # Signal handlers run between bytecodes of the loop's thread: hand the deferred call to the
            # loop through its thread-safe door, which also wakes it up.
            loop.call_soon_threadsafe(loop.call_later, self.delay, stop_accepting, signum)

        self._previous = previous
        signal.signal(signal.SIGTERM, handle)

    async def stop(self) -> None:
        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None
