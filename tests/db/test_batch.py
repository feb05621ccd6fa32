"""Single-row reads of one loop step answered by one statement (rampart.db.batch), on real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from rampart.db.batch import PREFIX, RowBatcher
from rampart.db.pool import Database
from rampart.resources.spec import ColumnBinder


@pytest.fixture
async def notes(db: Database) -> AsyncIterator[tuple[str, dict[uuid.UUID, uuid.UUID]]]:
    """A table of notes (id -> owner); 10 notes, 5 owners."""
    name = f"batch_test_{uuid.uuid4().hex[:10]}"
    await db.execute(f"CREATE TABLE {name} (id uuid PRIMARY KEY, owner uuid NOT NULL, body text NOT NULL)")
    owners = [uuid.uuid4() for _ in range(5)]
    rows = {uuid.uuid4(): owners[i % 5] for i in range(10)}
    await db.executemany(
        f"INSERT INTO {name} (id, owner, body) VALUES ($1, $2, $3)",
        [(note, owner, f"note {note}") for note, owner in rows.items()],
    )
    yield name, rows
    await db.execute(f"DROP TABLE {name}")


def read(table: str, note: object, caller: object) -> tuple[str, list[object]]:
    """The one-row read the row cache makes: the row and whether the caller may see it."""
    bind = ColumnBinder(PREFIX)
    sql = f"SELECT n.body, n.owner = {bind(caller)} FROM {table} n WHERE n.id = {bind(note)}"
    return sql, bind.params


async def test_reads_of_one_step_are_one_statement_and_each_gets_its_own_answer(
    db: Database, notes: tuple[str, dict[uuid.UUID, uuid.UUID]]
) -> None:
    table, rows = notes
    batcher = RowBatcher(db)
    stranger = uuid.uuid4()
    asks = [(note, owner) for note, owner in rows.items()]  # owners: visible
    asks += [(note, stranger) for note in list(rows)[:4]]  # a stranger: there, not visible
    asks += [(uuid.uuid4(), stranger) for _ in range(3)]  # no such note
    answers = await asyncio.gather(*(batcher.fetch(*read(table, note, caller)) for note, caller in asks))
    for (note, caller), answer in zip(asks, answers, strict=True):
        if note not in rows:
            assert answer is None
        else:
            assert tuple(answer) == (f"note {note}", rows[note] == caller)
    assert (batcher.stats.statements, batcher.stats.rows, batcher.stats.alone) == (1, len(asks), 0)


async def test_a_read_alone_in_its_step_runs_the_one_row_statement(
    db: Database, notes: tuple[str, dict[uuid.UUID, uuid.UUID]]
) -> None:
    table, rows = notes
    batcher = RowBatcher(db)
    note, owner = next(iter(rows.items()))
    assert tuple(await batcher.fetch(*read(table, note, owner))) == (f"note {note}", True)
    assert await batcher.fetch(*read(table, uuid.uuid4(), owner)) is None
    assert (batcher.stats.statements, batcher.stats.alone) == (0, 2)


async def test_reads_of_different_shapes_go_as_one_statement_each(
    db: Database, notes: tuple[str, dict[uuid.UUID, uuid.UUID]]
) -> None:
    table, rows = notes

    def body_only(note: uuid.UUID) -> tuple[str, list[object]]:
        bind = ColumnBinder(PREFIX)
        return f"SELECT n.body FROM {table} n WHERE n.id = {bind(note)}", bind.params

    batcher = RowBatcher(db)
    items = list(rows.items())
    answers = await asyncio.gather(
        *(batcher.fetch(*read(table, note, owner)) for note, owner in items[:3]),
        *(batcher.fetch(*body_only(note)) for note, _ in items[3:6]),
    )
    assert [a[0] for a in answers] == [f"note {note}" for note, _ in items[:6]]
    assert batcher.stats.statements == 2


async def test_parameters_that_are_not_uuids_are_read_one_by_one(
    db: Database, notes: tuple[str, dict[uuid.UUID, uuid.UUID]]
) -> None:
    table, rows = notes
    batcher = RowBatcher(db)
    note = next(iter(rows))
    bind = ColumnBinder(PREFIX)
    sql = f"SELECT n.owner FROM {table} n WHERE n.body = {bind(f'note {note}')}"
    answers = await asyncio.gather(batcher.fetch(sql, bind.params), batcher.fetch(sql, bind.params))
    assert [a[0] for a in answers] == [rows[note]] * 2
    assert (batcher.stats.statements, batcher.stats.alone) == (0, 2)


async def test_a_caller_that_gives_up_leaves_the_others_their_answers(
    db: Database, notes: tuple[str, dict[uuid.UUID, uuid.UUID]]
) -> None:
    table, rows = notes
    batcher = RowBatcher(db)
    items = list(rows.items())
    tasks = [asyncio.create_task(batcher.fetch(*read(table, note, owner))) for note, owner in items[:5]]
    await asyncio.sleep(0)  # every read is waiting for the step's statement
    tasks[2].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[2], asyncio.CancelledError)
    for (note, _), answer in zip(items[:5], done, strict=True):
        if not isinstance(answer, BaseException):
            assert tuple(answer) == (f"note {note}", True)
    assert batcher.stats.rows == 4  # the one that gave up was not asked for


async def test_a_failing_statement_fails_every_caller_of_it(
    db: Database, notes: tuple[str, dict[uuid.UUID, uuid.UUID]]
) -> None:
    table, rows = notes
    batcher = RowBatcher(db)

    def broken(note: uuid.UUID) -> tuple[str, list[object]]:
        bind = ColumnBinder(PREFIX)
        return f"SELECT n.no_such_column FROM {table} n WHERE n.id = {bind(note)}", bind.params

    answers = await asyncio.gather(*(batcher.fetch(*broken(note)) for note in rows), return_exceptions=True)
    assert len(answers) == len(rows)
    assert all(isinstance(a, Exception) and "no_such_column" in str(a) for a in answers), answers
    # And the batcher goes on serving.
    note, owner = next(iter(rows.items()))
    assert tuple(await batcher.fetch(*read(table, note, owner))) == (f"note {note}", True)
