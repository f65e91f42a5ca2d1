"""Adaptive batching: requests for one loaded version queue and run together.

The worker takes everything queued (up to ``max_batch_size`` rows) as soon as the runtime is free.
Under load it gives the event loop a few more passes (at most ``max_batch_delay_ms``) while new
requests keep joining the queue, and runs as soon as a pass adds nothing: it never waits for
requests that are not coming, and a lone request never waits at all. Each caller gets exactly
its own rows back. The queue is bounded in rows; a full queue raises ``Overloaded``.

Where a batch runs: on a dedicated thread, so a slow or hung model cannot stall the server; or,
for a runtime that declares itself safe for it (``inline_safe``: bounded CPU work, no I/O) and
whose measured cost for the batch fits ``inline_budget_s``, on the event loop itself. For a
model that answers in microseconds the thread hand-off (two wake-ups and a GIL transfer, tens of
µs of CPU) costs several times the inference; inline it costs nothing. The cost per row is
measured on every batch, as CPU time of the thread that ran it (GIL waits and a busy machine
must not make a fast model look slow), so a model that turns out slow moves to the thread.

Deadlines: every request carries one. Requests are only at risk while a batch is on the
thread (an inline batch finishes before the loop does anything else), so one timer per queue,
armed for the oldest request while a thread batch runs, expires them, instead of one timer
per request.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from slipway.errors import (
    DeadlineExceeded,
    InferenceFailed,
    Overloaded,
    PayloadTooLarge,
    SlipwayError,
)
from slipway.registry.records import BatchingConfig

Predict = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]

# Weight of the newest batch in the running per-row cost estimate.
_COST_WEIGHT = 0.2
_UNLOADING = "the model is unloading; retry after 1s"


@dataclass(slots=True)
class _Pending:
    inputs: dict[str, np.ndarray]
    rows: int
    future: asyncio.Future[dict[str, np.ndarray]]
    deadline: float  # loop.time() after which the caller gets DeadlineExceeded
    timeout: float
    timing: list[int] | None = None  # a traced request's: gets the model run's start and end


@dataclass
class BatchStats:
    """Counters the metrics layer reads; plain ints, no locking needed on one event loop."""

    batches: int = 0
    rows: int = 0
    inline_batches: int = 0
    last_batch_requests: int = 0
    sizes: collections.Counter[int] = field(default_factory=collections.Counter)


class BatchQueue:
    """One queue, one worker task and one inference thread per loaded version.

    ``inline_budget_s`` > 0 lets batches whose estimated cost (measured seconds per row × rows)
    is within it run on the event loop; 0 keeps every batch on the thread. Pass 0 for runtimes
    that may block (I/O, locks, generation): the estimate cannot foresee a hang.
    """

    def __init__(
        self,
        predict: Predict,
        config: BatchingConfig,
        *,
        name: str = "",
        inline_budget_s: float = 0.0,
    ) -> None:
        self._predict = predict
        self.config = config
        self.inline_budget_s = inline_budget_s
        # Seconds per row, from measured batches; None until the first batch (run on the thread).
        self.cost_per_row_s: float | None = None
        self._average_per_row_s: float | None = None
        self._queue: collections.deque[_Pending] = collections.deque()
        self._queued_rows = 0
        self._timed = 0  # queued requests that carry a timing list (tracing on)
        self._arriving = 0  # requests in run_now's look-around
        self._wakeup: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._running: list[_Pending] = []  # the batch on the thread, if any
        self._timer: asyncio.TimerHandle | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix=f"infer-{name}"
        )
        self.stats = BatchStats()
        # Metrics hook, called once per batch: (rows, each request's queue wait s, batch s).
        self.observer: Callable[[int, list[float], float], None] | None = None

    @property
    def depth(self) -> int:
        return self._queued_rows

    def start(self) -> None:
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self._wakeup = asyncio.Event()
            self._task = self._loop.create_task(self._run())

    async def stop(self) -> None:
        """Fail what is queued or running with ``Overloaded`` (503, retry) and refuse what
        comes after: a request already routed here while the version unloads must not wait
        on a queue that no worker will run again."""
        self._stopping = True
        waiting = [*self._running, *self._queue]  # the worker forgets its batch when cancelled
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for pending in waiting:
            if not pending.future.done():
                pending.future.set_exception(Overloaded(_UNLOADING))
        self._queue.clear()
        self._queued_rows = 0
        self._executor.shutdown(wait=False, cancel_futures=True)

    def submit(
        self,
        inputs: dict[str, np.ndarray],
        rows: int,
        timeout: float | None = None,
        timing: list[int] | None = None,
    ) -> asyncio.Future[dict[str, np.ndarray]]:
        """Queue ``rows`` rows; the future resolves to this caller's slice of the outputs.

        It fails with ``DeadlineExceeded`` if the model has not answered within ``timeout``
        seconds (None: the caller bounds the wait itself). ``timing`` (tracing) receives the
        start and end, in ns since the epoch, of the model run that serves these rows.
        """
        if self._stopping:
            raise Overloaded(_UNLOADING)
        if rows > self.config.max_queue_rows:  # it never fits: a retry would not help
            raise PayloadTooLarge(
                f"a request of {rows} rows (more than the deployment's queue holds,"
                " max_queue_rows)",
                self.config.max_queue_rows,
            )
        if self._queued_rows + rows > self.config.max_queue_rows:
            raise Overloaded.full("the inference queue", retry_after_s=1.0)
        loop = self._loop
        assert loop is not None, "BatchQueue.start() was not called"
        future: asyncio.Future[dict[str, np.ndarray]] = loop.create_future()
        deadline = math.inf if timeout is None else loop.time() + timeout
        self._queue.append(_Pending(inputs, rows, future, deadline, timeout or 0.0, timing))
        if timing is not None:
            self._timed += 1
        self._queued_rows += rows
        assert self._wakeup is not None
        self._wakeup.set()
        # While a batch is on the thread the timer is armed for the earliest pending deadline;
        # this one may be sooner (or the only one).
        timer = self._timer
        if self._running and timeout is not None and (timer is None or deadline < timer.when()):
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(deadline, self._expire, loop)
        return future

    async def run_now(
        self, inputs: dict[str, np.ndarray], rows: int, timing: list[int] | None = None
    ) -> dict[str, np.ndarray] | None:
        """Run these rows right away on the event loop when they are alone — nothing queued or
        running, no other request arriving in the same turn of the loop — and the model's
        measured cost fits the inline budget; None otherwise (then :meth:`submit`). At low load
        this skips the hand-off to the worker task, which costs more than a small model's run;
        requests that arrive together still queue and share a batch."""
        if not self.may_run_now(rows):
            return None
        # One turn of the loop lets requests read in the same turn reach this point too: if
        # any did, everyone queues and they share a batch.
        others = self._arriving  # already looking around when this one came
        self._arriving += 1
        try:
            await asyncio.sleep(0)
            alone = others == 0 and self._arriving == 1
        finally:
            self._arriving -= 1
        if not alone or not self.may_run_now(rows):
            return None
        loop = self._loop
        assert loop is not None
        started = loop.time()
        started_ns = time.time_ns() if timing is not None else 0
        try:
            outputs = self._timed_predict(inputs, rows)
        except SlipwayError:
            raise
        except Exception as exc:  # a model bug fails this request, like a batch's
            raise InferenceFailed(f"model raised {type(exc).__name__}: {exc}") from exc
        finally:
            self.stats.batches += 1
            self.stats.rows += rows
            self.stats.sizes[rows] += 1
            self.stats.inline_batches += 1
            self.stats.last_batch_requests = 1
            if self.observer is not None:
                self.observer(rows, [0.0], loop.time() - started)
        if timing is not None:
            timing += (started_ns, time.time_ns())
        return outputs

    def may_run_now(self, rows: int) -> bool:
        """Whether :meth:`run_now` may run these rows now, before its look-around (a caller
        under load skips making its coroutine)."""
        cost = self.cost_per_row_s
        return not (
            cost is None
            or self.stats.last_batch_requests > 1  # under load: batches are the better deal
            or cost * rows > self.inline_budget_s
            or self._queue
            or self._running
            or self._task is None
            or self._stopping
            or rows > self.config.max_batch_size
        )

    # -- the worker ------------------------------------------------------------------------

    def _take(self) -> list[_Pending]:
        batch: list[_Pending] = []
        rows = 0
        limit = self.config.max_batch_size
        while self._queue:
            head = self._queue[0]
            if batch and rows + head.rows > limit:
                break
            self._queue.popleft()
            if head.future.done():  # caller gave up (timeout): drop its rows
                self._queued_rows -= head.rows
                continue
            batch.append(head)
            rows += head.rows
        self._queued_rows -= rows
        return batch

    async def _gather(self, loop: asyncio.AbstractEventLoop) -> None:
        """Under load, let requests already on their way join, for as long as the queue grows."""
        delay = self.config.max_batch_delay_ms / 1000.0
        if delay <= 0 or self.stats.last_batch_requests <= 1:
            return
        deadline = loop.time() + delay
        seen = len(self._queue)
        while self._queued_rows < self.config.max_batch_size and loop.time() < deadline:
            # Two passes: one reads the sockets, the next runs the new requests' handlers.
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            if len(self._queue) == seen:
                return
            seen = len(self._queue)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wakeup is not None
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            await self._gather(loop)
            batch = self._take()
            if not batch:
                continue
            self.stats.last_batch_requests = len(batch)
            rows = sum(p.rows for p in batch)
            started = loop.time()
            timed = [p.timing for p in batch if p.timing is not None] if self._timed else None
            if timed:
                self._timed = max(0, self._timed - len(timed))
                started_ns = time.time_ns()
            try:
                if len(batch) == 1:
                    inputs = batch[0].inputs
                else:
                    names = batch[0].inputs.keys()
                    inputs = {n: np.concatenate([p.inputs[n] for p in batch]) for n in names}
                cost = self.cost_per_row_s
                if cost is not None and cost * rows <= self.inline_budget_s:
                    outputs = self._timed_predict(inputs, rows)
                    self.stats.inline_batches += 1
                else:
                    outputs = await self._on_thread(loop, batch, inputs, rows)
                if timed:
                    ended_ns = time.time_ns()
                    for timing in timed:
                        timing += (started_ns, ended_ns)
                self._deliver(batch, outputs)
            except SlipwayError as exc:
                self._fail(batch, exc)
            except Exception as exc:  # a model bug must fail its requests, not the worker
                self._fail(batch, InferenceFailed(f"model raised {type(exc).__name__}: {exc}"))
            self.stats.batches += 1
            self.stats.rows += rows
            self.stats.sizes[rows] += 1
            if self.observer is not None:  # queued at deadline - timeout
                waits = [started - p.deadline + p.timeout for p in batch if p.timeout]
                self.observer(rows, waits, loop.time() - started)

    def _timed_predict(self, inputs: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        # CPU time of the calling thread, on the loop and on the inference thread alike: wall
        # time would count waits for the GIL (up to the 5 ms switch interval while the loop is
        # busy) and the machine's other work, and make a fast model look slow. With intra-op
        # threads (onnx_threads > 1) it sees only the caller's share.
        started = time.thread_time()
        outputs = self._predict(inputs)
        per_row = (time.thread_time() - started) / rows
        average = self._average_per_row_s
        average = per_row if average is None else average + _COST_WEIGHT * (per_row - average)
        self._average_per_row_s = average
        # The running average, unless the last batch was cheaper: one slow batch moves the
        # model off the loop for a while, one slow start (a first call) does not keep it off.
        self.cost_per_row_s = min(average, per_row)
        return outputs

    async def _on_thread(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[_Pending],
        inputs: dict[str, np.ndarray],
        rows: int,
    ) -> dict[str, np.ndarray]:
        self._running = batch
        self._arm(loop)
        try:
            return await loop.run_in_executor(self._executor, self._timed_predict, inputs, rows)
        finally:
            self._running = []
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    # -- deadlines -------------------------------------------------------------------------

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        """Time the earliest deadline among the batch on the thread and the queue."""
        earliest = min((p.deadline for p in (*self._running, *self._queue)), default=math.inf)
        if earliest != math.inf:
            self._timer = loop.call_at(earliest, self._expire, loop)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time()
        following = math.inf
        for pending in [*self._running, *self._queue]:
            if pending.future.done():
                continue
            if pending.deadline <= now:
                pending.future.set_exception(DeadlineExceeded(pending.timeout))
            elif pending.deadline < following:
                following = pending.deadline
        # Callers that timed out in the queue give their rows back now: behind a hung batch,
        # requests nobody waits for would otherwise keep the queue full and refuse new ones.
        if any(p.future.done() for p in self._queue):
            self._queued_rows -= sum(p.rows for p in self._queue if p.future.done())
            self._queue = collections.deque(p for p in self._queue if not p.future.done())
        if self._running and following != math.inf:
            self._timer = loop.call_at(following, self._expire, loop)

    # -- results ---------------------------------------------------------------------------

    @staticmethod
    def _deliver(batch: list[_Pending], outputs: dict[str, np.ndarray]) -> None:
        if len(batch) == 1:
            if not batch[0].future.done():
                batch[0].future.set_result(outputs)
            return
        start = 0
        for pending in batch:
            end = start + pending.rows
            if not pending.future.done():
                pending.future.set_result({k: v[start:end] for k, v in outputs.items()})
            start = end

    @staticmethod
    def _fail(batch: list[_Pending], exc: BaseException) -> None:
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(exc)
