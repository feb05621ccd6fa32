"""API10:2023 Unsafe consumption of APIs.

Rampart consumes two outside APIs: the OpenID Connect provider (discovery document, key set, token
endpoint, ID token claims) and webhook receivers (their answers to deliveries). Both are treated as
hostile here.

- **The provider**, in process (as in tests/auth/test_oidc.py) and reached through Rampart's real
  sign-in routes: huge, deeply nested, non-JSON or ill-typed discovery documents, key sets and token
  answers; keys of the wrong kind; ID token claims of the wrong types, huge, or carrying control
  characters. Every one ends in a problem (503 `provider_unavailable`, 401 `invalid_id_token`, 403
  `sign_in_denied` or `email_not_verified`), never a 500, and creates no user or session.
- **Webhook receivers**, real sockets: an endless body, no answer, garbage, a redirect, a huge header.
  Each attempt ends within the webhook timeout with a recorded failure or success, reading no body.

Cited, not repeated: forged and expired ID tokens, `alg: none`, HS256 with the client secret, unknown
key ids and rotation (tests/auth/test_oidc.py, 19 kinds); the full sign-in with the real
`oidc-provider` (tests/api/test_auth_oidc.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, OctKey, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rampart.app import Rampart, create_app
from rampart.auth.oidc import OIDCClient
from rampart.events.webhook_sender import WebhookSender
from tests.auth.test_oidc import CLIENT_ID, ISSUER, KEY, SECRET, rsa, sign
from tests.conftest import make_settings
from tests.support import free_port

LOGIN, CALLBACK = "/api/v1/auth/google/login", "/api/v1/auth/google/callback"
GOOD_DISCOVERY = {
    "issuer": ISSUER,
    "authorization_endpoint": f"{ISSUER}/authorize",
    "token_endpoint": f"{ISSUER}/token",
    "jwks_uri": f"{ISSUER}/jwks",
    "id_token_signing_alg_values_supported": ["RS256", "ES256", "HS256"],
}
Body = bytes | dict[str, Any] | list[Any]


@dataclass
class HostileProvider:
    """An identity provider whose every answer the test decides."""

    discovery: Body = field(default_factory=lambda: dict(GOOD_DISCOVERY))
    jwks: Body = field(default_factory=lambda: {"keys": [KEY.as_dict(private=False)]})
    token: Callable[[str], Body] | None = None  # nonce -> the token endpoint's answer
    token_status: int = 200
    nonce: str = ""

    def app(self) -> Starlette:
        def answer(body: Body, status: int = 200) -> Response:
            content = body if isinstance(body, bytes) else orjson.dumps(body)
            return Response(content, status_code=status, media_type="application/json")

        async def discovery(request: Request) -> Response:
            return answer(self.discovery)

        async def jwks(request: Request) -> Response:
            return answer(self.jwks)

        async def token(request: Request) -> Response:
            assert self.token is not None
            return answer(self.token(self.nonce), self.token_status)

        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", discovery),
                Route("/jwks", jwks),
                Route("/token", token, methods=["POST"]),
            ]
        )


def claims(nonce: str, /, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    values: dict[str, Any] = {
        "iss": ISSUER,
        "aud": CLIENT_ID,
        "sub": f"sub-{uuid.uuid4().hex}",
        "iat": now,
        "exp": now + 300,
        "nonce": nonce,
        "email": f"h{uuid.uuid4().hex[:12]}@example.test",
        "email_verified": True,
        "name": "Hostile Test",
    }
    values.update(overrides)
    return values


def id_token(**overrides: Any) -> Callable[[str], Body]:
    """A token endpoint answer carrying an ID token signed by the provider's key, claims overridden."""
    return lambda nonce: {"token_type": "Bearer", "id_token": sign(claims(nonce, **overrides))}


@pytest.fixture
async def hostile(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[HostileProvider, Rampart, httpx.AsyncClient]]:
    provider = HostileProvider()
    to_provider = httpx.AsyncClient(transport=httpx.ASGITransport(app=provider.app()))
    # Rampart's own OIDC client, whose HTTP goes to the hostile provider in process.
    monkeypatch.setattr("rampart.app.OIDCClient", functools.partial(OIDCClient, http=to_provider))
    settings = make_settings(
        database_url,
        public_url="http://testserver",
        oidc_issuer=ISSUER,
        oidc_client_id=CLIENT_ID,
        oidc_client_secret=SECRET,
    )
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield provider, app, http
    await app.aclose()


