"""Transactions on the registry database for the governance modules.

Governance keeps its rows in the registry database, beside the models they govern, and writes
them the way the store does: one transaction per change, with the events row and its audit
record in the same transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.orm import Session

from slipway.registry.audit import record_event
from slipway.registry.db import WRITE_OPTION
from slipway.registry.store import SqlStore


@contextmanager
def reading(store: SqlStore) -> Iterator[Session]:
    """A read transaction (one snapshot)."""
    with Session(store.engine, expire_on_commit=False) as session, session.begin():
        yield session


@contextmanager
def writing(store: SqlStore) -> Iterator[Session]:
    """A write transaction (BEGIN IMMEDIATE on SQLite, so writers queue instead of failing)."""
    engine = store.engine.execution_options(**{WRITE_OPTION: True})
    with Session(engine, expire_on_commit=False) as session, session.begin():
        yield session


def now(store: SqlStore) -> dt.datetime:
    """The store's clock, as aware UTC."""
    return store.clock().astimezone(dt.UTC)


def event(
    session: Session,
    store: SqlStore,
    kind: str,
    subject: str,
    actor: str | None,
    data: dict[str, Any],
) -> None:
    """Record a governance change as an event and an audit record; call it last in a write."""
    record_event(session, at=now(store), kind=kind, subject=subject, actor=actor, data=data)
