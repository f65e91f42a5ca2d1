"""Files for the tools operators already run: a Grafana dashboard and Prometheus alerting rules.

The rules are the built-in alert rules (``alerts.py``) written as PromQL over the metrics
Slipway exports, so Prometheus fires what the server fires: latency quantiles and error rates
over ``rate(...[window])`` of the same histogram and counters, drift and business gauges as
they are. ``DEFAULT_RULES`` is what is exported when no rules are configured.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

from slipway.monitoring.alerts import QUANTILES, AlertRule

DEFAULT_RULES = [
    AlertRule(name="SlipwayLatencyP99High", kind="latency_p99", threshold=0.5, for_s=300),
    AlertRule(name="SlipwayErrorRateHigh", kind="error_rate", threshold=0.05, for_s=300),
    AlertRule(name="SlipwayFeatureDrift", kind="drift_score", threshold=0.2, for_s=900),
    AlertRule(name="SlipwayPredictionDrift", kind="prediction_drift", threshold=0.2, for_s=900),
    AlertRule(name="SlipwayQueueBacklog", kind="queue_depth", threshold=1000, for_s=120),
]


def _duration(seconds: float) -> str:
    """A Prometheus duration: whole seconds (``0s`` allowed for ``for``)."""
    return f"{max(0, math.ceil(seconds))}s"


def _quote(value: str) -> str:
    return json.dumps(value)


def _matchers(rule: AlertRule, *raw: str, **extra: str) -> str:
    pairs = [] if rule.deployment == "*" else [f"deployment={_quote(rule.deployment)}"]
    pairs += [f"{k}={_quote(v)}" for k, v in extra.items()]
    pairs += raw
    return "{" + ",".join(pairs) + "}" if pairs else ""


def rule_expr(rule: AlertRule) -> str:
    """The PromQL expression equivalent to ``rule``'s breach condition."""
    window = _duration(rule.window_s)
    if rule.kind in QUANTILES:
        rate = f"rate(slipway_request_duration_seconds_bucket{_matchers(rule)}[{window}])"
        return (
            f"histogram_quantile({QUANTILES[rule.kind]}, sum by (deployment, le) ({rate}))"
            f" > {rule.threshold!r}"
        )
    if rule.kind == "error_rate":
        m = _matchers(rule)
        errors = _matchers(rule, 'outcome=~"server_error|timeout"')
        return (
            f"sum by (deployment) (rate(slipway_requests_total{errors}[{window}]))"
            f" / sum by (deployment) (rate(slipway_requests_total{m}[{window}]))"
            f" > {rule.threshold!r}"
        )
    if rule.kind in ("drift_score", "prediction_drift"):
        drift = rule.kind == "drift_score"
        metric = "slipway_drift_score" if drift else "slipway_prediction_drift_score"
        label = "feature" if drift else "output"
        m = _matchers(rule, **({label: rule.feature} if rule.feature != "*" else {}))
        return f"max by (deployment) ({metric}{m}) > {rule.threshold!r}"
    if rule.kind == "business_metric":
        m = _matchers(rule, metric=rule.metric)
        return f"min by (deployment) (slipway_business_metric{m}) < {rule.threshold!r}"
    return f"sum by (deployment) (slipway_queue_depth_rows{_matchers(rule)}) > {rule.threshold!r}"


def _summary(rule: AlertRule) -> str:
    value = '{{ $value | printf "%.4g" }}'
    bound = "floor" if rule.floor else "limit"
    return f"{rule.kind} of {{{{ $labels.deployment }}}} is {value} ({bound} {rule.threshold:g})"


def alerting_rules(rules: Sequence[AlertRule]) -> dict[str, Any]:
    """A Prometheus rules document (one group) for ``rules``."""
    return {
        "groups": [
            {
                "name": "slipway",
                "rules": [
                    {
                        "alert": rule.name,
                        "expr": rule_expr(rule),
                        "for": _duration(rule.for_s),
                        "labels": {"severity": rule.severity, "slipway_kind": rule.kind},
                        "annotations": {
                            "summary": _summary(rule),
                            "description": rule.description or f"Slipway alert rule {rule.name}",
                        },
                    }
                    for rule in rules
                ],
            }
        ]
    }


def to_yaml(value: Any, indent: int = 0) -> str:
    """Block YAML for plain dicts, lists, strings and numbers (strings double-quoted)."""
    pad = "  " * indent
    if isinstance(value, dict):
        if not value:
            return pad + "{}\n"
        out = []
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                out.append(f"{pad}{key}:\n{to_yaml(item, indent + 1)}")
            else:
                out.append(f"{pad}{key}: {_scalar(item)}\n")
        return "".join(out)
    if isinstance(value, list):
        if not value:
            return pad + "[]\n"
        out = []
        for item in value:
            text = to_yaml(item, indent + 1)
            out.append(f"{pad}- {text.lstrip()}")
        return "".join(out)
    return pad + _scalar(value) + "\n"


def _scalar(value: Any) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


# -- Grafana -----------------------------------------------------------------------------------

_DS = {"type": "prometheus", "uid": "${datasource}"}
_SEL = 'deployment=~"$deployment"'


