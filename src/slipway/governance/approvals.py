"""Promotion requests, their evidence, and the approvers' decisions.

A deployer requests the promotion of ``model@version`` on a deployment; the request carries the
evidence bundle (see :mod:`slipway.governance.evidence`) and is bound to the version's artifact
digest and to the evidence digest. Approvers other than the requester approve or reject it with
a comment; once the model's policy has its approvals, the request is ``approved`` and the
production gate (``registry/promotions.py``) lets exactly that version through, once.

When the evidence moves after a request was made (a report is attached to the version, the
model's policy changes), every open request it concerns turns ``stale`` in the same transaction:
an approval always refers to what the approvers saw.

Status: ``pending`` → ``approved`` → ``promoted``; or ``rejected``, ``stale``, ``cancelled``
(a pending request superseded by a newer one for the same deployment and version; an approved
request is never superseded, only used or made stale).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.orm import Session

from slipway.errors import (
    DeploymentNotFound,
    InvalidInput,
    ModelNotFound,
    NotFound,
    PermissionDenied,
    VersionConflict,
)
from slipway.governance.evidence import (
    REPORT_KINDS,
    ApprovalPolicy,
    EvidenceReport,
    build_bundle,
    evidence_digest,
    tally,
    unmet,
)
from slipway.governance.sessions import event, now, reading, writing
from slipway.registry.db import (
    ApprovalPolicyRow,
    EvidenceReportRow,
    ModelRow,
    PromotionDecisionRow,
    PromotionRequestRow,
    UserRow,
)
from slipway.registry.names import MAX_ID, check_name
from slipway.registry.records import VersionRecord
from slipway.registry.store import SqlStore

OPEN = ("pending", "approved")
STATUSES = ("pending", "approved", "promoted", "rejected", "stale", "cancelled")


class PromotionDecision(msgspec.Struct, frozen=True):
    actor: str
    decision: str  # "approve" | "reject"
    comment: str
    at: dt.datetime


class PromotionRequest(msgspec.Struct, frozen=True):
    id: int
    deployment: str
    model: str
    version: int
    digest: str
    evidence_digest: str
    status: str
    approvals_required: int
    requested_by: str
    requested_at: dt.datetime
    comment: str
    decided_at: dt.datetime | None
    promoted_at: dt.datetime | None
    decisions: list[PromotionDecision] = []
    evidence: dict[str, Any] | None = None

    @property
    def ref(self) -> str:
        return f"{self.model}@{self.version}"


# -- policies and reports ----------------------------------------------------------------------


def get_policy(store: SqlStore, model: str) -> ApprovalPolicy:
    """The model's approval policy (one approval, nothing else, when none was set)."""
    with reading(store) as session:
        return _policy(session, _model_id(session, model))


def set_policy(
    store: SqlStore, model: str, policy: ApprovalPolicy, *, actor: str | None
) -> ApprovalPolicy:
    """Set the model's approval policy; open requests for the model turn stale."""
    if not isinstance(policy.approvals, int) or not 1 <= policy.approvals <= 10:
        raise InvalidInput("a policy needs between 1 and 10 approvals")
    for name in policy.required_checks:
        check_name("check", name)
    with writing(store) as session:
        model_id = _model_id(session, model)
        before = _policy(session, model_id)
        row = session.scalars(
            select(ApprovalPolicyRow).where(ApprovalPolicyRow.model_id == model_id)
        ).one_or_none()
        if row is None:
            row = ApprovalPolicyRow(model_id=model_id)
            session.add(row)
        row.approvals = policy.approvals
        row.require_validation = policy.require_validation
        row.required_checks = list(policy.required_checks)
        row.updated_at = now(store)
        row.updated_by = actor
        if policy != before:
            _make_stale(session, store, actor, "the approval policy changed", model_id=model_id)
        event(
            session,
            store,
            "approval_policy.set",
            model,
            actor,
            {"before": msgspec.to_builtins(before), "after": msgspec.to_builtins(policy)},
        )
        return policy


