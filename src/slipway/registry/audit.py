"""The write side of the audit chain: append records, each linked to the one before it.

Every record carries a sequence number and ``hash = sha256(prev_hash || canonical record)``,
where the canonical record is the compact, key-sorted JSON of its fields (``canonical_record``).
Appends run inside the caller's transaction, so a control-plane change and its audit record
commit together or not at all; the chain head is taken under a lock (PostgreSQL: an advisory
transaction lock; SQLite: the write transaction itself), so writers on many machines extend one
chain without forks. Reading, verifying, querying and purging live in
:mod:`slipway.governance.audit`.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import itertools
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any, cast

import msgspec
from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from slipway.registry.db import AuditPurgeRow, AuditRecordRow, EventRow

GENESIS = "0" * 64
_AUDIT_TABLE = cast(Table, AuditRecordRow.__table__)
_COLUMNS = (
    "seq", "at", "kind", "action", "actor", "subject", "deployment", "request_id", "data",
    "prev_hash", "hash",
)  # fmt: skip
# Rows per INSERT statement: 64 x 11 parameters stays far below SQLite's variable limit.
_ROWS_PER_INSERT = 64
SqliteRow = tuple[Any, ...]
# Any constant works; it only has to differ from the migration lock's key.
_PG_AUDIT_LOCK_KEY = 0x5_11_94_A8


class AuditEntry(msgspec.Struct, frozen=True):
    """A record to append; ``data`` is already canonical JSON text (see ``canonical_json``)."""

    at: dt.datetime
    kind: str  # "control" | "prediction"
    action: str  # "deployment.created", "token.issued", "predict", ...
    subject: str
    actor: str | None = None
    deployment: str | None = None
    request_id: str | None = None
    data: str = "{}"


def canonical_json(value: Any) -> str:
    """Compact JSON with sorted keys: the same value always gives the same text."""
    return msgspec.json.encode(value, order="sorted").decode()


def canonical_record(seq: int, entry: AuditEntry) -> bytes:
    """The bytes that are hashed for record ``seq``."""
    return _canonical(seq, _utc_iso(entry.at), entry)


def _utc_iso(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat(timespec="microseconds")


def _canonical(seq: int, at: str, entry: AuditEntry) -> bytes:
    return msgspec.json.encode(
        [
            seq,
            at,
            entry.kind,
            entry.action,
            entry.actor,
            entry.subject,
            entry.deployment,
            entry.request_id,
            entry.data,
        ]
    )


def chain_hash(prev_hash: str, seq: int, entry: AuditEntry) -> str:
    """``sha256(prev_hash || canonical record)`` as lowercase hex."""
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical_record(seq, entry)).hexdigest()


def head(session: Session) -> tuple[int, str]:
    """``(seq, hash)`` of the newest record; after a purge of everything, the purge's anchor;
    ``(0, GENESIS)`` for an empty log."""
    row = session.execute(
        select(AuditRecordRow.seq, AuditRecordRow.hash).order_by(AuditRecordRow.seq.desc()).limit(1)
    ).one_or_none()
    if row is not None:
        return int(row[0]), str(row[1])
    purge = session.execute(
        select(AuditPurgeRow.through_seq, AuditPurgeRow.anchor_hash)
        .order_by(AuditPurgeRow.through_seq.desc())
        .limit(1)
    ).one_or_none()
    return (int(purge[0]), str(purge[1])) if purge is not None else (0, GENESIS)


def lock_head(session: Session) -> tuple[int, str]:
    """Take the chain lock for the rest of the transaction and return the head."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection().exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_AUDIT_LOCK_KEY})")
    return head(session)


def _linked(
    seq: int, prev: str, entries: Sequence[AuditEntry]
) -> Iterator[tuple[AuditEntry, int, str, str, str]]:
    """``(entry, seq, prev_hash, hash, at)`` for each of ``entries`` linked after record ``seq``
    with hash ``prev`` (:func:`chain_hash`, the previous digest kept as bytes between records;
    ``at``: the record's time as hashed, ISO 8601 in UTC), made one at a time as the caller
    asks."""
    prev_bytes = bytes.fromhex(prev)
    for entry in entries:
        seq += 1
        at = _utc_iso(entry.at)
        digest = hashlib.sha256(prev_bytes + _canonical(seq, at, entry)).digest()
        hex_digest = digest.hex()
        yield entry, seq, prev, hex_digest, at
        prev, prev_bytes = hex_digest, digest


