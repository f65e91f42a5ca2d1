"""A/B statistics: per-arm estimates with confidence intervals, significance tests, sample size.

Pure functions over plain numbers. Rates (values that are all 0 or 1, e.g. conversion) use the
two-proportion z-test with a pooled standard error; other values (revenue, ratings) use Welch's
t-test, which does not assume equal variances. A winner is named only when p < alpha.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np

# The normal distribution from the standard library; Student's t from scipy.special, imported
# on first use. These reports are built in the serving process, where scipy.stats cost ~70 MiB
# and ~0.65 s holding the GIL to import; scipy.special about a third of that.
_NORMAL = statistics.NormalDist()


def _special() -> Any:
    from scipy import special

    return special


def _two_sided_normal(z: float) -> float:
    """P(|Z| > |z|): erfc keeps tiny p-values exact where 1 - cdf would round to 0."""
    return math.erfc(abs(z) / math.sqrt(2.0))


def _two_sided_t(t: float, df: float) -> float:
    return float(2.0 * _special().stdtr(df, -abs(t)))


class SignificanceTest(msgspec.Struct, frozen=True):
    """A two-sided test of "arm B differs from arm A"."""

    test: str  # "two-proportion z", "welch t"
    statistic: float
    p_value: float
    df: float | None = None


def two_proportion_ztest(
    successes_a: int, n_a: int, successes_b: int, n_b: int
) -> SignificanceTest:
    """Two-sided z-test that two rates differ, pooled standard error under the null."""
    if n_a <= 0 or n_b <= 0:
        raise ValueError("both arms need at least one observation")
    p_a, p_b = successes_a / n_a, successes_b / n_b
    pooled = (successes_a + successes_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se == 0:
        return SignificanceTest("two-proportion z", 0.0, 1.0)
    z = (p_b - p_a) / se
    return SignificanceTest("two-proportion z", z, _two_sided_normal(z))


def welch_ttest(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray
) -> SignificanceTest:
    """Two-sided Welch's t-test that two means differ (Welch-Satterthwaite degrees of freedom)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.size < 2 or y.size < 2:
        raise ValueError("each arm needs at least two observations")
    va, vb = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    if va + vb == 0:
        return SignificanceTest("welch t", 0.0, 1.0, float(x.size + y.size - 2))
    t = (y.mean() - x.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (x.size - 1) + vb**2 / (y.size - 1))
    return SignificanceTest("welch t", float(t), _two_sided_t(float(t), float(df)), float(df))


def proportion_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a rate (well-behaved near 0 and 1 and for small n)."""
    if n <= 0:
        return (0.0, 1.0)
    z = _NORMAL.inv_cdf(0.5 + confidence / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def mean_interval(
    values: Sequence[float] | np.ndarray, confidence: float = 0.95
) -> tuple[float, float]:
    """Student-t interval for a mean."""
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        m = float(x.mean()) if x.size else 0.0
        return (m, m)
    t = float(_special().stdtrit(x.size - 1, 0.5 + confidence / 2))
    half = t * x.std(ddof=1) / math.sqrt(x.size)
    return (float(x.mean() - half), float(x.mean() + half))


def sample_size_proportions(
    p_a: float, p_b: float, *, alpha: float = 0.05, power: float = 0.8
) -> int | None:
    """Observations needed per arm to detect rates ``p_a`` vs ``p_b`` (two-sided); None when
    they are equal (no difference can be detected)."""
    if p_a == p_b:
        return None
    z_a = _NORMAL.inv_cdf(1 - alpha / 2)
    z_b = _NORMAL.inv_cdf(power)
    p_bar = (p_a + p_b) / 2
    n = (
        z_a * math.sqrt(2 * p_bar * (1 - p_bar))
        + z_b * math.sqrt(p_a * (1 - p_a) + p_b * (1 - p_b))
    ) ** 2 / (p_a - p_b) ** 2
    return math.ceil(n)


def sample_size_means(
    sd_a: float, sd_b: float, delta: float, *, alpha: float = 0.05, power: float = 0.8
) -> int | None:
    """Observations needed per arm to detect a difference ``delta`` in means."""
    if delta == 0:
        return None
    z_a = _NORMAL.inv_cdf(1 - alpha / 2)
    z_b = _NORMAL.inv_cdf(power)
    return math.ceil((z_a + z_b) ** 2 * (sd_a**2 + sd_b**2) / delta**2)


class ArmSummary(msgspec.Struct, frozen=True):
    version: int
    n: int
    mean: float
    low: float
    high: float


class MetricReport(msgspec.Struct, frozen=True):
    """One named outcome compared between the arms."""

    metric: str
    kind: str  # "rate" or "mean"
    arms: list[ArmSummary]
    test: SignificanceTest | None
    significant: bool
    winner: int | None
    needed_per_arm: int | None
    more_needed: int | None


def compare_metric(
    metric: str,
    version_a: int,
    a: Sequence[float],
    version_b: int,
    b: Sequence[float],
    *,
    alpha: float = 0.05,
    power: float = 0.8,
) -> MetricReport:
    """Compare ``metric`` between arm ``version_a`` (values ``a``) and ``version_b``."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    both = np.concatenate([x, y])
    rate = both.size > 0 and bool(np.isin(both, (0.0, 1.0)).all())
    confidence = 1 - alpha
    test: SignificanceTest | None = None
    needed: int | None = None
    arms = []
    if rate:
        for version, v in ((version_a, x), (version_b, y)):
            low, high = proportion_interval(int(v.sum()), v.size, confidence)
            arms.append(ArmSummary(version, v.size, float(v.mean()) if v.size else 0.0, low, high))
        if x.size and y.size:
            test = two_proportion_ztest(int(x.sum()), x.size, int(y.sum()), y.size)
            needed = sample_size_proportions(
                float(x.mean()), float(y.mean()), alpha=alpha, power=power
            )
    else:
        for version, v in ((version_a, x), (version_b, y)):
            low, high = mean_interval(v, confidence)
            arms.append(ArmSummary(version, v.size, float(v.mean()) if v.size else 0.0, low, high))
        if x.size >= 2 and y.size >= 2:
            test = welch_ttest(x, y)
            needed = sample_size_means(
                float(x.std(ddof=1)),
                float(y.std(ddof=1)),
                float(y.mean() - x.mean()),
                alpha=alpha,
                power=power,
            )
    significant = test is not None and test.p_value < alpha
    winner = None
    if significant:
        winner = version_b if y.mean() > x.mean() else version_a
    more = None if needed is None else max(0, needed - min(x.size, y.size))
    return MetricReport(
        metric, "rate" if rate else "mean", arms, test, significant, winner, needed, more
    )


def experiment_report(
    values: dict[int, dict[str, list[float]]],
    version_a: int,
    version_b: int,
    *,
    alpha: float = 0.05,
) -> list[MetricReport]:
    """Every named outcome recorded for either arm, compared between the two."""
    names = sorted({name for arm in values.values() for name in arm})
    return [
        compare_metric(
            name,
            version_a,
            values.get(version_a, {}).get(name, []),
            version_b,
            values.get(version_b, {}).get(name, []),
            alpha=alpha,
        )
        for name in names
    ]
