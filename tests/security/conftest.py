"""Fixtures of the security tests: the scene of objects under attack, built once per module, and one
real `rampart serve` process in production mode for the tests that need a socket."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from rampart.app import Rampart
from tests.scale.servers import Server, serve
from tests.security.scene import Scene, make_scene

HEADER_TIMEOUT = 0.5  # RAMPART_HEADER_TIMEOUT of the server below (10 s by default)


@pytest.fixture(scope="module")
async def scene(app: Rampart, client: httpx.AsyncClient) -> Scene:
    return await make_scene(app, client)


@pytest.fixture(scope="session")
def production_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`rampart serve` with RAMPART_ENV=production, a 0.5 s head deadline and a 1 s request time limit."""
    with serve(
        database_url,
        tmp_path_factory.mktemp("security"),
        name="security",
        RAMPART_ENV="production",
        RAMPART_HEADER_TIMEOUT=str(HEADER_TIMEOUT),
        RAMPART_REQUEST_TIMEOUT="1",
        RAMPART_EVENTS_DISPATCHER="false",
    ) as running:
        yield running
