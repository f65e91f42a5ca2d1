"""Capturing inputs and predictions off the request path, and drift over the live windows.

The request path calls :meth:`LiveMonitor.offer` once per request: an append to a bounded
queue (a full queue counts a drop and returns; it never blocks or fails the request). A task
on the event loop calls :meth:`fold_pending`, a slice at a time, to drain the queue into each
version's :class:`~slipway.monitoring.windows.VersionWindow`; :meth:`evaluate`, on a thread,
tests the windows against the reference profiles and publishes the drift gauges.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from slipway.monitoring import drift
from slipway.monitoring.metrics import ServingMetrics
from slipway.monitoring.windows import (
    VersionWindow,
    WindowKind,
    feature_columns,
    prediction_columns,
)
from slipway.registry.records import Profile, VersionRecord

Key = tuple[str, int]  # (deployment, version)
# One captured request: (deployment, version record, inputs, outputs, captured at)
Captured = tuple[str, VersionRecord, dict[str, np.ndarray], dict[str, np.ndarray], float]
# Capture budget a quiet spell can save up: this many seconds' worth of the capture rate.
CAPTURE_BURST_S = 0.05


@dataclasses.dataclass(frozen=True)
class WindowConfig:
    """Which live window drift is computed over (see ``windows.py``)."""

    kind: WindowKind = "time"
    size: float = 3600.0  # seconds for "time", rows for "rows"
    slots: int = 12


@dataclasses.dataclass(frozen=True)
class VersionDrift:
    """The latest drift evaluation of one deployed version."""

    deployment: str
    model: str
    version: int
    rows: int
    report: drift.DriftReport
    evaluated_at: float
    windows: dict[str, drift.Window]
    prediction_windows: dict[str, drift.Window]
    profile: Profile


class LiveMonitor:
    """Bounded capture queue → live windows per (deployment, version) → drift verdicts."""

    def __init__(
        self,
        metrics: ServingMetrics | None = None,
        *,
        queue_size: int = 10000,
        capture_per_s: float = 0.0,
        window: WindowConfig | None = None,
        policy: drift.DriftPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = metrics
        self.queue_size = queue_size
        # At most this many requests a second per deployment go to the drift windows (0: all):
        # under load a steady sample says as much about drift as every request, at a fraction
        # of the folding cost. Requests past the budget are counted in ``sampled_out``
        # (published by fold_pending as slipway_drift_capture_skipped_requests_total).
        self.capture_per_s = capture_per_s
        self._burst = max(1.0, capture_per_s * CAPTURE_BURST_S)  # most tokens saved up
        self.sampled_out = 0
        self._budgets: dict[str, list[float]] = {}  # deployment -> [refilled at, tokens]
        self.window = window or WindowConfig()
        self.policy = policy or drift.DriftPolicy()
        self.clock = clock
        self.dropped = 0
        self._drops_published = 0
        self.rows_folded = 0
        self.enabled = True
        self._pending: collections.deque[Captured] = collections.deque()
        self._windows: dict[Key, tuple[VersionRecord, VersionWindow]] = {}
        self._lock = threading.Lock()
        self.latest: dict[Key, VersionDrift] = {}
        # Feature and output names with drift series on the metrics page, per version.
        self._published: dict[Key, tuple[set[str], set[str]]] = {}
        self._drop_counter = metrics.side_dropped.labels("drift_capture") if metrics else None
        self._skip_counter = metrics.drift_not_captured if metrics else None
        self._skips_published = 0

    def offer(self, deployment: str, loaded: Any, inputs: Any, outputs: Any) -> None:
        """Queue one request's inputs and outputs for the drift windows; never blocks."""
        if not self.enabled:
            return
        at = self.clock()
        rate = self.capture_per_s
        if rate > 0:
            # A token bucket refilled continuously, holding at most CAPTURE_BURST_S worth: the
            # captured requests are spread evenly over each second. A budget renewed every
            # second was spent in the second's first tenth at 10,000 requests a second, and
            # folding that burst slowed exactly those requests (it set the p99).
            # (Plain comparisons, not min/max: this runs on every request.)
            budget = self._budgets.get(deployment)
            if budget is None:
                budget = self._budgets[deployment] = [at, self._burst]
            elif at > budget[0]:  # (a wall clock set back refills nothing until it passes)
                tokens = budget[1] + (at - budget[0]) * rate
                budget[1] = tokens if tokens < self._burst else self._burst
                budget[0] = at
            if budget[1] < 1:
                self.sampled_out += 1
                return
            budget[1] -= 1
        if len(self._pending) >= self.queue_size:
            self.dropped += 1  # published by fold_pending: a plain int here costs nothing
            return
        self._pending.append((deployment, loaded.record, inputs, outputs, at))

    def fold_due(self, rows: int, max_wait_s: float) -> bool:
        """Whether ``rows`` captured requests are queued, or the oldest has waited
        ``max_wait_s`` seconds."""
        pending = self._pending
        return len(pending) >= rows or (
            bool(pending) and self.clock() - pending[0][4] >= max_wait_s
        )

    def fold_pending(self, limit: int | None = None) -> int:
        """Move up to ``limit`` queued requests (all: None) into the windows, one
        concatenation per version; returns how many were taken off the queue."""
        if self._drop_counter is not None and self.dropped > self._drops_published:
            self._drop_counter.inc(self.dropped - self._drops_published)
            self._drops_published = self.dropped
        if self._skip_counter is not None and self.sampled_out > self._skips_published:
            self._skip_counter.inc(self.sampled_out - self._skips_published)
            self._skips_published = self.sampled_out
        pending = self._pending
        count = len(pending) if limit is None else min(limit, len(pending))
        pop = pending.popleft  # the event loop is the queue's one consumer
        taken = [pop() for _ in range(count)]
        keys = {(item[0], item[1].number) for item in taken}
        groups: dict[Key, list[Captured]] = {key: [] for key in keys}
        if len(keys) == 1:  # the usual slice: one deployment, one version
            groups[keys.pop()] = taken
        else:
            for item in taken:
                groups[(item[0], item[1].number)].append(item)
        with self._lock:
            for key, items in groups.items():
                record = items[0][1]
                if record.profile is None or not record.profile.features:
                    continue
                entry = self._windows.get(key)
                if entry is None or entry[0].digest != record.digest:
                    entry = (record, self._new_window(record.profile))
                    self._windows[key] = entry
                self.rows_folded += self._fold(entry[1], record.profile, items)
        return count

    def _new_window(self, profile: Profile) -> VersionWindow:
        w = self.window
        return VersionWindow(profile, kind=w.kind, size=w.size, slots=w.slots)

    @staticmethod
    def _fold(window: VersionWindow, profile: Profile, items: list[Captured]) -> int:
        names, outputs = list(items[0][2]), list(items[0][3])
        try:  # a version's requests carry the same inputs and outputs: no per-request check
            inputs = {n: np.concatenate([i[2][n] for i in items]) for n in names}
            preds = {n: np.concatenate([i[3][n] for i in items]) for n in outputs}
        except KeyError:  # one lacks some: fold those shaped like the first
            items = [i for i in items if i[2].keys() == set(names) and i[3].keys() == set(outputs)]
            inputs = {n: np.concatenate([i[2][n] for i in items]) for n in names}
            preds = {n: np.concatenate([i[3][n] for i in items]) for n in outputs}
        columns = feature_columns(profile, inputs)
        if columns is None:
            return 0
        rows = len(columns[0]) if columns else 0
        window.fold(columns, prediction_columns(preds), rows, items[-1][4])
        return rows

    def evaluate(self) -> dict[Key, VersionDrift]:
        """Test every window against its reference profile; publish gauges; keep the results."""
        now = self.clock()
        results: dict[Key, VersionDrift] = {}
        with self._lock:
            snapshots = [
                (key, record, *window.snapshot(now))
                for key, (record, window) in self._windows.items()
            ]
        for (deployment, number), record, rows, features, predictions in snapshots:
            assert record.profile is not None
            report = drift.evaluate(record.profile, features, predictions, self.policy)
            results[(deployment, number)] = VersionDrift(
                deployment=deployment,
                model=record.model,
                version=number,
                rows=rows,
                report=report,
                evaluated_at=now,
                windows=features,
                prediction_windows=predictions,
                profile=record.profile,
            )
            self._publish(deployment, number, rows, report)
        self.latest = results
        return results

    def forget(self, keep: set[Key]) -> None:
        """Drop the windows of versions no longer deployed."""
        with self._lock:
            for key in list(self._windows):
                if key not in keep:
                    del self._windows[key]
                    self.latest.pop(key, None)
                    self._retire(key)

    def _publish(self, deployment: str, number: int, rows: int, report: drift.DriftReport) -> None:
        m = self.metrics
        if m is None:
            return
        version = str(number)
        published = self._published.setdefault((deployment, number), (set(), set()))
        m.drift_window_rows.labels(deployment, version).set(rows)
        # A feature whose window fell below min_samples (a time window that aged while traffic
        # stopped) has no verdict any more: its last one leaves the page, as the built-in rules
        # see no data, instead of saying "drift" until traffic returns.
        for f in report.features:
            labels = (deployment, version, f.name)
            if f.verdict == "insufficient":
                if f.name in published[0]:
                    self._retire_feature(m, labels)
                    published[0].discard(f.name)
                continue
            m.drift_score.labels(*labels).set(f.psi)
            m.drift_p_value.labels(*labels).set(f.adjusted_p)
            m.drift_detected.labels(*labels).set(1.0 if f.drifted else 0.0)
            published[0].add(f.name)
        for f in report.predictions:
            labels = (deployment, version, f.name)
            if f.verdict != "insufficient":
                m.prediction_drift.labels(*labels).set(f.psi)
                published[1].add(f.name)
            elif f.name in published[1]:
                m.retire(m.prediction_drift, labels, 0.0)
                published[1].discard(f.name)

    @staticmethod
    def _retire_feature(m: ServingMetrics, labels: tuple[str, str, str]) -> None:
        m.retire(m.drift_score, labels, 0.0)
        m.retire(m.drift_p_value, labels, 1.0)
        m.retire(m.drift_detected, labels, 0.0)

    def _retire(self, key: Key) -> None:
        """Take an undeployed version's drift series off the metrics page."""
        features, outputs = self._published.pop(key, (set(), set()))
        m = self.metrics
        if m is None:
            return
        deployment, version = key[0], str(key[1])
        m.retire(m.drift_window_rows, (deployment, version), 0.0)
        for name in features:
            self._retire_feature(m, (deployment, version, name))
        for name in outputs:
            m.retire(m.prediction_drift, (deployment, version, name), 0.0)
