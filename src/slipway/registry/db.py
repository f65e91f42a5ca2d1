"""The registry's tables, as SQLAlchemy declarative classes, and the engine they live behind.

These classes stay inside the registry: :class:`~slipway.registry.store.SqlStore` turns rows into
the plain records of :mod:`slipway.registry.records` before anything leaves it. JSON columns hold
``msgspec.to_builtins`` output of those records. Schema changes go through a new Alembic revision
in ``migrations/versions/``; the classes here describe the head revision.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Double,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    event,
    false,
    text,
)
from sqlalchemy.engine import (
    URL,
    Connection,
    Dialect,
    Engine,
    ExceptionContext,
    create_engine,
    make_url,
)
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool
from sqlalchemy.types import TypeDecorator

from slipway.errors import InvalidInput, RegistryUnavailable, SlipwayError

_BUSY_TIMEOUT_S = 30

# Connections carrying this execution option are about to write: on SQLite they start with
# BEGIN IMMEDIATE (see store.py), so concurrent writers queue instead of failing mid-transaction.
WRITE_OPTION = "slipway_write"

# Deterministic constraint names, so migrations can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so the value is stored as naive
    UTC and made aware again on the way out. Naive datetimes are refused on the way in: guessing
    their zone is how timestamps end up hours off.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware UTC datetime")
        try:
            value = value.astimezone(dt.UTC)
        except OverflowError:  # 0001-01-01 east of UTC, 9999-12-31 west of it
            raise InvalidInput(
                f"time {value.isoformat()} is out of range: in UTC it falls before year 1 or"
                " after year 9999"
            ) from None
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


# SQLite only aliases the rowid (and so autoincrements) for a column typed exactly INTEGER.
BigId = BigInteger().with_variant(Integer(), "sqlite")
# SQL NULL for Python None, not the JSON literal null, so "IS NULL" means what it says.
NullableJSON = JSON(none_as_null=True)


class Base(DeclarativeBase):
    """Declarative base for the registry tables."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dt.datetime: UtcDateTime(), dict[str, Any]: JSON()}


class ModelRow(Base):
    """A named model; its versions hang off it."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime]


class VersionRow(Base):
    """One immutable version of a model; ``number`` counts 1, 2, 3... per model."""

    __tablename__ = "versions"
    __table_args__ = (UniqueConstraint("model_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    number: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(32))
    digest: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    signature: Mapped[dict[str, Any]]
    meta: Mapped[dict[str, Any]]
    profile: Mapped[dict[str, Any] | None] = mapped_column(NullableJSON, nullable=True)
    created_at: Mapped[dt.datetime]
    created_by: Mapped[str | None] = mapped_column(String(256))


class DeploymentRow(Base):
    """A named endpoint: the stable version of one model, and the one before it."""

    __tablename__ = "deployments"
    __table_args__ = (
        # A deployment can only point at versions that exist.
        ForeignKeyConstraint(
            ["model_id", "version"],
            ["versions.model_id", "versions.number"],
            name="fk_deployments_version_versions",
        ),
        ForeignKeyConstraint(
            ["model_id", "previous_version"],
            ["versions.model_id", "versions.number"],
            name="fk_deployments_previous_version_versions",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    version: Mapped[int] = mapped_column(Integer)
    previous_version: Mapped[int | None] = mapped_column(Integer)
    batching: Mapped[dict[str, Any]]
    generation: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    # Governance (revision 0002): a production deployment only moves to approved versions
    # (registry/promotions.py); ``inference`` holds its InferencePolicy (access and audit).
    production: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    inference: Mapped[dict[str, Any]] = mapped_column(
        JSON, default=dict, server_default=text("'{}'")
    )
    # The running rollout's traffic split (records.TrafficPolicy); NULL = all to ``version``.
    traffic: Mapped[dict[str, Any] | None] = mapped_column(NullableJSON, nullable=True)


class EventRow(Base):
    """One entry of the registry's append-only change history."""

    __tablename__ = "events"
    # Newest-first by subject (a version's or deployment's history) and by kind (across all).
    __table_args__ = (
        Index("ix_events_subject_id", "subject", "id"),
        Index("ix_events_kind_id", "kind", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime]
    kind: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(200))
    actor: Mapped[str | None] = mapped_column(String(256))
    data: Mapped[dict[str, Any]]


# -- governance (revision 0002): identities, approvals, the audit chain -------------------------


