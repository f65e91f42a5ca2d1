"""Promotion gates a rollout sets for itself, checked before any promote.

Separate from the approval workflow (``registry.promotions``, production deployments only):
these are the rollout's own preconditions, such as "the candidate passed validation" before a
blue-green switch or "the shadow agreed with stable" before a shadow becomes stable.
"""

from __future__ import annotations

from slipway.errors import PromotionBlocked
from slipway.registry.store import SqlStore
from slipway.rollout.policy import RolloutRecord
from slipway.rollout.reports import shadow_report
from slipway.rollout.state import RolloutStore


def unmet(store: SqlStore, rollout: RolloutRecord) -> list[str]:
    """What keeps ``rollout``'s candidate from promotion now (empty: nothing)."""
    config = rollout.config
    reasons: list[str] = []
    if config.require_validation:
        from slipway.validation.reports import latest_report

        found = latest_report(store, rollout.model, rollout.candidate)
        ref = f"{rollout.model}@{rollout.candidate}"
        if found is None:
            reasons.append(f"no validation report; run `slipway validate {ref} --data HOLDOUT`")
        elif not found.passed:
            reasons.append(f"its newest validation report (#{found.id}) failed")
    if config.strategy == "shadow" and config.min_shadow_agreement is not None:
        shadow = shadow_report(RolloutStore(store), rollout)
        if shadow.mirrored < config.min_shadow_samples:
            reasons.append(
                f"the shadow compared {shadow.mirrored} requests of the"
                f" {config.min_shadow_samples} required"
            )
        elif shadow.agreement is None or shadow.agreement < config.min_shadow_agreement:
            agreement = "none" if shadow.agreement is None else f"{shadow.agreement:.3f}"
            reasons.append(f"shadow agreement {agreement} is below {config.min_shadow_agreement:g}")
    return reasons


def check(store: SqlStore, rollout: RolloutRecord) -> None:
    """Raise PromotionBlocked (409) when a gate of ``rollout`` is unmet."""
    reasons = unmet(store, rollout)
    if reasons:
        raise PromotionBlocked(rollout.deployment, f"{rollout.model}@{rollout.candidate}", reasons)