async def _sign_in(provider: HostileProvider, http: httpx.AsyncClient) -> httpx.Response:
    """Start a sign-in; if the provider's discovery holds, come back to the callback with a code."""
    r = await http.get(LOGIN)
    if r.status_code != 302:
        return r
    query = parse_qs(urlsplit(r.headers["location"]).query)
    provider.nonce = query["nonce"][0]
    return await http.get(CALLBACK, params={"code": "the-code", "state": query["state"][0]})


async def _footprint(app: Rampart) -> tuple[int, int]:
    db = app.services.db
    return await db.fetchval("SELECT count(*) FROM users"), await db.fetchval("SELECT count(*) FROM sessions")


def _nested(depth: int) -> bytes:
    return b'{"issuer": ' + b"[" * depth + b"]" * depth + b"}"


MIB = 1_048_576
DISCOVERY: dict[str, Body] = {
    "huge": orjson.dumps({**GOOD_DISCOVERY, "padding": "p" * (2 * MIB)}),
    "deeply_nested": _nested(200_000),
    "html": b"<html><body>Sign in</body></html>",
    "empty": b"",
    "array": [GOOD_DISCOVERY],
    "another_issuer": {**GOOD_DISCOVERY, "issuer": "https://evil.example"},
    "issuer_not_a_string": {**GOOD_DISCOVERY, "issuer": [ISSUER]},
    "endpoint_not_a_string": {**GOOD_DISCOVERY, "authorization_endpoint": {"url": "x"}},
    "no_endpoints": {"issuer": ISSUER},
    "nul_in_strings": orjson.dumps({**GOOD_DISCOVERY, "token_endpoint": f"{ISSUER}/token\u0000"}),
}


@pytest.mark.parametrize("document", list(DISCOVERY.values()), ids=list(DISCOVERY))
async def test_a_hostile_discovery_document_is_unavailable_not_a_crash(
    hostile: tuple[HostileProvider, Rampart, httpx.AsyncClient], document: Body
) -> None:
    provider, app, http = hostile
    provider.discovery = document
    provider.token = id_token()
    before = await _footprint(app)
    r = await _sign_in(provider, http)
    assert r.status_code in (503, 401), r.text[:300]
    assert r.json()["code"] in ("provider_unavailable", "invalid_id_token")
    assert await _footprint(app) == before


with warnings.catch_warnings():  # joserfc rightly warns about the size
    warnings.simplefilter("ignore", SecurityWarning)
    WEAK_KEY = RSAKey.generate_key(1024, parameters={"kid": "k1", "alg": "RS256"}, private=True)
