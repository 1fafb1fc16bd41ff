"""runs.trainer and trials.runner: runs from users' scripts with knobs, trials their agents run

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("trainer", JSON, nullable=True))
    # Every trial stored before this revision trains a model builder recipe.
    with op.batch_alter_table("trials") as batch:
        batch.add_column(
            sa.Column("runner", sa.String(length=16), server_default="builder", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("trials") as batch:
        batch.drop_column("runner")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("trainer")
