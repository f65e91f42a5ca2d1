"""The checklist items: one pure function each, from :class:`~.gather.Facts` to a verdict.

Each function returns ``(status, evidence, fix)``; ``fix`` is the exact ``slipway`` command (or,
where no command can do it, the setting) that turns a failure into a pass. :data:`ITEMS` lists
them in checklist order with their titles and whether they are required by default.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from slipway.monitoring.alerts import AlertRule
from slipway.readiness.gather import Facts
from slipway.readiness.report import Status
from slipway.rollout.policy import RolloutRecord

Verdict = tuple[Status, str, str | None]

PRODUCTION_FORMATS = ("onnx", "torchscript", "savedmodel", "gguf")
PROGRESSIVE = ("canary", "ab")  # blue-green and shadow put no partial live traffic on the candidate
LATENCY_KINDS = ("latency_p50", "latency_p95", "latency_p99")
KUBERNETES_KINDS = ("Deployment", "Service", "HorizontalPodAutoscaler")
HOLDOUT = "HOLDOUT.csv"
POLICY = "POLICY.yaml"
PLACEHOLDER = "DEPLOYMENT"


@dataclasses.dataclass(frozen=True)
class Item:
    """A checklist item: its name (used by ``--policy`` and ``--json``), title, check, and
    whether it is required unless a policy says otherwise."""

    name: str
    title: str
    check: Callable[[Facts], Verdict]
    required: bool = True


# -- helpers -----------------------------------------------------------------------------------


def _when(at: dt.datetime | str | None) -> str:
    if isinstance(at, str):
        try:
            at = dt.datetime.fromisoformat(at)
        except ValueError:
            return str(at)
    if at is None:
        return "-"
    return at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _ref(f: Facts) -> str:
    return f.version.ref


def _dep(f: Facts) -> str:
    return f.deployment.name if f.deployment is not None else PLACEHOLDER


def _register(f: Facts, flags: str = "") -> str:
    return f"slipway models register {f.version.model} MODEL_FILE{flags}"


def _package(f: Facts, flags: str = "") -> str:
    return f"slipway package {_ref(f)} --out {f.version.model}-{f.version.number}-bundle{flags}"


def _validate(f: Facts) -> str:
    return f"slipway validate {_ref(f)} --data {HOLDOUT} --policy {POLICY}"


def _no_deployment(f: Facts) -> Verdict:
    return (
        "fail",
        f"no deployment of model {f.version.model} serves or targets {_ref(f)}",
        f"slipway deploy {PLACEHOLDER} {_ref(f)}",
    )


def _rules_for(f: Facts, kinds: tuple[str, ...]) -> list[AlertRule]:
    """Rules of ``kinds`` that apply to the deployment ("*" applies to all)."""
    names = ("*",) if f.deployment is None else ("*", f.deployment.name)
    return [r for r in f.rules if r.kind in kinds and r.deployment in names]


def _describe_rules(rules: list[AlertRule]) -> str:
    return ", ".join(f"{r.name} ({r.kind} > {r.threshold:g}, {r.deployment})" for r in rules)


def _alert_fix(f: Facts, suffix: str, kind: str, threshold: str, extra: str = "") -> str:
    dep = _dep(f)
    return (
        f"slipway alerts add {dep}-{suffix} --kind {kind} --threshold {threshold}"
        f" --deployment {dep}{extra}"
    )


def _bundle(f: Facts) -> dict[str, Any] | None:
    return None if f.packaged is None else f.packaged.data


# -- packaging and the artifact ----------------------------------------------------------------


def packaged(f: Facts) -> Verdict:
    data = _bundle(f)
    if data is None:
        return "fail", f"no bundle of {_ref(f)} recorded", _package(f)
    problems = []
    if data.get("digest") != f.version.digest:
        problems.append("the bundle holds another artifact than the version's")
    lock = data.get("lock") or {}
    if not lock.get("exact"):
        loose = ", ".join(lock.get("loose") or []) or "none pinned"
        problems.append(f"the serving lock is not all exact == pins ({loose})")
    docker = data.get("dockerfile") or {}
    if (docker.get("stages") or 0) < 2:
        problems.append(f"the Dockerfile has {docker.get('stages') or 0} stage(s), not 2+")
    if not docker.get("healthcheck"):
        problems.append("the Dockerfile has no HEALTHCHECK")
    kinds = (data.get("kubernetes") or {}).get("kinds") or []
    missing = [k for k in KUBERNETES_KINDS if k not in kinds]
    if missing:
        problems.append(f"Kubernetes manifests lack {', '.join(missing)}")
    where = f"bundle {data.get('path')} (event #{f.packaged.id}, {_when(f.packaged.at)})"  # type: ignore[union-attr]
    if problems:
        return "fail", f"{where}: {'; '.join(problems)}", _package(f)
    hashed = ", hashed" if lock.get("hashed") else ""
    return (
        "pass",
        f"{where}: lock of {lock.get('packages')} exact pins{hashed}; Dockerfile"
        f" {docker.get('stages')} stages with HEALTHCHECK; Kubernetes {', '.join(kinds)}",
        None,
    )


def serialized(f: Facts) -> Verdict:
    v = f.version
    framework = v.meta.tags.get("framework")
    source = f" (from {framework})" if framework else ""
    if f.artifact_problem is not None:
        return "fail", f.artifact_problem, _register(f)
    if v.format not in PRODUCTION_FORMATS:
        return (
            "fail",
            f"format {v.format!r} is not a production format ({', '.join(PRODUCTION_FORMATS)})",
            _register(f, " --format onnx"),
        )
    if f.artifact_pickle:
        return "fail", "the stored artifact is a pickle", _register(f, " --format onnx")
    return (
        "pass",
        f"{v.format}{source}, artifact sha256:{v.digest[:12]} re-hashed and matching; not a pickle",
        None,
    )


def signature(f: Facts) -> Verdict:
    sig = f.version.signature

    def specs(items: list[Any]) -> str:
        return ", ".join(f"{s.name} {s.datatype} {s.shape}" for s in items) or "none"

    text = f"inputs: {specs(sig.inputs)}; outputs: {specs(sig.outputs)}"
    if not sig.inputs or not sig.outputs:
        return "fail", text, _register(f)
    return "pass", text, None


def reference_profile(f: Facts) -> Verdict:
    profile = f.version.profile
    if profile is None or not profile.features:
        return (
            "fail",
            "no reference profile of the training data recorded",
            _register(f, " --reference TRAINING_ROWS.csv"),
        )
    return (
        "pass",
        f"{profile.rows} training rows: {len(profile.features)} features,"
        f" {len(profile.predictions)} prediction columns",
        None,
    )


def lineage(f: Facts) -> Verdict:
    meta = f.version.meta
    missing, flags = [], ""
    if not meta.training_data:
        missing.append("training data reference")
        flags += " --training-data REF"
    if not meta.training_data_sha256:
        missing.append("training data sha256")
        flags += " --training-data-sha256 SHA256"
    if not meta.hyperparameters:
        missing.append("hyperparameters")
        flags += " --param NAME=VALUE"
    if not meta.metrics:
        missing.append("metrics")
        flags += " --metric NAME=VALUE"
    recorded = []
    if meta.training_data:
        recorded.append(f"training data {meta.training_data}")
    if meta.training_data_sha256:
        recorded.append(f"sha256:{meta.training_data_sha256[:12]}")
    if meta.hyperparameters:
        recorded.append(f"{len(meta.hyperparameters)} hyperparameters")
    if meta.metrics:
        metrics = ", ".join(f"{k}={val:.4g}" for k, val in sorted(meta.metrics.items()))
        recorded.append(f"metrics {metrics}")
    text = "; ".join(recorded)
    if missing:
        # A version is immutable: the metadata comes with a new registration.
        evidence = f"missing {', '.join(missing)}" + (f" (recorded: {text})" if text else "")
        return "fail", evidence, _register(f, flags)
    return "pass", text, None


# -- validation --------------------------------------------------------------------------------


def _stage(f: Facts, stage: str, *, optional_without_baseline: bool = False) -> Verdict:
    report = f.validation
    if report is None:
        if optional_without_baseline and f.baseline is None:
            return "not applicable", "no production version to compare against", None
        return "fail", f"no validation report on {_ref(f)}", _validate(f)
    where = f"report #{report.id} ({report.policy}, {_when(report.created_at)})"
    if f.artifact_problem is not None:
        return "fail", f"{where}: the artifact changed since: {f.artifact_problem}", _register(f)
    found = next((s for s in report.report.get("stages", []) if s.get("stage") == stage), None)
    if found is None:
        if optional_without_baseline and f.baseline is None:
            return "not applicable", f"{where}: no production version to compare against", None
        return (
            "fail",
            f"{where} has no {stage} stage; add a `{stage}:` section to the policy",
            _validate(f),
        )
    checks = found.get("checks", [])
    failed = [c for c in checks if c.get("verdict") == "fail"]
    shown = failed or [c for c in checks if c.get("verdict") == "pass"]
    detail = "; ".join(_check_text(c) for c in shown[:4])
    unchanged = f"artifact sha256:{f.version.digest[:12]} unchanged since"
    if failed:
        text = f"{where}: {len(failed)} of {len(checks)} checks fail: {detail}"
        return "fail", text, _validate(f)
    return "pass", f"{where}: {len(checks)} checks pass: {detail}; {unchanged}", None


def _check_text(check: dict[str, Any]) -> str:
    """``name value (threshold)``, and for a failed check why (a stage that raised has only
    its reason to show)."""
    text = f"{check.get('name')} {check.get('value')}"
    if check.get("threshold"):
        text += f" ({check['threshold']})"
    if check.get("verdict") == "fail" and check.get("detail"):
        text += f": {check['detail']}"
    return text


def validation_quality(f: Facts) -> Verdict:
    return _stage(f, "quality")


def validation_integration(f: Facts) -> Verdict:
    return _stage(f, "integration")


def validation_performance(f: Facts) -> Verdict:
    return _stage(f, "performance")


def validation_shadow(f: Facts) -> Verdict:
    return _stage(f, "shadow", optional_without_baseline=True)


# -- approval ----------------------------------------------------------------------------------


def approved(f: Facts) -> Verdict:
    dep = _dep(f)
    request_fix = f"slipway approvals request {dep} {_ref(f)}"
    if not f.requests:
        where = "" if f.deployment is None else f" on {dep}"
        return "fail", f"no promotion request for {_ref(f)}{where}", request_fix
    for r in f.requests:  # newest first
        if r.status not in ("approved", "promoted"):
            continue
        approvers = sorted(
            {d.actor for d in r.decisions if d.decision == "approve" and d.actor != r.requested_by}
        )
        if r.digest == f.version.digest and len(approvers) >= r.approvals_required:
            return (
                "pass",
                f"request #{r.id} on {r.deployment} {r.status} {_when(r.decided_at)} by"
                f" {', '.join(approvers)} (requested by {r.requested_by}), bound to"
                f" sha256:{r.digest[:12]}",
                None,
            )
    newest = f.requests[0]
    if newest.status == "pending":
        return (
            "fail",
            f"request #{newest.id} on {newest.deployment} is waiting for"
            f" {newest.approvals_required} approval(s) from someone other than"
            f" {newest.requested_by}",
            f"slipway approvals approve {newest.id}",
        )
    return (
        "fail",
        f"request #{newest.id} on {newest.deployment} is {newest.status}; no approval is bound to"
        f" sha256:{f.version.digest[:12]}",
        f"slipway approvals request {newest.deployment} {_ref(f)}",
    )


# -- rollout -----------------------------------------------------------------------------------


def _shape(r: RolloutRecord) -> str:
    if r.strategy == "canary":
        steps = "/".join(f"{s:g}" for s in r.config.steps)
        return f"steps {steps}% held {r.config.interval_s:g}s each with analysis gates"
    if r.strategy == "ab":
        return f"{r.config.weight:g}% of routing keys"
    return "all traffic switched at once"


def rollout_strategy(f: Facts) -> Verdict:
    d = f.deployment
    if d is None:
        return _no_deployment(f)
    n = f.version.number
    start = f"slipway rollout start {d.name} {n} --strategy canary --steps 5,25,50"
    mine = [r for r in f.rollouts if r.candidate == n]  # newest first
    if d.version == n:
        # Already stable: it got there through a promoted rollout, or by a direct switch.
        promoted = next((r for r in mine if r.status == "promoted"), None)
        if promoted is not None and promoted.strategy in PROGRESSIVE:
            return (
                "pass",
                f"rollout #{promoted.id} on {d.name}: {promoted.strategy}, {_shape(promoted)};"
                " promoted",
                None,
            )
        if promoted is None and d.previous_version is None:
            return "not applicable", f"first version on {d.name}: nothing to roll out from", None
        how = (
            "in one switch (slipway deploy), without a rollout"
            if promoted is None
            else f"by rollout #{promoted.id}, {promoted.strategy}: {_shape(promoted)}"
        )
        return (
            "fail",
            f"{_ref(f)} replaced version {d.previous_version} on {d.name} {how}",
            f"slipway rollback {d.name} && {start}",
        )
    if not mine:
        return "fail", f"no rollout of {_ref(f)} on {d.name} (it serves version {d.version})", start
    r = mine[0]
    if r.status in ("rolled_back", "aborted"):
        return "fail", f"rollout #{r.id} of {_ref(f)} on {d.name} was {r.status}", start
    if r.strategy in PROGRESSIVE:
        return "pass", f"rollout #{r.id} on {d.name}: {r.strategy}, {_shape(r)}; {r.status}", None
    return (
        "fail",
        f"rollout #{r.id} on {d.name} is {r.strategy}: no partial live traffic before the switch",
        f"slipway rollout abort {d.name} && {start}",
    )


def rollback_target(f: Facts) -> Verdict:
    d = f.deployment
    if d is None:
        return _no_deployment(f)
    n = f.version.number
    traffic = d.traffic
    if d.version != n:
        arms = () if traffic is None else (traffic.candidate, traffic.shadow)
        role = "candidate" if n in arms else "next version"
        return (
            "pass",
            f"{d.name} serves version {d.version}; it stays loaded as the rollback target while"
            f" {_ref(f)} is the {role}",
            None,
        )
    if d.previous_version is None:
        return "not applicable", f"first version on {d.name}: nothing to roll back to", None
    return (
        "pass",
        f"previous version {d.previous_version} kept warm on {d.name}"
        f" (`slipway rollback {d.name}`)",
        None,
    )


# -- monitoring --------------------------------------------------------------------------------


def drift_monitors(f: Facts) -> Verdict:
    if not f.monitoring:
        return (
            "fail",
            "monitoring is off (SLIPWAY_MONITORING=0): no drift capture",
            "set SLIPWAY_MONITORING=1 on every server",
        )
    profile = f.version.profile
    if profile is None or not profile.features or not profile.predictions:
        what = "inputs and predictions" if profile is None else "predictions"
        return (
            "fail",
            f"the reference profile has no {what} to compare live traffic with",
            _register(f, " --reference TRAINING_ROWS.csv"),
        )
    inputs = _rules_for(f, ("drift_score",))
    outputs = _rules_for(f, ("prediction_drift",))
    monitors = (
        f"{len(profile.features)} input features and {len(profile.predictions)} prediction"
        " columns watched against the reference profile"
    )
    fixes = []
    if not inputs:
        fixes.append(_alert_fix(f, "input-drift", "drift_score", "0.2"))
    if not outputs:
        fixes.append(_alert_fix(f, "prediction-drift", "prediction_drift", "0.2"))
    if fixes:
        missing = " and ".join(
            k for k, rules in (("input", inputs), ("prediction", outputs)) if not rules
        )
        return "fail", f"{monitors}; no {missing} drift alert rule", " && ".join(fixes)
    return "pass", f"{monitors}; alert rules {_describe_rules(inputs + outputs)}", None


def latency_alerts(f: Facts) -> Verdict:
    rules = _rules_for(f, LATENCY_KINDS)
    if not rules:
        return "fail", "no latency alert rule", _alert_fix(f, "latency", "latency_p99", "0.25")
    return "pass", _describe_rules(rules), None


def error_alerts(f: Facts) -> Verdict:
    rules = _rules_for(f, ("error_rate",))
    if not rules:
        return "fail", "no error-rate alert rule", _alert_fix(f, "errors", "error_rate", "0.01")
    return "pass", _describe_rules(rules), None


def business_metrics(f: Facts) -> Verdict:
    rules = _rules_for(f, ("business_metric",))
    gated = [r for r in f.rollouts if r.config.gates.business_metric]
    if rules:
        return "pass", _describe_rules(rules), None
    if gated:
        r = gated[0]
        return (
            "pass",
            f"rollout #{r.id} gates on business metric {r.config.gates.business_metric!r}",
            None,
        )
    return (
        "fail",
        "no business metric alert rule or rollout gate (feedback is not watched)",
        _alert_fix(f, "business", "business_metric", "FLOOR", " --metric METRIC"),
    )


def alert_destinations(f: Facts) -> Verdict:
    if not f.webhooks:
        return (
            "fail",
            "no alert webhooks (SLIPWAY_ALERT_WEBHOOKS is empty): alerts reach nobody",
            "set SLIPWAY_ALERT_WEBHOOKS=https://HOST/PATH on every server",
        )
    # Hosts only: webhook URLs often carry their secret in the path.
    hosts = ", ".join(urlparse(u).hostname or "?" for u in f.webhooks)
    return "pass", f"{len(f.webhooks)} webhook destination(s): {hosts}", None


# -- audit -------------------------------------------------------------------------------------


def prediction_logging(f: Facts) -> Verdict:
    if f.audit_predictions == "off":
        return (
            "fail",
            "prediction audit records are off (SLIPWAY_AUDIT_PREDICTIONS=off)",
            "set SLIPWAY_AUDIT_PREDICTIONS=fail-open (or fail-closed) on every server",
        )
    d = f.deployment
    if d is None:
        return _no_deployment(f)
    policy = d.inference
    extra = ""
    if policy.payload == "redact":
        extra = f", redacting {', '.join(policy.redact) or 'nothing'}"
    elif policy.payload == "sample":
        extra = f", {policy.sample_rate:g} in full"
    keys = f"; business keys {', '.join(policy.keys)}" if policy.keys else ""
    return (
        "pass",
        f"audit of predictions {f.audit_predictions}; {d.name} payload policy"
        f" {policy.payload}{extra}{keys}",
        None,
    )


def audit_chain(f: Facts) -> Verdict:
    v = f.audit
    if v is None or not v.ok:
        reason = f.audit_problem or (
            f"record {v.broken_seq}: {v.reason}" if v is not None else "not verified"
        )
        return (
            "fail",
            f"the audit chain does not verify: {reason}; restore audit_records from a backup",
            "slipway audit verify",
        )
    span = "empty" if v.records == 0 else f"records {v.first_seq}..{v.last_seq}"
    return "pass", f"{v.records} record(s) verify ({span}), head {v.head_hash[:12]}", None


# -- scale -------------------------------------------------------------------------------------


def shared_registry(f: Facts) -> Verdict:
    data = _bundle(f)
    from_secret = bool(data and (data.get("kubernetes") or {}).get("shared_registry"))
    if f.database != "postgresql":
        return (
            "fail",
            f"{f.database} registry {f.database_where}: replicas on other machines cannot share it",
            "set SLIPWAY_DATABASE_URL=postgresql+psycopg://USER@HOST/DB on every replica",
        )
    if data is not None and not from_secret:
        return (
            "fail",
            "the bundle's Deployment does not read SLIPWAY_DATABASE_URL from a Secret",
            _package(f),
        )
    secret = "; the manifests read it from a Secret" if from_secret else ""
    return "pass", f"PostgreSQL registry {f.database_where} shared by every replica{secret}", None


def scaling(f: Facts) -> Verdict:
    data = _bundle(f)
    flags = " --replicas 2 --max-replicas 10 --cpu 500m --memory 512Mi"
    if data is None:
        return "fail", f"no bundle of {_ref(f)} recorded, so no manifests", _package(f, flags)
    k8s = data.get("kubernetes") or {}
    requests = k8s.get("requests") or {}
    low, high = k8s.get("min_replicas"), k8s.get("max_replicas")
    problems = []
    if not requests.get("cpu") or not requests.get("memory"):
        problems.append("no CPU and memory requests")
    if low is None or high is None:
        problems.append("no HorizontalPodAutoscaler")
    elif high <= low:
        problems.append(f"the autoscaler cannot grow ({low}..{high} replicas)")
    if (k8s.get("replicas") or 0) < 2:
        problems.append(f"{k8s.get('replicas') or 0} replica(s): one failure stops serving")
    text = (
        f"requests cpu {requests.get('cpu', '-')} memory {requests.get('memory', '-')};"
        f" {k8s.get('replicas')} replicas, autoscaling {low}..{high}"
    )
    if problems:
        return "fail", f"{'; '.join(problems)} ({text})", _package(f, flags)
    return "pass", text, None


ITEMS: tuple[Item, ...] = (
    Item("packaged", "bundle: exact serving lock, multi-stage Dockerfile, manifests", packaged),
    Item("serialized", "production format, no pickle, artifact intact", serialized),
    Item("signature", "input/output signature recorded", signature),
    Item("reference_profile", "reference profile of the training data", reference_profile),
    Item("lineage", "training data, hyperparameters, metrics recorded", lineage),
    Item("validation_quality", "validated: quality gates", validation_quality),
    Item("validation_integration", "validated: integration through HTTP", validation_integration),
    Item(
        "validation_performance", "validated: performance against the SLA", validation_performance
    ),  # fmt: skip
    Item("validation_shadow", "validated: shadow agreement with production", validation_shadow),
    Item("approved", "approved by another person, bound to the digest", approved),
    Item("rollout_strategy", "progressive rollout (not a 100% switch)", rollout_strategy),
    Item("rollback_target", "rollback target kept warm", rollback_target),
    Item("drift_monitors", "drift monitors on inputs and predictions", drift_monitors),
    Item("latency_alerts", "latency alert rule", latency_alerts),
    Item("error_alerts", "error-rate alert rule", error_alerts),
    Item("business_metrics", "business metrics wired", business_metrics, required=False),
    Item("alert_destinations", "alert destinations set", alert_destinations),
    Item("prediction_logging", "prediction audit log with a payload policy", prediction_logging),
    Item("audit_chain", "audit chain verifies", audit_chain),
    Item("shared_registry", "replicas share one registry", shared_registry),
    Item("scaling", "resource requests and autoscaling in the manifests", scaling),
)
NAMES: tuple[str, ...] = tuple(item.name for item in ITEMS)
