"""Monitoring in the server: the drift capture, the periodic evaluation loop, and the alert and
monitoring routes of the management API.

The request path only calls ``LiveMonitor.offer`` (a deque append). Every
``monitor_interval_s`` the loop attaches batch observers to new batch queues, folds captured
requests into the drift windows and evaluates them (in a thread), samples the request metrics,
evaluates alert rules, stores firing/resolved events, logs them and sends them to webhooks.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import functools
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from slipway.monitoring import alerts, drift
from slipway.monitoring.alert_store import AlertStore
from slipway.monitoring.live import LiveMonitor, VersionDrift, WindowConfig
from slipway.monitoring.metrics import LATENCY_BUCKETS, ServingMetrics
from slipway.registry.store import SqlStore
from slipway.rollout.router import versions_to_load
from slipway.rollout.state import RolloutStore
from slipway.serving.failure_log import FailureLog
from slipway.settings import Settings

if TYPE_CHECKING:
    from slipway.serving.management import ManagementApi, Request
    from slipway.serving.repository import ModelRepository

log = logging.getLogger("slipway.alerts")

BOUNDS = [*LATENCY_BUCKETS, float("inf")]
TIMELINE_POINTS = 720
EVENTS_LIMIT, MAX_EVENTS_LIMIT = 200, 10_000  # events GET /api/alerts returns
BUSINESS_WINDOW_S = 3600.0
REEVALUATE_S = 60.0  # without new rows, time windows still age: re-test this often
FOLD_SLICE = 256  # captured requests folded between two yields to the event loop
# Captured requests are looked at this often and folded once a slice's worth is queued or the
# oldest has waited FOLD_MAX_WAIT_S. A fold holds the event loop for a fixed ~0.1 ms plus ~2 µs a
# row, and delays every request in flight then: what sets a fold's cost to the p99 is how many
# requests that touches, so folds are rare and large. At the default capture (250 requests a
# second) that is one fold a second, touching fewer than one request in a hundred at any load
# (folds of 32 rows, 8 a second, touched ~1.2% of requests at 16 connections, which fits the
# +8-13% on p99 measured then).
# Never one burst per tick, either: a tick's worth folded at once set the p99 too.
FOLD_INTERVAL_S = 0.1  # a slice fills in ~1 s at the default capture; waking more is waste
FOLD_MAX_WAIT_S = 1.0


def live_monitor(settings: Settings, metrics: ServingMetrics) -> LiveMonitor:
    """The drift capture configured from the settings."""
    monitor = LiveMonitor(
        metrics,
        queue_size=settings.drift_queue_size,
        capture_per_s=settings.drift_capture_per_s,
        window=WindowConfig(
            kind="rows" if settings.drift_window == "rows" else "time",
            size=settings.drift_window_size,
            slots=settings.drift_window_slots,
        ),
        policy=drift.DriftPolicy(
            min_samples=settings.drift_min_samples,
            alpha=settings.drift_alpha,
            psi_threshold=settings.drift_psi_threshold,
            wasserstein_threshold=settings.drift_wasserstein_threshold,
        ),
    )
    monitor.enabled = bool(settings.monitoring)
    return monitor


class MonitoringPlane:
    """The per-replica side of monitoring."""

    def __init__(
        self,
        store: SqlStore,
        repository: ModelRepository,
        metrics: ServingMetrics,
        settings: Settings,
        monitor: LiveMonitor | None = None,
    ) -> None:
        self.store = store
        self.repository = repository
        self.metrics = metrics
        self.settings = settings
        self.monitor = monitor or live_monitor(settings, metrics)
        self.alert_store = AlertStore(store)
        self.rollouts = RolloutStore(store)
        self.file_rules = (
            alerts.load_rules(Path(settings.alert_rules_file)) if settings.alert_rules_file else []
        )
        self.sender = alerts.WebhookSender(
            [u.strip() for u in settings.alert_webhooks.split(",") if u.strip()],
            retries=settings.alert_webhook_retries,
            backoff_s=settings.alert_webhook_backoff_s,
        )
        self.traffic = alerts.TrafficHistory(BOUNDS)
        self.states: dict[tuple[str, str], alerts.AlertState] = {}
        self._evaluated_rules: list[alerts.AlertRule] = []  # the last evaluation's
        self._skipped_rules: set[str] = set()  # stored rules that do not validate, logged
        self.timeline: dict[str, collections.deque[dict[str, Any]]] = {}
        self.business: dict[str, dict[str, float]] = {}
        self._business_labels: set[tuple[str, str, str]] = set()  # the last evaluation's
        self._task: asyncio.Task[None] | None = None
        self._folder: asyncio.Task[None] | None = None
        self._evaluated_rows = -1
        self._evaluated_at = 0.0

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self.settings.monitoring:
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._loop())
            self._folder = loop.create_task(self._fold_loop())

    async def stop(self) -> None:
        for task in (self._task, self._folder):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._folder = None
        await self.sender.drain()

    async def _fold_loop(self) -> None:
        while True:
            await asyncio.sleep(FOLD_INTERVAL_S)
            if not self.monitor.fold_due(FOLD_SLICE, FOLD_MAX_WAIT_S):
                continue
            try:
                await self.fold()
            except Exception:  # a window bug must not stop capture
                log.exception("folding captured requests failed")
                await asyncio.sleep(self.settings.monitor_interval_s)  # not a log line per slice

    async def fold(self) -> None:
        """Fold what is captured into the drift windows in slices, yielding between them. At
        most one queue's worth per call, so a flood cannot keep the loop here."""
        for _ in range(self.monitor.queue_size // FOLD_SLICE + 1):
            if self.monitor.fold_pending(limit=FOLD_SLICE) < FOLD_SLICE:
                break
            await asyncio.sleep(0)

    async def _loop(self) -> None:
        if self.settings.alert_evaluation:
            try:
                await self.restore()
            except Exception:  # the registry may be briefly unreachable: start afresh
                log.exception("restoring the alert states failed")
        failures = FailureLog(log, "monitoring evaluation", "trying again next tick")
        while True:
            await asyncio.sleep(self.settings.monitor_interval_s)
            try:
                await self.tick()
            except Exception as exc:  # the registry may be briefly unreachable; try next time
                failures.failed(exc)
            else:
                failures.succeeded()

    async def restore(self) -> list[alerts.AlertEvent]:
        """Take up the alerts that were firing when the server last stopped, so each one gets
        its resolved event (stored, logged, sent) once its condition clears; a rule deleted
        meanwhile resolves now. Returns the events sent."""
        fired = await asyncio.to_thread(self.alert_store.last_firing)
        stored = await self._stored_rules()
        rules = alerts.rules_in_force(self.file_rules, stored)
        self.states, closing = alerts.restore_states(fired, rules, time.time())
        self._evaluated_rules = rules
        for rule, deployment in self.states:
            self.metrics.alerts_firing.labels(rule, deployment).set(1)
        return await self._publish(closing)

    async def _stored_rules(self) -> list[alerts.AlertRule]:
        """The stored rules that validate; each one that does not is logged once (until it is
        deleted or mended), not at every evaluation."""
        stored = await asyncio.to_thread(self.alert_store.read_rules)
        for skipped in stored.skipped:
            if skipped.name not in self._skipped_rules:
                log.warning("%s", skipped.message)
        self._skipped_rules = {skipped.name for skipped in stored.skipped}
        return stored.rules

    async def _publish(self, events: list[alerts.AlertEvent]) -> list[alerts.AlertEvent]:
        """Store, log and send new events."""
        if events:
            events = await asyncio.to_thread(self.alert_store.add_events, events)
            for event in events:
                log.warning("alert %s: %s", event.state, event.message)
            self.sender.send(events)
        return events

    async def tick(self) -> list[alerts.AlertEvent]:
        """One evaluation: drift windows, traffic sample, alert rules; returns new events."""
        self._attach_observers()
        self.metrics.refresh_arms(self.repository.deployments)
        # On the loop, not a thread: a thread would hold the GIL for long stretches and delay
        # requests by up to the interpreter's switch interval. Mostly done by _fold_loop.
        await self.fold()
        now = time.time()
        since = now - self._evaluated_at
        if since >= self.settings.drift_interval_s and (
            self.monitor.rows_folded != self._evaluated_rows or since >= REEVALUATE_S
        ):  # drift moves slowly; without new rows only aging time windows need a re-test
            self._evaluated_rows, self._evaluated_at = self.monitor.rows_folded, now
            await asyncio.to_thread(self.monitor.evaluate)
        self.monitor.forget(self._deployed())
        results = self.monitor.latest
        # Every worker publishes its queues; the one evaluating rules reads the server's sums.
        self.metrics.refresh_queue_depths(self.repository)
        server = self.metrics.server_wide()
        self._sample_traffic(now, server)
        if not self.settings.alert_evaluation:  # another worker of this server evaluates them
            return []
        self.business = await asyncio.to_thread(self._business_metrics)
        stored = await self._stored_rules()
        rules = alerts.rules_in_force(self.file_rules, stored)
        values = alerts.AlertValues(
            traffic=self.traffic,
            drift=_scores(results, predictions=False),
            prediction_drift=_scores(results, predictions=True),
            business=self.business,
            queue_depth=_queue_depths(server),
        )
        before = self.states
        current = {rule.name for rule in rules}
        removed = [rule for rule in self._evaluated_rules if rule.name not in current]
        self.states, events = alerts.evaluate_rules(rules, self.states, values, now, removed)
        self._evaluated_rules = rules
        for (rule, deployment), state in self.states.items():
            self.metrics.alerts_firing.labels(rule, deployment).set(state.state == "firing")
        for gone in before.keys() - self.states.keys():  # a deleted rule, a removed deployment
            self.metrics.retire(self.metrics.alerts_firing, gone, 0.0)
        return await self._publish(events)

    def _deployed(self) -> set[tuple[str, int]]:
        keep = set()
        for name, record in self.repository.deployments.items():
            keep.add((name, record.version))
            if record.previous_version is not None:
                keep.add((name, record.previous_version))
            traffic = record.traffic
            if traffic is not None:  # rollout arms and shadows
                keep.update((name, v) for v in (traffic.candidate, traffic.shadow) if v is not None)
        return keep

    def _business_metrics(self) -> dict[str, dict[str, float]]:
        """Mean feedback value per arm of each running rollout (last ``BUSINESS_WINDOW_S``);
        alert rules see each metric's worst arm. Feedback joins to requests served during a
        rollout, so deployments without one have none."""
        out: dict[str, dict[str, float]] = {}
        published: set[tuple[str, str, str]] = set()
        since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=BUSINESS_WINDOW_S)
        for name, record in self.repository.deployments.items():
            traffic = record.traffic
            if traffic is None:
                continue
            by_version = self.rollouts.feedback_by_version(traffic.rollout_id, since)
            for version, metrics in by_version.items():
                arm = "candidate" if version == traffic.candidate else "stable"
                for metric, values in metrics.items():
                    if not values:
                        continue
                    mean = sum(values) / len(values)
                    self.metrics.business.labels(name, arm, metric).set(mean)
                    published.add((name, arm, metric))
                    worst = out.setdefault(name, {})
                    worst[metric] = min(worst.get(metric, mean), mean)
        # A rollout that ended takes its series with it: a last value left on the page would
        # keep an exported floor rule firing. NaN (several workers) breaches no rule.
        for gone in self._business_labels - published:
            self.metrics.retire(self.metrics.business, gone, math.nan)
        self._business_labels = published
        return out

    def _attach_observers(self) -> None:
        for (model, number), loaded in self.repository.loaded.items():
            queue = loaded.queue
            if getattr(queue, "observer", False) is None:
                queue.observer = functools.partial(self.metrics.observe_batch, model, number)

    def _sample_traffic(self, now: float, server: list[Metric]) -> None:
        """Cumulative request counters per deployment, from the server's metrics."""
        outcomes: dict[str, dict[str, float]] = {}
        buckets: dict[str, dict[float, float]] = {}
        for s in _samples(server, "slipway_requests_total"):
            d = outcomes.setdefault(s.labels["deployment"], {})
            d[s.labels["outcome"]] = d.get(s.labels["outcome"], 0.0) + s.value
        for s in _samples(server, "slipway_request_duration_seconds_bucket"):
            b = buckets.setdefault(s.labels["deployment"], {})
            le = float(s.labels["le"])
            b[le] = b.get(le, 0.0) + s.value
        for deployment, by_outcome in outcomes.items():
            cumulative = [buckets.get(deployment, {}).get(le, 0.0) for le in BOUNDS]
            per_bucket = [c - p for c, p in zip(cumulative, [0.0, *cumulative[:-1]], strict=True)]
            previous = self.traffic.delta(deployment, 0.0)
            self.traffic.add(deployment, alerts.TrafficSample(now, dict(by_outcome), per_bucket))
            self._record_timeline(deployment, now, previous)

    def _record_timeline(
        self, deployment: str, now: float, previous: tuple[dict[str, float], list[float]]
    ) -> None:
        outcomes, buckets = self.traffic.delta(deployment, 0.0)
        before_outcomes, before_buckets = previous
        interval = [a - b for a, b in zip(buckets, before_buckets, strict=True)]
        if not before_outcomes:
            interval = buckets
        counts = {k: v - before_outcomes.get(k, 0.0) for k, v in outcomes.items()}
        point: dict[str, Any] = {"at": now, "requests": counts}
        for name, q in alerts.QUANTILES.items():
            point[name] = alerts.histogram_quantile(q, BOUNDS, interval)
        line = self.timeline.setdefault(deployment, collections.deque(maxlen=TIMELINE_POINTS))
        line.append(point)

    # -- API ---------------------------------------------------------------------------------

    def add_routes(self, api: ManagementApi) -> None:
        """Alert rules and events, and a deployment's monitoring numbers, under ``/api``."""
        api._add("GET", "/api/alerts", self._alerts, "Alert states and recent events", None, dict)
        api._add(
            "GET", "/api/alerts/rules", self._rules, "Alert rules", None, list[alerts.AlertRule]
        )
        api._add(
            "POST",
            "/api/alerts/rules",
            functools.partial(self._add_rule, api),
            "Add an alert rule",
            alerts.AlertRule,
            alerts.AlertRule,
        )
        api._add(
            "DELETE",
            "/api/alerts/rules/{name}",
            self._delete_rule,
            "Delete an alert rule added through the API",
            None,
            dict,
        )
        api._add(
            "GET",
            "/api/monitoring/{deployment}",
            self._deployment,
            "Drift verdicts, reference and live distributions, latency and errors over time",
            None,
            dict,
        )

    async def _alerts(self, request: Request) -> tuple[int, Any]:
        from slipway.errors import InvalidInput
        from slipway.serving.http import query

        params = query(request.scope)
        deployment = params.get("deployment") or None
        try:
            limit = int(params.get("limit", EVENTS_LIMIT))
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_EVENTS_LIMIT:
            raise InvalidInput(f"limit must be a whole number from 1 to {MAX_EVENTS_LIMIT}")
        events = await asyncio.to_thread(
            self.alert_store.list_events, deployment=deployment, limit=limit
        )
        states = [
            s
            for s in self.states.values()
            if s.state != "inactive" and deployment in (None, s.deployment)
        ]
        return 200, {"states": states, "events": events}

    async def _rules(self, request: Request) -> tuple[int, Any]:
        stored = await self._stored_rules()
        return 200, alerts.rules_in_force(self.file_rules, stored)

    async def _add_rule(self, api: ManagementApi, request: Request) -> tuple[int, Any]:
        rule = await api._json(request, alerts.AlertRule)
        if any(r.name == rule.name for r in self.file_rules):
            from slipway.errors import InvalidInput

            raise InvalidInput(f"alert rule {rule.name!r} is defined in the rules file")
        stored = await asyncio.to_thread(self.alert_store.add_rule, rule, actor=request.actor)
        return 201, stored

    async def _delete_rule(self, request: Request) -> tuple[int, Any]:
        await asyncio.to_thread(
            self.alert_store.delete_rule, request.params["name"], actor=request.actor
        )
        return 200, {"deleted": request.params["name"]}

    def unprofiled(self, deployment: str) -> list[str]:
        """The versions ``deployment`` serves (a rollout's candidate and shadow too) that have
        no reference profile: their drift can never be evaluated."""
        record = self.repository.deployments.get(deployment)
        if record is None:
            return []
        refs = []
        for number in dict.fromkeys([record.version, *versions_to_load(record)]):
            loaded = self.repository.loaded.get((record.model, number))
            if loaded is not None and loaded.record.profile is None:
                refs.append(loaded.record.ref)
        return refs

    async def _deployment(self, request: Request) -> tuple[int, Any]:
        from slipway.errors import DeploymentNotFound

        name = request.params["deployment"]
        if name not in self.repository.deployments:
            raise DeploymentNotFound(name)
        versions = [
            drift_json(result)
            for (deployment, _), result in sorted(self.monitor.latest.items())
            if deployment == name
        ]
        return 200, {
            "deployment": name,
            "versions": versions,
            "timeline": list(self.timeline.get(name, [])),
            # Every request since the server started, by outcome: slipway_requests_total's sum
            # at the last evaluation (the timeline holds only its last TIMELINE_POINTS).
            "requests": self.traffic.delta(name, 0.0)[0],
            "policy": msgspec.to_builtins(self.monitor.policy),
            "window": msgspec.to_builtins(self.monitor.window),
            "dropped": self.monitor.dropped,
            "unprofiled": self.unprofiled(name),
        }


