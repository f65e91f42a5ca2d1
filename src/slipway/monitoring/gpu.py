"""GPU utilisation and memory through NVML, read with ctypes from the driver's own library.

No Python package is needed: ``libnvidia-ml.so.1`` ships with the NVIDIA driver. Where it is
missing or reports no device, the collector is unavailable and registers nothing, so the metrics
are absent rather than zero on a machine without a GPU.

Each reading stands alone: a device that cannot report utilisation (a MIG instance answers
``NVML_ERROR_NOT_SUPPORTED``) still reports its memory, and the other way round.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Iterator
from typing import Any, NamedTuple

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

LIBRARIES = ("libnvidia-ml.so.1", "libnvidia-ml.so", "nvml.dll")
OFF = "off"
NVML_SUCCESS = 0


class _Utilization(ctypes.Structure):  # nvmlUtilization_t
    _fields_ = [("gpu", ctypes.c_uint), ("memory", ctypes.c_uint)]


class _Memory(ctypes.Structure):  # nvmlMemory_t
    _fields_ = [
        ("total", ctypes.c_ulonglong),
        ("free", ctypes.c_ulonglong),
        ("used", ctypes.c_ulonglong),
    ]


class GpuReading(NamedTuple):
    """One device's figures; ``None`` where the device could not say."""

    gpu: int  # NVML device index
    utilization: float | None  # busy fraction 0..1
    memory_used: int | None  # bytes
    memory_total: int | None  # bytes


def _load_nvml(names: tuple[str, ...] = LIBRARIES) -> Any | None:
    for name in names:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        try:
            if lib.nvmlInit_v2() == NVML_SUCCESS:
                return lib
        except AttributeError:  # some other library under that name
            continue
    return None


def load_library(setting: str = "") -> Any | None:
    """NVML by the ``nvml_library`` setting: "" the driver's usual names, "off" none, else a
    path (an operator who names one hears about it when it does not load)."""
    if setting == OFF:
        return None
    if not setting:
        return _load_nvml()
    library = _load_nvml((setting,))
    if library is None:
        log.warning("NVML library %s did not load or initialise; no GPU metrics", setting)
    return library


class GpuCollector(Collector):
    """``slipway_gpu_utilization_ratio`` and ``slipway_gpu_memory_*_bytes`` per GPU index."""

    def __init__(self, library: Any | None = None) -> None:
        self._nvml = library
        self.count = 0
        if library is not None:
            count = ctypes.c_uint(0)
            if library.nvmlDeviceGetCount_v2(ctypes.byref(count)) == NVML_SUCCESS:
                self.count = count.value

    @classmethod
    def from_setting(cls, setting: str = "") -> GpuCollector:
        return cls(load_library(setting))

    @property
    def available(self) -> bool:
        return self.count > 0

    def read(self) -> list[GpuReading]:
        """What each GPU reports now; a device whose handle cannot be had is left out."""
        out: list[GpuReading] = []
        nvml: Any = self._nvml
        for index in range(self.count):
            handle = ctypes.c_void_p()
            if nvml.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(handle)) != NVML_SUCCESS:
                continue
            util, memory = _Utilization(), _Memory()
            busy = used = total = None
            if nvml.nvmlDeviceGetUtilizationRates(handle, ctypes.byref(util)) == NVML_SUCCESS:
                busy = util.gpu / 100.0
            if nvml.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(memory)) == NVML_SUCCESS:
                used, total = int(memory.used), int(memory.total)
            out.append(GpuReading(index, busy, used, total))
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
        for reading in self.read():
            labels = [str(reading.gpu)]
            if reading.utilization is not None:
                util.add_metric(labels, reading.utilization)
            if reading.memory_used is not None and reading.memory_total is not None:
                used.add_metric(labels, reading.memory_used)
                total.add_metric(labels, reading.memory_total)
        yield from (util, used, total)
