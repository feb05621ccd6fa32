"""Sign-in with an OpenID Connect provider: the login state, the redirect allow-list, linking users.

Each sign-in in progress is one row of `oidc_login_states`, keyed by the SHA-256 of its `state` and
holding the nonce and the PKCE verifier. The callback deletes the row as it reads it, so a state works
once, and only before it expires; it works across workers and instances because it lives in PostgreSQL.

A sign-in is also bound to the browser that started it (against login CSRF: an attacker's callback URL,
with the attacker's code and state, opened in a victim's browser would sign the victim into the
attacker's account). The login sets a random secret in a short-lived cookie of that browser, one per
sign-in, sent only to the callback; the state ends with an HMAC of its random part under that secret.
The callback checks the HMAC before it touches the state, so another browser's visit consumes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from rampart.access.system import system_actor
from rampart.auth.oidc import Identity, InvalidRedirect, InvalidState, OIDCClient, SignInDenied
from rampart.auth.sessions import TokenPair, open_session
from rampart.auth.tokens import TokenIssuer
from rampart.db.pool import Database
from rampart.errors import Conflict, Forbidden, ValidationFailed
from rampart.resources.manager import Context, ResourceManager, Row

STATE_TTL = 600  # seconds a user has to sign in at the provider
MAX_REDIRECT_LENGTH = 2048
BROWSER_COOKIE_PREFIX = "rampart_signin_"
_SYSTEM = system_actor(frozenset({"users:manage"}))  # links and creates users at sign-in
_COOKIE_ID = 16  # characters of the state's random part that name its cookie: sign-ins in two tabs coexist


class AccountExists(Conflict, code="account_exists", title="Account exists"): ...


class SignInElsewhere(
    Forbidden, code="sign_in_browser_mismatch", title="Sign-in started in another browser"
): ...


@dataclass(frozen=True, slots=True)
class BrowserBinding:
    """The cookie that ties a sign-in to the browser that started it: its name and secret value."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class LoginState:
    nonce: str
    code_verifier: str
    redirect_to: str | None


