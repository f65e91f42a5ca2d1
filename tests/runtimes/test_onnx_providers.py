"""ONNX execution providers per device, and the CPU fallback when a GPU provider is missing."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from slipway.errors import UnsupportedFormat
from slipway.local import Registry
from slipway.runtimes.base import RuntimeOptions, load_runtime
from slipway.runtimes.onnx import OnnxRuntime, providers_for_device
from tests.runtimes.serve import make_settings, serving

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


@pytest.mark.parametrize(
    ("device", "available", "expected"),
    [
        pytest.param("cpu", [CUDA, CPU], [CPU], id="cpu-ignores-gpu"),
        pytest.param("gpu", [CPU], [CUDA, CPU], id="gpu-asks-cuda-then-cpu"),
        pytest.param("auto", [TRT, CUDA, CPU], [TRT, CUDA, CPU], id="auto-takes-all"),
        pytest.param("auto", [CPU], [CPU], id="auto-on-cpu-build"),
    ],
)
def test_providers_for_device(device: str, available: list[str], expected: list[str]) -> None:
    assert providers_for_device(device, available) == expected


def test_unknown_device_is_refused() -> None:
    with pytest.raises(UnsupportedFormat, match="unknown device 'tpu'"):
        providers_for_device("tpu", [CPU])


def test_gpu_model_served_on_a_cpu_build_falls_back_with_a_log_line(
    cancer, cancer_lr_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if CUDA in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: there is no fallback to see")
    with caplog.at_level(logging.WARNING, logger="slipway.runtimes.onnx"):
        runtime = load_runtime("onnx", cancer_lr_path, options=RuntimeOptions(device="gpu"))

    assert runtime.providers == [CPU]  # type: ignore[attr-defined]
    assert f"{CUDA} is not available" in caplog.text
    assert f"falling back to {CPU}" in caplog.text
    outputs = runtime.predict({"input": cancer[0][:5].astype(np.float32)})
    assert outputs["label"].shape == (5,)


def test_a_replica_set_to_gpu_still_serves_on_a_cpu_build(
    cancer, cancer_lr_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if CUDA in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: there is no fallback to see")
    rows = cancer[0][:4].astype(np.float32)
    settings = make_settings(tmp_path / "home", device="gpu")
    with (
        caplog.at_level(logging.WARNING, logger="slipway.runtimes.onnx"),
        Registry(settings) as registry,
    ):
        record = registry.register_onnx("cancer", cancer_lr_path)
        with serving(registry, "cancer", record.number) as client:
            response = client.post("/predict/cancer", json={"instances": rows.tolist()})
    assert response.status_code == 200, response.text
    expected = OnnxRuntime.load(cancer_lr_path).predict({"input": rows})["label"]
    assert response.json()["predictions"] == expected.tolist()
    assert f"{CUDA} is not available" in caplog.text
