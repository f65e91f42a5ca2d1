"""Rollout strategies as data, and the pure step decision of a canary.

A rollout is started with a :class:`RolloutConfig`; the controller calls :func:`decide` with the
latest :class:`~slipway.rollout.analysis.Analysis` and applies the :class:`Decision` it returns.
"""

from __future__ import annotations

import datetime as dt
import math
import unicodedata

import msgspec

from slipway.errors import InvalidInput
from slipway.registry.records import RoutingRule
from slipway.rollout.analysis import Analysis, GateConfig

STRATEGIES = ("canary", "bluegreen", "ab", "shadow")
# Spellings people write (the docs say blue-green and A/B), by their letters alone.
_STRATEGY_BY_LETTERS = {
    "bluegreen": "bluegreen",
    "ab": "ab",
    "canary": "canary",
    "shadow": "shadow",
}
ACTIVE = ("running", "paused")
FINISHED = ("promoted", "rolled_back", "aborted")


class RolloutConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How a rollout runs.

    canary: ``steps`` are candidate weights in percent, each held at least ``interval_s`` and
    until the analysis under ``gates`` passes; after the last one the candidate is promoted.
    bluegreen: the candidate is loaded warm at weight 0; ``promote`` switches all traffic;
    with ``hold_s`` the rollout then holds (step 1) with blue warm, where abort or rollback
    switches straight back, and the controller closes it once the hold has passed.
    ab: ``weight`` percent of routing keys (header ``routing_key`` or request field
    ``routing_field``) go to the candidate; rules pin matching requests to an arm.
    shadow: ``shadow_fraction`` of requests are mirrored.
    """

    strategy: str = "canary"
    steps: list[float] = msgspec.field(default_factory=lambda: [5.0, 25.0, 50.0])
    interval_s: float = 60.0
    gates: GateConfig = GateConfig()
    weight: float = 50.0
    routing_key: str | None = None
    routing_field: str | None = None
    rules: list[RoutingRule] = []
    shadow_fraction: float = 1.0
    segment_header: str | None = None
    # Promotion gates, checked by every promote (operator or controller):
    require_validation: bool = False  # the candidate's newest validation report passed
    min_shadow_agreement: float | None = None  # shadow: agreement with stable, in [0, 1]
    min_shadow_samples: int = 100  # shadow: mirrored requests compared, at least
    hold_s: float = 0.0  # bluegreen: after the switch, keep blue warm and revertible this long

    def __post_init__(self) -> None:
        letters = "".join(c for c in str(self.strategy).lower() if c.isalnum())
        if letters in _STRATEGY_BY_LETTERS:  # anything else is refused by check_config
            msgspec.structs.force_setattr(self, "strategy", _STRATEGY_BY_LETTERS[letters])


def check_config(config: RolloutConfig) -> None:
    """Raise InvalidInput for a configuration that cannot run."""
    if config.strategy not in STRATEGIES:
        raise InvalidInput(
            f"unknown strategy {config.strategy!r}; use one of {', '.join(STRATEGIES)}"
        )
    if config.strategy == "canary":
        if not config.steps:
            raise InvalidInput("a canary needs at least one step, e.g. 5,25,50")
        increasing = all(a < b for a, b in zip(config.steps, config.steps[1:], strict=False))
        if any(not 0 < s < 100 for s in config.steps) or not increasing:
            raise InvalidInput(
                "canary steps must be increasing weights between 0 and 100 (exclusive);"
                " promotion to 100 follows the last step"
            )
    if not 0 <= config.weight < 100:
        # All traffic on the candidate is a promotion: that goes through `promote`, where a
        # production deployment's approval gate applies.
        raise InvalidInput("weight must be at least 0 and below 100; use promote for 100%")
    if not 0 < config.shadow_fraction <= 1:
        raise InvalidInput("shadow_fraction must be in (0, 1]")
    # NaN passes every range check below and stalls or fails the rollout; JSON cannot hold it.
    numbers = {"interval_s": config.interval_s, "hold_s": config.hold_s}
    numbers.update({f"gates.{f}": getattr(config.gates, f) for f in config.gates.__struct_fields__})
    for name, value in numbers.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidInput(f"{name} must be a finite number, got {value}")
    if config.interval_s < 0:
        raise InvalidInput("interval_s must be >= 0")
    if config.hold_s < 0:
        raise InvalidInput("hold_s must be >= 0")
    if config.hold_s and config.strategy != "bluegreen":
        raise InvalidInput("hold_s applies to the bluegreen strategy only")
    if config.min_shadow_agreement is not None:
        if config.strategy != "shadow":
            raise InvalidInput("min_shadow_agreement applies to the shadow strategy only")
        if not 0 <= config.min_shadow_agreement <= 1:
            raise InvalidInput("min_shadow_agreement must be in [0, 1]")
        if config.min_shadow_samples < 1:  # no evidence is not a pass
            raise InvalidInput("min_shadow_samples must be at least 1")
    if config.routing_key and config.routing_field:
        raise InvalidInput("give routing_key (a header) or routing_field, not both")
    for name in ("routing_key", "routing_field", "segment_header"):
        _check_printable(getattr(config, name), name)
    for rule in config.rules:
        if (rule.header is None) == (rule.field is None):
            raise InvalidInput("a routing rule matches either a header or a field")
        _check_printable(rule.header, "a rule's header")
        _check_printable(rule.field, "a rule's field")
        if rule.header is not None:  # no HTTP header value holds one: the rule could never match
            _check_printable(rule.equals, f"the value of the rule on header {rule.header!r}")
        if rule.arm not in ("stable", "candidate"):
            raise InvalidInput(f"rule arm must be 'stable' or 'candidate', got {rule.arm!r}")
    for name in ("min_samples", "min_output_samples", "min_input_samples", "min_feedback"):
        # A check on no samples is no evidence (and the output one cannot compute on none).
        if getattr(config.gates, name) < 1:
            raise InvalidInput(f"gates.{name} must be at least 1")


def _check_printable(text: str | None, what: str) -> None:
    # A CR or LF in a header name or value could never match a request, and would otherwise
    # travel into events, logs and pages that are read one line at a time.
    if text is not None and any(unicodedata.category(c) == "Cc" for c in text):
        raise InvalidInput(
            f"{what} must not contain control characters (CR, LF, tab, ...), got {text!r}"
        )


def initial_weight(config: RolloutConfig) -> float:
    """The candidate's weight when the rollout starts."""
    if config.strategy == "canary":
        return config.steps[0]
    if config.strategy == "ab":
        return config.weight
    return 0.0  # blue-green waits warm; shadow takes no live traffic