def attach_report(
    store: SqlStore,
    model: str,
    version: int,
    *,
    kind: str,
    name: str,
    passed: bool,
    summary: dict[str, Any] | None = None,
    actor: str | None,
) -> EvidenceReport:
    """Attach a validation, shadow or check report to ``model@version`` as evidence.

    Open promotion requests for that version turn stale: their approvers did not see it.
    """
    if kind not in REPORT_KINDS:
        raise InvalidInput(f"unknown report kind {kind!r}; use one of {', '.join(REPORT_KINDS)}")
    check_name("report", name)
    summary = dict(summary or {})
    store.get_version(model, version)  # ModelNotFound / VersionNotFound
    with writing(store) as session:
        model_id = _model_id(session, model)
        row = EvidenceReportRow(
            model_id=model_id,
            version=version,
            kind=kind,
            name=name,
            passed=bool(passed),
            summary=summary,
            created_at=now(store),
            created_by=actor,
        )
        session.add(row)
        session.flush()
        report = _report(row, model)
        _make_stale(
            session,
            store,
            actor,
            f"{kind} report {name!r} was attached",
            model_id=model_id,
            version=version,
        )
        event(
            session,
            store,
            "evidence.attached",
            f"{model}@{version}",
            actor,
            msgspec.to_builtins(report),
        )
        return report


def list_reports(store: SqlStore, model: str, version: int) -> list[EvidenceReport]:
    """The reports attached to ``model@version``, oldest first (VersionNotFound for none)."""
    store.get_version(model, version)
    with reading(store) as session:
        return _reports(session, _model_id(session, model), model, version)


# -- requests and decisions --------------------------------------------------------------------


def request_promotion(
    store: SqlStore,
    deployment: str,
    model: str,
    version: int | None = None,
    *,
    actor: str,
    comment: str = "",
) -> PromotionRequest:
    """Ask for ``model@version`` (latest when None) to be promoted on ``deployment``, which may
    not exist yet. An older pending request for the same deployment and version is cancelled
    (recorded); an approved one refuses the new request with VersionConflict."""
    check_name("deployment", deployment)
    candidate = store.get_version(model, version)
    current = _served(store, deployment, model)
    with writing(store) as session:
        model_id = _model_id(session, model)
        policy = _policy(session, model_id)
        bundle = build_bundle(
            candidate, current, _reports(session, model_id, model, candidate.number), policy
        )
        superseded = session.scalars(
            _open_requests(model_id=model_id, version=candidate.number).where(
                PromotionRequestRow.deployment == deployment
            )
        ).all()
        for older in superseded:
            if older.status == "approved":  # the approvers' decision is not anyone's to undo
                raise VersionConflict(
                    f"request #{older.id} for {model}@{candidate.number} on {deployment!r} is"
                    " already approved; promote with it (it turns stale by itself when the"
                    " evidence changes)"
                )
            older.status = "cancelled"
        row = PromotionRequestRow(
            deployment=deployment,
            model_id=model_id,
            version=candidate.number,
            digest=candidate.digest,
            evidence_digest=evidence_digest(bundle),
            evidence=bundle,
            approvals_required=policy.approvals,
            status="pending",
            requested_by=actor,
            requested_at=now(store),
            comment=comment,
        )
        session.add(row)
        session.flush()
        for older in superseded:
            event(
                session,
                store,
                "promotion.cancelled",
                f"deployment:{deployment}",
                actor,
                {"request": older.id, "superseded_by": row.id},
            )
        record = _request(row, model, [], evidence=False)
        event(
            session,
            store,
            "promotion.requested",
            f"deployment:{deployment}",
            actor,
            _summary(record),
        )
        return _request(row, model, [], evidence=True)


def list_requests(
    store: SqlStore,
    *,
    status: str | None = None,
    deployment: str | None = None,
    limit: int = 100,
) -> list[PromotionRequest]:
    """Requests, newest first, without their evidence bundles. InvalidInput for a status that
    is none of ``STATUSES`` or a deployment name that no deployment can have."""
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"unknown status {status!r}; use one of {', '.join(STATUSES)}")
    if deployment is not None:
        check_name("deployment", deployment)
    query = (
        select(PromotionRequestRow, ModelRow.name)
        .join(ModelRow, ModelRow.id == PromotionRequestRow.model_id)
        .order_by(PromotionRequestRow.id.desc())
        .limit(limit)
    )
    if status is not None:
        query = query.where(PromotionRequestRow.status == status)
    if deployment is not None:
        query = query.where(PromotionRequestRow.deployment == deployment)
    with reading(store) as session:
        rows = session.execute(query).all()
        return [_request(row, model, _decisions(session, row.id)) for row, model in rows]


