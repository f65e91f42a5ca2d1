"""Analysis gates: is the candidate as good as stable on live evidence?

Pure functions over plain values. Each check compares candidate against stable over one window
and needs a minimum number of samples on both arms: with fewer it *waits* (no evidence is not a
pass). Any failing check fails the analysis; all passing passes it.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

import msgspec
import numpy as np

from slipway.registry.records import NumericProfile, Profile

# Latency histogram: log-spaced upper edges from 0.1 ms to ~60 s (ratio 1.25), then +inf.
LATENCY_EDGES_S: tuple[float, ...] = tuple(0.0001 * 1.25**i for i in range(60))


def latency_bucket(seconds: float) -> int:
    """Index of the latency bucket holding ``seconds``: the first whose upper edge is at least
    ``seconds`` (len(LATENCY_EDGES_S) = overflow). Runs once per request under a rollout: a
    C-level binary search costs a fraction of a logarithm in Python."""
    return bisect_left(LATENCY_EDGES_S, seconds)


def quantile_from_buckets(counts: Sequence[int], q: float) -> float | None:
    """Upper edge (seconds) of the bucket holding quantile ``q``; None with no samples."""
    total = sum(counts)
    if total == 0:
        return None
    need = q * total
    seen = 0
    for index, count in enumerate(counts):
        seen += count
        if seen >= need:
            return LATENCY_EDGES_S[min(index, len(LATENCY_EDGES_S) - 1)]
    return LATENCY_EDGES_S[-1]


class ArmStats(msgspec.Struct):
    """Evidence for one version over a window: requests, server errors, latency histogram,
    a sample of output scores, and business-metric values joined from feedback."""

    requests: int = 0
    errors: int = 0
    latency: list[int] = msgspec.field(default_factory=lambda: [0] * (len(LATENCY_EDGES_S) + 1))
    scores: list[float] = []
    metrics: dict[str, list[float]] = {}
    features: dict[str, list[float]] = {}  # a sample of each numeric input feature

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def p99_s(self) -> float | None:
        return quantile_from_buckets(self.latency, 0.99)

    def merge(self, other: ArmStats) -> None:
        """Add another window's evidence into this one."""
        self.requests += other.requests
        self.errors += other.errors
        for i, count in enumerate(other.latency[: len(self.latency)]):
            self.latency[i] += count
        self.scores = [*self.scores, *other.scores]
        for name, values in other.metrics.items():
            self.metrics[name] = [*self.metrics.get(name, []), *values]
        for name, values in other.features.items():
            self.features[name] = [*self.features.get(name, []), *values]


class GateConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Thresholds of the canary analysis; a None threshold turns its check off."""

    min_samples: int = 100
    max_error_rate_increase: float | None = 0.01
    max_p99_ratio: float | None = 1.5
    p99_slack_ms: float = 5.0
    max_output_psi: float | None = 0.25
    max_output_ks: float | None = None
    min_output_samples: int = 50
    max_input_psi: float | None = None  # e.g. 0.25; needs the version's reference profile
    min_input_samples: int = 50
    business_metric: str | None = None
    max_business_drop: float = 0.0
    min_feedback: int = 30


class Check(msgspec.Struct, frozen=True):
    """One check's result with the evidence behind it."""

    name: str
    status: str  # "pass", "fail", "wait"
    value: float | None
    threshold: float | None
    samples: int
    detail: str = ""


class Analysis(msgspec.Struct, frozen=True):
    verdict: str  # "pass", "fail", "wait"
    checks: list[Check]


def psi(reference: Sequence[float], current: Sequence[float], bins: int = 10) -> float:
    """Population stability index of ``current`` against ``reference`` over the reference's
    quantile bins (0.1 = some shift, 0.25 = large shift)."""
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:
        # Constant reference: all mass in one bin; compare the share equal to it.
        same_ref, same_cur = 1.0, float(np.mean(cur == ref[0]))
        p = np.array([same_ref, 1 - same_ref]) + 1e-6
        c = np.array([same_cur, 1 - same_cur]) + 1e-6
        return float(np.sum((c - p) * np.log(c / p)))
    edges[0], edges[-1] = -np.inf, np.inf
    p = np.histogram(ref, edges)[0] / len(ref) + 1e-6
    c = np.histogram(cur, edges)[0] / len(cur) + 1e-6
    return float(np.sum((c - p) * np.log(c / p)))


def ks_statistic(a: Sequence[float], b: Sequence[float]) -> float:
    """The two-sample Kolmogorov–Smirnov statistic (``scipy.stats.ks_2samp(a, b).statistic``):
    the largest gap between the two empirical CDFs. Computed here because the controller runs
    in the serving process, where importing ``scipy.stats`` costs ~70 MiB and most of a second
    of the GIL."""
    x, y = np.sort(np.asarray(a, dtype=np.float64)), np.sort(np.asarray(b, dtype=np.float64))
    if x.size == 0 or y.size == 0:
        return 0.0
    at = np.concatenate([x, y])
    gap = (
        np.searchsorted(x, at, side="right") / x.size
        - np.searchsorted(y, at, side="right") / y.size
    )
    return float(np.max(np.abs(gap)))