def _samples(families: list[Metric], name: str) -> Iterator[Sample]:
    return (s for family in families for s in family.samples if s.name == name)


def _queue_depths(server: list[Metric]) -> dict[str, float]:
    """Rows waiting per deployment, over its versions (and, with several workers, over every
    worker's queues)."""
    depths: dict[str, float] = {}
    for s in _samples(server, "slipway_queue_depth_rows"):
        depths[s.labels["deployment"]] = depths.get(s.labels["deployment"], 0.0) + s.value
    return depths


def _scores(
    results: dict[tuple[str, int], VersionDrift], *, predictions: bool
) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for (deployment, _), result in results.items():
        tested = result.report.predictions if predictions else result.report.features
        scores = out.setdefault(deployment, {})
        for f in tested:
            if f.verdict != "insufficient":
                scores[f.name] = max(scores.get(f.name, 0.0), f.psi)
    return out


def _window_json(profile: Any, window: drift.Window) -> dict[str, Any]:
    if isinstance(window, drift.NumericCounts):
        return {
            "edges": profile.edges,
            "reference": [0, *profile.counts, 0],
            "current": window.counts.tolist(),
            "missing": window.missing,
        }
    return {"reference": dict(profile.frequencies), "current": dict(window)}


def drift_json(result: VersionDrift) -> dict[str, Any]:
    """A version's drift evaluation as plain JSON (the report's input)."""

    def family(tested: list[drift.FeatureDrift], profiles: Any, windows: Any) -> list[Any]:
        by_name = {p.name: p for p in profiles}
        out = []
        for f in tested:
            item = {k: _finite(v) for k, v in msgspec.to_builtins(f).items()}
            item["distribution"] = _window_json(by_name[f.name], windows[f.name])
            out.append(item)
        return out

    return {
        "model": result.model,
        "version": result.version,
        "rows": result.rows,
        "evaluated_at": result.evaluated_at,
        "features": family(result.report.features, result.profile.features, result.windows),
        "predictions": family(
            result.report.predictions, result.profile.predictions, result.prediction_windows
        ),
    }


def _finite(value: Any) -> Any:
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    return value
