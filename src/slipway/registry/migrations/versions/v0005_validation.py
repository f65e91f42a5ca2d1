"""Validation reports stored on versions (JSON report and HTML page).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from slipway.registry.db import BigId, UtcDateTime

revision = "0005"
down_revision: str | None = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "validation_reports",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("policy", sa.String(64), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("html", sa.Text(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("created_by", sa.String(256), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_validation_reports"),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name="fk_validation_reports_model_id_models"
        ),
        sa.ForeignKeyConstraint(
            ["model_id", "version"],
            ["versions.model_id", "versions.number"],
            name="fk_validation_reports_version_versions",
        ),
    )
    op.create_index(
        "ix_validation_reports_model_id_version", "validation_reports", ["model_id", "version"]
    )


def downgrade() -> None:
    op.drop_index("ix_validation_reports_model_id_version", table_name="validation_reports")
    op.drop_table("validation_reports")
