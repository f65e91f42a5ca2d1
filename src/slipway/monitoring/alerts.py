"""Alert rules, their evaluation, and webhook delivery.

A rule watches one number per deployment and breaches when it is over its threshold (under it,
for ``business_metric``, which is a floor). A breach must last ``for_s`` seconds before the
rule fires (Prometheus's ``for``); a firing rule resolves as soon as the number is back. Each
change is an :class:`AlertEvent`. ``step`` is the pure state machine; the caller supplies the
values (``AlertValues``) and the clock, stores the events and sends them.

Latency and error rate are taken over the rule's ``window_s`` from the request histogram and
counters, as the exported Prometheus rules do with ``rate(...[window])``, so the built-in and
exported alerts agree.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import functools
import logging
import math
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec

from slipway.errors import InvalidInput

log = logging.getLogger("slipway.alerts")

AlertKind = Literal[
    "latency_p50",
    "latency_p95",
    "latency_p99",
    "error_rate",
    "drift_score",
    "prediction_drift",
    "business_metric",
    "queue_depth",
]
KINDS: tuple[str, ...] = AlertKind.__args__  # type: ignore[attr-defined]
QUANTILES = {"latency_p50": 0.5, "latency_p95": 0.95, "latency_p99": 0.99}
ERROR_OUTCOMES = ("server_error", "timeout")


class AlertRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One alert rule. ``deployment`` "*" applies it to every deployment.

    ``feature`` narrows ``drift_score``/``prediction_drift`` to one feature or output ("*":
    the largest score); ``metric`` names the business metric of ``business_metric``.
    """

    name: str
    kind: AlertKind
    threshold: float
    deployment: str = "*"
    for_s: float = 60.0
    window_s: float = 300.0
    feature: str = "*"
    metric: str = ""
    severity: str = "warning"
    description: str = ""

    @property
    def floor(self) -> bool:
        return self.kind == "business_metric"


class AlertState(msgspec.Struct, frozen=True):
    """Where one rule stands for one deployment."""

    rule: str
    deployment: str
    state: Literal["inactive", "pending", "firing"] = "inactive"
    since: float | None = None  # when the current breach started
    value: float | None = None


class AlertEvent(msgspec.Struct, frozen=True):
    """A rule started firing or resolved."""

    rule: str
    deployment: str
    state: Literal["firing", "resolved"]
    value: float | None
    threshold: float
    severity: str
    at: float  # unix seconds
    message: str
    id: int | None = None


def validate_rule(rule: AlertRule) -> AlertRule:
    """The rule, or ``InvalidInput`` saying what is wrong with it."""
    # The limits of the alert_events columns: an event that cannot be stored would fail every
    # event of its evaluation (PostgreSQL enforces them; SQLite does not).
    if not rule.name or len(rule.name) > 64 or not rule.name.isprintable():
        raise InvalidInput("an alert rule needs a name of 1-64 printable characters")
    if len(rule.severity) > 16 or not rule.severity.isprintable():
        raise InvalidInput(
            f"alert rule {rule.name!r}: severity must be at most 16 printable characters,"
            " e.g. warning or critical"
        )
    if not math.isfinite(rule.threshold):
        raise InvalidInput(f"alert rule {rule.name!r}: threshold must be a finite number")
    if not (math.isfinite(rule.for_s) and math.isfinite(rule.window_s)):
        raise InvalidInput(f"alert rule {rule.name!r}: for_s and window_s must be finite numbers")
    if rule.for_s < 0 or rule.window_s <= 0:
        raise InvalidInput(f"alert rule {rule.name!r}: for_s must be >= 0 and window_s > 0")
    if rule.kind == "business_metric" and not rule.metric:
        raise InvalidInput(f"alert rule {rule.name!r}: business_metric needs a metric name")
    return rule