def sqlite_rows(seq: int, prev: str, entries: Sequence[AuditEntry]) -> Iterator[SqliteRow]:
    """The ``audit_records`` rows of ``entries`` for SQLite, linked after record ``seq`` with
    hash ``prev``, made one at a time as the caller asks (a caller on the event loop takes
    them a slice at a time)."""
    for e, number, before, digest, at in _linked(seq, prev, entries):
        # SQLAlchemy's text form of a SQLite DATETIME, "%Y-%m-%d %H:%M:%S.%f", cut from the ISO
        # text (strftime cost more than the rest of the row)
        yield (
            number, f"{at[:10]} {at[11:26]}", e.kind, e.action, e.actor, e.subject,
            e.deployment, e.request_id, e.data, before, digest,
        )  # fmt: skip


def chain(seq: int, prev: str, entries: Sequence[AuditEntry]) -> list[dict[str, Any]]:
    """The ``audit_records`` rows of ``entries`` linked after record ``seq`` with hash ``prev``."""
    return [
        {**msgspec.structs.asdict(entry), "seq": number, "prev_hash": before, "hash": digest}
        for entry, number, before, digest, _ in _linked(seq, prev, entries)
    ]


def append(
    session: Session,
    entries: Sequence[AuditEntry],
    linked: tuple[tuple[int, str], Sequence[SqliteRow]] | None = None,
) -> tuple[int, str]:
    """Append ``entries`` to the chain in the caller's transaction; return the new head
    ``(seq, hash)``.

    ``linked`` (SQLite): ``(head, rows)``, the rows of ``entries`` already linked (by
    :func:`sqlite_rows`) after the head the caller expects. They are inserted as they are when
    that is still the head, and linked again here when another writer appended meanwhile.
    Take this last in a transaction: it holds the chain lock until commit.
    """
    seq, prev = lock_head(session)
    if not entries:
        return seq, prev
    connection = session.connection()
    if connection.dialect.name == "sqlite":
        # Prediction records are appended by the thousand. SQLAlchemy's per-row parameter
        # processing cost about as much as the insert itself, so SQLite gets plain tuples; and
        # many rows to a statement, because sqlite3 lets go of the GIL and takes it back around
        # every statement it steps: per row, that hand-off cost more than the insert, on a
        # server whose event loop wants the GIL back all the time.
        rows = linked[1] if linked is not None and linked[0] == (seq, prev) else None
        if rows is None or len(rows) != len(entries):
            rows = list(sqlite_rows(seq, prev, entries))
        cursor = cast(sqlite3.Cursor, connection.connection.cursor())
        try:
            for start in range(0, len(rows), _ROWS_PER_INSERT):
                part = rows[start : start + _ROWS_PER_INSERT]
                cursor.execute(_sqlite_insert(len(part)), list(itertools.chain.from_iterable(part)))
        finally:
            cursor.close()
        return int(rows[-1][0]), str(rows[-1][-1])
    # Core executemany: no ORM bookkeeping
    values = chain(seq, prev, entries)
    connection.execute(insert(_AUDIT_TABLE), values)
    return int(values[-1]["seq"]), str(values[-1]["hash"])


@functools.lru_cache(maxsize=8)
def _sqlite_insert(rows: int) -> str:
    """``INSERT INTO audit_records (...) VALUES (?, ...), (?, ...), ...`` for ``rows`` rows."""
    one = f"({', '.join('?' * len(_COLUMNS))})"
    return f"INSERT INTO audit_records ({', '.join(_COLUMNS)}) VALUES {', '.join([one] * rows)}"


def control_entry(
    at: dt.datetime, kind: str, subject: str, actor: str | None, data: Any
) -> AuditEntry:
    """The audit record of a control-plane event (``subject`` like ``deployment:churn-prod``)."""
    deployment = subject.removeprefix("deployment:") if subject.startswith("deployment:") else None
    return AuditEntry(
        at=at,
        kind="control",
        action=kind,
        subject=subject,
        actor=actor,
        deployment=deployment,
        data=canonical_json(data),
    )


def record_event(
    session: Session,
    *,
    at: dt.datetime,
    kind: str,
    subject: str,
    actor: str | None,
    data: dict[str, Any],
) -> None:
    """A control-plane change: an ``events`` row and its audit record, in one transaction."""
    session.add(EventRow(at=at, kind=kind, subject=subject, actor=actor, data=data))
    append(session, [control_entry(at, kind, subject, actor, data)])