def _state_key(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


def _cookie_name(nonce_part: str) -> str:
    return BROWSER_COOKIE_PREFIX + nonce_part[:_COOKIE_ID]


def _browser_tag(browser_secret: str, nonce_part: str) -> str:
    mac = hmac.new(browser_secret.encode(), nonce_part.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def check_browser(state: str, cookies: Mapping[str, str]) -> None:
    """Refuse `state` unless this browser holds the cookie of the sign-in that made it (nothing is read
    or consumed here: the state stays usable by the browser it belongs to)."""
    random_part, dot, tag = state.partition(".")
    if not dot or not random_part or len(state) > 512:
        raise InvalidState("The sign-in state is missing or invalid; start the sign-in again.")
    secret = cookies.get(_cookie_name(random_part))
    if not secret or not hmac.compare_digest(_browser_tag(secret, random_part).encode(), tag.encode()):
        raise SignInElsewhere(
            "This sign-in was not started in this browser (or its cookie was blocked or has expired);"
            " start the sign-in again here."
        )


def check_redirect(url: str, allowlist: Sequence[str]) -> str:
    """`url` if it is on the allow-list (same scheme, host and port, path under the entry's path)."""
    if len(url) > MAX_REDIRECT_LENGTH or any(c in url for c in "\\\r\n\t ") or not url.isprintable():
        raise InvalidRedirect("redirect_to is not an allowed URL.")
    try:
        target = urlsplit(url)
        port = target.port
    except ValueError:
        raise InvalidRedirect("redirect_to is not an allowed URL.") from None
    if target.scheme not in ("https", "http") or not target.hostname or "@" in target.netloc:
        raise InvalidRedirect("redirect_to is not an allowed URL.")
    lowered = target.path.lower()
    if "/." in lowered or "%2e" in lowered or "%2f" in lowered or "%5c" in lowered:
        raise InvalidRedirect("redirect_to is not an allowed URL.")  # dot segments move out of a prefix
    if target.fragment:
        raise InvalidRedirect("redirect_to must not have a fragment: the tokens are sent in it.")
    for entry in allowlist:
        allowed = urlsplit(entry)
        if (
            allowed.scheme == target.scheme
            and allowed.hostname == target.hostname
            and _port(allowed.scheme, allowed.port) == _port(target.scheme, port)
            and _under(target.path or "/", allowed.path or "/")
        ):
            return url
    raise InvalidRedirect("redirect_to is not an allowed URL.")


def _port(scheme: str, port: int | None) -> int:
    return port if port is not None else (443 if scheme == "https" else 80)


def _under(path: str, prefix: str) -> bool:
    if path == prefix or prefix == "/":
        return True
    return path.startswith(prefix if prefix.endswith("/") else prefix + "/")


async def start_login(
    *, db: Database, client: OIDCClient, redirect_to: str | None
) -> tuple[str, BrowserBinding]:
    """A new login state: the provider's authorize URL for it, and the cookie the browser must keep."""
    random_part, browser_secret = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    state = f"{random_part}.{_browser_tag(browser_secret, random_part)}"
    nonce = secrets.token_urlsafe(32)
    verifier = secrets.token_urlsafe(64)  # 86 characters: RFC 7636 wants 43 to 128
    # Asked first: a provider that is down fails here, before a row is written.
    url = await client.authorize_url(state=state, nonce=nonce, code_verifier=verifier)
    async with db.transaction() as conn:
        await conn.execute("DELETE FROM oidc_login_states WHERE expires_at < now()")
        await conn.execute(
            "INSERT INTO oidc_login_states (state_hash, nonce, code_verifier, redirect_to, expires_at)"
            " VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))",
            _state_key(state),
            nonce,
            verifier,
            redirect_to,
            float(STATE_TTL),
        )
    return url, BrowserBinding(_cookie_name(random_part), browser_secret)


async def take_state(db: Database, state: str) -> LoginState:
    """The login state named by `state`, consumed: a second call with it fails."""
    if not state or len(state) > 512:
        raise InvalidState("The sign-in state is missing or invalid; start the sign-in again.")
    row = await db.fetchrow(
        "DELETE FROM oidc_login_states WHERE state_hash = $1"
        " RETURNING nonce, code_verifier, redirect_to, expires_at > now() AS live",
        _state_key(state),
    )
    if row is None or not row["live"]:
        raise InvalidState("The sign-in state is unknown, used or expired; start the sign-in again.")
    return LoginState(row["nonce"], row["code_verifier"], row["redirect_to"])


async def link_user(
    *, db: Database, users: ResourceManager, identity: Identity, admin_emails: Sequence[str]
) -> Row:
    """The user of this provider account, created on its first sign-in. Never matched by email."""
    for _ in range(2):
        row = await db.fetchrow(
            "UPDATE user_identities SET last_login_at = now(), email = $3"
            " WHERE issuer = $1 AND subject = $2 RETURNING user_id",
            identity.issuer,
            identity.subject,
            identity.email,
        )
        if row is not None:
            return await users.get(Context(actor=_SYSTEM), row["user_id"])
        role = "admin" if identity.email in {e.strip().lower() for e in admin_emails} else "user"
        try:
            async with db.transaction() as conn:
                user = await users.create(
                    Context(actor=_SYSTEM), {"email": identity.email, "name": identity.name, "role": role}
                )
                await conn.execute(
                    "INSERT INTO user_identities (issuer, subject, user_id, email, last_login_at)"
                    " VALUES ($1, $2, $3, $4, now())",
                    identity.issuer,
                    identity.subject,
                    uuid.UUID(str(user["id"])),
                    identity.email,
                )
            if users.replicas is not None:  # the new user's own first reads (/auth/me) must find them
                await users.replicas.wrote(user["id"])
            return user
        except ValidationFailed:
            raise SignInDenied("This account of the identity provider cannot be used here.") from None
        except Conflict:
            # Either the same account signed in twice at once (the loop finds the other's link), or
            # someone else's user has this email: linking by email would hand that user over.
            continue
    raise AccountExists(
        "A user with this email address exists and is not linked to this sign-in; an administrator must"
        " link or remove it first."
    )


async def open_login_session(
    *,
    db: Database,
    tokens: TokenIssuer,
    user: Row,
    session_ttl: int,
    user_agent: str | None,
    ip: str | None,
) -> TokenPair:
    user_id = uuid.UUID(str(user["id"]))
    async with db.transaction() as conn:
        # Locked, so a concurrent disable cannot slip between the check and the new session.
        state = await conn.fetchrow("SELECT disabled, role FROM users WHERE id = $1 FOR SHARE", user_id)
        if state is None or state["disabled"]:
            raise SignInDenied("This account is disabled.")
        return await open_session(
            conn,
            tokens,
            user_id=user_id,
            role=state["role"],
            session_ttl=session_ttl,
            user_agent=user_agent,
            ip=ip,
        )
