"""Live windows: bounded memory, time and row windows, the same counts as binning directly."""

from __future__ import annotations

import numpy as np
import pytest

from slipway.monitoring import drift
from slipway.monitoring.live import LiveMonitor, WindowConfig
from slipway.monitoring.windows import VersionWindow, feature_columns, prediction_columns
from slipway.registry.profile import build_profile
from slipway.registry.records import NumericProfile


def _profile(rng: np.random.Generator):
    x = rng.normal(size=(4000, 2))
    colour = rng.choice(np.array(["a", "b", "c"]), 4000)
    return build_profile({"x": x, "colour": colour}, predictions={"score": x[:, 0]})


def test_folded_batches_equal_binning_everything_at_once() -> None:
    rng = np.random.default_rng(1)
    profile = _profile(rng)
    window = VersionWindow(profile, kind="time", size=60, slots=6)
    x = rng.normal(0.2, 1.0, size=(900, 2))
    colour = rng.choice(np.array(["a", "b", "z"]), 900)
    for start in range(0, 900, 100):
        part = slice(start, start + 100)
        cols = feature_columns(profile, {"x": x[part], "colour": colour[part]})
        assert cols is not None
        window.fold(cols, {"score": x[part, 0]}, 100, now=1000.0 + start / 100)
    rows, features, predictions = window.snapshot(now=1009.0)
    assert rows == 900
    first = profile.features[0]
    assert isinstance(first, NumericProfile)
    direct = drift.numeric_counts(first.edges, x[:, 0])
    got = features["x[0]"]
    assert isinstance(got, drift.NumericCounts)
    assert got.counts.tolist() == direct.counts.tolist()
    assert got.under_sum == pytest.approx(direct.under_sum)
    assert features["colour"] == drift.category_counts(colour.tolist())
    assert isinstance(predictions["score"], drift.NumericCounts)
    assert predictions["score"].n == 900


@pytest.mark.parametrize("rows", [1, 7, 256, 500])
def test_numeric_features_binned_together_count_as_each_on_its_own(rows: int) -> None:
    """The one-pass binning of every numeric feature gives what ``drift.numeric_counts`` gives
    each feature: values on the edges (the last one closes its bin), beyond the range, NaN and
    infinity, integer and float columns."""
    rng = np.random.default_rng(rows)
    x = rng.normal(size=(3000, 3))
    profile = build_profile(
        {"x": x, "n": rng.integers(0, 5, 3000), "c": rng.choice(np.array(["a", "b"]), 3000)}
    )
    numeric = [f for f in profile.features if isinstance(f, NumericProfile)]
    assert len(numeric) == 4 and len({len(f.edges) for f in numeric}) > 1  # padded widths
    edges = [np.asarray(f.edges) for f in numeric]
    live = rng.normal(0.0, 2.0, size=(rows, 3))
    live[0, :] = [edges[0][0], edges[1][-1], edges[2][3]]  # on the first, last, an inner edge
    if rows > 2:
        live[1, :] = [np.nan, np.inf, -np.inf]
    ints = rng.integers(-2, 8, rows)
    window = VersionWindow(profile, kind="rows", size=10_000, slots=2)
    cols = feature_columns(profile, {"x": live, "n": ints, "c": np.array(["a"] * rows)})
    assert cols is not None
    window.fold(cols, {}, rows, now=0.0)
    _, features, _ = window.snapshot(now=0.0)
    for feature, values in zip(numeric, [live[:, 0], live[:, 1], live[:, 2], ints], strict=True):
        direct = drift.numeric_counts(feature.edges, values)
        got = features[feature.name]
        assert isinstance(got, drift.NumericCounts)
        assert got.counts.tolist() == direct.counts.tolist(), feature.name
        assert got.missing == direct.missing
        assert got.under_sum == pytest.approx(direct.under_sum)
        assert got.over_sum == pytest.approx(direct.over_sum)
    assert features["c"] == {"a": rows}


def test_time_window_forgets_old_slots() -> None:
    rng = np.random.default_rng(2)
    profile = _profile(rng)
    window = VersionWindow(profile, kind="time", size=60, slots=6)
    batch = feature_columns(
        profile, {"x": rng.normal(size=(50, 2)), "colour": np.array(["a"] * 50)}
    )
    assert batch is not None
    window.fold(batch, {}, 50, now=0.0)
    window.fold(batch, {}, 50, now=35.0)
    assert window.snapshot(now=40.0)[0] == 100
    assert window.snapshot(now=65.0)[0] == 50  # the slot of t=0 left the window
    assert window.snapshot(now=200.0)[0] == 0


