"""The monitoring report's numbers (report_json) and its page (report_html)."""

from __future__ import annotations

from slipway.monitoring.report import report_html, report_json


def test_requests_by_outcome_are_the_servers_totals_not_the_timelines_last_points() -> None:
    # The timeline keeps the last 720 evaluations (an hour at the default interval); the
    # server's counters (slipway_requests_total) hold every request since it started. The
    # report's totals must be the counters' or they disagree with /metrics after an hour.
    timeline = [
        {"at": 1_800_000_000.0 + 5 * i, "requests": {"ok": 10.0}, "latency_p50": 0.01,
         "latency_p95": 0.02, "latency_p99": 0.03}
        for i in range(720)
    ]  # fmt: skip
    monitoring = {
        "deployment": "churn-prod",
        "versions": [],
        "timeline": timeline,
        "requests": {"ok": 90_000.0, "server_error": 12.0},
    }
    data = report_json(monitoring)
    assert data["requests_by_outcome"] == {"ok": 90_000.0, "server_error": 12.0}
    page = report_html(data)
    assert "<td>90000</td>" in page and "since the server started" in page


def test_a_deployment_without_traffic_or_profile_has_a_report() -> None:
    data = report_json({"deployment": "idle", "versions": [], "timeline": []})
    assert data["requests_by_outcome"] == {} and data["latency"] == []
    page = report_html(data)
    assert "No traffic recorded yet" in page and "<script" not in page


def test_the_report_says_why_there_is_no_drift_evaluation() -> None:
    """A served version without a reference profile can never be evaluated: say so, and how to
    give it one; otherwise the evaluation is only waiting for traffic."""
    policy = {
        "min_samples": 100,
        "alpha": 0.01,
        "psi_threshold": 0.2,
        "wasserstein_threshold": 0.25,
    }
    window = {"kind": "time", "size": 3600.0, "slots": 12}
    base = {"deployment": "churn-prod", "versions": [], "timeline": [], "policy": policy,
            "window": window}  # fmt: skip
    unprofiled = report_html(report_json({**base, "unprofiled": ["churn@2"]}))
    assert "churn@2 has no reference profile" in unprofiled and "--reference" in unprofiled
    waiting = report_html(report_json({**base, "unprofiled": []}))
    assert "no reference profile" not in waiting and "at least 100 captured" in waiting
    # Settings read as words, not as escaped JSON.
    assert "&quot;" not in waiting and "the last 3600 s in 12 slots" in waiting
    assert "minimum sample 100" in waiting and "(Benjamini–Hochberg) 0.01" in waiting