def get_request(store: SqlStore, request_id: int) -> PromotionRequest:
    """One request with its decisions and evidence bundle."""
    with reading(store) as session:
        row, model = _request_row(session, request_id)
        return _request(row, model, _decisions(session, row.id), evidence=True)


def decide(
    store: SqlStore, request_id: int, *, approve: bool, actor: str, comment: str = ""
) -> PromotionRequest:
    """Approve or reject a pending request as ``actor``, who must not be its requester (nor,
    to approve, a service account: approval is human review).

    The evidence is computed again first: when it no longer matches the request's digest, the
    request turns stale and VersionConflict says so. Approving needs the policy to be met.
    """
    decision = "approve" if approve else "reject"
    with reading(store) as session:
        _, model = _request_row(session, request_id)
        number = session.scalar(
            select(PromotionRequestRow.version).where(PromotionRequestRow.id == request_id)
        )
    candidate = store.get_version(model, number)
    stale = False
    with writing(store) as session:
        row, model = _request_row(session, request_id, lock=True)
        if row.status != "pending":
            raise InvalidInput(_closed(row, model))
        if actor == row.requested_by:
            raise PermissionDenied(actor, "nobody may approve or reject their own request")
        if approve and session.scalar(select(UserRow.kind).where(UserRow.name == actor)) == (
            "service"
        ):  # promotion needs human review; a bot may still stop one (reject)
            raise PermissionDenied(
                actor, "a service account may reject a promotion request but not approve one"
            )
        decisions = _decisions(session, row.id)
        if any(d.actor == actor for d in decisions):
            raise VersionConflict(f"{actor!r} already decided on request #{request_id}")
        policy = _policy(session, row.model_id)
        reports = _reports(session, row.model_id, model, row.version)
        digest = evidence_digest(build_bundle(candidate, None, reports, policy))
        if digest != row.evidence_digest or candidate.digest != row.digest:
            stale = True
            _make_stale(session, store, actor, "the evidence changed", id=row.id)
        else:
            missing = unmet(policy, reports) if approve else []
            if missing:
                raise InvalidInput(
                    f"request #{request_id} cannot be approved; the policy still needs: "
                    + "; ".join(missing)
                )
            at = now(store)
            session.add(
                PromotionDecisionRow(
                    request_id=row.id,
                    actor=actor,
                    decision=decision,
                    comment=comment,
                    evidence_digest=digest,
                    at=at,
                )
            )
            decisions.append(PromotionDecision(actor, decision, comment, at))
            status = tally([d.decision for d in decisions], row.approvals_required)
            if status != "pending":
                row.status, row.decided_at = status, at
            session.flush()
            record = _request(row, model, decisions)
            event(
                session,
                store,
                f"promotion.{decision}d",
                f"deployment:{row.deployment}",
                actor,
                {**_summary(record), "comment": comment},
            )
    if stale:
        raise VersionConflict(
            f"request #{request_id} is stale: its evidence changed after it was made"
            f" (a report was attached or the policy changed); make a new request with"
            f" `slipway approvals request`"
        )
    return get_request(store, request_id)


# -- internals ---------------------------------------------------------------------------------


def _closed(row: PromotionRequestRow, model: str) -> str:
    """Why request ``row`` cannot be decided any more, and what to do instead."""
    said = f"request #{row.id} is {row.status}"
    if row.status in ("approved", "promoted"):
        return f"{said} already; nothing is left to decide"
    if row.status == "cancelled":
        return (
            f"{said}: a newer request for {model}@{row.version} replaced it; decide that one"
            f" (`slipway approvals list --deployment {row.deployment} --status pending`)"
        )
    return (
        f"{said}; only pending requests can be decided: make a new one with"
        f" `slipway approvals request {row.deployment} {model}@{row.version}`"
    )


