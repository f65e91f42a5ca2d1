"""Audit records of predictions, written off the request path.

The request path calls :meth:`PredictionRecorder.record`: it appends a tuple of references (no
copying, no JSON, no hashing, no I/O) to a bounded in-memory queue and returns. A background task
drains the queue in batches: it decodes each payload, applies the deployment's audit policy
(full, redacted fields, hashed, sampled, none; business keys copied out), and appends the batch
to the audit chain in one transaction, in a worker thread.

When the queue is full (the database is slow or down), ``fail-open`` drops the record and counts
it in ``slipway_audit_dropped_records_total``; ``fail-closed`` refuses the request with 503 so no
prediction goes unrecorded. A batch that fails to write is put back and retried.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import csv
import datetime as dt
import hashlib
import io
import itertools
import logging
import random
import secrets
import time
from collections.abc import Callable
from typing import Any

import msgspec
import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge

from slipway.errors import InvalidInput, Overloaded
from slipway.governance.sessions import writing
from slipway.registry.audit import AuditEntry, SqliteRow, append, canonical_json, sqlite_rows
from slipway.registry.names import storable_request_id
from slipway.registry.records import DeploymentRecord, InferencePolicy
from slipway.registry.store import SqlStore
from slipway.settings import AUDIT_MODES

log = logging.getLogger("slipway.audit")

REDACTED = "[redacted]"
_DEFAULT_POLICY = InferencePolicy()
# Records built per turn of the event loop: ~9 µs each (body hashes, JSON, chain link), so a
# request that arrives meanwhile waits ~70 µs at most (32 put p95 at one connection +0.15 ms).
_SLICE = 8

DeploymentLookup = Callable[[str], "DeploymentRecord | None"]


class PredictionRecorder:
    """The bounded queue and background writer of prediction audit records.

    ``deployment_for(name)`` gives the deployment (its InferencePolicy, which version is which
    arm) when the batch is written.
    ``mode`` is one of ``fail-open``, ``fail-closed``, ``off``. The queue holds at most
    ``max_records`` records and ``max_bytes`` bytes of request and response bodies.
    """

    def __init__(
        self,
        store: SqlStore,
        deployment_for: DeploymentLookup,
        *,
        mode: str = "fail-open",
        max_records: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
        batch_size: int = 500,
        flush_interval_s: float = 0.2,
        registry: CollectorRegistry | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if mode not in AUDIT_MODES:
            raise InvalidInput(f"unknown audit mode {mode!r}; use one of {', '.join(AUDIT_MODES)}")
        self.store = store
        self.deployment_for = deployment_for
        self.enabled = mode != "off"
        self.fail_closed = mode == "fail-closed"
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self._rng = rng
        self._queue: collections.deque[tuple[Any, ...]] = collections.deque()
        self._bytes = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._replica = secrets.token_hex(4)
        # The chain head this recorder's last write left, to link the next batch against on
        # the event loop (SQLite); None before the first write and after a failed one.
        self._head: tuple[int, str] | None = None
        self._sqlite = store.engine.dialect.name == "sqlite"
        self._counter = 0
        registry = registry or CollectorRegistry()
        self.dropped = Counter(
            "slipway_audit_dropped_records",
            "Prediction audit records dropped because the audit queue was full (fail-open).",
            registry=registry,
        )
        self.written = Counter(
            "slipway_audit_written_records",
            "Prediction audit records appended to the audit log.",
            registry=registry,
        )
        # Set by the writer at each turn (every flush_interval_s at most), not read at scrape
        # time: with several workers the page is built from the workers' files.
        self._queued = Gauge(
            "slipway_audit_queue_records",
            "Prediction audit records waiting to be written.",
            registry=registry,
            multiprocess_mode="livesum",
        )

    # -- the request path --------------------------------------------------------------------

    def record(
        self,
        deployment: str,
        version: int | None,
        outcome: str,
        latency_s: float,
        request: Any,
        response: Any,
        *,
        headers: Any = None,
        actor: str | None = None,
        request_id: str | None = None,
        trace_id: str | None = None,
    ) -> None:
        """Queue one prediction's record; O(1), never blocks, never touches the database.

        ``request``/``response``: the body bytes (or decoded arrays from other protocols),
        referenced, not copied. ``headers``: the request's (for ``x-request-id``). Raises
        Overloaded (503) only in fail-closed mode, only for a request that succeeded, when the
        queue is full.
        """
        if not self.enabled:
            return
        # len() of bytes is their size; of decoded arrays (a dict), a count that is close to 0.
        size = len(request or b"") + len(response or b"")
        queue = self._queue
        if len(queue) >= self.max_records or self._bytes + size > self.max_bytes:
            if self.fail_closed and outcome == "ok":
                raise Overloaded.full("the audit log queue")
            self.dropped.inc()
            return
        if request_id is None and headers:
            # Now rather than when the record is built: the queue then holds no reference to
            # the request's header list, a container the collector would have to track until
            # the record is written (full collections, and their pauses, come with it).
            request_id = _header(headers, b"x-request-id")
        queue.append(
            (time.time(), deployment, version, outcome, latency_s, request, response, actor,
             request_id, trace_id, size)
        )  # fmt: skip
        self._bytes += size
        if len(queue) == self.batch_size and self._wake is not None:
            self._wake.set()

    # -- the background writer ---------------------------------------------------------------

    def start(self) -> None:
        """Start the writer on the running event loop."""
        if self.enabled and self._task is None:
            self._wake = asyncio.Event()
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the writer after writing what is queued (best effort).

        The writer is asked to finish, not cancelled: a cancelled await would leave its
        thread appending a batch that the final flush would then append a second time.
        """
        if self._task is not None:
            self._stopping = True
            assert self._wake is not None
            self._wake.set()
            with contextlib.suppress(Exception):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            while self._queue:
                await self.flush()

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def _run(self) -> None:
        assert self._wake is not None
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval_s)
            self._wake.clear()
            self._queued.set(len(self._queue))
            try:
                await self.flush()
            except Exception:  # keep the records queued; the database may be back soon
                if self._stopping:
                    return
                log.exception("could not write prediction audit records; retrying")
                with contextlib.suppress(TimeoutError):  # a stop() wakes it early
                    await asyncio.wait_for(self._wake.wait(), min(5.0, self.flush_interval_s * 10))

    async def flush(self) -> None:
        """Write what is queued when the call starts, a batch per transaction; records queued
        meanwhile wait for the next flush, so a busy server writes full batches every
        ``flush_interval_s`` instead of a trickle of small transactions (each a disk sync).

        The records are built, and on SQLite linked into the chain after the head this recorder
        wrote last, on the event loop in small slices, yielding between them; only the
        transaction runs on a thread. Python work on a thread holds the GIL for up to the
        interpreter's switch interval at a time, stalling every request behind it, while the
        database's own work there lets go of it.
        """
        remaining = len(self._queue)
        while remaining > 0 and self._queue:
            take = min(self.batch_size, remaining, len(self._queue))
            remaining -= take
            batch = [self._queue.popleft() for _ in range(take)]
            size = sum(item[-1] for item in batch)
            self._bytes -= size
            try:
                entries: list[AuditEntry] = []
                for start in range(0, len(batch), _SLICE):
                    entries.extend(self.entry(*item[:-1]) for item in batch[start : start + _SLICE])
                    await asyncio.sleep(0)
                linked = None
                if self._head is not None and self._sqlite:
                    rows: list[SqliteRow] = []
                    making = sqlite_rows(*self._head, entries)
                    while len(rows) < len(entries):
                        rows.extend(itertools.islice(making, _SLICE))
                        await asyncio.sleep(0)
                    linked = (self._head, rows)
                await asyncio.to_thread(self.append, entries, linked)
            except Exception:
                self._queue.extendleft(reversed(batch))
                self._bytes += size
                raise

    def write(self, batch: list[tuple[Any, ...]]) -> None:
        """Append a batch of queued items to the chain in one transaction (blocking)."""
        self.append([self.entry(*item[:-1]) for item in batch])

    def append(
        self,
        entries: list[AuditEntry],
        linked: tuple[tuple[int, str], list[SqliteRow]] | None = None,
    ) -> None:
        """Append built records to the chain in one transaction (blocking); ``linked``: their
        SQLite rows linked after an expected head (see :func:`slipway.registry.audit.append`)."""
        self._head = None  # unknown until this commits
        with writing(self.store) as session:
            written = append(session, entries, linked)
        self._head = written
        self.written.inc(len(entries))

    def entry(
        self,
        at: float,
        deployment: str,
        version: int | None,
        outcome: str,
        latency_s: float,
        request: Any,
        response: Any,
        actor: str | None,
        request_id: str | None,
        trace_id: str | None = None,
    ) -> AuditEntry:
        """The audit record of one queued prediction, under its deployment's policy."""
        record = self.deployment_for(deployment)
        policy = _DEFAULT_POLICY if record is None else record.inference
        mode = policy.payload
        # Decoding the body is the costliest part of a record: only when something needs it.
        needs_body = bool(policy.keys) or mode in ("full", "redact", "sample")
        if request_id is None and not needs_body and isinstance(request, bytes | bytearray):
            needs_body = b'"id"' in request
        decoded = _decode(request) if needs_body else None
        if request_id is None and isinstance(decoded, dict) and isinstance(decoded.get("id"), str):
            request_id = decoded["id"]
        if not request_id:
            self._counter += 1
            request_id = f"{self._replica}-{self._counter}"
        data: dict[str, Any] = {
            "version": version,
            "arm": _arm(record, version),
            "latency_ms": round(latency_s * 1000, 3),
            "outcome": outcome,
        }
        if trace_id is not None:  # the request's OpenTelemetry trace (tracing on)
            data["trace_id"] = trace_id
        if policy.keys:
            data["keys"] = {field: _find(decoded, field) for field in policy.keys}
        if mode == "sample":
            mode = "full" if self._rng() < policy.sample_rate else "hash"
            data["sampled"] = mode == "full"
        if mode in ("full", "redact"):
            redact = set(policy.redact) if mode == "redact" else set()
            data["input"] = _redact(decoded, redact)
            data["output"] = _redact(_decode(response), redact)
        elif mode == "hash":
            data["input_sha256"] = _sha256(request)
            data["output_sha256"] = _sha256(response)
        return AuditEntry(
            at=dt.datetime.fromtimestamp(at, dt.UTC),
            kind="prediction",
            action="predict",
            subject=f"deployment:{deployment}",
            actor=actor,
            deployment=deployment,
            request_id=storable_request_id(request_id),
            data=canonical_json(data),
        )


