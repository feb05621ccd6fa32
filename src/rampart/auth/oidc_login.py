"""Sign-in with an OpenID Connect provider: the login state, the redirect allow-list, linking users.

Each sign-in in progress is one row of `oidc_login_states`, keyed by the SHA-256 of its `state` and
holding the nonce and the PKCE verifier. The callback deletes the row as it reads it, so a state works
once, and only before it expires; it works across workers and instances because it lives in PostgreSQL.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from rampart.access.actor import Actor
from rampart.access.system import system_actor
from rampart.auth.oidc import (
    Identity,
    InvalidRedirect,
    InvalidState,
    OIDCClient,
    SignInDenied,
)
from rampart.auth.sessions import TokenPair, open_session
from rampart.auth.tokens import TokenIssuer
from rampart.db.pool import Database
from rampart.errors import Conflict, ValidationFailed
from rampart.resources.manager import Context, ResourceManager, Row

STATE_TTL = 600  # seconds a user has to sign in at the provider
MAX_REDIRECT_LENGTH = 2048


class AccountExists(Conflict):
    code = "account_exists"
    title = "Account exists"


@dataclass(frozen=True, slots=True)
class LoginState:
    nonce: str
    code_verifier: str
    redirect_to: str | None


def _state_key(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


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


async def start_login(*, db: Database, client: OIDCClient, redirect_to: str | None) -> str:
    """A new login state, and the provider's authorize URL for it."""
    state = secrets.token_urlsafe(32)
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
    return url


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
            return await users.get(Context(actor=_system()), row["user_id"])
        role = "admin" if identity.email in {e.strip().lower() for e in admin_emails} else "user"
        try:
            async with db.transaction() as conn:
                user = await users.create(
                    Context(actor=_system()), {"email": identity.email, "name": identity.name, "role": role}
                )
                await conn.execute(
                    "INSERT INTO user_identities (issuer, subject, user_id, email, last_login_at)"
                    " VALUES ($1, $2, $3, $4, now())",
                    identity.issuer,
                    identity.subject,
                    uuid.UUID(str(user["id"])),
                    identity.email,
                )
            if users.reads is not None:  # the new user's own first reads (/auth/me) must find them
                await users.reads.wrote(user["id"])
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


def _system() -> Actor:
    return system_actor(frozenset({"users:manage"}))
