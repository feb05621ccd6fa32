"""An OpenID Connect relying party: discovery, the authorize URL, the code exchange and ID-token checks.

The JOSE work (JWKS parsing, signature verification, claim checks) is joserfc's; this module only decides
what to accept. Provider failures become the errors below, each with its own `code`, never a 500.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus, urlencode

import orjson
from joserfc import jws, jwt
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import KeySet
from joserfc.util import urlsafe_b64encode

if TYPE_CHECKING:  # httpx is imported on first use: workers without sign-in never load it
    import httpx

from rampart.auth.algorithms import Algorithms
from rampart.errors import Forbidden, InvalidRequest, NotFound, ServiceUnavailable, Unauthorized

log = logging.getLogger("rampart.auth.oidc")

# Asymmetric algorithms only: an HS* ID token would be signed with our client secret, `none` with nothing.
ID_TOKEN_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA")
LEEWAY = 60  # seconds of clock skew tolerated on exp and iat
MAX_ID_TOKEN_AGE = 600  # an ID token issued longer ago than this is not a fresh sign-in
METADATA_TTL = 3600.0
JWKS_MIN_REFETCH = 1.0  # an unknown kid refetches the JWKS, at most this often
# Discovery documents and key sets are a few kilobytes; a provider sending more is broken or hostile.
MAX_RESPONSE_BYTES = 1_048_576
MAX_SUBJECT_LENGTH = 255  # OpenID Connect Core §2: `sub` is at most 255 ASCII characters
MAX_EMAIL_LENGTH = 320
_NOT_JSON = object()


class SignInNotConfigured(NotFound, code="sign_in_not_configured", title="Sign-in not configured"): ...


class InvalidState(InvalidRequest, code="invalid_state", title="Invalid sign-in state"): ...


class InvalidRedirect(InvalidRequest, code="invalid_redirect", title="Redirect not allowed"): ...


class SignInDenied(Forbidden, code="sign_in_denied", title="Sign-in denied"): ...


class EmailNotVerified(Forbidden, code="email_not_verified", title="Email not verified"): ...


class CodeRejected(InvalidRequest, code="invalid_grant", title="Authorization code rejected"): ...


class InvalidIdToken(Unauthorized, code="invalid_id_token", title="Invalid ID token"):
    def __init__(self, reason: str) -> None:
        # The reason is for the log (never the token itself); the client learns only that it was refused.
        super().__init__("The identity provider's ID token could not be verified.")
        self.reason = reason[:200]
        log.warning("ID token refused: %s", self.reason)


class ProviderUnavailable(
    ServiceUnavailable, code="provider_unavailable", title="Identity provider unavailable"
): ...


def s256_challenge(verifier: str) -> str:
    """The PKCE S256 code challenge of a verifier (RFC 7636 §4.2)."""
    return urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).decode("ascii")


@dataclass(frozen=True, slots=True)
class Identity:
    """What a verified ID token says about the person signing in."""

    issuer: str
    subject: str
    email: str
    name: str


class OIDCClient:
    """One provider, found by discovery from its issuer URL; metadata and keys are cached."""

    def __init__(
        self,
        *,
        issuer: str,
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self._secret = client_secret
        self.redirect_uri = redirect_uri
        if http is None:
            import httpx

            http = httpx.AsyncClient(timeout=5.0, follow_redirects=False)
        self._http = http
        self._metadata: tuple[float, dict[str, Any]] | None = None
        self._keys: KeySet | None = None
        self._unknown_kid_fetched = -JWKS_MIN_REFETCH
        self.jwks_fetches = 0
        self._lock = asyncio.Lock()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def metadata(self) -> dict[str, Any]:
        cached = self._metadata
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        doc: dict[str, Any] = await self._get_json(f"{self.issuer}/.well-known/openid-configuration")
        members = ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri")
        valid = isinstance(doc, dict) and all(isinstance(doc.get(k), str) for k in members)
        # OpenID Connect Discovery §4.3: the document must name the issuer we asked.
        if not valid or doc["issuer"].rstrip("/") != self.issuer:
            raise ProviderUnavailable("The identity provider's configuration is not valid.")
        self._metadata = (time.monotonic() + METADATA_TTL, doc)
        return doc

    async def _key_set(self, kid: str | None) -> KeySet:
        keys = self._keys
        if keys is not None and (kid is None or _has_kid(keys, kid)):
            return keys
        async with self._lock:
            keys = self._keys
            if keys is not None and (kid is None or _has_kid(keys, kid)):
                return keys  # another request refetched meanwhile
            if keys is not None:
                # An unknown kid refetches (the provider rotated its keys), but a stream of made-up kids
                # must not make us hammer the provider: at most one such refetch a second.
                if time.monotonic() - self._unknown_kid_fetched < JWKS_MIN_REFETCH:
                    return keys
                self._unknown_kid_fetched = time.monotonic()
            meta = await self.metadata()
            doc = await self._get_json(meta["jwks_uri"])
            try:
                fresh = _import_keys(doc)
            except (JoseError, ValueError, TypeError, KeyError, AttributeError, SecurityWarning) as exc:
                raise ProviderUnavailable("The identity provider's keys are not valid.") from exc
            self._keys = fresh
            self.jwks_fetches += 1
            return fresh

    async def _get_json(self, url: str) -> Any:
        status, body = await self._call("GET", url)
        if status != 200 or body is _NOT_JSON:
            raise ProviderUnavailable("The identity provider answered with an error.")
        return body

    async def _call(self, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
        """Status and parsed JSON body (`_NOT_JSON` when it is not JSON) of one request to the provider:
        at most `MAX_RESPONSE_BYTES` are read, and orjson's nesting limit turns a hostile `[[[[…` into an
        error (the standard library's parser would raise RecursionError)."""
        import httpx

        try:
            async with self._http.stream(
                method, url, headers={"Accept": "application/json"}, **kwargs
            ) as response:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_RESPONSE_BYTES:
                        log.warning("identity provider answer over %d bytes", MAX_RESPONSE_BYTES)
                        raise ProviderUnavailable("The identity provider answered with too much data.")
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            log.warning("identity provider unreachable: %s", type(exc).__name__)
            raise ProviderUnavailable("The identity provider could not be reached.") from exc
        try:
            return response.status_code, orjson.loads(body)
        except orjson.JSONDecodeError:
            return response.status_code, _NOT_JSON

    async def authorize_url(self, *, state: str, nonce: str, code_verifier: str) -> str:
        meta = await self.metadata()
        params = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": "openid email profile",
            "state": state,
            "nonce": nonce,
            "code_challenge": s256_challenge(code_verifier),
            "code_challenge_method": "S256",
        }
        endpoint: str = meta["authorization_endpoint"]
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(params)}"

    async def exchange(self, *, code: str, code_verifier: str) -> str:
        """The ID token the token endpoint gives for `code` (client_secret_basic authentication)."""
        import httpx

        meta = await self.metadata()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "code_verifier": code_verifier,
        }
        # RFC 6749 §2.3.1: client id and secret are form-encoded before going into Basic authentication.
        basic = httpx.BasicAuth(quote_plus(self.client_id), quote_plus(self._secret))
        status, body = await self._call("POST", meta["token_endpoint"], data=form, auth=basic)
        error = body.get("error") if isinstance(body, dict) else None
        if status == 400 and error == "invalid_grant":
            raise CodeRejected("The identity provider did not accept the authorization code.")
        if status != 200 or not isinstance(body, dict):
            log.warning("token endpoint answered %s (%r)", status, str(error)[:100] if error else None)
            raise ProviderUnavailable("The identity provider refused the code exchange.")
        id_token = body.get("id_token")
        if not isinstance(id_token, str):
            raise InvalidIdToken("no id_token in the token response")
        return id_token

    async def verify(self, id_token: str, *, nonce: str) -> Identity:
        """Check the ID token: signature by the provider's JWKS, iss, aud, exp, iat, nonce, email."""
        try:
            header = jws.extract_compact(id_token.encode("ascii")).headers()
        except (JoseError, ValueError, UnicodeError) as exc:
            raise InvalidIdToken("malformed") from exc
        alg, kid = header.get("alg"), header.get("kid")
        advertised = (await self.metadata()).get("id_token_signing_alg_values_supported") or ["RS256"]
        allowed = [name for name in ID_TOKEN_ALGORITHMS if name in advertised]
        if alg not in allowed:
            raise InvalidIdToken(f"algorithm {alg!r} not accepted")
        keys = await self._key_set(kid if isinstance(kid, str) else None)
        if isinstance(kid, str) and not _has_kid(keys, kid):
            raise InvalidIdToken("unknown key id")
        try:
            token = jwt.decode(id_token, keys, registry=Algorithms(allowed))
            now = int(time.time())
            jwt.JWTClaimsRegistry(
                now=now,
                leeway=LEEWAY,
                iss={"essential": True, "value": self.issuer},
                aud={"essential": True, "value": self.client_id},
                sub={"essential": True},
                exp={"essential": True},
                iat={"essential": True},
            ).validate(token.claims)
        except JoseError as exc:
            raise InvalidIdToken(type(exc).__name__) from exc
        claims = token.claims
        if claims["iat"] < now - MAX_ID_TOKEN_AGE - LEEWAY:
            raise InvalidIdToken("issued too long ago")
        aud = claims["aud"]
        if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != self.client_id:
            raise InvalidIdToken("azp")  # OpenID Connect Core §3.1.3.7, items 4 and 5
        got = claims.get("nonce")
        if not isinstance(got, str) or not hmac.compare_digest(got.encode(), nonce.encode()):
            raise InvalidIdToken("nonce")
        subject = claims["sub"]
        if not isinstance(subject, str) or not _printable(subject, MAX_SUBJECT_LENGTH):
            raise InvalidIdToken("sub is not a printable string of at most 255 characters")
        email = claims.get("email")
        if not isinstance(email, str) or "@" not in email:
            raise EmailNotVerified("The identity provider gave no email address.")
        if claims.get("email_verified") not in (True, "true"):
            raise EmailNotVerified("The email address is not verified by the identity provider.")
        if not _printable(email, MAX_EMAIL_LENGTH):
            # Control characters (NUL, newlines, terminal escapes) have no place in an address.
            raise SignInDenied("The identity provider gave an email address that cannot be used here.")
        name = claims.get("name")
        # A display name is kept, minus what is not printable (NUL would not even fit the column).
        name = "".join(c for c in name if c.isprintable()).strip()[:200] if isinstance(name, str) else ""
        return Identity(self.issuer, subject, email.strip().lower(), name)


def _import_keys(doc: Any) -> KeySet:
    """The provider's key set. Symmetric keys are left out: no ID token may be verified with one
    (`ID_TOKEN_ALGORITHMS`). A key joserfc calls weak (RSA under 2048 bits) refuses the whole set, the
    same way whatever the process's warning filters are."""
    if isinstance(doc, dict) and isinstance(doc.get("keys"), list):
        doc = {**doc, "keys": [k for k in doc["keys"] if not (isinstance(k, dict) and k.get("kty") == "oct")]}
    with warnings.catch_warnings():
        warnings.simplefilter("error", SecurityWarning)
        return KeySet.import_key_set(doc)


def _printable(value: str, max_length: int) -> bool:
    return 0 < len(value) <= max_length and value.isprintable()


def _has_kid(keys: KeySet, kid: str) -> bool:
    return any(key.kid == kid for key in keys)
