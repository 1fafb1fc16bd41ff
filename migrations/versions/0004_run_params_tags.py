"""runs.params and run_tags: hyperparameters and free tags of a run

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('params', JSON, server_default='{}', nullable=False))

    op.create_table('run_tags',
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('tag', sa.String(length=64), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('run_id', 'tag')
    )
    with op.batch_alter_table('run_tags', schema=None) as batch_op:
        batch_op.create_index('ix_run_tags_tag_run_id', ['tag', 'run_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('run_tags', schema=None) as batch_op:
        batch_op.drop_index('ix_run_tags_tag_run_id')

    op.drop_table('run_tags')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('params')
