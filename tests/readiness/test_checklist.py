"""A version on its way to production, step by step: each checklist item turns from fail to pass
as the registry records the step that item asks for."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from slipway.governance import approvals
from slipway.governance.sessions import writing
from slipway.local import Registry
from slipway.monitoring.alert_store import AlertStore
from slipway.monitoring.alerts import AlertRule
from slipway.packaging.manifest import BundleManifest
from slipway.packaging.record import record_bundle
from slipway.readiness import ReadinessPolicy, ReadinessReport, evaluate_deployment
from slipway.readiness import evaluate_version as evaluate
from slipway.readiness.items import NAMES
from slipway.registry.audit import record_event
from slipway.registry.records import InferencePolicy
from slipway.rollout import actions
from slipway.rollout.analysis import GateConfig
from slipway.rollout.policy import RolloutConfig
from slipway.settings import Settings

from .conftest import DEPLOYMENT, failing, passing, settings_for, validation_report

WEBHOOK = "https://hooks.example.com/services/T000/SECRET-PART"


def statuses(report: ReadinessReport) -> dict[str, str]:
    return {item.name: item.status for item in report.items}


def item(report: ReadinessReport, name: str) -> tuple[str, str, str | None]:
    found = next(i for i in report.items if i.name == name)
    return found.status, found.evidence, found.fix


def check(
    registry: Registry,
    settings: Settings | None = None,
    *,
    deployment: str | None = None,
    policy: ReadinessPolicy = ReadinessPolicy(),
) -> ReadinessReport:
    """The checklist of iris@2."""
    return evaluate(
        registry.store,
        registry.artifacts,
        settings or registry.settings,
        "iris",
        2,
        deployment=deployment,
        policy=policy,
    )


def test_a_version_turns_ready_step_by_step(
    registry: Registry, bundle: tuple[Path, BundleManifest, Path]
) -> None:
    store = registry.store
    # Registered, nothing more: judged on iris-prod, the model's only deployment.
    report = check(registry)
    assert report.deployment == DEPLOYMENT and [i.name for i in report.items] == list(NAMES)
    assert statuses(report) == {
        "packaged": "fail",
        "serialized": "pass",
        "signature": "pass",
        "reference_profile": "pass",
        "lineage": "pass",
        "validation_quality": "fail",
        "validation_integration": "fail",
        "validation_performance": "fail",
        "validation_shadow": "fail",  # iris@1 serves: there is a production version to match
        "approved": "fail",
        "rollout_strategy": "fail",
        "rollback_target": "pass",  # iris@1 stays warm while iris@2 rolls out
        "drift_monitors": "fail",
        "latency_alerts": "fail",
        "error_alerts": "fail",
        "business_metrics": "fail",
        "alert_destinations": "fail",
        "prediction_logging": "pass",
        "audit_chain": "pass",
        "shared_registry": "fail",  # SQLite
        "scaling": "fail",
    }
    assert not report.ready
    assert item(report, "packaged")[2] == "slipway package iris@2 --out iris-2-bundle"
    assert "business_metrics" not in [i.name for i in report.failed_required()]

    # package
    out, manifest, _ = bundle
    record_bundle(store, out, manifest, actor="dev")
    report = check(registry)
    status, evidence, fix = item(report, "packaged")
    assert status == "pass" and fix is None
    assert str(out) in evidence and "exact pins" in evidence and "HEALTHCHECK" in evidence
    assert "Deployment" in evidence and "HorizontalPodAutoscaler" in evidence
    status, evidence, _ = item(report, "scaling")
    assert status == "pass" and "cpu 500m" in evidence and "autoscaling 2..10" in evidence

    # validate: each stage passes only once a report shows it passing
    validation_report(registry, {"quality": [passing("accuracy", 0.97)]})
    report = check(registry)
    assert item(report, "validation_quality")[0] == "pass"
    status, evidence, fix = item(report, "validation_integration")
    assert status == "fail" and "has no integration stage" in evidence
    assert fix == "slipway validate iris@2 --data HOLDOUT.csv --policy POLICY.yaml"
    stored = validation_report(
        registry,
        {
            "quality": [passing("accuracy", 0.97)],
            "integration": [passing("max abs diff", 0.0)],
            "performance": [failing("p99 ms", 180.0)],
            "shadow": [passing("agreement", 0.995)],
        },
    )
    report = check(registry)
    status, evidence, _ = item(report, "validation_performance")
    assert status == "fail" and f"report #{stored.id}" in evidence and "p99 ms" in evidence
    assert item(report, "validation_shadow")[0] == "pass"
    stored = validation_report(
        registry,
        {
            "quality": [passing("accuracy", 0.97)],
            "integration": [passing("max abs diff", 0.0)],
            "performance": [passing("p99 ms", 12.0)],
            "shadow": [passing("agreement", 0.995)],
        },
    )
    report = check(registry)
    for name in ("quality", "integration", "performance", "shadow"):
        status, evidence, _ = item(report, f"validation_{name}")
        assert status == "pass", evidence
        assert f"report #{stored.id} (default, {stored.created_at:%Y-%m-%d %H:%M} UTC)" in evidence
        assert "unchanged since" in evidence

    # approve: a request alone is not enough; another person's approval is
    request = approvals.request_promotion(store, DEPLOYMENT, "iris", 2, actor="dev")
    status, evidence, fix = item(check(registry), "approved")
    assert status == "fail" and "waiting" in evidence
    assert fix == f"slipway approvals approve {request.id}"
    approvals.decide(store, request.id, approve=True, actor="lead")
    status, evidence, _ = item(check(registry), "approved")
    assert status == "pass" and "by lead (requested by dev)" in evidence
    assert f"sha256:{report.digest[:12]}" in evidence

    # roll out: blue-green is a 100% switch; a canary is progressive
    actions.start(store, DEPLOYMENT, 2, RolloutConfig(strategy="bluegreen"))
    report = check(registry)
    status, evidence, fix = item(report, "rollout_strategy")
    assert status == "fail" and "bluegreen" in evidence
    assert fix == (
        f"slipway rollout abort {DEPLOYMENT} && slipway rollout start {DEPLOYMENT} 2"
        " --strategy canary --steps 5,25,50"
    )
    assert "candidate" in item(report, "rollback_target")[1]
    actions.abort(store, DEPLOYMENT)
    assert "was aborted" in item(check(registry), "rollout_strategy")[1]
    gates = GateConfig(business_metric="conversion")
    actions.start(store, DEPLOYMENT, 2, RolloutConfig(steps=[10.0, 50.0], gates=gates))
    report = check(registry)
    status, evidence, _ = item(report, "rollout_strategy")
    assert status == "pass" and "canary, steps 10/50%" in evidence and "running" in evidence
    status, evidence, _ = item(report, "business_metrics")
    assert status == "pass" and "conversion" in evidence

    # monitor: alert rules for this deployment (or for all), and somewhere to send them
    rules = AlertStore(store)
    report = check(registry)
    assert "no input and prediction drift alert rule" in item(report, "drift_monitors")[1]
    rules.add_rule(AlertRule("input-drift", "drift_score", 0.2, deployment=DEPLOYMENT))
    assert "no prediction drift alert rule" in item(check(registry), "drift_monitors")[1]
    rules.add_rule(AlertRule("output-drift", "prediction_drift", 0.2, deployment="*"))
    rules.add_rule(AlertRule("slow", "latency_p99", 0.25))
    rules.add_rule(AlertRule("other-errors", "error_rate", 0.01, deployment="other"))
    report = check(registry)
    assert item(report, "drift_monitors")[0] == "pass"
    assert item(report, "latency_alerts")[0] == "pass"
    assert item(report, "error_alerts")[0] == "fail"  # a rule for another deployment
    rules.add_rule(AlertRule("errors", "error_rate", 0.01, deployment=DEPLOYMENT))
    settings = dataclasses.replace(registry.settings, alert_webhooks=WEBHOOK)
    report = check(registry, settings)
    assert item(report, "error_alerts")[0] == "pass"
    status, evidence, _ = item(report, "alert_destinations")
    assert status == "pass" and "hooks.example.com" in evidence and "SECRET" not in evidence

    # promote: the canary's candidate becomes stable; the old stable stays warm
    actions.promote(store, DEPLOYMENT)
    report = check(registry, settings)
    assert item(report, "rollout_strategy")[0] == "pass"
    assert "previous version 1 kept warm" in item(report, "rollback_target")[1]

    # only the registry's database is left: SQLite cannot be shared by replicas
    assert [i.name for i in report.failed_required()] == ["shared_registry"]
    relaxed = ReadinessPolicy(items={"shared_registry": "optional"})
    assert check(registry, settings, policy=relaxed).ready
    # the deployment form judges the version it serves, on it
    served = evaluate_deployment(store, registry.artifacts, settings, DEPLOYMENT, policy=relaxed)
    assert (served.ref, served.deployment, served.ready) == ("iris@2", DEPLOYMENT, True)


def test_writing_a_bundle_records_it(bundle: tuple[Path, BundleManifest, Path]) -> None:
    out, manifest, home = bundle
    with Registry(settings_for(home)) as registry:
        (event,) = [e for e in registry.store.events("iris@2") if e.kind == "version.packaged"]
        report = check(registry)
    assert event.actor == "dev" and event.data["path"] == str(out.resolve())
    assert event.data["digest"] == manifest.version.digest
    assert event.data["lock"]["exact"] and event.data["lock"]["packages"] > 5
    assert event.data["dockerfile"] == {"stages": 2, "healthcheck": True, "non_root": True}
    assert event.data["kubernetes"]["shared_registry"]
    assert item(report, "packaged")[0] == "pass"


def test_a_busy_registry_still_shows_the_bundle_and_the_rollout(
    registry: Registry, bundle: tuple[Path, BundleManifest, Path]
) -> None:
    """The events the checklist looks for are found however many others came after them."""
    store = registry.store
    out, manifest, _ = bundle
    record_bundle(store, out, manifest, actor="dev")
    actions.start(store, DEPLOYMENT, 2, RolloutConfig(steps=[10.0, 50.0]))
    subjects = {"iris@2": "report.attached", f"deployment:{DEPLOYMENT}": "deployment.updated"}
    with writing(store) as session:
        for n in range(1001):
            for subject, kind in subjects.items():
                at = dt.datetime.now(dt.UTC)
                record_event(session, at=at, kind=kind, subject=subject, actor="ci", data={"n": n})
    report = check(registry)
    status, evidence, _ = item(report, "packaged")
    assert status == "pass" and str(out) in evidence, evidence
    status, evidence, _ = item(report, "rollout_strategy")
    assert status == "pass" and "canary, steps 10/50%" in evidence, evidence


def test_lineage_names_what_is_missing(registry: Registry) -> None:
    report = evaluate(registry.store, registry.artifacts, registry.settings, "iris", 1)
    status, evidence, fix = item(report, "lineage")
    assert status == "fail" and "missing training data reference" in evidence
    # What is missing is said once; what is there is shown, not a dash for each gap.
    assert evidence.startswith("missing training data reference, metrics (recorded: ")
    assert " - " not in evidence and "metrics -" not in evidence
    # iris@1 came from scikit-learn: its hyperparameters and data hash were recorded for it
    assert fix == "slipway models register iris MODEL_FILE --training-data REF --metric NAME=VALUE"
    # the first version of a deployment has nothing to roll out from, nor back to
    assert item(report, "rollout_strategy")[0] == "not applicable"
    assert item(report, "rollback_target")[0] == "not applicable"


def test_a_changed_artifact_fails_the_artifact_and_its_validation(registry: Registry) -> None:
    validation_report(registry, {"quality": [passing("accuracy", 0.97)]})
    version = registry.store.get_version("iris", 2)
    registry.artifacts.path(version.digest).write_bytes(b"not the model any more")
    report = check(registry)
    status, evidence, _ = item(report, "serialized")
    assert status == "fail" and "sha256" in evidence
    status, evidence, _ = item(report, "validation_quality")
    assert status == "fail" and "the artifact changed since" in evidence


def test_a_failed_validation_check_shows_why_it_failed(registry: Registry) -> None:
    from slipway.validation.checks import Check

    reason = "policy quality names metric(s) acc that a classification model does not have"
    validation_report(registry, {"quality": [Check("stage ran", None, "", "fail", reason)]})
    status, evidence, _ = item(check(registry), "validation_quality")
    assert status == "fail" and reason in evidence, evidence
    assert "(info)" not in evidence  # a failed check is not informational
    validation_report(registry, {"quality": [failing("accuracy", 0.5)]})
    status, evidence, _ = item(check(registry), "validation_quality")
    assert "accuracy 0.5 (>= 0.9): below the gate" in evidence, evidence


def test_an_approval_goes_stale_when_the_evidence_moves(registry: Registry) -> None:
    request = approvals.request_promotion(registry.store, DEPLOYMENT, "iris", 2, actor="dev")
    approvals.decide(registry.store, request.id, approve=True, actor="lead")
    assert item(check(registry), "approved")[0] == "pass"
    validation_report(registry, {"quality": [failing("accuracy")]})  # after the approval
    status, evidence, fix = item(check(registry), "approved")
    assert status == "fail" and "stale" in evidence
    assert fix == f"slipway approvals request {DEPLOYMENT} iris@2"


def test_deployment_settings_and_the_audit_chain(registry: Registry) -> None:
    off = dataclasses.replace(registry.settings, audit_predictions="off", monitoring=0)
    report = check(registry, off)
    assert item(report, "prediction_logging")[0] == "fail"
    assert "SLIPWAY_MONITORING=0" in item(report, "drift_monitors")[1]
    registry.store.update_deployment(
        DEPLOYMENT, inference=InferencePolicy(payload="redact", redact=["email"], keys=["id"])
    )
    status, evidence, _ = item(check(registry), "prediction_logging")
    assert status == "pass" and "payload policy redact, redacting email" in evidence
    # Tamper as a database owner would: the append-only triggers off, then an edit.
    engine = create_engine(registry.settings.database_url)
    with engine.begin() as conn:
        for trigger in ("audit_records_no_update", "audit_records_no_delete"):
            conn.exec_driver_sql(f"DROP TRIGGER {trigger}")
        conn.exec_driver_sql("UPDATE audit_records SET actor = 'mallory' WHERE seq = 2")
    engine.dispose()
    status, evidence, fix = item(check(registry), "audit_chain")
    assert status == "fail" and "does not verify" in evidence and fix == "slipway audit verify"


def test_no_deployment_and_a_named_one(registry: Registry) -> None:
    registry.store.delete_deployment(DEPLOYMENT)
    report = check(registry)
    assert report.deployment is None
    status, evidence, fix = item(report, "rollout_strategy")
    assert status == "fail" and fix == "slipway deploy DEPLOYMENT iris@2"
    assert item(report, "approved")[2] == "slipway approvals request DEPLOYMENT iris@2"
    registry.store.create_deployment("iris-a", "iris", 1)
    registry.store.create_deployment("iris-b", "iris", 1)
    assert check(registry).deployment is None  # two candidates, none serving iris@2
    assert check(registry, deployment="iris-b").deployment == "iris-b"


@pytest.mark.postgres
def test_a_shared_postgresql_registry(
    pg_fresh_url: str, tmp_path: Path, bundle: tuple[Path, BundleManifest, Path]
) -> None:
    from slipway.packaging.install import install_bundle

    out, manifest, _ = bundle
    settings = settings_for(tmp_path / "home", database_url=pg_fresh_url)
    with Registry(settings) as registry:
        install_bundle(out, registry.store, registry.artifacts)  # iris@2, under its number
        status, evidence, _ = item(check(registry), "shared_registry")
        assert status == "pass" and "PostgreSQL registry" in evidence  # the database alone
        record_bundle(registry.store, out, manifest)
        status, evidence, _ = item(check(registry), "shared_registry")
    assert status == "pass" and "read it from a Secret" in evidence
    assert settings.database_url not in evidence