def _arm(record: DeploymentRecord | None, version: int | None) -> str | None:
    if record is None or version is None:
        return None
    if version == record.version:
        return "stable"
    traffic = record.traffic
    if traffic is not None and version == traffic.candidate:
        return "candidate"
    if traffic is not None and version == traffic.shadow:
        return "shadow"
    return "previous" if version == record.previous_version else "pinned"


def _header(headers: Any, name: bytes) -> str | None:
    for key, value in headers or ():
        if key == name:
            return bytes(value).decode("latin-1")[:128]
    return None


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _decode(value: Any) -> Any:
    """A body as JSON; a CSV body (MLflow's ``text/csv``) as ``{"csv": {"columns", "data"}}``
    so that its columns can be redacted; anything else as its size and sha256."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            return msgspec.json.decode(raw)
        except msgspec.DecodeError:
            pass
        try:
            text = raw.decode("utf-8")
            if text.lstrip()[:1] in ("{", "["):  # JSON that does not parse is not a table
                raise ValueError("malformed JSON")
            header, *rows = csv.reader(io.StringIO(text))
        except (UnicodeDecodeError, ValueError, csv.Error):
            return {"undecodable_bytes": len(raw), "sha256": _sha256(raw)}
        return {"csv": {"columns": header, "data": rows}}
    return _plain(value)


def _sha256(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, bytes | bytearray | memoryview):
        value = canonical_json(_plain(value)).encode()
    return hashlib.sha256(value).hexdigest()


def _redact(value: Any, fields: set[str]) -> Any:
    """``value`` with every dict entry named in ``fields`` replaced, the ``data`` of every V2
    tensor (``{"name": ..., "data": ...}``) named in ``fields`` replaced, and the values of
    every column named in ``fields`` of a split table (MLflow's ``{"columns", "data"}``)."""
    if not fields:
        return value
    if isinstance(value, dict):
        if value.get("name") in fields and "data" in value:
            return {**value, "data": REDACTED}
        if (hidden := _split_columns(value, fields)) is not None:
            rows = [
                [REDACTED if i in hidden else cell for i, cell in enumerate(row)]
                if isinstance(row, list)
                else _redact(row, fields)
                for row in value["data"]
            ]
            return {
                **_redact({k: v for k, v in value.items() if k != "data"}, fields),
                "data": rows,
            }
        return {k: REDACTED if k in fields else _redact(v, fields) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, fields) for v in value]
    return value


