"""Rollouts and their state: the deployment's traffic split, rollouts, their events, evidence
windows from every replica, served request ids and feedback, and the controller lease.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from slipway.registry.db import BigId, NullableJSON, UtcDateTime

revision = "0003"
down_revision: str | None = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("traffic", NullableJSON, nullable=True))
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deployment", sa.String(64), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("strategy", sa.String(16), nullable=False),
        sa.Column("stable", sa.Integer(), nullable=False),
        sa.Column("candidate", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("analysis", NullableJSON, nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("step_started_at", UtcDateTime(), nullable=False),
        sa.Column("finished_at", UtcDateTime(), nullable=True),
        sa.Column("created_by", sa.String(256), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_rollouts"),
    )
    op.create_index("ix_rollouts_deployment_status", "rollouts", ["deployment", "status"])
    op.create_table(
        "rollout_events",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("rollout_id", sa.Integer(), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(256), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rollout_events"),
        sa.ForeignKeyConstraint(
            ["rollout_id"], ["rollouts.id"], name="fk_rollout_events_rollout_id_rollouts"
        ),
    )
    op.create_index("ix_rollout_events_rollout_id_id", "rollout_events", ["rollout_id", "id"])
    op.create_table(
        "rollout_windows",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("rollout_id", sa.Integer(), nullable=False),
        sa.Column("replica", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rollout_windows"),
        sa.ForeignKeyConstraint(
            ["rollout_id"], ["rollouts.id"], name="fk_rollout_windows_rollout_id_rollouts"
        ),
    )
    op.create_index("ix_rollout_windows_rollout_id_at", "rollout_windows", ["rollout_id", "at"])
    op.create_table(
        "served_requests",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("rollout_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_served_requests"),
        sa.ForeignKeyConstraint(
            ["rollout_id"], ["rollouts.id"], name="fk_served_requests_rollout_id_rollouts"
        ),
    )
    op.create_index("ix_served_requests_request_id", "served_requests", ["request_id"])
    op.create_table(
        "feedback",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("values", sa.JSON(), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("actor", sa.String(256), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_feedback"),
    )
    op.create_index("ix_feedback_request_id", "feedback", ["request_id"])
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_leases"),
    )


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_index("ix_feedback_request_id", table_name="feedback")
    op.drop_table("feedback")
    op.drop_index("ix_served_requests_request_id", table_name="served_requests")
    op.drop_table("served_requests")
    op.drop_index("ix_rollout_windows_rollout_id_at", table_name="rollout_windows")
    op.drop_table("rollout_windows")
    op.drop_index("ix_rollout_events_rollout_id_id", table_name="rollout_events")
    op.drop_table("rollout_events")
    op.drop_index("ix_rollouts_deployment_status", table_name="rollouts")
    op.drop_table("rollouts")
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("traffic")
