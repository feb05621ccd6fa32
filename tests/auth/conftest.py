"""Fixtures for the auth tests: a database that counts the session-state queries."""

from __future__ import annotations

import asyncio
import time
from typing import Any


class CountingDb:
    """The app's database, counting session-state queries; can be told to fail the next ones."""

    def __init__(self, db: Any) -> None:
        self._db = db
        self.queries = 0
        self.fail_next = 0
        self.delay = 0.0
        self.delay_after = 0.0  # the answer is read, then takes this long to arrive
        # Monotonic: when the last query was asked for, and when its answer had been read. The database
        # read the state in between.
        self.asked_at = self.read_at = 0.0

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        self.queries += 1
        self.asked_at = time.monotonic()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("database down")
        row = await self._db.fetchrow(sql, *args)
        self.read_at = time.monotonic()
        if self.delay_after:
            await asyncio.sleep(self.delay_after)
        return row
