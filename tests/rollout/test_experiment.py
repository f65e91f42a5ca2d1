"""A/B statistics checked against scipy.stats on the same numbers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from slipway.rollout.experiment import (
    compare_metric,
    mean_interval,
    proportion_interval,
    sample_size_proportions,
    two_proportion_ztest,
    welch_ttest,
)

from ..imports import modules_loaded_by


@pytest.mark.parametrize(
    ("sa", "na", "sb", "nb"),
    [
        pytest.param(120, 1000, 150, 1000, id="close"),
        pytest.param(30, 400, 70, 500, id="unequal-n"),
        pytest.param(5, 50, 5, 50, id="equal"),
    ],
)
def test_two_proportion_z_matches_the_chi_squared_test(sa: int, na: int, sb: int, nb: int) -> None:
    result = two_proportion_ztest(sa, na, sb, nb)
    table = np.array([[sa, na - sa], [sb, nb - sb]])
    chi2, p, _, _ = stats.chi2_contingency(table, correction=False)
    assert result.statistic**2 == pytest.approx(chi2, rel=1e-9)
    assert result.p_value == pytest.approx(p, rel=1e-9)
    assert np.sign(result.statistic) == np.sign(sb / nb - sa / na)


def test_welch_t_matches_scipy() -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(10.0, 2.0, 80)
    b = rng.normal(10.8, 4.0, 130)
    ours = welch_ttest(a, b)
    theirs = stats.ttest_ind(b, a, equal_var=False)
    assert ours.statistic == pytest.approx(theirs.statistic, rel=1e-9)
    assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-9)
    assert ours.df == pytest.approx(theirs.df, rel=1e-9)


def test_intervals_match_scipy() -> None:
    low, high = proportion_interval(37, 250, 0.95)
    ci = stats.binomtest(37, 250).proportion_ci(0.95, method="wilson")
    assert (low, high) == pytest.approx((ci.low, ci.high), rel=1e-9)
    values = [3.1, 2.7, 4.4, 3.9, 3.3, 2.2, 5.0]
    expected = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert mean_interval(values, 0.95) == pytest.approx(expected, rel=1e-9)


def test_sample_size_reaches_the_asked_power() -> None:
    n = sample_size_proportions(0.10, 0.12, alpha=0.05, power=0.8)
    assert n is not None and 3800 < n < 3900  # the textbook figure is 3,841 per arm
    # Power of the z-test at that n, from the normal approximation, is about 80%.
    se0 = np.sqrt(2 * 0.11 * 0.89 / n)
    se1 = np.sqrt((0.10 * 0.90 + 0.12 * 0.88) / n)
    power = stats.norm.sf((stats.norm.ppf(0.975) * se0 - 0.02) / se1)
    assert power == pytest.approx(0.8, abs=0.005)
    assert sample_size_proportions(0.1, 0.1) is None


def test_a_winner_is_named_only_when_significant() -> None:
    rng = np.random.default_rng(11)
    strong = compare_metric(
        "converted", 1, list(rng.random(4000) < 0.10), 2, list(rng.random(4000) < 0.14)
    )
    assert strong.kind == "rate" and strong.significant and strong.winner == 2
    assert strong.more_needed == 0
    weak = compare_metric("converted", 1, [1, 0, 0, 0, 0], 2, [0, 1, 1, 0, 0])
    assert not weak.significant and weak.winner is None
    assert weak.more_needed is not None and weak.more_needed > 0
    revenue = compare_metric(
        "revenue", 1, list(rng.normal(5, 1, 300)), 2, list(rng.normal(5.5, 1, 300))
    )
    assert revenue.kind == "mean" and revenue.winner == 2
    assert revenue.test is not None and revenue.test.test == "welch t"


def test_a_tiny_p_value_is_not_rounded_to_zero() -> None:
    result = two_proportion_ztest(100, 10_000, 400, 10_000)
    assert result.p_value == pytest.approx(2 * stats.norm.sf(abs(result.statistic)), rel=1e-9)
    assert 0 < result.p_value < 1e-40


def test_an_experiment_report_does_not_load_scipy_stats() -> None:
    """Reports are built in the serving process: scipy.stats would cost ~70 MiB there."""
    loaded = modules_loaded_by(
        "from slipway.rollout import experiment as e\n"
        "e.two_proportion_ztest(30, 400, 70, 500)\n"
        "e.welch_ttest([1.0, 2.0, 3.5, 4.0], [2.0, 3.0, 5.0, 6.5, 7.0])\n"
        "e.proportion_interval(37, 250)\n"
        "e.mean_interval([1.0, 2.0, 4.0])\n"
        "e.sample_size_proportions(0.1, 0.12)\n"
    )
    assert "scipy.special" in loaded and "scipy.stats" not in loaded
