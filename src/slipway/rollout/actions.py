"""Operator actions on rollouts, shared by the CLI, the management API and the controller.

Promotion and rollback of the stable version go through ``SqlStore.switch_version`` (where
approval rules apply) in the same transaction that ends the rollout and removes its split.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from slipway.errors import InvalidInput, VersionConflict
from slipway.registry.records import DeploymentRecord
from slipway.registry.store import SqlStore
from slipway.rollout import gates
from slipway.rollout.policy import RolloutConfig, RolloutRecord, holding
from slipway.rollout.state import RolloutStore


def start(
    store: SqlStore,
    deployment: str,
    candidate: int,
    config: RolloutConfig,
    *,
    actor: str | None = None,
) -> RolloutRecord:
    """Start rolling ``candidate`` out on ``deployment`` with ``config``."""
    if config.strategy == "shadow" and config.min_shadow_agreement is not None:
        _check_agreement_applies(store, deployment, candidate)
    return RolloutStore(store).start(deployment, candidate, config, actor=actor)


def _check_agreement_applies(store: SqlStore, deployment: str, candidate: int) -> None:
    """Agreement counts rows given the same class (an integer, text or boolean output); a
    version that answers only floating-point scores has none, so the gate could never be met
    and the rollout would sit blocked at it."""
    model = store.get_deployment(deployment).model
    outputs = store.get_version(model, candidate).signature.outputs
    if outputs and all(spec.datatype.startswith("FP") for spec in outputs):
        names = ", ".join(f"{spec.name} {spec.datatype}" for spec in outputs)
        raise InvalidInput(
            f"min_shadow_agreement compares classes, and {model}@{candidate} answers scores only"
            f" ({names}); leave it out for this model"
        )


def active(store: SqlStore, deployment: str) -> RolloutRecord:
    """The active rollout on ``deployment``; RolloutNotFound when it never had one, and
    VersionConflict (409) when its last one has ended: a concurrent promote, abort or the
    controller got there first."""
    rollouts = RolloutStore(store)
    found = rollouts.active(deployment)
    if not found:
        last = rollouts.current(deployment)  # RolloutNotFound when there never was one
        raise VersionConflict(
            f"no active rollout on deployment {deployment!r}: rollout {last.id} already ended"
            f" ({last.status}); see `slipway rollout status {deployment}`"
        )
    return found[0]


def pause(store: SqlStore, deployment: str, *, actor: str | None = None) -> RolloutRecord:
    """Stop the controller advancing the rollout; its current weights stay in force."""
    return RolloutStore(store).set_status(active(store, deployment).id, "paused", actor=actor)


def resume(store: SqlStore, deployment: str, *, actor: str | None = None) -> RolloutRecord:
    """Let the controller advance the rollout again; the step's window starts afresh."""
    return RolloutStore(store).set_status(active(store, deployment).id, "running", actor=actor)


def promote(
    store: SqlStore,
    deployment: str,
    *,
    actor: str | None = None,
    reason: str = "promoted by operator",
    evidence: dict[str, Any] | None = None,
    rollout: RolloutRecord | None = None,
) -> RolloutRecord:
    """Make the candidate the stable version (the old stable stays warm as previous) and end the
    rollout. For blue-green this is the switch: all traffic moves in one routing-table swap;
    with a hold time the rollout stays open (holding) until the controller closes it.

    The rollout's own gates (``rollout.gates``) are checked first: PromotionBlocked (409).
    """
    rollout = rollout or active(store, deployment)
    if not holding(rollout):
        gates.check(store, rollout)
    data = {"reason": reason, **(evidence or {})}
    rollouts = RolloutStore(store)
    if rollout.strategy == "bluegreen" and rollout.config.hold_s > 0 and not holding(rollout):
        return rollouts.set_step(
            rollout.id,
            1,
            actor=actor,
            event="switched",
            evidence=data,
            version=rollout.candidate,
            from_step=rollout.step,  # a simultaneous promotion switched first: 409
        )
    version = None if holding(rollout) else rollout.candidate
    return rollouts.finish(rollout.id, "promoted", actor=actor, data=data, version=version)


def abort(
    store: SqlStore,
    deployment: str,
    *,
    actor: str | None = None,
    status: str = "aborted",
    reason: str = "aborted by operator",
    evidence: dict[str, Any] | None = None,
    rollout: RolloutRecord | None = None,
) -> RolloutRecord:
    """End the rollout and send all traffic back to the stable version (after a blue-green
    switch, during its hold: back to blue, which is still warm)."""
    rollout = rollout or active(store, deployment)
    # Whether blue-green has switched is decided under the rollout's lock, not on ``rollout``:
    # a promotion may have switched since it was read.
    return RolloutStore(store).finish(
        rollout.id,
        status,
        actor=actor,
        data={"reason": reason, **(evidence or {})},
        back_to_stable=True,
    )


def rollback(store: SqlStore, deployment: str, *, actor: str | None = None) -> DeploymentRecord:
    """One step back: end an active rollout (traffic back to stable), or else point the
    deployment at its previous version, which every replica keeps loaded and warm."""
    rollouts = RolloutStore(store).active(deployment)
    if rollouts:
        abort(
            store,
            deployment,
            actor=actor,
            status="rolled_back",
            reason="rolled back by operator",
            rollout=rollouts[0],
        )
        return store.get_deployment(deployment)
    record = store.get_deployment(deployment)
    if record.previous_version is None:
        raise InvalidInput(f"deployment {deployment!r} has no previous version to roll back to")
    return store.set_deployment_version(deployment, record.previous_version, actor=actor)


def operator_action(name: str) -> Callable[..., RolloutRecord]:
    """``pause``, ``resume``, ``promote`` or ``abort`` by name, each called as
    ``(store, deployment, actor=...)``; InvalidInput for another name."""
    table: dict[str, Callable[..., RolloutRecord]] = {
        "pause": pause,
        "resume": resume,
        "promote": promote,
        "abort": abort,
    }
    if name not in table:
        raise InvalidInput(f"unknown rollout action {name!r}; use {', '.join(table)}")
    return table[name]
