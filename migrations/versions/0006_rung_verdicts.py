"""rung_verdicts: one row per rung a finished verification judged (races judge several)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'rung_verdicts',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('verification_id', sa.Integer(), nullable=False),
        sa.Column('run_id', sa.Integer(), nullable=False),
        sa.Column('project_id', sa.Integer(), nullable=False),
        sa.Column('rung', sa.String(length=32), nullable=False),
        sa.Column('verdict', sa.String(length=16), nullable=False),
        sa.Column('effect', sa.Float(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['verification_id'], ['verifications.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index(
        'ux_rung_verdicts_verification_rung', 'rung_verdicts', ['verification_id', 'rung'],
        unique=True,
    )
    op.create_index('ix_rung_verdicts_project_rung', 'rung_verdicts', ['project_id', 'rung'])
    op.create_index('ix_rung_verdicts_run_id', 'rung_verdicts', ['run_id'])
    # Verdicts stored before this table: one rung each.
    op.execute(
        "INSERT INTO rung_verdicts (verification_id, run_id, project_id, rung, verdict, effect,"
        " created_at) SELECT v.id, v.run_id, r.project_id, v.rung, v.verdict, v.effect,"
        " COALESCE(v.finished_at, v.created_at) FROM verifications v JOIN runs r ON r.id = v.run_id"
        " WHERE v.verdict IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_index('ix_rung_verdicts_run_id', table_name='rung_verdicts')
    op.drop_index('ix_rung_verdicts_project_rung', table_name='rung_verdicts')
    op.drop_index('ux_rung_verdicts_verification_rung', table_name='rung_verdicts')
    op.drop_table('rung_verdicts')
