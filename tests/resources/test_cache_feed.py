"""CacheFeed: which notification invalidates what, and a worker's own changes counted once."""

from __future__ import annotations

import uuid

from rampart.apps.tasks.resources import declare
from rampart.lib.rowcache import RowCache
from rampart.resources.caching import CacheFeed


async def feed() -> tuple[CacheFeed, RowCache]:
    cache = RowCache(max_rows=100, max_decisions=100)
    await cache.reset()
    return CacheFeed(cache, declare()), cache


async def page_kept(cache: RowCache, resource: str) -> None:
    _, stamp = await cache.lookup_page(resource, "q")
    await cache.keep_page(b"[]", stamp)


async def has_page(cache: RowCache, resource: str) -> bool:
    return (await cache.lookup_page(resource, "q"))[0] is not None


async def test_a_task_change_drops_task_pages_not_those_of_what_does_not_depend_on_tasks() -> None:
    f, cache = await feed()
    await page_kept(cache, "tasks")
    await page_kept(cache, "projects")
    f.on_notification(f"tasks {uuid.uuid4()} 2")
    assert not await has_page(cache, "tasks")
    assert await has_page(cache, "projects")  # projects' visibility reads members only


async def test_a_membership_change_drops_what_depends_on_it() -> None:
    f, cache = await feed()
    key, user = uuid.uuid4(), uuid.uuid4()
    _, stamp = await cache.lookup("tasks", key, user)
    await cache.keep(1, b"{}", True, stamp)
    await page_kept(cache, "tasks")
    await page_kept(cache, "projects")
    f.on_notification(f"project_members {uuid.uuid4()} -")
    assert not await has_page(cache, "tasks")
    assert not await has_page(cache, "projects")
    assert (await cache.lookup("tasks", key, user))[0] is None  # tasks' decisions are void
    assert (await cache.lookup("tasks", key, None))[0] == (1, b"{}")


async def test_the_notification_of_an_own_change_is_applied_once() -> None:
    f, cache = await feed()
    key = uuid.uuid4()
    f.changed("tasks", key, 2, local=True)
    await page_kept(cache, "tasks")
    f.on_notification(f"tasks {key} 2")  # the echo: nothing new
    assert await has_page(cache, "tasks")
    f.on_notification(f"tasks {key} 3")  # someone else's later change
    assert not await has_page(cache, "tasks")
    await page_kept(cache, "tasks")
    f.on_notification(f"tasks {key} 2")  # the same payload again is no longer ours
    assert not await has_page(cache, "tasks")
