"""Evaluating the checklist of a version, or of the version a deployment serves."""

from __future__ import annotations

import datetime as dt

from slipway.readiness.gather import Facts, choose_deployment, gather
from slipway.readiness.items import ITEMS
from slipway.readiness.policy import ReadinessPolicy
from slipway.readiness.report import ItemResult, ReadinessReport
from slipway.registry.artifacts import ArtifactStore
from slipway.registry.store import SqlStore
from slipway.settings import Settings


def judge(facts: Facts, policy: ReadinessPolicy, at: dt.datetime) -> ReadinessReport:
    """Every item over ``facts`` (pure: no I/O), marked required or optional by ``policy``."""
    results = []
    for item in ITEMS:
        status, evidence, fix = item.check(facts)
        results.append(
            ItemResult(
                name=item.name,
                title=item.title,
                status=status,
                required=policy.required(item.name),
                evidence=evidence,
                fix=fix if status == "fail" else None,
            )
        )
    v = facts.version
    return ReadinessReport(
        model=v.model,
        version=v.number,
        digest=v.digest,
        deployment=None if facts.deployment is None else facts.deployment.name,
        evaluated_at=at,
        items=results,
    )


def evaluate_version(
    store: SqlStore,
    artifacts: ArtifactStore,
    settings: Settings,
    model: str,
    version: int | None = None,
    *,
    deployment: str | None = None,
    policy: ReadinessPolicy = ReadinessPolicy(),
) -> ReadinessReport:
    """The checklist of ``model@version`` (latest when None).

    Deployment items (rollout, rollback target, alert rules, prediction logging) are judged on
    ``deployment`` when given, else on the deployment that serves the version (or the model's
    production deployment, or its only one). Raises the registry's NotFound errors.
    """
    record = store.get_version(model, version)
    target = choose_deployment(store, record, deployment)
    facts = gather(store, artifacts, settings, record, target)
    return judge(facts, policy, store.clock().astimezone(dt.UTC))


def evaluate_deployment(
    store: SqlStore,
    artifacts: ArtifactStore,
    settings: Settings,
    name: str,
    *,
    policy: ReadinessPolicy = ReadinessPolicy(),
) -> ReadinessReport:
    """The checklist of the stable version deployment ``name`` serves, judged on it.

    Raises DeploymentNotFound.
    """
    found = store.get_deployment(name)
    return evaluate_version(
        store, artifacts, settings, found.model, found.version, deployment=name, policy=policy
    )
