"""Webhooks end to end: admin CRUD, signed deliveries to a real local HTTP receiver that verifies them the
way docs/guide/events.md tells a receiver to, retries, dead letters, the delivery log, manual redelivery,
and the SSRF refusals."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from rampart.app import Rampart, create_app
from rampart.events.dispatcher import Dispatcher, RetryPolicy
from rampart.events.webhook_sender import WebhookSender
from rampart.events.webhooks import Webhooks
from tests.conftest import User, make_settings, new_user
from tests.support import QuietHandler, serving

SECRET = "whsec_test_" + "s" * 24


# ----- a receiver written from the docs alone: the verification code is taken from the guide itself ------
GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guide" / "events.md"


def guide_snippet(language: str) -> str:
    """The first `language` code block of the guide's "Verifying a webhook" section."""
    text = GUIDE.read_text(encoding="utf-8")
    section = text[text.index("### Verifying a webhook") :]
    start = section.index(f"```{language}\n") + len(language) + 4
    return section[start : section.index("```", start)]


_namespace: dict[str, Any] = {}
exec(compile(guide_snippet("python"), str(GUIDE), "exec"), _namespace)  # noqa: S102 - our own docs
verify: Callable[[str, str, bytes], bool] = _namespace["verify"]


def node_verify(secret: str, header: str, body: bytes) -> bool:
    """The guide's Node.js version, run by node."""
    script = guide_snippet("js") + (
        "\nconst [s, h, b] = process.argv.slice(1);"
        "\nconsole.log(String(verify(s, h, Buffer.from(b, 'base64'))));"
    )
    node = shutil.which("node")
    assert node is not None
    out = subprocess.run(
        [node, "-e", script, secret, header, base64.b64encode(body).decode()],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return out.stdout.strip() == "true"


@dataclass
class Receiver:
    url: str
    received: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    failing: bool = False

    def on(self, path: str) -> list[tuple[str, dict[str, str], bytes]]:
        return [r for r in self.received if r[0] == path]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            if self.path.startswith("/redirect"):
                self.send_response(302)
                self.send_header("Location", state.url + "/ok?from=redirect")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif self.path.startswith("/fail") and state.failing:
                self.reply(500)
            else:
                self.reply(204)

    with serving(Handler) as port:
        state.url = f"http://127.0.0.1:{port}"
        yield state


@pytest.fixture(scope="module")
async def hooks_app(own_database_url: str) -> AsyncIterator[Rampart]:
    """An app that may call the local receiver (private networks allowed); no background dispatcher:
    each test runs dispatcher rounds itself, with fast retries."""
    app = create_app(
        make_settings(own_database_url, webhooks_allow_private_networks=True, events_dispatcher=False)
    )
    yield app
    await app.aclose()


@pytest.fixture(scope="module")
async def api(hooks_app: Rampart) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=hooks_app), base_url="http://t") as client:
        yield client


@pytest.fixture(scope="module")
async def root(hooks_app: Rampart) -> User:
    return await new_user(hooks_app, role="admin")


def dispatcher_for(webhooks: Webhooks) -> Dispatcher:
    return Dispatcher(
        db=webhooks.db,
        sources=[webhooks],
        retry=RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05),
    )


