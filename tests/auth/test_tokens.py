"""Access tokens (unit): what `TokenIssuer` issues, and every token it must refuse.

Bad tokens are made with PyJWT where it can make them, and by hand where it refuses to (an `alg` label
that does not match the signature, an HMAC key shorter than HS512 wants).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import time
import uuid
import warnings
from collections.abc import Callable
from typing import Any

import jwt
import pytest

from rampart.auth.tokens import TokenIssuer
from rampart.errors import Unauthorized

SECRET = "unit-test-secret-" + "y" * 40
ISSUER = "rampart-test"
AUDIENCE = "rampart-test-api"


@pytest.fixture
def issuer() -> TokenIssuer:
    return TokenIssuer(secret=SECRET, issuer=ISSUER, audience=AUDIENCE, ttl=600)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def craft(
    header: dict[str, Any], claims: dict[str, Any], key: str | None, digest: Any = hashlib.sha256
) -> str:
    """A JWT assembled by hand: any header, signed with HMAC(`digest`) or not signed at all."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = "" if key is None else _b64(hmac.new(key.encode(), signing_input.encode(), digest).digest())
    return f"{signing_input}.{signature}"


def good_claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": str(uuid.uuid4()),
        "sid": str(uuid.uuid4()),
        "role": "user",
        "iat": now,
        "exp": now + 300,
        "jti": str(uuid.uuid4()),
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not _DROP}


_DROP: Any = object()


def hs256(claims: dict[str, Any], key: str = SECRET) -> str:
    return jwt.encode(claims, key, algorithm="HS256")


def hs512(claims: dict[str, Any]) -> str:
    with warnings.catch_warnings():  # our secret is shorter than HS512 recommends; irrelevant here
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        return jwt.encode(claims, SECRET, algorithm="HS512")


def tamper_signature(token: str) -> str:
    head, payload, sig = token.split(".")
    flipped = sig[:-4] + ("AAAA" if not sig.endswith("AAAA") else "BBBB")
    return f"{head}.{payload}.{flipped}"


def tamper_payload(token: str) -> str:
    head, _, sig = token.split(".")
    forged = _b64(json.dumps(good_claims(role="admin")).encode())
    return f"{head}.{forged}.{sig}"


def test_issued_token_round_trips(issuer: TokenIssuer) -> None:
    user_id, session_id = uuid.uuid4(), uuid.uuid4()
    before = int(time.time())
    token = issuer.issue(user_id=user_id, session_id=session_id, role="admin")
    claims = issuer.verify(token)
    assert claims.user_id == user_id
    assert claims.session_id == session_id
    assert claims.role == "admin"
    assert before + 600 <= claims.expires_at <= int(time.time()) + 600


def test_issued_token_carries_every_claim_of_the_contract(issuer: TokenIssuer) -> None:
    token = issuer.issue(user_id=uuid.uuid4(), session_id=uuid.uuid4(), role="user")
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    raw = jwt.decode(token, SECRET, algorithms=["HS256"], audience=AUDIENCE, issuer=ISSUER)
    assert set(raw) == {"iss", "aud", "sub", "sid", "role", "iat", "exp", "jti"}
    assert raw["exp"] - raw["iat"] == 600
    uuid.UUID(raw["jti"])


def test_every_token_has_its_own_jti(issuer: TokenIssuer) -> None:
    user_id, session_id = uuid.uuid4(), uuid.uuid4()
    jtis = {
        jwt.decode(
            issuer.issue(user_id=user_id, session_id=session_id, role="user"),
            options={"verify_signature": False},
        )["jti"]
        for _ in range(20)
    }
    assert len(jtis) == 20


def test_hand_crafted_hs256_is_accepted(issuer: TokenIssuer) -> None:
    """The control for the crafted cases below: `craft` itself makes valid tokens."""
    claims = good_claims()
    assert issuer.verify(craft({"alg": "HS256", "typ": "JWT"}, claims, SECRET)).user_id == uuid.UUID(
        claims["sub"]
    )