EC_KEY = ECKey.generate_key("P-256", parameters={"kid": "k1"}, private=True)
HS_KEY = OctKey.import_key("shared-" + "s" * 40, {"kid": "k1", "alg": "HS256"})
JWKS: dict[str, tuple[Body, Callable[[str], Body] | None]] = {
    "huge": ({"keys": [KEY.as_dict(private=False)], "padding": "p" * (2 * MIB)}, None),
    "deeply_nested": (b'{"keys": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", None),
    "not_json": (b"keys: none", None),
    "keys_not_a_list": ({"keys": "k1"}, None),
    "key_not_an_object": ({"keys": ["k1"]}, None),
    "key_without_kty": ({"keys": [{"kid": "k1", "n": "x", "e": "AQAB"}]}, None),
    "rsa_key_with_garbage_modulus": ({"keys": [{"kty": "RSA", "kid": "k1", "n": "!!", "e": "AQAB"}]}, None),
    "ec_point_not_on_curve": (
        {"keys": [{**EC_KEY.as_dict(private=False), "y": EC_KEY.as_dict(private=False)["x"]}]},
        None,
    ),
    "symmetric_key_offered": (
        {"keys": [HS_KEY.as_dict(private=True)]},
        lambda nonce: {"id_token": sign(claims(nonce), HS_KEY, "HS256")},
    ),
    "same_kid_twice_wrong_one_first": (
        {"keys": [rsa("k1").as_dict(private=False), KEY.as_dict(private=False)]},
        None,
    ),
    "thousand_short_symmetric_keys": (
        {"keys": [{"kty": "oct", "k": "AAAA", "kid": f"x{i}"} for i in range(1000)]},
        None,
    ),
    "rsa_1024": (
        {"keys": [WEAK_KEY.as_dict(private=False)]},
        lambda n: {"id_token": sign(claims(n), WEAK_KEY)},
    ),
}


@pytest.mark.parametrize(("keys", "token"), list(JWKS.values()), ids=list(JWKS))
async def test_a_hostile_key_set_refuses_the_sign_in(
    hostile: tuple[HostileProvider, Rampart, httpx.AsyncClient],
    keys: Body,
    token: Callable[[str], Body] | None,
) -> None:
    provider, app, http = hostile
    provider.jwks = keys
    provider.token = token or id_token()
    before = await _footprint(app)
    r = await _sign_in(provider, http)
    assert r.status_code in (503, 401), r.text[:300]
    assert r.json()["code"] in ("provider_unavailable", "invalid_id_token")
    assert await _footprint(app) == before


TOKEN_ANSWERS: dict[str, tuple[int, Callable[[str], Body]]] = {
    "huge": (200, lambda n: orjson.dumps({"id_token": "x", "padding": "p" * (2 * MIB)})),
    "deeply_nested": (200, lambda n: b'{"id_token": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    "not_json": (200, lambda n: b"id_token=abc"),
    "array": (200, lambda n: ["id_token"]),
    "id_token_a_number": (200, lambda n: {"id_token": 12345}),
    "id_token_an_object": (200, lambda n: {"id_token": {"alg": "none"}}),
    "id_token_huge": (200, lambda n: {"id_token": "e" * (900 * 1024)}),
    "id_token_garbage": (200, lambda n: {"id_token": "a.b.c"}),
    "id_token_non_ascii": (200, lambda n: {"id_token": "été.été.été"}),
    "error_with_huge_description": (
        400,
        lambda n: {"error": "x" * 100_000, "error_description": "d" * 100_000},
    ),
    "server_error": (500, lambda n: b"Internal Server Error"),
}


@pytest.mark.parametrize(("status", "answer"), list(TOKEN_ANSWERS.values()), ids=list(TOKEN_ANSWERS))
async def test_a_hostile_token_endpoint_refuses_the_sign_in(
    hostile: tuple[HostileProvider, Rampart, httpx.AsyncClient],
    status: int,
    answer: Callable[[str], Body],
) -> None:
    provider, app, http = hostile
    provider.token, provider.token_status = answer, status
    before = await _footprint(app)
    r = await _sign_in(provider, http)
    assert r.status_code in (503, 401, 400), r.text[:300]
    assert r.json()["code"] in ("provider_unavailable", "invalid_id_token", "invalid_grant")
    assert len(r.content) < 4096  # nothing of the provider's answer is echoed
    assert await _footprint(app) == before


CLAIMS: dict[str, tuple[dict[str, Any], int, str]] = {
    "sub_a_number": ({"sub": 12345}, 401, "invalid_id_token"),
    "sub_an_object": ({"sub": {"id": "1"}}, 401, "invalid_id_token"),
    "sub_empty": ({"sub": ""}, 401, "invalid_id_token"),
    "sub_with_nul": ({"sub": "abc\x00def"}, 401, "invalid_id_token"),
    "sub_with_newline": ({"sub": "abc\ndef"}, 401, "invalid_id_token"),
    "sub_too_long": ({"sub": "s" * 300}, 401, "invalid_id_token"),
    "iat_a_string": ({"iat": "now"}, 401, "invalid_id_token"),
    "exp_a_string": ({"exp": "later"}, 401, "invalid_id_token"),
    "exp_a_list": ({"exp": [1]}, 401, "invalid_id_token"),
    "aud_a_number": ({"aud": 7}, 401, "invalid_id_token"),
    "aud_an_object": ({"aud": {"client": CLIENT_ID}}, 401, "invalid_id_token"),
    "iss_a_list": ({"iss": [ISSUER]}, 401, "invalid_id_token"),
    "nonce_a_number": ({"nonce": 42}, 401, "invalid_id_token"),
    "email_a_list": ({"email": ["a@example.test"]}, 403, "email_not_verified"),
    "email_with_nul": ({"email": "a\x00b@example.test"}, 403, "sign_in_denied"),
    "email_with_newline": ({"email": "a\nb@example.test"}, 403, "sign_in_denied"),
    "email_with_terminal_escape": ({"email": "a\x1b[31mb@example.test"}, 403, "sign_in_denied"),
    "email_with_bidi_override": ({"email": "a\u202eb@example.test"}, 403, "sign_in_denied"),
    "email_huge": ({"email": "e" * 20_000 + "@example.test"}, 403, "sign_in_denied"),
    "email_verified_yes": ({"email_verified": "yes"}, 403, "email_not_verified"),
    "email_verified_a_list": ({"email_verified": [True]}, 403, "email_not_verified"),
}


@pytest.mark.parametrize(("overrides", "status", "code"), list(CLAIMS.values()), ids=list(CLAIMS))
async def test_id_token_claims_of_the_wrong_shape_are_refused(
    hostile: tuple[HostileProvider, Rampart, httpx.AsyncClient],
    overrides: dict[str, Any],
    status: int,
    code: str,
) -> None:
    provider, app, http = hostile
    provider.token = id_token(**overrides)
    before = await _footprint(app)
    r = await _sign_in(provider, http)
    assert r.status_code == status, r.text[:300]
    assert r.json()["code"] == code
    assert await _footprint(app) == before


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        ("Ann\x00 Lee", "Ann Lee"),
        ("\x1b[31mRed\x1b[0m", "[31mRed[0m"),
        ("n" * 5000, "n" * 200),
        (12345, ""),
        ({"first": "Ann"}, ""),
    ],
    ids=["nul", "terminal_escape", "huge", "a_number", "an_object"],
)
async def test_an_odd_display_name_is_cleaned_not_fatal(
    hostile: tuple[HostileProvider, Rampart, httpx.AsyncClient], name: Any, stored: str
) -> None:
    """The control for the refusals above: a valid token signs in, whatever its optional `name`."""
    provider, _, http = hostile
    provider.token = id_token(name=name)
    r = await _sign_in(provider, http)
    assert r.status_code == 200, r.text
    assert r.json()["data"]["user"]["name"] == stored


