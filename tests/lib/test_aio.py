"""Stopping background tasks (rampart.lib.aio.cancel_and_wait)."""

from __future__ import annotations

import asyncio
import contextlib

from rampart.lib.aio import cancel_and_wait


async def test_a_task_is_cancelled_and_awaited() -> None:
    ended = asyncio.Event()

    async def worker() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            ended.set()

    task = asyncio.create_task(worker())
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert task.cancelled()
    assert ended.is_set()


async def test_a_task_that_swallowed_the_cancel_is_cancelled_again() -> None:
    """As a task whose awaited call hid the cancel (asyncio.wait_for on Python 3.11, inside redis-py) and
    went on to wait for its next piece of work: stopping it must not wait forever."""
    swallowed = asyncio.Event()

    async def worker() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
        swallowed.set()
        await asyncio.Event().wait()  # the next piece of work, which never comes

    task = asyncio.create_task(worker())
    await asyncio.sleep(0)
    stopping = asyncio.create_task(cancel_and_wait(task))
    done, _ = await asyncio.wait({stopping}, timeout=2.0)
    assert done == {stopping}, "cancel_and_wait is still waiting for the task"
    assert swallowed.is_set()
    assert task.cancelled()


async def test_nothing_to_stop() -> None:
    await cancel_and_wait(None)
