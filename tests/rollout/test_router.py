"""The router: weights, sticky keys and rules, as pure functions."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from scipy import stats

from slipway.errors import InvalidInput
from slipway.registry.records import BatchingConfig, DeploymentRecord, RoutingRule, TrafficPolicy
from slipway.rollout.policy import RolloutConfig, check_config
from slipway.rollout.router import (
    choose_version,
    field_names,
    position_of,
    request_fields,
    versions_to_load,
)

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def deployment(traffic: TrafficPolicy | None) -> DeploymentRecord:
    return DeploymentRecord(
        name="d",
        model="m",
        version=1,
        previous_version=None,
        batching=BatchingConfig(),
        generation=1,
        created_at=NOW,
        updated_at=NOW,
        traffic=traffic,
    )


def test_without_a_policy_the_stable_version_serves_everything() -> None:
    assert choose_version(deployment(None), 0.0) == 1
    assert versions_to_load(deployment(None)) == []


@pytest.mark.parametrize("weight", [pytest.param(5.0, id="5%"), pytest.param(50.0, id="50%")])
def test_random_positions_send_the_weight_to_the_candidate(weight: float) -> None:
    record = deployment(TrafficPolicy("canary", 1, candidate=2, weight=weight))
    rng = random.Random(7)
    n = 20_000
    hits = sum(choose_version(record, rng.random()) == 2 for _ in range(n))
    assert abs(hits / n * 100 - weight) <= 1.0
    # And the count is consistent with Binomial(n, weight) at the 0.1% level.
    assert stats.binomtest(hits, n, weight / 100).pvalue > 0.001


def test_sticky_keys_always_land_on_the_same_arm_and_split_by_weight() -> None:
    record = deployment(TrafficPolicy("ab", 9, candidate=2, weight=30.0, routing_key="x-user-id"))
    users = [f"user-{i}" for i in range(20_000)]
    first = {u: choose_version(record, position_of(u, 9)) for u in users}
    again = {u: choose_version(record, position_of(u, 9)) for u in reversed(users)}
    assert first == again
    share = sum(v == 2 for v in first.values()) / len(users)
    assert abs(share - 0.30) <= 0.01
    # Another experiment (salt) assigns users independently of this one.
    other = {u: choose_version(record, position_of(u, 10)) for u in users}
    assert 0.15 < sum(first[u] != other[u] for u in users) / len(users) < 0.55


def test_rules_pin_matching_requests_to_an_arm() -> None:
    rules = [
        RoutingRule(header="x-tier", equals="beta", arm="candidate"),
        RoutingRule(header="x-tier", equals="vip", arm="stable"),
    ]
    record = deployment(TrafficPolicy("ab", 1, candidate=2, weight=50.0, rules=rules))
    assert choose_version(record, 0.99, {"x-tier": "beta"}) == 2
    assert choose_version(record, 0.0, {"x-tier": "vip"}) == 1
    assert choose_version(record, 0.0, {"x-tier": "other"}) == 2
    assert choose_version(record, 0.99, {}) == 1


def test_rules_and_keys_can_use_request_fields() -> None:
    rules = [RoutingRule(field="tier", equals="beta", arm="candidate")]
    policy = TrafficPolicy("ab", 1, candidate=2, weight=0.0, rules=rules, routing_field="user")
    assert field_names(policy) == {"tier", "user"}
    v2 = b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],'
    v2 += b' "parameters": {"tier": "beta", "user": 42}}'
    assert request_fields(v2, field_names(policy)) == {"tier": "beta", "user": "42"}
    plain = b'{"instances": [[1.0, 2.0]], "tier": "gold", "user": "ann"}'
    assert request_fields(plain, field_names(policy)) == {"tier": "gold", "user": "ann"}
    assert request_fields(b"[1, 2]", field_names(policy)) == {}  # not an object: no fields
    assert request_fields(b"{not json", field_names(policy)) == {}
    deep = b'{"user": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert request_fields(deep, field_names(policy)) == {}  # too deep: the codec says so
    record = deployment(policy)
    assert choose_version(record, 0.99, None, {"tier": "beta"}) == 2
    assert choose_version(record, 0.99, {"tier": "beta"}, {}) == 1  # a header is not a field


def test_a_rule_names_a_header_or_a_field() -> None:
    for rule in (RoutingRule(equals="x"), RoutingRule(equals="x", header="h", field="f")):
        with pytest.raises(InvalidInput, match="either a header or a field"):
            check_config(RolloutConfig(strategy="ab", rules=[rule]))
    with pytest.raises(InvalidInput, match="not both"):
        check_config(RolloutConfig(strategy="ab", routing_key="X-User", routing_field="user"))


@pytest.mark.parametrize(
    "config",
    [
        pytest.param(
            RolloutConfig(strategy="ab", routing_key="X-User\r\nX-Evil: 1"), id="key-crlf"
        ),
        pytest.param(RolloutConfig(strategy="ab", routing_field="user\n"), id="field-lf"),
        pytest.param(RolloutConfig(strategy="shadow", segment_header="seg\x00"), id="segment-nul"),
        pytest.param(
            RolloutConfig(strategy="ab", rules=[RoutingRule(header="X-Tier", equals="beta\r\n")]),
            id="header-value-crlf",
        ),
        pytest.param(
            RolloutConfig(strategy="ab", rules=[RoutingRule(header="X-\x7fTier", equals="b")]),
            id="header-del",
        ),
    ],
)
def test_routing_names_and_header_values_with_control_characters_are_refused(
    config: RolloutConfig,
) -> None:
    with pytest.raises(InvalidInput, match="control characters") as refused:
        check_config(config)
    assert "\n" not in str(refused.value)  # one line: the value is shown escaped


def test_candidate_and_shadow_are_kept_loaded() -> None:
    assert versions_to_load(deployment(TrafficPolicy("canary", 1, candidate=3, weight=5))) == [3]
    assert versions_to_load(deployment(TrafficPolicy("shadow", 1, shadow=4))) == [4]


@pytest.mark.parametrize("weight", [100.0, 150.0, -1.0])
def test_an_ab_split_never_sends_everything_to_the_candidate(weight: float) -> None:
    # 100% on the candidate is a promotion, which must pass the approval gate via `promote`.
    with pytest.raises(InvalidInput, match="weight"):
        check_config(RolloutConfig(strategy="ab", weight=weight, routing_key="X-User-Id"))


@pytest.mark.parametrize("samples", [0, -3])
def test_a_shadow_gate_needs_at_least_one_compared_request(samples: int) -> None:
    config = RolloutConfig(strategy="shadow", min_shadow_agreement=0.98, min_shadow_samples=samples)
    with pytest.raises(InvalidInput, match="min_shadow_samples"):
        check_config(config)
