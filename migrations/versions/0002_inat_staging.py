"""iNaturalist open-data staging: taxa, observations, photos, observers; stable observation keys.

The four `inat_*` staging tables are replaced wholesale by each ingest; `inat_observation_keys`
gives every selected observation a stable integer (what `images.observation_id` holds).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "inat_taxa",
        sa.Column("taxon_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("ancestry", sa.Text(), nullable=True),
        sa.Column("rank_level", sa.Float(), nullable=True),
        sa.Column("rank", sa.String(length=32), nullable=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("taxon_id", name=op.f("pk_inat_taxa")),
    )
    with op.batch_alter_table("inat_taxa", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_inat_taxa_name"), ["name"], unique=False)

    op.create_table(
        "inat_observations",
        sa.Column("observation_uuid", sa.String(length=36), nullable=False),
        sa.Column("observer_id", sa.BigInteger(), nullable=True),
        sa.Column("latitude", sa.Float(), nullable=True),
        sa.Column("longitude", sa.Float(), nullable=True),
        sa.Column("positional_accuracy", sa.Integer(), nullable=True),
        sa.Column("taxon_id", sa.BigInteger(), nullable=True),
        sa.Column("quality_grade", sa.String(length=32), nullable=True),
        sa.Column("observed_on", sa.Date(), nullable=True),
        sa.Column("anomaly_score", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("observation_uuid", name=op.f("pk_inat_observations")),
    )
    with op.batch_alter_table("inat_observations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_inat_observations_taxon_id"), ["taxon_id"], unique=False
        )

    op.create_table(
        "inat_photos",
        sa.Column("observation_uuid", sa.String(length=36), nullable=False),
        sa.Column("photo_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("photo_uuid", sa.String(length=36), nullable=False),
        sa.Column("observer_id", sa.BigInteger(), nullable=True),
        sa.Column("extension", sa.String(length=16), nullable=True),
        sa.Column("license", sa.String(length=32), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("position", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("observation_uuid", "photo_id", name=op.f("pk_inat_photos")),
    )

    op.create_table(
        "inat_observers",
        sa.Column("observer_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("login", sa.Text(), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("observer_id", name=op.f("pk_inat_observers")),
    )

    op.create_table(
        "inat_observation_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("observation_uuid", sa.String(length=36), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inat_observation_keys")),
    )
    with op.batch_alter_table("inat_observation_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_inat_observation_keys_observation_uuid"),
            ["observation_uuid"],
            unique=True,
        )


def downgrade() -> None:
    with op.batch_alter_table("inat_observation_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inat_observation_keys_observation_uuid"))
    op.drop_table("inat_observation_keys")

    op.drop_table("inat_observers")
    op.drop_table("inat_photos")

    with op.batch_alter_table("inat_observations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inat_observations_taxon_id"))
    op.drop_table("inat_observations")

    with op.batch_alter_table("inat_taxa", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inat_taxa_name"))
    op.drop_table("inat_taxa")