def _panel(
    title: str, targets: list[tuple[str, str]], *, unit: str = "short", x: int, y: int, w: int = 12
) -> dict[str, Any]:
    return {
        "type": "timeseries",
        "title": title,
        "datasource": _DS,
        "gridPos": {"h": 8, "w": w, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend, "datasource": _DS}
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def _row(title: str, y: int) -> dict[str, Any]:
    grid = {"h": 1, "w": 24, "x": 0, "y": y}
    return {"type": "row", "title": title, "collapsed": False, "gridPos": grid, "panels": []}


# (row title) or (panel title, unit, [(expr, legend)]); S = the deployment selector,
# R = Grafana's rate interval.
_LAYOUT: list[Any] = [
    "Traffic and latency",
    ("Requests per second by arm", "reqps", [
        ("sum by (deployment, version, arm) (rate(slipway_requests_total{S}[R]))",
         "{{deployment}} v{{version}} {{arm}}"),
    ]),
    ("Latency percentiles", "s", [
        ("histogram_quantile(" + str(v) + ", sum by (deployment, le) "
         "(rate(slipway_request_duration_seconds_bucket{S}[R])))",
         "{{deployment}} " + p.split("_")[1])
        for p, v in QUANTILES.items()
    ]),
    ("Errors by outcome", "reqps", [
        ('sum by (deployment, outcome) (rate(slipway_requests_total{S,outcome!="ok"}[R]))',
         "{{deployment}} {{outcome}}"),
    ]),
    ("Queue depth and in-flight", "short", [
        ("sum by (deployment) (slipway_queue_depth_rows{S})", "{{deployment}} queued rows"),
        ("sum by (deployment) (slipway_in_flight_requests{S})", "{{deployment}} in flight"),
    ]),
    ("Inference time and queue wait (p95)", "s", [
        ("histogram_quantile(0.95, sum by (model, le) "
         "(rate(slipway_inference_duration_seconds_bucket[R])))", "{{model}} inference"),
        ("histogram_quantile(0.95, sum by (model, le) "
         "(rate(slipway_queue_wait_seconds_bucket[R])))", "{{model}} queue wait"),
    ]),
    ("Mean batch size and drops", "short", [
        ("sum by (model) (rate(slipway_batch_size_rows_sum[R]))"
         " / sum by (model) (rate(slipway_batch_size_rows_count[R]))", "{{model}} rows per batch"),
        ("sum by (queue) (rate(slipway_side_queue_dropped_total[R]))", "{{queue}} drops/s"),
        ("sum by (deployment) (rate(slipway_shadow_dropped_total{S}[R]))",
         "{{deployment}} shadow drops/s"),
    ]),
    "Drift and business",
    ("Feature drift score (PSI)", "short", [
        ("max by (deployment, feature) (slipway_drift_score{S})", "{{deployment}} {{feature}}"),
    ]),
    ("Prediction drift score (PSI)", "short", [
        ("max by (deployment, output) (slipway_prediction_drift_score{S})",
         "{{deployment}} {{output}}"),
    ]),
    ("Drifted features and window rows", "short", [
        ("sum by (deployment) (slipway_drift_detected{S})", "{{deployment}} drifted features"),
        ("max by (deployment) (slipway_drift_window_rows{S})", "{{deployment}} window rows"),
    ]),
    ("Business metrics by arm", "short", [
        ("max by (deployment, arm, metric) (slipway_business_metric{S})",
         "{{deployment}} {{arm}} {{metric}}"),
    ]),
    ("Rollout weights", "percentunit", [
        ("max by (deployment, version) (slipway_rollout_weight{S})", "{{deployment}} v{{version}}"),
    ]),
    ("Alerts firing", "short", [
        ("max by (rule, deployment) (slipway_alerts_firing{S})", "{{rule}} {{deployment}}"),
    ]),
    "Resources",
    ("Process CPU and memory", "short", [
        ("rate(process_cpu_seconds_total[R])", "{{instance}} CPU cores"),
        ("process_resident_memory_bytes / 2^30", "{{instance}} RSS GiB"),
    ]),
    ("GPU", "percentunit", [
        ("slipway_gpu_utilization_ratio", "{{instance}} gpu{{gpu}} busy"),
        ("slipway_gpu_memory_used_bytes / slipway_gpu_memory_total_bytes",
         "{{instance}} gpu{{gpu}} memory"),
    ]),
]  # fmt: skip


def _expr(template: str) -> str:
    return (
        template.replace("{S,", "{" + _SEL + ",")
        .replace("{S}", "{" + _SEL + "}")
        .replace("[R]", "[$__rate_interval]")
    )


def dashboard(title: str = "Slipway", uid: str = "slipway") -> dict[str, Any]:
    """A Grafana dashboard over Slipway's metrics, with a deployment variable."""
    panels: list[dict[str, Any]] = []
    x, y = 0, 0
    for item in _LAYOUT:
        if isinstance(item, str):
            y += 0 if x == 0 else 8
            x = 0
            panels.append(_row(item, y))
            y += 1
            continue
        name, unit, targets = item
        panels.append(
            _panel(name, [(_expr(e), legend) for e, legend in targets], unit=unit, x=x, y=y)
        )
        x, y = (12, y) if x == 0 else (0, y + 8)
    for i, panel in enumerate(panels):
        panel["id"] = i + 1
    return {
        "uid": uid,
        "title": title,
        "tags": ["slipway"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Prometheus",
                },
                {
                    "name": "deployment",
                    "type": "query",
                    "datasource": _DS,
                    "query": "label_values(slipway_requests_total, deployment)",
                    "refresh": 2,
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "current": {"text": "All", "value": "$__all"},
                },
            ]
        },
        "panels": panels,
    }


def metric_names(expr: str) -> set[str]:
    """Metric names an expression reads (for checking a dashboard against a metrics page)."""
    names = set(re.findall(r"\b(slipway_[a-z_]+|process_[a-z_]+)\b", expr))
    return names
