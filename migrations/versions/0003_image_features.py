"""Curation feature cache: one vector per (image, extractor).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "image_features",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("extractor", sa.String(length=64), nullable=False),
        sa.Column("dims", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["images.id"],
            name=op.f("fk_image_features_image_id_images"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_image_features")),
        sa.UniqueConstraint("image_id", "extractor", name="uq_image_features_image_extractor"),
    )
    with op.batch_alter_table("image_features", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_image_features_image_id"), ["image_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("image_features", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_image_features_image_id"))
    op.drop_table("image_features")
