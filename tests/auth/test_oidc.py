"""The ID-token checks and the provider's failure modes, against a small provider whose every answer the
test decides (discovery, JWKS, token endpoint), spoken to over HTTP in process.

The real provider (`oidc-provider`, tests/api/test_auth_oidc.py) cannot be made to issue a token for
another audience, an expired one or an `alg: none` one; this one can. Tokens are signed by joserfc.
"""

from __future__ import annotations

import base64
import json
import time
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from joserfc import jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from rampart.auth import oidc as oidc_module
from rampart.auth.oidc import (
    CodeRejected,
    EmailNotVerified,
    InvalidIdToken,
    OIDCClient,
    ProviderUnavailable,
    s256_challenge,
)

ISSUER = "https://idp.example.test"
CLIENT_ID = "rampart-client"
SECRET = "client-secret-" + "s" * 30
NONCE = "the-nonce-" + "n" * 30


@dataclass
class FakeProvider:
    keys: list[Any]
    id_token: str = ""
    token_status: int = 200
    token_body: Any = None
    jwks_fetches: int = 0
    token_requests: list[dict[str, str]] = field(default_factory=list)
    down: bool = False
    algorithms: list[str] = field(default_factory=lambda: ["RS256", "ES256", "HS256", "none"])

    def app(self) -> Starlette:
        async def discovery(request: Request) -> Response:
            return JSONResponse(
                {
                    "issuer": ISSUER,
                    "authorization_endpoint": f"{ISSUER}/authorize",
                    "token_endpoint": f"{ISSUER}/token",
                    "jwks_uri": f"{ISSUER}/jwks",
                    "id_token_signing_alg_values_supported": self.algorithms,
                }
            )

        async def jwks(request: Request) -> Response:
            self.jwks_fetches += 1
            return JSONResponse({"keys": [k.as_dict(private=False) for k in self.keys]})

        async def token(request: Request) -> Response:
            form = dict(parse_qsl((await request.body()).decode()))
            self.token_requests.append(form | {"auth": request.headers.get("authorization", "")})
            if self.token_body is not None:
                return JSONResponse(self.token_body, status_code=self.token_status)
            return JSONResponse({"access_token": "at", "token_type": "Bearer", "id_token": self.id_token})

        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", discovery),
                Route("/jwks", jwks),
                Route("/token", token, methods=["POST"]),
            ]
        )


def rsa(kid: str) -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid, "alg": "RS256", "use": "sig"}, private=True)


KEY = rsa("k1")


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    values: dict[str, Any] = {
        "iss": ISSUER,
        "aud": CLIENT_ID,
        "sub": "subject-1",
        "iat": now,
        "exp": now + 300,
        "nonce": NONCE,
        "email": "Person@Example.test",
        "email_verified": True,
        "name": "A Person",
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def sign(payload: dict[str, Any], key: Any = KEY, alg: str = "RS256", kid: str | None = "k1") -> str:
    header = {"alg": alg, **({"kid": kid} if kid else {})}
    return jwt.encode(header, payload, key, algorithms=[alg])


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(payload: dict[str, Any]) -> str:
    return f"{b64(json.dumps({'alg': 'none', 'kid': 'k1'}).encode())}.{b64(json.dumps(payload).encode())}."


@pytest.fixture
def provider() -> FakeProvider:
    return FakeProvider(keys=[KEY])


@pytest.fixture
async def oidc(provider: FakeProvider) -> AsyncIterator[OIDCClient]:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=provider.app()))
    client = OIDCClient(
        issuer=ISSUER,
        client_id=CLIENT_ID,
        client_secret=SECRET,
        redirect_uri="https://rampart.example.test/api/v1/auth/google/callback",
        http=http,
    )
    yield client
    await client.aclose()


async def test_a_good_id_token_gives_the_identity(oidc: OIDCClient) -> None:
    identity = await oidc.verify(sign(claims()), nonce=NONCE)
    assert (identity.issuer, identity.subject) == (ISSUER, "subject-1")
    assert identity.email == "person@example.test"
    assert identity.name == "A Person"
    # several audiences are fine when we are the authorized party
    await oidc.verify(sign(claims(aud=[CLIENT_ID, "other"], azp=CLIENT_ID)), nonce=NONCE)


