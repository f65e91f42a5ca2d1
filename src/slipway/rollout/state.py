"""Rollouts in the registry database: their rows, events, evidence windows, served request ids,
feedback and the controller lease.

:class:`RolloutStore` shares the engine (and clock) of a :class:`~slipway.registry.store.SqlStore`.
Every change is one transaction; a change of traffic bumps the deployment's ``generation`` so
every replica reconciles to it. Version changes (promote, rollback) go through
``SqlStore.switch_version`` in the rollout's own transaction, never around it: a controller
that sees the candidate serving always sees its rollout ended (or holding) too.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from slipway.errors import (
    DeploymentNotFound,
    InvalidInput,
    RolloutNotFound,
    VersionConflict,
    VersionNotFound,
)
from slipway.registry.audit import record_event
from slipway.registry.db import (
    WRITE_OPTION,
    DeploymentRow,
    FeedbackRow,
    LeaseRow,
    ModelRow,
    RolloutEventRow,
    RolloutRow,
    RolloutWindowRow,
    ServedRequestRow,
    VersionRow,
)
from slipway.registry.names import (
    MAX_REQUEST_ID,
    check_name,
    check_version,
    storable_request_id,
)
from slipway.registry.promotions import require_approved_candidate
from slipway.registry.records import TrafficPolicy
from slipway.registry.store import SqlStore
from slipway.rollout.analysis import Analysis, ArmStats
from slipway.rollout.policy import (
    ACTIVE,
    RolloutConfig,
    RolloutEventRecord,
    RolloutRecord,
    check_config,
    holding,
    initial_weight,
)


class RolloutStore:
    """Rollout state over the registry's database."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.engine = store.engine
        self._writer = store.engine.execution_options(**{WRITE_OPTION: True})

    # -- sessions ------------------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with Session(self._writer, expire_on_commit=False) as session, session.begin():
            yield session

    def now(self) -> dt.datetime:
        return self.store.clock().astimezone(dt.UTC)

    # -- rollouts ------------------------------------------------------------------------------

    def start(
        self,
        deployment: str,
        candidate: int,
        config: RolloutConfig,
        *,
        actor: str | None = None,
    ) -> RolloutRecord:
        """Start a rollout of ``candidate`` on ``deployment``. Raises VersionConflict when one is
        already active there, InvalidInput when ``candidate`` is the stable version."""
        check_name("deployment", deployment)
        check_version(candidate)
        check_config(config)
        with self._write() as session:
            row, model = _lock_deployment(session, deployment)
            if row.version == candidate:
                raise InvalidInput(
                    f"version {candidate} already serves {deployment!r}; roll out another version"
                )
            exists = session.scalar(
                select(VersionRow.id).where(
                    VersionRow.model_id == row.model_id, VersionRow.number == candidate
                )
            )
            if exists is None:
                raise VersionNotFound(model, candidate)
            if any(rule.arm == "candidate" for rule in config.rules):
                # A rule matches whatever share of requests carry its value (up to all of
                # them), so on production it counts as a promotion, not as a weight below 100.
                require_approved_candidate(
                    session,
                    row,
                    model,
                    candidate,
                    "a routing rule to the candidate can send it any share of traffic",
                )
            active = session.scalar(
                select(RolloutRow.id).where(
                    RolloutRow.deployment == deployment, RolloutRow.status.in_(ACTIVE)
                )
            )
            if active is not None:
                raise VersionConflict(
                    f"rollout {active} is already active on {deployment!r}; promote or abort it"
                    " first (`slipway rollout abort`)"
                )
            now = self.now()
            rollout = RolloutRow(
                deployment=deployment,
                model=model,
                strategy=config.strategy,
                stable=row.version,
                candidate=candidate,
                status="running",
                step=0,
                config=msgspec.to_builtins(config),
                analysis=None,
                created_at=now,
                updated_at=now,
                step_started_at=now,
                finished_at=None,
                created_by=actor,
            )
            session.add(rollout)
            session.flush()
            self._set_traffic(session, row, _traffic(rollout.id, candidate, config, 0), now, actor)
            record = _record(rollout)
            self._event(session, rollout, "started", actor, {"config": rollout.config})
            return record

    def get(self, rollout_id: int) -> RolloutRecord:
        with self._read() as session:
            row = session.get(RolloutRow, rollout_id)
            if row is None:
                raise RolloutNotFound(f"rollout {rollout_id} not found")
            return _record(row)

    def current(self, deployment: str) -> RolloutRecord:
        """The active rollout on ``deployment``, else its most recent one."""
        check_name("deployment", deployment)
        with self._read() as session:
            rows = session.scalars(
                select(RolloutRow)
                .where(RolloutRow.deployment == deployment)
                .order_by(RolloutRow.id.desc())
                .limit(20)
            ).all()
        for row in rows:
            if row.status in ACTIVE:
                return _record(row)
        if rows:
            return _record(rows[0])
        raise RolloutNotFound(
            f"no rollout on deployment {deployment!r} yet",
            f"start one with `slipway rollout start {deployment} VERSION`",
        )

    def active(self, deployment: str | None = None) -> list[RolloutRecord]:
        """Active rollouts, oldest first; on one deployment when given."""
        query = select(RolloutRow).where(RolloutRow.status.in_(ACTIVE)).order_by(RolloutRow.id)
        if deployment is not None:
            query = query.where(RolloutRow.deployment == deployment)
        with self._read() as session:
            return [_record(row) for row in session.scalars(query)]

    def set_step(
        self,
        rollout_id: int,
        step: int,
        *,
        actor: str | None = None,
        evidence: Any = None,
        event: str = "advanced",
        version: int | None = None,
        from_step: int | None = None,
    ) -> RolloutRecord:
        """Move a canary to ``step`` (its weight goes live on every replica); a blue-green
        rollout to step 1 as it switches the deployment to ``version`` (``event`` "switched").
        ``from_step``: the step the caller decided on; VersionConflict when another action
        moved the rollout on since (two simultaneous promotions switch once)."""
        with self._write() as session:
            rollout = self._lock_active(session, rollout_id)
            if from_step is not None and rollout.step != from_step:
                if event == "switched":
                    raise VersionConflict(
                        f"rollout {rollout.id} already switched {rollout.deployment!r} to"
                        f" {rollout.model}@{rollout.candidate}; promote again to end its hold"
                        " now, or abort to switch back"
                    )
                raise VersionConflict(
                    f"rollout {rollout.id} is at step {rollout.step}, not {from_step}: another"
                    " action moved it first"
                )
            if version is not None:
                self.store.switch_version(session, rollout.deployment, version, actor=actor)
            config = msgspec.convert(rollout.config, RolloutConfig)
            row, _ = _lock_deployment(session, rollout.deployment)
            now = self.now()
            before = rollout.step
            rollout.step = step
            rollout.step_started_at = now
            rollout.updated_at = now
            self._set_traffic(
                session, row, _traffic(rollout.id, rollout.candidate, config, step), now, actor
            )
            self._event(
                session,
                rollout,
                event,
                actor,
                {
                    "from_step": before,
                    "to_step": step,
                    "weight": weight_of(config, step),
                    **(evidence or {}),
                },
            )
            return _record(rollout)

    def set_status(
        self, rollout_id: int, status: str, *, actor: str | None = None, data: Any = None
    ) -> RolloutRecord:
        """Pause or resume (``status`` "paused"/"running"); resuming restarts the step's window."""
        with self._write() as session:
            rollout = self._lock_active(session, rollout_id)
            if rollout.status == status:
                return _record(rollout)
            now = self.now()
            rollout.status = status
            rollout.updated_at = now
            if status == "running":
                rollout.step_started_at = now
            self._event(session, rollout, status, actor, data or {})
            return _record(rollout)

    def finish(
        self,
        rollout_id: int,
        status: str,
        *,
        actor: str | None = None,
        data: Any = None,
        version: int | None = None,
        back_to_stable: bool = False,
    ) -> RolloutRecord:
        """End a rollout as "promoted", "rolled_back" or "aborted" and remove its traffic split
        (all traffic back to the deployment's stable version); with ``version``, point the
        deployment at it in the same transaction (a promotion). ``back_to_stable``: a blue-green
        rollout that has switched (as read under the lock) switches back to blue."""
        with self._write() as session:
            rollout = self._lock_active(session, rollout_id)
            if back_to_stable and holding(_record(rollout)):
                version = rollout.stable
            if version is not None:
                self.store.switch_version(session, rollout.deployment, version, actor=actor)
            now = self.now()
            rollout.status = status
            rollout.updated_at = now
            rollout.finished_at = now
            try:
                row, _ = _lock_deployment(session, rollout.deployment)
            except DeploymentNotFound:
                row = None
            if row is not None and row.traffic and row.traffic.get("rollout_id") == rollout.id:
                self._set_traffic(session, row, None, now, actor)
            self._event(session, rollout, status, actor, data or {})
            return _record(rollout)

    def record_analysis(
        self, rollout_id: int, analysis: Analysis, *, event: str | None = None, data: Any = None
    ) -> None:
        """Store the latest analysis on the rollout; also as an event when ``event`` is given.
        Nothing once the rollout has ended: an analysis read before an operator's abort must not
        land after it."""
        with self._write() as session:
            rollout = session.get(RolloutRow, rollout_id, with_for_update=True)
            if rollout is None or rollout.status not in ACTIVE:
                return
            rollout.analysis = msgspec.to_builtins(analysis)
            if event is not None:
                self._event(
                    session, rollout, event, None, {"analysis": rollout.analysis, **(data or {})}
                )

    def events(self, rollout_id: int, limit: int = 100) -> list[RolloutEventRecord]:
        """The rollout's newest ``limit`` events, newest first."""
        with self._read() as session:
            rows = session.scalars(
                select(RolloutEventRow)
                .where(RolloutEventRow.rollout_id == rollout_id)
                .order_by(RolloutEventRow.id.desc())
                .limit(limit)
            ).all()
            return [
                RolloutEventRecord(r.id, r.rollout_id, r.at, r.kind, r.actor, r.data) for r in rows
            ]

    # -- evidence ------------------------------------------------------------------------------

    def add_windows(
        self,
        replica: str,
        windows: Iterable[tuple[int, int, dict[str, Any]]],
        served: Iterable[tuple[str, int, int]] = (),
    ) -> None:
        """Append one replica's flushed windows ``(rollout_id, version, data)`` and the ids of
        the requests it served ``(request_id, rollout_id, version)``, in one transaction."""
        with self._write() as session:
            now = self.now()
            session.add_all(
                RolloutWindowRow(rollout_id=r, replica=replica, version=v, at=now, data=data)
                for r, v, data in windows
            )
            session.add_all(
                ServedRequestRow(request_id=q, rollout_id=r, version=v, at=now)
                for q, r, v in served
            )

    def windows(
        self, rollout_id: int, since: dt.datetime | None = None
    ) -> list[tuple[int, dict[str, Any]]]:
        """``(version, data)`` of every window flushed for the rollout after ``since``."""
        query = select(RolloutWindowRow.version, RolloutWindowRow.data).where(
            RolloutWindowRow.rollout_id == rollout_id
        )
        if since is not None:
            query = query.where(RolloutWindowRow.at >= since)
        with self._read() as session:
            return [(v, d) for v, d in session.execute(query.order_by(RolloutWindowRow.id))]

    def arm_stats(self, rollout_id: int, since: dt.datetime | None = None) -> dict[int, ArmStats]:
        """Evidence per version since ``since``, summed over every replica's windows, with
        feedback values joined to the version that served each request."""
        arms: dict[int, ArmStats] = {}
        for version, data in self.windows(rollout_id, since):
            if "arm" in data:
                arm = arms.setdefault(version, ArmStats())
                arm.merge(msgspec.convert(data["arm"], ArmStats))
        for version, metrics in self.feedback_by_version(rollout_id, since).items():
            arm = arms.setdefault(version, ArmStats())
            arm.metrics = metrics
        return arms

    def add_feedback(
        self, request_id: str, values: dict[str, float], *, actor: str | None = None
    ) -> None:
        """Record business outcomes for ``request_id``."""
        if not request_id or len(request_id) > MAX_REQUEST_ID:
            raise InvalidInput(f"request_id must be 1-{MAX_REQUEST_ID} characters")
        with self._write() as session:
            session.add(
                FeedbackRow(
                    request_id=storable_request_id(request_id),
                    values=values,
                    at=self.now(),
                    actor=actor,
                )
            )

    def feedback_by_version(
        self, rollout_id: int, since: dt.datetime | None = None
    ) -> dict[int, dict[str, list[float]]]:
        """Feedback values joined to the version that served each request of the rollout: one
        observation per request and named value, the newest posted (a retried or corrected
        post replaces, never adds)."""
        query = (
            select(ServedRequestRow.request_id, ServedRequestRow.version, FeedbackRow.values)
            .join(FeedbackRow, FeedbackRow.request_id == ServedRequestRow.request_id)
            .where(ServedRequestRow.rollout_id == rollout_id)
        )
        if since is not None:
            query = query.where(ServedRequestRow.at >= since)
        latest: dict[tuple[str, int], dict[str, float]] = {}
        with self._read() as session:
            for request_id, version, values in session.execute(query.order_by(FeedbackRow.id)):
                latest.setdefault((request_id, version), {}).update(values)
        result: dict[int, dict[str, list[float]]] = {}
        for (_, version), values in latest.items():
            arm = result.setdefault(version, {})
            for name, value in values.items():
                arm.setdefault(name, []).append(float(value))
        return result

    # -- lease ---------------------------------------------------------------------------------

    def acquire_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take or renew lease ``name`` for ``holder`` until now + ``ttl_s``; False when another
        holder's lease has not expired."""
        with self._write() as session:
            now = self.now()
            expires = now + dt.timedelta(seconds=ttl_s)
            insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
            session.execute(
                insert(LeaseRow)
                .values(name=name, holder=holder, expires_at=expires)
                .on_conflict_do_nothing(index_elements=["name"])
            )
            taken = session.execute(
                update(LeaseRow)
                .where(
                    LeaseRow.name == name,
                    (LeaseRow.holder == holder) | (LeaseRow.expires_at <= now),
                )
                .values(holder=holder, expires_at=expires)
            )
            return bool(taken.rowcount)  # type: ignore[attr-defined]

    def release_lease(self, name: str, holder: str) -> None:
        with self._write() as session:
            session.execute(
                update(LeaseRow)
                .where(LeaseRow.name == name, LeaseRow.holder == holder)
                .values(expires_at=self.now())
            )

    # -- internals -----------------------------------------------------------------------------

    def _lock_active(self, session: Session, rollout_id: int) -> RolloutRow:
        rollout = session.get(RolloutRow, rollout_id, with_for_update=True)
        if rollout is None:
            raise RolloutNotFound(f"rollout {rollout_id} not found")
        if rollout.status not in ACTIVE:
            raise VersionConflict(f"rollout {rollout_id} already ended ({rollout.status})")
        return rollout

    def _set_traffic(
        self,
        session: Session,
        row: DeploymentRow,
        traffic: TrafficPolicy | None,
        now: dt.datetime,
        actor: str | None,
    ) -> None:
        """Change ``row``'s traffic split, recorded under ``actor`` (None: the controller)."""
        before = row.traffic
        row.traffic = None if traffic is None else msgspec.to_builtins(traffic)
        row.generation += 1
        row.updated_at = now
        record_event(  # the events row and its audit record (registry/audit.py)
            session,
            at=now,
            kind="deployment.traffic_changed",
            subject=f"deployment:{row.name}",
            actor=actor,
            data={"before": before, "after": row.traffic},
        )

    def _event(
        self, session: Session, rollout: RolloutRow, kind: str, actor: str | None, data: Any
    ) -> None:
        now = self.now()
        data = msgspec.to_builtins(data)
        session.add(
            RolloutEventRow(rollout_id=rollout.id, at=now, kind=kind, actor=actor, data=data)
        )
        record_event(
            session,
            at=now,
            kind=f"rollout.{kind}",
            subject=f"deployment:{rollout.deployment}",
            actor=actor,
            data={"rollout": rollout.id, **data},
        )


