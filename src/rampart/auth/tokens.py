"""Access tokens: short-lived JWTs naming a user and a server-side session.

HS256 with the configured secret by default; with a KeyRing, EdDSA or RS256 with the ring's keys, each
token naming its key by `kid`. Exactly one algorithm is accepted: never `none`, never another.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from rampart.auth.keys import KeyRing
from rampart.errors import Unauthorized
from rampart.lib.ids import new_id, parse_uuid

ALGORITHM = "HS256"
_REQUIRED = ["iss", "aud", "sub", "sid", "iat", "exp", "jti"]
LEEWAY = 5  # seconds of clock skew tolerated on exp/iat


class UnknownKey(Unauthorized):
    """The token names a key this worker does not hold (yet): reload the keys and try once more."""

    def __init__(self, kid: str) -> None:
        super().__init__(_INVALID, token_present=True)
        self.kid = kid


_INVALID = "The access token is invalid or expired."


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
    ) -> None:
        self._secret = secret
        self.keys = keys
        self.algorithm = keys.alg if keys is not None else ALGORITHM
        self.issuer = issuer
        self.audience = audience
        self.ttl = ttl
        # Exact token strings already verified: the signature covers every byte, so an identical
        # string needs no second HMAC and JSON parse; only its expiry is checked again.
        self._verified: dict[str, Claims] = {}
        self._cache_size = cache_size

    def issue(self, *, user_id: uuid.UUID, session_id: uuid.UUID, role: str) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": str(user_id),
            "sid": str(session_id),
            "role": role,
            "iat": now,
            "exp": now + self.ttl,
            "jti": str(new_id()),
        }
        if self.keys is None:
            return jwt.encode(claims, self._secret, algorithm=ALGORITHM)
        key = self.keys.signing
        return jwt.encode(claims, key.private, algorithm=key.alg, headers={"kid": key.kid})

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
            if cached.expires_at + LEEWAY > time.time():
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
        key: Any = self._secret
        if self.keys is not None:
            try:
                kid = jwt.get_unverified_header(token).get("kid")
            except jwt.PyJWTError:
                raise Unauthorized(_INVALID, token_present=True) from None
            if not isinstance(kid, str) or not kid or len(kid) > 100:
                raise Unauthorized(_INVALID, token_present=True)
            found = self.keys.find(kid)
            if found is None:
                raise UnknownKey(kid)
            key = found.public
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[self.algorithm],
                issuer=self.issuer,
                audience=self.audience,
                options={"require": _REQUIRED},
                leeway=LEEWAY,
            )
        except jwt.PyJWTError:
            raise Unauthorized(_INVALID, token_present=True) from None
        user_id = parse_uuid(claims["sub"]) if isinstance(claims["sub"], str) else None
        session_id = parse_uuid(claims["sid"]) if isinstance(claims["sid"], str) else None
        if user_id is None or session_id is None:
            raise Unauthorized(_INVALID, token_present=True)
        return Claims(user_id, session_id, str(claims.get("role", "")), int(claims["exp"]))
