"""Property-based fuzzing of every documented operation with schemathesis, in process (ASGI).

Each generated case (positive and negative data) is sent as an admin and as a plain user; a positive one
also with its ids pointed at real seeded rows (so PATCH/GET reach the database instead of stopping at
404). Then the stateful phase: sequences of calls chained by the links schemathesis infers from the
document (create, then read, update, delete what was created), as each caller. Every check schemathesis
has runs (`--checks all`, with verify/schemathesis.toml): no 5xx, status codes, content types, headers
and bodies as documented, data the document allows is accepted and data it forbids is refused, auth is
not ignored, undocumented methods are refused. Only logging out (it ends the caller's session) is left
out; the live stream is read for a second.
The app runs on its own database, so random admin writes never touch other tests' data.
`make verify-fuzz` (verify/fuzz.py) runs the long version against a real server process.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Flaky, Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS
from schemathesis.python import asgi
from schemathesis.specs.openapi import checks as _openapi_checks  # registers the OpenAPI checks

from rampart.app import create_app
from tests.conftest import _admin, _db_url, make_settings, new_user, upgrade_demo

assert _openapi_checks
ALL_CHECKS = list(CHECKS.get_all())  # what `st run --checks all` runs
CONFIG = Path(__file__).parents[2] / "verify" / "schemathesis.toml"
STREAM = "/api/v1/events/stream"
# ~24 operations x 2 modes x 2 callers x 2 id variants: this keeps the run at about half a minute.
# Set RAMPART_TEST_FUZZ_EXAMPLES for a deeper local run.
MAX_EXAMPLES = int(os.environ.get("RAMPART_TEST_FUZZ_EXAMPLES", "30"))


@dataclass
class Seeded:
    """Rows that exist in the fuzzing database, so generated requests can reach real objects."""

    admin_token: str
    user_token: str  # owns the project and its task
    victim_id: str  # a user the admin may change (the token holders stay enabled)
    holder_ids: frozenset[str]  # the users holding the two tokens
    holder_sessions: frozenset[str]  # and their sessions
    project_id: str
    task_id: str


async def _seed(database_url: str) -> Seeded:
    app = create_app(make_settings(database_url))
    try:
        admin = await new_user(app, role="admin")
        user = await new_user(app)
        victim = await new_user(app)
        member = await new_user(app)
        headers = {"Authorization": f"Bearer {user.token}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            r = await http.post("/api/v1/projects", json={"name": "fuzz"}, headers=headers)
            assert r.status_code == 201, r.text
            project_id = r.json()["data"]["id"]
            r = await http.post(
                "/api/v1/tasks", json={"project_id": project_id, "title": "fuzz"}, headers=headers
            )
            assert r.status_code == 201, r.text
            task_id = r.json()["data"]["id"]
            r = await http.post(
                f"/api/v1/projects/{project_id}/members",
                json={"user_id": member.id, "role": "editor"},
                headers=headers,
            )
            assert r.status_code == 201, r.text
        return Seeded(
            admin.token,
            user.token,
            victim.id,
            frozenset({admin.id, user.id}),
            frozenset({str(admin.session_id), str(user.session_id)}),
            project_id,
            task_id,
        )
    finally:
        await app.aclose()


@pytest.fixture(scope="module")
def fuzz_env() -> Iterator[tuple[Any, Seeded]]:
    name = f"rampart_fuzz_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    url = _db_url(name)
    try:
        upgrade_demo(url)
        seeded = asyncio.run(_seed(url))
        # The app lives on schemathesis' own event-loop thread from here on (pool included).
        app = create_app(make_settings(url))
        schema = schemathesis.openapi.from_asgi(
            "/openapi.json", app, config=schemathesis.Config.from_path(CONFIG)
        )
        try:
            yield schema, seeded
        finally:
            asgi.shutdown_lifespans()  # runs the app's lifespan shutdown: closes its pool
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _point_at_seeded(case: Any, seeded: Seeded) -> None:
    """Replace generated ids (path and body) by ids of rows that exist and the user can reach."""
    path: str = case.operation.path
    params = case.path_parameters or {}
    if "parent_id" in params:
        params["parent_id"] = seeded.project_id
    if "id" in params:
        if path.startswith("/api/v1/projects"):
            params["id"] = seeded.project_id
        elif path.startswith("/api/v1/tasks"):
            params["id"] = seeded.task_id
        elif path.startswith("/api/v1/admin/users"):
            params["id"] = seeded.victim_id
    if "user_id" in params:
        params["user_id"] = seeded.victim_id
    if isinstance(case.body, dict):
        if "project_id" in case.body:
            case.body["project_id"] = seeded.project_id
        for key in ("user_id", "assignee_id"):
            if isinstance(case.body.get(key), str):
                case.body[key] = seeded.victim_id


def _fuzz(operation: Any, mode: GenerationMode, seeded: Seeded) -> None:
    tokens = (seeded.admin_token, seeded.user_token)
    # The live stream never ends by itself: read it for a second (what came by then is checked).
    stream = operation.path == STREAM
    call: dict[str, Any] = {"timeout": 1} if stream else {}

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=5 if stream else MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: bounded time, schemathesis shows a repro
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        if "Authorization" not in (case.headers or {}) and operation.definition.raw.get("security") != []:
            # Negative data without the credentials the document requires: sent as it is, it must be 401.
            case.call_and_validate(checks=ALL_CHECKS, **call)
            return
        for token in tokens:
            case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=ALL_CHECKS, **call)
        if case.method.upper() == "DELETE" or mode is GenerationMode.NEGATIVE:
            # DELETE: keep the seeded rows for the other operations. Negative data: pointing the ids at
            # real rows could mend the very part that was made invalid.
            return
        _point_at_seeded(case, seeded)
        _keep_tokens_alive(case, seeded)
        for token in tokens:
            case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=ALL_CHECKS, **call)

    run()


def test_every_operation_keeps_to_the_document_under_every_check(fuzz_env: tuple[Any, Seeded]) -> None:
    schema, seeded = fuzz_env
    # Logging out ends the seeded sessions every other operation needs (tests/api/test_auth_sessions.py
    # covers it).
    everything = [result.ok() for result in schema.get_all_operations()]
    operations = [op for op in everything if op.path != "/api/v1/auth/logout"]
    assert len(operations) >= 15, [op.label for op in operations]
    failures: list[str] = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz(operation, mode, seeded)
            except Unsatisfiable:
                # No parameter and no body (e.g. /health/live): nothing can be made invalid.
                if mode is not GenerationMode.NEGATIVE:
                    raise
            except (Exception, BaseExceptionGroup) as exc:  # schemathesis raises a FailureGroup
                failures.append(f"--- {operation.label} ({mode.value})\n{exc}")
    assert not failures, "\n".join(failures)


# Stateful sequences: a few steps each, a bounded number of them per caller (about 20 s in all).
STATEFUL_EXAMPLES = int(os.environ.get("RAMPART_TEST_FUZZ_STATEFUL_EXAMPLES", "25"))


def _keep_tokens_alive(case: Any, seeded: Seeded) -> None:
    """Aim the two calls that would end a token's session elsewhere (see verify/fuzz_hooks.py)."""
    params = case.path_parameters or {}
    target = str(params.get("id", "")).lower()
    if case.operation.path == "/api/v1/auth/sessions/{id}" and target in seeded.holder_sessions:
        params["id"] = str(uuid.uuid4())
    if (
        case.operation.path == "/api/v1/admin/users/{id}"
        and target in seeded.holder_ids
        and isinstance(case.body, dict)
    ):
        case.body.pop("disabled", None)
        case.body.pop("role", None)


