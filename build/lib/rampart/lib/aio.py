"""Small asyncio helpers shared by the background workers (listener, dispatcher, caches, announcer)."""

from __future__ import annotations

import asyncio
import contextlib

_AGAIN = 0.1  # seconds before a cancel the task did not act on is sent again


async def cancel_and_wait(task: asyncio.Task[None] | None) -> None:
    """Cancel a background task and wait until it has ended; None is nothing to stop.

    The cancel is repeated while the task goes on: on Python 3.11, `asyncio.wait_for` (inside redis-py,
    for one) swallows a cancel that arrives as the awaited call completes, and a task waiting for its next
    piece of work would then wait forever.
    """
    if task is None:
        return
    task.cancel()
    while not task.done():
        await asyncio.wait({task}, timeout=_AGAIN)
        if not task.done():
            task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