def weight_of(config: RolloutConfig, step: int) -> float:
    """The candidate's weight at ``step``."""
    if config.strategy == "canary":
        return config.steps[min(step, len(config.steps) - 1)]
    if config.strategy == "bluegreen" and step >= 1:
        return 100.0  # switched: green serves everything while blue is held warm
    return initial_weight(config)


def _traffic(rollout_id: int, candidate: int, config: RolloutConfig, step: int) -> TrafficPolicy:
    shadow = config.strategy == "shadow"
    return TrafficPolicy(
        strategy=config.strategy,
        rollout_id=rollout_id,
        candidate=None if shadow else candidate,
        weight=0.0 if shadow else weight_of(config, step),
        routing_key=config.routing_key.lower() if config.routing_key else None,
        routing_field=config.routing_field,
        sample_inputs=config.gates.max_input_psi is not None,
        rules=[
            msgspec.structs.replace(r, header=r.header.lower()) if r.header else r
            for r in config.rules
        ],
        shadow=candidate if shadow else None,
        shadow_fraction=config.shadow_fraction if shadow else 0.0,
        segment_header=config.segment_header.lower() if config.segment_header else None,
    )


def _lock_deployment(session: Session, name: str) -> tuple[DeploymentRow, str]:
    found = session.execute(
        select(DeploymentRow, ModelRow.name)
        .join(ModelRow, ModelRow.id == DeploymentRow.model_id)
        .where(DeploymentRow.name == name)
        .with_for_update(of=DeploymentRow)
    ).one_or_none()
    if found is None:
        raise DeploymentNotFound(name)
    return found[0], found[1]


def _record(row: RolloutRow) -> RolloutRecord:
    config = msgspec.convert(row.config, RolloutConfig)
    return RolloutRecord(
        id=row.id,
        deployment=row.deployment,
        model=row.model,
        strategy=row.strategy,
        stable=row.stable,
        candidate=row.candidate,
        status=row.status,
        step=row.step,
        weight=weight_of(config, row.step),
        config=config,
        analysis=None if row.analysis is None else msgspec.convert(row.analysis, Analysis),
        created_at=row.created_at,
        updated_at=row.updated_at,
        step_started_at=row.step_started_at,
        finished_at=row.finished_at,
        created_by=row.created_by,
    )
