"""GPU utilisation and memory through NVML, read with ctypes from the driver's own library.

No Python package is needed: ``libnvidia-ml.so.1`` ships with the NVIDIA driver. Where it is
missing or reports no device, the collector is unavailable and registers nothing, so the metrics
are absent rather than zero on a machine without a GPU.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LIBRARIES = ("libnvidia-ml.so.1", "libnvidia-ml.so", "nvml.dll")


class _Utilization(ctypes.Structure):
    _fields_ = [("gpu", ctypes.c_uint), ("memory", ctypes.c_uint)]


class _Memory(ctypes.Structure):
    _fields_ = [
        ("total", ctypes.c_ulonglong),
        ("free", ctypes.c_ulonglong),
        ("used", ctypes.c_ulonglong),
    ]


def _load_nvml(names: tuple[str, ...] = LIBRARIES) -> Any | None:
    for name in names:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        if lib.nvmlInit_v2() == 0:
            return lib
    return None


class GpuCollector(Collector):
    """``slipway_gpu_utilization_ratio`` and ``slipway_gpu_memory_*_bytes`` per GPU index."""

    def __init__(self, library: Any | None = None) -> None:
        self._nvml = library if library is not None else _load_nvml()
        self.count = 0
        if self._nvml is not None:
            count = ctypes.c_uint(0)
            if self._nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)) == 0:
                self.count = count.value

    @property
    def available(self) -> bool:
        return self.count > 0

    def read(self) -> list[tuple[int, float, int, int]]:
        """(index, utilisation 0..1, memory used bytes, memory total bytes) per GPU."""
        out: list[tuple[int, float, int, int]] = []
        nvml: Any = self._nvml
        for index in range(self.count):
            handle = ctypes.c_void_p()
            if nvml.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(handle)) != 0:
                continue
            util, memory = _Utilization(), _Memory()
            if nvml.nvmlDeviceGetUtilizationRates(handle, ctypes.byref(util)) != 0:
                continue
            if nvml.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(memory)) != 0:
                continue
            out.append((index, util.gpu / 100.0, int(memory.used), int(memory.total)))
        return out

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if not self.available:
            return
        util = GaugeMetricFamily(
            "slipway_gpu_utilization_ratio", "GPU busy fraction (NVML).", labels=["gpu"]
        )
        used = GaugeMetricFamily(
            "slipway_gpu_memory_used_bytes", "GPU memory in use (NVML).", labels=["gpu"]
        )
        total = GaugeMetricFamily(
            "slipway_gpu_memory_total_bytes", "GPU memory size (NVML).", labels=["gpu"]
        )
        for index, busy, in_use, size in self.read():
            util.add_metric([str(index)], busy)
            used.add_metric([str(index)], in_use)
            total.add_metric([str(index)], size)
        yield from (util, used, total)