async def test_an_id_token_signed_with_ed25519_is_accepted(provider: FakeProvider, oidc: OIDCClient) -> None:
    """A provider that signs with Ed25519 says "EdDSA" (RFC 8037). joserfc warns on that name (RFC 9864
    prefers "Ed25519"); the warning, an exception where warnings are errors, made this sign-in fail."""
    key = OKPKey.generate_key("Ed25519", parameters={"kid": "e1", "alg": "EdDSA", "use": "sig"}, private=True)
    provider.keys, provider.algorithms = [key], ["EdDSA"]
    with warnings.catch_warnings():  # the test's own signing, by joserfc's API with its warning
        warnings.simplefilter("ignore", SecurityWarning)
        token = sign(claims(), key, "EdDSA", kid="e1")
    assert (await oidc.verify(token, nonce=NONCE)).subject == "subject-1"


OTHER_KEY = rsa("k1")  # same kid, different key: a forgery
EC_KEY = ECKey.generate_key("P-256", parameters={"kid": "k1"}, private=True)

BAD: list[tuple[str, Callable[[], str]]] = [
    ("wrong_audience", lambda: sign(claims(aud="someone-else"))),
    ("wrong_audience_list", lambda: sign(claims(aud=["someone-else", "x"]))),
    ("our_audience_among_others_without_azp", lambda: sign(claims(aud=[CLIENT_ID, "other"]))),
    ("wrong_issuer", lambda: sign(claims(iss="https://evil.example.test"))),
    ("expired", lambda: sign(claims(iat=int(time.time()) - 900, exp=int(time.time()) - 120))),
    ("issued_in_the_future", lambda: sign(claims(iat=int(time.time()) + 600, exp=int(time.time()) + 900))),
    ("issued_long_ago", lambda: sign(claims(iat=int(time.time()) - 3600, exp=int(time.time()) + 300))),
    ("missing_exp", lambda: sign({k: v for k, v in claims().items() if k != "exp"})),
    ("missing_iat", lambda: sign({k: v for k, v in claims().items() if k != "iat"})),
    ("missing_sub", lambda: sign({k: v for k, v in claims().items() if k != "sub"})),
    ("wrong_nonce", lambda: sign(claims(nonce="another-nonce"))),
    ("missing_nonce", lambda: sign({k: v for k, v in claims().items() if k != "nonce"})),
    ("alg_none", lambda: unsigned(claims())),
    ("hs256_with_the_client_secret", lambda: sign(claims(), OctKey.import_key(SECRET), "HS256")),
    ("signed_by_another_key_same_kid", lambda: sign(claims(), OTHER_KEY)),
    ("es256_key_not_in_jwks", lambda: sign(claims(), EC_KEY, "ES256")),
    ("unknown_kid", lambda: sign(claims(), rsa("k-unknown"), kid="k-unknown")),
    ("tampered_payload", lambda: _tamper(sign(claims()))),
    ("garbage", lambda: "not.a.token"),
]


def _tamper(token: str) -> str:
    head, _, sig = token.split(".")
    return f"{head}.{b64(json.dumps(claims(sub='admin-subject')).encode())}.{sig}"


@pytest.mark.parametrize("make", [m for _, m in BAD], ids=[n for n, _ in BAD])
async def test_bad_id_tokens_are_refused(oidc: OIDCClient, make: Callable[[], str]) -> None:
    with pytest.raises(InvalidIdToken) as caught:
        await oidc.verify(make(), nonce=NONCE)
    assert caught.value.detail == "The identity provider's ID token could not be verified."


@pytest.mark.parametrize("verified", [False, "false", None])
async def test_unverified_email_is_refused(oidc: OIDCClient, verified: object) -> None:
    with pytest.raises(EmailNotVerified):
        await oidc.verify(sign(claims(email_verified=verified)), nonce=NONCE)


async def test_missing_email_is_refused(oidc: OIDCClient) -> None:
    with pytest.raises(EmailNotVerified):
        await oidc.verify(sign({k: v for k, v in claims().items() if k != "email"}), nonce=NONCE)


