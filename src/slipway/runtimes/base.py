"""The runtime protocol every model format implements, and the V2 datatype table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from slipway.registry.records import Signature

# Open Inference Protocol V2 datatypes <-> numpy dtypes.
V2_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
NUMPY_TO_V2: dict[np.dtype, str] = {v: k for k, v in V2_TO_NUMPY.items()}


def v2_datatype(dtype: np.dtype) -> str:
    """V2 name of a numpy dtype; strings and objects are BYTES."""
    if dtype.kind in "OSU":
        return "BYTES"
    return NUMPY_TO_V2[np.dtype(dtype)]


@dataclass(frozen=True)
class RowParameter:
    """A per-row request parameter a runtime takes beside its signature's inputs (GGUF's
    ``max_tokens``): whole numbers from ``minimum`` to ``maximum``, the server's limit, which
    the setting ``setting`` sets. Rows that do not give it get ``maximum``. A runtime lists
    its parameters in an optional ``parameters`` attribute (name → RowParameter); the server
    checks them per request, before batching, and passes them to ``predict`` as one more
    array keyed by name, so requests asking for different values still share a batch.
    """

    minimum: int
    maximum: int
    setting: str
    dtype: np.dtype = np.dtype(np.int32)


class Runtime(Protocol):
    """A loaded model. ``predict`` runs one batch: arrays keyed by input name, first axis = rows."""

    signature: Signature

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def unload(self) -> None: ...


@dataclass(frozen=True)
class RuntimeOptions:
    """How runtimes load models on this replica; built from ``Settings`` at the edge.

    ``device`` picks ONNX execution providers (``cpu``, ``gpu``: CUDA then CPU, ``auto``:
    every accelerator onnxruntime has, then CPU). ``max_tokens``, ``generation_timeout_s`` and
    ``context_tokens`` bound text generation (GGUF).
    """

    threads: int = 1
    device: str = "cpu"
    max_tokens: int = 64
    generation_timeout_s: float = 30.0
    context_tokens: int = 512


def load_runtime(
    format: str, path: Path, *, threads: int = 1, options: RuntimeOptions | None = None
) -> Runtime:
    """Load the artifact at ``path`` with the runtime for ``format``.

    ``threads`` is kept for callers that set only that; ``options`` wins when given. Heavy
    frameworks are imported here only for their own format.
    """
    from slipway.errors import UnsupportedFormat

    options = options or RuntimeOptions(threads=threads)
    if format == "onnx":
        from slipway.runtimes.onnx import OnnxRuntime, providers_for_device

        return OnnxRuntime.load(
            path, threads=options.threads, providers=providers_for_device(options.device)
        )
    if format == "torchscript":
        from slipway.runtimes.torchscript import TorchScriptRuntime

        return TorchScriptRuntime.load(path, threads=options.threads)
    if format == "savedmodel":
        from slipway.runtimes.savedmodel import SavedModelRuntime

        return SavedModelRuntime.load(path, threads=options.threads)
    if format == "gguf":
        from slipway.runtimes.gguf import GgufRuntime

        return GgufRuntime.load(
            path,
            threads=options.threads,
            context_tokens=options.context_tokens,
            max_tokens=options.max_tokens,
            timeout_s=options.generation_timeout_s,
        )
    raise UnsupportedFormat(f"no runtime for format {format!r}; supported: {', '.join(FORMATS)}")


# Every format a version can have; see docs/formats.md.
FORMATS = ("onnx", "torchscript", "savedmodel", "gguf")
