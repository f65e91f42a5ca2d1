"""Drift statistics: a reference (profile or sample) against a current window. Pure functions.

Binning (the contract shared with ``registry/profile.py`` and ``monitoring/windows.py``):

* A numeric feature is compared on its reference profile's bin ``edges`` (quantile bins of the
  training data, so each holds about a tenth of it). A current window is a count vector laid out
  ``[under, bin 0, ..., bin K-1, over]``: ``under`` counts values below ``edges[0]``, ``over``
  values above ``edges[-1]``; bin ``i`` counts ``edges[i] <= v < edges[i+1]`` (the last bin is
  closed), exactly as ``numpy.histogram``. Missing values (NaN, ±inf) are counted apart and
  take no part in the tests.
* A profile whose last edge is repeated has one bin per distinct value (point masses at the left
  edges); otherwise values are taken as spread evenly within a bin. This only matters for the
  Wasserstein distance.
* PSI (population stability index) is ``sum((c - r) * ln(c / r))`` over the bins' proportions,
  each proportion floored at ``EPSILON`` so that an empty bin (an unseen category, values beyond
  the reference range) adds a large but finite term instead of infinity.

Verdicts (``evaluate``) are honest at any sample size: no verdict below ``min_samples``;
p-values (two-sample KS, chi-squared — two-sample because the reference is itself a sample, so
a huge window is not judged against the reference's own noise) are corrected across features with
Benjamini–Hochberg; and a feature drifts only when its adjusted p-value is under ``alpha`` *and*
an effect size (PSI, or Wasserstein distance in reference standard deviations) is over its
threshold, so a statistically certain but negligible shift on a million rows is not an alarm.
See docs/monitoring.md for how the defaults were chosen.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from slipway.registry.records import CategoricalProfile, FeatureProfile, NumericProfile, Profile

EPSILON = 1e-4
OTHER = "__other__"  # the reference profile's bucket for categories past its top ones
UNSEEN = "__unseen__"  # the bucket for current categories the reference never saw


@dataclasses.dataclass(frozen=True)
class DriftPolicy:
    """When a difference between reference and current is called drift.

    ``min_samples``: fewest current values before any verdict. ``alpha``: false discovery rate
    across the features of one evaluation (Benjamini–Hochberg). ``psi_threshold`` and
    ``wasserstein_threshold`` (in reference standard deviations): the smallest shift worth an
    alarm; either one over its threshold is enough, together with a significant p-value.
    """

    min_samples: int = 100
    alpha: float = 0.01
    psi_threshold: float = 0.2
    wasserstein_threshold: float = 0.25


@dataclasses.dataclass(frozen=True)
class NumericCounts:
    """A current window of one numeric feature, binned on the reference edges (see module doc).

    ``under_sum``/``over_sum`` are the sums of the values below/above the reference range, which
    make the Wasserstein distance exact out there.
    """

    counts: np.ndarray  # int64, len(edges) + 1
    missing: int = 0
    under_sum: float = 0.0
    over_sum: float = 0.0

    @property
    def n(self) -> int:
        return int(self.counts.sum())


Window = NumericCounts | Mapping[str, int]


@dataclasses.dataclass(frozen=True)
class FeatureDrift:
    """The comparison of one feature (or prediction column) with its reference."""

    name: str
    kind: Literal["numeric", "categorical"]
    n: int
    reference_n: int
    test: Literal["ks", "chi2"]
    statistic: float
    p_value: float
    psi: float
    wasserstein: float | None = None  # in reference standard deviations; numeric only
    unseen: int = 0  # current values outside the reference's categories or range
    missing: int = 0
    adjusted_p: float = math.nan
    drifted: bool = False
    verdict: Literal["insufficient", "stable", "drift"] = "insufficient"

    @property
    def score(self) -> float:
        """The drift score exported as a gauge: PSI."""
        return self.psi


@dataclasses.dataclass(frozen=True)
class DriftReport:
    """Every feature's and prediction column's comparison, with verdicts."""

    features: list[FeatureDrift]
    predictions: list[FeatureDrift]

    @property
    def drifted(self) -> list[str]:
        return [f.name for f in self.features if f.drifted]

    @property
    def prediction_drifted(self) -> list[str]:
        return [f.name for f in self.predictions if f.drifted]


# -- binning -------------------------------------------------------------------------------


def point_bins(edges: Sequence[float] | np.ndarray) -> bool:
    """Whether ``edges`` give one bin per distinct value (the profile repeats the last edge)."""
    return len(edges) >= 2 and edges[-1] == edges[-2]


def bin_index(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Slot of each finite value in the ``[under, bins..., over]`` layout."""
    slot = np.searchsorted(edges, values, side="right")
    # searchsorted puts v == edges[-1] past the end; numpy.histogram closes the last bin.
    past = slot == len(edges)
    if past.any():
        slot[past & (values == edges[-1])] = len(edges) - 1
    return slot


