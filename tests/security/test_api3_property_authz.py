"""API3:2023 Broken object property level authorization: mass assignment and over-exposed fields.

Generated from /openapi.json:

- **Mass assignment.** Every operation whose body schema is closed (`additionalProperties: false`) is
  sent a valid body plus, one at a time, each property its answer shows but its body does not take
  (`id`, `owner_id`, `version`, `created_at`, immutable fields such as `project_id` or `email`, the
  parent's id on nested routes). Each gets 422 naming that field, and nothing is written.
- **Over-exposure.** Every readable operation, called by an admin and by a user, answers items with only
  the documented properties, and no answer anywhere holds a secret-looking member (a webhook's `secret`
  is shown once, in the answer to its creation).

The fine-grained field rules of each resource (read-only, immutable, types) are in
tests/api/test_validation.py and test_admin_users.py; this module covers every route at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from rampart.app import Rampart
from tests.security.scene import TARGETS, Scene, created
from tests.security.surface import API, DOCUMENT, OPERATIONS, Operation

METHODS = ("get", "post", "put", "patch", "delete")
# Member names that would mean a secret or a credential's hash left the server.
SENSITIVE = {
    "secret",
    "password",
    "password_hash",
    "token_hash",
    "refresh_hash",
    "refresh_token_hash",
    "code_verifier",
    "nonce",
    "state_hash",
    "private_jwk",
    "jwt_secret",
    "client_secret",
}


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema`, or what its `$ref` names (schemas are named components in the document)."""
    while "$ref" in schema:
        target: Any = DOCUMENT
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        schema = target
    return schema


def _op_schema(op: Operation) -> dict[str, Any]:
    schema: dict[str, Any] = DOCUMENT["paths"][op.path][op.method.lower()]
    return schema


def _body_schema(op: Operation) -> dict[str, Any] | None:
    body = _op_schema(op).get("requestBody", {}).get("content", {}).get("application/json", {})
    schema: dict[str, Any] | None = body.get("schema")
    return _resolve(schema) if schema is not None else None


def _data_properties(op: Operation) -> dict[str, Any]:
    for code, response in _op_schema(op)["responses"].items():
        if code.startswith("2"):
            schema = _resolve(response.get("content", {}).get("application/json", {}).get("schema", {}))
            data = _resolve(schema.get("properties", {}).get("data", {}))
            item = _resolve(data.get("items", data)) if data.get("type") == "array" else data
            properties: dict[str, Any] = item.get("properties", {})
            return properties
    return {}


CLOSED = [op for op in OPERATIONS if (_body_schema(op) or {}).get("additionalProperties") is False]
SMUGGLED = [
    (op, name)
    for op in CLOSED
    for name in sorted(set(_data_properties(op)) - set(_body_schema(op)["properties"]) - {"secret"})  # type: ignore[index]
]


def _value_for(schema: dict[str, Any]) -> Any:
    schema = _resolve(schema)
    kind = schema.get("type")
    kind = next((k for k in kind if k != "null"), None) if isinstance(kind, list) else kind
    if schema.get("format") == "date-time":
        return "2001-01-01T00:00:00.000Z"
    if kind == "integer":
        return 99
    if kind == "boolean":
        return True
    return str(uuid.uuid4())  # ids, references, and any other text


# A body each operation accepts, so the smuggled field is the only thing wrong with it.
VALID: dict[str, Callable[[Scene], dict[str, Any]]] = {
    "projects.create": lambda s: {"name": "P"},
    "projects.update": lambda s: {"name": "P2"},
    "tasks.create": lambda s: {"project_id": s.values["project"], "title": "T"},
    "tasks.update": lambda s: {"title": "T2"},
    "members.create": lambda s: {"user_id": s.bob.id, "role": "viewer"},
    "users.create": lambda s: {"email": f"m{uuid.uuid4().hex[:12]}@example.test", "name": "M"},
    "users.update": lambda s: {"name": "M2"},
    "webhooks.create": lambda s: {"url": "http://93.184.216.34/h", "events": ["*"], "active": False},
    "webhooks.update": lambda s: {"description": "d"},
}


def test_every_closed_body_has_a_valid_example() -> None:
    """A new create or update route fails here until VALID has a body it accepts."""
    assert CLOSED, "no closed body schema found"
    assert sorted(op.name for op in CLOSED if op.name not in VALID) == []


async def _writes(app: Rampart) -> int:
    count: int = await app.services.db.fetchval("SELECT count(*) FROM events")
    return count


@pytest.mark.parametrize(("op", "field"), SMUGGLED, ids=[f"{op.id} +{name}" for op, name in SMUGGLED])
async def test_server_owned_fields_cannot_be_written(
    client: httpx.AsyncClient, app: Rampart, scene: Scene, op: Operation, field: str
) -> None:
    caller = scene.admin if op.admin_only else scene.alice
    values = TARGETS[op.path](scene) if op.params else {}
    body = {**VALID[op.name](scene), field: _value_for(_data_properties(op)[field])}
    before = await _writes(app)

    r = await client.request(op.method, op.url(values), json=body, headers=caller.headers)

    assert r.status_code == 422, r.text
    assert field in [e["field"] for e in r.json()["errors"]]
    assert await _writes(app) == before
    # The control: the same body without the field is accepted.
    del body[field]
    r = await client.request(op.method, op.url(values), json=body, headers=caller.headers)
    assert r.status_code in (200, 201), r.text
    if op.name == "members.create":  # so the next case can add the same member again
        r = await client.delete(f"{op.url(values)}/{body['user_id']}", headers=caller.headers)
        assert r.status_code == 204