class UserRow(Base):
    """A person or a service account, with one role (viewer < deployer < approver < admin)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # "user" | "service"
    role: Mapped[str] = mapped_column(String(16))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime]
    created_by: Mapped[str | None] = mapped_column(String(256))


class TokenRow(Base):
    """An API token of a user. Only the sha256 of the token is kept; ``prefix`` names it."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime]
    created_by: Mapped[str | None] = mapped_column(String(256))
    expires_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]


class ApprovalPolicyRow(Base):
    """What promoting a version of one model to production needs."""

    __tablename__ = "approval_policies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), unique=True)
    approvals: Mapped[int] = mapped_column(Integer)
    require_validation: Mapped[bool] = mapped_column(Boolean)
    required_checks: Mapped[list[str]] = mapped_column(JSON)
    updated_at: Mapped[dt.datetime]
    updated_by: Mapped[str | None] = mapped_column(String(256))


class EvidenceReportRow(Base):
    """A report attached to a version: validation, shadow comparison, or a named check."""

    __tablename__ = "evidence_reports"
    __table_args__ = (
        ForeignKeyConstraint(
            ["model_id", "version"],
            ["versions.model_id", "versions.number"],
            name="fk_evidence_reports_version_versions",
        ),
        Index("ix_evidence_reports_model_id_version", "model_id", "version"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))  # "validation" | "shadow" | "check"
    name: Mapped[str] = mapped_column(String(64))
    passed: Mapped[bool] = mapped_column(Boolean)
    summary: Mapped[dict[str, Any]]
    created_at: Mapped[dt.datetime]
    created_by: Mapped[str | None] = mapped_column(String(256))


class PromotionRequestRow(Base):
    """A request to promote ``model@version`` on a production deployment, bound to the
    artifact digest and the digest of the evidence the approvers saw."""

    __tablename__ = "promotion_requests"
    __table_args__ = (
        ForeignKeyConstraint(
            ["model_id", "version"],
            ["versions.model_id", "versions.number"],
            name="fk_promotion_requests_version_versions",
        ),
        Index("ix_promotion_requests_deployment_version", "deployment", "version"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deployment: Mapped[str] = mapped_column(String(64))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    version: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(64))
    evidence_digest: Mapped[str] = mapped_column(String(64))
    evidence: Mapped[dict[str, Any]]
    approvals_required: Mapped[int] = mapped_column(Integer)
    # pending -> approved | rejected | stale | cancelled; approved -> promoted | stale
    status: Mapped[str] = mapped_column(String(16))
    requested_by: Mapped[str] = mapped_column(String(256))
    requested_at: Mapped[dt.datetime]
    comment: Mapped[str] = mapped_column(Text, default="")
    decided_at: Mapped[dt.datetime | None]
    promoted_at: Mapped[dt.datetime | None]


class PromotionDecisionRow(Base):
    """One approver's approve or reject on a promotion request, with the evidence they saw."""

    __tablename__ = "promotion_decisions"
    __table_args__ = (UniqueConstraint("request_id", "actor"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("promotion_requests.id"))
    actor: Mapped[str] = mapped_column(String(256))
    decision: Mapped[str] = mapped_column(String(16))  # "approve" | "reject"
    comment: Mapped[str] = mapped_column(Text, default="")
    evidence_digest: Mapped[str] = mapped_column(String(64))
    at: Mapped[dt.datetime]


class AuditRecordRow(Base):
    """One link of the audit chain: ``hash = sha256(prev_hash || canonical record)``.

    Append-only: triggers refuse UPDATE and DELETE (DELETE only of a purged prefix, see
    AuditPurgeRow). ``data`` is the canonical JSON text that was hashed, stored verbatim.
    """

    __tablename__ = "audit_records"
    __table_args__ = (
        Index("ix_audit_records_request_id", "request_id"),
        Index("ix_audit_records_deployment_at", "deployment", "at"),
    )

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[dt.datetime]
    kind: Mapped[str] = mapped_column(String(16))  # "control" | "prediction"
    action: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str | None] = mapped_column(String(256))
    subject: Mapped[str] = mapped_column(String(200))
    deployment: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(128))
    data: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditPurgeRow(Base):
    """A retention purge: records up to ``through_seq`` may be (and were) deleted; the first
    record kept links to ``anchor_hash``. Append-only like the records."""

    __tablename__ = "audit_purges"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    through_seq: Mapped[int] = mapped_column(BigInteger)
    anchor_hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[dt.datetime]
    actor: Mapped[str | None] = mapped_column(String(256))


metadata = Base.metadata


# -- engines -----------------------------------------------------------------------------------


