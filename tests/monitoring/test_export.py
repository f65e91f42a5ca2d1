"""Exported Prometheus rules (promtool checks them and fires them on synthetic series) and the
Grafana dashboard document."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from slipway.monitoring import export
from slipway.monitoring.alerts import KINDS, AlertRule

EVERY_KIND = [
    AlertRule(
        name=f"rule_{kind}",
        kind=kind,  # type: ignore[arg-type]
        threshold=0.5,
        deployment="churn-prod" if i % 2 else "*",
        feature="x0" if kind == "drift_score" else "*",
        metric="conversion" if kind == "business_metric" else "",
        for_s=60,
    )
    for i, kind in enumerate(KINDS)
]


def test_rules_for_every_kind_pass_promtool(tmp_path: Path, promtool: str) -> None:
    path = tmp_path / "rules.yml"
    path.write_text(export.to_yaml(export.alerting_rules(EVERY_KIND)))
    check = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"{len(KINDS)} rules found" in check.stdout


UNIT_TEST = """
rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'slipway_requests_total{deployment="churn-prod",arm="stable",outcome="ok"}'
        values: '0+80x15'
      - series: 'slipway_requests_total{deployment="churn-prod",outcome="server_error"}'
        values: '0+20x15'
      - series: 'slipway_business_metric{deployment="churn-prod",arm="stable",metric="conversion"}'
        values: '0.5x5 0.01x10'
    alert_rule_test:
      - eval_time: 3m
        alertname: errors
        exp_alerts: []
      - eval_time: 12m
        alertname: errors
        exp_alerts:
          - exp_labels: {deployment: churn-prod, severity: page, slipway_kind: error_rate}
            exp_annotations:
              summary: "error_rate of churn-prod is 0.2 (limit 0.1)"
              description: "Slipway alert rule errors"
      - eval_time: 12m
        alertname: conversion
        exp_alerts:
          - exp_labels: {deployment: churn-prod, severity: warning, slipway_kind: business_metric}
            exp_annotations:
              summary: "business_metric of churn-prod is 0.01 (floor 0.05)"
              description: "Slipway alert rule conversion"
"""


def test_exported_rules_fire_like_the_built_in_ones(tmp_path: Path, promtool: str) -> None:
    rules = [
        AlertRule(name="errors", kind="error_rate", threshold=0.1, for_s=300, window_s=300,
                  severity="page"),
        AlertRule(name="conversion", kind="business_metric", metric="conversion",
                  threshold=0.05, for_s=120),
    ]  # fmt: skip
    (tmp_path / "rules.yml").write_text(export.to_yaml(export.alerting_rules(rules)))
    (tmp_path / "test.yml").write_text(UNIT_TEST)
    result = subprocess.run(
        [promtool, "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_yaml_scalars_are_quoted_safely() -> None:
    text = export.to_yaml({"a": 'say "hi"\n', "b": [1, 2.5], "c": {}, "d": True})
    assert text == 'a: "say \\"hi\\"\\n"\nb:\n  - 1\n  - 2.5\nc: {}\nd: true\n'


def test_dashboard_has_the_panels_operators_expect() -> None:
    board = export.dashboard()
    titles = [p["title"] for p in board["panels"]]
    for wanted in [
        "Requests per second by arm", "Latency percentiles", "Errors by outcome",
        "Feature drift score (PSI)", "Prediction drift score (PSI)", "Rollout weights",
        "Process CPU and memory", "GPU", "Business metrics by arm",
    ]:  # fmt: skip
        assert wanted in titles
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    json.dumps(board)  # plain JSON
    assert any(
        "histogram_quantile(0.99" in t["expr"]
        for p in board["panels"]
        for t in p.get("targets", [])
    )


@pytest.mark.parametrize("seconds", [0, 0.2, 59.5, 300])
def test_durations_are_whole_seconds(seconds: float) -> None:
    assert export._duration(seconds).endswith("s") and "." not in export._duration(seconds)