def load_rules(path: Path) -> list[AlertRule]:
    """Rules from a TOML file of ``[[rules]]`` tables (see docs/monitoring.md)."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise InvalidInput(f"cannot read alert rules from {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(
            f"cannot read alert rules from {path}: {exc}; the rules file is TOML: [[rules]]"
            " tables (see docs/monitoring.md)"
        ) from exc
    try:
        rules = msgspec.convert(data.get("rules", []), list[AlertRule])
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"invalid alert rule in {path}: {exc}") from exc
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise InvalidInput(f"alert rule names in {path} must be unique")
    return [validate_rule(r) for r in rules]


def rules_in_force(file_rules: Sequence[AlertRule], stored: Sequence[AlertRule]) -> list[AlertRule]:
    """The rules file's rules, then the stored (API/CLI) rules whose name the file does not use.

    Names are unique: states and events are keyed by rule name, so two rules of one name would
    overwrite each other's state and fire again at every evaluation. The API and CLI refuse a
    name the file uses, but a rule stored before the file named it, or through a CLI or server
    that reads another file, can share it; the file's rule wins.
    """
    names = {rule.name for rule in file_rules}
    return [*file_rules, *(rule for rule in stored if rule.name not in names)]


def breached(rule: AlertRule, value: float | None) -> bool:
    if value is None or math.isnan(value):
        return False
    return value < rule.threshold if rule.floor else value > rule.threshold


def step(
    rule: AlertRule, previous: AlertState | None, value: float | None, now: float, deployment: str
) -> tuple[AlertState, AlertEvent | None]:
    """Advance one rule for one deployment by one evaluation."""
    prev = previous or AlertState(rule=rule.name, deployment=deployment)
    if breached(rule, value):
        since = prev.since if prev.state != "inactive" and prev.since is not None else now
        if prev.state == "firing":
            return dataclasses_replace(prev, value=value), None
        if now - since >= rule.for_s:
            state = AlertState(rule.name, deployment, "firing", since, value)
            return state, _event(rule, deployment, "firing", value, now)
        return AlertState(rule.name, deployment, "pending", since, value), None
    state = AlertState(rule.name, deployment, "inactive", None, value)
    if prev.state == "firing":
        return state, _event(rule, deployment, "resolved", value, now)
    return state, None


def dataclasses_replace(state: AlertState, **changes: Any) -> AlertState:
    return msgspec.structs.replace(state, **changes)


def _event(
    rule: AlertRule, deployment: str, state: Literal["firing", "resolved"], value: float | None,
    at: float,
) -> AlertEvent:  # fmt: skip
    shown = "no data" if value is None else f"{value:.4g}"
    relation = "under the floor" if rule.floor else "over"
    if state == "firing":
        message = (
            f"{rule.name}: {rule.kind} of {deployment} is {shown}, {relation} {rule.threshold:g}"
            f" for {rule.for_s:g}s"
        )
    else:
        message = f"{rule.name}: {rule.kind} of {deployment} is back to {shown}"
    return AlertEvent(
        rule=rule.name,
        deployment=deployment,
        state=state,
        value=value,
        threshold=rule.threshold,
        severity=rule.severity,
        at=at,
        message=message,
    )


# -- the numbers rules watch ----------------------------------------------------------------


def histogram_quantile(q: float, bounds: Sequence[float], counts: Sequence[float]) -> float | None:
    """The ``q`` quantile of a histogram of *per-bucket* counts (upper ``bounds``, last +Inf),
    interpolated linearly within the bucket as PromQL's ``histogram_quantile`` does."""
    total = float(sum(counts))
    if total <= 0:
        return None
    cumulative = []
    running = 0.0
    for c in counts:
        running += c
        cumulative.append(running)
    rank = q * total
    i = bisect.bisect_left(cumulative, rank)
    i = min(i, len(bounds) - 1)
    if math.isinf(bounds[i]):
        return bounds[i - 1] if i > 0 else None  # PromQL: the highest finite bound
    lower = bounds[i - 1] if i > 0 else 0.0
    below = cumulative[i - 1] if i > 0 else 0.0
    inside = counts[i]
    if inside <= 0:
        return bounds[i]
    return lower + (bounds[i] - lower) * (rank - below) / inside


@dataclasses.dataclass(frozen=True)
class TrafficSample:
    """Cumulative request counters of one deployment at one moment."""

    at: float
    outcomes: Mapping[str, float]
    buckets: Sequence[float]  # per-bucket counts of the duration histogram


