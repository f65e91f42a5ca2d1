"""Alert rules: the `for` state machine, windowed values, rule files, webhook retries."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from slipway.errors import InvalidInput
from slipway.monitoring import alerts
from slipway.monitoring.alerts import AlertEvent, AlertRule

from .conftest import Receiver

LATENCY = AlertRule(name="slow", kind="latency_p99", threshold=0.1, for_s=10)
FLOOR = AlertRule(name="conv", kind="business_metric", metric="conversion", threshold=0.2, for_s=0)


def test_a_breach_must_last_for_the_for_duration_before_firing_and_resolves_at_once() -> None:
    state, event = alerts.step(LATENCY, None, 0.5, now=0.0, deployment="d")
    assert state.state == "pending" and event is None
    state, event = alerts.step(LATENCY, state, 0.5, now=9.0, deployment="d")
    assert state.state == "pending" and event is None
    state, event = alerts.step(LATENCY, state, 0.5, now=10.0, deployment="d")
    assert state.state == "firing" and event is not None and event.state == "firing"
    state, event = alerts.step(LATENCY, state, 0.7, now=11.0, deployment="d")
    assert state.state == "firing" and event is None  # one event per change
    state, event = alerts.step(LATENCY, state, 0.05, now=12.0, deployment="d")
    assert state.state == "inactive" and event is not None and event.state == "resolved"


def test_a_breach_that_stops_before_for_never_fires() -> None:
    state, _ = alerts.step(LATENCY, None, 0.5, now=0.0, deployment="d")
    state, _ = alerts.step(LATENCY, state, 0.01, now=5.0, deployment="d")
    state, event = alerts.step(LATENCY, state, 0.5, now=9.0, deployment="d")
    assert state.state == "pending" and state.since == 9.0 and event is None


def test_business_metric_is_a_floor_and_no_data_is_no_breach() -> None:
    assert alerts.breached(FLOOR, 0.1) and not alerts.breached(FLOOR, 0.3)
    assert not alerts.breached(LATENCY, None) and not alerts.breached(LATENCY, float("nan"))


def test_histogram_quantile_matches_promql_interpolation() -> None:
    bounds = [0.1, 0.2, 0.4, float("inf")]
    # 100 observations: 50 in (0, 0.1], 30 in (0.1, 0.2], 20 in (0.2, 0.4]
    assert alerts.histogram_quantile(0.5, bounds, [50, 30, 20, 0]) == pytest.approx(0.1)
    assert alerts.histogram_quantile(0.65, bounds, [50, 30, 20, 0]) == pytest.approx(0.15)
    assert alerts.histogram_quantile(0.9, bounds, [50, 30, 20, 0]) == pytest.approx(0.3)
    assert alerts.histogram_quantile(0.99, bounds, [0, 0, 1, 9]) == 0.4  # +Inf: highest bound
    assert alerts.histogram_quantile(0.5, bounds, [0, 0, 0, 0]) is None


def test_histogram_quantile_is_close_to_the_sample_quantile() -> None:
    rng = np.random.default_rng(0)
    values = rng.exponential(0.01, 20000)
    from slipway.monitoring.metrics import LATENCY_BUCKETS

    bounds = [*LATENCY_BUCKETS, float("inf")]
    counts = np.histogram(values, [0.0, *LATENCY_BUCKETS, np.inf])[0]
    got = alerts.histogram_quantile(0.95, bounds, counts.tolist())
    assert got == pytest.approx(np.quantile(values, 0.95), rel=0.3)


def test_rate_windows_use_the_difference_of_cumulative_samples() -> None:
    history = alerts.TrafficHistory([0.1, float("inf")])
    history.add("d", alerts.TrafficSample(0.0, {"ok": 0}, [0, 0]))
    history.add("d", alerts.TrafficSample(30.0, {"ok": 100, "server_error": 0}, [100, 0]))
    history.add("d", alerts.TrafficSample(60.0, {"ok": 110, "server_error": 10}, [110, 10]))
    values = alerts.AlertValues(traffic=history)
    errors = AlertRule(name="e", kind="error_rate", threshold=0.1, window_s=30)
    assert values.value(errors, "d") == pytest.approx(0.5)
    errors_long = AlertRule(name="e", kind="error_rate", threshold=0.1, window_s=60)
    assert values.value(errors_long, "d") == pytest.approx(10 / 120)
    assert (
        values.value(AlertRule(name="p", kind="latency_p99", threshold=1, window_s=30), "d") == 0.1
    )


def test_a_window_longer_than_the_history_counts_everything_since_the_server_started() -> None:
    # Requests served before the first sample still fall inside a 300 s window: a rule that
    # fired on them must not resolve at the next sample just because nothing new came in.
    history = alerts.TrafficHistory([0.1, float("inf")])
    history.add("d", alerts.TrafficSample(100.0, {"ok": 8, "server_error": 2}, [10, 0]))
    history.add("d", alerts.TrafficSample(105.0, {"ok": 8, "server_error": 2}, [10, 0]))
    values = alerts.AlertValues(traffic=history)
    assert values.value(AlertRule(name="e", kind="error_rate", threshold=0.1), "d") == 0.2
    p99 = AlertRule(name="p", kind="latency_p99", threshold=0)
    assert values.value(p99, "d") == pytest.approx(0.099)  # inside the first bucket
    quiet = AlertRule(name="e", kind="error_rate", threshold=0.1, window_s=5)
    assert values.value(quiet, "d") is None  # a 5 s window starts at the first sample


def test_rules_apply_to_every_deployment_and_firing_rules_resolve_when_data_goes() -> None:
    history = alerts.TrafficHistory([0.1, float("inf")])
    values = alerts.AlertValues(
        traffic=history, drift={"a": {"x0": 0.5, "x1": 0.01}, "b": {"x0": 0.01}}
    )
    rule = AlertRule(name="drift", kind="drift_score", threshold=0.2, for_s=0)
    states, events = alerts.evaluate_rules([rule], {}, values, now=1.0)
    assert [(e.deployment, e.state) for e in events] == [("a", "firing")]
    states, events = alerts.evaluate_rules([rule], states, alerts.AlertValues(traffic=history), 2.0)
    assert [(e.deployment, e.state) for e in events] == [("a", "resolved")]


def test_a_rule_removed_while_firing_resolves() -> None:
    history = alerts.TrafficHistory([0.1, float("inf")])
    values = alerts.AlertValues(traffic=history, drift={"a": {"x0": 0.5}, "b": {"x0": 0.5}})
    rule = AlertRule(name="drift", kind="drift_score", threshold=0.2, for_s=0)
    states, events = alerts.evaluate_rules([rule], {}, values, now=1.0)
    assert [(e.deployment, e.state) for e in events] == [("a", "firing"), ("b", "firing")]
    states, events = alerts.evaluate_rules([], states, values, 2.0, removed=[rule])
    assert states == {}
    assert [(e.rule, e.deployment, e.state) for e in events] == [
        ("drift", "a", "resolved"), ("drift", "b", "resolved"),
    ]  # fmt: skip
    assert "removed while firing" in events[0].message


def test_states_restored_from_the_last_events_carry_on_where_they_left_off() -> None:
    history = alerts.TrafficHistory([0.1, float("inf")])
    rule = AlertRule(name="drift", kind="drift_score", threshold=0.2, for_s=0)
    fired = [
        AlertEvent("drift", "a", "firing", 0.5, 0.2, "warning", 1.0, "drift fired", id=1),
        AlertEvent("drift", "b", "firing", 0.6, 0.2, "warning", 1.0, "drift fired", id=2),
        AlertEvent("gone", "a", "firing", 9.0, 1.0, "critical", 1.0, "gone fired", id=3),
    ]
    states, closing = alerts.restore_states(fired, [rule], now=5.0)
    # A rule deleted while the server was down resolves at once, with its own threshold.
    assert [(e.rule, e.deployment, e.state, e.threshold, e.severity) for e in closing] == [
        ("gone", "a", "resolved", 1.0, "critical")
    ]
    assert "removed while firing" in closing[0].message
    assert {k: (s.state, s.since) for k, s in states.items()} == {
        ("drift", "a"): ("firing", 1.0), ("drift", "b"): ("firing", 1.0),
    }  # fmt: skip
    # Still breached on "a": no second firing; no data on "b": it resolves.
    values = alerts.AlertValues(traffic=history, drift={"a": {"x0": 0.5}})
    states, events = alerts.evaluate_rules([rule], states, values, now=6.0)
    assert [(e.deployment, e.state) for e in events] == [("b", "resolved")]
    assert states[("drift", "a")].state == "firing"


def test_rules_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(
        '[[rules]]\nname = "p99"\nkind = "latency_p99"\nthreshold = 0.25\nfor_s = 120\n'
        '[[rules]]\nname = "conv"\nkind = "business_metric"\nmetric = "conversion"\n'
        'threshold = 0.02\ndeployment = "churn-prod"\n'
    )
    rules = alerts.load_rules(path)
    assert [r.name for r in rules] == ["p99", "conv"] and rules[0].for_s == 120
    path.write_text('[[rules]]\nname = "x"\nkind = "nonsense"\nthreshold = 1\n')
    with pytest.raises(InvalidInput, match="invalid alert rule"):
        alerts.load_rules(path)
    path.write_text('[[rules]]\nname = "x"\nkind = "business_metric"\nthreshold = 1\n')
    with pytest.raises(InvalidInput, match="needs a metric"):
        alerts.load_rules(path)
    yaml = tmp_path / "rules.yaml"  # what an operator used to Prometheus might write
    yaml.write_text("rules:\n  - name: p99\n    kind: latency_p99\n    threshold: 0.25\n")
    with pytest.raises(InvalidInput, match=r"TOML: \[\[rules\]\] tables"):
        alerts.load_rules(yaml)


@pytest.mark.parametrize("line", ["for_s = nan", "window_s = inf", "for_s = inf"])
def test_a_duration_that_is_not_finite_is_refused(tmp_path: Path, line: str) -> None:
    # NaN passed every range check: the rule never fired and `monitor export` crashed on it.
    path = tmp_path / "rules.toml"
    path.write_text(f'[[rules]]\nname = "x"\nkind = "error_rate"\nthreshold = 0.1\n{line}\n')
    with pytest.raises(InvalidInput, match="finite"):
        alerts.load_rules(path)


def test_webhook_is_retried_with_backoff_until_it_succeeds() -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    event = alerts.step(FLOOR, None, 0.0, now=5.0, deployment="d")[1]
    assert event is not None
    with Receiver(fail_first=2) as receiver:
        sender = alerts.WebhookSender([receiver.url], retries=3, backoff_s=0.5, sleep=sleep)
        assert asyncio.run(sender.deliver(receiver.url, event))
    assert waits == [0.5, 1.0]
    assert receiver.attempts == 3 and receiver.bodies[0]["event"]["rule"] == "conv"


def test_webhook_gives_up_after_its_retries() -> None:
    async def sleep(seconds: float) -> None:
        pass

    event = alerts.step(FLOOR, None, 0.0, now=5.0, deployment="d")[1]
    assert event is not None
    with Receiver(fail_first=100) as receiver:
        sender = alerts.WebhookSender([receiver.url], retries=2, sleep=sleep)
        assert not asyncio.run(sender.deliver(receiver.url, event))
    assert receiver.attempts == 3 and sender.failed == 1


def test_a_resolved_event_reaches_a_receiver_after_the_firing_it_closes() -> None:
    # The receiver is down for the firing event's first try; the alert resolves while that
    # delivery waits to retry. A receiver given "resolved" then "firing" keeps an incident open
    # for an alert that is over, so the resolved event waits for the firing one.
    firing = alerts.step(FLOOR, None, 0.0, now=5.0, deployment="d")[1]
    assert firing is not None and firing.state == "firing"
    resolved = alerts.step(FLOOR, alerts.AlertState("conv", "d", "firing", 5.0), 1.0, 6.0, "d")[1]
    assert resolved is not None and resolved.state == "resolved"
    other = alerts.step(FLOOR, None, 0.0, now=6.0, deployment="e")[1]
    assert other is not None

    async def scenario(receiver: Receiver) -> alerts.WebhookSender:
        sender = alerts.WebhookSender([receiver.url], retries=3, backoff_s=0.3)
        sender.send([firing])
        await asyncio.sleep(0.1)  # the first try has failed; the retry waits
        sender.send([resolved, other])
        await sender.drain()
        return sender

    with Receiver(fail_first=1) as receiver:
        sender = asyncio.run(scenario(receiver))
    states = [(b["event"]["deployment"], b["event"]["state"]) for b in receiver.bodies]
    assert [s for s in states if s[0] == "d"] == [("d", "firing"), ("d", "resolved")]
    assert ("e", "firing") in states and sender.delivered == 3


def test_a_window_longer_than_an_hour_covers_that_window_not_everything_since_the_start() -> None:
    # Five hours of errors, then five hours of clean traffic, sampled every minute: a 2-hour
    # error-rate rule evaluated all along must read the last two hours (no errors), not the
    # ten since the server started (half errors), or it never resolves.
    history = alerts.TrafficHistory([0.1, float("inf")])
    values = alerts.AlertValues(traffic=history)
    rule = AlertRule(name="e", kind="error_rate", threshold=0.1, for_s=0, window_s=7200)
    errors = ok = 0.0
    seen = []
    for minute in range(600):
        if minute < 300:
            errors += 10
        else:
            ok += 10
        history.add(
            "d", alerts.TrafficSample(60.0 * minute, {"ok": ok, "server_error": errors}, [0, 0])
        )
        seen.append(values.value(rule, "d"))
    assert seen[299] == 1.0
    assert seen[-1] == 0.0
    assert seen[360] == pytest.approx(0.5, abs=0.01)  # an hour into the clean traffic


def test_a_day_long_window_keeps_a_bounded_history_and_recent_samples_at_full_resolution() -> None:
    history = alerts.TrafficHistory([0.1, float("inf")])
    values = alerts.AlertValues(traffic=history)
    day = AlertRule(name="e", kind="error_rate", threshold=0.1, for_s=0, window_s=86400)
    quick = AlertRule(name="q", kind="error_rate", threshold=0.1, for_s=0, window_s=10)
    assert values.value(day, "d") is None  # evaluated from the start: the history keeps a day
    ticks = 2 * 86400 // 5  # two days sampled every 5 s; errors only in the last 10 s
    for tick in range(ticks):
        errors = max(0, tick - (ticks - 3))
        sample = alerts.TrafficSample(
            5.0 * tick, {"ok": tick - errors, "server_error": errors}, [0, 0]
        )
        history.add("d", sample)
    assert len(history._samples["d"]) < 4 * alerts.TrafficHistory.COARSE_SAMPLES
    assert values.value(quick, "d") == 1.0  # the last hour at full resolution
    assert values.value(day, "d") == pytest.approx(2 / 17280, rel=0.01)


def test_a_rule_narrowed_to_one_deployment_resolves_where_it_no_longer_applies() -> None:
    # Deleted and added again under the same name with `deployment = "a"`: its firing for "b"
    # must close, even though "b" still breaches the old scope's condition.
    history = alerts.TrafficHistory([0.1, float("inf")])
    values = alerts.AlertValues(traffic=history, drift={"a": {"x0": 0.5}, "b": {"x0": 0.5}})
    every = AlertRule(name="drift", kind="drift_score", threshold=0.2, for_s=0)
    states, events = alerts.evaluate_rules([every], {}, values, now=1.0)
    assert [(e.deployment, e.state) for e in events] == [("a", "firing"), ("b", "firing")]
    only_a = AlertRule(name="drift", kind="drift_score", threshold=0.2, for_s=0, deployment="a")
    states, events = alerts.evaluate_rules([only_a], states, values, now=2.0)
    assert [(e.deployment, e.state) for e in events] == [("b", "resolved")]
    assert set(states) == {("drift", "a"), ("drift", "b")}
    states, events = alerts.evaluate_rules([only_a], states, values, now=3.0)
    assert events == [] and set(states) == {("drift", "a")}
