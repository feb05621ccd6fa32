"""Fixtures of the database layer's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from rampart.db.pool import Database


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """A small pool on the test database: 3 connections, short timeouts (a hang fails fast)."""
    database = Database(database_url, max_size=3, acquire_timeout=1.0, connect_timeout=2.0)
    yield database
    await database.close()
