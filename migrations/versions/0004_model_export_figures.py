"""TFLite exports: interpreter dtypes, bundle, p95 latency, test image count, details.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("model_exports", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("input_dtype", sa.String(length=16), nullable=False, server_default="float32")
        )
        batch_op.add_column(
            sa.Column(
                "output_dtype", sa.String(length=16), nullable=False, server_default="float32"
            )
        )
        batch_op.add_column(sa.Column("bundle_path", sa.String(length=1024), nullable=True))
        batch_op.add_column(sa.Column("test_images", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("latency_p95_ms", sa.Float(), nullable=True))
        batch_op.add_column(
            sa.Column("details", sa.JSON(), nullable=False, server_default=sa.text("'{}'"))
        )


def downgrade() -> None:
    with op.batch_alter_table("model_exports", schema=None) as batch_op:
        batch_op.drop_column("details")
        batch_op.drop_column("latency_p95_ms")
        batch_op.drop_column("test_images")
        batch_op.drop_column("bundle_path")
        batch_op.drop_column("output_dtype")
        batch_op.drop_column("input_dtype")
