"""Drift statistics against scipy on the same data, false-alarm rates, known shifts."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from slipway.monitoring import drift
from slipway.registry.profile import build_profile, profile_column
from slipway.registry.records import CategoricalProfile, FeatureProfile, NumericProfile, Profile

from ..imports import modules_loaded_by


def _edges(profile: FeatureProfile) -> list[float]:
    assert isinstance(profile, NumericProfile)
    return profile.edges


# -- against scipy -------------------------------------------------------------------------


def test_ks_samples_is_scipys_two_sample_test() -> None:
    rng = np.random.default_rng(1)
    ref, cur = rng.normal(size=500), rng.normal(0.2, 1.0, size=300)
    expected = stats.ks_2samp(ref, cur)
    assert drift.ks_samples(ref, cur) == pytest.approx((expected.statistic, expected.pvalue))


def test_ks_on_point_bins_equals_scipy_on_the_raw_samples() -> None:
    # With one bin per distinct value the binned CDFs are the empirical CDFs, so the profile-
    # based test must give scipy's statistic exactly, and its asymptotic p-value within the
    # Stephens approximation's few percent.
    rng = np.random.default_rng(2)
    ref = rng.integers(0, 8, 5000).astype(float)
    cur = rng.integers(-1, 10, 3000).astype(float)
    profile = profile_column("x", ref)
    assert isinstance(profile, NumericProfile) and drift.point_bins(profile.edges)
    window = drift.numeric_counts(profile.edges, cur)
    d, p = drift.ks_counts(drift.reference_counts(profile), window.counts)
    expected = stats.ks_2samp(ref, cur, method="asymp")
    assert d == pytest.approx(expected.statistic, rel=1e-9)
    assert p == pytest.approx(expected.pvalue, rel=0.05)
    distance = drift.wasserstein_counts(profile.edges, drift.reference_counts(profile), window)
    assert distance == pytest.approx(stats.wasserstein_distance(ref, cur), rel=1e-9)


def test_binned_ks_is_conservative_and_close_on_continuous_data() -> None:
    rng = np.random.default_rng(3)
    ref, cur = rng.normal(size=20000), rng.normal(0.3, 1.2, size=5000)
    profile = profile_column("x", ref)
    assert isinstance(profile, NumericProfile)
    window = drift.numeric_counts(profile.edges, cur)
    d, _ = drift.ks_counts(drift.reference_counts(profile), window.counts)
    exact = stats.ks_2samp(ref, cur).statistic
    assert exact * 0.8 <= d <= exact
    distance = drift.wasserstein_counts(profile.edges, drift.reference_counts(profile), window)
    # Within-bin uniformity overstates the wide tail bins a little; never by a factor.
    assert distance == pytest.approx(drift.wasserstein_samples(ref, cur), rel=0.25)


def test_wasserstein_beyond_the_reference_range_is_exact() -> None:
    ref = np.repeat([0.0, 1.0, 2.0, 3.0], 250)
    cur = np.array([-5.0, 0.0, 1.0, 2.0, 3.0, 10.0])
    profile = profile_column("x", ref)
    assert isinstance(profile, NumericProfile) and drift.point_bins(profile.edges)
    window = drift.numeric_counts(profile.edges, cur)
    assert window.counts[0] == 1 and window.counts[-1] == 1
    got = drift.wasserstein_counts(profile.edges, drift.reference_counts(profile), window)
    assert got == pytest.approx(stats.wasserstein_distance(ref, cur))


@pytest.mark.parametrize(
    ("n", "d"), [(100, 0.1), (100, 0.2), (300, 0.05), (300, 0.1), (1000, 0.05), (5000, 0.02)]
)
def test_ks_p_value_is_close_to_scipys_where_verdicts_are_made(n: int, d: float) -> None:
    # Samples of n and n values whose CDFs differ by d at one point: en = n / 2.
    k = round(d * n)
    ref = np.array([n - k, k, 0], dtype=float)
    cur = np.array([n - 2 * k, 2 * k, 0], dtype=float)
    got_d, p = drift.ks_counts(ref, cur)
    assert got_d == pytest.approx(k / n)
    assert p == pytest.approx(stats.kstwo.sf(k / n, round(n / 2)), rel=0.05)


def test_drift_checks_of_a_serving_process_do_not_load_scipy() -> None:
    loaded = modules_loaded_by(
        "import numpy as np\n"
        "from slipway.monitoring import drift\n"
        "drift.ks_counts(np.array([5.0, 3, 2]), np.array([1.0, 4, 5]))\n"
        "drift.chi2_counts(np.array([5.0, 3, 2]), np.array([1.0, 4, 5]))\n"
    )
    assert not [name for name in loaded if name.startswith("scipy")]


def test_the_closed_form_distributions_match_scipy() -> None:
    from scipy import special

    for x in [*np.linspace(0.001, 4.0, 800), 0.0, 1.0, 6.0, 9.0]:
        assert drift.kolmogorov_sf(x) == pytest.approx(special.kolmogorov(x), rel=1e-12, abs=1e-300)
    for df in [1, 2, 3, 4, 5, 9, 10, 49, 50, 51, 200]:
        for x in [0.0, 1e-6, *np.linspace(0.01, 4.0 * df + 60.0, 120)]:
            want = special.chdtrc(df, x)
            assert drift.chi2_sf(x, df) == pytest.approx(want, rel=1e-11, abs=1e-300), (df, x)


def test_chi2_counts_is_scipys_contingency_test() -> None:
    ref, cur = np.array([50, 30, 20, 0]), np.array([40, 45, 10, 5])
    expected = stats.chi2_contingency(np.vstack([ref, cur]), correction=False)
    assert drift.chi2_counts(ref, cur) == pytest.approx((expected.statistic, expected.pvalue))


def test_psi_follows_its_formula_with_epsilon_for_empty_bins() -> None:
    ref, cur = np.array([50, 50, 0]), np.array([25, 50, 25])
    p = np.array([0.5, 0.5, drift.EPSILON])
    q = np.array([0.25, 0.5, 0.25])
    assert drift.psi(ref, cur) == pytest.approx(float(np.sum((q - p) * np.log(q / p))))
    assert drift.psi(ref, ref) == 0.0


def test_psi_samples_uses_reference_quantile_bins() -> None:
    rng = np.random.default_rng(4)
    ref = rng.normal(size=10000)
    edges = np.quantile(ref, np.linspace(0, 1, 11))
    cur = rng.normal(1.0, 1.0, size=10000)
    ref_counts = np.histogram(ref, edges)[0]
    inside = np.histogram(cur, edges)[0]
    cur_counts = np.concatenate([[(cur < edges[0]).sum()], inside, [(cur > edges[-1]).sum()]])
    expected = drift.psi(np.concatenate([[0], ref_counts, [0]]), cur_counts)
    assert drift.psi_samples(ref, cur) == pytest.approx(expected)
    assert drift.psi_samples(ref, cur) > 0.5
    assert drift.psi_samples(ref, rng.normal(size=10000)) < 0.01


def test_benjamini_hochberg_matches_scipy() -> None:
    p = [0.01, 0.04, 0.03, 0.005, 0.5, 0.2]
    assert drift.benjamini_hochberg(p) == pytest.approx(stats.false_discovery_control(p))


def test_categories_unseen_are_counted_and_tested() -> None:
    profile = CategoricalProfile(name="c", count=300, frequencies={"a": 100, "b": 100, "c": 100})
    window = {"a": 100, "b": 100, "c": 50, "zz": 50}
    result = drift.compare(profile, window)
    expected = stats.chi2_contingency([[100, 100, 100, 0], [100, 100, 50, 50]], correction=False)
    assert result.unseen == 50
    assert (result.statistic, result.p_value) == pytest.approx(
        (expected.statistic, expected.pvalue)
    )
    assert result.psi > 0.2


def test_unseen_categories_join_the_other_bucket_when_the_reference_has_one() -> None:
    frequencies = {"a": 60, "__other__": 40}
    ref, cur, unseen = drift.category_table(frequencies, {"a": 10, "q": 5, "__other__": 1})
    assert unseen == 5 and ref.tolist() == [60, 40] and cur.tolist() == [10, 6]


# -- honest at any sample size ---------------------------------------------------------------

DISTRIBUTIONS = [
    stats.norm(0, 1),
    stats.lognorm(0.8),
    stats.expon(),
    stats.uniform(0, 5),
    stats.gamma(2),
    stats.poisson(3),  # integer codes: point bins
]
CATEGORIES = np.array(["red", "green", "blue", "grey"])
CATEGORY_P = np.array([0.4, 0.3, 0.2, 0.1])


def _window(dist: stats.rv_frozen, edges: list[float], n: int, rng: np.random.Generator):
    """n draws from ``dist`` binned on ``edges``, drawn as bin counts (multinomial on the
    distribution's own bin probabilities), so a million-row window costs no million samples."""
    e = np.asarray(edges)
    if isinstance(dist.dist, stats.rv_discrete):
        # Point bins: bin i holds values in [e_i, e_i+1); the last bin is the point e_K.
        upper = np.concatenate([dist.cdf(e[1:-1] - 1e-9), [dist.cdf(e[-1])]])
        cdf = np.concatenate([[dist.cdf(e[0] - 1e-9)], upper])
    else:
        cdf = dist.cdf(e)
    p = np.diff(np.concatenate([[0.0], cdf, [1.0]]))
    counts = rng.multinomial(n, p / p.sum())
    under = dist.ppf(rng.uniform(0, cdf[0], counts[0])).sum() if counts[0] else 0.0
    over = dist.ppf(rng.uniform(cdf[-1], 1, counts[-1])).sum() if counts[-1] else 0.0
    return drift.NumericCounts(counts=counts, under_sum=float(under), over_sum=float(over))


def _alarm(n: int, seed: int, shift: float = 0.0, policy: drift.DriftPolicy | None = None):
    """One evaluation of 7 features (6 numeric, 1 categorical) on a 10,000-row reference;
    feature f0 (standard normal) is shifted by ``shift`` standard deviations."""
    rng = np.random.default_rng(seed)
    profiles, windows = [], {}
    for i, dist in enumerate(DISTRIBUTIONS):
        prof = profile_column(f"f{i}", dist.rvs(10000, random_state=rng))
        assert isinstance(prof, NumericProfile)
        profiles.append(prof)
        live = stats.norm(shift, 1) if i == 0 and shift else dist
        windows[f"f{i}"] = _window(live, prof.edges, n, rng)
    profiles.append(profile_column("colour", rng.choice(CATEGORIES, 10000, p=CATEGORY_P)))
    drawn = rng.multinomial(n, CATEGORY_P)
    windows["colour"] = {str(c): int(k) for c, k in zip(CATEGORIES, drawn, strict=True)}
    report = drift.evaluate(Profile(rows=10000, features=profiles), windows, policy=policy)
    assert all(f.verdict != "insufficient" for f in report.features)
    return report


@pytest.mark.parametrize("n", [100, 10_000, 1_000_000])
def test_no_false_alarm_on_same_distribution(n: int) -> None:
    # The stated level: at most 1 alarm in 40 repeated evaluations (2.5%) of 7 features each.
    alarms = sum(bool(_alarm(n, seed).drifted) for seed in range(40))
    assert alarms <= 1


def test_p_values_alone_would_alarm_on_a_negligible_shift_at_a_million_rows() -> None:
    report = _alarm(1_000_000, seed=7, shift=0.08)
    shifted = report.features[0]
    assert shifted.adjusted_p < 1e-4  # statistically certain...
    assert shifted.psi < 0.02 and not shifted.drifted  # ...and too small to matter


@pytest.mark.parametrize(("n", "shift"), [(100, 1.0), (1000, 0.5), (10_000, 0.5), (1_000_000, 0.5)])
def test_known_shift_alarms(n: int, shift: float) -> None:
    for seed in range(5):
        report = _alarm(n, seed, shift=shift)
        assert report.drifted == ["f0"]


def test_no_verdict_below_minimum_sample_size() -> None:
    rng = np.random.default_rng(5)
    profile = build_profile(rng.normal(size=(5000, 2)))
    windows = {
        f.name: drift.numeric_counts(f.edges, rng.normal(5, 1, 50)) for f in profile.features
    }  # type: ignore[union-attr]
    report = drift.evaluate(profile, windows, policy=drift.DriftPolicy(min_samples=100))
    assert [f.verdict for f in report.features] == ["insufficient", "insufficient"]
    report = drift.evaluate(profile, windows, policy=drift.DriftPolicy(min_samples=50))
    assert report.drifted == ["x0", "x1"]


def test_a_million_raw_rows_binned_then_evaluated() -> None:
    rng = np.random.default_rng(6)
    profile = build_profile(rng.normal(size=(10000, 3)))
    live = rng.normal(size=(1_000_000, 3))
    live[:, 2] += 0.5
    windows = {
        f.name: drift.numeric_counts(_edges(f), live[:, i]) for i, f in enumerate(profile.features)
    }
    report = drift.evaluate(profile, windows)
    assert report.drifted == ["x2"]
    assert all(f.n == 1_000_000 for f in report.features)


def test_prediction_columns_are_their_own_family() -> None:
    rng = np.random.default_rng(8)
    x = rng.normal(size=(5000, 2))
    scores = 1 / (1 + np.exp(-x[:, 0]))
    profile = build_profile(x, predictions={"score": scores})
    features = {
        f.name: drift.numeric_counts(f.edges, rng.normal(size=2000)) for f in profile.features
    }  # type: ignore[union-attr]
    pred = profile.predictions[0]
    assert isinstance(pred, NumericProfile)
    shifted = 1 / (1 + np.exp(-rng.normal(1.0, 1.0, 2000)))
    report = drift.evaluate(profile, features, {"score": drift.numeric_counts(pred.edges, shifted)})
    assert report.drifted == [] and report.prediction_drifted == ["score"]
