"""Serving metrics on an injected Prometheus registry (never the global one).

Labels are bounded: deployment, version, arm, outcome, and for drift the feature names of the
version's profile (fixed at registration). A request for an unknown deployment is counted under
``deployment="_unknown"`` so random names cannot grow the series count.

Several worker processes: give ``multiprocess_dir`` (the directory in
``PROMETHEUS_MULTIPROC_DIR``, which must be set before ``prometheus_client`` is imported, as the
client requires) and ``render`` aggregates every process's values with the client's
``MultiProcessCollector``. Process and GPU collectors describe the scraped process only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.process_collector import ProcessCollector

from slipway.monitoring.buckets import BucketFamily, Buckets, CountFamily, InFlightFamily
from slipway.monitoring.gpu import GpuCollector

# Sub-millisecond to seconds.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

UNKNOWN = "_unknown"
STABLE = "stable"
OUTCOMES = ("ok", "client_error", "server_error", "timeout", "rejected")


def outcome_of(status: int) -> str:
    """Request outcome label for an HTTP status."""
    if status < 400:
        return "ok"
    if status == 503:
        return "rejected"
    if status == 504:
        return "timeout"
    if status < 500:
        return "client_error"
    return "server_error"


def traffic_shares(record: Any) -> dict[int, float]:
    """Each version's share of a deployment's live traffic (shadows take none)."""
    traffic = getattr(record, "traffic", None)
    candidate = getattr(traffic, "candidate", None)
    if traffic is None or candidate is None or candidate == record.version:
        return {record.version: 1.0}
    weight = min(100.0, max(0.0, float(traffic.weight))) / 100.0
    return {record.version: 1.0 - weight, candidate: weight}


class ServingMetrics:
    """Every serving, drift, business and alert metric, on one injected registry."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        process: bool = True,
        gpu: bool = True,
        gpu_library: str = "",
        multiprocess_dir: str | None = None,
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self.multiprocess_dir = multiprocess_dir
        r = self.registry
        route = ["deployment", "version", "arm"]
        requests = ("slipway_requests", "Inference requests by outcome.")
        duration = (
            "slipway_request_duration_seconds",
            "Inference request duration, from routing to encoded response.",
        )
        # The batch queue belongs to a loaded version (model, version), shared by deployments.
        queue = ["model", "version"]
        in_flight = ("slipway_in_flight_requests", "Requests waiting for or running inference.")
        inference = (
            "slipway_inference_duration_seconds",
            "Time to run one batch: the runtime plus the hand-off to its thread.",
        )
        queue_wait = (
            "slipway_queue_wait_seconds",
            "Time a request waited in the batch queue before its batch ran.",
        )
        batch_size = ("slipway_batch_size_rows", "Rows per batch.")
        self.in_flight: Any
        self.inference: Any
        self.queue_wait: Any
        self.batch_size: Any
        self.requests: Any
        self.duration: Any
        if multiprocess_dir:
            # Several workers: the client's file-backed metrics, summed over processes at
            # scrape time (in flight: the live processes' sum).
            self.requests = _Labelled(Counter(*requests, [*route, "outcome"], registry=r))
            self.duration = _Labelled(
                Histogram(*duration, route, buckets=LATENCY_BUCKETS, registry=r)
            )
            self.in_flight = _Labelled(
                Gauge(
                    *in_flight, ["deployment", "version"], registry=r, multiprocess_mode="livesum"
                )
            )
            self.inference = _Labelled(
                Histogram(*inference, queue, buckets=LATENCY_BUCKETS, registry=r)
            )
            self.queue_wait = _Labelled(
                Histogram(*queue_wait, queue, buckets=LATENCY_BUCKETS, registry=r)
            )
            self.batch_size = _Labelled(
                Histogram(*batch_size, queue, buckets=BATCH_BUCKETS, registry=r)
            )
        else:
            # One process: plain numbers the event loop updates, cheaper per request.
            self.requests = CountFamily(*requests, [*route, "outcome"])
            self.duration = BucketFamily(*duration, route, LATENCY_BUCKETS)
            self.in_flight = InFlightFamily(*in_flight, ["deployment", "version"])
            self.inference = BucketFamily(*inference, queue, LATENCY_BUCKETS)
            self.queue_wait = BucketFamily(*queue_wait, queue, LATENCY_BUCKETS)
            self.batch_size = BucketFamily(*batch_size, queue, BATCH_BUCKETS)
            for family in (
                self.requests,
                self.duration,
                self.in_flight,
                self.inference,
                self.queue_wait,
                self.batch_size,
            ):
                r.register(family)
        self.queue_depth = Gauge(
            "slipway_queue_depth_rows",
            "Rows waiting in the batch queue.",
            ["deployment", "version"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.shadow_dropped = Counter(
            "slipway_shadow_dropped",
            "Shadow requests dropped because the shadow queue was full.",
            ["deployment"],
            registry=r,
        )
        self.side_dropped = Counter(
            "slipway_side_queue_dropped",
            "Items dropped by a full side queue (drift capture, audit, events).",
            ["queue"],
            registry=r,
        )
        self.drift_not_captured = Counter(
            "slipway_drift_capture_skipped_requests",
            "Requests not captured for the drift windows: past the capture budget a second.",
            registry=r,
        )
        drift = ["deployment", "version", "feature"]
        self.drift_score = Gauge(
            "slipway_drift_score",
            "Per-feature drift score (PSI against the reference profile).",
            drift,
            registry=r,
            multiprocess_mode="livemax",
        )
        self.drift_p_value = Gauge(
            "slipway_drift_p_value",
            "Per-feature drift test p-value, Benjamini-Hochberg adjusted (KS or chi-squared).",
            drift,
            registry=r,
            multiprocess_mode="livemin",
        )
        self.drift_detected = Gauge(
            "slipway_drift_detected",
            "1 when the feature's drift verdict is drift, else 0.",
            drift,
            registry=r,
            multiprocess_mode="livemax",
        )
        self.drift_window_rows = Gauge(
            "slipway_drift_window_rows",
            "Rows in the live drift window.",
            ["deployment", "version"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.prediction_drift = Gauge(
            "slipway_prediction_drift_score",
            "Per-output drift score (PSI of predictions against the reference profile).",
            ["deployment", "version", "output"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.business = Gauge(
            "slipway_business_metric",
            "Business metric per arm from feedback (e.g. mean outcome).",
            ["deployment", "arm", "metric"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.alerts_firing = Gauge(
            "slipway_alerts_firing",
            "1 while an alert rule is firing for a deployment.",
            ["rule", "deployment"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.rollout_weight = Gauge(
            "slipway_rollout_weight",
            "Share of a deployment's traffic routed to a version (0..1).",
            ["deployment", "version"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self._local = CollectorRegistry()  # this process's own collectors, also in mp mode
        if process:
            ProcessCollector(registry=self._local if multiprocess_dir else r)
        if gpu:
            collector = GpuCollector.from_setting(gpu_library)
            if collector.available:
                (self._local if multiprocess_dir else r).register(collector)
        # (deployment, version) -> arm while a rollout runs; refreshed by refresh_arms.
        self.arms: dict[tuple[str, int], str] = {}
        self._children: dict[tuple[str, str, str, str], tuple[Any, Any]] = {}
        self._queue_children: dict[tuple[str, str], tuple[Buckets, Buckets, Buckets]] = {}
        self._in_flight_children: dict[tuple[str, str], Any] = {}
        self._weighted: set[tuple[str, str]] = set()  # rollout_weight labels of the last render
        self._queued: set[tuple[str, str]] = set()  # queue_depth labels of the last refresh

    outcome_of = staticmethod(outcome_of)

    def observe(
        self, deployment: str, loaded: Any, outcome: str, seconds: float, arm: str = STABLE
    ) -> None:
        """Count one request; ``loaded`` is the LoadedVersion it reached, or None."""
        if loaded is None:
            key = (UNKNOWN, "", "", outcome)
        else:
            number = loaded.record.number
            arm = self.arms.get((deployment, number), arm)
            key = (deployment, str(number), arm, outcome)
        children = self._children.get(key)
        if children is None:
            children = (self.requests.child(*key), self.duration.child(*key[:3]))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def in_flight_gauge(self, deployment: str, loaded: Any) -> Any:
        """The in-flight gauge child of a routed request (cached: the hot path calls this)."""
        key = (deployment, str(loaded.record.number))
        child = self._in_flight_children.get(key)
        if child is None:
            child = self._in_flight_children[key] = self.in_flight.child(*key)
        return child

    def observe_batch(
        self, model: str, version: int, rows: int, waits: Iterable[float], seconds: float
    ) -> None:
        """One batch ran: its size, each request's queue wait, the runtime's time."""
        key = (model, str(version))
        children = self._queue_children.get(key)
        if children is None:
            children = (
                self.batch_size.child(*key),
                self.queue_wait.child(*key),
                self.inference.child(*key),
            )
            self._queue_children[key] = children
        children[0].observe(rows)
        for wait in waits:
            children[1].observe(wait)
        children[2].observe(seconds)

    def refresh_arms(self, deployments: Any) -> None:
        """Label requests to a running rollout's candidate ``arm="candidate"`` (and its shadow
        ``"shadow"``); everything else is ``"stable"``."""
        arms: dict[tuple[str, int], str] = {}
        for name, record in deployments.items():
            traffic = getattr(record, "traffic", None)
            if traffic is None:
                continue
            if traffic.candidate is not None and traffic.candidate != record.version:
                arms[(name, traffic.candidate)] = "candidate"
            if traffic.shadow is not None:
                arms[(name, traffic.shadow)] = "shadow"
        self.arms = arms

    def refresh_queue_depths(self, repository: Any) -> None:
        """Set the queue-depth gauges from this process's batch queues (an unloaded version's
        series leaves)."""
        queued: set[tuple[str, str]] = set()
        for (model, number), loaded in repository.loaded.items():
            for name, record in repository.deployments.items():
                if record.model == model and number in (record.version, record.previous_version):
                    self.queue_depth.labels(name, str(number)).set(loaded.queue.depth)
                    queued.add((name, str(number)))
        for labels in self._queued - queued:
            self.retire(self.queue_depth, labels, 0.0)
        self._queued = queued

    def server_wide(self) -> list[Metric]:
        """Request counts, request durations and queue depths of the whole server: with several
        workers, every worker's summed from the multiprocess directory (what a scrape shows),
        so what one worker evaluates covers the traffic the others served."""
        if not self.multiprocess_dir:
            return [*self.requests.collect(), *self.duration.collect(), *self.queue_depth.collect()]
        from prometheus_client import multiprocess

        wanted = {
            "slipway_requests",
            "slipway_request_duration_seconds",
            "slipway_queue_depth_rows",
        }
        merged = multiprocess.MultiProcessCollector(None, path=self.multiprocess_dir)
        return [family for family in merged.collect() if family.name in wanted]

    def retire(self, gauge: Gauge, labels: Sequence[str], idle: float) -> None:
        """A series whose subject is gone (an undeployed version, a deleted rule): removed in
        one process; set to ``idle``, what the absent subject reads as, with several workers,
        where the client cannot remove a series."""
        if self.multiprocess_dir:
            gauge.labels(*labels).set(idle)
        else:
            gauge.remove(*labels)

    def render(self, repository: Any) -> tuple[bytes, str]:
        """The metrics page: refresh queue depths and arms, then every metric in text format."""
        self.refresh_arms(repository.deployments)
        self.refresh_queue_depths(repository)
        weighted: set[tuple[str, str]] = set()
        for name, record in repository.deployments.items():
            for version, share in traffic_shares(record).items():
                self.rollout_weight.labels(name, str(version)).set(share)
                weighted.add((name, str(version)))
        for labels in self._weighted - weighted:  # a rolled-back candidate, a replaced version
            self.retire(self.rollout_weight, labels, 0.0)
        self._weighted = weighted
        if not self.multiprocess_dir:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=self.multiprocess_dir)
        return generate_latest(merged) + generate_latest(self._local), CONTENT_TYPE_LATEST


class _Labelled:
    """A client metric behind the ``child(*labels)`` interface of the per-process families."""

    def __init__(self, metric: Any) -> None:
        self.metric = metric

    def child(self, *values: str) -> Any:
        return self.metric.labels(*values)

    def collect(self) -> Any:
        return self.metric.collect()