async def test_key_rotation_refetches_the_jwks_once(
    oidc: OIDCClient, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Signed beforehand: making RSA keys can take over a second on a busy machine.
    forged = [sign(claims(), rsa(f"x{i}"), kid=f"x{i}") for i in range(5)]
    new = rsa("k2")
    await oidc.verify(sign(claims()), nonce=NONCE)
    assert provider.jwks_fetches == 1
    await oidc.verify(sign(claims()), nonce=NONCE)
    assert provider.jwks_fetches == 1  # cached
    provider.keys = [new]
    identity = await oidc.verify(sign(claims(), new, kid="k2"), nonce=NONCE)
    assert identity.subject == "subject-1"
    assert provider.jwks_fetches == 2
    # a stream of made-up kids refetches at most once a second: that refetch was just now
    for token in forged:
        with pytest.raises(InvalidIdToken):
            await oidc.verify(token, nonce=NONCE)
    assert provider.jwks_fetches == 2
    monkeypatch.setattr(oidc_module, "JWKS_MIN_REFETCH", 0.0)  # as if the second had passed
    with pytest.raises(InvalidIdToken):
        await oidc.verify(sign(claims(), rsa("y"), kid="y"), nonce=NONCE)
    assert provider.jwks_fetches == 3


async def test_code_exchange_sends_the_verifier_and_authenticates(
    oidc: OIDCClient, provider: FakeProvider
) -> None:
    provider.id_token = "the-id-token"
    assert await oidc.exchange(code="the-code", code_verifier="v" * 50) == "the-id-token"
    sent = provider.token_requests[0]
    assert sent["grant_type"] == "authorization_code"
    assert sent["code"] == "the-code"
    assert sent["code_verifier"] == "v" * 50
    assert sent["redirect_uri"].endswith("/api/v1/auth/google/callback")
    expected = base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode()).decode()
    assert sent["auth"] == f"Basic {expected}"
    assert "client_secret" not in sent


async def test_authorize_url_carries_pkce_s256(oidc: OIDCClient) -> None:
    url = await oidc.authorize_url(state="st", nonce="no", code_verifier="verifier-" + "x" * 40)
    assert url.startswith(f"{ISSUER}/authorize?")
    assert f"code_challenge={s256_challenge('verifier-' + 'x' * 40)}" in url
    assert "code_challenge_method=S256" in url
    assert "verifier-" not in url
    # RFC 7636 appendix B
    assert s256_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == (
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (400, {"error": "invalid_grant"}, CodeRejected),
        (401, {"error": "invalid_client"}, ProviderUnavailable),
        (500, {"oops": True}, ProviderUnavailable),
        (200, {"access_token": "no id token"}, InvalidIdToken),
        (200, ["not", "an", "object"], ProviderUnavailable),
    ],
    ids=["bad_code", "bad_client", "server_error", "no_id_token", "not_an_object"],
)
async def test_token_endpoint_failures_are_clear(
    oidc: OIDCClient, provider: FakeProvider, status: int, body: Any, error: type[Exception]
) -> None:
    provider.token_status, provider.token_body = status, body
    with pytest.raises(error):
        await oidc.exchange(code="c", code_verifier="v" * 50)


async def test_unreachable_provider_is_unavailable() -> None:
    client = OIDCClient(
        issuer="http://127.0.0.1:9", client_id=CLIENT_ID, client_secret=SECRET, redirect_uri="http://x/cb"
    )
    try:
        with pytest.raises(ProviderUnavailable):
            await client.authorize_url(state="s", nonce="n", code_verifier="v" * 50)
    finally:
        await client.aclose()


async def test_discovery_for_another_issuer_is_refused(provider: FakeProvider) -> None:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=provider.app()))
    client = OIDCClient(
        issuer="https://idp.example.test/other",
        client_id=CLIENT_ID,
        client_secret=SECRET,
        redirect_uri="http://x/cb",
        http=http,
    )
    try:
        with pytest.raises(ProviderUnavailable):
            await client.metadata()
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    "document",
    [
        {"issuer": 42},
        {"issuer": ISSUER, "authorization_endpoint": "x", "token_endpoint": 1, "jwks_uri": "y"},
        ["not", "an", "object"],
        {"issuer": ISSUER, "authorization_endpoint": "a", "token_endpoint": "::not a url::", "jwks_uri": "j"},
    ],
    ids=["issuer_not_a_string", "endpoint_not_a_string", "not_an_object", "endpoint_not_a_url"],
)
async def test_a_broken_discovery_document_is_unavailable_not_a_crash(document: Any) -> None:
    async def discovery(request: Request) -> Response:
        return JSONResponse(document)

    app = Starlette(routes=[Route("/.well-known/openid-configuration", discovery)])
    client = OIDCClient(
        issuer=ISSUER,
        client_id=CLIENT_ID,
        client_secret=SECRET,
        redirect_uri="http://x/cb",
        http=httpx.AsyncClient(transport=httpx.ASGITransport(app=app)),
    )
    try:
        with pytest.raises(ProviderUnavailable):
            await client.exchange(code="c", code_verifier="v" * 50)  # discovery first
    finally:
        await client.aclose()


async def test_keys_that_are_not_a_key_set_are_unavailable(oidc: OIDCClient, provider: FakeProvider) -> None:
    class Broken:
        def as_dict(self, private: bool) -> Any:
            return "not a key"

    provider.keys = [Broken()]
    with pytest.raises(ProviderUnavailable):
        await oidc.verify(sign(claims()), nonce=NONCE)