BAD_TOKENS: list[tuple[str, Callable[[], str]]] = [
    ("tampered_signature", lambda: tamper_signature(hs256(good_claims()))),
    ("tampered_payload", lambda: tamper_payload(hs256(good_claims()))),
    ("other_secret", lambda: hs256(good_claims(), key="another-secret-" + "z" * 40)),
    ("alg_none", lambda: craft({"alg": "none", "typ": "JWT"}, good_claims(), None)),
    ("alg_none_pyjwt", lambda: jwt.encode(good_claims(), None, algorithm="none")),
    ("alg_None_capitalised", lambda: craft({"alg": "None", "typ": "JWT"}, good_claims(), None)),
    ("hs512", lambda: hs512(good_claims())),
    ("hs512_by_hand", lambda: craft({"alg": "HS512"}, good_claims(), SECRET, hashlib.sha512)),
    # algorithm confusion: labelled RS256, "signed" with the HMAC secret
    ("rs256_label_hmac_signed", lambda: craft({"alg": "RS256", "typ": "JWT"}, good_claims(), SECRET)),
    ("rs256_label_unsigned", lambda: craft({"alg": "RS256"}, good_claims(), None)),
    ("wrong_iss", lambda: hs256(good_claims(iss="someone-else"))),
    ("wrong_aud", lambda: hs256(good_claims(aud="another-api"))),
    ("expired", lambda: hs256(good_claims(iat=int(time.time()) - 1000, exp=int(time.time()) - 60))),
    ("missing_iss", lambda: hs256(good_claims(iss=_DROP))),
    ("missing_aud", lambda: hs256(good_claims(aud=_DROP))),
    ("missing_sub", lambda: hs256(good_claims(sub=_DROP))),
    ("missing_sid", lambda: hs256(good_claims(sid=_DROP))),
    ("missing_jti", lambda: hs256(good_claims(jti=_DROP))),
    ("missing_exp", lambda: hs256(good_claims(exp=_DROP))),
    ("missing_iat", lambda: hs256(good_claims(iat=_DROP))),
    ("sub_not_uuid", lambda: hs256(good_claims(sub="admin"))),
    ("sub_number", lambda: hs256(good_claims(sub=42))),
    ("sid_not_uuid", lambda: hs256(good_claims(sid="not-a-session"))),
    ("sid_braced_uuid", lambda: hs256(good_claims(sid="{" + str(uuid.uuid4()) + "}"))),
    ("exp_string", lambda: hs256(good_claims(exp="tomorrow"))),
    ("garbage", lambda: "garbage"),
    ("three_garbage_parts", lambda: "a.b.c"),
    ("empty", lambda: ""),
]


@pytest.mark.parametrize("make", [m for _, m in BAD_TOKENS], ids=[n for n, _ in BAD_TOKENS])
def test_bad_tokens_are_refused(issuer: TokenIssuer, make: Callable[[], str]) -> None:
    with pytest.raises(Unauthorized) as caught:
        issuer.verify(make())
    assert caught.value.token_present is True
    # one message for every failure: the client never learns which check failed
    assert caught.value.detail == "The access token is invalid or expired."


def test_role_claim_is_reported_as_given(issuer: TokenIssuer) -> None:
    """verify() only reports the claim; the Authenticator takes the role from the database instead."""
    assert issuer.verify(hs256(good_claims(role="admin"))).role == "admin"
    assert issuer.verify(hs256(good_claims(role=_DROP))).role == ""


def test_a_cached_verification_still_expires(issuer: TokenIssuer, monkeypatch: pytest.MonkeyPatch) -> None:
    token = issuer.issue(user_id=uuid.uuid4(), session_id=uuid.uuid4(), role="user")
    claims = issuer.verify(token)
    assert issuer.verify(token) is claims  # the second call is served from the cache
    # Later, past expiry (and the leeway), the cached entry must not be served: the token is re-decoded
    # with the same clock, and refused.
    later = time.time() + issuer.ttl + 60
    monkeypatch.setattr("rampart.auth.tokens.time.time", lambda: later)
    monkeypatch.setattr("jwt.api_jwt.datetime", _frozen_datetime(later))
    with pytest.raises(Unauthorized):
        issuer.verify(token)
    assert token not in issuer._verified


def _frozen_datetime(at: float) -> type[dt.datetime]:
    """PyJWT's `datetime`, with `now()` fixed at `at`."""

    class Frozen(dt.datetime):
        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> Frozen:  # type: ignore[override]
            return cls.fromtimestamp(at, tz)

    return Frozen


def test_the_cache_never_serves_a_different_string(issuer: TokenIssuer) -> None:
    token = issuer.issue(user_id=uuid.uuid4(), session_id=uuid.uuid4(), role="user")
    issuer.verify(token)
    head, payload, signature = token.split(".")
    forged_payload = _b64(
        json.dumps({**json.loads(base64.urlsafe_b64decode(payload + "==")), "role": "admin"}).encode()
    )
    with pytest.raises(Unauthorized):
        issuer.verify(f"{head}.{forged_payload}.{signature}")
    with pytest.raises(Unauthorized):
        issuer.verify(token + "x")


def test_the_cache_is_bounded() -> None:
    small = TokenIssuer(secret="s" * 40, issuer="i", audience="a", ttl=60, cache_size=3)
    tokens = [small.issue(user_id=uuid.uuid4(), session_id=uuid.uuid4(), role="user") for _ in range(10)]
    for token in tokens:
        small.verify(token)
    assert len(small._verified) <= 3
    assert small.verify(tokens[0]).role == "user"  # evicted entries verify again from scratch