async def rounds(dispatcher: Dispatcher, done: Any, *, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await done():
        assert time.monotonic() < deadline, "not delivered in time"
        if not await dispatcher.run_once():
            await asyncio.sleep(0.02)


async def create_hook(api: httpx.AsyncClient, admin: User, **body: Any) -> dict[str, Any]:
    r = await api.post("/api/v1/admin/webhooks", json=body, headers=admin.headers)
    assert r.status_code == 201, r.text
    hook: dict[str, Any] = r.json()["data"]
    return hook


async def a_task(api: httpx.AsyncClient, owner: User) -> dict[str, Any]:
    r = await api.post("/api/v1/projects", json={"name": "Hooks"}, headers=owner.headers)
    assert r.status_code == 201, r.text
    r = await api.post(
        "/api/v1/tasks", json={"project_id": r.json()["data"]["id"], "title": "Hooked"}, headers=owner.headers
    )
    assert r.status_code == 201, r.text
    task: dict[str, Any] = r.json()["data"]
    return task


async def test_a_signed_delivery_verifies_with_the_documented_recipe(
    api: httpx.AsyncClient, hooks_app: Rampart, root: User, receiver: Receiver
) -> None:
    path = f"/ok/{uuid.uuid4().hex}"
    hook = await create_hook(api, root, url=receiver.url + path, events=["tasks.*"], secret=SECRET)
    assert hook["secret"] == SECRET
    owner = await new_user(hooks_app)
    task = await a_task(api, owner)
    assert hooks_app.services.webhooks is not None
    dispatcher = dispatcher_for(hooks_app.services.webhooks)

    async def arrived() -> bool:
        return len(receiver.on(path)) >= 1

    await rounds(dispatcher, arrived)
    for _ in range(3):
        await dispatcher.run_once()
    [(_, headers, body)] = receiver.on(path)  # tasks.created only: projects.created does not match
    assert verify(SECRET, headers["x-rampart-signature"], body)
    assert not verify(SECRET, headers["x-rampart-signature"], body + b" ")  # a tampered body fails
    assert not verify("another-secret-of-16+", headers["x-rampart-signature"], body)
    stale = "t=1000," + headers["x-rampart-signature"].split(",", 1)[1]
    assert not verify(SECRET, stale, body)
    if shutil.which("node"):
        assert node_verify(SECRET, headers["x-rampart-signature"], body)
        assert not node_verify(SECRET, headers["x-rampart-signature"], body + b" ")
    event = json.loads(body)
    assert event["type"] == "tasks.created"
    assert event["resource_id"] == task["id"]
    assert event["data"]["title"] == "Hooked"
    assert headers["x-rampart-event-id"] == event["id"] == headers["idempotency-key"]
    assert headers["content-type"] == "application/json"

    r = await api.get(f"/api/v1/admin/webhooks/{hook['id']}/deliveries", headers=root.headers)
    assert r.status_code == 200, r.text
    [attempt] = r.json()["data"]
    assert attempt["event_id"] == event["id"]
    assert attempt["status_code"] == 204
    assert attempt["error"] is None
    assert attempt["delivery_status"] == "delivered"


async def test_a_failing_receiver_is_retried_then_dead_lettered_and_can_be_redelivered(
    api: httpx.AsyncClient, hooks_app: Rampart, root: User, receiver: Receiver
) -> None:
    path = f"/fail/{uuid.uuid4().hex}"
    hook = await create_hook(api, root, url=receiver.url + path, events=["projects.created"])
    assert hook["secret"].startswith("whsec_")  # generated when not given
    receiver.failing = True
    owner = await new_user(hooks_app)
    await a_task(api, owner)
    assert hooks_app.services.webhooks is not None
    dispatcher = dispatcher_for(hooks_app.services.webhooks)

    async def log() -> list[dict[str, Any]]:
        r = await api.get(f"/api/v1/admin/webhooks/{hook['id']}/deliveries", headers=root.headers)
        assert r.status_code == 200, r.text
        data: list[dict[str, Any]] = r.json()["data"]
        return data

    async def dead() -> bool:
        attempts = await log()
        return bool(attempts) and attempts[0]["delivery_status"] == "dead"

    try:
        await rounds(dispatcher, dead)
    finally:
        receiver.failing = False
    attempts = await log()
    assert [a["status_code"] for a in attempts] == [500, 500, 500]
    assert all(a["error"] == "the receiver answered 500" for a in attempts)
    assert len(receiver.on(path)) == 3

    event_id = attempts[0]["event_id"]
    r = await api.post(
        f"/api/v1/admin/webhooks/{hook['id']}/deliveries/{event_id}/redeliver", headers=root.headers
    )
    assert r.status_code == 202, r.text

    async def delivered() -> bool:
        return (await log())[0]["delivery_status"] == "delivered"

    await rounds(dispatcher, delivered)
    assert (await log())[0]["status_code"] == 204
    assert len(receiver.on(path)) == 4
    r = await api.post(
        f"/api/v1/admin/webhooks/{hook['id']}/deliveries/{uuid.uuid4()}/redeliver", headers=root.headers
    )
    assert r.status_code == 404


async def test_redirects_are_never_followed(
    api: httpx.AsyncClient, hooks_app: Rampart, root: User, receiver: Receiver
) -> None:
    path = f"/redirect/{uuid.uuid4().hex}"
    hook = await create_hook(api, root, url=receiver.url + path, events=["projects.*"])
    await a_task(api, await new_user(hooks_app))
    assert hooks_app.services.webhooks is not None
    dispatcher = dispatcher_for(hooks_app.services.webhooks)

    async def tried() -> bool:
        return len(receiver.on(path)) >= 1

    before = len(receiver.on("/ok?from=redirect"))
    await rounds(dispatcher, tried)
    r = await api.get(f"/api/v1/admin/webhooks/{hook['id']}/deliveries", headers=root.headers)
    attempt = r.json()["data"][0]
    assert attempt["status_code"] == 302
    assert attempt["error"] == "redirects are not followed"
    assert len(receiver.on("/ok?from=redirect")) == before


async def test_addresses_are_checked_again_at_delivery_time(
    api: httpx.AsyncClient, hooks_app: Rampart, root: User, receiver: Receiver
) -> None:
    """A webhook stored while private networks were allowed is refused once they are not."""
    path = f"/ok/{uuid.uuid4().hex}"
    by_ip = await create_hook(api, root, url=receiver.url + path, events=["projects.created"])
    port = receiver.url.rsplit(":", 1)[1]
    by_name = await create_hook(api, root, url=f"http://localhost:{port}{path}", events=["projects.created"])
    strict = Webhooks(
        db=hooks_app.services.db, sender=WebhookSender(timeout=2.0, allow_private_networks=False)
    )
    dispatcher = dispatcher_for(strict)
    await a_task(api, await new_user(hooks_app))
    try:
        for hook in (by_ip, by_name):

            async def refused(hook: dict[str, Any] = hook) -> bool:
                r = await api.get(f"/api/v1/admin/webhooks/{hook['id']}/deliveries", headers=root.headers)
                return any("refused" in (a["error"] or "") for a in r.json()["data"])

            await rounds(dispatcher, refused)
    finally:
        await strict.stop()
    assert receiver.on(path) == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost:8080/hook",
        "http://[::1]/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://0.0.0.0/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://2130706433/hook",  # 127.0.0.1 spelled as one number
        "ftp://93.184.216.34/hook",
        "file:///etc/passwd",
        "http://user:password@93.184.216.34/hook",
        "not a url",
    ],
)
async def test_private_and_odd_targets_are_refused_by_default(
    client: httpx.AsyncClient, admin: User, url: str
) -> None:
    r = await client.post("/api/v1/admin/webhooks", json={"url": url, "events": ["*"]}, headers=admin.headers)
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["url"]


