"""Alert rules and events in the registry database, on SQLite and PostgreSQL."""

from __future__ import annotations

import msgspec
import pytest
from sqlalchemy import text

from slipway.errors import AlertRuleNotFound, InvalidInput
from slipway.monitoring.alert_store import AlertStore
from slipway.monitoring.alerts import AlertEvent, AlertRule, step
from slipway.registry.store import SqlStore


def store_rule_row(store: SqlStore, name: str, spec: str) -> None:
    """Write a rule straight into the table, as an older Slipway or the database's owner would,
    bypassing today's validation."""
    with store.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO alert_rules (name, spec, created_at, created_by)"
                " VALUES (:name, :spec, '2025-01-01 00:00:00', 'old')"
            ),
            {"name": name, "spec": spec},
        )


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


def test_the_alerts_open_at_the_last_stop_are_each_pairs_latest_firing_event(
    store_url: str,
) -> None:
    with SqlStore(store_url) as store:
        alerts = AlertStore(store)

        def event(rule: str, deployment: str, state: str, at: float) -> AlertEvent:
            return AlertEvent(rule, deployment, state, 1.0, 0.5, "warning", at, f"{rule} {state}")  # type: ignore[arg-type]

        assert alerts.last_firing() == []
        alerts.add_events([event("p95", "a", "firing", 1_700_000_000.0)])
        alerts.add_events([event("p95", "b", "firing", 1_700_000_001.0)])
        alerts.add_events([event("p95", "a", "resolved", 1_700_000_002.0)])
        alerts.add_events([event("errors", "a", "resolved", 1_700_000_003.0)])
        alerts.add_events([event("errors", "a", "firing", 1_700_000_004.0)])
        open_ = alerts.last_firing()
        assert [(e.rule, e.deployment, e.state, e.at) for e in open_] == [
            ("p95", "b", "firing", 1_700_000_001.0), ("errors", "a", "firing", 1_700_000_004.0),
        ]  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        pytest.param({"severity": "s" * 17}, "severity", id="long-severity"),
        pytest.param({"severity": "warn\x00"}, "severity", id="nul-in-severity"),
        pytest.param({"name": "p\x0095"}, "name", id="nul-in-name"),
    ],
)
def test_a_rule_whose_events_the_database_could_not_hold_is_refused(
    store_url: str, changes: dict[str, str], match: str
) -> None:
    """Events carry the rule's name and severity (VARCHAR(64), VARCHAR(16)). PostgreSQL refused
    a longer severity or a NUL when the rule fired, and with it every event of that evaluation,
    other rules' included; SQLite stored them. Both now refuse such a rule when it is added."""
    with SqlStore(store_url) as store:
        alerts = AlertStore(store)
        rule = AlertRule(name="p95", kind="latency_p95", threshold=0.2, for_s=0, deployment="d")
        with pytest.raises(InvalidInput, match=match):
            alerts.add_rule(msgspec.structs.replace(rule, **changes))
        assert alerts.list_rules() == []
        longest = msgspec.structs.replace(rule, severity="s" * 16)
        alerts.add_rule(longest)
        _, firing = step(longest, None, 0.5, now=1_700_000_000.0, deployment="d")
        assert firing is not None
        alerts.add_events([firing])
        assert [e.severity for e in alerts.list_events()] == ["s" * 16]


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        pytest.param(
            '{"name": "old", "kind": "error_rate", "threshold": 0.1,'
            ' "severity": "page-the-whole-team-now"}',
            "severity must be at most 16",
            id="long-severity",
        ),
        pytest.param(
            '{"name": "old", "kind": "no_such_kind", "threshold": 0.1}', "kind", id="unknown-kind"
        ),
    ],
)
def test_a_stored_rule_that_no_longer_validates_is_skipped_and_can_be_deleted(
    store_url: str, spec: str, reason: str
) -> None:
    with SqlStore(store_url) as store:
        alerts = AlertStore(store)
        good = AlertRule(name="p95", kind="latency_p95", threshold=0.2)
        alerts.add_rule(good)
        store_rule_row(store, "old", spec)
        stored = alerts.read_rules()
        assert stored.rules == [good] and alerts.list_rules() == [good]
        assert [s.name for s in stored.skipped] == ["old"]
        assert reason in stored.skipped[0].message
        assert "slipway alerts delete old" in stored.skipped[0].message
        alerts.delete_rule("old")
        assert alerts.read_rules().skipped == []
        assert alerts.list_rules() == [good]
