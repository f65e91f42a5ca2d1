"""Monitoring: alert rules added through the API, and alert events (firing, resolved).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from slipway.registry.db import BigId, UtcDateTime

revision = "0004"
down_revision: str | None = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert_rules",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("created_by", sa.String(256), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_alert_rules"),
    )
    op.create_table(
        "alert_events",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("deployment", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("threshold", sa.Double(), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alert_events"),
    )
    op.create_index("ix_alert_events_deployment_id", "alert_events", ["deployment", "id"])


def downgrade() -> None:
    op.drop_index("ix_alert_events_deployment_id", table_name="alert_events")
    op.drop_table("alert_events")
    op.drop_table("alert_rules")