def numeric_counts(edges: Sequence[float] | np.ndarray, values: np.ndarray) -> NumericCounts:
    """Bin the 1-D ``values`` on ``edges`` (the reference profile's) into a ``NumericCounts``."""
    edge_array = np.asarray(edges, dtype=np.float64)
    data = np.asarray(values, dtype=np.float64).ravel()
    finite = np.isfinite(data)
    missing = data.size - int(np.count_nonzero(finite))
    if missing:
        data = data[finite]
    slots = bin_index(edge_array, data)
    counts = np.bincount(slots, minlength=len(edge_array) + 1).astype(np.int64)
    # The common case has nothing beyond the reference range: skip those scans.
    under = float(data[slots == 0].sum()) if counts[0] else 0.0
    over = float(data[slots == len(edge_array)].sum()) if counts[-1] else 0.0
    return NumericCounts(counts=counts, missing=missing, under_sum=under, over_sum=over)


def reference_counts(profile: NumericProfile) -> np.ndarray:
    """The profile's bin counts in the ``[under, bins..., over]`` layout (under = over = 0)."""
    return np.concatenate([[0], np.asarray(profile.counts, dtype=np.int64), [0]])


def quantile_edges(reference: np.ndarray, bins: int = 10) -> np.ndarray:
    """Reference quantile bin edges, deduplicated (as the reference profile builds them)."""
    data = np.asarray(reference, dtype=np.float64)
    data = data[np.isfinite(data)]
    return np.unique(np.quantile(data, np.linspace(0.0, 1.0, bins + 1)))


# -- statistics on counts ------------------------------------------------------------------


def psi(reference: np.ndarray, current: np.ndarray, epsilon: float = EPSILON) -> float:
    """Population stability index of two count vectors over the same bins."""
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    if ref.sum() == 0 or cur.sum() == 0:
        return 0.0
    p = np.maximum(ref / ref.sum(), epsilon)
    q = np.maximum(cur / cur.sum(), epsilon)
    return float(np.sum((q - p) * np.log(q / p)))


