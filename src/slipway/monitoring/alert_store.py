"""Alert rules added through the API and alert events, in the registry database."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

import msgspec
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from slipway.errors import AlertRuleNotFound, InvalidInput
from slipway.monitoring.alerts import AlertEvent, AlertRule, validate_rule
from slipway.registry.audit import record_event
from slipway.registry.db import WRITE_OPTION, AlertEventRow, AlertRuleRow
from slipway.registry.store import SqlStore


class SkippedRule(msgspec.Struct, frozen=True):
    """A stored rule that does not validate, and why."""

    name: str
    reason: str

    @property
    def message(self) -> str:
        return (
            f"skipping the stored alert rule {self.name!r}, which is not valid: {self.reason};"
            f" delete it with `slipway alerts delete {self.name}` and add it again"
        )


class StoredRules(msgspec.Struct, frozen=True):
    """What :meth:`AlertStore.read_rules` found: the rules in force and the ones skipped."""

    rules: list[AlertRule]
    skipped: list[SkippedRule]


class AlertStore:
    """Reads and writes alert rules and events through the registry's engine."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self._writer = store.engine.execution_options(**{WRITE_OPTION: True})

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with Session(self.store.engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with Session(self._writer, expire_on_commit=False) as session, session.begin():
            yield session

    def _now(self) -> dt.datetime:
        return self.store.clock().astimezone(dt.UTC)

    # -- rules -----------------------------------------------------------------------------

    def add_rule(self, rule: AlertRule, *, actor: str | None = None) -> AlertRule:
        """Store a new rule (an ``alert_rule.added`` event in the same transaction);
        ``InvalidInput`` if the name is taken."""
        validate_rule(rule)
        with self._write() as session:
            if session.get(AlertRuleRow, rule.name) is not None:
                raise InvalidInput(f"alert rule {rule.name!r} already exists; delete it first")
            now, spec = self._now(), msgspec.to_builtins(rule)
            session.add(AlertRuleRow(name=rule.name, spec=spec, created_at=now, created_by=actor))
            record_event(
                session,
                at=now,
                kind="alert_rule.added",
                subject=f"alert_rule:{rule.name}",
                actor=actor,
                data=spec,
            )
        return rule

    def read_rules(self) -> StoredRules:
        """The stored rules that validate, by name, and the ones that do not (stored by an older
        Slipway, or written into the table by hand), so that one bad row stops no other rule."""
        with self._read() as session:
            rows = session.execute(
                select(AlertRuleRow.name, AlertRuleRow.spec).order_by(AlertRuleRow.name)
            ).all()
        rules, skipped = [], []
        for name, spec in rows:
            try:
                rules.append(validate_rule(msgspec.convert(spec, AlertRule)))
            except msgspec.ValidationError as exc:
                skipped.append(SkippedRule(name, str(exc)))
            except InvalidInput as exc:
                skipped.append(
                    SkippedRule(name, exc.message.removeprefix(f"alert rule {name!r}: "))
                )
        return StoredRules(rules, skipped)

    def list_rules(self) -> list[AlertRule]:
        """The stored rules that validate, by name (see :meth:`read_rules`)."""
        return self.read_rules().rules

    def delete_rule(self, name: str, *, actor: str | None = None) -> None:
        """Delete a rule (an ``alert_rule.deleted`` event); ``AlertRuleNotFound`` if none."""
        with self._write() as session:
            if session.execute(delete(AlertRuleRow).where(AlertRuleRow.name == name)).rowcount == 0:  # type: ignore[attr-defined]
                raise AlertRuleNotFound(name)
            record_event(
                session,
                at=self._now(),
                kind="alert_rule.deleted",
                subject=f"alert_rule:{name}",
                actor=actor,
                data={},
            )

    # -- events ----------------------------------------------------------------------------

    def add_events(self, events: list[AlertEvent]) -> list[AlertEvent]:
        """Store events in one transaction; returns them with their ids."""
        out = []
        with self._write() as session:
            for event in events:
                row = AlertEventRow(
                    at=dt.datetime.fromtimestamp(event.at, dt.UTC),
                    rule=event.rule,
                    deployment=event.deployment,
                    state=event.state,
                    value=event.value,
                    threshold=event.threshold,
                    severity=event.severity,
                    message=event.message,
                )
                session.add(row)
                session.flush()
                out.append(msgspec.structs.replace(event, id=row.id))
        return out

    def last_firing(self) -> list[AlertEvent]:
        """Each rule and deployment's latest event where that event is a firing one: the
        alerts open when the server last stopped."""
        latest = select(func.max(AlertEventRow.id)).group_by(
            AlertEventRow.rule, AlertEventRow.deployment
        )
        query = (
            select(AlertEventRow)
            .where(AlertEventRow.id.in_(latest), AlertEventRow.state == "firing")
            .order_by(AlertEventRow.id)
        )
        with self._read() as session:
            return [_event(row) for row in session.scalars(query)]

    def list_events(self, *, deployment: str | None = None, limit: int = 100) -> list[AlertEvent]:
        """Newest first."""
        query = select(AlertEventRow).order_by(AlertEventRow.id.desc()).limit(limit)
        if deployment:
            query = query.where(AlertEventRow.deployment == deployment)
        with self._read() as session:
            return [_event(row) for row in session.scalars(query)]


def _event(row: AlertEventRow) -> AlertEvent:
    return AlertEvent(
        rule=row.rule,
        deployment=row.deployment,
        state=row.state,  # type: ignore[arg-type]
        value=row.value,
        threshold=row.threshold,
        severity=row.severity,
        at=row.at.timestamp(),
        message=row.message,
        id=row.id,
    )