def _served(store: SqlStore, deployment: str, model: str) -> VersionRecord | None:
    try:
        current = store.get_deployment(deployment)
    except DeploymentNotFound:
        return None
    if current.model != model:
        raise InvalidInput(
            f"deployment {deployment!r} serves model {current.model!r}, not {model!r}"
        )
    return store.get_version(current.model, current.version)


def _open_requests(**where: int) -> Any:
    query = select(PromotionRequestRow).where(PromotionRequestRow.status.in_(OPEN))
    for column, value in where.items():
        query = query.where(getattr(PromotionRequestRow, column) == value)
    return query.with_for_update()


def _make_stale(
    session: Session, store: SqlStore, actor: str | None, reason: str, **where: int
) -> None:
    for row in session.scalars(_open_requests(**where)).all():
        row.status = "stale"
        event(
            session,
            store,
            "promotion.stale",
            f"deployment:{row.deployment}",
            actor,
            {"request": row.id, "reason": reason},
        )


def _model_id(session: Session, model: str) -> int:
    check_name("model", model)
    model_id = session.scalar(select(ModelRow.id).where(ModelRow.name == model))
    if model_id is None:
        raise ModelNotFound(model)
    return model_id


def _policy(session: Session, model_id: int) -> ApprovalPolicy:
    row = session.scalars(
        select(ApprovalPolicyRow).where(ApprovalPolicyRow.model_id == model_id)
    ).one_or_none()
    if row is None:
        return ApprovalPolicy()
    return ApprovalPolicy(row.approvals, row.require_validation, list(row.required_checks))


def _reports(session: Session, model_id: int, model: str, version: int) -> list[EvidenceReport]:
    rows = session.scalars(
        select(EvidenceReportRow)
        .where(EvidenceReportRow.model_id == model_id, EvidenceReportRow.version == version)
        .order_by(EvidenceReportRow.id)
    )
    return [_report(row, model) for row in rows]


def _report(row: EvidenceReportRow, model: str) -> EvidenceReport:
    return EvidenceReport(
        id=row.id,
        model=model,
        version=row.version,
        kind=row.kind,
        name=row.name,
        passed=row.passed,
        summary=row.summary,
        created_at=row.created_at,
        created_by=row.created_by,
    )


def _request_row(
    session: Session, request_id: int, *, lock: bool = False
) -> tuple[PromotionRequestRow, str]:
    missing = NotFound(f"promotion request #{request_id} not found; see `slipway approvals list`")
    if not 1 <= request_id <= MAX_ID:  # no row has such an id; the database would overflow
        raise missing
    query = (
        select(PromotionRequestRow, ModelRow.name)
        .join(ModelRow, ModelRow.id == PromotionRequestRow.model_id)
        .where(PromotionRequestRow.id == request_id)
    )
    if lock:
        query = query.with_for_update(of=PromotionRequestRow)
    found = session.execute(query).one_or_none()
    if found is None:
        raise missing
    return found[0], found[1]


def _decisions(session: Session, request_id: int) -> list[PromotionDecision]:
    rows = session.scalars(
        select(PromotionDecisionRow)
        .where(PromotionDecisionRow.request_id == request_id)
        .order_by(PromotionDecisionRow.id)
    )
    return [PromotionDecision(r.actor, r.decision, r.comment, r.at) for r in rows]


def _request(
    row: PromotionRequestRow,
    model: str,
    decisions: list[PromotionDecision],
    *,
    evidence: bool = False,
) -> PromotionRequest:
    return PromotionRequest(
        id=row.id,
        deployment=row.deployment,
        model=model,
        version=row.version,
        digest=row.digest,
        evidence_digest=row.evidence_digest,
        status=row.status,
        approvals_required=row.approvals_required,
        requested_by=row.requested_by,
        requested_at=row.requested_at,
        comment=row.comment,
        decided_at=row.decided_at,
        promoted_at=row.promoted_at,
        decisions=decisions,
        evidence=row.evidence if evidence else None,
    )


def _summary(request: PromotionRequest) -> dict[str, Any]:
    return {
        "request": request.id,
        "ref": request.ref,
        "digest": request.digest,
        "evidence_digest": request.evidence_digest,
        "status": request.status,
    }
