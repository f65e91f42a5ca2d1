"""What a validation produces: checks with value, threshold and verdict, grouped by stage."""

from __future__ import annotations

import math
from typing import Any, Literal

import msgspec

Verdict = Literal["pass", "fail", "info"]


class Check(msgspec.Struct, frozen=True):
    """One check: its ``value``, the ``threshold`` it was held to (text such as ``>= 0.9``,
    empty when only informational), the verdict, and a detail for humans."""

    name: str
    value: float | str | None
    threshold: str
    verdict: Verdict
    detail: str = ""


class StageResult(msgspec.Struct, frozen=True):
    """One stage's checks. ``required``: a failure here fails the validation. ``data`` holds
    what the plots are drawn from (confusion matrix, ROC curve, latencies)."""

    stage: str
    required: bool
    checks: list[Check]
    seconds: float = 0.0
    data: dict[str, Any] = {}

    @property
    def passed(self) -> bool:
        return all(c.verdict != "fail" for c in self.checks)


class Report(msgspec.Struct, frozen=True):
    """The validation report of one version under one policy."""

    model: str
    version: int
    policy: str
    against: str | None  # "churn@3 (deployment churn-prod)" when compared with production
    created_at: str
    stages: list[StageResult]

    @property
    def ref(self) -> str:
        return f"{self.model}@{self.version}"

    @property
    def passed(self) -> bool:
        return not self.failed_required()

    def failed_required(self) -> list[str]:
        """``stage: check`` for each failing check of a required stage."""
        return [
            f"{s.stage}: {c.name}"
            for s in self.stages
            if s.required
            for c in s.checks
            if c.verdict == "fail"
        ]

    def summary(self) -> dict[str, Any]:
        """Stage verdicts and failing checks, small enough for an evidence record."""
        return {
            "policy": self.policy,
            "against": self.against,
            "passed": self.passed,
            "stages": {
                s.stage: {
                    "passed": s.passed,
                    "required": s.required,
                    "failed": [c.name for c in s.checks if c.verdict == "fail"],
                }
                for s in self.stages
            },
        }


def at_least(name: str, value: float, minimum: float | None, detail: str = "") -> Check:
    if minimum is None:
        return Check(name, _num(value), "", "info", detail)
    ok = math.isfinite(value) and value >= minimum
    return Check(name, _num(value), f">= {minimum:g}", "pass" if ok else "fail", detail)


def at_most(name: str, value: float, maximum: float | None, detail: str = "") -> Check:
    if maximum is None:
        return Check(name, _num(value), "", "info", detail)
    ok = math.isfinite(value) and value <= maximum
    return Check(name, _num(value), f"<= {maximum:g}", "pass" if ok else "fail", detail)


def truth(name: str, ok: bool, detail: str = "", value: float | str | None = None) -> Check:
    """A yes/no check."""
    return Check(name, value, "true", "pass" if ok else "fail", detail)


def _num(value: float) -> float | str:
    # JSON (and PostgreSQL's JSON) has no NaN or infinity.
    return round(float(value), 6) if math.isfinite(value) else str(value)
