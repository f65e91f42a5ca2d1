"""Analysis gates and the canary step decision, on plain values."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from slipway.rollout.analysis import (
    ArmStats,
    GateConfig,
    evaluate,
    ks_statistic,
    latency_bucket,
    psi,
)
from slipway.rollout.policy import RolloutConfig, RolloutRecord, decide

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def arm(
    requests: int, errors: int = 0, latency_s: float = 0.002, seed: int = 0, shift: float = 0.0
) -> ArmStats:
    stats = ArmStats(requests=requests, errors=errors)
    stats.latency[latency_bucket(latency_s)] += requests
    rng = np.random.default_rng(seed)
    stats.scores = list(rng.beta(2, 5, min(requests, 300)) + shift)
    return stats


GATES = GateConfig(min_samples=100, min_output_samples=50)


def test_too_few_samples_waits() -> None:
    result = evaluate(arm(1000), arm(40, errors=40), GATES)
    assert result.verdict == "wait"
    assert {c.name: c.status for c in result.checks}["error_rate"] == "wait"


@pytest.mark.parametrize(
    ("candidate", "failing"),
    [
        pytest.param(arm(500, errors=60, seed=1), "error_rate", id="errors"),
        pytest.param(arm(500, latency_s=0.08, seed=1), "p99_latency", id="slow"),
        pytest.param(arm(500, seed=1, shift=0.4), "output_psi", id="shifted-outputs"),
    ],
)
def test_a_bad_candidate_fails_the_matching_check(candidate: ArmStats, failing: str) -> None:
    result = evaluate(arm(500), candidate, GATES)
    assert result.verdict == "fail"
    assert [c.name for c in result.checks if c.status == "fail"] == [failing]


def test_the_output_ks_gate_uses_the_two_sample_ks_statistic() -> None:
    from scipy import stats

    gates = GateConfig(min_samples=100, min_output_samples=50, max_output_ks=0.2)
    stable, same, shifted = arm(500), arm(500, seed=1), arm(500, seed=1, shift=0.15)
    for candidate, status in ((same, "pass"), (shifted, "fail")):
        check = {c.name: c for c in evaluate(stable, candidate, gates).checks}["output_ks"]
        want = stats.ks_2samp(stable.scores, candidate.scores).statistic
        assert check.status == status and check.value == pytest.approx(want, abs=1e-12)
    rng = np.random.default_rng(3)
    for a, b in [
        (rng.normal(size=40), rng.normal(size=70)),
        (rng.integers(0, 3, 30), rng.integers(0, 4, 25)),
    ]:
        assert ks_statistic(a, b) == pytest.approx(stats.ks_2samp(a, b).statistic, abs=1e-12)


def test_the_p99_check_speaks_in_seconds_and_says_its_rule_before_there_is_data() -> None:
    """No latency yet: no threshold to show (it depends on the stable arm's p99), only the
    rule; then the candidate's p99 against the limit, both in seconds."""
    waiting = {c.name: c for c in evaluate(ArmStats(), ArmStats(), GATES).checks}["p99_latency"]
    assert (waiting.status, waiting.value, waiting.threshold) == ("wait", None, None)
    assert waiting.detail == "limit: 1.5 × stable p99 + 5 ms"
    done = {c.name: c for c in evaluate(arm(500), arm(500, seed=1), GATES).checks}
    check = done["p99_latency"]
    assert check.status == "pass" and check.value is not None and check.threshold is not None
    assert check.value < check.threshold < 1.0 and "ms vs stable" in check.detail


def test_a_healthy_candidate_passes() -> None:
    result = evaluate(arm(500, errors=1), arm(400, errors=1, seed=5), GATES)
    assert result.verdict == "pass", result


def test_business_metric_gate() -> None:
    gates = GateConfig(min_samples=10, business_metric="converted", min_feedback=30)
    stable, candidate = arm(100), arm(100, seed=1)
    stable.metrics = {"converted": [1.0] * 20 + [0.0] * 20}
    candidate.metrics = {"converted": [1.0] * 5 + [0.0] * 35}
    result = evaluate(stable, candidate, gates)
    assert {c.name: c.status for c in result.checks}["business:converted"] == "fail"


def test_psi_is_zero_for_the_same_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, 5000)
    assert psi(a, rng.normal(0, 1, 5000)) < 0.02
    assert psi(a, rng.normal(1, 1, 5000)) > 0.25


