"""Reading the audit log: verify the chain, query it, export it, checkpoint it, purge it.

Verification walks the chain in sequence order and recomputes every hash. It names the first
record that breaks the chain: a gap in the sequence (a record was deleted), a ``prev_hash`` that
is not its predecessor's hash (one was removed or inserted), or content that no longer hashes
to its stored hash (one was changed). A chain cut short at the end still links up, so exported
**checkpoints** (``seq`` and ``hash`` of the head at some moment, kept elsewhere) close that gap:
a checkpoint beyond the end, or one whose hash differs, fails verification.

Retention: ``purge`` removes the oldest records in one transaction. It appends an
``audit.purged`` record, then a row to ``audit_purges`` (append-only) whose ``through_seq`` lets
the triggers allow exactly that prefix to be deleted and whose ``anchor_hash`` is where the
remaining chain starts.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Annotated, Any

import msgspec
from sqlalchemy import delete, func, select

from slipway.errors import AuditChainBroken, InvalidInput
from slipway.governance.sessions import event, now, reading, writing
from slipway.registry.audit import GENESIS, AuditEntry, chain_hash, head, lock_head
from slipway.registry.db import AuditPurgeRow, AuditRecordRow
from slipway.registry.names import check_name, storable_request_id
from slipway.registry.store import SqlStore

_PAGE = 2000
KINDS = ("control", "prediction")
_MAX_SEQ = 2**63 - 1  # audit_records.seq is a 64-bit integer column


class AuditRecord(msgspec.Struct, frozen=True):
    """One record of the audit log, ``data`` decoded."""

    seq: int
    at: dt.datetime
    kind: str
    action: str
    actor: str | None
    subject: str
    deployment: str | None
    request_id: str | None
    data: dict[str, Any]
    prev_hash: str
    hash: str


class Checkpoint(msgspec.Struct, frozen=True):
    """The head of the chain at one moment; export it somewhere the database cannot reach.
    Decoding one checks its shape: a sequence number from 0 and a lowercase sha256."""

    seq: Annotated[int, msgspec.Meta(ge=0)]
    hash: Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]
    at: dt.datetime


class Verification(msgspec.Struct, frozen=True):
    """What ``verify`` found. ``broken_seq`` is the first bad record (None when all is well);
    everything before it verifies."""

    ok: bool
    records: int
    first_seq: int | None
    last_seq: int | None
    head_hash: str
    broken_seq: int | None = None
    reason: str | None = None

    def raise_if_broken(self) -> Verification:
        if self.broken_seq is not None:
            raise AuditChainBroken(self.broken_seq, self.reason or "")
        return self


class Purge(msgspec.Struct, frozen=True):
    through_seq: int
    deleted: int
    anchor_hash: str


def verify(
    store: SqlStore,
    *,
    checkpoints: Iterable[Checkpoint] = (),
    on_progress: Callable[[int], object] | None = None,
) -> Verification:
    """Check the whole chain (and ``checkpoints`` against it); see the module docstring.
    ``on_progress(records)`` is called after every page of records read and at the end (a log
    of millions of records takes a while)."""
    with reading(store) as session:
        purge = session.execute(
            select(AuditPurgeRow.through_seq, AuditPurgeRow.anchor_hash)
            .order_by(AuditPurgeRow.through_seq.desc())
            .limit(1)
        ).one_or_none()
    expected_seq, prev = (int(purge[0]) + 1, str(purge[1])) if purge else (1, GENESIS)
    purged_through = expected_seq - 1
    wanted = {c.seq: c.hash for c in checkpoints}
    first = last = None
    count = 0
    purge_recorded = purge is None

    def broken(seq: int, reason: str) -> Verification:
        return Verification(False, count, first, last, prev, seq, reason)

    for record in _rows(store):
        if first is None:
            first = record.seq
        if record.seq != expected_seq:
            if record.seq > expected_seq:
                what = f"record {expected_seq} is missing (the sequence jumps to {record.seq})"
                if count == 0 and purge is None:
                    what += " and no retention purge accounts for it"
                return broken(expected_seq, what)
            return broken(record.seq, f"record {record.seq} appears twice or out of order")
        if record.prev_hash != prev:
            return broken(
                record.seq,
                "its prev_hash is not the hash of the record before it"
                " (a record was removed or inserted)",
            )
        if chain_hash(prev, record.seq, record.entry) != record.hash:
            return broken(record.seq, "its content does not match its hash (it was changed)")
        if record.seq in wanted and wanted.pop(record.seq) != record.hash:
            return broken(record.seq, "its hash differs from the exported checkpoint")
        if (
            not purge_recorded
            and record.action == "audit.purged"
            and record.data.get("through_seq") == purged_through
        ):
            purge_recorded = True
        prev, last, expected_seq = record.hash, record.seq, record.seq + 1
        count += 1
        if on_progress is not None and count % _PAGE == 0:
            on_progress(count)
    if on_progress is not None:
        on_progress(count)
    if not purge_recorded:
        return broken(
            purged_through + 1,
            f"records up to {purged_through} were deleted with no audit.purged record",
        )
    for seq in sorted(wanted):
        if seq > expected_seq - 1:
            return broken(
                expected_seq,
                f"the log ends at record {expected_seq - 1} but a checkpoint has record {seq}"
                " (records were removed from the end)",
            )
    return Verification(True, count, first, last, prev)


def checkpoint(store: SqlStore) -> Checkpoint:
    """The current head of the chain."""
    with reading(store) as session:
        seq, digest = head(session)
    return Checkpoint(seq=seq, hash=digest, at=now(store))


def query(store: SqlStore, *, limit: int | None = 100, **filters: Any) -> list[AuditRecord]:
    """At most ``limit`` records matching ``filters`` (those of :func:`iter_records`), oldest
    first: by request id, by deployment and time range, by business key."""
    return list(itertools.islice(iter_records(store, **filters), limit))


def iter_records(
    store: SqlStore,
    *,
    request_id: str | None = None,
    deployment: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    key: tuple[str, str] | None = None,
    kind: str | None = None,
    after: int = 0,
) -> Iterator[AuditRecord]:
    """Every matching record after seq ``after``, oldest first, read a page at a time.

    ``key`` is ``(field, value)``: a business key the deployment's policy copies into each
    prediction record (e.g. ``("customer_id", "42")``).
    """
    if kind is not None and kind not in KINDS:
        raise InvalidInput(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    if deployment is not None:
        check_name("deployment", deployment)
    if after >= _MAX_SEQ:
        return  # nothing follows the largest sequence number (and comparing past it overflows)
    conditions = []
    if request_id is not None:
        conditions.append(AuditRecordRow.request_id == storable_request_id(request_id))
    if deployment is not None:
        conditions.append(AuditRecordRow.deployment == deployment)
    if since is not None:
        conditions.append(AuditRecordRow.at >= since)
    if until is not None:
        conditions.append(AuditRecordRow.at < until)
    if kind is not None:
        conditions.append(AuditRecordRow.kind == kind)
    for record in _rows(store, conditions, max(after, 0)):
        if key is None or _has_key(record.data, *key):
            yield record.public


def export_jsonl(records: Iterable[AuditRecord]) -> Iterator[bytes]:
    """JSON lines, one record each, with the hashes, so an export can be checked on its own."""
    encoder = msgspec.json.Encoder()
    for record in records:
        yield encoder.encode(record) + b"\n"


def purge(store: SqlStore, *, before: dt.datetime, actor: str | None) -> Purge:
    """Delete the records older than ``before`` (the oldest contiguous run of them), leaving an
    ``audit.purged`` record and an ``audit_purges`` row behind."""
    if before.tzinfo is None:
        raise InvalidInput("purge needs a timezone-aware cut-off time")
    with writing(store) as session:
        head_seq, _ = lock_head(session)
        first = session.scalar(select(func.min(AuditRecordRow.seq)))
        newer = session.scalar(
            select(func.min(AuditRecordRow.seq)).where(AuditRecordRow.at >= before)
        )
        through = head_seq if newer is None else newer - 1
        if first is None or through < first:
            return Purge(through_seq=(first or 1) - 1, deleted=0, anchor_hash="")
        anchor = session.scalar(select(AuditRecordRow.hash).where(AuditRecordRow.seq == through))
        deleted = through - first + 1
        data = {
            "through_seq": through,
            "anchor_hash": anchor,
            "deleted": deleted,
            "before": before.astimezone(dt.UTC).isoformat(),
        }
        event(session, store, "audit.purged", "audit", actor, data)
        session.add(
            AuditPurgeRow(through_seq=through, anchor_hash=anchor, at=now(store), actor=actor)
        )
        session.flush()
        session.execute(delete(AuditRecordRow).where(AuditRecordRow.seq <= through))
        return Purge(through_seq=through, deleted=deleted, anchor_hash=str(anchor))


# -- internals ---------------------------------------------------------------------------------


class _Row(msgspec.Struct, frozen=True):
    seq: int
    action: str
    prev_hash: str
    hash: str
    entry: AuditEntry

    @property
    def data(self) -> dict[str, Any]:
        try:
            value = msgspec.json.decode(self.entry.data)
        except msgspec.DecodeError:
            return {}
        return value if isinstance(value, dict) else {"value": value}

    @property
    def public(self) -> AuditRecord:
        e = self.entry
        return AuditRecord(
            seq=self.seq,
            at=e.at,
            kind=e.kind,
            action=e.action,
            actor=e.actor,
            subject=e.subject,
            deployment=e.deployment,
            request_id=e.request_id,
            data=self.data,
            prev_hash=self.prev_hash,
            hash=self.hash,
        )


def _rows(store: SqlStore, conditions: list[Any] | None = None, after: int = 0) -> Iterator[_Row]:
    while True:
        query = (
            select(AuditRecordRow)
            .where(AuditRecordRow.seq > after, *(conditions or []))
            .order_by(AuditRecordRow.seq)
            .limit(_PAGE)
        )
        with reading(store) as session:
            rows = session.scalars(query).all()
        for row in rows:
            yield _Row(
                seq=row.seq,
                action=row.action,
                prev_hash=row.prev_hash,
                hash=row.hash,
                entry=AuditEntry(
                    at=row.at,
                    kind=row.kind,
                    action=row.action,
                    subject=row.subject,
                    actor=row.actor,
                    deployment=row.deployment,
                    request_id=row.request_id,
                    data=row.data,
                ),
            )
        if len(rows) < _PAGE:
            return
        after = rows[-1].seq


def _has_key(data: dict[str, Any], field: str, value: str) -> bool:
    found = data.get("keys", {}).get(field)
    values = found if isinstance(found, list) else [found]
    return any(v is not None and str(v) == value for v in values)
