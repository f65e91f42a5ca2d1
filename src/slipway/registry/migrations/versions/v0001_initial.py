"""Models, versions, deployments and events.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from slipway.registry.db import BigId, NullableJSON, UtcDateTime

revision = "0001"
down_revision: str | None = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_models"),
        sa.UniqueConstraint("name", name="uq_models_name"),
    )
    op.create_table(
        "versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("format", sa.String(32), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("signature", sa.JSON(), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("profile", NullableJSON, nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("created_by", sa.String(256), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_versions"),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name="fk_versions_model_id_models"),
        sa.UniqueConstraint("model_id", "number", name="uq_versions_model_id_number"),
    )
    op.create_table(
        "deployments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("previous_version", sa.Integer(), nullable=True),
        sa.Column("batching", sa.JSON(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_deployments"),
        sa.UniqueConstraint("name", name="uq_deployments_name"),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name="fk_deployments_model_id_models"),
        sa.ForeignKeyConstraint(
            ["model_id", "version"],
            ["versions.model_id", "versions.number"],
            name="fk_deployments_version_versions",
        ),
        sa.ForeignKeyConstraint(
            ["model_id", "previous_version"],
            ["versions.model_id", "versions.number"],
            name="fk_deployments_previous_version_versions",
        ),
    )
    op.create_table(
        "events",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("actor", sa.String(256), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
    )
    op.create_index("ix_events_subject_id", "events", ["subject", "id"])


def downgrade() -> None:
    op.drop_index("ix_events_subject_id", table_name="events")
    op.drop_table("events")
    op.drop_table("deployments")
    op.drop_table("versions")
    op.drop_table("models")