async def test_admin_crud_and_permissions(client: httpx.AsyncClient, admin: User, alice: User) -> None:
    # Inactive: the session app's dispatcher must not try to reach this (public, unreachable) address.
    body = {
        "url": "https://93.184.216.34/hook",
        "events": ["tasks.*", "projects.deleted"],
        "secret": SECRET,
        "active": False,
    }
    r = await client.post("/api/v1/admin/webhooks", json=body, headers=alice.headers)
    assert r.status_code == 403
    r = await client.post("/api/v1/admin/webhooks", json=body, headers=admin.headers)
    assert r.status_code == 201, r.text
    hook = r.json()["data"]
    assert r.headers["location"] == f"/api/v1/admin/webhooks/{hook['id']}"
    r = await client.get(f"/api/v1/admin/webhooks/{hook['id']}", headers=admin.headers)
    assert r.status_code == 200
    assert "secret" not in r.json()["data"]
    assert r.json()["data"]["events"] == ["tasks.*", "projects.deleted"]
    r = await client.patch(
        f"/api/v1/admin/webhooks/{hook['id']}",
        json={"events": ["*"], "description": "all"},
        headers=admin.headers,
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"]["version"] == 2
    assert r.json()["data"]["description"] == "all"
    for bad in ({"events": []}, {"events": ["task*"]}, {"secret": "short"}, {"colour": "red"}):
        r = await client.patch(f"/api/v1/admin/webhooks/{hook['id']}", json=bad, headers=admin.headers)
        assert r.status_code == 422, (bad, r.text)
    r = await client.get("/api/v1/admin/webhooks", params={"limit": 100}, headers=admin.headers)
    assert hook["id"] in [h["id"] for h in r.json()["data"]]
    r = await client.get("/api/v1/events", params={"resource": "webhooks"}, headers=admin.headers)
    mine = [e for e in r.json()["data"] if e["resource_id"] == hook["id"]]
    assert [e["type"] for e in mine] == ["webhooks.created", "webhooks.updated"]
    assert all("secret" not in e["data"] for e in mine)
    r = await client.get("/api/v1/events", params={"resource": "webhooks"}, headers=alice.headers)
    assert r.json()["data"] == []
    assert (
        await client.delete(f"/api/v1/admin/webhooks/{hook['id']}", headers=admin.headers)
    ).status_code == 204
    assert (
        await client.get(f"/api/v1/admin/webhooks/{hook['id']}", headers=admin.headers)
    ).status_code == 404
    assert (await client.get("/api/v1/admin/webhooks/not-an-id", headers=admin.headers)).status_code == 404


async def test_the_apps_dispatcher_counts_outcomes_in_metrics(
    api: httpx.AsyncClient, hooks_app: Rampart, root: User, receiver: Receiver
) -> None:
    path = f"/ok/{uuid.uuid4().hex}"
    await create_hook(api, root, url=receiver.url + path, events=["projects.created"])
    await a_task(api, await new_user(hooks_app))
    dispatcher = hooks_app.services.dispatcher
    assert dispatcher is not None

    async def arrived() -> bool:
        return len(receiver.on(path)) == 1

    await rounds(dispatcher, arrived)
    text = (await api.get("/metrics")).text
    assert 'rampart_events_total{outcome="delivered",type="projects.created"}' in text
    assert "rampart_events_dispatcher_lag_seconds " in text


async def test_deactivating_a_webhook_dead_letters_what_waits_for_it(
    api: httpx.AsyncClient, hooks_app: Rampart, root: User, receiver: Receiver
) -> None:
    hook = await create_hook(api, root, url=receiver.url + "/ok/never", events=["projects.created"])
    webhooks = hooks_app.services.webhooks
    assert webhooks is not None
    dispatcher = dispatcher_for(webhooks)
    await a_task(api, await new_user(hooks_app))
    subscribers = {s.name: s for s in await webhooks.subscribers()}
    await dispatcher.fan_out(subscribers)  # handed out, not yet delivered
    name = f"webhook:{hook['id']}"
    count = "SELECT count(*) FROM event_deliveries WHERE subscriber = $1 AND status = $2"
    assert await webhooks.db.fetchval(count, name, "pending") >= 1
    r = await api.patch(f"/api/v1/admin/webhooks/{hook['id']}", json={"active": False}, headers=root.headers)
    assert r.status_code == 200, r.text
    assert await webhooks.db.fetchval(count, name, "pending") == 0
    assert await webhooks.db.fetchval(count, name, "dead") >= 1
    assert receiver.on("/ok/never") == []


async def test_a_delivery_names_the_admin_who_acted_as_the_user(
    api: httpx.AsyncClient, hooks_app: Rampart, root: User, receiver: Receiver
) -> None:
    """A change made through an impersonation session is delivered with `impersonator_id` (the admin),
    beside `actor_id` (the user); the user's own change with null (issue 13, finding 4)."""
    path = f"/ok/{uuid.uuid4().hex}"
    hook = await create_hook(api, root, url=receiver.url + path, events=["projects.created"])
    target = await new_user(hooks_app)
    r = await api.post(f"/api/v1/admin/users/{target.id}/impersonate", headers=root.headers)
    assert r.status_code == 201, r.text
    acting = {"Authorization": f"Bearer {r.json()['data']['access_token']}"}
    made = {}
    for who, headers in (("admin", acting), ("own", target.headers)):
        r = await api.post("/api/v1/projects", json={"name": who}, headers=headers)
        assert r.status_code == 201, r.text
        made[r.json()["data"]["id"]] = root.id if who == "admin" else None
    assert hooks_app.services.webhooks is not None
    dispatcher = dispatcher_for(hooks_app.services.webhooks)

    async def arrived() -> bool:
        return len(receiver.on(path)) >= 2

    try:
        await rounds(dispatcher, arrived)
    finally:
        await api.delete(f"/api/v1/admin/webhooks/{hook['id']}", headers=root.headers)
    events = [json.loads(body) for _, _, body in receiver.on(path)]
    assert {e["resource_id"]: e["impersonator_id"] for e in events} == made
    assert {e["actor_id"] for e in events} == {target.id}
