"""schemathesis hooks for `make verify-fuzz` (loaded through SCHEMATHESIS_HOOKS by verify/fuzz.py).

The fuzzer holds one access token per run. Two generated requests would end that token's session and turn
the rest of the run into 401s: revoking its own session (`DELETE /api/v1/auth/sessions/{id}`, whose id the
stateful phase learns from `GET /api/v1/auth/sessions`) and an admin disabling or demoting a token holder
(`PATCH /api/v1/admin/users/{id}`). Those two requests are kept, aimed elsewhere: the session id becomes one
that exists nowhere, and `disabled`/`role` are dropped when the target is a token holder. Both outcomes are
covered by tests/api/test_auth_sessions.py and tests/api/test_admin_users.py.

RAMPART_FUZZ_KEEP_SESSIONS and RAMPART_FUZZ_KEEP_USERS are comma-separated ids.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import schemathesis

KEEP_SESSIONS = {s.lower() for s in os.environ.get("RAMPART_FUZZ_KEEP_SESSIONS", "").split(",") if s}
KEEP_USERS = {s.lower() for s in os.environ.get("RAMPART_FUZZ_KEEP_USERS", "").split(",") if s}


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    path = case.operation.path
    method = case.method.upper()
    params = case.path_parameters or {}
    target = str(params.get("id", "")).lower()
    if method == "DELETE" and path == "/api/v1/auth/sessions/{id}" and target in KEEP_SESSIONS:
        params["id"] = str(uuid.uuid4())
    if (
        method == "PATCH"
        and path == "/api/v1/admin/users/{id}"
        and target in KEEP_USERS
        and isinstance(case.body, dict)
    ):
        case.body.pop("disabled", None)
        case.body.pop("role", None)
