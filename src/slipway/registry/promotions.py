"""The production gate: the one check every promotion passes, whoever makes it.

A deployment marked ``production`` only moves to a version for which a promotion request was
approved, bound to that version's artifact digest. The store runs this inside the transaction
that changes the deployment (``set_deployment_version``, or ``update_deployment`` turning
``production`` on), so the CLI, the management API and the rollout controller are all held to
it. Going back to the previous version is allowed without a new approval when that version was
itself promoted on this deployment: rollback must never wait for a meeting.

Requests, approvals and their evidence are made in :mod:`slipway.governance.approvals`.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from slipway.errors import ApprovalRequired
from slipway.registry.db import DeploymentRow, PromotionRequestRow, VersionRow


def require_approval(
    session: Session,
    deployment: DeploymentRow,
    model: str,
    version: int,
    now: dt.datetime,
    *,
    rollback_ok: bool = True,
) -> None:
    """Let production ``deployment`` serve ``model@version``, or raise ApprovalRequired.

    An approved request for exactly this deployment, version and artifact digest is marked
    ``promoted`` (used once). ``rollback_ok``: the deployment's previous version passes when it
    was promoted here before.
    """
    ref = f"{model}@{version}"
    digest = session.scalar(
        select(VersionRow.digest).where(
            VersionRow.model_id == deployment.model_id, VersionRow.number == version
        )
    )
    requests = select(PromotionRequestRow).where(
        PromotionRequestRow.deployment == deployment.name,
        PromotionRequestRow.model_id == deployment.model_id,
        PromotionRequestRow.version == version,
    )
    if rollback_ok and version == deployment.previous_version:
        promoted = session.scalars(
            requests.where(
                PromotionRequestRow.status == "promoted", PromotionRequestRow.digest == digest
            ).limit(1)
        ).first()
        if promoted is not None:
            return
    candidates = session.scalars(
        requests.where(PromotionRequestRow.status.in_(("approved", "stale", "pending", "rejected")))
        .order_by(PromotionRequestRow.id.desc())
        .with_for_update()
    ).all()
    approved = [r for r in candidates if r.status == "approved"]
    if not approved:
        newest = candidates[0] if candidates else None
        if newest is None:
            reason = "there is none"
        elif newest.status == "stale":
            reason = "its approval went stale because the evidence changed after it was given"
        elif newest.status == "pending":
            reason = f"request #{newest.id} is still waiting for approval"
        else:
            reason = f"request #{newest.id} was rejected"
        raise ApprovalRequired(deployment.name, ref, reason)
    request = approved[0]
    if request.digest != digest:
        raise ApprovalRequired(
            deployment.name,
            ref,
            f"request #{request.id} approved artifact sha256:{request.digest[:12]}, but the"
            f" version's artifact is now sha256:{str(digest)[:12]}",
        )
    request.status = "promoted"
    request.promoted_at = now


def require_approved_candidate(
    session: Session, deployment: DeploymentRow, model: str, version: int, why: str
) -> None:
    """Raise ApprovalRequired unless production ``deployment`` has an approved request for
    ``model@version`` bound to its current digest. Unlike :func:`require_approval` the request
    is not used up: this guards traffic that could reach the candidate before its promotion."""
    if not deployment.production:
        return
    digest = session.scalar(
        select(VersionRow.digest).where(
            VersionRow.model_id == deployment.model_id, VersionRow.number == version
        )
    )
    approved = session.scalars(
        select(PromotionRequestRow.id).where(
            PromotionRequestRow.deployment == deployment.name,
            PromotionRequestRow.model_id == deployment.model_id,
            PromotionRequestRow.version == version,
            PromotionRequestRow.status == "approved",
            PromotionRequestRow.digest == digest,
        )
    ).first()
    if approved is None:
        raise ApprovalRequired(deployment.name, f"{model}@{version}", why)
