"""One-time sign-in links: `rampart login-link --email E`, and the first administrator's link.

A link carries a random token; only its SHA-256 is stored, so the table alone signs nobody in. A link
works once (it is marked used in the statement that checks it) and only for `LINK_TTL` seconds. A link
for a user signs that user in (while they are enabled and their role administers users); the first
administrator's link names nobody: used on a database that still has no enabled administrator, it
creates one with the email and name given, then signs them in.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rampart.access.actor import Roles
from rampart.access.impersonation import MANAGE_USERS
from rampart.access.system import system_actor
from rampart.db.pool import Database
from rampart.errors import Conflict, Unauthorized
from rampart.resources.context import Context

if TYPE_CHECKING:  # SQLAlchemy is loaded only to build migrations
    import sqlalchemy as sa

    from rampart.resources.manager import ResourceManager

LINK_TTL = 600  # seconds: ten minutes
SIGN_IN = "sign_in"
FIRST_ADMIN = "first_admin"
# Serializes the first administrator's creation: two links used at once must not make two.
_FIRST_ADMIN_LOCK = "SELECT pg_advisory_xact_lock(hashtext('rampart_first_admin'))"
_ANY_ADMIN = "SELECT EXISTS (SELECT 1 FROM users WHERE role = ANY($1::text[]) AND NOT disabled)"


class LoginLinkInvalid(Unauthorized):
    code = "login_link_invalid"
    title = "Sign-in link used or expired"


class AdminExists(Conflict):
    code = "admin_exists"
    title = "An administrator exists"


def define_login_links_table(metadata: sa.MetaData) -> sa.Table:
    import sqlalchemy as sa
    from sqlalchemy.dialects import postgresql as pg

    ts = pg.TIMESTAMP(timezone=True, precision=3)
    return sa.Table(
        "login_links",
        metadata,
        sa.Column("token_hash", sa.Text(), primary_key=True),
        sa.Column(
            "user_id", pg.UUID(as_uuid=True), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=True
        ),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("created_at", ts, nullable=False, server_default=sa.text("now()")),
        sa.Column("expires_at", ts, nullable=False),
        sa.Column("used_at", ts, nullable=True),
        sa.Index("login_links_expires_idx", "expires_at"),
    )


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class LoginLink:
    """What a valid link stands for: whom it signs in (None: the first administrator, to be created)."""

    purpose: str
    user_id: uuid.UUID | None
    email: str | None = None


async def create_link(
    db: Database, *, purpose: str, user_id: uuid.UUID | None = None, ttl: int = LINK_TTL
) -> str:
    """A new link's token (shown once: only its hash is kept). Expired links are cleared on the way."""
    if purpose not in (SIGN_IN, FIRST_ADMIN) or (purpose == SIGN_IN) == (user_id is None):
        raise ValueError("a sign-in link names its user; the first administrator's link names none")
    token = secrets.token_urlsafe(32)
    async with db.transaction() as conn:
        await conn.execute("DELETE FROM login_links WHERE expires_at < now() - interval '1 day'")
        await conn.execute(
            "INSERT INTO login_links (token_hash, user_id, purpose, expires_at)"
            " VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
            _hash(token),
            user_id,
            purpose,
            float(ttl),
        )
    return token


def _well_formed(token: str) -> bool:
    return 20 <= len(token) <= 100 and token.isascii()


async def peek_link(db: Database, token: str) -> LoginLink:
    """The link `token` names, if it is still usable; nothing is spent (the page that asks to confirm)."""
    row = None
    if _well_formed(token):
        row = await db.fetchrow(
            "SELECT l.purpose, l.user_id, u.email FROM login_links l LEFT JOIN users u ON u.id = l.user_id"
            " WHERE l.token_hash = $1 AND l.used_at IS NULL AND l.expires_at > now()",
            _hash(token),
        )
    if row is None:
        raise LoginLinkInvalid("This sign-in link was already used or has expired; ask for a new one.")
    return LoginLink(row["purpose"], row["user_id"], row["email"])


async def use_link(conn: Any, token: str) -> LoginLink:
    """Spend the link `token` (in the caller's transaction): a second use fails, as does a late one."""
    row = None
    if _well_formed(token):
        row = await conn.fetchrow(
            "UPDATE login_links SET used_at = now()"
            " WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now() RETURNING purpose, user_id",
            _hash(token),
        )
    if row is None:
        raise LoginLinkInvalid("This sign-in link was already used or has expired; ask for a new one.")
    return LoginLink(row["purpose"], row["user_id"])


async def has_admin(db: Any, roles: Roles) -> bool:
    """Whether an enabled user's role administers users (`db`: a Database or a connection)."""
    return bool(await db.fetchval(_ANY_ADMIN, list(roles.granting(MANAGE_USERS))))


async def create_first_admin(
    conn: Any, *, users: ResourceManager, roles: Roles, email: str, name: str
) -> dict[str, Any]:
    """The first administrator, through the users manager (its validation, its `users.created` event), in
    the caller's transaction; AdminExists once any enabled administrator exists."""
    await conn.execute(_FIRST_ADMIN_LOCK)
    if await has_admin(conn, roles):
        raise AdminExists("An administrator exists already: ask them for a sign-in link.")
    role = next(iter(roles.granting(MANAGE_USERS)), None)
    if role is None:
        raise AdminExists("No role administers users in this configuration (RAMPART_ROLE_PERMISSIONS).")
    ctx = Context(actor=system_actor(frozenset({MANAGE_USERS})))
    return await users.create(ctx, {"email": email, "name": name, "role": role})
