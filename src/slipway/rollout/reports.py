"""What ``rollout status``, ``experiment report`` and their API equivalents show."""

from __future__ import annotations

from typing import Any

import msgspec

from slipway.registry.store import SqlStore
from slipway.rollout.experiment import MetricReport, experiment_report
from slipway.rollout.policy import RolloutRecord
from slipway.rollout.shadow import ShadowReport, ShadowStats, report
from slipway.rollout.state import RolloutStore

_CONSISTENT_READS = 5  # a decision between two reads is rare; two in a row rarer still


def shadow_report(rollouts: RolloutStore, rollout: RolloutRecord) -> ShadowReport:
    """The shadow comparison of ``rollout``, summed over every replica's windows."""
    stats = ShadowStats()
    for _, data in rollouts.windows(rollout.id):
        if "shadow" in data:
            stats.merge(msgspec.convert(data["shadow"], ShadowStats))
    return report(stats)


def rollout_status(store: SqlStore, deployment: str, *, events: int = 20) -> dict[str, Any]:
    """The deployment's current (or last) rollout with its weights, step, latest analysis,
    live evidence per version since the step began, and newest events."""
    rollouts = RolloutStore(store)
    rollout_id = rollouts.current(deployment).id
    # A decision writes its event and the rollout's new state in one transaction, but the two
    # are read apart: events, the rollout, events again. When no event came in between, the
    # state read matches the events (no decision listed without its analysis, and no ended
    # rollout whose ending event is missing); otherwise read again.
    newest = rollouts.events(rollout_id, events)
    for _ in range(_CONSISTENT_READS):
        rollout = rollouts.get(rollout_id)
        again = rollouts.events(rollout_id, events)
        if [e.id for e in again[:1]] == [e.id for e in newest[:1]]:
            break
        newest = again
    record = store.get_deployment(deployment)
    arms = rollouts.arm_stats(rollout.id, since=rollout.step_started_at)
    live = {
        str(version): {
            "requests": arm.requests,
            "errors": arm.errors,
            "error_rate": arm.error_rate,
            "p99_ms": None if arm.p99_s() is None else arm.p99_s() * 1000,  # type: ignore[operator]
        }
        for version, arm in sorted(arms.items())
    }
    result: dict[str, Any] = {
        "rollout": msgspec.to_builtins(rollout),
        "deployment": msgspec.to_builtins(record),
        "weights": _weights(rollout, record.version),
        "evidence": live,
        "events": msgspec.to_builtins(newest),
    }
    if rollout.strategy == "shadow":
        result["shadow"] = msgspec.to_builtins(shadow_report(rollouts, rollout))
    return result


def experiment_summary(store: SqlStore, deployment: str, *, alpha: float = 0.05) -> dict[str, Any]:
    """Per-arm business metrics of the deployment's current (or last) rollout, with intervals,
    significance tests and the sample size still needed."""
    rollouts = RolloutStore(store)
    rollout = rollouts.current(deployment)
    values = rollouts.feedback_by_version(rollout.id)
    metrics: list[MetricReport] = experiment_report(
        values, rollout.stable, rollout.candidate, alpha=alpha
    )
    return {
        "rollout": rollout.id,
        "deployment": deployment,
        "status": rollout.status,
        "arms": {"control": rollout.stable, "treatment": rollout.candidate},
        "alpha": alpha,
        "metrics": msgspec.to_builtins(metrics),
    }


def _weights(rollout: RolloutRecord, stable: int) -> dict[str, float]:
    if rollout.status not in ("running", "paused"):
        return {str(stable): 100.0}
    if rollout.strategy == "shadow":
        return {str(stable): 100.0}
    return {str(rollout.stable): 100.0 - rollout.weight, str(rollout.candidate): rollout.weight}
