"""Graceful shutdown of a real `slipway serve`: SIGTERM with requests in flight on a genuinely
slow model. Readiness turns false at once, new requests are refused, the in-flight ones
complete with their answers, and the process exits within the drain timeout."""

from __future__ import annotations

import re
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from slipway.local import Registry
from slipway.registry.records import BatchingConfig

from ..serving.test_v2 import v2_body
from .conftest import ServeProcess, make_settings, wait_for
from .models import write_slow_onnx

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

REQUEST_TIMEOUT_S = 20
DRAIN_S = REQUEST_TIMEOUT_S + 5  # Settings.drain_s


def _in_flight(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    found = re.findall(
        r'^slipway_in_flight_requests\{[^}]*deployment="slow"[^}]*\} (\S+)', text, re.M
    )
    return sum(float(v) for v in found)


def _not_ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 503
    except httpx.TransportError:  # the listening socket is closed: a probe fails, too
        return True


def test_sigterm_drains_in_flight_requests(tmp_path: Path, cancer) -> None:
    home = tmp_path / "home"
    with Registry(make_settings(home)) as registry:
        registry.register_onnx("slow", write_slow_onnx(tmp_path / "slow.onnx", products=16))
        registry.store.create_deployment(
            "slow",
            "slow",
            1,
            batching=BatchingConfig(max_batch_size=1, max_batch_delay_ms=0, max_queue_rows=64),
        )
    server = ServeProcess(home, SLIPWAY_REQUEST_TIMEOUT_S=str(REQUEST_TIMEOUT_S)).wait_ready()
    body = v2_body(cancer[0][:1])
    results: list[int | str] = []

    def call() -> None:
        try:
            response = httpx.post(f"{server.url}/v2/models/slow/infer", json=body, timeout=60)
            results.append(response.status_code)
        except httpx.HTTPError as exc:
            results.append(type(exc).__name__)

    try:
        assert httpx.post(f"{server.url}/v2/models/slow/infer", json=body, timeout=60).is_success
        threads = [threading.Thread(target=call) for _ in range(4)]
        for thread in threads:
            thread.start()
        wait_for(lambda: _in_flight(server.url) >= 4, what="four requests in flight")
        server.process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        wait_for(lambda: _not_ready(server.url), timeout=1.0, what="readiness to turn false")
        with pytest.raises(httpx.TransportError):  # new requests are refused
            httpx.post(f"{server.url}/v2/models/slow/infer", json=body, timeout=5)
        for thread in threads:
            thread.join(DRAIN_S)
        server.process.wait(DRAIN_S)
        exited = time.monotonic() - sent
    finally:
        server.kill()
    assert results == [200] * 4, results
    assert exited < DRAIN_S, exited
    # uvicorn re-raises the signal after its graceful shutdown
    assert server.process.returncode in (0, -signal.SIGTERM)