def ks_counts(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """Two-sample KS statistic and p-value from two count vectors over the same ordered bins.

    The CDFs are compared at the bin edges only, so the statistic is at most the raw-sample one
    (equal when every value sits on an edge). The p-value is the limiting Kolmogorov
    distribution at Stephens' corrected ``(sqrt(en) + 0.12 + 0.11 / sqrt(en)) * d``, ``en`` the
    effective sample size: within a few percent of ``ks_2samp(..., method="asymp")`` where
    verdicts are made (see :func:`kolmogorov_sf` for why not from scipy).
    """
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    n, m = ref.sum(), cur.sum()
    if n == 0 or m == 0:
        return 0.0, 1.0
    d = float(np.max(np.abs(np.cumsum(ref) / n - np.cumsum(cur) / m)))
    root = math.sqrt(n * m / (n + m))
    return d, kolmogorov_sf((root + 0.12 + 0.11 / root) * d)


def chi2_counts(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """Chi-squared test of homogeneity on a 2 x K table (bins empty in both are dropped): the
    statistic and p-value of ``scipy.stats.chi2_contingency(table, correction=False)``."""
    table = np.vstack([reference, current]).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    statistic = float(np.sum((table - expected) ** 2 / expected))
    return statistic, chi2_sf(statistic, table.shape[1] - 1)


# The two distributions the live drift checks need, in closed form. scipy has both
# (special.kolmogorov, special.chdtrc), but a serving process that imported it for them grew by
# 26 MiB and held the GIL ~150 ms doing so at its first drift check, stalling the requests in
# flight; these are exact series (the tests hold them to scipy's values).


def kolmogorov_sf(x: float) -> float:
    """P(K > x) for the limiting Kolmogorov distribution, as ``scipy.special.kolmogorov``."""
    if x <= 0.0:
        return 1.0
    if x < 1.0:  # the Jacobi theta form of the CDF converges fastest here
        c = math.pi**2 / (8.0 * x * x)
        cdf = (
            math.sqrt(2.0 * math.pi)
            / x
            * sum(math.exp(-((2 * k - 1) ** 2) * c) for k in (1, 2, 3, 4, 5))
        )
        return 1.0 - cdf
    return 2.0 * sum((-1) ** (k - 1) * math.exp(-2.0 * k * k * x * x) for k in range(1, 8))


def chi2_sf(x: float, df: int) -> float:
    """P(X > x) for chi-squared with integer ``df`` degrees of freedom, as
    ``scipy.special.chdtrc``: the upper regularised gamma Q(df/2, x/2), summed term by term
    (Q(a + 1, y) = Q(a, y) + y^a e^-y / Gamma(a + 1), from Q(1, y) = e^-y or
    Q(1/2, y) = erfc(sqrt(y))), each term in log space so none overflows."""
    if x <= 0.0:
        return 1.0
    y = x / 2.0
    log_y = math.log(y)
    if df % 2 == 0:
        total = sum(math.exp(i * log_y - y - math.lgamma(i + 1)) for i in range(df // 2))
    else:
        total = math.erfc(math.sqrt(y)) + sum(
            math.exp((i - 0.5) * log_y - y - math.lgamma(i + 0.5)) for i in range(1, df // 2 + 1)
        )
    return min(total, 1.0)


def wasserstein_counts(
    edges: Sequence[float], reference: np.ndarray, window: NumericCounts
) -> float:
    """Wasserstein-1 distance between the reference bins and a window on the same edges.

    ``integral |F_ref - F_cur| dx`` with each CDF linear within a bin (or a step at the left
    edge when the profile has point bins); exact beyond the reference range thanks to the
    window's ``under_sum``/``over_sum``.
    """
    e = np.asarray(edges, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    cur = window.counts.astype(np.float64)
    n, m = ref.sum(), cur.sum()
    if n == 0 or m == 0 or len(e) < 2:
        return 0.0
    under, over = cur[0] / m, cur[-1] / m
    # CDFs at each edge e[0..K]: after "under" and after each bin.
    f_ref = np.cumsum(ref[:-1])[: len(e)] / n
    f_cur = np.cumsum(cur[:-1])[: len(e)] / m
    d = f_ref - f_cur
    width = np.diff(e)
    if point_bins(edges):
        inside = float(np.sum(np.abs(d[1:-1]) * width[:-1]))
    else:
        d0, d1 = d[:-1], d[1:]
        same = d0 * d1 >= 0
        total = np.abs(d0) + np.abs(d1)
        crossing = np.divide(d0**2 + d1**2, total, out=np.zeros_like(total), where=total > 0)
        inside = float(np.sum(width / 2 * np.where(same, total, crossing)))
    outside_low = under * e[0] - window.under_sum / m
    outside_high = window.over_sum / m - over * e[-1]
    return float(inside + max(0.0, outside_low) + max(0.0, outside_high))


def benjamini_hochberg(p_values: Sequence[float]) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (same order as given)."""
    p = np.asarray(p_values, dtype=np.float64)
    k = len(p)
    if k == 0:
        return p
    order = np.argsort(p)
    scaled = p[order] * k / np.arange(1, k + 1)
    adjusted = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(k)
    out[order] = np.minimum(adjusted, 1.0)
    return out


# -- two raw samples -----------------------------------------------------------------------


def psi_samples(
    reference: np.ndarray, current: np.ndarray, *, bins: int = 10, epsilon: float = EPSILON
) -> float:
    """PSI of two 1-D samples on the reference's quantile bins (plus under/over bins)."""
    edges = quantile_edges(reference, bins)
    if len(edges) == 0:
        return 0.0
    ref = numeric_counts(edges, reference).counts
    return psi(ref, numeric_counts(edges, current).counts, epsilon)


def ks_samples(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov–Smirnov statistic and p-value (scipy) of two 1-D samples."""
    from scipy import stats

    result = stats.ks_2samp(_finite(reference), _finite(current))
    return float(result.statistic), float(result.pvalue)


def wasserstein_samples(reference: np.ndarray, current: np.ndarray) -> float:
    """Wasserstein-1 distance (scipy) of two 1-D samples, in the data's units."""
    from scipy import stats

    return float(stats.wasserstein_distance(_finite(reference), _finite(current)))


def category_counts(values: Sequence[object]) -> dict[str, int]:
    """Count categories by ``str`` of the value, leaving out None and NaN (as the profile)."""
    out: dict[str, int] = {}
    for value in values:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if isinstance(value, bytes):
            key = value.decode("utf-8", errors="replace")
        else:
            key = str(value.item() if isinstance(value, np.generic) else value)
        out[key] = out.get(key, 0) + 1
    return out


def _finite(values: np.ndarray) -> np.ndarray:
    data = np.asarray(values, dtype=np.float64).ravel()
    return data[np.isfinite(data)]


# -- profile against window ----------------------------------------------------------------


def category_table(
    frequencies: Mapping[str, int], current: Mapping[str, int]
) -> tuple[np.ndarray, np.ndarray, int]:
    """Reference and current counts over the reference's categories, and the unseen count.

    Current categories the reference never saw are counted as ``unseen``; they join the
    reference's ``__other__`` bucket when it has one (they cannot be told apart from its long
    tail), else an ``__unseen__`` bucket whose reference count is 0.
    """
    names = list(frequencies)
    ref = [frequencies[name] for name in names]
    cur = [current.get(name, 0) for name in names]
    unseen = sum(count for name, count in current.items() if name not in frequencies)
    if unseen:
        if OTHER in frequencies:
            cur[names.index(OTHER)] += unseen
        else:
            ref.append(0)
            cur.append(unseen)
    return np.asarray(ref, dtype=np.int64), np.asarray(cur, dtype=np.int64), unseen


def compare(profile: FeatureProfile, window: Window) -> FeatureDrift:
    """Test one feature's window against its reference profile (no verdict yet)."""
    if isinstance(profile, NumericProfile):
        if not isinstance(window, NumericCounts):
            raise TypeError(f"feature {profile.name!r} is numeric; got a categorical window")
        ref = reference_counts(profile)
        d, p = ks_counts(ref, window.counts)
        distance = wasserstein_counts(profile.edges, ref, window)
        return FeatureDrift(
            name=profile.name,
            kind="numeric",
            n=window.n,
            reference_n=profile.count,
            test="ks",
            statistic=d,
            p_value=p,
            psi=psi(ref, window.counts),
            wasserstein=distance / profile.std if profile.std > 0 else None,
            unseen=int(window.counts[0] + window.counts[-1]),
            missing=window.missing,
        )
    if isinstance(window, NumericCounts):
        raise TypeError(f"feature {profile.name!r} is categorical; got a numeric window")
    ref, cur, unseen = category_table(profile.frequencies, window)
    stat, p = chi2_counts(ref, cur)
    return FeatureDrift(
        name=profile.name,
        kind="categorical",
        n=int(cur.sum()),
        reference_n=profile.count,
        test="chi2",
        statistic=stat,
        p_value=p,
        psi=psi(ref, cur),
        unseen=unseen,
    )


def decide(results: Sequence[FeatureDrift], policy: DriftPolicy) -> list[FeatureDrift]:
    """Verdicts for one family of tests: minimum size, Benjamini–Hochberg, effect sizes."""
    tested = [i for i, r in enumerate(results) if r.n >= policy.min_samples and r.reference_n > 0]
    adjusted = benjamini_hochberg([results[i].p_value for i in tested])
    out = list(results)
    for i, adj in zip(tested, adjusted, strict=True):
        r = results[i]
        large = r.psi >= policy.psi_threshold or (
            r.wasserstein is not None and r.wasserstein >= policy.wasserstein_threshold
        )
        drifted = bool(adj <= policy.alpha and large)
        out[i] = dataclasses.replace(
            r, adjusted_p=float(adj), drifted=drifted, verdict="drift" if drifted else "stable"
        )
    return out


def evaluate(
    profile: Profile,
    features: Mapping[str, Window],
    predictions: Mapping[str, Window] | None = None,
    policy: DriftPolicy | None = None,
) -> DriftReport:
    """Compare the windows with the version's reference profile and give verdicts.

    Input features and prediction columns are two families, each corrected on its own. A
    feature with no window is left out.
    """
    policy = policy or DriftPolicy()
    predictions = predictions or {}
    return DriftReport(
        features=decide(
            [compare(f, features[f.name]) for f in profile.features if f.name in features], policy
        ),
        predictions=decide(
            [compare(f, predictions[f.name]) for f in profile.predictions if f.name in predictions],
            policy,
        ),
    )


def empty_window(profile: FeatureProfile) -> Window:
    """A window with nothing in it, of the right kind for ``profile``."""
    if isinstance(profile, NumericProfile):
        return NumericCounts(counts=np.zeros(len(profile.edges) + 1, dtype=np.int64))
    return {}


__all__ = [
    "EPSILON",
    "CategoricalProfile",
    "DriftPolicy",
    "DriftReport",
    "FeatureDrift",
    "NumericCounts",
    "benjamini_hochberg",
    "category_counts",
    "chi2_counts",
    "chi2_sf",
    "compare",
    "decide",
    "empty_window",
    "evaluate",
    "kolmogorov_sf",
    "ks_counts",
    "ks_samples",
    "numeric_counts",
    "psi",
    "psi_samples",
    "wasserstein_counts",
    "wasserstein_samples",
]