class TrafficHistory:
    """Cumulative samples per deployment, for rate windows: kept for ``keep_s`` or the longest
    window asked of :meth:`delta`, whichever is longer.

    Every sample of the last ``fine_s`` is kept; older ones are thinned to one per
    ``keep_s / COARSE_SAMPLES`` seconds, so a day-long window costs a few thousand samples per
    deployment, and its start is placed to within that step (a longer window, never a shorter).
    """

    COARSE_SAMPLES = 1000

    def __init__(
        self, bounds: Sequence[float], keep_s: float = 3600.0, fine_s: float = 3600.0
    ) -> None:
        self.bounds = list(bounds)
        self.keep_s = keep_s
        self.fine_s = fine_s
        self._samples: dict[str, list[TrafficSample]] = {}
        self._trimmed: set[str] = set()  # deployments whose first samples were dropped
        self._thinned_at: dict[str, int] = {}  # sample count after the last thinning

    def add(self, deployment: str, sample: TrafficSample) -> None:
        samples = self._samples.setdefault(deployment, [])
        samples.append(sample)
        while len(samples) > 2 and sample.at - samples[1].at >= self.keep_s:
            samples.pop(0)
            self._trimmed.add(deployment)
        if len(samples) > 2 * self._thinned_at.get(deployment, self.COARSE_SAMPLES):
            samples[:] = self._thin(samples)
            self._thinned_at[deployment] = max(len(samples), self.COARSE_SAMPLES)

    def _thin(self, samples: list[TrafficSample]) -> list[TrafficSample]:
        fine_from = samples[-1].at - self.fine_s
        step = self.keep_s / self.COARSE_SAMPLES
        kept = [samples[0]]
        for s in samples[1:]:
            if s.at >= fine_from or s.at - kept[-1].at >= step:
                kept.append(s)
        return kept

    def deployments(self) -> list[str]:
        return list(self._samples)

    def delta(self, deployment: str, window_s: float) -> tuple[dict[str, float], list[float]]:
        """Requests by outcome and duration bucket counts over the last ``window_s``."""
        # From now on keep what this window needs: with only the default hour, a longer window
        # would reach past the history and count everything since the server started.
        self.keep_s = max(self.keep_s, window_s)
        samples = self._samples.get(deployment, [])
        if not samples:
            return {}, [0.0] * len(self.bounds)
        last = samples[-1]
        first = next((s for s in reversed(samples) if last.at - s.at >= window_s), None)
        if first is None and deployment in self._trimmed:
            first = samples[0]  # the window grew past what was kept: the oldest sample left
        if first is None or first is last:
            # The history is shorter than the window: the counters started at zero with the
            # server, so everything they hold falls inside it.
            return dict(last.outcomes), list(last.buckets)
        outcomes = {k: v - first.outcomes.get(k, 0.0) for k, v in last.outcomes.items()}
        buckets = [a - b for a, b in zip(last.buckets, first.buckets, strict=True)]
        return outcomes, buckets


@dataclasses.dataclass
class AlertValues:
    """Everything rules read, for one evaluation: traffic windows and the latest gauges."""

    traffic: TrafficHistory
    drift: Mapping[str, Mapping[str, float]] = dataclasses.field(default_factory=dict)
    prediction_drift: Mapping[str, Mapping[str, float]] = dataclasses.field(default_factory=dict)
    business: Mapping[str, Mapping[str, float]] = dataclasses.field(default_factory=dict)
    queue_depth: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def deployments(self) -> set[str]:
        return {
            *self.traffic.deployments(),
            *self.drift,
            *self.prediction_drift,
            *self.business,
            *self.queue_depth,
        }

    def value(self, rule: AlertRule, deployment: str) -> float | None:
        """The number ``rule`` watches for ``deployment``; None when there is no data."""
        if rule.kind in QUANTILES:
            _, buckets = self.traffic.delta(deployment, rule.window_s)
            return histogram_quantile(QUANTILES[rule.kind], self.traffic.bounds, buckets)
        if rule.kind == "error_rate":
            outcomes, _ = self.traffic.delta(deployment, rule.window_s)
            total = sum(outcomes.values())
            if total <= 0:
                return None
            return sum(outcomes.get(o, 0.0) for o in ERROR_OUTCOMES) / total
        if rule.kind in ("drift_score", "prediction_drift"):
            scores = (self.drift if rule.kind == "drift_score" else self.prediction_drift).get(
                deployment, {}
            )
            if rule.feature != "*":
                return scores.get(rule.feature)
            return max(scores.values()) if scores else None
        if rule.kind == "business_metric":
            return self.business.get(deployment, {}).get(rule.metric)
        return self.queue_depth.get(deployment)


def evaluate_rules(
    rules: Sequence[AlertRule],
    states: Mapping[tuple[str, str], AlertState],
    values: AlertValues,
    now: float,
    removed: Sequence[AlertRule] = (),
) -> tuple[dict[tuple[str, str], AlertState], list[AlertEvent]]:
    """One evaluation of every rule for every deployment it applies to. ``removed``: rules
    evaluated last time and gone now; where one was firing, a resolved event says so (a
    receiver that opened an incident on the firing closes it)."""
    new_states: dict[tuple[str, str], AlertState] = {}
    events: list[AlertEvent] = []
    for rule in removed:
        for (name, deployment), state in sorted(states.items()):
            if name == rule.name and state.state == "firing":
                closing = _event(rule, deployment, "resolved", None, now)
                message = _removed(rule.name, deployment)
                events.append(msgspec.structs.replace(closing, message=message))
    deployments = values.deployments()
    for rule in rules:
        targets = deployments if rule.deployment == "*" else {rule.deployment}
        # A firing rule whose deployment vanished still resolves.
        targets |= {d for (r, d), s in states.items() if r == rule.name and s.state == "firing"}
        for deployment in sorted(targets):
            key = (rule.name, deployment)
            applies = rule.deployment in ("*", deployment)
            # A rule changed to another deployment no longer watches this one: it resolves.
            value = values.value(rule, deployment) if applies else None
            state, event = step(rule, states.get(key), value, now, deployment)
            new_states[key] = state
            if event is not None:
                events.append(event)
    return new_states, events


