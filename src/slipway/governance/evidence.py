"""Approval rules as pure functions over plain values.

The **evidence bundle** is what an approver looks at: the candidate version's metadata and
lineage (artifact digest, training data and its hash, hyperparameters), its metrics, the reports
attached to it (validation, shadow comparisons, named checks), the approval policy, and a diff
against the version the deployment serves now. The **evidence digest** binds an approval to the
part of the bundle that describes the candidate (everything but the current version and the
diff, which move when production moves): if the artifact, a report or the policy changes after
the request, the digest changes and the approval no longer counts.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import msgspec

from slipway.registry.audit import canonical_json
from slipway.registry.records import VersionRecord

REPORT_KINDS = ("validation", "shadow", "check")


class ApprovalPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What promoting a version of a model to production needs.

    ``approvals``: distinct approvers, none of them the requester. ``require_validation``: the
    newest validation report of each name must pass, and there must be at least one.
    ``required_checks``: names of checks whose newest report must pass.
    """

    approvals: int = 1
    require_validation: bool = False
    required_checks: list[str] = []


class EvidenceReport(msgspec.Struct, frozen=True):
    """A report attached to a version (see ``approvals.attach_report``)."""

    id: int
    model: str
    version: int
    kind: str  # "validation" | "shadow" | "check"
    name: str
    passed: bool
    summary: dict[str, Any]
    created_at: dt.datetime
    created_by: str | None


def describe_version(version: VersionRecord) -> dict[str, Any]:
    """The facts about a version an approver needs, as plain JSON-able values."""
    meta = version.meta
    return {
        "ref": version.ref,
        "digest": version.digest,
        "format": version.format,
        "size": version.size,
        "created_at": version.created_at.isoformat(),
        "created_by": version.created_by,
        "description": meta.description,
        "lineage": {
            "training_data": meta.training_data,
            "training_data_sha256": meta.training_data_sha256,
        },
        "hyperparameters": meta.hyperparameters,
        "metrics": meta.metrics,
        "tags": meta.tags,
        "signature": msgspec.to_builtins(version.signature),
        "profile_rows": None if version.profile is None else version.profile.rows,
    }


def latest_reports(reports: list[EvidenceReport]) -> list[EvidenceReport]:
    """The newest report of each (kind, name), oldest first."""
    newest: dict[tuple[str, str], EvidenceReport] = {}
    for report in sorted(reports, key=lambda r: r.id):
        newest[(report.kind, report.name)] = report
    return sorted(newest.values(), key=lambda r: r.id)


def unmet(policy: ApprovalPolicy, reports: list[EvidenceReport]) -> list[str]:
    """What the policy asks for that the reports do not show; empty when all is there."""
    current = latest_reports(reports)
    missing = []
    if policy.require_validation:
        validation = [r for r in current if r.kind == "validation"]
        if not validation:
            missing.append("a passing validation report")
        missing.extend(f"validation report {r.name!r} failed" for r in validation if not r.passed)
    checks = {r.name: r for r in current if r.kind == "check"}
    for name in policy.required_checks:
        report = checks.get(name)
        if report is None:
            missing.append(f"check {name!r} has no report")
        elif not report.passed:
            missing.append(f"check {name!r} failed")
    return missing


def _diff(candidate: dict[str, Any], current: dict[str, Any] | None) -> dict[str, Any]:
    if current is None:
        return {"against": None}
    metrics = {}
    for name in sorted(set(candidate["metrics"]) | set(current["metrics"])):
        new, old = candidate["metrics"].get(name), current["metrics"].get(name)
        change = None if new is None or old is None else new - old
        metrics[name] = {"current": old, "candidate": new, "change": change}
    changed_params = {
        name: {"current": current["hyperparameters"].get(name), "candidate": value}
        for name, value in sorted(candidate["hyperparameters"].items())
        if current["hyperparameters"].get(name) != value
    }
    for name in sorted(set(current["hyperparameters"]) - set(candidate["hyperparameters"])):
        changed_params[name] = {"current": current["hyperparameters"][name], "candidate": None}
    return {
        "against": current["ref"],
        "metrics": metrics,
        "hyperparameters": changed_params,
        "training_data_changed": candidate["lineage"] != current["lineage"],
        "signature_changed": candidate["signature"] != current["signature"],
    }


def build_bundle(
    candidate: VersionRecord,
    current: VersionRecord | None,
    reports: list[EvidenceReport],
    policy: ApprovalPolicy,
) -> dict[str, Any]:
    """The evidence bundle of promoting ``candidate`` over ``current`` (None: nothing served)."""
    described = describe_version(candidate)
    served = None if current is None else describe_version(current)
    return {
        "candidate": described,
        "reports": [
            {k: v for k, v in msgspec.to_builtins(r).items() if k not in ("model", "version")}
            for r in sorted(reports, key=lambda r: r.id)
        ],
        "policy": msgspec.to_builtins(policy),
        "unmet": unmet(policy, reports),
        "current": served,
        "diff": _diff(described, served),
    }


def evidence_digest(bundle: dict[str, Any]) -> str:
    """sha256 over the candidate's part of the bundle: what an approval is bound to."""
    bound = {key: bundle[key] for key in ("candidate", "reports", "policy")}
    return hashlib.sha256(canonical_json(bound).encode()).hexdigest()


def tally(decisions: list[str], required: int) -> str:
    """Status from the decisions so far: one reject rejects; ``required`` approvals approve."""
    if "reject" in decisions:
        return "rejected"
    if decisions.count("approve") >= required:
        return "approved"
    return "pending"