class RolloutRecord(msgspec.Struct, frozen=True):
    """A rollout as stored: status, current step and the last analysis."""

    id: int
    deployment: str
    model: str
    strategy: str
    stable: int
    candidate: int
    status: str  # "running", "paused", "promoted", "rolled_back", "aborted"
    step: int
    weight: float
    config: RolloutConfig
    analysis: Analysis | None
    created_at: dt.datetime
    updated_at: dt.datetime
    step_started_at: dt.datetime
    finished_at: dt.datetime | None
    created_by: str | None


def holding(rollout: RolloutRecord) -> bool:
    """A blue-green rollout that has switched and holds blue warm for its hold time."""
    return rollout.strategy == "bluegreen" and rollout.step >= 1


class RolloutEventRecord(msgspec.Struct, frozen=True):
    id: int
    rollout_id: int
    at: dt.datetime
    kind: str
    actor: str | None
    data: dict[str, object]


class Decision(msgspec.Struct, frozen=True):
    """What the controller does next: "wait", "advance" (to ``step``), "promote", "rollback"."""

    action: str
    reason: str
    step: int = 0


def decide(rollout: RolloutRecord, analysis: Analysis, now: dt.datetime) -> Decision:
    """The next move of a running canary given the analysis of the current step's window."""
    if analysis.verdict == "fail":
        failed = [c.name for c in analysis.checks if c.status == "fail"]
        return Decision("rollback", f"analysis failed: {', '.join(failed)}")
    if analysis.verdict == "wait":
        waiting = [c.name for c in analysis.checks if c.status == "wait"]
        return Decision("wait", f"not enough samples for: {', '.join(waiting)}")
    held = (now - rollout.step_started_at).total_seconds()
    if held < rollout.config.interval_s:
        return Decision("wait", f"step held {held:.0f}s of {rollout.config.interval_s:g}s")
    if rollout.step + 1 < len(rollout.config.steps):
        return Decision("advance", "analysis passed", rollout.step + 1)
    return Decision("promote", "analysis passed after the last step")
