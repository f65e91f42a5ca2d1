"""The rollout controller: one loop that advances, promotes or rolls back running canaries.

Every replica runs :meth:`RolloutController.tick` on a timer, but only the holder of the lease
row acts, so two replicas never both advance a rollout. The controller keeps no state of its
own: everything it needs is in the database, so it resumes where it stopped after a restart.
Every decision is written as a rollout event with its evidence (metric values and thresholds).
"""

from __future__ import annotations

import logging

import msgspec

from slipway.errors import ApprovalRequired, DeploymentNotFound, SlipwayError
from slipway.registry.store import SqlStore
from slipway.rollout import actions, gates
from slipway.rollout.analysis import Analysis, ArmStats, evaluate
from slipway.rollout.policy import ACTIVE, Decision, RolloutRecord, decide
from slipway.rollout.state import RolloutStore

log = logging.getLogger("slipway.rollout")

LEASE = "rollout-controller"
GATE = "promotion gate"  # how a wait for a promotion gate's reason begins


class RolloutController:
    """Advances the running canaries of one registry; ``holder`` names this replica."""

    def __init__(self, store: SqlStore, *, holder: str, lease_s: float = 15.0) -> None:
        self.store = store
        self.rollouts = RolloutStore(store)
        self.holder = holder
        self.lease_s = lease_s

    def tick(self) -> list[tuple[int, Decision]]:
        """One pass over the active rollouts if this replica holds the lease; returns the
        decisions taken (empty when another replica holds the lease)."""
        if not self.rollouts.acquire_lease(LEASE, self.holder, self.lease_s):
            return []
        decisions = []
        for rollout in self.rollouts.active():
            try:
                decision = self.step(rollout)
            except SlipwayError as exc:  # e.g. a concurrent operator action won; retry next tick
                log.warning("rollout %s: %s", rollout.id, exc.message)
                continue
            except Exception:  # one rollout that cannot be evaluated must not stall the others
                log.exception("rollout %s: the controller could not evaluate it", rollout.id)
                continue
            if decision is not None:
                decisions.append((rollout.id, decision))
        return decisions

    def release(self) -> None:
        """Give the lease up (on shutdown) so another replica takes over at once."""
        self.rollouts.release_lease(LEASE, self.holder)

    def _candidate_serving(self, rollout_id: int) -> Decision | None:
        """The rollout's candidate already serves as the deployment's version."""
        # Read again, after the deployment: a promotion commits the version change with its
        # rollout's end or hold, so this read sees both, where the list read may predate them.
        rollout = self.rollouts.get(rollout_id)
        if rollout.status not in ACTIVE:
            return None
        if actions.holding(rollout):
            held = (self.rollouts.now() - rollout.step_started_at).total_seconds()
            if rollout.status == "paused" or held < rollout.config.hold_s:
                return None  # blue stays warm and one `abort` away until the hold passes
            reason = f"held {rollout.config.hold_s:g}s after the switch"
            actions.promote(self.store, rollout.deployment, rollout=rollout, reason=reason)
            return Decision("promote", reason)
        # Made stable outside the rollout (`slipway deploy`, or an older Slipway's two-step
        # promotion cut short): the rollout has nothing left to do.
        reason = "candidate already serves as stable"
        self.rollouts.finish(rollout.id, "promoted", data={"reason": reason})
        return Decision("promote", reason)

    def _wait(self, rollout: RolloutRecord, analysis: Analysis, reason: str) -> None:
        """Store the analysis; as a "waiting" event when the checks changed, or when a promotion
        gate holds the rollout for a reason not yet said (once, not every tick)."""
        changed = rollout.analysis is None or [
            (c.name, c.status) for c in rollout.analysis.checks
        ] != [(c.name, c.status) for c in analysis.checks]
        if not changed and reason.startswith(GATE):
            last = self.rollouts.events(rollout.id, limit=1)
            changed = not last or (last[0].kind, last[0].data.get("reason")) != ("waiting", reason)
        self.rollouts.record_analysis(
            rollout.id, analysis, event="waiting" if changed else None, data={"reason": reason}
        )

    def step(self, rollout: RolloutRecord) -> Decision | None:
        """Evaluate and act on one rollout; None when there is nothing to decide."""
        try:
            deployment = self.store.get_deployment(rollout.deployment)
        except DeploymentNotFound:
            self.rollouts.finish(rollout.id, "aborted", data={"reason": "deployment deleted"})
            return Decision("abort", "deployment deleted")
        if deployment.version == rollout.candidate:
            return self._candidate_serving(rollout.id)
        if rollout.status != "running" or rollout.strategy != "canary":
            return None
        arms = self.rollouts.arm_stats(rollout.id, since=rollout.step_started_at)
        candidate = self.store.get_version(rollout.model, rollout.candidate)
        analysis = evaluate(
            arms.get(rollout.stable, ArmStats()),
            arms.get(rollout.candidate, ArmStats()),
            rollout.config.gates,
            candidate.profile,
        )
        now = self.rollouts.now()
        decision = decide(rollout, analysis, now)
        if decision.action == "promote":
            blocked = gates.unmet(self.store, rollout)
            if blocked:
                decision = Decision("wait", f"{GATE}: {'; '.join(blocked)}")
        evidence = {"analysis": msgspec.to_builtins(analysis), "reason": decision.reason}
        if decision.action == "advance":
            self.rollouts.record_analysis(rollout.id, analysis)
            self.rollouts.set_step(
                rollout.id, decision.step, evidence=evidence, from_step=rollout.step
            )
        elif decision.action == "promote":
            self.rollouts.record_analysis(rollout.id, analysis)
            try:
                actions.promote(
                    self.store,
                    rollout.deployment,
                    rollout=rollout,
                    reason=decision.reason,
                    evidence=evidence,
                )
            except ApprovalRequired as exc:  # a production deployment: wait for the approval
                decision = Decision("wait", f"{GATE}: {exc.message}")
        elif decision.action == "rollback":
            self.rollouts.record_analysis(rollout.id, analysis)
            actions.abort(
                self.store,
                rollout.deployment,
                rollout=rollout,
                status="rolled_back",
                reason=decision.reason,
                evidence=evidence,
            )
        if decision.action == "wait":
            self._wait(rollout, analysis, decision.reason)
        log.info(
            "rollout %s on %s: %s (%s)",
            rollout.id,
            rollout.deployment,
            decision.action,
            decision.reason,
        )
        return decision