def make_engine(url: str) -> Engine:
    """An engine for a registry URL: SQLite (WAL, a busy timeout of 30 s or ``?timeout=S``,
    foreign keys, writes as BEGIN IMMEDIATE) or PostgreSQL through psycopg. Raises InvalidInput
    for anything else."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise InvalidInput(f"invalid database URL {url!r}: {exc}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed)
    if backend in ("postgresql", "postgres"):
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        engine = create_engine(parsed, pool_pre_ping=True)
        event.listen(engine, "handle_error", _translate_error)
        return engine
    raise InvalidInput(
        f"unsupported database URL {parsed.render_as_string()!r}: use sqlite:///PATH"
        " or postgresql+psycopg://USER@HOST/DB"
    )


# What PostgreSQL refuses about a value, by SQLSTATE (class 22, data exception).
_DATA_ERRORS = {
    "22001": "a text value is longer than the registry stores",
    "22003": "a number is out of the range the registry stores",
    "22008": "a date or time is out of the range the registry stores",
}


# SQLite's primary result codes that mean the file cannot be used right now, not a bug: BUSY
# ("database is locked": another writer outlasted the busy timeout), CANTOPEN ("unable to open
# database file") and IOERR ("disk I/O error"). Other OperationalErrors, such as "no such table"
# (which the migrations look for), stay raw.
_SQLITE_UNAVAILABLE = {5: "database is locked", 14: "unable to open database file",
                       10: "disk I/O error"}  # fmt: skip


def _translate_error(context: ExceptionContext) -> None:
    """Translate the database's errors that are not bugs into Slipway's, at this boundary: a
    value the database cannot hold is InvalidInput (400), a database that cannot be reached (or,
    on SQLite, is locked or cannot be read) is RegistryUnavailable (503). Messages carry no
    driver text (docs/security.md)."""
    original = context.original_exception
    if isinstance(original, SlipwayError):  # raised by a bind processor (UtcDateTime)
        raise original
    if context.dialect.name == "sqlite":
        if _sqlite_unavailable(original):
            raise RegistryUnavailable(str(original).strip() or "no reason") from original
        return
    if context.is_pre_ping or context.dialect.name != "postgresql":
        return  # the pool's liveness check handles its own failures
    import psycopg

    if isinstance(original, psycopg.DataError):
        if original.sqlstate is None and "NUL" in str(original):  # refused by psycopg itself
            message = "text may not contain NUL (\\x00) characters"
        else:
            message = _DATA_ERRORS.get(
                original.sqlstate or "", "a value cannot be stored in the registry database"
            )
        raise InvalidInput(f"{message}; correct the value and retry") from original
    if isinstance(original, psycopg.OperationalError) or context.is_disconnect:
        reason = str(original).strip().splitlines()[0] if str(original).strip() else "no reason"
        raise RegistryUnavailable(reason) from original


def _sqlite_unavailable(error: BaseException) -> bool:
    import sqlite3

    if not isinstance(error, sqlite3.OperationalError):
        return False
    code = getattr(error, "sqlite_errorcode", None)  # extended codes keep the primary low byte
    if code is not None:
        return code & 0xFF in _SQLITE_UNAVAILABLE
    return str(error).strip() in _SQLITE_UNAVAILABLE.values()


def _sqlite_engine(url: URL) -> Engine:
    database = url.database or ""
    in_memory = database in ("", ":memory:") or url.query.get("mode") == "memory"
    busy_timeout_s = _busy_timeout_s(url)
    options: dict[str, Any] = {
        # The pool hands a connection to one thread at a time.
        "connect_args": {"timeout": busy_timeout_s, "check_same_thread": False}
    }
    if in_memory:
        options["poolclass"] = StaticPool  # one connection, or every checkout is a new database
    elif not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, **options)
    event.listen(engine, "handle_error", _translate_error)

    def connect(dbapi_connection: Any, connection_record: ConnectionPoolEntry) -> None:
        _sqlite_connect(dbapi_connection, busy_timeout_s)

    event.listen(engine, "connect", connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _busy_timeout_s(url: URL) -> float:
    """How long a statement waits for another writer's lock: ``?timeout=SECONDS`` in the URL
    (as the sqlite3 module reads it), else 30 s."""
    value = url.query.get("timeout", _BUSY_TIMEOUT_S)
    try:
        seconds = float(value if isinstance(value, (str, int)) else value[-1])
    except ValueError:
        seconds = math.nan
    if not (seconds >= 0 and math.isfinite(seconds)):
        raise InvalidInput(
            f"invalid SQLite busy timeout {value!r} in the database URL: use ?timeout=SECONDS,"
            " a number of seconds of 0 or more"
        )
    return seconds


def _sqlite_connect(dbapi_connection: Any, busy_timeout_s: float) -> None:
    # Take BEGIN away from the sqlite3 module so _sqlite_begin decides how transactions start.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {round(busy_timeout_s * 1000)}")
        cursor.execute("PRAGMA foreign_keys = ON")
        # WAL lets readers run beside the writer. The mode is stored in the file; only switch
        # when needed, since switching takes an exclusive lock.
        (mode,) = cursor.execute("PRAGMA journal_mode").fetchone()
        if str(mode).lower() not in ("wal", "memory"):
            cursor.execute("PRAGMA journal_mode = WAL")
    finally:
        cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    # A deferred transaction that reads and then writes fails with SQLITE_BUSY, without waiting,
    # when another writer got in between; BEGIN IMMEDIATE takes the write lock up front, so
    # concurrent writers wait their turn (busy_timeout) instead.
    if conn.get_execution_options().get(WRITE_OPTION):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


# -- rollouts (revision 0003) -------------------------------------------------------------------


class RolloutRow(Base):
    """One run of a strategy (canary, blue-green, A/B, shadow) on a deployment."""

    __tablename__ = "rollouts"
    __table_args__ = (Index("ix_rollouts_deployment_status", "deployment", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deployment: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(64))
    strategy: Mapped[str] = mapped_column(String(16))
    stable: Mapped[int] = mapped_column(Integer)
    candidate: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    step: Mapped[int] = mapped_column(Integer)
    config: Mapped[dict[str, Any]]
    analysis: Mapped[dict[str, Any] | None] = mapped_column(NullableJSON, nullable=True)
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    step_started_at: Mapped[dt.datetime]
    finished_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(256))


class RolloutEventRow(Base):
    """A decision or action on a rollout, with its evidence."""

    __tablename__ = "rollout_events"
    __table_args__ = (Index("ix_rollout_events_rollout_id_id", "rollout_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id"))
    at: Mapped[dt.datetime]
    kind: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str | None] = mapped_column(String(256))
    data: Mapped[dict[str, Any]]


class RolloutWindowRow(Base):
    """Aggregates one replica collected for one version of a rollout since its last flush."""

    __tablename__ = "rollout_windows"
    __table_args__ = (Index("ix_rollout_windows_rollout_id_at", "rollout_id", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id"))
    replica: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    at: Mapped[dt.datetime]
    data: Mapped[dict[str, Any]]


class ServedRequestRow(Base):
    """Which version served a request (by its id), so feedback can be joined to its arm."""

    __tablename__ = "served_requests"
    __table_args__ = (Index("ix_served_requests_request_id", "request_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(128))
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id"))
    version: Mapped[int] = mapped_column(Integer)
    at: Mapped[dt.datetime]


class FeedbackRow(Base):
    """Business outcomes for a request: named values such as label, conversion, revenue."""

    __tablename__ = "feedback"
    __table_args__ = (Index("ix_feedback_request_id", "request_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(128))
    values: Mapped[dict[str, Any]]
    at: Mapped[dt.datetime]
    actor: Mapped[str | None] = mapped_column(String(256))


class LeaseRow(Base):
    """A named lease (e.g. the rollout controller's) held by one replica until it expires."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[dt.datetime]


class AlertRuleRow(Base):
    """An alert rule added through the API (rules from the config file are not stored)."""

    __tablename__ = "alert_rules"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    spec: Mapped[dict[str, Any]]
    created_at: Mapped[dt.datetime]
    created_by: Mapped[str | None] = mapped_column(String(256))


class AlertEventRow(Base):
    """An alert rule started firing or resolved for a deployment."""

    __tablename__ = "alert_events"
    __table_args__ = (Index("ix_alert_events_deployment_id", "deployment", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime]
    rule: Mapped[str] = mapped_column(String(64))
    deployment: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    value: Mapped[float | None] = mapped_column(Double, nullable=True)
    threshold: Mapped[float] = mapped_column(Double)
    severity: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)


class ValidationReportRow(Base):
    """A validation report stored on a version: the JSON report and its HTML page."""

    __tablename__ = "validation_reports"
    __table_args__ = (
        ForeignKeyConstraint(
            ["model_id", "version"],
            ["versions.model_id", "versions.number"],
            name="fk_validation_reports_version_versions",
        ),
        Index("ix_validation_reports_model_id_version", "model_id", "version"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    version: Mapped[int] = mapped_column(Integer)
    policy: Mapped[str] = mapped_column(String(64))
    passed: Mapped[bool] = mapped_column(Boolean)
    report: Mapped[dict[str, Any]]
    html: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime]
    created_by: Mapped[str | None] = mapped_column(String(256))
