"""The /docs page in a real headless Chromium: Swagger UI renders our OpenAPI document from local assets."""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from rampart.app import create_app
from tests.conftest import make_settings
from tests.support import CHROMIUM, CHROMIUM_FLAGS, free_port


@pytest.fixture(scope="module")
def served(database_url: str) -> Iterator[str]:
    """The app on a real socket (a browser cannot use the in-process transport)."""
    port = free_port()
    config = uvicorn.Config(
        create_app(make_settings(database_url)), host="127.0.0.1", port=port, log_config=None
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the test server did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_docs_page_renders_every_resource_offline(served: str) -> None:
    assert CHROMIUM, "Chromium is required for the browser tests (.ci/run installs Debian's chromium)"
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [
                CHROMIUM,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--virtual-time-budget=10000",
                "--dump-dom",
                f"{served}/docs",
            ],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
    dom = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    # Swagger UI ran (its JavaScript came from our own server) and rendered operations of each resource.
    assert "swagger-ui" in dom
    for summary in ("List tasks", "Create a project", "Get the caller", "Readiness"):
        assert summary in dom, f"{summary!r} not rendered"
    assert "https://" not in dom.split("<body", 1)[0]  # no CDN stylesheet or script in the head
