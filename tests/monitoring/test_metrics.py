"""The /metrics page of a live server: every serving metric, promtool-clean, GPU absent not zero,
and several worker processes aggregated."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from slipway.monitoring.gpu import GpuCollector
from slipway.monitoring.metrics import ServingMetrics
from slipway.server import BackgroundServer

from ..auth import admin_headers
from .conftest import monitoring_settings, v2_body


def _families(text: str) -> set[str]:
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def _wait_for(http: httpx.Client, needle: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = http.get("/metrics").text
        if needle in text or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


def test_metrics_page_has_every_serving_metric_and_passes_promtool(
    http: httpx.Client, cancer, promtool: str
) -> None:
    x, _ = cancer
    for i in range(30):
        assert (
            http.post("/v2/models/cancer-prod/infer", json=v2_body(x[i : i + 3])).status_code == 200
        )
    http.post("/v2/models/cancer-prod/infer", json={"inputs": "bad"})
    http.post("/v2/models/nope/infer", json=v2_body(x[:1]))
    # Batch observers are attached by the monitoring loop; traffic after that is timed.
    time.sleep(0.5)
    for i in range(5):
        http.post("/v2/models/cancer-prod/infer", json=v2_body(x[i : i + 2]))
    text = _wait_for(http, "slipway_inference_duration_seconds_count")
    families = _families(text)
    for name in [
        "slipway_requests",
        "slipway_request_duration_seconds",
        "slipway_in_flight_requests",
        "slipway_inference_duration_seconds",
        "slipway_queue_wait_seconds",
        "slipway_batch_size_rows",
        "slipway_queue_depth_rows",
        "slipway_shadow_dropped",
        "slipway_side_queue_dropped",
        "slipway_drift_score",
        "slipway_rollout_weight",
        "process_cpu_seconds",
        "process_resident_memory_bytes",
    ]:
        assert any(f == name or f == name + "_total" for f in families), name
    assert (
        'slipway_requests_total{arm="stable",deployment="cancer-prod",outcome="ok",version="1"}'
        " 35.0" in text
    )
    assert 'outcome="client_error"' in text and 'deployment="_unknown"' in text
    assert 'slipway_rollout_weight{deployment="cancer-prod",version="1"} 1.0' in text
    assert 'slipway_in_flight_requests{deployment="cancer-prod",version="1"} 0.0' in text
    assert 'slipway_batch_size_rows_count{model="cancer",version="1"}' in text
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr


GIB = 1024**3


def test_gpu_metrics_of_a_live_server_come_from_nvml_and_pass_promtool(
    tmp_path: Path, registry, promtool: str, fake_nvml: str
) -> None:
    """The server loads the NVML library it is told to (two made-up GPUs, the second a MIG
    instance without utilisation) and reports what each device can say."""
    settings = monitoring_settings(tmp_path / "home", nvml_library=fake_nvml)
    assert registry.settings.home == settings.home
    with (
        BackgroundServer(settings) as server,
        httpx.Client(base_url=server.url, headers=admin_headers(settings)) as http,
    ):
        text = http.get("/metrics").text
    gpu = {
        (sample.name, sample.labels["gpu"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("slipway_gpu")
    }
    assert gpu == {
        ("slipway_gpu_utilization_ratio", "0"): 0.37,  # gpu 1 cannot say: absent, not zero
        ("slipway_gpu_memory_used_bytes", "0"): 2 * GIB,
        ("slipway_gpu_memory_total_bytes", "0"): 80 * GIB,
        ("slipway_gpu_memory_used_bytes", "1"): GIB,
        ("slipway_gpu_memory_total_bytes", "1"): 10 * GIB,
    }
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_gpu_metrics_of_every_worker_process_are_its_own(tmp_path: Path, fake_nvml: str) -> None:
    shared = tmp_path / "prom"
    shared.mkdir()
    metrics = ServingMetrics(process=False, gpu_library=fake_nvml, multiprocess_dir=str(shared))
    repository = type("R", (), {"loaded": {}, "deployments": {}})
    text = metrics.render(repository)[0].decode()
    assert 'slipway_gpu_memory_used_bytes{gpu="1"}' in text


def test_gpu_metrics_are_absent_not_zero_without_nvml(caplog) -> None:
    from slipway.monitoring import gpu

    for setting in ("off", "/nonexistent/libnvidia-ml.so.1", "libc.so.6"):
        collector = GpuCollector.from_setting(setting)
        assert not collector.available and collector.count == 0
        metrics = ServingMetrics(CollectorRegistry(), gpu_library=setting)
        assert not any(m.name.startswith("slipway_gpu") for m in metrics.registry.collect())
    assert "/nonexistent/libnvidia-ml.so.1 did not load" in caplog.text
    assert gpu._load_nvml(("libdefinitely-not-nvml.so.9",)) is None
    # The driver's own library, where this machine has one and a GPU.
    real = GpuCollector.from_setting()
    if real.available:
        readings = real.read()
        assert readings and all(
            r.utilization is None or 0.0 <= r.utilization <= 1.0 for r in readings
        )
        assert all(r.memory_used is None or 0 < r.memory_used <= r.memory_total for r in readings)


WORKER = """
import sys
from slipway.monitoring.metrics import ServingMetrics

class Loaded:
    class record:
        number = 1

m = ServingMetrics(process=False, gpu=False, multiprocess_dir=sys.argv[1])
for _ in range(int(sys.argv[2])):
    m.observe("dep", Loaded, "ok", 0.002)
m.drift_score.labels("dep", "1", "x0").set(float(sys.argv[3]))
m.observe_batch("model", 1, int(sys.argv[2]), [0.001] * int(sys.argv[2]), 0.002)
with m.in_flight_gauge("dep", Loaded).track_inprogress():
    pass
"""


def test_several_worker_processes_are_aggregated(tmp_path: Path) -> None:
    shared = tmp_path / "prom"
    shared.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(shared)}
    for count, score in ((3, 0.1), (4, 0.5)):
        subprocess.run(
            [sys.executable, "-c", WORKER, str(shared), str(count), str(score)],
            env=env,
            check=True,
            timeout=60,
        )
    reader = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys;from slipway.monitoring.metrics import ServingMetrics;"
            "m=ServingMetrics(process=False,gpu=False,multiprocess_dir=sys.argv[1]);"
            "r=type('R',(),{'loaded':{},'deployments':{}});"
            "sys.stdout.write(m.render(r)[0].decode())",
            str(shared),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    text = reader.stdout
    assert (
        'slipway_requests_total{arm="stable",deployment="dep",outcome="ok",version="1"} 7.0' in text
    )
    assert (
        'slipway_request_duration_seconds_count{arm="stable",deployment="dep",version="1"} 7.0'
        in text
    )
    assert 'slipway_drift_score{deployment="dep",feature="x0",version="1"} 0.5' in text
    # The batch worker's histograms are summed over processes too (one batch each).
    assert 'slipway_batch_size_rows_count{model="model",version="1"} 2.0' in text
    assert 'slipway_batch_size_rows_sum{model="model",version="1"} 7.0' in text
    assert 'slipway_queue_wait_seconds_count{model="model",version="1"} 7.0' in text
    assert "slipway_in_flight_requests" in text
    assert np.isfinite(len(text))