# ----- webhook receivers --------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def receiver(answer: bytes | None, *, trickle: bytes = b"") -> AsyncIterator[str]:
    """A TCP server on loopback that reads the request, writes `answer` (None: nothing, ever), then
    `trickle` until the client goes away. Every connection is closed when the block ends."""
    handlers: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            await reader.readuntil(b"\r\n\r\n")
            if answer is None:
                await asyncio.Event().wait()
            else:
                writer.write(answer)
                await writer.drain()
            while trickle:
                writer.write(trickle)
                await writer.drain()
                await asyncio.sleep(0.01)
        except (OSError, asyncio.IncompleteReadError):
            pass  # the client hung up, as it should
        finally:
            writer.close()

    port = free_port()
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


RECEIVERS: dict[str, tuple[bytes | None, bytes, int | None, str | None]] = {
    # answer, trickled afterwards, expected status, expected error start
    "endless_body": (b"HTTP/1.1 200 OK\r\nContent-Length: 100000000000\r\n\r\n", b"x" * 65536, 200, None),
    "no_answer": (None, b"", None, "timed out"),
    "not_http": (b"SSH-2.0-OpenSSH_9.6\r\n", b"", None, "RemoteProtocolError"),
    "redirect_to_metadata": (
        b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/latest/meta-data/\r\n"
        b"Content-Length: 0\r\n\r\n",
        b"",
        302,
        "redirects are not followed",
    ),
    "huge_header": (
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"h" * 200_000 + b"\r\n\r\n",
        b"",
        None,
        "RemoteProtocolError",
    ),
    "endless_headers": (b"HTTP/1.1 200 OK\r\n", b"X-More: yes\r\n", None, None),
}


@pytest.mark.parametrize(
    ("answer", "trickle", "status", "error"), list(RECEIVERS.values()), ids=list(RECEIVERS)
)
async def test_a_hostile_receiver_costs_one_bounded_attempt(
    answer: bytes | None, trickle: bytes, status: int | None, error: str | None
) -> None:
    sender = WebhookSender(timeout=0.5, allow_private_networks=True)  # the receiver is on loopback
    try:
        async with receiver(answer, trickle=trickle) as url, asyncio.timeout(10):
            attempt = await sender.send(url=url, secret="s" * 16, event={"id": "e1", "type": "t.created"})
    finally:
        await sender.aclose()
    assert attempt.status_code == status
    if error is None and status == 200:
        assert attempt.ok  # the status is all that counts: the endless body is never read
    elif error is None:
        assert not attempt.ok
    else:
        assert attempt.error is not None
        assert error in attempt.error, attempt.error
    assert attempt.error is None or len(attempt.error) <= 500
