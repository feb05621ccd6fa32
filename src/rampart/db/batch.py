"""Single-row reads asked for in the same event-loop step, answered by one statement (decision 0014):

    SELECT _miss.ord, q.* FROM unnest($1::uuid[], $2::uuid[]) WITH ORDINALITY AS _miss(p1, p2, ord)
    LEFT JOIN LATERAL (<the one-row statement, its parameters written _miss.p1, _miss.p2>) q ON TRUE

Each caller's row is computed by exactly the statement it would have run alone, with its own parameters
(its key, its user for the visibility rule): batching changes how many statements are sent, never what
any of them answers. Only statements whose parameters are all UUIDs are batched (an array's type must be
written; an untyped `$n` lets PostgreSQL infer it from where it is used).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rampart.db.pool import Database

PREFIX = "_miss.p"  # a parameter of a batched statement: PREFIX + its 1-based position (`ColumnBinder`)


@dataclass(slots=True)
class BatchStats:
    statements: int = 0  # batched statements sent
    rows: int = 0  # reads they answered
    alone: int = 0  # reads sent one by one (alone in their step, or not batchable)


class RowBatcher:
    """Batches `fetch(statement, params)` calls of one loop step per statement text."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.stats = BatchStats()
        self._pending: dict[str, list[tuple[Sequence[Any], asyncio.Future[Any]]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def fetch(self, statement: str, params: Sequence[Any], *, alone: bool = False) -> Any:
        """The row `statement` (its parameters written PREFIX + position) returns for `params`, as a
        record or tuple, or None. `alone`: never batched (on a Citus cluster, which refuses the lateral
        join, and answers each read pinned to its shard by one worker; decision 0019)."""
        if alone or not all(isinstance(p, uuid.UUID) for p in params):
            return await self._alone(statement, params)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._pending:  # the first of its step
            loop.call_soon(self._flush)
        self._pending.setdefault(statement, []).append((params, future))
        return await future

    def _flush(self) -> None:
        pending, self._pending = self._pending, {}
        for statement, waiting in pending.items():
            task = asyncio.get_running_loop().create_task(self._answer(statement, waiting))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _answer(self, statement: str, waiting: list[tuple[Sequence[Any], asyncio.Future[Any]]]) -> None:
        waiting = [(params, future) for params, future in waiting if not future.done()]  # not given up
        if not waiting:
            return
        try:
            if len(waiting) == 1:
                params, future = waiting[0]
                row = await self._alone(statement, params)
                if not future.done():
                    future.set_result(row)
                return
            count = len(waiting[0][0])
            columns = [[params[i] for params, _ in waiting] for i in range(count)]
            arrays = ", ".join(f"${i}::uuid[]" for i in range(1, count + 1))
            names = ", ".join(f"p{i}" for i in range(1, count + 1))
            rows = await self.db.fetch(
                f"SELECT _miss.ord, q.* FROM unnest({arrays}) WITH ORDINALITY AS _miss({names}, ord)"
                f" LEFT JOIN LATERAL ({statement}) q ON TRUE",
                *columns,
            )
            self.stats.statements += 1
            self.stats.rows += len(waiting)
            for row in rows:
                future = waiting[row[0] - 1][1]
                if not future.done():
                    values = tuple(row)[1:]
                    # No row at all (its key does not exist): None, as the one-row statement answers.
                    future.set_result(None if all(v is None for v in values) else values)
        except Exception as exc:  # every caller of the statement sees what went wrong
            for _, future in waiting:
                if not future.done():
                    future.set_exception(exc)
        except BaseException:  # cancelled (the worker is stopping): so are the callers
            for _, future in waiting:
                future.cancel()
            raise

    async def _alone(self, statement: str, params: Sequence[Any]) -> Any:
        """The one-row statement itself ($n placeholders), for a read that goes out on its own."""
        self.stats.alone += 1
        return await self.db.fetchrow(statement.replace(PREFIX, "$"), *params)
