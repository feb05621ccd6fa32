"""`RAMPART_TRUSTED_PROXIES` (docs/guide/configuration.md, "Behind a proxy"): `rampart serve` applies
`X-Forwarded-Proto` and `X-Forwarded-For` from a listed peer only, and ignores them otherwise."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.scale.servers import serve

REFRESH = "/api/v1/auth/refresh"


def refused_refresh(http: httpx.Client, client_ip: str) -> int:
    """A failed refresh, which counts against the client address's budget of the auth routes."""
    r = http.post(REFRESH, json={"refresh_token": "not-one"}, headers={"X-Forwarded-For": client_ip})
    return r.status_code


@pytest.mark.parametrize(
    ("trusted", "applied"),
    [("127.0.0.1", True), ("10.0.0.0/8", False), ("", False)],
    ids=["peer_listed", "peer_not_listed", "none_listed"],
)
def test_forwarded_headers_are_applied_only_from_a_listed_peer(
    database_url: str, tmp_path: Path, trusted: str, applied: bool
) -> None:
    env = {"RAMPART_TRUSTED_PROXIES": trusted, "RAMPART_RATE_LIMIT_AUTH": "2/minute"}
    with serve(database_url, tmp_path, **env) as s, httpx.Client(base_url=s.url, timeout=10) as http:
        r = http.get("/health/live", headers={"X-Forwarded-Proto": "https"})
        assert ("strict-transport-security" in r.headers) is applied
        assert "strict-transport-security" not in http.get("/health/live").headers
        # Two clients behind the proxy: their own budgets when the header is believed, one otherwise.
        assert [refused_refresh(http, "203.0.113.1") for _ in range(3)] == [401, 401, 429]
        assert refused_refresh(http, "203.0.113.2") == (401 if applied else 429)
