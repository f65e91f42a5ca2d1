"""Validation reports stored on versions, and the one read other areas use.

:func:`save_report` stores the JSON report and its HTML page in ``validation_reports`` and
attaches a ``validation`` evidence report named after the policy (its stage verdicts), so the
approval workflow's ``require_validation`` sees it. :func:`latest_report` is what a "needs a
passing validation report" check reads.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
from sqlalchemy import select

from slipway.errors import ModelNotFound
from slipway.governance.approvals import attach_report
from slipway.governance.sessions import now, reading, writing
from slipway.registry.db import ModelRow, ValidationReportRow
from slipway.registry.store import SqlStore
from slipway.validation.checks import Report


class StoredReport(msgspec.Struct, frozen=True):
    """A stored validation report; ``report`` is the JSON form of :class:`Report`."""

    id: int
    model: str
    version: int
    policy: str
    passed: bool
    report: dict[str, Any]
    html: str
    created_at: dt.datetime
    created_by: str | None


def save_report(
    store: SqlStore, report: Report, html: str, *, actor: str | None = None
) -> StoredReport:
    """Store ``report`` (and its page) on its version and attach it as evidence."""
    store.get_version(report.model, report.version)  # ModelNotFound / VersionNotFound
    with writing(store) as session:
        row = ValidationReportRow(
            model_id=_model_id(session, report.model),
            version=report.version,
            policy=report.policy,
            passed=report.passed,
            report=msgspec.to_builtins(report),
            html=html,
            created_at=now(store),
            created_by=actor,
        )
        session.add(row)
        session.flush()
        stored = _stored(row, report.model)
    attach_report(
        store,
        report.model,
        report.version,
        kind="validation",
        name=report.policy,
        passed=report.passed,
        summary={**report.summary(), "validation_report": stored.id},
        actor=actor,
    )
    return stored


def latest_report(
    store: SqlStore, model: str, version: int, *, policy: str | None = None
) -> StoredReport | None:
    """The newest validation report of ``model@version`` (of ``policy`` when named), or None."""
    with reading(store) as session:
        query = select(ValidationReportRow).where(
            ValidationReportRow.model_id == _model_id(session, model),
            ValidationReportRow.version == version,
        )
        if policy is not None:
            query = query.where(ValidationReportRow.policy == policy)
        row = session.scalars(query.order_by(ValidationReportRow.id.desc()).limit(1)).first()
        return None if row is None else _stored(row, model)


def list_reports(store: SqlStore, model: str, version: int) -> list[StoredReport]:
    """Every validation report of ``model@version``, oldest first."""
    with reading(store) as session:
        rows = session.scalars(
            select(ValidationReportRow)
            .where(
                ValidationReportRow.model_id == _model_id(session, model),
                ValidationReportRow.version == version,
            )
            .order_by(ValidationReportRow.id)
        ).all()
        return [_stored(r, model) for r in rows]


def _model_id(session: Any, model: str) -> int:
    model_id = session.scalar(select(ModelRow.id).where(ModelRow.name == model))
    if model_id is None:
        raise ModelNotFound(model)
    return int(model_id)


def _stored(row: ValidationReportRow, model: str) -> StoredReport:
    return StoredReport(
        id=row.id,
        model=model,
        version=row.version,
        policy=row.policy,
        passed=row.passed,
        report=row.report,
        html=row.html,
        created_at=row.created_at,
        created_by=row.created_by,
    )
