"""Asymmetric signing keys for access tokens (EdDSA with Ed25519, or RS256), kept in `signing_keys`.

The newest unretired key signs. Rotation adds a key and retires the others; a retired key still verifies
until every token it signed has expired (`verify_window` seconds), so rotating logs nobody out. Each
worker holds the keys in memory: it reloads them when a token names an unknown `kid` (another worker
rotated), when told by an announcement, and at least once a minute.

Keys are joserfc's, as are the signatures made with them (`rampart.auth.tokens`, decision 0018).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from joserfc.jwk import JWKRegistry, Key, KeyParameters

from rampart.db.pool import Database
from rampart.lib.ids import new_id

# The algorithms (the configuration and `rampart keys rotate` allow no others) and their keys' type and size.
_KEY_TYPES: dict[str, tuple[str, str | int]] = {"EdDSA": ("OKP", "Ed25519"), "RS256": ("RSA", 2048)}
RELOAD_EVERY = 60.0  # seconds: a worker that missed an announcement still picks up a rotation
UNKNOWN_KID_RELOAD = 1.0  # tokens with made-up kids reload at most this often
_LOCK = "SELECT pg_advisory_xact_lock(hashtext('rampart_signing_keys'))"
# The keys that still verify, the signing one (unretired) first.
_KEYS = (
    "SELECT kid, alg, private_jwk, retired_at FROM signing_keys WHERE alg = $1"
    " AND (retired_at IS NULL OR retired_at > now() - make_interval(secs => $2))"
    " ORDER BY retired_at IS NULL DESC, created_at DESC"
)


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    key: Key  # the private key: signs; its public half verifies
    public_jwk: dict[str, Any]


async def rotate(conn: asyncpg.Connection, *, alg: str) -> str:
    """Add a new signing key and retire the others (they keep verifying for a while); returns its kid."""
    kid = str(new_id())
    params: KeyParameters = {"kid": kid, "alg": alg, "use": "sig"}
    key = JWKRegistry.generate_key(*_KEY_TYPES[alg], parameters=params, private=True)
    private_jwk = orjson.dumps(key.as_dict(private=True)).decode()
    await conn.execute(_LOCK)
    await conn.execute(
        "UPDATE signing_keys SET retired_at = now() WHERE retired_at IS NULL AND alg = $1", alg
    )
    await conn.execute(
        "INSERT INTO signing_keys (kid, alg, private_jwk) VALUES ($1, $2, $3)", kid, alg, private_jwk
    )
    # Long past any window: nothing they signed can still be live.
    await conn.execute("DELETE FROM signing_keys WHERE retired_at < now() - interval '30 days'")
    return kid


def _load(kid: str, alg: str, private_jwk: str) -> SigningKey:
    key = JWKRegistry.import_key(orjson.loads(private_jwk))
    public = {k: v for k, v in key.as_dict(private=False).items() if k in {"kty", "crv", "x", "n", "e"}}
    public_jwk = {**public, "kid": kid, "alg": alg, "use": "sig"}
    return SigningKey(kid, key, public_jwk)


class KeyRing:
    """The signing keys of one algorithm, as this worker knows them."""

    def __init__(self, *, db: Database, alg: str, verify_window: int) -> None:
        self._db = db
        self.alg = alg
        self._window = verify_window
        self._keys: dict[str, SigningKey] = {}
        self._signing: SigningKey | None = None
        self._loaded_at = -RELOAD_EVERY
        self._unknown_reload_at = -UNKNOWN_KID_RELOAD
        self._lock = asyncio.Lock()

    @property
    def signing(self) -> SigningKey:
        if self._signing is None:
            raise RuntimeError("the signing keys are not loaded: await ensure() first")
        return self._signing

    def find(self, kid: str) -> SigningKey | None:
        return self._keys.get(kid)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.public_jwk for k in self._keys.values()]}

    def invalidate(self) -> None:
        """Reload at the next use (an announcement said the keys changed)."""
        self._loaded_at = -RELOAD_EVERY

    async def ensure(self) -> None:
        if time.monotonic() - self._loaded_at < RELOAD_EVERY and self._signing is not None:
            return
        await self._reload()

    async def reload_for_unknown(self, kid: str) -> bool:
        """Reload because a token names `kid`; whether it is known now. Rate limited."""
        if kid in self._keys:
            return True
        if time.monotonic() - self._unknown_reload_at < UNKNOWN_KID_RELOAD:
            return False
        self._unknown_reload_at = time.monotonic()
        await self._reload()
        return kid in self._keys

    async def _reload(self) -> None:
        async with self._lock:
            started = time.monotonic()
            async with self._db.transaction() as conn:
                rows = await self._fetch(conn)
                if not any(r["retired_at"] is None for r in rows):
                    # The first start in this mode: make the first key (one worker only, by the lock).
                    await conn.execute(_LOCK)
                    rows = await self._fetch(conn)
                    if not any(r["retired_at"] is None for r in rows):
                        await rotate(conn, alg=self.alg)
                        rows = await self._fetch(conn)
            keys = {r["kid"]: _load(r["kid"], r["alg"], r["private_jwk"]) for r in rows}
            active = next(r["kid"] for r in rows if r["retired_at"] is None)
            self._keys, self._signing, self._loaded_at = keys, keys[active], started

    async def _fetch(self, conn: asyncpg.Connection) -> list[asyncpg.Record]:
        return list(await conn.fetch(_KEYS, self.alg, float(self._window)))
