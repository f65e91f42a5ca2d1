"""Overload: a slow model behind a bounded queue refuses exactly what does not fit, with
Retry-After, and the server's memory and file descriptors stay flat over many bursts; a request
past its deadline gets 504 and gives its queue slot back at once.

tests/serving/test_limits.py already proves the exact count of refusals (one running + four
queued succeed, six refused); these add the real slow model in its own process and the slot."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import httpx
import pytest

from slipway.local import Registry
from slipway.registry.records import BatchingConfig

from ..serving.test_limits import SlowRuntime, slow_server
from ..serving.test_v2 import v2_body
from .conftest import ServeProcess, fd_count, make_settings, rss_mib, socket_count, wait_for
from .models import write_slow_onnx

pytestmark = pytest.mark.reliability


def test_a_request_past_its_deadline_gives_its_queue_slot_back(registry, cancer) -> None:
    """Behind a hung batch, queued requests that timed out must not keep the queue full."""
    registry.store.update_deployment(
        "cancer-prod",
        batching=BatchingConfig(max_batch_size=1, max_batch_delay_ms=0, max_queue_rows=2),
    )
    runtimes: list[SlowRuntime] = []
    body = v2_body(cancer[0][:1])
    with slow_server(registry, 0.0, runtimes, request_timeout_s=0.5) as server:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.post("/v2/models/cancer-prod/infer", json=body).status_code == 200
        model = runtimes[0]
        model.release, model.delay = threading.Event(), 30.0  # hangs until released

        async def scenario() -> tuple[list[int], list[int]]:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                calls = len(model.calls)
                hung = asyncio.ensure_future(client.post("/v2/models/cancer-prod/infer", json=body))
                while len(model.calls) == calls:  # the hung batch is in the model
                    await asyncio.sleep(0.01)
                queued = [client.post("/v2/models/cancer-prod/infer", json=body) for _ in range(2)]
                first = [r.status_code for r in await asyncio.gather(hung, *queued)]
                # The model still hangs; the two queued callers are gone: their slots are free.
                again = [
                    asyncio.ensure_future(client.post("/v2/models/cancer-prod/infer", json=body))
                    for _ in range(2)
                ]
                await asyncio.sleep(0.2)
                done_early = [t.result().status_code for t in again if t.done()]
                model.release.set()
                await asyncio.gather(*again)
                return first, done_early

        first, refused_at_once = asyncio.run(scenario())
        assert first == [504, 504, 504]
        assert refused_at_once == [], "timed-out requests kept the queue full (503)"
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.post("/v2/models/cancer-prod/infer", json=body).status_code == 200


@pytest.mark.slow
def test_a_slow_model_under_repeated_overload_keeps_memory_and_fds_flat(
    tmp_path: Path, cancer
) -> None:
    home = tmp_path / "home"
    with Registry(make_settings(home)) as registry:
        registry.register_onnx("slow", write_slow_onnx(tmp_path / "slow.onnx", products=8))
        registry.store.create_deployment(
            "slow",
            "slow",
            1,
            batching=BatchingConfig(max_batch_size=1, max_batch_delay_ms=0, max_queue_rows=4),
        )
    server = ServeProcess(home).wait_ready()
    body = v2_body(cancer[0][:1])

    async def burst(n: int) -> list[httpx.Response]:
        async with httpx.AsyncClient(
            base_url=server.url, timeout=60, limits=httpx.Limits(max_connections=n)
        ) as client:
            return list(
                await asyncio.gather(
                    *[client.post("/v2/models/slow/infer", json=body) for _ in range(n)]
                )
            )

    try:
        asyncio.run(burst(20))  # warm-up: allocator pools, first batches, database connections
        rss_warm = rss_mib(server.pid)
        fds_warm, sockets_warm = fd_count(server.pid), socket_count(server.pid)
        ok = refused = 0
        for _ in range(8):
            for response in asyncio.run(burst(20)):
                assert response.status_code in (200, 503), response.text
                if response.status_code == 503:
                    assert response.headers["retry-after"] == "1"
                    assert "full" in response.json()["error"]
                    refused += 1
                else:
                    ok += 1
        rss_after = rss_mib(server.pid)
        print(
            f"overload: {ok} served, {refused} refused; RSS {rss_warm:.1f} -> {rss_after:.1f} MiB"
        )
        # the queue holds four (five when the worker took the first before the others came):
        # each burst has at least four successes; the rest are refused at once
        assert ok >= 8 * 4 and refused >= 8 * 10, (ok, refused)
        assert rss_after - rss_warm < 20, (rss_warm, rss_after)
        # Every client connection is closed again; the registry's connection pool may have
        # grown by a connection or two (with SQLite's journal files), which is bounded.
        wait_for(
            lambda: socket_count(server.pid) <= sockets_warm + 2,
            timeout=10,
            what=f"sockets released (warm {sockets_warm}, now {socket_count(server.pid)})",
        )
        assert fd_count(server.pid) <= fds_warm + 12, (fds_warm, fd_count(server.pid))
    finally:
        server.stop()
