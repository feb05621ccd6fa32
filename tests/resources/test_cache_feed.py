"""CacheFeed: which notification invalidates what, and a worker's own changes counted once."""

from __future__ import annotations

import uuid

from rampart.apps.tasks.resources import declare
from rampart.lib.rowcache import RowCache
from rampart.resources.caching import CacheFeed


def feed() -> tuple[CacheFeed, RowCache]:
    cache = RowCache(max_rows=100, max_decisions=100)
    cache.enabled = True
    return CacheFeed(cache, declare()), cache


def test_a_task_change_drops_task_pages_not_those_of_what_does_not_depend_on_tasks() -> None:
    f, cache = feed()
    tasks, projects = cache.list_generation("tasks"), cache.list_generation("projects")
    f.on_notification(f"tasks {uuid.uuid4()} 2")
    assert cache.list_generation("tasks") == tasks + 1
    assert cache.list_generation("projects") == projects  # projects' visibility reads members only


def test_a_membership_change_drops_what_depends_on_it() -> None:
    f, cache = feed()
    tasks, projects = cache.list_generation("tasks"), cache.list_generation("projects")
    tasks_epoch = cache.epoch("tasks")
    f.on_notification(f"project_members {uuid.uuid4()} -")
    assert cache.list_generation("tasks") > tasks
    assert cache.list_generation("projects") > projects
    assert cache.epoch("tasks") > tasks_epoch


def test_the_notification_of_an_own_change_is_applied_once() -> None:
    f, cache = feed()
    key = uuid.uuid4()
    f.changed("tasks", key, 2, local=True)
    applied = cache.list_generation("tasks")
    f.on_notification(f"tasks {key} 2")  # the echo: nothing new
    assert cache.list_generation("tasks") == applied
    f.on_notification(f"tasks {key} 3")  # someone else's later change
    assert cache.list_generation("tasks") == applied + 1
    f.on_notification(f"tasks {key} 2")  # the same payload again is no longer ours
    assert cache.list_generation("tasks") == applied + 2