def test_row_window_keeps_about_the_last_size_rows() -> None:
    rng = np.random.default_rng(3)
    profile = _profile(rng)
    window = VersionWindow(profile, kind="rows", size=1000, slots=4)
    for _ in range(30):
        cols = feature_columns(
            profile, {"x": rng.normal(size=(70, 2)), "colour": np.array(["b"] * 70)}
        )
        assert cols is not None
        window.fold(cols, {}, 70, now=0.0)
    rows, features, _ = window.snapshot(now=0.0)
    assert 750 <= rows <= 1000
    assert features["colour"] == {"b": rows}


def test_unseen_categories_are_capped() -> None:
    rng = np.random.default_rng(4)
    profile = _profile(rng)
    window = VersionWindow(profile, kind="rows", size=10_000, slots=2, max_unseen=5)
    names = np.array([f"new{i}" for i in range(100)])
    cols = feature_columns(profile, {"x": rng.normal(size=(100, 2)), "colour": names})
    assert cols is not None
    window.fold(cols, {}, 100, now=0.0)
    counts = window.snapshot(0.0)[1]["colour"]
    assert isinstance(counts, dict)
    assert len(counts) == 6 and counts[drift.UNSEEN] == 95 and sum(counts.values()) == 100


def test_shapes_that_do_not_match_the_profile_are_not_captured() -> None:
    profile = _profile(np.random.default_rng(5))
    assert feature_columns(profile, {"x": np.zeros((3, 5))}) is None
    assert list(prediction_columns({"p": np.zeros((3, 2)), "l": np.zeros(3)})) == [
        "p[0]",
        "p[1]",
        "l",
    ]


class _Loaded:
    def __init__(self, record) -> None:
        self.record = record


def test_live_monitor_drops_and_counts_when_its_queue_is_full() -> None:
    from prometheus_client import CollectorRegistry

    from slipway.monitoring.metrics import ServingMetrics

    metrics = ServingMetrics(CollectorRegistry(), process=False, gpu=False)
    monitor = LiveMonitor(metrics, queue_size=3, window=WindowConfig(kind="rows", size=100))

    class Record:
        number, digest, model, profile = 1, "d", "m", _profile(np.random.default_rng(6))

    for _ in range(5):
        monitor.offer(
            "dep", _Loaded(Record), {"x": np.zeros((1, 2)), "colour": np.array(["a"])}, {}
        )
    assert monitor.dropped == 2
    assert monitor.fold_pending() == 3  # publishes the drops
    assert (
        metrics.registry.get_sample_value(
            "slipway_side_queue_dropped_total", {"queue": "drift_capture"}
        )
        == 2.0
    )
    assert monitor.evaluate()[("dep", 1)].rows == 3


def test_live_monitor_captures_at_most_its_rate_per_deployment() -> None:
    from prometheus_client import CollectorRegistry

    from slipway.monitoring.live import CAPTURE_BURST_S
    from slipway.monitoring.metrics import ServingMetrics

    metrics = ServingMetrics(CollectorRegistry(), process=False, gpu=False)
    now = [100.0]
    rate = 100.0
    burst = int(rate * CAPTURE_BURST_S)  # 5: what a quiet spell can save up
    monitor = LiveMonitor(
        metrics,
        queue_size=10_000,
        capture_per_s=rate,
        window=WindowConfig(kind="rows", size=10_000),
        clock=lambda: now[0],
    )

    class Record:
        number, digest, model, profile = 1, "d", "m", _profile(np.random.default_rng(7))

    request = {"x": np.zeros((1, 2)), "colour": np.array(["a"])}
    for _ in range(10):  # ten at once: the burst is captured, the rest not
        monitor.offer("dep", _Loaded(Record), request, {})
        monitor.offer("other", _Loaded(Record), request, {})  # its own budget
    assert monitor.sampled_out == 2 * (10 - burst) and monitor.dropped == 0
    now[0] += 0.03125  # ~31 ms later: three requests' worth of budget (and a bit)
    for _ in range(5):
        monitor.offer("dep", _Loaded(Record), request, {})
    assert monitor.sampled_out == 2 * (10 - burst) + 2
    now[0] += 60.0  # a quiet minute saves up no more than the burst
    for _ in range(10):
        monitor.offer("dep", _Loaded(Record), request, {})
    assert monitor.sampled_out == 2 * (10 - burst) + 2 + (10 - burst)
    assert monitor.fold_pending() == 2 * burst + 3 + burst  # publishes the skipped ones
    skipped = metrics.registry.get_sample_value("slipway_drift_capture_skipped_requests_total")
    assert skipped == 2 * (10 - burst) + 2 + (10 - burst)
    assert monitor.evaluate()[("dep", 1)].rows == burst + 3 + burst

    # Under steady load the captured requests are spread evenly: 1,000 requests a second for
    # two seconds give ~100 a second, ~10 in every tenth of a second (a budget renewed each
    # second would have captured them all in each second's first tenth).
    captured_at: list[float] = []
    start = now[0] = 1000.0
    for i in range(2000):
        now[0] = start + i / 1000
        before = len(monitor._pending)
        monitor.offer("steady", _Loaded(Record), request, {})
        if len(monitor._pending) > before:
            captured_at.append(now[0] - start)
    assert 2 * rate <= len(captured_at) <= 2 * rate + burst
    tenths = np.bincount(np.floor(np.array(captured_at) * 10).astype(int), minlength=20)
    assert tenths[1:].min() >= 9 and tenths[1:].max() <= 11, tenths


