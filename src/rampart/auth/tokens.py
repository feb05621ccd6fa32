"""Access tokens: short-lived JWTs naming a user and a server-side session.

HS256 with the configured secret by default; with a KeyRing, EdDSA or RS256 with the ring's keys, each
token naming its key by `kid`. Exactly one algorithm is accepted: never `none`, never another.
Signing and verification are joserfc's (decision 0018), through objects made once per issuer: the
key, a registry of the one algorithm (`rampart.auth.algorithms`), and the claim checks.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import GuestProtocol, Key, OctKey
from joserfc.jwt import ClaimsOption, JWTClaimsRegistry

from rampart.auth.algorithms import Algorithms
from rampart.auth.keys import KeyRing
from rampart.errors import Unauthorized
from rampart.lib.ids import new_id, parse_uuid

ALGORITHM = "HS256"
LEEWAY = 5  # seconds of clock skew tolerated on exp/iat
_INVALID = "The access token is invalid or expired."


class UnknownKey(Unauthorized):
    """The token names a key this worker does not hold (yet): reload the keys and try once more."""

    def __init__(self, kid: str) -> None:
        super().__init__(_INVALID, token_present=True)
        self.kid = kid


@dataclass(frozen=True, slots=True)
class Claims:
    user_id: uuid.UUID
    session_id: uuid.UUID
    role: str
    expires_at: int


class TokenIssuer:
    """Issues and verifies access tokens in one algorithm: HS256, or the KeyRing's."""

    def __init__(
        self,
        *,
        secret: str,
        issuer: str,
        audience: str,
        ttl: int,
        cache_size: int = 50_000,
        keys: KeyRing | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = keys
        self.algorithm = keys.alg if keys is not None else ALGORITHM
        self.issuer = issuer
        self.audience = audience
        self.ttl = ttl
        self._clock = clock
        self._secret: Key | None = OctKey.import_key(secret) if keys is None else None
        self._registry = Algorithms([self.algorithm])
        required: ClaimsOption = {"essential": True}
        self._claims = JWTClaimsRegistry(
            now=lambda: int(clock()),
            leeway=LEEWAY,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": audience},
            **dict.fromkeys(("sub", "sid", "iat", "exp", "jti"), required),
        )
        # Exact token strings already verified: the signature covers every byte, so an identical
        # string needs no second signature check and JSON parse; only its expiry is checked again.
        self._verified: dict[str, Claims] = {}
        self._cache_size = cache_size

    def issue(self, *, user_id: uuid.UUID, session_id: uuid.UUID, role: str) -> str:
        now = int(self._clock())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": str(user_id),
            "sid": str(session_id),
            "role": role,
            "iat": now,
            "exp": now + self.ttl,
            "jti": str(new_id()),
        }
        header: dict[str, Any] = {"alg": self.algorithm, "typ": "JWT"}
        if self.keys is None:
            key = self._secret
        else:
            signing = self.keys.signing
            header["kid"], key = signing.kid, signing.key
        return jws.serialize_compact(header, orjson.dumps(claims), key, registry=self._registry)

    async def prepare(self) -> None:
        """Load the signing keys if needed (a no-op with HS256); call before issue() or verify()."""
        if self.keys is not None:
            await self.keys.ensure()

    def jwks(self) -> dict[str, Any]:
        """The public keys (none with HS256: its secret is not published)."""
        return self.keys.jwks() if self.keys is not None else {"keys": []}

    def verify(self, token: str) -> Claims:
        """The token's claims, or Unauthorized (never says which check failed: that helps attackers)."""
        cached = self._verified.get(token)
        if cached is not None:
            if cached.expires_at + LEEWAY > self._clock():
                return cached
            del self._verified[token]
        claims = self._decode(token)
        if len(self._verified) >= self._cache_size:
            self._verified.clear()  # crude but bounded; refills with the tokens in use
        self._verified[token] = claims
        return claims

    def forget(self) -> None:
        """Drop every cached verification (after a key change)."""
        self._verified.clear()

    def _decode(self, token: str) -> Claims:
        try:
            # The registry refuses any `alg` but the one, by exact name, before a key is looked up.
            key = self._secret if self.keys is None else self._key_named
            claims = orjson.loads(jws.deserialize_compact(token, key, registry=self._registry).payload)
            if not isinstance(claims, dict):
                raise Unauthorized(_INVALID, token_present=True)
            self._claims.validate(claims)  # iss, aud, exp and iat (with the leeway), the required ones
        except (JoseError, ValueError, TypeError):  # orjson.JSONDecodeError and UnicodeError included
            raise Unauthorized(_INVALID, token_present=True) from None
        user_id, session_id = parse_uuid(claims["sub"]), parse_uuid(claims["sid"])
        if user_id is None or session_id is None:
            raise Unauthorized(_INVALID, token_present=True)
        return Claims(user_id, session_id, str(claims.get("role", "")), int(claims["exp"]))

    def _key_named(self, signed: GuestProtocol) -> Key:
        assert self.keys is not None
        kid = signed.headers().get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > 100:
            raise Unauthorized(_INVALID, token_present=True)
        found = self.keys.find(kid)
        if found is None:
            raise UnknownKey(kid)
        return found.key
