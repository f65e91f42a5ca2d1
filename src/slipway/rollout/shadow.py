"""Shadow traffic: mirror requests to a shadow version off the request path and compare.

:class:`ShadowMirror` takes a copy of a served request with :meth:`~ShadowMirror.offer` (never
blocks: a full queue counts a drop) and a few worker tasks run it on the shadow version with a
timeout. The caller's answer was already sent; nothing the shadow does reaches it.
:func:`compare_outputs` and :class:`ShadowStats` are the pairwise comparison: class agreement,
score differences, latency and error deltas, per segment.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import numpy as np

from slipway.errors import DeadlineExceeded
from slipway.rollout.analysis import LATENCY_EDGES_S, latency_bucket, quantile_from_buckets

log = logging.getLogger("slipway.rollout")

Outputs = dict[str, np.ndarray]
# (deployment, version, inputs, timeout_s) -> outputs; gives up after timeout_s seconds with
# TimeoutError or DeadlineExceeded (the batch queue's own deadline: no timer task per request).
ShadowInfer = Callable[[str, int, Outputs, float], Awaitable[Outputs]]

MAX_SEGMENTS = 50
MAX_DIFFS = 2000


def _buckets() -> list[int]:
    return [0] * (len(LATENCY_EDGES_S) + 1)


class ShadowStats(msgspec.Struct):
    """Comparison of shadow against primary over a window (mergeable across replicas)."""

    mirrored: int = 0
    dropped: int = 0
    errors: int = 0
    timeouts: int = 0
    rows: int = 0
    class_rows: int = 0
    agree: int = 0
    diffs: list[float] = []
    primary_latency: list[int] = msgspec.field(default_factory=_buckets)
    shadow_latency: list[int] = msgspec.field(default_factory=_buckets)
    segments: dict[str, list[int]] = {}  # segment → [class_rows, agree]

    def merge(self, other: ShadowStats) -> None:
        for name in ("mirrored", "dropped", "errors", "timeouts", "rows", "class_rows", "agree"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.diffs = [*self.diffs, *other.diffs][: MAX_DIFFS * 10]
        for mine, theirs in (
            (self.primary_latency, other.primary_latency),
            (self.shadow_latency, other.shadow_latency),
        ):
            for i, count in enumerate(theirs[: len(mine)]):
                mine[i] += count
        for segment, (rows, agree) in other.segments.items():
            have = self.segments.setdefault(segment, [0, 0])
            have[0] += rows
            have[1] += agree


def compare_outputs(primary: Outputs, shadow: Outputs) -> tuple[int, int, list[float]]:
    """``(class rows compared, rows that agree, absolute score differences)`` of two answers to
    the same rows. Integer and string outputs are classes; float outputs are scores (a row's
    difference is its largest; NaN when either side has one)."""
    class_rows = agree = 0
    diffs: list[float] = []
    for ours, theirs in _comparable(primary, shadow):
        if ours.size <= _SMALL:
            # A mirrored request is a row or a few: on lists this is a fraction of the dozen
            # numpy calls below, which cost ~10 µs a request at 100% shadow.
            rows = ours.shape[0]
            mine = ours.reshape(rows, -1).tolist()
            other = theirs.reshape(rows, -1).tolist()
            if ours.dtype.kind == "f":
                diffs.extend(_largest_difference(a, b) for a, b in zip(mine, other, strict=True))
            else:
                class_rows += rows
                agree += sum(a == b for a, b in zip(mine, other, strict=True))
            continue
        same = _compare_array(ours, theirs, diffs)
        if same is not None:
            class_rows += int(same.shape[0])
            agree += int(np.count_nonzero(same))
    return class_rows, agree, diffs


def _comparable(primary: Outputs, shadow: Outputs) -> list[tuple[np.ndarray, np.ndarray]]:
    """The outputs both answers have, of the same shape, with rows, of a comparable kind."""
    pairs = []
    for name, ours in primary.items():
        theirs = shadow.get(name)
        if theirs is None or theirs.shape != ours.shape:
            continue
        if ours.dtype.kind not in "iubUSOf" or ours.ndim == 0 or ours.shape[0] == 0:
            continue
        pairs.append((ours, theirs))
    return pairs


def _compare_array(ours: np.ndarray, theirs: np.ndarray, diffs: list[float]) -> np.ndarray | None:
    """Row by row: whether a class output agrees (returned), or a score output's largest
    absolute difference (appended to ``diffs``; None returned)."""
    if ours.dtype.kind != "f":
        same = ours == theirs
        if same.ndim > 1:
            same = same.reshape(same.shape[0], -1).all(axis=1)
        return same
    delta = np.abs(ours.astype(np.float64) - theirs.astype(np.float64))
    diffs.extend(delta.reshape(delta.shape[0], -1).max(axis=1).tolist())
    return None


_SMALL = 64  # values in an output below which compare_outputs works on Python lists


def _largest_difference(mine: list[float], other: list[float]) -> float:
    deltas = [abs(a - b) for a, b in zip(mine, other, strict=True)]
    if not deltas:
        return math.nan
    largest = max(deltas)
    return largest if all(d == d for d in deltas) else math.nan  # NaN wins, as in numpy


class ShadowReport(msgspec.Struct, frozen=True):
    """What the comparison says, for people and for a promotion gate."""

    mirrored: int
    dropped: int
    shadow_errors: int
    shadow_timeouts: int
    error_rate: float
    agreement: float | None
    diff_mean: float | None
    diff_p50: float | None
    diff_p99: float | None
    diff_max: float | None
    primary_p99_ms: float | None
    shadow_p99_ms: float | None
    segments: dict[str, float]


def report(stats: ShadowStats) -> ShadowReport:
    """Summarize a (merged) :class:`ShadowStats`."""
    diffs = np.asarray(stats.diffs, dtype=np.float64)
    finished = stats.mirrored - stats.dropped
    p_primary = quantile_from_buckets(stats.primary_latency, 0.99)
    p_shadow = quantile_from_buckets(stats.shadow_latency, 0.99)
    return ShadowReport(
        mirrored=stats.mirrored,
        dropped=stats.dropped,
        shadow_errors=stats.errors,
        shadow_timeouts=stats.timeouts,
        error_rate=(stats.errors + stats.timeouts) / finished if finished > 0 else 0.0,
        agreement=stats.agree / stats.class_rows if stats.class_rows else None,
        diff_mean=float(diffs.mean()) if diffs.size else None,
        diff_p50=float(np.quantile(diffs, 0.5)) if diffs.size else None,
        diff_p99=float(np.quantile(diffs, 0.99)) if diffs.size else None,
        diff_max=float(diffs.max()) if diffs.size else None,
        primary_p99_ms=None if p_primary is None else p_primary * 1000,
        shadow_p99_ms=None if p_shadow is None else p_shadow * 1000,
        segments={s: agree / rows for s, (rows, agree) in stats.segments.items() if rows},
    )


MAX_GROUP = 32  # mirrored requests sent to the shadow in one model call


def _rows(arrays: Outputs) -> int:
    first = next(iter(arrays.values()), None)
    return 0 if first is None or first.ndim == 0 else int(first.shape[0])


def _joined(parts: list[Outputs]) -> Outputs | None:
    """The arrays of several requests end to end, name by name; None when they do not fit
    together (other names, scalars, other shapes beyond the rows)."""
    names = parts[0].keys()
    if not names or any(part.keys() != names for part in parts):
        return None
    try:
        return {n: np.concatenate([part[n] for part in parts]) for n in names}
    except ValueError:
        return None


def compare_rows(primary: Outputs, shadow: Outputs) -> tuple[int, np.ndarray | None, list[float]]:
    """:func:`compare_outputs` for many rows at once, row by row: ``(class outputs compared,
    agreeing class outputs per row or None, absolute score differences)``. A group of mirrored
    requests is compared in one pass, then counted request by request from the per-row
    agreement, instead of a dozen numpy calls per request."""
    class_outputs = 0
    agree: np.ndarray | None = None
    diffs: list[float] = []
    for ours, theirs in _comparable(primary, shadow):
        same = _compare_array(ours, theirs, diffs)
        if same is not None:
            class_outputs += 1
            agree = same.astype(np.int64) if agree is None else agree + same
    return class_outputs, agree, diffs


class _Job(msgspec.Struct):
    deployment: str
    rollout_id: int
    version: int
    inputs: Outputs
    outputs: Outputs
    primary_latency_s: float
    segment: str | None
    trace: Any = None  # the request's trace, when tracing is on


class ShadowMirror:
    """A bounded queue of mirrored requests and the workers that run them on the shadow.

    ``infer(deployment, version, inputs)`` runs the shadow version (the serving layer passes
    it in); ``stats_for(rollout_id, version)`` returns the stats object to update.
    """

    def __init__(
        self,
        infer: ShadowInfer,
        stats_for: Callable[[int, int], ShadowStats],
        *,
        max_queue: int = 1000,
        workers: int = 4,
        timeout_s: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        self._infer = infer
        self._stats_for = stats_for
        self.max_queue = max_queue
        self.workers = workers
        self.timeout_s = timeout_s
        self.rng = rng or random.Random()
        self._jobs: collections.deque[_Job] = collections.deque()
        self._idle: collections.deque[asyncio.Future[None]] = collections.deque()  # workers
        self._started = False
        self._waking = False  # a worker was woken and has not run yet
        self._tasks: list[asyncio.Task[None]] = []
        self.dropped = 0  # all-time
        # Called with the deployment's name for each request dropped from a full queue (the
        # serving layer counts it in slipway_shadow_dropped_total).
        self.on_drop: Callable[[str], None] | None = None
        # Called as traced(trace, started_ns, error) after a traced job (the serving layer's
        # tracing adds a ``shadow`` span to the request's trace).
        self.traced: Callable[[Any, int, str | None], None] | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._started = True
        self._tasks = [loop.create_task(self._work(loop)) for _ in range(self.workers)]

    async def stop(self) -> None:
        self._started = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self._idle.clear()
        self._waking = False

    def offer(
        self,
        deployment: str,
        rollout_id: int,
        version: int,
        fraction: float,
        inputs: Outputs,
        outputs: Outputs,
        primary_latency_s: float,
        segment: str | None = None,
        trace: Any = None,
    ) -> None:
        """Mirror this request with probability ``fraction``; never blocks, never raises."""
        if not self._started or (fraction < 1.0 and self.rng.random() >= fraction):
            return
        stats = self._stats_for(rollout_id, version)
        stats.mirrored += 1
        if len(self._jobs) >= self.max_queue:
            stats.dropped += 1
            self.dropped += 1
            if self.on_drop is not None:
                self.on_drop(deployment)
            return
        self._jobs.append(
            _Job(
                deployment, rollout_id, version, inputs, outputs, primary_latency_s, segment, trace
            )
        )
        # A deque and one waiting worker woken, rather than an asyncio.Queue: its bookkeeping
        # (loop checks, task counts, a waiter per get) cost a few µs per mirrored request.
        # One worker at a time: it takes everything queued by the time it runs, and a worker
        # woken per request would mostly find nothing left.
        if self._waking:
            return
        idle = self._idle
        while idle:
            waiter = idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._waking = True
                break

    async def _work(self, loop: asyncio.AbstractEventLoop) -> None:
        jobs = self._jobs
        while True:
            if not jobs:
                waiter = loop.create_future()
                self._idle.append(waiter)
                await waiter
                self._waking = False
                continue
            # Everything waiting goes to the shadow together, a model call per group: a task
            # wake-up, a queue entry and a model call per mirrored request cost about as much
            # as the primary's own work on it.
            taken = [jobs.popleft() for _ in range(min(MAX_GROUP, len(jobs)))]
            groups: dict[tuple[str, int, int], list[_Job]] = {}
            for job in taken:
                groups.setdefault((job.deployment, job.rollout_id, job.version), []).append(job)
            for group in groups.values():
                inputs = group[0].inputs if len(group) == 1 else _joined([j.inputs for j in group])
                if inputs is not None:
                    await self._run_group(group, inputs)
                else:  # requests whose inputs do not fit together: a model call each
                    for job in group:
                        await self._run_group([job], job.inputs)

    async def _run_group(self, jobs: list[_Job], inputs: Outputs) -> None:
        first = jobs[0]
        started = time.perf_counter()
        started_ns = time.time_ns()
        try:
            answer = await self._infer(first.deployment, first.version, inputs, self.timeout_s)
            if len(jobs) > 1 and any(len(v) != _rows(inputs) for v in answer.values()):
                raise ValueError(f"the shadow answered other than {_rows(inputs)} rows")
        except (TimeoutError, DeadlineExceeded):
            self._stats_for(first.rollout_id, first.version).timeouts += len(jobs)
            self._trace(jobs, started_ns, "timeout")
            return
        except Exception as exc:  # a broken shadow is evidence, not a failure of the server
            self._stats_for(first.rollout_id, first.version).errors += len(jobs)
            self._trace(jobs, started_ns, f"{type(exc).__name__}: {exc}")
            return
        elapsed = time.perf_counter() - started
        self._trace(jobs, started_ns, None)
        # Fetched after the wait: the collector may have drained into a new window meanwhile.
        stats = self._stats_for(first.rollout_id, first.version)
        stats.shadow_latency[latency_bucket(elapsed)] += len(jobs)
        for job in jobs:
            stats.primary_latency[latency_bucket(job.primary_latency_s)] += 1
        if len(jobs) == 1:
            self._record(stats, first, answer)
            return
        primary = _joined([job.outputs for job in jobs])
        if primary is None:  # answers of other shapes: each compared on its own
            offset = 0
            for job in jobs:
                count = _rows(job.inputs)
                self._record(stats, job, {k: v[offset : offset + count] for k, v in answer.items()})
                offset += count
            return
        class_outputs, agree, diffs = compare_rows(primary, answer)
        stats.rows += _rows(primary)
        self._add_diffs(stats, diffs)
        if class_outputs == 0 or agree is None:
            return
        stats.class_rows += class_outputs * len(agree)
        if all(job.segment is None for job in jobs):
            stats.agree += int(agree.sum())
            return
        # Per request from the running sum of per-row agreement: its segment's share.
        ends = np.cumsum([_rows(job.outputs) for job in jobs])
        running = np.concatenate(([0], np.cumsum(agree)))
        bounds = np.concatenate(([0], ends))
        per_job = (running[bounds[1:]] - running[bounds[:-1]]).tolist()
        stats.agree += int(running[-1])
        for job, agreed, start, end in zip(jobs, per_job, bounds[:-1], bounds[1:], strict=True):
            self._add_segment(stats, job.segment, class_outputs * int(end - start), agreed)

    def _record(self, stats: ShadowStats, job: _Job, answer: Outputs) -> None:
        """Compare one mirrored request's answers and count them."""
        class_rows, agree, diffs = compare_outputs(job.outputs, answer)
        stats.rows += _rows(job.outputs)
        stats.class_rows += class_rows
        stats.agree += agree
        self._add_diffs(stats, diffs)
        self._add_segment(stats, job.segment, class_rows, agree)

    @staticmethod
    def _add_diffs(stats: ShadowStats, diffs: list[float]) -> None:
        if len(stats.diffs) < MAX_DIFFS:
            stats.diffs.extend(diffs[: MAX_DIFFS - len(stats.diffs)])

    @staticmethod
    def _add_segment(stats: ShadowStats, segment: str | None, rows: int, agree: int) -> None:
        if segment is not None and (
            segment in stats.segments or len(stats.segments) < MAX_SEGMENTS
        ):
            have = stats.segments.setdefault(segment, [0, 0])
            have[0] += rows
            have[1] += agree

    def _trace(self, jobs: list[_Job], started_ns: int, error: str | None) -> None:
        if self.traced is None:
            return
        for job in jobs:
            if job.trace is not None:
                with contextlib.suppress(Exception):  # tracing must never stop the workers
                    self.traced(job.trace, started_ns, error)