def restore_states(
    fired: Sequence[AlertEvent], rules: Sequence[AlertRule], now: float
) -> tuple[dict[tuple[str, str], AlertState], list[AlertEvent]]:
    """States to start from after a restart: ``fired`` are the stored firing events that are
    still each rule and deployment's latest. Those of rules in force are firing again (no
    second firing event while they stay breached; resolved once they are not); those of rules
    deleted meanwhile resolve now, in the returned events."""
    names = {rule.name for rule in rules}
    states: dict[tuple[str, str], AlertState] = {}
    closing: list[AlertEvent] = []
    for event in fired:
        if event.rule in names:
            key = (event.rule, event.deployment)
            states[key] = AlertState(event.rule, event.deployment, "firing", event.at, event.value)
            continue
        message = _removed(event.rule, event.deployment)
        closing.append(
            msgspec.structs.replace(
                event, state="resolved", value=None, at=now, message=message, id=None
            )
        )
    return states, closing


def _removed(rule: str, deployment: str) -> str:
    """The message of the resolved event of a rule deleted while it fired."""
    return f"{rule}: the rule was removed while firing for {deployment}"


# -- delivery ----------------------------------------------------------------------------------


class WebhookSender:
    """POSTs each event as JSON to every URL, retrying failures with exponential backoff.

    Delivery runs in background tasks so evaluation never waits on a slow receiver; a
    receiver still failing after ``retries`` retries is logged and given up on. Events of one
    rule and deployment reach a URL in the order they happened: a resolved event waits until
    its firing event is delivered or given up on, or a receiver that was down for the firing
    would get "resolved" first and then keep an incident open for an alert that is over.
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        retries: int = 3,
        backoff_s: float = 0.5,
        timeout_s: float = 5.0,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.urls = list(urls)
        self.retries = retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self._sleep = sleep
        self._tasks: set[asyncio.Task[bool]] = set()
        # The latest delivery per (url, rule, deployment), which the next one waits for.
        self._last: dict[tuple[str, str, str], asyncio.Task[bool]] = {}
        self.delivered = 0
        self.failed = 0

    def send(self, events: Sequence[AlertEvent]) -> None:
        loop = asyncio.get_running_loop()
        for event in events:
            for url in self.urls:
                key = (url, event.rule, event.deployment)
                task = loop.create_task(self._deliver_after(self._last.get(key), url, event))
                self._last[key] = task
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                task.add_done_callback(functools.partial(self._forget, key))

    def _forget(self, key: tuple[str, str, str], task: asyncio.Task[bool]) -> None:
        if self._last.get(key) is task:
            del self._last[key]

    async def _deliver_after(
        self, previous: asyncio.Task[bool] | None, url: str, event: AlertEvent
    ) -> bool:
        if previous is not None:
            await asyncio.wait([previous])  # delivered or given up on, either way
        return await self.deliver(url, event)

    async def deliver(self, url: str, event: AlertEvent) -> bool:
        """One event to one URL, with retries; True when a 2xx came back."""
        import httpx  # here: a server without webhooks never loads it

        body = msgspec.json.encode({"event": event})
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            for attempt in range(self.retries + 1):
                try:
                    response = await client.post(
                        url, content=body, headers={"content-type": "application/json"}
                    )
                    if response.is_success:
                        self.delivered += 1
                        return True
                    reason = f"HTTP {response.status_code}"
                except httpx.HTTPError as exc:
                    reason = f"{type(exc).__name__}: {exc}"
                if attempt < self.retries:
                    delay = self.backoff_s * 2**attempt
                    log.warning("alert webhook %s failed (%s); retry in %.2gs", url, reason, delay)
                    await self._sleep(delay)
        self.failed += 1
        tries = self.retries + 1
        log.error("alert webhook %s gave up on %s after %d tries", url, event.rule, tries)
        return False

    async def drain(self) -> None:
        """Wait for deliveries in flight (shutdown, tests)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
