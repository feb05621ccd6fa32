"""Access tokens (unit): what `TokenIssuer` issues, and every token it must refuse.

Bad tokens are made with joserfc where a library can make them, and by hand where it refuses to (an `alg`
label that does not match the signature); see tests/jwts.py.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jwk import OctKey

from rampart.auth.tokens import LEEWAY, TokenIssuer
from rampart.errors import Unauthorized
from tests.jwts import b64, craft, sign, unverified

SECRET = "unit-test-secret-" + "y" * 40
ISSUER = "rampart-test"
AUDIENCE = "rampart-test-api"


@pytest.fixture
def issuer() -> TokenIssuer:
    return TokenIssuer(secret=SECRET, issuer=ISSUER, audience=AUDIENCE, ttl=600)


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
    return sign(claims, key, "HS256")


def hs512(claims: dict[str, Any]) -> str:
    return sign(claims, SECRET, "HS512")


def tamper_signature(token: str) -> str:
    head, payload, sig = token.split(".")
    flipped = sig[:-4] + ("AAAA" if not sig.endswith("AAAA") else "BBBB")
    return f"{head}.{payload}.{flipped}"


def reencode_signature(token: str, padded: bool = False) -> str:
    """The same signature bytes, written another way: a last character whose unused low bits are set (the
    lenient decoders read it as the canonical one), or with `=` padding."""
    head, payload, sig = token.split(".")
    if padded:
        return f"{head}.{payload}.{sig}{'=' * (-len(sig) % 4)}"
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return f"{head}.{payload}.{sig[:-1]}{alphabet[alphabet.index(sig[-1]) + 1]}"


def tamper_payload(token: str) -> str:
    head, _, sig = token.split(".")
    forged = b64(json.dumps(good_claims(role="admin")).encode())
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
    header, raw = unverified(token)
    assert header["alg"] == "HS256"
    # another library, given the secret, checks the signature
    assert jwt.decode(token, OctKey.import_key(SECRET), algorithms=["HS256"]).claims == raw
    assert set(raw) == {"iss", "aud", "sub", "sid", "role", "iat", "exp", "jti"}
    assert raw["exp"] - raw["iat"] == 600
    uuid.UUID(raw["jti"])


def test_every_token_has_its_own_jti(issuer: TokenIssuer) -> None:
    user_id, session_id = uuid.uuid4(), uuid.uuid4()
    jtis = {
        unverified(issuer.issue(user_id=user_id, session_id=session_id, role="user"))[1]["jti"]
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
    # One token, one string: the cache of verified strings relies on it.
    ("signature_non_canonical_ending", lambda: reencode_signature(hs256(good_claims()))),
    ("signature_padded", lambda: reencode_signature(hs256(good_claims()), padded=True)),
    ("other_secret", lambda: hs256(good_claims(), key="another-secret-" + "z" * 40)),
    ("alg_none", lambda: craft({"alg": "none", "typ": "JWT"}, good_claims(), None)),
    ("alg_none_by_a_library", lambda: sign(good_claims(), None, "none")),
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


class Clock:
    """A clock the test sets: what the issuer reads as the time."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def clocked(clock: Clock) -> TokenIssuer:
    return TokenIssuer(secret=SECRET, issuer=ISSUER, audience=AUDIENCE, ttl=600, clock=clock)


def test_a_token_is_accepted_until_its_expiry_plus_the_leeway_cached_or_not() -> None:
    clock = Clock()
    issuer = clocked(clock)
    token = issuer.issue(user_id=uuid.uuid4(), session_id=uuid.uuid4(), role="user")
    expires = unverified(token)[1]["exp"]
    claims = issuer.verify(token)
    assert issuer.verify(token) is claims  # the second call is served from the cache
    clock.now = expires + LEEWAY - 0.5
    assert issuer.verify(token) is claims  # still within the leeway
    assert clocked(clock).verify(token) == claims  # and so for a worker seeing it for the first time
    clock.now = expires + LEEWAY + 0.5
    # Past it, the cached entry is not served: the token is decoded again, and refused.
    with pytest.raises(Unauthorized):
        issuer.verify(token)
    assert token not in issuer._verified
    with pytest.raises(Unauthorized):
        clocked(clock).verify(token)


def test_a_token_issued_in_the_future_is_accepted_only_within_the_leeway() -> None:
    clock = Clock()
    token = clocked(clock).issue(user_id=uuid.uuid4(), session_id=uuid.uuid4(), role="user")
    clock.now -= LEEWAY - 1  # a verifier whose clock is a little behind
    assert clocked(clock).verify(token).role == "user"
    clock.now -= 2  # now more than the leeway behind: `iat` is in its future
    with pytest.raises(Unauthorized):
        clocked(clock).verify(token)


def test_the_cache_never_serves_a_different_string(issuer: TokenIssuer) -> None:
    token = issuer.issue(user_id=uuid.uuid4(), session_id=uuid.uuid4(), role="user")
    issuer.verify(token)
    head, payload, signature = token.split(".")
    forged_payload = b64(
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


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
_HEADERS = st.one_of(
    _JSON,
    st.fixed_dictionaries(
        {"alg": st.sampled_from(["HS256", "none", "RS256", "EdDSA", 5, None])},
        optional={name: _JSON for name in ("typ", "kid", "crit", "b64", "jku", "x5c", "cty", "zip")},
    ),
)
_PAYLOADS = st.one_of(
    _JSON,
    st.fixed_dictionaries(
        {},
        optional={
            name: st.one_of(_JSON, st.just(good_claims()[name]))
            for name in ("iss", "aud", "sub", "sid", "role", "iat", "exp", "jti")
        }
        | {"nbf": _JSON},
    ),
)


@settings(database=None, max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=_HEADERS, claims=_PAYLOADS)
def test_any_token_signed_with_the_secret_is_verified_or_refused_never_an_error(
    issuer: TokenIssuer, header: Any, claims: Any
) -> None:
    """Signed with the right secret, so every header and claim check is reached: whatever they hold, the
    answer is the claims or Unauthorized, never another exception (which would be a 500)."""
    token = craft(header, claims, SECRET)
    with contextlib.suppress(Unauthorized):
        issuer.verify(token)