def test_captured_requests_are_due_for_folding_by_count_or_by_age() -> None:
    now = [100.0]
    monitor = LiveMonitor(None, queue_size=100, window=WindowConfig(kind="rows", size=100),
                          clock=lambda: now[0])  # fmt: skip

    class Record:
        number, digest, model, profile = 1, "d", "m", _profile(np.random.default_rng(7))

    request = {"x": np.zeros((1, 2)), "colour": np.array(["a"])}
    assert not monitor.fold_due(3, 0.25)  # nothing queued
    monitor.offer("dep", _Loaded(Record), request, {})
    assert not monitor.fold_due(3, 0.25)  # one young request
    now[0] += 0.3
    assert monitor.fold_due(3, 0.25)  # the oldest has waited long enough
    assert monitor.fold_pending() == 1 and not monitor.fold_due(3, 0.25)
    for _ in range(3):
        monitor.offer("dep", _Loaded(Record), request, {})
    assert monitor.fold_due(3, 0.25)  # a slice's worth, however young


def test_a_captured_request_shaped_unlike_the_first_is_left_out_of_the_fold() -> None:
    """A version's captured requests are folded together by the first one's input and output
    names; one lacking some of them leaves only itself out."""
    monitor = LiveMonitor(None, window=WindowConfig(kind="rows", size=100))

    class Record:
        number, digest, model, profile = 1, "d", "m", _profile(np.random.default_rng(8))

    rows = [np.array([[float(i), 0.5]]) for i in range(4)]
    usual = [({"x": r, "colour": np.array(["a"])}, {"score": r[:, 0]}) for r in rows]
    odd = ({"x": np.array([[9.0, 9.0]])}, {"score": np.array([9.0])})  # no colour
    for inputs, outputs in [*usual[:2], odd, *usual[2:]]:
        monitor.offer("dep", _Loaded(Record), inputs, outputs)
    assert monitor.fold_pending() == 5
    latest = monitor.evaluate()[("dep", 1)]
    assert latest.rows == 4
    assert latest.windows["colour"] == {"a": 4}
    x = latest.windows["x[0]"]
    assert isinstance(x, drift.NumericCounts) and x.n == 4 and x.over_sum == 0.0


def test_drift_series_leave_the_page_when_the_window_ages_below_the_minimum() -> None:
    # Drift was detected, then traffic stopped and the time window emptied: the verdict is
    # "insufficient" now and the built-in drift rule resolves; the gauges must not keep saying
    # "drift" (the exported Prometheus rule and the dashboard read them).
    from prometheus_client import CollectorRegistry

    from slipway.monitoring.metrics import ServingMetrics

    metrics = ServingMetrics(CollectorRegistry(), process=False, gpu=False)
    now = [1000.0]
    monitor = LiveMonitor(
        metrics, window=WindowConfig(kind="time", size=60, slots=6), clock=lambda: now[0]
    )

    class Record:
        number, digest, model, profile = 1, "d", "m", _profile(np.random.default_rng(9))

    rng = np.random.default_rng(10)
    for _ in range(300):
        x = rng.normal(3.0, 1.0, size=(1, 2))  # far from the reference
        monitor.offer(
            "dep", _Loaded(Record), {"x": x, "colour": np.array(["a"])}, {"score": x[:, 0]}
        )
    monitor.fold_pending()
    monitor.evaluate()
    labels = {"deployment": "dep", "version": "1", "feature": "x[0]"}
    assert metrics.registry.get_sample_value("slipway_drift_detected", labels) == 1.0
    now[0] += 120.0  # two windows later, nothing new
    result = monitor.evaluate()[("dep", 1)]
    assert result.rows == 0 and {f.verdict for f in result.report.features} == {"insufficient"}
    for name in ("slipway_drift_detected", "slipway_drift_score", "slipway_drift_p_value"):
        assert metrics.registry.get_sample_value(name, labels) is None, name
    output = {"deployment": "dep", "version": "1", "output": "score"}
    assert metrics.registry.get_sample_value("slipway_prediction_drift_score", output) is None
    assert (
        metrics.registry.get_sample_value(
            "slipway_drift_window_rows", {"deployment": "dep", "version": "1"}
        )
        == 0.0
    )
