"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table('projects',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('api_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('prefix', sa.String(length=12), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_hash')
    )
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_tokens_project_id'), ['project_id'], unique=False)

    op.create_table('runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('parent_id', sa.Integer(), nullable=True),
    sa.Column('applied_rung', sa.String(length=32), nullable=True),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('task', sa.String(length=32), nullable=False),
    sa.Column('recipe', JSON, nullable=True),
    sa.Column('model_facts', JSON, nullable=False),
    sa.Column('data_facts', JSON, nullable=False),
    sa.Column('constraints', JSON, nullable=False),
    sa.Column('metric_name', sa.String(length=64), nullable=True),
    sa.Column('metric_higher_is_better', sa.Boolean(), nullable=True),
    sa.Column('epochs', JSON, nullable=False),
    sa.Column('n_epochs', sa.Integer(), nullable=False),
    sa.Column('verdict', sa.String(length=32), nullable=False),
    sa.Column('rung', sa.String(length=32), nullable=True),
    sa.Column('diagnosis', JSON, nullable=False),
    sa.Column('recommendation', JSON, nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['parent_id'], ['runs.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.create_index('ix_runs_created_at', ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_runs_parent_id'), ['parent_id'], unique=False)
        batch_op.create_index('ix_runs_project_id_id', ['project_id', 'id'], unique=False)
        batch_op.create_index('ix_runs_rung', ['rung'], unique=False)
        batch_op.create_index('ix_runs_verdict', ['verdict'], unique=False)

    op.create_table('verifications',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('rung', sa.String(length=32), nullable=False),
    sa.Column('level', sa.Integer(), nullable=True),
    sa.Column('candidate_recipe', JSON, nullable=False),
    sa.Column('seeds', JSON, nullable=False),
    sa.Column('epochs', sa.Integer(), nullable=True),
    sa.Column('device', sa.String(length=16), nullable=False),
    sa.Column('budget', JSON, nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('max_attempts', sa.Integer(), nullable=False),
    sa.Column('lease_owner', sa.String(length=128), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('progress', JSON, nullable=False),
    sa.Column('result', JSON, nullable=True),
    sa.Column('verdict', sa.String(length=16), nullable=True),
    sa.Column('effect', sa.Float(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('verifications', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_verifications_run_id'), ['run_id'], unique=False)
        batch_op.create_index('ix_verifications_status_created_at', ['status', 'created_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('verifications', schema=None) as batch_op:
        batch_op.drop_index('ix_verifications_status_created_at')
        batch_op.drop_index(batch_op.f('ix_verifications_run_id'))

    op.drop_table('verifications')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_index('ix_runs_verdict')
        batch_op.drop_index('ix_runs_rung')
        batch_op.drop_index('ix_runs_project_id_id')
        batch_op.drop_index(batch_op.f('ix_runs_parent_id'))
        batch_op.drop_index('ix_runs_created_at')

    op.drop_table('runs')
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_tokens_project_id'))

    op.drop_table('api_tokens')
    op.drop_table('projects')