def rollout(step: int, started: dt.datetime) -> RolloutRecord:
    config = RolloutConfig(steps=[5, 25, 50], interval_s=60)
    return RolloutRecord(
        id=1, deployment="d", model="m", strategy="canary", stable=1, candidate=2,
        status="running", step=step, weight=config.steps[step], config=config, analysis=None,
        created_at=T0, updated_at=T0, step_started_at=started, finished_at=None, created_by=None,
    )  # fmt: skip


def test_decide_waits_for_the_interval_then_advances_then_promotes() -> None:
    passing = evaluate(arm(500), arm(500, seed=2), GATES)
    assert decide(rollout(0, T0), passing, T0 + dt.timedelta(seconds=30)).action == "wait"
    advance = decide(rollout(0, T0), passing, T0 + dt.timedelta(seconds=61))
    assert (advance.action, advance.step) == ("advance", 1)
    assert decide(rollout(2, T0), passing, T0 + dt.timedelta(seconds=61)).action == "promote"
    failing = evaluate(arm(500), arm(500, errors=100), GATES)
    assert decide(rollout(1, T0), failing, T0).action == "rollback"
    waiting = evaluate(arm(500), arm(10), GATES)
    assert decide(rollout(1, T0), waiting, T0 + dt.timedelta(hours=1)).action == "wait"


def _profile(values: np.ndarray):
    from slipway.registry.profile import build_profile

    return build_profile(values.reshape(-1, 1), feature_names=["age"])


def test_input_drift_compares_the_windows_inputs_with_the_reference_profile() -> None:
    rng = np.random.default_rng(3)
    reference = _profile(rng.normal(40, 10, 5000))
    gates = GateConfig(min_samples=100, min_output_samples=50, max_input_psi=0.25)

    def with_inputs(stats: ArmStats, mean: float) -> ArmStats:
        stats.features = {"age": list(rng.normal(mean, 10, 300))}
        return stats

    same = evaluate(with_inputs(arm(500), 40), with_inputs(arm(500, seed=1), 40), gates, reference)
    check = {c.name: c for c in same.checks}["input_drift"]
    assert same.verdict == "pass" and check.value is not None and check.value < 0.1
    moved = evaluate(with_inputs(arm(500), 60), with_inputs(arm(500, seed=1), 60), gates, reference)
    check = {c.name: c for c in moved.checks}["input_drift"]
    assert moved.verdict == "fail" and check.value > 0.25 and "'age'" in check.detail
    few = evaluate(arm(500), arm(500, seed=1), gates, reference)  # no inputs sampled: no evidence
    assert {c.name: c.status for c in few.checks}["input_drift"] == "wait"
    # Without a reference profile, or with the gate off, there is no input check at all.
    assert "input_drift" not in {c.name for c in evaluate(arm(500), arm(500), gates).checks}
    off = evaluate(arm(500), arm(500), GATES, reference)
    assert "input_drift" not in {c.name for c in off.checks}


def test_latency_buckets_are_bounded_by_their_upper_edges() -> None:
    import math
    import random

    from slipway.rollout.analysis import LATENCY_EDGES_S

    assert latency_bucket(0.0) == 0
    assert latency_bucket(3600.0) == len(LATENCY_EDGES_S)  # overflow
    for index, edge in enumerate(LATENCY_EDGES_S):
        assert latency_bucket(edge) == index  # an edge belongs to the bucket it closes
        assert latency_bucket(math.nextafter(edge, math.inf)) == index + 1
    rng = random.Random(3)
    for _ in range(10_000):  # the log-spaced definition, away from the edges' rounding
        seconds = 10 ** rng.uniform(-5, 2)
        expected = max(0, math.ceil(math.log(seconds / LATENCY_EDGES_S[0], 1.25)))
        assert latency_bucket(seconds) == min(expected, len(LATENCY_EDGES_S))


@pytest.mark.parametrize(
    ("given", "strategy"),
    [("blue-green", "bluegreen"), ("Blue_Green", "bluegreen"), ("A/B", "ab"), ("a-b", "ab"),
     ("Canary", "canary"), ("shadow", "shadow")],
)  # fmt: skip
def test_strategies_are_read_as_people_write_them(given: str, strategy: str) -> None:
    """The docs and the seed say blue-green and A/B: those spellings name the strategies."""
    import msgspec

    assert RolloutConfig(strategy=given).strategy == strategy
    assert msgspec.convert({"strategy": given}, RolloutConfig).strategy == strategy
