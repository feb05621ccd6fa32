"""Tables of the auth domain: sessions, spent refresh tokens, provider identities, login states,
asymmetric signing keys."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

_TS = pg.TIMESTAMP(timezone=True, precision=3)
_UUID = pg.UUID(as_uuid=True)


def _fk(name: str, target: str, *, ondelete: str = "CASCADE", nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, _UUID, sa.ForeignKey(target, ondelete=ondelete), nullable=nullable)


def _when_set(name: str, column: str) -> sa.Index:
    return sa.Index(name, column, postgresql_where=sa.text(f"{column} IS NOT NULL"))


def define_auth_tables(metadata: sa.MetaData) -> None:
    """Declare the tables; `users` must already be in `metadata`."""
    sa.Table(
        "sessions",
        metadata,
        sa.Column("id", _UUID, primary_key=True),
        _fk("user_id", "users.id"),
        sa.Column("refresh_token_hash", sa.Text(), nullable=True),
        _fk("impersonator_id", "users.id", ondelete="SET NULL", nullable=True),
        # The impersonator's own session, which opened this one: it lives only as long as that one does.
        _fk("impersonator_session_id", "sessions.id", nullable=True),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.Column("ip", sa.Text(), nullable=True),
        sa.Column("created_at", _TS, nullable=False, server_default=sa.text("now()")),
        sa.Column("last_used_at", _TS, nullable=True),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("revoked_at", _TS, nullable=True),
        sa.Index("sessions_user_active_idx", "user_id", postgresql_where=sa.text("revoked_at IS NULL")),
        sa.Index("sessions_refresh_idx", "refresh_token_hash", unique=True),
        # Impersonation sessions are few: by impersonator (their list, revoked on demotion) and by the
        # session that opened them (the cascade when it is deleted).
        _when_set("sessions_impersonator_idx", "impersonator_id"),
        _when_set("sessions_impersonator_session_idx", "impersonator_session_id"),
    )
    # Hashes of refresh tokens already exchanged: presenting one again is a reuse (theft) signal.
    sa.Table(
        "spent_refresh_tokens",
        metadata,
        sa.Column("token_hash", sa.Text(), primary_key=True),
        _fk("session_id", "sessions.id"),
        sa.Column("spent_at", _TS, nullable=False, server_default=sa.text("now()")),
        sa.Index("spent_refresh_tokens_session_idx", "session_id"),
    )
    # Users are linked to an OpenID Connect account by (issuer, subject), never by email.
    sa.Table(
        "user_identities",
        metadata,
        sa.Column("issuer", sa.Text(), primary_key=True),
        sa.Column("subject", sa.Text(), primary_key=True),
        _fk("user_id", "users.id"),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column("created_at", _TS, nullable=False, server_default=sa.text("now()")),
        sa.Column("last_login_at", _TS, nullable=True),
        sa.Index("user_identities_user_idx", "user_id"),
    )
    # One row per sign-in in progress: single use (deleted when read) and short-lived.
    sa.Table(
        "oidc_login_states",
        metadata,
        sa.Column("state_hash", sa.Text(), primary_key=True),
        sa.Column("nonce", sa.Text(), nullable=False),
        sa.Column("code_verifier", sa.Text(), nullable=False),
        sa.Column("redirect_to", sa.Text(), nullable=True),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Index("oidc_login_states_expires_idx", "expires_at"),
    )
    # Asymmetric access-token keys (EdDSA or RS256 mode): the newest unretired one signs; a retired one
    # still verifies until the tokens it signed have expired.
    sa.Table(
        "signing_keys",
        metadata,
        sa.Column("kid", sa.Text(), primary_key=True),
        sa.Column("alg", sa.Text(), nullable=False),
        sa.Column("private_jwk", sa.Text(), nullable=False),
        sa.Column("created_at", _TS, nullable=False, server_default=sa.text("now()")),
        sa.Column("retired_at", _TS, nullable=True),
    )
