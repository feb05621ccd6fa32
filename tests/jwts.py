"""JWTs made outside `TokenIssuer`, for the tests that check what it accepts and refuses.

`sign` makes them with joserfc, as any library would, for any algorithm, `none` included; `craft`
assembles them by hand where a library would refuse (an `alg` label that does not match the signature,
a signature over the wrong key). `unverified` reads one back without checking anything.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import warnings
from typing import Any

from joserfc import jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import Key, OctKey


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def sign(claims: dict[str, Any], key: str | Key | None, alg: str = "HS256", **header: Any) -> str:
    """A JWT signed by a library: `key` is an HMAC secret (a string), a joserfc key, or None for `none`."""
    with warnings.catch_warnings():  # joserfc warns on `none`, on the name "EdDSA" and on short secrets
        warnings.simplefilter("ignore", SecurityWarning)
        k = OctKey.import_key(key) if isinstance(key, str) else key
        return jwt.encode({"alg": alg, **header}, claims, k, algorithms=[alg])


def craft(
    header: dict[str, Any], claims: dict[str, Any], key: str | bytes | None, digest: Any = hashlib.sha256
) -> str:
    """A JWT assembled by hand: any header, signed with HMAC(`digest`) keyed with `key`, or not signed."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    if key is None:
        return f"{signing_input}."
    secret = key.encode() if isinstance(key, str) else key
    return f"{signing_input}.{b64(hmac.new(secret, signing_input.encode(), digest).digest())}"


def unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and the claims of a JWT, unchecked."""
    head, payload, _ = token.split(".")
    return json.loads(unb64(head)), json.loads(unb64(payload))
