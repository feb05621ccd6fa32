"""The console stays fast on a big table: a page of 100,000 tasks is served in under 100 ms of server time
(the `Server-Timing` the console sends), because lists use the managers' keyset pagination and count the
total only when asked."""

from __future__ import annotations

import html
import re
import statistics
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from rampart.app import Rampart, create_app
from tests.conftest import context_of, fresh_database, make_settings, new_user
from tests.console.conftest import sign_in

ROWS = 100_000
BUDGET_MS = 100.0


@pytest.fixture(scope="module")
def big_database() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.fixture(scope="module")
async def big(big_database: str) -> AsyncIterator[tuple[Rampart, str]]:
    app = create_app(make_settings(big_database))
    await app.startup()
    admin = await new_user(app, role="admin")
    project = await app.services.managers["projects"].create(context_of(app, admin), {"name": "big"})
    await app.services.db.execute(
        "INSERT INTO tasks (id, project_id, title, description, status, priority, owner_id, created_at,"
        " updated_at, version)"
        " SELECT gen_random_uuid(), $1, 'task ' || i, '', (ARRAY['todo','in_progress','done'])[1 + i % 3],"
        " i % 6, $2, now() - make_interval(secs => i), now(), 1 FROM generate_series(1, $3) AS i",
        uuid.UUID(str(project["id"])),
        uuid.UUID(admin.id),
        ROWS,
    )
    await app.services.db.execute("ANALYZE tasks")
    try:
        yield app, admin.id
    finally:
        await app.aclose()


async def server_ms(browser: httpx.AsyncClient, path: str, params: dict[str, str]) -> float:
    """The median server time of five loads, after one that warms the caches of the plan and the pool."""
    times = []
    for _ in range(6):
        r = await browser.get(path, params=params)
        assert r.status_code == 200, r.text[:500]
        times.append(float(r.headers["server-timing"].partition("dur=")[2]))
    return statistics.median(times[1:])


# A sort that no index serves (`sort=-priority` here) reads and sorts the whole table, in the console as in
# the API (about 70 to 130 ms for these 100,000 rows on the 2-core machine): an index on the field fixes
# both (decision 0023). These are the pages the console itself leads to.
@pytest.mark.parametrize(
    "params",
    [
        {},
        {"limit": "100"},
        {"op.priority": "gte", "priority": "3", "status": "todo"},
        {"op.title": "contains", "title": "task 9999"},
        {"project_id": "", "status": "done", "op.created_at": "lt", "created_at": "2026-01-01T00:00:00Z"},
    ],
    ids=["default", "100-rows", "filtered", "contains", "by-date"],
)
async def test_a_page_of_100000_rows_takes_under_100_ms(
    big: tuple[Rampart, str], params: dict[str, str]
) -> None:
    app, admin_id = big
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as browser:
        await sign_in(app, browser, admin_id)
        took = await server_ms(browser, "/console/resources/tasks", params)
        print(f"console list {params or 'default'}: {took:.1f} ms")
        assert took < BUDGET_MS, f"{took:.1f} ms"
        # Paging goes on by keyset, as fast as the first page.
        first = await browser.get("/console/resources/tasks", params=params)
        found = re.search(r'href="(/console/resources/tasks\?[^"]*cursor=[^"]*)" rel="next"', first.text)
        assert found or params, "the first page of 100,000 rows has a next page"
        if found:
            took = await server_ms(browser, html.unescape(found.group(1)), {})
            assert took < BUDGET_MS, f"next page: {took:.1f} ms"
        # The total is counted only when asked; it shows then.
        r = await browser.get("/console/resources/tasks", params={**params, "total": "on"})
        assert "matching" in r.text
