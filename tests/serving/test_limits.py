"""Limits: body size, rows, timeouts, queue depth. Each refusal is JSON and the server goes on."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator

import httpx

from slipway.local import Registry
from slipway.registry.records import BatchingConfig
from slipway.server import BackgroundServer
from slipway.serving.app import SlipwayApp
from slipway.serving.repository import ModelRepository

from .conftest import make_settings
from .test_v2 import v2_body


def test_body_over_limit_by_content_length(tmp_path, registry, cancer) -> None:
    settings = make_settings(registry.settings.home, max_body_bytes=2000)
    with BackgroundServer(settings) as server, httpx.Client(base_url=server.url) as http:
        big = v2_body(cancer[0][:50])
        response = http.post("/v2/models/cancer-prod/infer", json=big)
        assert response.status_code == 413
        assert "limit of 2000" in response.json()["error"]
        assert (
            http.post("/v2/models/cancer-prod/infer", json=v2_body(cancer[0][:1])).status_code
            == 200
        )


def test_body_over_limit_chunked(registry) -> None:
    settings = make_settings(registry.settings.home, max_body_bytes=5000)

    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b" " * 1000

    with BackgroundServer(settings) as server, httpx.Client(base_url=server.url) as http:
        response = http.post("/v2/models/cancer-prod/infer", content=chunks())
        assert response.status_code == 413


def test_max_rows(registry, cancer) -> None:
    settings = make_settings(registry.settings.home, max_rows=10)
    with BackgroundServer(settings) as server, httpx.Client(base_url=server.url) as http:
        response = http.post("/v2/models/cancer-prod/infer", json=v2_body(cancer[0][:11]))
        assert response.status_code == 413 and "rows" in response.json()["error"]
        response = http.post("/predict/cancer-prod", json={"instances": cancer[0][:11].tolist()})
        assert response.status_code == 413
        assert (
            http.post(
                "/predict/cancer-prod", json={"instances": cancer[0][:10].tolist()}
            ).status_code
            == 200
        )


class SlowRuntime:
    """A model that takes ``delay`` seconds per batch: the real ONNX runtime behind a sleep."""

    def __init__(self, inner, delay: float, release: threading.Event | None = None) -> None:
        self.inner, self.delay, self.release = inner, delay, release
        self.signature = inner.signature
        self.batches: list[int] = []
        self.calls: list[float] = []  # when each batch entered the model

    def predict(self, inputs):
        self.calls.append(time.monotonic())
        if self.release is not None:
            self.release.wait(self.delay)
        else:
            time.sleep(self.delay)
        self.batches.append(len(next(iter(inputs.values()))))
        return self.inner.predict(inputs)

    def unload(self) -> None:
        self.inner.unload()


def slow_server(
    registry: Registry, delay: float, runtimes: list, **settings_overrides
) -> BackgroundServer:
    settings = make_settings(registry.settings.home, **settings_overrides)
    repository = ModelRepository(registry.store, registry.artifacts)
    real_loader = repository._load_from_store

    def loader(record):
        runtime = SlowRuntime(real_loader(record), delay)
        runtimes.append(runtime)
        return runtime

    repository._loader = loader
    app = SlipwayApp(
        settings, store=registry.store, artifacts=registry.artifacts, repository=repository
    )
    return BackgroundServer(settings, app=app)


def test_timeout_gives_504_and_server_recovers(registry, cancer) -> None:
    runtimes: list[SlowRuntime] = []
    server = slow_server(registry, 0.0, runtimes, request_timeout_s=0.3)
    with server, httpx.Client(base_url=server.url, timeout=10) as http:
        assert (
            http.post("/v2/models/cancer-prod/infer", json=v2_body(cancer[0][:1])).status_code
            == 200
        )
        runtimes[0].delay = 1.0
        response = http.post("/v2/models/cancer-prod/infer", json=v2_body(cancer[0][:1]))
        assert response.status_code == 504
        assert "within 0.3s" in response.json()["error"]
        runtimes[0].delay = 0.0
        time.sleep(1.0)
        assert (
            http.post("/v2/models/cancer-prod/infer", json=v2_body(cancer[0][:1])).status_code
            == 200
        )


def test_full_queue_rejects_exactly_the_excess_with_retry_after(registry, cancer) -> None:
    registry.store.update_deployment(
        "cancer-prod",
        batching=BatchingConfig(max_batch_size=1, max_batch_delay_ms=0, max_queue_rows=4),
    )
    runtimes: list[SlowRuntime] = []
    with slow_server(registry, 0.0, runtimes) as server:
        body = v2_body(cancer[0][:1])
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.post("/v2/models/cancer-prod/infer", json=body).status_code == 200
        model = runtimes[0]
        model.release, model.delay = threading.Event(), 30.0

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(
                base_url=server.url, timeout=30, limits=httpx.Limits(max_connections=20)
            ) as client:
                calls = len(model.calls)
                first = asyncio.ensure_future(
                    client.post("/v2/models/cancer-prod/infer", json=body)
                )
                while len(model.calls) == calls:  # wait until the first is inside the model
                    await asyncio.sleep(0.01)
                rest = [
                    asyncio.ensure_future(client.post("/v2/models/cancer-prod/infer", json=body))
                    for _ in range(10)
                ]
                with contextlib.suppress(TimeoutError):  # too few refusals: the assert says so
                    async with asyncio.timeout(10):
                        while sum(task.done() for task in rest) < 6:  # refusals come at once
                            await asyncio.sleep(0.01)
                model.release.set()
                return [await first, *await asyncio.gather(*rest)]

        responses = asyncio.run(burst())
        statuses = sorted(r.status_code for r in responses)
        # one running + 4 queued succeed; the other 6 are refused at once
        assert statuses == [200] * 5 + [503] * 6, statuses
        refused = [r for r in responses if r.status_code == 503]
        assert all(r.headers["retry-after"] == "1" for r in refused)
        assert "full" in refused[0].json()["error"]


def test_a_request_larger_than_the_whole_queue_is_a_413_not_a_retry(registry, cancer) -> None:
    """More rows than the deployment's queue can ever hold got 503 'full; retry after 1s' (a
    retry never helps)."""
    registry.store.update_deployment(
        "cancer-prod", batching=BatchingConfig(max_batch_size=4, max_queue_rows=4)
    )
    settings = make_settings(registry.settings.home)
    with BackgroundServer(settings) as server, httpx.Client(base_url=server.url) as http:
        for _ in range(3):
            response = http.post("/v2/models/cancer-prod/infer", json=v2_body(cancer[0][:5]))
            assert response.status_code == 413, response.text
            assert "retry-after" not in response.headers
            assert "max_queue_rows" in response.json()["error"]
        ok = http.post("/v2/models/cancer-prod/infer", json=v2_body(cancer[0][:4]))
        assert ok.status_code == 200, ok.text


def test_concurrent_requests_are_batched_and_each_gets_its_rows(
    registry, cancer, cancer_models
) -> None:
    registry.store.update_deployment(
        "cancer-prod",
        batching=BatchingConfig(max_batch_size=64, max_batch_delay_ms=2, max_queue_rows=1000),
    )
    runtimes: list[SlowRuntime] = []
    x, _ = cancer
    expected = cancer_models[0].predict(x[:40])
    with slow_server(registry, 0.0, runtimes) as server:
        with httpx.Client(base_url=server.url) as http:
            http.post("/v2/models/cancer-prod/infer", json=v2_body(x[:1]))
        runtimes[0].delay = 0.05

        async def many() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                return await asyncio.gather(
                    *[
                        client.post(
                            "/v2/models/cancer-prod/infer", json=v2_body(x[i : i + 1 + (i % 2)])
                        )
                        for i in range(0, 40, 2)
                    ]
                )

        responses = asyncio.run(many())
    for i, response in zip(range(0, 40, 2), responses, strict=True):
        assert response.status_code == 200
        labels = response.json()["outputs"][0]["data"]
        assert labels == expected[i : i + 1 + (i % 2)].tolist()
    batches = runtimes[0].batches[1:]
    assert sum(batches) == sum(1 + (i % 2) for i in range(0, 40, 2))
    assert len(batches) < 20, batches  # requests shared batches


def test_model_that_raises_fails_only_that_request(registry, cancer) -> None:
    runtimes: list[SlowRuntime] = []
    with slow_server(registry, 0.0, runtimes) as server, httpx.Client(base_url=server.url) as http:
        inner_predict = runtimes[0].inner.predict

        def broken(inputs):
            if float(next(iter(inputs.values()))[0, 0]) < 0:
                raise RuntimeError("boom")
            return inner_predict(inputs)

        runtimes[0].inner.predict = broken
        bad = cancer[0][:1].copy()
        bad[0, 0] = -1
        response = http.post("/v2/models/cancer-prod/infer", json=v2_body(bad))
        assert response.status_code == 500
        assert "boom" in response.json()["error"]
        assert (
            http.post("/v2/models/cancer-prod/infer", json=v2_body(cancer[0][:1])).status_code
            == 200
        )


def test_not_ready_until_loaded(registry) -> None:
    gate = threading.Event()
    settings = make_settings(registry.settings.home)
    repository = ModelRepository(registry.store, registry.artifacts)
    real_loader = repository._load_from_store

    def loader(record):
        gate.wait(10)
        return real_loader(record)

    repository._loader = loader
    app = SlipwayApp(
        settings, store=registry.store, artifacts=registry.artifacts, repository=repository
    )
    server = BackgroundServer(settings, app=app)
    thread = threading.Thread(target=server.start)
    thread.start()
    try:
        time.sleep(0.3)
        # uvicorn finishes startup only after the first reconcile; until then nothing answers
        assert not server.server.started
        gate.set()
        thread.join(10)
        with httpx.Client(base_url=server.url) as http:
            assert http.get("/v2/health/ready").status_code == 200
    finally:
        gate.set()
        thread.join(10)
        server.stop()


def test_corrupt_artifact_refused_other_deployments_serve(registry, cancer) -> None:
    # break version 2's artifact, deploy it elsewhere: readiness says why, cancer-prod serves
    record = registry.store.get_version("cancer", 2)
    path = registry.artifacts.path(record.digest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    registry.store.create_deployment("cancer-next", "cancer", 2)
    settings = make_settings(registry.settings.home)
    with BackgroundServer(settings) as server, httpx.Client(base_url=server.url) as http:
        ready = http.get("/v2/health/ready")
        assert ready.status_code == 503
        assert any(
            "cancer@2" in reason and "verification" in reason for reason in ready.json()["reasons"]
        )
        assert (
            http.post("/v2/models/cancer-prod/infer", json=v2_body(cancer[0][:1])).status_code
            == 200
        )
        assert (
            http.post("/v2/models/cancer-next/infer", json=v2_body(cancer[0][:1])).status_code
            == 503
        )