def evaluate(
    stable: ArmStats,
    candidate: ArmStats,
    gates: GateConfig,
    reference: Profile | None = None,
) -> Analysis:
    """Compare ``candidate`` against ``stable`` under ``gates``.

    ``reference``: the candidate's reference profile; with one, the window's live inputs (both
    arms) are checked for drift from the data the candidate was trained on, since a step
    judged on inputs unlike those is not evidence that the candidate is fit for them.
    """
    checks: list[Check] = []
    n = min(stable.requests, candidate.requests)
    enough = n >= gates.min_samples
    if gates.max_error_rate_increase is not None:
        delta = candidate.error_rate - stable.error_rate
        checks.append(
            Check(
                "error_rate",
                _status(enough, delta <= gates.max_error_rate_increase),
                delta,
                gates.max_error_rate_increase,
                n,
                f"candidate {candidate.error_rate:.4f} vs stable {stable.error_rate:.4f}",
            )
        )
    if gates.max_p99_ratio is not None:
        ours, theirs = candidate.p99_s(), stable.p99_s()
        if ours is None or theirs is None:
            rule = f"limit: {gates.max_p99_ratio:g} × stable p99 + {gates.p99_slack_ms:g} ms"
            checks.append(Check("p99_latency", "wait", None, None, n, rule))
        else:
            limit = theirs * gates.max_p99_ratio + gates.p99_slack_ms / 1000
            checks.append(
                Check(
                    "p99_latency",
                    _status(enough, ours <= limit),
                    ours,
                    limit,
                    n,
                    f"candidate p99 {ours * 1000:.2f} ms vs stable {theirs * 1000:.2f} ms",
                )
            )
    scored = min(len(stable.scores), len(candidate.scores))
    enough_scores = scored >= gates.min_output_samples
    if gates.max_output_psi is not None:
        value = psi(stable.scores, candidate.scores) if enough_scores else None
        checks.append(
            Check(
                "output_psi",
                _status(enough_scores, value is not None and value <= gates.max_output_psi),
                value,
                gates.max_output_psi,
                scored,
            )
        )
    if gates.max_output_ks is not None:
        ks = ks_statistic(stable.scores, candidate.scores) if enough_scores else None
        checks.append(
            Check(
                "output_ks",
                _status(enough_scores, ks is not None and ks <= gates.max_output_ks),
                ks,
                gates.max_output_ks,
                scored,
            )
        )
    if gates.max_input_psi is not None and reference is not None:
        checks.extend(_input_drift(stable, candidate, gates, reference))
    if gates.business_metric is not None:
        name = gates.business_metric
        ours_v, theirs_v = candidate.metrics.get(name, []), stable.metrics.get(name, [])
        m = min(len(ours_v), len(theirs_v))
        drop = float(np.mean(theirs_v) - np.mean(ours_v)) if m else None
        checks.append(
            Check(
                f"business:{name}",
                _status(
                    m >= gates.min_feedback, drop is not None and drop <= gates.max_business_drop
                ),
                drop,
                gates.max_business_drop,
                m,
                "stable mean minus candidate mean",
            )
        )
    statuses = {c.status for c in checks}
    verdict = "fail" if "fail" in statuses else "wait" if "wait" in statuses else "pass"
    return Analysis(verdict, checks)


def _input_drift(
    stable: ArmStats, candidate: ArmStats, gates: GateConfig, reference: Profile
) -> list[Check]:
    """The largest PSI of a numeric input feature between the window and the reference
    profile's bins (the same binning drift monitoring uses); none without numeric features."""
    from slipway.monitoring.drift import numeric_counts, reference_counts
    from slipway.monitoring.drift import psi as binned_psi

    assert gates.max_input_psi is not None
    worst: tuple[float, str] | None = None
    samples = 0
    numeric = [f for f in reference.features if isinstance(f, NumericProfile) and f.edges]
    if not numeric:
        return []
    for feature in numeric:
        values = [*stable.features.get(feature.name, []), *candidate.features.get(feature.name, [])]
        samples = max(samples, len(values))
        if len(values) < gates.min_input_samples:
            continue
        window = numeric_counts(feature.edges, np.asarray(values, dtype=np.float64))
        value = binned_psi(reference_counts(feature), window.counts)
        if worst is None or value > worst[0]:
            worst = (value, feature.name)
    enough = worst is not None
    return [
        Check(
            "input_drift",
            _status(enough, worst is not None and worst[0] <= gates.max_input_psi),
            None if worst is None else worst[0],
            gates.max_input_psi,
            samples,
            "" if worst is None else f"largest PSI against the reference: {worst[1]!r}",
        )
    ]


def _status(enough: bool, ok: bool) -> str:
    if not enough:
        return "wait"
    return "pass" if ok else "fail"
