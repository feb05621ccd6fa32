"""The guide's browser snippet for the live stream, run in a real headless Chromium against the app on a
real socket, from a page of another origin (so CORS and its preflight are part of the test)."""

from __future__ import annotations

import asyncio
import http.server
import json
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from rampart.app import Rampart, create_app
from tests.conftest import User, make_settings
from tests.support import CHROMIUM, CHROMIUM_FLAGS

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guide" / "events.md"


def snippet() -> str:
    text = GUIDE.read_text(encoding="utf-8")
    section = text[text.index("## The live stream") :]
    start = section.index("```js\n") + 6
    return section[start : section.index("```", start)]


class Page:
    """Serves one HTML page from its own origin."""

    def __init__(self) -> None:
        self.html = b""
        self.reports: list[bytes] = []
        page = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(page.html)))
                self.end_headers()
                self.wfile.write(page.html)

            def do_POST(self) -> None:  # the page reports what it received
                page.reports.append(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Page:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture(scope="module")
def page() -> Iterator[Page]:
    with Page() as served:
        yield served


@pytest.fixture(scope="module")
def api_url(database_url: str, page: Page) -> Iterator[str]:
    app = create_app(make_settings(database_url, cors_origins=[page.origin], events_dispatcher=False))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="off"))

    async def serve() -> None:
        try:
            await server.serve()
        finally:
            await app.aclose()  # its pool and the stream's listener live on this thread's loop

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the test server did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


async def test_the_guides_browser_snippet_follows_and_resumes_the_stream(
    api_url: str, page: Page, app: Rampart, client: httpx.AsyncClient, alice: User
) -> None:
    assert CHROMIUM, "Chromium is required for the browser tests (.ci/run installs Debian's chromium)"
    r = await client.post("/api/v1/projects", json={"name": "Browser"}, headers=alice.headers)
    assert r.status_code == 201, r.text
    project_id = r.json()["data"]["id"]
    r = await client.get("/api/v1/events", params={"resource_id": project_id}, headers=alice.headers)
    resume_from = r.json()["data"][0]["id"]  # projects.created: the browser must get what follows
    for title in ("one", "two"):
        r = await client.post(
            "/api/v1/tasks", json={"project_id": project_id, "title": title}, headers=alice.headers
        )
        assert r.status_code == 201, r.text
    token = alice.headers["Authorization"].removeprefix("Bearer ")
    page.html = f"""<!doctype html><html><body><pre id="out">waiting</pre><script type="module">
const got = [];
{snippet().replace('"/api/v1/events/stream"', json.dumps(api_url + "/api/v1/events/stream"))}
follow({json.dumps(token)}, (event) => {{
  got.push(event.type + ":" + (event.data.title || ""));
  document.getElementById("out").textContent = JSON.stringify(got);
  if (got.length === 2) fetch("/report", {{ method: "POST", body: JSON.stringify(got) }});
}}, {json.dumps(resume_from)});
</script></body></html>""".encode()

    # Real time, not a DOM dump: the stream never ends, so the page reports back when it has the events
    # (a debugging port keeps headless Chromium running until it is killed).
    with tempfile.TemporaryDirectory() as profile:
        browser = subprocess.Popen(
            [
                CHROMIUM,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--remote-debugging-port=0",
                page.origin,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 30
            while not page.reports and time.monotonic() < deadline and browser.poll() is None:
                await asyncio.sleep(0.05)
        finally:
            browser.kill()
            _, stderr = browser.communicate(timeout=30)
    assert page.reports, stderr[-2000:]
    assert json.loads(page.reports[0]) == ["tasks.created:one", "tasks.created:two"]
