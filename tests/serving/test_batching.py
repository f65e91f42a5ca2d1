"""The batch queue on its own: where batches run (event loop or thread), waiting, deadlines."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest

from slipway.errors import DeadlineExceeded, Overloaded
from slipway.local import Registry
from slipway.registry.records import BatchingConfig
from slipway.runtimes.base import Runtime, load_runtime
from slipway.serving.batching import BatchQueue
from slipway.serving.repository import warmup_inputs

BUDGET_S = 0.0005  # the default inline_batch_max_ms


class Model:
    """The real ONNX model behind extra work: ``delay`` seconds of CPU per batch (numpy, which
    releases the GIL as a real runtime does), or a hang until ``release`` is set."""

    def __init__(self, inner: Runtime) -> None:
        self.inner = inner
        self.delay = 0.0
        self.release: threading.Event | None = None
        self.threads: list[str] = []
        self.clock: Callable[[], int] | None = None  # read before and after each batch
        self.readings: list[tuple[int, int]] = []
        self._matrix = np.random.default_rng(0).random((200, 200))

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.threads.append(threading.current_thread().name)
        before = self.clock() if self.clock else 0
        if self.release is not None:
            self.release.wait(30)
        started = time.thread_time()
        while time.thread_time() - started < self.delay:
            self._matrix @ self._matrix
        if self.clock:
            self.readings.append((before, self.clock()))
        return self.inner.predict(inputs)


@pytest.fixture
def model(registry: Registry) -> Model:
    record = registry.store.get_version("cancer", 1)
    runtime = load_runtime(record.format, registry.artifacts.verified_path(record.digest))
    runtime.predict(warmup_inputs(record.signature))  # as the repository does before serving
    return Model(runtime)


def run_with_queue(
    model: Model,
    body: Callable[[BatchQueue], Awaitable[Any]],
    *,
    config: BatchingConfig | None = None,
    budget: float = BUDGET_S,
) -> Any:
    async def main() -> Any:
        queue = BatchQueue(model.predict, config or BatchingConfig(), inline_budget_s=budget)
        queue.start()
        try:
            return await body(queue)
        finally:
            await queue.stop()

    return asyncio.run(main())


def test_a_fast_model_runs_on_the_event_loop_after_its_first_batch(
    model: Model, cancer, cancer_models
) -> None:
    x, _ = cancer

    async def body(queue: BatchQueue) -> list[np.ndarray]:
        return [(await queue.submit({"input": x[i : i + 1]}, 1, 10.0))["label"] for i in range(20)]

    labels = run_with_queue(model, body)
    assert np.concatenate(labels).tolist() == cancer_models[0].predict(x[:20]).tolist()
    # The first batch is measured on the thread; the rest fit the budget and run inline (a
    # pause of the machine while measuring may send one or two more to the thread).
    assert model.threads[0].startswith("infer")
    assert model.threads[1:].count(threading.main_thread().name) >= 16, model.threads


def test_a_slow_model_stays_off_the_event_loop(model: Model, cancer) -> None:
    x, _ = cancer
    model.delay = 0.05

    async def body(queue: BatchQueue) -> None:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        task = asyncio.get_running_loop().create_task(ticker())
        model.clock = lambda: ticks
        for i in range(4):
            await queue.submit({"input": x[i : i + 1]}, 1, 10.0)
        task.cancel()
        assert queue.stats.inline_batches == 0

    run_with_queue(model, body)
    assert all(name.startswith("infer") for name in model.threads)
    # The loop kept running while the model worked 50 ms on each batch.
    assert all(after > before for before, after in model.readings), model.readings


def test_a_model_that_turns_slow_moves_to_the_thread(model: Model, cancer) -> None:
    x, _ = cancer

    async def body(queue: BatchQueue) -> None:
        for i in range(3):
            await queue.submit({"input": x[i : i + 1]}, 1, 10.0)
        assert queue.stats.inline_batches == 2
        model.delay = 0.005
        for i in range(3):
            await queue.submit({"input": x[i : i + 1]}, 1, 10.0)
        # One slow batch ran inline before it was measured; the estimate then moves it off.
        assert queue.stats.inline_batches == 3

    run_with_queue(model, body)
    assert [name.startswith("infer") for name in model.threads[-2:]] == [True, True]


def test_inline_off_when_the_budget_is_zero(model: Model, cancer) -> None:
    x, _ = cancer

    async def body(queue: BatchQueue) -> None:
        for i in range(3):
            await queue.submit({"input": x[i : i + 1]}, 1, 10.0)
        assert queue.stats.inline_batches == 0

    run_with_queue(model, body, budget=0.0)


def test_requests_arriving_together_share_one_inline_batch(
    model: Model, cancer, cancer_models
) -> None:
    x, _ = cancer

    async def body(queue: BatchQueue) -> list[dict[str, np.ndarray]]:
        await queue.submit({"input": x[:1]}, 1, 10.0)  # measured on the thread
        futures = [queue.submit({"input": x[i : i + 2]}, 2, 10.0) for i in range(0, 20, 2)]
        results = await asyncio.gather(*futures)
        assert queue.stats.sizes[20] == 1 and queue.stats.inline_batches == 1
        return results

    results = run_with_queue(model, body, budget=1.0)  # generous: a loaded machine is slow
    expected = cancer_models[0].predict(x[:20])
    for i, result in zip(range(0, 20, 2), results, strict=True):
        assert result["label"].tolist() == expected[i : i + 2].tolist()


def test_a_lone_request_after_a_batch_does_not_wait_the_batch_delay(model: Model, cancer) -> None:
    x, _ = cancer
    config = BatchingConfig(max_batch_delay_ms=500)

    async def body(queue: BatchQueue) -> float:
        await queue.submit({"input": x[:1]}, 1, 10.0)
        await asyncio.gather(*[queue.submit({"input": x[:1]}, 1, 10.0) for _ in range(4)])
        assert queue.stats.last_batch_requests == 4  # under load: the next batch may gather
        started = time.monotonic()
        await queue.submit({"input": x[:1]}, 1, 10.0)
        return time.monotonic() - started

    # Nothing else arrives, so the worker must not sit out the 500 ms delay.
    assert run_with_queue(model, body, config=config) < 0.1


def test_requests_behind_a_hung_batch_time_out(model: Model, cancer) -> None:
    x, _ = cancer

    async def body(queue: BatchQueue) -> list[BaseException | None]:
        await queue.submit({"input": x[:1]}, 1, 10.0)
        model.release = threading.Event()
        running = queue.submit({"input": x[:1]}, 1, 0.2)
        while len(model.threads) < 2:  # wait until the batch is inside the model
            await asyncio.sleep(0.005)
        queued = queue.submit({"input": x[:1]}, 1, 0.2)
        started = time.monotonic()
        outcomes = await asyncio.gather(running, queued, return_exceptions=True)
        elapsed = time.monotonic() - started
        model.release.set()
        assert elapsed < 5
        return [o if isinstance(o, BaseException) else None for o in outcomes]

    # Budget 0: the hang is on the thread, where a deadline can still fire.
    outcomes = run_with_queue(model, body, budget=0.0)
    assert all(isinstance(o, DeadlineExceeded) for o in outcomes), outcomes
    assert "within 0.2s" in str(outcomes[0])


def test_stopping_fails_the_batch_on_the_thread_and_the_queue(model: Model, cancer) -> None:
    x, _ = cancer

    async def body(queue: BatchQueue) -> list[BaseException | dict[str, np.ndarray]]:
        model.release = threading.Event()
        running = queue.submit({"input": x[:1]}, 1, 10.0)
        while not model.threads:  # wait until the batch is inside the model
            await asyncio.sleep(0.005)
        queued = queue.submit({"input": x[:1]}, 1, 10.0)
        await queue.stop()  # unloading: nobody may wait for the full timeout
        model.release.set()
        return list(await asyncio.gather(running, queued, return_exceptions=True))

    outcomes = run_with_queue(model, body, budget=0.0)
    assert [type(o).__name__ for o in outcomes] == ["Overloaded", "Overloaded"]


def test_requests_reaching_a_stopping_or_stopped_queue_are_refused_not_left_waiting(
    model: Model, cancer
) -> None:
    """A request routed to a version in the middle of unloading (a rollout that just ended)
    gets a 503 at once: it used to join a queue nobody would ever run, and hang."""
    x, _ = cancer

    async def body(queue: BatchQueue) -> list[BaseException | dict[str, np.ndarray]]:
        loop = asyncio.get_running_loop()

        def attempt() -> asyncio.Future[dict[str, np.ndarray]]:
            try:
                return queue.submit({"input": x[:1]}, 1, 10.0)
            except Overloaded as exc:
                refused: asyncio.Future[dict[str, np.ndarray]] = loop.create_future()
                refused.set_exception(exc)
                return refused

        model.release = threading.Event()
        running = attempt()
        while not model.threads:  # wait until the batch is inside the model
            await asyncio.sleep(0.005)
        stopping = asyncio.ensure_future(queue.stop())
        await asyncio.sleep(0)  # stop() now waits for the worker to end
        during = attempt()
        await stopping
        after = attempt()
        model.release.set()
        return list(
            await asyncio.wait_for(
                asyncio.gather(running, during, after, return_exceptions=True), 5
            )
        )

    outcomes = run_with_queue(model, body, budget=0.0)
    assert [type(o).__name__ for o in outcomes] == ["Overloaded"] * 3
    assert all("unloading" in str(o) for o in outcomes)


def test_the_server_runs_a_fast_onnx_model_inline(server, http, cancer, cancer_models) -> None:
    x, _ = cancer
    for i in range(5):
        body = {"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32"}]}
        body["inputs"][0]["data"] = x[i].tolist()
        response = http.post("/v2/models/cancer-prod/infer", json=body)
        assert (
            response.json()["outputs"][0]["data"] == cancer_models[0].predict(x[i : i + 1]).tolist()
        )
    queue = server.app.repository.loaded[("cancer", 1)].queue
    assert queue.inline_budget_s == 0.0005  # the default setting, for an ONNX model on the CPU
    assert queue.stats.inline_batches >= 3


def test_a_lone_cheap_request_runs_at_once_and_a_busy_or_slow_queue_defers(
    model: Model, cancer, cancer_models
) -> None:
    x, _ = cancer

    async def body(queue: BatchQueue) -> None:
        await queue.submit({"input": x[:1]}, 1, 10.0)  # measured cheap
        outputs = await queue.run_now({"input": x[:2]}, 2)  # alone and cheap: inline, now
        assert outputs is not None
        np.testing.assert_array_equal(outputs["label"], cancer_models[0].predict(x[:2]))
        assert model.threads[-1] == threading.current_thread().name
        waiting = queue.submit({"input": x[:1]}, 1, 10.0)
        assert await queue.run_now({"input": x[:1]}, 1) is None  # others wait: join the queue
        await waiting
        # Requests arriving together queue and share a batch instead of running one by one.
        batches = queue.stats.batches
        together = await asyncio.gather(
            *(queue.run_now({"input": x[i : i + 1]}, 1) for i in range(8))
        )
        assert together == [None] * 8 and queue.stats.batches == batches
        model.delay = 0.01  # measured slow now (a running average): the thread, never the loop
        for _ in range(6):
            await queue.submit({"input": x[:1]}, 1, 10.0)
        assert await queue.run_now({"input": x[:1]}, 1) is None

    run_with_queue(model, body, budget=0.005)
