"""auth: spent refresh tokens, OpenID Connect identities, login states, signing keys

Revision ID: b4d81f0c6a2e
Revises: e79bdde3390e
Create Date: 2026-11-26 08:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = 'b4d81f0c6a2e'
down_revision: str | Sequence[str] | None = 'e79bdde3390e'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('spent_refresh_tokens',
    sa.Column('token_hash', sa.Text(), nullable=False),
    sa.Column('session_id', sa.UUID(), nullable=False),
    sa.Column('spent_at', postgresql.TIMESTAMP(timezone=True, precision=3), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['session_id'], ['sessions.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('token_hash')
    )
    op.create_index('spent_refresh_tokens_session_idx', 'spent_refresh_tokens', ['session_id'], unique=False)
    op.create_table('user_identities',
    sa.Column('issuer', sa.Text(), nullable=False),
    sa.Column('subject', sa.Text(), nullable=False),
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('email', sa.Text(), nullable=True),
    sa.Column('created_at', postgresql.TIMESTAMP(timezone=True, precision=3), server_default=sa.text('now()'), nullable=False),
    sa.Column('last_login_at', postgresql.TIMESTAMP(timezone=True, precision=3), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('issuer', 'subject')
    )
    op.create_index('user_identities_user_idx', 'user_identities', ['user_id'], unique=False)
    op.create_table('oidc_login_states',
    sa.Column('state_hash', sa.Text(), nullable=False),
    sa.Column('nonce', sa.Text(), nullable=False),
    sa.Column('code_verifier', sa.Text(), nullable=False),
    sa.Column('redirect_to', sa.Text(), nullable=True),
    sa.Column('expires_at', postgresql.TIMESTAMP(timezone=True, precision=3), nullable=False),
    sa.PrimaryKeyConstraint('state_hash')
    )
    op.create_index('oidc_login_states_expires_idx', 'oidc_login_states', ['expires_at'], unique=False)
    op.create_table('signing_keys',
    sa.Column('kid', sa.Text(), nullable=False),
    sa.Column('alg', sa.Text(), nullable=False),
    sa.Column('private_jwk', sa.Text(), nullable=False),
    sa.Column('created_at', postgresql.TIMESTAMP(timezone=True, precision=3), server_default=sa.text('now()'), nullable=False),
    sa.Column('retired_at', postgresql.TIMESTAMP(timezone=True, precision=3), nullable=True),
    sa.PrimaryKeyConstraint('kid')
    )


def downgrade() -> None:
    op.drop_table('signing_keys')
    op.drop_index('oidc_login_states_expires_idx', table_name='oidc_login_states')
    op.drop_table('oidc_login_states')
    op.drop_index('user_identities_user_idx', table_name='user_identities')
    op.drop_table('user_identities')
    op.drop_index('spent_refresh_tokens_session_idx', table_name='spent_refresh_tokens')
    op.drop_table('spent_refresh_tokens')