READABLE = [
    (op, caller)
    for op in OPERATIONS
    if op.method == "GET" and not op.streaming and not op.public and _data_properties(op)
    for caller in ("admin", "user")
    if caller == "admin" or not op.admin_only  # users are refused those (API5)
]


def _sensitive_members(value: Any, path: str = "") -> list[str]:
    found = []
    if isinstance(value, dict):
        for key, inner in value.items():
            if str(key).lower() in SENSITIVE:
                found.append(f"{path}.{key}")
            found += _sensitive_members(inner, f"{path}.{key}")
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            found += _sensitive_members(inner, f"{path}[{i}]")
    return found


@pytest.mark.parametrize(("op", "caller"), READABLE, ids=[f"{op.id} as {caller}" for op, caller in READABLE])
async def test_answers_hold_only_documented_fields_and_no_secrets(
    client: httpx.AsyncClient, scene: Scene, op: Operation, caller: str
) -> None:
    user = scene.admin if caller == "admin" else scene.alice
    r = await client.get(op.url(TARGETS[op.path](scene) if op.params else {}), headers=user.headers)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    items = data if isinstance(data, list) else [data]
    assert items, "nothing to inspect"
    documented = set(_data_properties(op))
    for item in items:
        assert set(item) <= documented, set(item) - documented
    assert _sensitive_members(r.json()) == []


@pytest.mark.parametrize(
    "url",
    [
        "/events?resource=webhooks&limit=100",
        "/events?resource=users&limit=100",
        "/admin/impersonations",
        "/admin/webhooks?limit=100",
        "/admin/users?limit=100",
        "/auth/sessions",
    ],
)
async def test_audit_log_and_admin_lists_hold_no_secrets(
    client: httpx.AsyncClient, scene: Scene, url: str
) -> None:
    """Webhook events carry the webhook's data but never its secret; session rows (the caller's own, and the
    impersonations an admin opened) never a token hash."""
    r = await client.get(API + url, headers=scene.admin.headers)
    assert r.status_code == 200, r.text
    assert _sensitive_members(r.json()) == []


async def test_a_webhook_secret_is_shown_once(client: httpx.AsyncClient, scene: Scene) -> None:
    admin = scene.admin.headers
    hook = created(
        await client.post(
            f"{API}/admin/webhooks",
            json={"url": "http://93.184.216.34/once", "events": ["*"], "active": False},
            headers=admin,
        )
    )
    secret = hook["secret"]
    assert secret.startswith("whsec_")
    answers = [
        await client.get(f"{API}/admin/webhooks/{hook['id']}", headers=admin),
        await client.get(f"{API}/admin/webhooks?limit=100", headers=admin),
        await client.patch(f"{API}/admin/webhooks/{hook['id']}", json={"secret": "n" * 20}, headers=admin),
        await client.get(f"{API}/events", params={"resource_id": hook["id"]}, headers=admin),
    ]
    for r in answers:
        assert r.status_code == 200
        assert secret not in r.text
        assert "n" * 20 not in r.text
    events = answers[-1].json()["data"]
    assert [e["type"] for e in events] == ["webhooks.created", "webhooks.updated"]
    assert events[1]["changes"] == {"secret": {"changed": True}}  # that it changed, not what to


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("/tasks?fields=id,secret", "fields"),
        ("/admin/users?fields=id,password", "fields"),
        ("/tasks?owner_id[contains]=a", "owner_id[contains]"),
        ("/tasks?description[contains]=x", "description[contains]"),
        ("/admin/users?sort=disabled", "sort"),
    ],
)
async def test_hidden_or_unfiltered_properties_are_no_oracle(
    client: httpx.AsyncClient, scene: Scene, query: str, param: str
) -> None:
    """Sparse fields name only documented properties, and only declared filters and sorts run."""
    r = await client.get(API + query, headers=scene.admin.headers)
    assert r.status_code == 400, r.text
    assert [e["field"] for e in r.json()["errors"]] == [param]


async def test_a_member_cannot_promote_themself(client: httpx.AsyncClient, scene: Scene) -> None:
    """Carol is a viewer of Alice's project: no route lets her change her own role or rights."""
    carol, v = scene.carol.headers, scene.values
    member = f"{API}/projects/{v['project']}/members/{scene.carol.id}"
    assert (await client.patch(member, json={"role": "editor"}, headers=carol)).status_code == 405
    r = await client.post(
        f"{API}/projects/{v['project']}/members",
        json={"user_id": scene.carol.id, "role": "editor"},
        headers=carol,
    )
    assert r.status_code == 403
    assert (await client.patch(f"{API}/auth/me", json={"role": "admin"}, headers=carol)).status_code == 405
    r = await client.patch(f"{API}/admin/users/{scene.carol.id}", json={"role": "admin"}, headers=carol)
    assert r.status_code == 403
    me = await client.get(f"{API}/auth/me", headers=carol)
    assert me.json()["data"]["role"] == "user"
