"""A dedicated connection that LISTENs on PostgreSQL channels and reconnects by itself.

Pooled connections never LISTEN (their reset skips UNLISTEN): notifications have this one connection,
and a worker has one for all its channels (row cache, revocations, event dispatcher, live stream):
PostgreSQL wakes every listening session of the database at each commit that notifies, whatever
channels it listens on, so each extra listening connection costs every write.
While it is down, `connected` is False and the `on_down` callbacks have run, so whoever relies on the
feed (the row cache) stops trusting what it holds; `on_up` callbacks run on every (re)connection, with
the subscriptions active and before any notification is handled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from rampart.lib.aio import cancel_and_wait

log = logging.getLogger("rampart.db.listener")

Handler = Callable[[str], None]
OnUp = Callable[[asyncpg.Connection], Awaitable[None] | None]
OnDown = Callable[[], None]


class Listener:
    def __init__(self, dsn: str, *, retry: float = 1.0) -> None:
        self._dsn = dsn
        self._channels: dict[str, list[Handler]] = {}
        self._on_up: list[OnUp] = []
        self._on_down: list[OnDown] = []
        self._retry = retry
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self.connected = False

    def subscribe(
        self, channel: str, handler: Handler, *, on_up: OnUp | None = None, on_down: OnDown | None = None
    ) -> None:
        """Call `handler(payload)` for each notification on `channel`; before `start()`."""
        if self._task is not None:
            raise RuntimeError("subscribe before the listener starts")
        self._channels.setdefault(channel, []).append(handler)
        if on_up is not None:
            self._on_up.append(on_up)
        if on_down is not None:
            self._on_down.append(on_down)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="rampart-listener")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _run(self) -> None:
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(
                    self._dsn, timeout=5, server_settings={"application_name": "rampart-listener"}
                )
                self._lost.clear()
                conn.add_termination_listener(lambda _c: self._lost.set())
                for channel in self._channels:
                    await conn.add_listener(channel, self._notify)
                # Runs with the subscriptions active, so nothing announced after it can be missed.
                for on_up in self._on_up:
                    ready = on_up(conn)
                    if ready is not None:
                        await ready
                self.connected = True
                await self._watch(conn)
            except Exception:
                log.warning("notification listener lost its connection; retrying", exc_info=True)
            finally:
                if self.connected:
                    self.connected = False
                    for on_down in self._on_down:
                        on_down()
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            await asyncio.sleep(self._retry)

    async def _watch(self, conn: asyncpg.Connection) -> None:
        # A silent network failure would leave the connection "open" forever: ask it something now and then.
        while not self._lost.is_set():
            try:
                await asyncio.wait_for(self._lost.wait(), timeout=5)
            except TimeoutError:
                await conn.fetchval("SELECT 1", timeout=5)

    def _notify(self, _conn: object, _pid: int, channel: str, payload: object) -> None:
        for handler in self._channels[channel]:
            try:
                handler(str(payload))
            except Exception:  # a bad payload must not stop the feed
                log.exception("notification handler failed")
