"""The promotion policy: one YAML file that declares every gate between registry and production.

Stages: ``contract``, ``quality``, ``integration``, ``performance``, ``shadow``. A stage runs when
the policy has a section for it (``contract``, ``quality`` and ``integration`` run by default);
``required`` lists the stages whose failure fails the validation. ``approvals`` and ``checks``
are read by the approval workflow (``slipway approvals policy MODEL --from FILE``) and
``canary`` by progressive rollouts (``slipway rollout start … --policy FILE``), so one file
governs the whole path from registry to production.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from slipway.errors import InvalidInput
from slipway.governance.evidence import ApprovalPolicy
from slipway.registry.names import check_name
from slipway.rollout.analysis import GateConfig
from slipway.yamlfile import parse_yaml, read_text

STAGES = ("contract", "quality", "integration", "performance", "shadow")

# What a stage can do with a number: refused when parsed (naming the field), never a stage
# that loops on a zero batch or checks nothing and passes.
Fraction = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
NonNegative = Annotated[float, msgspec.Meta(ge=0.0)]
Rate = Annotated[float, msgspec.Meta(gt=0.0, le=100_000.0)]  # requests per second


class Bound(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Thresholds for one metric: absolute ``min``/``max``, and ``max_worse``: how much worse
    than the production version it may be (in the metric's own units; the direction is the
    metric's, e.g. a drop for accuracy, a rise for RMSE)."""

    min: float | None = None
    max: float | None = None
    max_worse: float | None = None

    def __post_init__(self) -> None:
        # NaN fails every comparison (no candidate could pass); infinity checks nothing.
        for value in (self.min, self.max, self.max_worse):
            if value is not None and not math.isfinite(value):
                raise ValueError("min, max and max_worse must be finite numbers")


class ContractPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``allow_nan``: whether the holdout may hold NaN/Inf (the model must then still answer
    finite values). ``max_out_of_range``: the largest fraction of holdout values outside the
    training range recorded in the version's reference profile."""

    allow_nan: bool = False
    max_out_of_range: Fraction = 0.05


class IntegrationPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``rows``: holdout rows sent through HTTP (0 = all); ``tolerance``: the largest absolute
    difference allowed between a served score and the runtime's own."""

    rows: Annotated[int, msgspec.Meta(ge=0)] = 256
    batch: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 32
    tolerance: NonNegative = 1e-5


class Sla(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    p50_ms: NonNegative | None = None
    p95_ms: NonNegative | None = None
    p99_ms: NonNegative | None = None
    error_rate: Fraction | None = 0.0
    min_throughput: Fraction | None = None  # completed requests per second, as a fraction of rate


class PerformancePolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Open-loop load at each of ``rates`` (requests per second) for ``duration_s``, one holdout
    row per request, checked against ``sla`` at every rate."""

    rates: Annotated[list[Rate], msgspec.Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: [20.0]
    )
    duration_s: Annotated[float, msgspec.Meta(gt=0.0, le=3600.0)] = 3.0
    timeout_s: Annotated[float, msgspec.Meta(gt=0.0, le=600.0)] = 5.0
    route: Literal["v2", "predict"] = "v2"
    sla: Sla = Sla()


class ShadowPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Replay recorded requests through candidate and production side by side.

    ``requests``: a JSON-lines file of request bodies (relative to the policy file), or
    ``audit`` for the full-payload prediction records of the production deployment's audit log.
    """

    requests: str = "audit"
    limit: Annotated[int, msgspec.Meta(ge=1)] = 1000
    min_agreement: Fraction | None = 0.99
    max_mean_diff: NonNegative | None = None
    max_p99_latency_delta_ms: float | None = None


class CanaryPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The canary schedule and the live analysis gates a rollout started with this policy uses
    (see docs/rollouts.md for each gate)."""

    steps: list[float] = msgspec.field(default_factory=lambda: [5.0, 25.0, 50.0])
    interval_s: float = 60.0
    gates: GateConfig = GateConfig()


class Policy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A promotion policy (see the module docstring and docs/validation.md)."""

    name: str = "default"
    label: str = "label"
    against: str | None = None  # the deployment that serves the production version
    required: list[str] = msgspec.field(default_factory=lambda: list(STAGES))
    approvals: int = 1
    checks: list[str] = []  # reports (`approvals report --kind check`) that must have passed
    canary: CanaryPolicy | None = None
    contract: ContractPolicy | None = ContractPolicy()
    quality: dict[str, Bound] | None = {}
    integration: IntegrationPolicy | None = IntegrationPolicy()
    performance: PerformancePolicy | None = None
    shadow: ShadowPolicy | None = None

    def __post_init__(self) -> None:
        # The stored report and its evidence take this name: refuse a bad one before any stage.
        check_name("policy", self.name)
        unknown = sorted(set(self.required) - set(STAGES))
        if unknown:
            raise InvalidInput(
                f"policy: unknown stage(s) in required: {', '.join(unknown)};"
                f" use {', '.join(STAGES)}"
            )

    def runs(self, stage: str) -> bool:
        return getattr(self, stage) is not None

    def approval_policy(self) -> ApprovalPolicy:
        """The approval rule this policy declares for the model: ``approvals`` approvers, a
        passing validation report and the named ``checks`` (set it with
        ``governance.approvals.set_policy`` or ``slipway approvals policy MODEL --from FILE``)."""
        return ApprovalPolicy(
            approvals=self.approvals, require_validation=True, required_checks=list(self.checks)
        )


def parse_policy(text: str, *, source: str = "policy") -> Policy:
    """A policy from YAML text; InvalidInput naming the field when it does not fit."""
    return parse_yaml(text, Policy, source=source, shape="a YAML mapping of settings")


def load_policy(path: Path) -> Policy:
    """Read a policy file; InvalidInput when it is missing or malformed."""
    return parse_policy(read_text(path, "policy"), source=str(path))
