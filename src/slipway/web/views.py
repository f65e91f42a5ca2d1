"""What each dashboard page shows, read from the same store queries and pure functions the
management API and the CLI use; no HTTP here.

Every function is blocking (registry reads) and is called from a thread, except the ones that
only read the serving process's in-memory monitoring state.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import TYPE_CHECKING, Any

import msgspec

from slipway.errors import RolloutNotFound
from slipway.governance import approvals, audit
from slipway.monitoring.alerts import ERROR_OUTCOMES, QUANTILES, histogram_quantile
from slipway.registry.records import DeploymentRecord
from slipway.rollout.reports import experiment_summary, rollout_status
from slipway.web import charts

if TYPE_CHECKING:
    from slipway.serving.app import SlipwayApp

_SERVING_KINDS = ("deployment.created", "deployment.version_changed", "deployment.deleted")
RATE_WINDOW_S = 60.0  # request rate, error rate and latency quantiles: over the last minute
_READINESS_STATUSES = ("pass", "fail", "not applicable")


def weights(record: DeploymentRecord) -> list[tuple[str, float]]:
    """The deployment's traffic split as ``(version, percent)``, stable first."""
    traffic = record.traffic
    if traffic is None or traffic.candidate is None or traffic.strategy == "shadow":
        return [(str(record.version), 100.0)]
    return [(str(record.version), 100.0 - traffic.weight), (str(traffic.candidate), traffic.weight)]


def live_numbers(app: SlipwayApp, deployment: str) -> dict[str, Any]:
    """Request rate, error rate and latency quantiles over the last ``RATE_WINDOW_S``, from the
    monitoring loop's traffic samples (the numbers its alert rules read); None without data."""
    plane = app.monitoring
    traffic = plane.traffic
    total_outcomes, total_buckets = traffic.delta(deployment, 0.0)
    timeline = list(plane.timeline.get(deployment, []))
    if timeline and timeline[0]["at"] >= time.time() - RATE_WINDOW_S:
        # Sampling began inside the window: the counters since start are the window's numbers
        # (a difference against the first sample would drop what it already counted).
        outcomes, buckets = total_outcomes, total_buckets
    else:
        outcomes, buckets = traffic.delta(deployment, RATE_WINDOW_S)
    count = sum(outcomes.values())
    recent = [p for p in timeline if p["at"] >= time.time() - RATE_WINDOW_S]
    span = len(recent) * app.settings.monitor_interval_s
    in_span = sum(sum(p["requests"].values()) for p in recent)
    numbers: dict[str, Any] = {
        "requests": int(sum(total_outcomes.values())),
        "rate": (in_span / span) if span > 0 else None,
        "error_rate": (sum(outcomes.get(o, 0.0) for o in ERROR_OUTCOMES) / count)
        if count > 0
        else None,
    }
    for name, q in QUANTILES.items():
        value = histogram_quantile(q, traffic.bounds, buckets) if count > 0 else None
        numbers[name.removeprefix("latency_") + "_ms"] = None if value is None else value * 1000
    return numbers


def drift_status(app: SlipwayApp, deployment: str) -> str:
    """The worst verdict over the deployment's evaluated versions: "drift", "ok", or "unknown"
    (not evaluated yet, or too few rows)."""
    verdicts: set[str] = set()
    for (name, _), result in app.monitoring.monitor.latest.items():
        if name == deployment:
            report = result.report
            verdicts.update(f.verdict for f in [*report.features, *report.predictions])
    if "drift" in verdicts:
        return "drift"
    return "ok" if "ok" in verdicts else "unknown"


def open_alerts(app: SlipwayApp) -> list[dict[str, Any]]:
    return [
        msgspec.to_builtins(s)
        for s in app.monitoring.states.values()
        if s.state in ("pending", "firing")
    ]


def overview(app: SlipwayApp) -> dict[str, Any]:
    """Every deployment with its versions, split, live numbers, alerts and drift status."""
    alerts = open_alerts(app)
    rows = []
    for record in app.store.list_deployments():
        split = weights(record)
        rows.append(
            {
                "name": record.name,
                "model": record.model,
                "version": record.version,
                "previous_version": record.previous_version,
                "production": record.production,
                "strategy": record.traffic.strategy if record.traffic else None,
                "weights": split,
                "split_svg": str(charts.split(split)),
                "alerts": sum(1 for a in alerts if a["deployment"] == record.name),
                "drift": drift_status(app, record.name),
                **live_numbers(app, record.name),
            }
        )
    return {"deployments": rows, "alerts": alerts, "at": time.time()}


def model_page(app: SlipwayApp, model: str) -> dict[str, Any]:
    store = app.store
    record = store.get_model(model)
    versions = store.list_versions(model)
    serving = [d for d in store.list_deployments() if d.model == model]
    return {"model": record, "versions": versions, "deployments": serving}


def version_page(app: SlipwayApp, model: str, number: int) -> dict[str, Any]:
    """Metadata, lineage, metrics, evidence reports, and where the version served and when
    (the registry's deployment events that name it)."""
    store = app.store
    version = store.get_version(model, number)
    reports = approvals.list_reports(store, model, number)
    history = []
    # Every deployment change of these kinds, however many newer events of others there are.
    for event in reversed(store.events(kinds=_SERVING_KINDS, limit=None)):  # oldest first
        data = event.data if isinstance(event.data, dict) else {}
        before, after = data.get("before") or {}, data.get("after") or {}
        deployment = event.subject.removeprefix("deployment:")
        if after.get("model") == model and after.get("version") == number:
            history.append(
                {
                    "at": event.at,
                    "deployment": deployment,
                    "what": "started serving",
                    "actor": event.actor,
                }
            )
        elif before.get("model") == model and before.get("version") == number:
            history.append(
                {
                    "at": event.at,
                    "deployment": deployment,
                    "what": "stopped serving",
                    "actor": event.actor,
                }
            )
    return {"version": version, "reports": reports, "history": history}


