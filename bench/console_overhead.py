"""What the console costs the API (decision 0023): nothing per request, one metrics reading every 10 s.

On a scratch database (RAMPART_TEST_ADMIN_URL, migrated like the tests'), two apps in this process, one
with the console and one without (`RAMPART_CONSOLE=off`), answer the same API requests through the whole
pipeline (in-process ASGI, one call at a time, interleaved in rounds so drift hits both):

- `GET /api/v1/tasks/{id}` (a row-cache hit: the cheapest request, where any added cost shows most);
- `GET /api/v1/tasks?limit=20` (a list page);
- `GET /health/live` (the shortest route through the pipeline);

then times one reading of the console's metrics sampler (`Metrics.api_totals`) after the requests have
filled the histograms.

Run: `.venv/bin/python bench/console_overhead.py [--rounds 3000]`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from tests.conftest import _admin, _db_url, make_settings, new_user, wait_for_cache  # noqa: E402

from rampart.app import create_app  # noqa: E402
from rampart.clitasks import migrate_all  # noqa: E402
from timing import line, timed  # noqa: E402


async def run(url: str, rounds: int) -> None:
    on = create_app(make_settings(url))
    off = create_app(make_settings(url, console=False))
    for app in (on, off):
        await app.startup()
        await wait_for_cache(app)
    user = await new_user(on)
    clients = {
        name: httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench")
        for name, app in (("on", on), ("off", off))
    }
    project = (await clients["on"].post("/api/v1/projects", json={"name": "b"}, headers=user.headers)).json()
    task = (
        await clients["on"].post(
            "/api/v1/tasks", json={"project_id": project["data"]["id"], "title": "t"}, headers=user.headers
        )
    ).json()["data"]
    paths = {
        "GET /api/v1/tasks/{id}": f"/api/v1/tasks/{task['id']}",
        "GET /api/v1/tasks?limit=20": "/api/v1/tasks?limit=20",
        "GET /health/live": "/health/live",
    }
    print("| request | console | median µs | p99 µs |")
    print("|---|---|---|---|")
    for label, path in paths.items():
        results: dict[str, list[tuple[float, float]]] = {"on": [], "off": []}
        for _ in range(3):  # interleaved rounds
            for name, client in clients.items():

                async def get(client: httpx.AsyncClient = client, path: str = path) -> None:
                    r = await client.get(path, headers=user.headers)
                    assert r.status_code == 200, r.text

                results[name].append(await timed(rounds, get))
        for name in ("on", "off"):
            best = min(results[name])  # the quietest round of each
            line(f"{label} | {name}", best)
    metrics = on.services.metrics
    assert metrics is not None
    started = time.perf_counter()
    for _ in range(100):
        metrics.api_totals()
    print(f"\nOne reading of the console's metrics sampler: {(time.perf_counter() - started) * 1e4:.0f} µs")
    for client in clients.values():
        await client.aclose()
    for app in (on, off):
        await app.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3000)
    args = parser.parse_args()
    name = f"rampart_bench_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    url = _db_url(name)
    try:
        migrate_all(make_settings(url))
        asyncio.run(run(url, args.rounds))
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