def _split_columns(value: dict[str, Any], fields: set[str]) -> set[int] | None:
    """The positions of ``fields`` among a split table's ``columns``; None for anything else."""
    columns, data = value.get("columns"), value.get("data")
    if not isinstance(columns, list) or not isinstance(data, list):
        return None
    return {i for i, name in enumerate(columns) if isinstance(name, str) and name in fields}


def _find(value: Any, field: str) -> Any:
    """A business key's value(s): top level, V2 ``parameters``, each instance or record dict,
    or the column of that name of MLflow's ``dataframe_split`` or CSV body."""
    if not isinstance(value, dict):
        return None
    if field in value:
        return value[field]
    parameters = value.get("parameters")
    if isinstance(parameters, dict) and field in parameters:
        return parameters[field]
    found: list[Any] = []
    for rows in (value.get("instances"), value.get("dataframe_records")):
        if isinstance(rows, list):
            found.extend(row[field] for row in rows if isinstance(row, dict) and field in row)
    split = value.get("dataframe_split", value.get("csv"))
    if isinstance(split, dict) and (at := _split_columns(split, {field})):
        i = min(at)
        found.extend(row[i] for row in split["data"] if isinstance(row, list) and len(row) > i)
    if found:
        return found if len(found) > 1 else found[0]
    return None
