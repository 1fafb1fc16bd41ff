"""runs.idempotency_fingerprint: the request an idempotency key was first used for

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable: runs stored before it have none, and their key answers them whatever the body.
    with op.batch_alter_table('runs') as batch:
        batch.add_column(sa.Column('idempotency_fingerprint', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('runs') as batch:
        batch.drop_column('idempotency_fingerprint')
