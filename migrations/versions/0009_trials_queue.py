"""trials as the unit of work: status, lease, heartbeat, placement and who trained them

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Every trial stored before this revision is a finished training: 'done'.
    with op.batch_alter_table('trials') as batch:
        batch.add_column(sa.Column('status', sa.String(length=16), server_default='done', nullable=False))
        batch.add_column(sa.Column('rung', sa.String(length=32), server_default='', nullable=False))
        batch.add_column(sa.Column('wants_device', sa.String(length=16), server_default='auto', nullable=False))
        batch.add_column(sa.Column('gpus', sa.Integer(), server_default='1', nullable=False))
        batch.add_column(sa.Column('attempts', sa.Integer(), server_default='0', nullable=False))
        batch.add_column(sa.Column('max_attempts', sa.Integer(), server_default='3', nullable=False))
        batch.add_column(sa.Column('lease_owner', sa.String(length=128), nullable=True))
        batch.add_column(sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('stop_requested', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch.add_column(sa.Column('worker', sa.String(length=128), nullable=True))
        batch.add_column(sa.Column('started_at', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('error', sa.Text(), nullable=True))
        batch.create_index('ix_trials_status_created_at', ['status', 'created_at'])


def downgrade() -> None:
    with op.batch_alter_table('trials') as batch:
        batch.drop_index('ix_trials_status_created_at')
        for column in (
            'error', 'finished_at', 'started_at', 'worker', 'stop_requested', 'heartbeat_at',
            'lease_expires_at', 'lease_owner', 'max_attempts', 'attempts', 'gpus',
            'wants_device', 'rung', 'status',
        ):
            batch.drop_column(column)
