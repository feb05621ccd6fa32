"""Tables of the auth domain beside `sessions`: spent refresh tokens, provider identities, login states,
asymmetric signing keys."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

_TS = pg.TIMESTAMP(timezone=True, precision=3)


def define_auth_tables(metadata: sa.MetaData) -> None:
    """Declare the tables; `sessions` and `users` must already be in `metadata`."""
    # Hashes of refresh tokens already exchanged: presenting one again is a reuse (theft) signal.
    sa.Table(
        "spent_refresh_tokens",
        metadata,
        sa.Column("token_hash", sa.Text(), primary_key=True),
        sa.Column(
            "session_id",
            pg.UUID(as_uuid=True),
            sa.ForeignKey("sessions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("spent_at", _TS, nullable=False, server_default=sa.text("now()")),
        sa.Index("spent_refresh_tokens_session_idx", "session_id"),
    )
    # Users are linked to an OpenID Connect account by (issuer, subject), never by email.
    sa.Table(
        "user_identities",
        metadata,
        sa.Column("issuer", sa.Text(), primary_key=True),
        sa.Column("subject", sa.Text(), primary_key=True),
        sa.Column(
            "user_id", pg.UUID(as_uuid=True), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
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