def test_stateful_sequences_keep_to_the_document_under_every_check(fuzz_env: tuple[Any, Seeded]) -> None:
    schema, seeded = fuzz_env
    stateful = schema.exclude(path=["/api/v1/auth/logout", "/api/v1/events/stream"])
    base = stateful.as_state_machine()
    # Links inferred from the response schemas and path parameters (POST /tasks -> GET/PATCH/DELETE
    # /tasks/{id}, ...): without them there would be no sequences to run.
    assert len(base.bundles) >= 3, sorted(base.bundles)
    steps: list[tuple[str, int]] = []
    failures: list[str] = []
    for token in (seeded.user_token, seeded.admin_token):

        class Machine(base):  # type: ignore[misc, valid-type]
            def before_call(self, case: Any) -> None:
                _keep_tokens_alive(case, seeded)

            def get_call_kwargs(self, case: Any) -> dict[str, Any]:
                return {"headers": {"Authorization": f"Bearer {token}"}}  # noqa: B023 - used in this loop

            def after_call(self, response: Any, case: Any) -> None:
                steps.append((case.operation.label, response.status_code))

            def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
                try:
                    case.validate_response(response, checks=ALL_CHECKS, transport_kwargs=kwargs)
                except (Exception, BaseExceptionGroup) as exc:  # schemathesis raises a FailureGroup
                    failures.append(f"--- {case.operation.label} -> {response.status_code}\n{exc}")
                    raise

        for _ in range(3):
            try:
                Machine.run(
                    settings=settings(
                        max_examples=STATEFUL_EXAMPLES,
                        stateful_step_count=6,
                        deadline=None,
                        database=None,
                        derandomize=True,
                        phases=[Phase.generate],
                        suppress_health_check=list(HealthCheck),
                    )
                )
                break
            except Flaky:
                # The sequences drive real rows, so a replayed prefix can meet another state and take
                # other rules; Hypothesis calls that flaky (schemathesis' own engine restarts then).
                # Check failures are collected above, so none is lost here: start again.
                continue
    assert not failures, "\n".join(failures)
    # The sequences reached real rows: something was created and then read or changed through its id.
    created = {label for label, status in steps if status == 201}
    reached = {label for label, status in steps if status in (200, 204) and "{id}" in label}
    assert created, sorted(set(steps))
    assert reached, sorted(set(steps))
