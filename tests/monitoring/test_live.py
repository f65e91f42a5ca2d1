"""End to end against a live server with real traffic: drift verdicts and gauges, alert rules
through the API firing and resolving, webhooks, `slipway alerts`, reports and exports."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from slipway.cli import app as cli
from slipway.server import BackgroundServer
from slipway.settings import Settings

from ..auth import admin_headers, admin_token
from ..test_cli import slipway
from .conftest import Receiver, v2_body


def _send(http: httpx.Client, rows: np.ndarray, batch: int = 20, pause_s: float = 0.0) -> None:
    for start in range(0, len(rows), batch):
        time.sleep(pause_s)
        response = http.post(
            "/v2/models/cancer-prod/infer", json=v2_body(rows[start : start + batch])
        )
        assert response.status_code == 200, response.text


def _until(check, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def _events(receiver: Receiver, rule: str) -> list[str]:
    return [b["event"]["state"] for b in receiver.bodies if b["event"]["rule"] == rule]


def test_drift_and_alerts_end_to_end(
    http: httpx.Client,
    server: BackgroundServer,
    settings: Settings,
    receiver: Receiver,
    cancer,
    promtool: str,
    tmp_path: Path,
) -> None:
    x, _ = cancer
    rng = np.random.default_rng(0)
    # Rules through the API; a malformed one is a clear 400 and the server keeps serving.
    bad = http.post("/api/alerts/rules", json={"name": "x", "kind": "nope", "threshold": 1})
    assert bad.status_code == 400 and "error" in bad.json()
    rules = [
        {"name": "any-latency", "kind": "latency_p99", "threshold": 0.0, "for_s": 0.3,
         "window_s": 1.0},
        {"name": "drift", "kind": "drift_score", "threshold": 0.2, "for_s": 0.0,
         "deployment": "cancer-prod"},
        {"name": "errors", "kind": "error_rate", "threshold": 0.5, "for_s": 0.0},
    ]  # fmt: skip
    for rule in rules:
        assert http.post("/api/alerts/rules", json=rule).status_code == 201
    assert http.post("/api/alerts/rules", json=rules[0]).status_code == 400  # taken
    assert [r["name"] for r in http.get("/api/alerts/rules").json()] == [
        "any-latency", "drift", "errors",
    ]  # fmt: skip

    # Same-distribution traffic: the latency rule fires after its `for`, drift stays quiet.
    # Paced over ~2 s so the 1 s latency window stays full for longer than the rule's `for`.
    _send(http, x[rng.integers(0, len(x), 600)], pause_s=0.07)
    assert _until(lambda: "firing" in _events(receiver, "any-latency"))
    assert receiver.attempts > len(receiver.bodies)  # the first delivery failed and was retried
    monitoring = _until(
        lambda: (
            (m := http.get("/api/monitoring/cancer-prod").json())["versions"]
            and m["versions"][0]["rows"] == 600
            and m
        )
    )
    version = monitoring["versions"][0]
    assert len(version["features"]) == 30 and version["predictions"]
    assert all(f["verdict"] == "stable" for f in version["features"])
    # Traffic stops: the latency window empties and the alert resolves.
    assert _until(lambda: "resolved" in _events(receiver, "any-latency"))
    assert "drift" not in {b["event"]["rule"] for b in receiver.bodies}

    # Shifted inputs fill the row window: drift fires, gauges show it.
    shifted = x[rng.integers(0, len(x), 2000)] * np.float32(1.5)
    _send(http, shifted, batch=50)
    assert _until(lambda: "firing" in _events(receiver, "drift"))
    metrics = http.get("/metrics").text
    assert re.search(
        r'slipway_drift_detected\{deployment="cancer-prod",feature="x0",version="1"\} 1\.0', metrics
    )
    assert re.search(
        r'slipway_drift_score\{deployment="cancer-prod",feature="x0",version="1"\} [0-9.]+', metrics
    )
    assert 'slipway_prediction_drift_score{deployment="cancer-prod"' in metrics
    drifted = http.get("/api/monitoring/cancer-prod").json()["versions"][0]
    assert sum(f["verdict"] == "drift" for f in drifted["features"]) >= 20
    assert "errors" not in {b["event"]["rule"] for b in receiver.bodies}

    # Stored events and `slipway alerts`.
    listed = http.get("/api/alerts").json()
    assert {(e["rule"], e["state"]) for e in listed["events"]} >= {
        ("any-latency", "firing"), ("any-latency", "resolved"), ("drift", "firing"),
    }  # fmt: skip
    runner = CliRunner()
    env = {
        "SLIPWAY_HOME": str(settings.home),
        "COLUMNS": "200",
        "SLIPWAY_TOKEN": admin_token(settings),
    }
    result = runner.invoke(cli, ["alerts", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert {"any-latency", "drift"} <= {e["rule"] for e in json.loads(result.output)}
    result = runner.invoke(cli, ["alerts", "rules"], env=env)
    assert result.exit_code == 0 and "any-latency" in result.output

    # The report: self-contained HTML and JSON with the same numbers.
    html_path, json_path = tmp_path / "r.html", tmp_path / "r.json"
    result = runner.invoke(
        cli,
        ["monitor", "report", "cancer-prod", "--url", server.url, "--out", str(html_path),
         "--json", str(json_path)],
        env=env,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    page = html_path.read_text()
    assert page.count("<svg") >= 32 and "<script" not in page and 'src="http' not in page
    data = json.loads(json_path.read_text())
    assert data["versions"][0]["features"][0]["name"] == "x0"
    assert data["latency"]
    served: dict[str, float] = {}  # slipway_requests_total of cancer-prod, by outcome
    for labels, value in _series(http, "slipway_requests_total").items():
        if dict(labels)["deployment"] == "cancer-prod":
            served[dict(labels)["outcome"]] = served.get(dict(labels)["outcome"], 0.0) + value
    assert data["requests_by_outcome"] == served == {"ok": 30 + 40}  # 600 rows by 20, 2000 by 50
    assert f"<td>{served['ok']:.0f}</td>" in page
    assert any(a["rule"] == "drift" for a in data["alerts"])

    # Exports: the rules pass promtool; the dashboard reads only metrics the server exports.
    out = tmp_path / "export"
    result = runner.invoke(cli, ["monitor", "export", "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    check = subprocess.run(
        [promtool, "check", "rules", str(out / "slipway-alerts.rules.yml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert check.returncode == 0 and "3 rules found" in check.stdout, check.stdout + check.stderr
    from slipway.monitoring.export import metric_names

    dashboard = json.loads((out / "slipway-dashboard.json").read_text())
    wanted = {
        n
        for p in dashboard["panels"]
        for t in p.get("targets", [])
        for n in metric_names(t["expr"])
    }
    page_names = set(re.findall(r"^# TYPE (\S+)", metrics, re.M))
    exported = page_names | {n + s for n in page_names for s in ("_bucket", "_sum", "_count")}
    missing = {n for n in wanted if n not in exported}
    assert not missing


def test_monitoring_off_captures_nothing(tmp_path: Path, registry, cancer) -> None:
    settings = Settings.from_env(
        {"SLIPWAY_HOME": str(registry.settings.home)}, port=0, monitoring=0
    )
    headers = admin_headers(settings)
    with (
        BackgroundServer(settings) as server,
        httpx.Client(base_url=server.url, headers=headers) as http,
    ):
        _send(http, cancer[0][:100])
        time.sleep(0.5)  # several evaluation intervals
        monitor = server.app.monitor
        assert monitor.dropped == 0 and monitor.fold_pending() == 0 and not monitor.latest


def test_the_monitoring_document_names_versions_without_a_profile(
    tmp_path: Path, registry, cancer, cancer_model, settings: Settings
) -> None:
    """A version registered without reference data can never be checked for drift: the
    monitoring document (and so the report) names it rather than waiting forever."""
    from skl2onnx import to_onnx

    path = tmp_path / "cancer.onnx"
    exported = to_onnx(cancer_model, cancer[0][:1], options={"zipmap": False}, target_opset=17)
    path.write_bytes(exported.SerializeToString())
    bare = registry.register_onnx("cancer", path)
    assert bare.profile is None
    registry.store.create_deployment("no-profile", "cancer", bare.number)
    with (
        BackgroundServer(settings) as server,
        httpx.Client(base_url=server.url, headers=admin_headers(settings)) as http,
    ):
        assert http.get("/api/monitoring/no-profile").json()["unprofiled"] == [bare.ref]
        assert http.get("/api/monitoring/cancer-prod").json()["unprofiled"] == []
        with httpx.Client(base_url=server.url) as browser:  # the dashboard signs in
            token = admin_headers(settings)["authorization"].split()[-1]
            signed = browser.post(
                "/ui/signin",
                data={"token": token, "next": "/ui"},
                headers={"origin": server.url},
            )
            assert signed.status_code == 303, signed.text
            page = browser.get("/ui/deployments/no-profile/drift")
        assert page.status_code == 200 and f"{bare.ref} has no reference profile" in page.text


def test_requests_count_under_their_arm_from_the_rollouts_first_request(
    tmp_path: Path, cancer, cancer_model
) -> None:
    """The arm label follows the routing table as soon as it changes, not the next
    monitoring tick (an hour away here)."""
    from sklearn.linear_model import LogisticRegression

    from slipway.local import Registry

    from .conftest import monitoring_settings

    x, y = cancer
    settings = monitoring_settings(tmp_path / "home", monitor_interval_s=3600.0)
    with Registry(settings) as registry:
        registry.register_sklearn("cancer", cancer_model, x)
        registry.register_sklearn("cancer", LogisticRegression(C=0.01, max_iter=2000).fit(x, y), x)
        registry.store.create_deployment("cancer-prod", "cancer", 1)
    with (
        BackgroundServer(settings) as server,
        httpx.Client(base_url=server.url, headers=admin_headers(settings), timeout=10) as http,
    ):
        body = {"version": 2, "strategy": "ab", "weight": 50, "routing_key": "X-User-Id"}
        assert http.post("/api/deployments/cancer-prod/rollout", json=body).status_code == 201
        served = {1: 0, 2: 0}
        for user in range(40):
            response = http.post(
                "/v2/models/cancer-prod/infer",
                json=v2_body(x[user : user + 1]),
                headers={"X-User-Id": f"u{user}"},
            )
            assert response.status_code == 200, response.text
            served[int(response.json()["model_version"])] += 1
        assert served[1] and served[2]
        text = http.get("/metrics").text
    for arm, version in (("stable", 1), ("candidate", 2)):
        line = (
            f'slipway_requests_total{{arm="{arm}",deployment="cancer-prod",outcome="ok",'
            f'version="{version}"}} {float(served[version])}'
        )
        assert line in text, (line, served)


def test_business_metric_per_arm_from_feedback_fires_a_floor_alert(
    tmp_path: Path, cancer, cancer_model
) -> None:
    import uuid

    from sklearn.linear_model import LogisticRegression

    from slipway.local import Registry

    from .conftest import monitoring_settings

    x, y = cancer
    with Receiver() as receiver:
        settings = monitoring_settings(
            tmp_path / "home", alert_webhooks=receiver.url, evidence_flush_interval_s=0.2
        )
        with Registry(settings) as registry:
            registry.register_sklearn("cancer", cancer_model, x)
            registry.register_sklearn(
                "cancer", LogisticRegression(C=0.01, max_iter=2000).fit(x, y), x
            )
            registry.store.create_deployment("cancer-prod", "cancer", 1)
        headers = admin_headers(settings)
        with (
            BackgroundServer(settings) as server,
            httpx.Client(base_url=server.url, headers=headers, timeout=10) as http,
        ):
            rule = {"name": "conversion", "kind": "business_metric", "metric": "converted",
                    "threshold": 0.3, "for_s": 0}  # fmt: skip
            assert http.post("/api/alerts/rules", json=rule).status_code == 201
            body = {"version": 2, "strategy": "ab", "weight": 50, "routing_key": "X-User-Id"}
            assert http.post("/api/deployments/cancer-prod/rollout", json=body).status_code == 201
            served = {1: 0, 2: 0}
            for user in range(60):
                request_id = uuid.uuid4().hex
                response = http.post(
                    "/v2/models/cancer-prod/infer",
                    json=v2_body(x[user : user + 1]),
                    headers={"X-User-Id": f"u{user}", "X-Request-Id": request_id},
                )
                assert response.status_code == 200, response.text
                version = int(response.json()["model_version"])
                served[version] += 1
                converted = 1 if version == 1 else 0  # the candidate converts nobody
                feedback = {"request_id": request_id, "values": {"converted": converted}}
                assert http.post("/api/feedback", json=feedback).status_code == 201
            assert served[1] and served[2]
            assert _until(lambda: "firing" in _events(receiver, "conversion"), timeout=20)
            text = http.get("/metrics").text
            assert re.search(
                r'slipway_requests_total\{arm="candidate",deployment="cancer-prod",outcome="ok",'
                r'version="2"\} [1-9]',
                text,
            )
            labels = 'deployment="cancer-prod",metric="converted"'
            assert f'slipway_business_metric{{arm="candidate",{labels}}} 0.0' in text
            assert f'slipway_business_metric{{arm="stable",{labels}}} 1.0' in text

            # The rollout ends: the built-in rule resolves (no data), and the per-arm series
            # leave the page, so the exported Prometheus rule over them resolves too instead
            # of firing on the last value forever.
            aborted = http.post("/api/deployments/cancer-prod/rollout/abort", json={})
            assert aborted.status_code == 200, aborted.text
            assert _until(lambda: "resolved" in _events(receiver, "conversion"), timeout=20)
            assert _until(lambda: not _series(http, "slipway_business_metric"))


def _series(http: httpx.Client, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(http.get("/metrics").text)
        for s in family.samples
        if s.name == name
    }


def test_series_of_deleted_rules_and_undeployed_versions_leave_the_metrics_page(
    http: httpx.Client, registry, receiver: Receiver, cancer, cancer_model
) -> None:
    x, _ = cancer
    firing = (("deployment", "cancer-prod"), ("rule", "any"))
    rule = {"name": "any", "kind": "latency_p99", "threshold": 0.0, "for_s": 0.0}
    assert http.post("/api/alerts/rules", json=rule).status_code == 201
    _send(http, x[:200])  # also past drift_min_samples: version 1 gets drift series
    assert _until(lambda: _series(http, "slipway_alerts_firing").get(firing) == 1.0)
    assert _until(lambda: _series(http, "slipway_drift_score"))
    assert http.delete("/api/alerts/rules/any").status_code in (200, 204)
    changes = [(e.kind, e.actor) for e in registry.store.events(subject="alert_rule:any")]
    assert changes == [("alert_rule.deleted", "admin"), ("alert_rule.added", "admin")]
    assert _until(lambda: firing not in _series(http, "slipway_alerts_firing"))
    # A receiver that opened an incident on the firing gets it closed.
    assert _until(lambda: _events(receiver, "any") == ["firing", "resolved"])
    resolved = [b["event"] for b in receiver.bodies if b["event"]["state"] == "resolved"]
    assert "removed while firing" in resolved[0]["message"]

    # Version 1 -> 2 -> 3: version 1 is neither served nor the warm previous version.
    for number in (2, 3):
        registry.register_sklearn("cancer", cancer_model, x)
        registry.store.set_deployment_version("cancer-prod", number)
        assert _until(
            lambda n=number: (
                http.post("/v2/models/cancer-prod/infer", json=v2_body(x[:1])).json()[
                    "model_version"
                ]
                == str(n)
            )
        )
    weights = _until(
        lambda: (
            (w := _series(http, "slipway_rollout_weight"))
            and {dict(k)["version"] for k in w} == {"3"}
            and w
        )
    )
    assert list(weights.values()) == [1.0]
    assert _until(
        lambda: not any(
            dict(k)["version"] == "1"
            for name in ("slipway_drift_score", "slipway_drift_p_value", "slipway_drift_detected",
                         "slipway_drift_window_rows", "slipway_prediction_drift_score",
                         "slipway_queue_depth_rows")
            for k in _series(http, name)
        )
    )  # fmt: skip


def test_a_stored_rule_named_like_a_file_rule_does_not_refire_every_evaluation(
    tmp_path: Path, registry, cancer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from slipway.monitoring.alert_store import AlertStore
    from slipway.monitoring.alerts import AlertRule

    from .conftest import monitoring_settings

    x, _ = cancer
    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[[rules]]\nname = "slow"\nkind = "latency_p50"\nthreshold = 0.0\nfor_s = 0\n'
        'window_s = 30\n[[rules]]\nname = "errors"\nkind = "error_rate"\nthreshold = 0.1\n'
    )
    # Added before the file named it, or by a CLI that does not see the server's file.
    AlertStore(registry.store).add_rule(
        AlertRule(name="slow", kind="latency_p50", threshold=100.0, for_s=0)
    )
    # The CLI refuses a name the rules file uses, as the API does.
    monkeypatch.setenv("SLIPWAY_ALERT_RULES_FILE", str(rules))
    home = registry.settings.home
    refused = slipway(home, "alerts", "add", "errors", "--kind", "error_rate", "--threshold", "1")
    assert refused.returncode == 2 and "rules file" in refused.stderr, refused.stderr
    with Receiver() as receiver:
        settings = monitoring_settings(
            registry.settings.home, alert_webhooks=receiver.url, alert_rules_file=str(rules)
        )
        with (
            BackgroundServer(settings) as server,
            httpx.Client(base_url=server.url, headers=admin_headers(settings)) as http,
        ):
            _send(http, x[:100])
            assert _until(lambda: "firing" in _events(receiver, "slow"))
            time.sleep(1.5)  # several evaluations while the file's rule keeps breaching
            assert _events(receiver, "slow") == ["firing"]
            listed = http.get("/api/alerts/rules").json()
            assert [(r["name"], r["threshold"]) for r in listed] == [("slow", 0.0), ("errors", 0.1)]


def test_stored_rules_that_no_longer_validate_are_skipped_with_a_warning(
    tmp_path: Path, registry, cancer, caplog: pytest.LogCaptureFixture
) -> None:
    from slipway.monitoring.alert_store import AlertStore
    from slipway.monitoring.alerts import AlertRule

    from .conftest import monitoring_settings
    from .test_alert_store import store_rule_row

    x, _ = cancer
    AlertStore(registry.store).add_rule(
        AlertRule(name="slow", kind="latency_p50", threshold=0.0, for_s=0, window_s=1)
    )
    # Stored before rules were validated as strictly as now (SQLite's JSON keeps a NaN).
    store_rule_row(
        registry.store,
        "old-nan",
        '{"name": "old-nan", "kind": "latency_p50", "threshold": 0.0, "for_s": NaN}',
    )
    store_rule_row(
        registry.store,
        "old-severity",
        '{"name": "old-severity", "kind": "latency_p50", "threshold": 0.0, "for_s": 0,'
        ' "severity": "page-the-whole-team-now"}',
    )
    home = registry.settings.home
    exported = slipway(home, "monitor", "export", "--out", str(tmp_path / "export"))
    assert exported.returncode == 0, exported.stderr
    assert "1 alert rule(s) exported" in exported.stdout
    assert "'old-nan'" in exported.stderr and "'old-severity'" in exported.stderr
    listed = slipway(home, "alerts", "rules")
    assert listed.returncode == 0, listed.stderr
    assert "slow" in listed.stdout and "old-" not in listed.stdout
    assert "slipway alerts delete old-nan" in listed.stderr

    with Receiver() as receiver:
        settings = monitoring_settings(home, alert_webhooks=receiver.url)
        with (
            caplog.at_level(logging.WARNING, logger="slipway.alerts"),
            BackgroundServer(settings) as server,
            httpx.Client(base_url=server.url, headers=admin_headers(settings)) as http,
        ):
            _send(http, x[:100])
            assert _until(lambda: "firing" in _events(receiver, "slow"))
            time.sleep(1.0)  # several evaluations
            assert [r["name"] for r in http.get("/api/alerts/rules").json()] == ["slow"]
            assert {b["event"]["rule"] for b in receiver.bodies} == {"slow"}
    warnings = [r.getMessage() for r in caplog.records if "alerts delete" in r.getMessage()]
    assert len(warnings) == 2, warnings  # once per rule, not once per evaluation
    assert "'old-nan'" in warnings[0] + warnings[1] and "severity" in warnings[0] + warnings[1]

    deleted = slipway(home, "alerts", "delete", "old-nan")
    assert deleted.returncode == 0, deleted.stderr
    listed = slipway(home, "alerts", "rules")
    assert "old-nan" not in listed.stderr and "old-severity" in listed.stderr


def test_a_rule_firing_at_shutdown_resolves_after_a_restart(
    tmp_path: Path, registry, cancer
) -> None:
    """Firing states are taken up from the stored events: a rule firing when the server stopped
    resolves once its condition has cleared, and one deleted meanwhile resolves at start."""
    from slipway.monitoring.alert_store import AlertStore
    from slipway.monitoring.alerts import AlertRule

    from .conftest import monitoring_settings

    x, _ = cancer
    store = AlertStore(registry.store)
    for name in ("slow", "gone"):
        store.add_rule(AlertRule(name=name, kind="latency_p50", threshold=0.0, for_s=0, window_s=1))
    with Receiver() as receiver:
        settings = monitoring_settings(registry.settings.home, alert_webhooks=receiver.url)
        with (
            BackgroundServer(settings) as server,
            httpx.Client(base_url=server.url, headers=admin_headers(settings)) as http,
        ):
            _send(http, x[:100])
            assert _until(lambda: {"slow", "gone"} <= {b["event"]["rule"] for b in receiver.bodies})
    store.delete_rule("gone")  # while the server is down
    with Receiver() as receiver:
        settings = monitoring_settings(registry.settings.home, alert_webhooks=receiver.url)
        with (
            BackgroundServer(settings) as server,
            httpx.Client(base_url=server.url, headers=admin_headers(settings)) as http,
        ):  # no traffic: the one-second window empties, so the latency rule has no data
            assert _until(lambda: _events(receiver, "slow") == ["resolved"])
            assert _events(receiver, "gone") == ["resolved"]
            listed = http.get("/api/alerts", params={"deployment": "cancer-prod"}).json()
            newest: dict[str, str] = {}
            for event in reversed(listed["events"]):  # oldest first: the newest state stays
                newest[event["rule"]] = event["state"]
            assert newest == {"slow": "resolved", "gone": "resolved"}
            assert listed["states"] == []


def test_the_report_holds_the_deployments_alerts_however_busy_the_others_are(
    http: httpx.Client, server: BackgroundServer, settings: Settings, registry, tmp_path: Path
) -> None:
    from slipway.monitoring.alert_store import AlertStore
    from slipway.monitoring.alerts import AlertEvent

    def event(deployment: str, at: float) -> AlertEvent:
        return AlertEvent("slow", deployment, "firing", 1.0, 0.5, "warning", at, "slow")

    store = AlertStore(registry.store)
    store.add_events([event("cancer-prod", 1_800_000_000.0)])
    store.add_events([event("other", 1_800_000_001.0 + i) for i in range(250)])
    listed = http.get("/api/alerts", params={"deployment": "cancer-prod"}).json()["events"]
    assert [e["deployment"] for e in listed] == ["cancer-prod"]
    assert len(http.get("/api/alerts").json()["events"]) == 200  # the default limit
    assert http.get("/api/alerts", params={"limit": "0"}).status_code == 400
    env = {
        "SLIPWAY_HOME": str(settings.home),
        "COLUMNS": "200",
        "SLIPWAY_TOKEN": admin_token(settings),
    }
    html_path, json_path = tmp_path / "r.html", tmp_path / "r.json"
    result = CliRunner().invoke(
        cli,
        ["monitor", "report", "cancer-prod", "--url", server.url, "--out", str(html_path),
         "--json", str(json_path)],
        env=env,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    alerts = json.loads(json_path.read_text())["alerts"]
    assert [(a["deployment"], a["at"]) for a in alerts] == [("cancer-prod", 1_800_000_000.0)]
    assert "No alert events" not in html_path.read_text()


def test_report_failures_exit_with_the_documented_codes(
    server: BackgroundServer, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = settings.home
    out = ["--out", str(tmp_path / "r.html"), "--json", str(tmp_path / "r.json")]
    monkeypatch.delenv("SLIPWAY_TOKEN", raising=False)
    anonymous = slipway(home, "monitor", "report", "cancer-prod", "--url", server.url, *out)
    assert anonymous.returncode == 8, anonymous.stderr  # no valid SLIPWAY_TOKEN
    token = {"SLIPWAY_TOKEN": admin_token(settings)}
    missing = slipway(home, "monitor", "report", "nosuch", "--url", server.url, *out, env=token)
    assert missing.returncode == 3 and "nosuch" in missing.stderr, missing.stderr
    assert not (tmp_path / "r.html").exists()
    done = slipway(home, "monitor", "report", "cancer-prod", "--url", server.url, *out, env=token)
    assert done.returncode == 0, done.stderr


def test_an_output_path_that_cannot_be_written_is_a_one_line_error(
    server: BackgroundServer, settings: Settings, tmp_path: Path
) -> None:
    token = {"SLIPWAY_TOKEN": admin_token(settings)}
    home, taken = settings.home, tmp_path / "a-file"
    taken.write_text("not a directory")
    exported = slipway(home, "monitor", "export", "--out", str(taken), env=token)
    assert exported.returncode == 1, exported.stderr
    assert exported.stderr.startswith(f"error: cannot write {taken}")
    assert exported.stderr.count("\n") == 1 and taken.read_text() == "not a directory"
    nowhere = tmp_path / "missing" / "r.html"
    reported = slipway(
        home, "monitor", "report", "cancer-prod", "--url", server.url, "--out", str(nowhere),
        "--json", str(tmp_path / "r.json"), env=token,
    )  # fmt: skip
    assert reported.returncode == 1, reported.stderr
    assert (
        f"error: cannot write {nowhere}" in reported.stderr and "Traceback" not in reported.stderr
    )
