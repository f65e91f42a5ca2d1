"""Identities, tokens, approvals and the audit chain.

Adds ``deployments.production`` and ``deployments.inference``; the tables ``users``, ``tokens``,
``approval_policies``, ``evidence_reports``, ``promotion_requests``, ``promotion_decisions``,
``audit_records`` and ``audit_purges``; triggers that refuse UPDATE and DELETE on the two audit
tables (DELETE only of a purged prefix of ``audit_records``); and chains the events written
before this revision into the audit log, so the history starts at the first event.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from slipway.registry.audit import GENESIS, chain, control_entry
from slipway.registry.db import BigId, UtcDateTime

revision = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None

_AUDIT_TABLES = ("audit_records", "audit_purges")

_SQLITE_TRIGGERS = [
    """CREATE TRIGGER audit_records_no_update BEFORE UPDATE ON audit_records
    BEGIN SELECT RAISE(ABORT, 'audit_records is append-only: UPDATE refused'); END""",
    """CREATE TRIGGER audit_records_no_delete BEFORE DELETE ON audit_records
    WHEN OLD.seq > (SELECT COALESCE(MAX(through_seq), 0) FROM audit_purges)
    BEGIN SELECT RAISE(ABORT, 'audit_records is append-only: DELETE refused'); END""",
    """CREATE TRIGGER audit_purges_no_update BEFORE UPDATE ON audit_purges
    BEGIN SELECT RAISE(ABORT, 'audit_purges is append-only: UPDATE refused'); END""",
    """CREATE TRIGGER audit_purges_no_delete BEFORE DELETE ON audit_purges
    BEGIN SELECT RAISE(ABORT, 'audit_purges is append-only: DELETE refused'); END""",
]

_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION slipway_audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'audit_records' THEN
        IF OLD.seq <= (SELECT COALESCE(MAX(through_seq), 0) FROM audit_purges) THEN
            RETURN OLD;
        END IF;
    END IF;
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""


def _pg_triggers(table: str) -> list[str]:
    return [
        f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}"
        " FOR EACH ROW EXECUTE FUNCTION slipway_audit_append_only()",
        f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}"
        " FOR EACH STATEMENT EXECUTE FUNCTION slipway_audit_append_only()",
    ]


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(
            sa.Column("production", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch.add_column(
            sa.Column("inference", sa.JSON(), server_default=sa.text("'{}'"), nullable=False)
        )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("created_by", sa.String(256), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("name", name="uq_users_name"),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("description", sa.String(200), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("created_by", sa.String(256), nullable=True),
        sa.Column("expires_at", UtcDateTime(), nullable=True),
        sa.Column("revoked_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_tokens"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_tokens_user_id_users"),
        sa.UniqueConstraint("hash", name="uq_tokens_hash"),
    )
    op.create_table(
        "approval_policies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("approvals", sa.Integer(), nullable=False),
        sa.Column("require_validation", sa.Boolean(), nullable=False),
        sa.Column("required_checks", sa.JSON(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(256), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_approval_policies"),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name="fk_approval_policies_model_id_models"
        ),
        sa.UniqueConstraint("model_id", name="uq_approval_policies_model_id"),
    )
    op.create_table(
        "evidence_reports",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("created_by", sa.String(256), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_evidence_reports"),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name="fk_evidence_reports_model_id_models"
        ),
        sa.ForeignKeyConstraint(
            ["model_id", "version"],
            ["versions.model_id", "versions.number"],
            name="fk_evidence_reports_version_versions",
        ),
    )
    op.create_index(
        "ix_evidence_reports_model_id_version", "evidence_reports", ["model_id", "version"]
    )
    op.create_table(
        "promotion_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deployment", sa.String(64), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("evidence_digest", sa.String(64), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("approvals_required", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("requested_by", sa.String(256), nullable=False),
        sa.Column("requested_at", UtcDateTime(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("decided_at", UtcDateTime(), nullable=True),
        sa.Column("promoted_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_promotion_requests"),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name="fk_promotion_requests_model_id_models"
        ),
        sa.ForeignKeyConstraint(
            ["model_id", "version"],
            ["versions.model_id", "versions.number"],
            name="fk_promotion_requests_version_versions",
        ),
    )
    op.create_index(
        "ix_promotion_requests_deployment_version",
        "promotion_requests",
        ["deployment", "version"],
    )
    op.create_table(
        "promotion_decisions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("evidence_digest", sa.String(64), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_promotion_decisions"),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["promotion_requests.id"],
            name="fk_promotion_decisions_request_id_promotion_requests",
        ),
        sa.UniqueConstraint("request_id", "actor", name="uq_promotion_decisions_request_id_actor"),
    )
    op.create_table(
        "audit_records",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(256), nullable=True),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("deployment", sa.String(64), nullable=True),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_records"),
    )
    op.create_index("ix_audit_records_request_id", "audit_records", ["request_id"])
    op.create_index("ix_audit_records_deployment_at", "audit_records", ["deployment", "at"])
    op.create_table(
        "audit_purges",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("through_seq", sa.BigInteger(), nullable=False),
        sa.Column("anchor_hash", sa.String(64), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("actor", sa.String(256), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_purges"),
    )
    _chain_existing_events()
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        for table in _AUDIT_TABLES:
            for statement in _pg_triggers(table):
                op.execute(statement)
    else:
        for statement in _SQLITE_TRIGGERS:
            op.execute(statement)


def _chain_existing_events() -> None:
    """Append the events written before this revision to the new, empty audit chain."""
    events = sa.table(
        "events",
        sa.column("id", sa.Integer()),
        sa.column("at", UtcDateTime()),
        sa.column("kind", sa.String()),
        sa.column("subject", sa.String()),
        sa.column("actor", sa.String()),
        sa.column("data", sa.JSON()),
    )
    audit = sa.table(
        "audit_records",
        sa.column("seq", sa.BigInteger()),
        sa.column("at", UtcDateTime()),
        *(
            sa.column(name, sa.String())
            for name in ("kind", "action", "actor", "subject", "deployment", "request_id")
        ),
        sa.column("data", sa.Text()),
        sa.column("prev_hash", sa.String()),
        sa.column("hash", sa.String()),
    )
    entries = [
        control_entry(event.at, event.kind, event.subject, event.actor, event.data)
        for event in op.get_bind().execute(sa.select(events).order_by(events.c.id))
    ]
    if entries:
        op.get_bind().execute(sa.insert(audit), chain(0, GENESIS, entries))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in _AUDIT_TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        op.execute("DROP FUNCTION IF EXISTS slipway_audit_append_only()")
    else:
        for name in (
            "audit_records_no_update",
            "audit_records_no_delete",
            "audit_purges_no_update",
            "audit_purges_no_delete",
        ):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table("audit_purges")
    op.drop_index("ix_audit_records_deployment_at", table_name="audit_records")
    op.drop_index("ix_audit_records_request_id", table_name="audit_records")
    op.drop_table("audit_records")
    op.drop_table("promotion_decisions")
    op.drop_index("ix_promotion_requests_deployment_version", table_name="promotion_requests")
    op.drop_table("promotion_requests")
    op.drop_index("ix_evidence_reports_model_id_version", table_name="evidence_reports")
    op.drop_table("evidence_reports")
    op.drop_table("approval_policies")
    op.drop_table("tokens")
    op.drop_table("users")
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("inference")
        batch.drop_column("production")