def rollout_page(app: SlipwayApp, deployment: str) -> dict[str, Any]:
    """The current or last rollout (``rollout_status``, as the API and CLI show it), or just the
    deployment when it never had one."""
    store = app.store
    record = store.get_deployment(deployment)
    versions = store.list_versions(record.model)
    try:
        status = rollout_status(store, deployment)
    except RolloutNotFound:
        status = None
    return {
        "deployment": record,
        "versions": versions,
        "status": status,
        "split_svg": charts.split(weights(record)),
        "active": status is not None and status["rollout"]["status"] in ("running", "paused"),
    }


def experiment_page(app: SlipwayApp, deployment: str, alpha: float) -> dict[str, Any]:
    app.store.get_deployment(deployment)
    try:
        summary = experiment_summary(app.store, deployment, alpha=alpha)
    except RolloutNotFound:
        summary = None
    return {"deployment": deployment, "summary": summary, "alpha": alpha}


def drift_page(app: SlipwayApp, deployment: str) -> dict[str, Any]:
    """Per version and feature: reference vs live distributions as charts, scores, verdicts;
    latency and request charts from the monitoring timeline."""
    from slipway.monitoring.report import unprofiled_words
    from slipway.serving.monitoring_plane import drift_json

    record = app.store.get_deployment(deployment)
    versions = []
    for (name, _), result in sorted(app.monitoring.monitor.latest.items()):
        if name != deployment:
            continue
        data = drift_json(result)
        for family in ("features", "predictions"):
            for item in data[family]:
                item["chart"] = _distribution_chart(item)
        versions.append(data)
    timeline = list(app.monitoring.timeline.get(deployment, []))
    latency = charts.line(
        [
            (p["at"], None if p["latency_p95"] is None else p["latency_p95"] * 1000)
            for p in timeline
        ],
        title="p95 latency (ms)",
        unit=" ms",
    )
    requests = charts.line(
        [(p["at"], float(sum(p["requests"].values()))) for p in timeline],
        title="requests per interval",
    )
    return {
        "deployment": record,
        "versions": versions,
        "latency_svg": latency,
        "requests_svg": requests,
        "monitoring": bool(app.settings.monitoring),
        "unprofiled": [unprofiled_words(ref) for ref in app.monitoring.unprofiled(deployment)],
    }


def _distribution_chart(item: dict[str, Any]) -> Any:
    dist = item["distribution"]
    if "edges" in dist:
        edges = dist["edges"]
        labels = ["<"] + [f"{e:.3g}" for e in edges[:-1]] + [">"]
        labels = labels[: len(dist["reference"])]
        series = [("reference", dist["reference"]), ("live", dist["current"])]
    else:
        labels = sorted(set(dist["reference"]) | set(dist["current"]))
        series = [
            ("reference", [dist["reference"].get(k, 0) for k in labels]),
            ("live", [dist["current"].get(k, 0) for k in labels]),
        ]
    return charts.bars([str(x) for x in labels], series, title=item["name"])


def approvals_page(app: SlipwayApp, status: str | None) -> dict[str, Any]:
    requests = approvals.list_requests(app.store, status=status or None)
    return {"requests": requests, "status": status or ""}


def approval_page(app: SlipwayApp, request_id: int) -> dict[str, Any]:
    return {"request": approvals.get_request(app.store, request_id)}


def readiness_page(
    app: SlipwayApp,
    model: str | None = None,
    version: int | None = None,
    *,
    deployment: str | None = None,
) -> dict[str, Any]:
    """The production readiness checklist, as ``GET /api/readiness/...`` returns it: of
    ``model@version`` (latest when None; deployment items judged on ``deployment`` when given),
    or with ``model`` None, of the version ``deployment`` serves."""
    from slipway.readiness import evaluate_deployment, evaluate_version

    store, artifacts, settings = app.store, app.artifacts, app.settings
    if model is None:
        assert deployment is not None
        report = evaluate_deployment(store, artifacts, settings, deployment)
    else:
        report = evaluate_version(store, artifacts, settings, model, version, deployment=deployment)
    counts = {s: sum(1 for i in report.items if i.status == s) for s in _READINESS_STATUSES}
    return {
        "report": report,
        "failed": [i.name for i in report.failed_required()],
        "counts": counts,
        "of_deployment": model is None,
    }


def audit_page(app: SlipwayApp, filters: dict[str, Any], limit: int) -> dict[str, Any]:
    """Matching records (newest last, as the API returns them) and the chain's verification."""
    records = audit.query(app.store, limit=limit, **filters)
    verification = audit.verify(app.store)
    return {"records": records, "verification": verification}


def parse_time(raw: str, what: str) -> dt.datetime:
    """An ISO 8601 time from a form field (a browser's datetime-local has no zone: UTC)."""
    from slipway.errors import InvalidInput

    try:
        value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{what} must be an ISO 8601 time, got {raw!r}") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
