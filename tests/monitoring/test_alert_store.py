"""Alert rules and events in the registry database, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from slipway.errors import AlertRuleNotFound, InvalidInput
from slipway.monitoring.alert_store import AlertStore
from slipway.monitoring.alerts import AlertRule, step
from slipway.registry.store import SqlStore


def test_rules_and_events_round_trip(store_url: str) -> None:
    with SqlStore(store_url) as store:
        alerts = AlertStore(store)
        rule = AlertRule(name="p95", kind="latency_p95", threshold=0.2, for_s=30, deployment="d")
        alerts.add_rule(rule, actor="ops")
        with pytest.raises(InvalidInput, match="already exists"):
            alerts.add_rule(rule)
        with pytest.raises(InvalidInput, match="finite"):
            alerts.add_rule(AlertRule(name="nan", kind="error_rate", threshold=float("nan")))
        assert alerts.list_rules() == [rule]
        _, firing = step(rule, None, 0.5, now=1_700_000_000.0, deployment="d")
        assert firing is None  # pending first: for_s is 30
        state, _ = step(rule, None, 0.5, now=1_700_000_000.0, deployment="d")
        _, firing = step(rule, state, 0.6, now=1_700_000_031.0, deployment="d")
        _, resolved = step(rule, None, 0.1, now=1_700_000_040.0, deployment="e")
        assert firing is not None and resolved is None
        stored = alerts.add_events([firing])
        assert stored[0].id is not None
        events = alerts.list_events()
        assert [(e.rule, e.state, e.value, e.at) for e in events] == [
            ("p95", "firing", 0.6, 1_700_000_031.0)
        ]
        assert alerts.list_events(deployment="other") == []
        alerts.delete_rule("p95")
        assert alerts.list_rules() == []
        with pytest.raises(AlertRuleNotFound):
            alerts.delete_rule("p95")
