"""The ONNX runtime: an onnxruntime ``InferenceSession`` behind the ``Runtime`` protocol.

Loading checks the file before onnxruntime sees it: a model whose external-data ``location``
points outside its own directory is refused (``UnsafePath``), so a crafted artifact cannot make
a replica read arbitrary files. Every onnxruntime error is translated at this boundary:
``UnsupportedFormat`` when the file cannot be loaded, ``SchemaMismatch`` when inputs do not fit
the signature (checked before onnxruntime runs), ``InferenceFailed`` when the session raises.

``predict`` is on the serving hot path, so everything it needs (input names, dtypes, ranks,
fixed dimensions, output names) is computed once at load.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import onnx
import onnxruntime as ort
from onnx import external_data_helper

from slipway.errors import (
    InferenceFailed,
    ModelNotReady,
    SchemaMismatch,
    UnsafePath,
    UnsupportedFormat,
)
from slipway.registry.records import Signature, TensorSpec
from slipway.runtimes.base import V2_TO_NUMPY
from slipway.settings import DEVICES

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"

# onnxruntime's type strings -> V2 datatype names (the keys of base.V2_TO_NUMPY).
ORT_TO_V2: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

_OBJECT = np.dtype(object)


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor a graph holds, subgraphs (If/Loop/Scan bodies) included."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for sub in attr.graphs:
                yield from _tensors(sub)


def check_external_data(path: Path) -> None:
    """Refuse a model whose external data would be read from outside its own directory.

    Parses the model without its external data, so nothing the model points at is opened.
    Raises ``UnsafePath`` for an escaping location, ``UnsupportedFormat`` if the file is not ONNX.
    """
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError, OSError, ...: all mean "not loadable"
        raise UnsupportedFormat(
            f"{path.name} is not a valid ONNX model ({type(exc).__name__}: {exc});"
            " export it again or check that the file was not truncated"
        ) from exc
    base = path.resolve().parent
    for tensor in _tensors(model.graph):
        if not external_data_helper.uses_external_data(tensor):
            continue
        location = external_data_helper.ExternalDataInfo(tensor).location
        # Absolute locations make pathlib drop ``base``; resolve() follows ``..`` and symlinks.
        target = (base / location).resolve()
        if not location or not target.is_relative_to(base):
            raise UnsafePath(location)


GPU_PROVIDERS = ("CUDAExecutionProvider",)


def providers_for_device(device: str, available: list[str] | None = None) -> list[str]:
    """The execution providers to ask for on ``device`` (``cpu``, ``gpu`` or ``auto``).

    ``gpu`` asks for CUDA; ``auto`` asks for every provider this onnxruntime build has, in its
    own order of preference. CPU always comes last, so a model trained on a GPU machine still
    serves where none is installed (``OnnxRuntime.load`` logs the fallback).
    """
    if device == "cpu":
        return [CPU]
    if device == "gpu":
        return [*GPU_PROVIDERS, CPU]
    if device == "auto":
        found = ort.get_available_providers() if available is None else available
        return [*(name for name in found if name != CPU), CPU]
    raise UnsupportedFormat(f"unknown device {device!r}; use one of {', '.join(DEVICES)}")


def _providers(requested: list[str] | None) -> list[str]:
    """The requested providers that this onnxruntime build has, CPU always last as fallback."""
    if not requested:
        return [CPU]
    available = set(ort.get_available_providers())
    chosen = []
    for name in requested:
        if name in available:
            if name not in chosen:
                chosen.append(name)
        else:
            log.warning(
                "onnxruntime execution provider %s is not available in this installation"
                " (available: %s); falling back to %s",
                name,
                ", ".join(sorted(available)),
                CPU,
            )
    if CPU not in chosen:
        chosen.append(CPU)
    return chosen


def _spec(arg: Any, path: Path) -> TensorSpec:
    datatype = ORT_TO_V2.get(arg.type)
    if datatype is None:
        raise UnsupportedFormat(
            f"{path.name}: {arg.name!r} has type {arg.type}; Slipway serves tensors only"
            " (for scikit-learn classifiers convert with zipmap disabled)"
        )
    # Symbolic ("N", "batch") and unknown (None) dimensions accept any size.
    shape = [d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or [])]
    return TensorSpec(name=arg.name, datatype=datatype, shape=shape)


def _as_text(array: np.ndarray) -> np.ndarray:
    """A string tensor's elements as text. Serving hands BYTES over as ``bytes``, and
    onnxruntime stores each element of an object array as ``str(element)``: b"a" became the
    text "b'a'". ONNX strings are UTF-8; bytes that are not are decoded with replacement
    characters rather than failing the batch they share with other requests."""
    out = np.empty(array.shape, dtype=_OBJECT)
    out.ravel()[:] = [
        v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in array.ravel()
    ]
    return out


class OnnxRuntime:
    """A loaded ONNX model. Thread-safe: concurrent ``predict`` calls share one session."""

    signature: Signature

    def __init__(self, session: ort.InferenceSession, signature: Signature) -> None:
        self._session: ort.InferenceSession | None = session
        self.signature = signature
        self.providers: list[str] = list(session.get_providers())
        # CPU only: bounded compute on the calling thread, so a batch measured as cheap may run
        # on the serving event loop (serving/batching.py). A GPU run waits on the device.
        self.inline_safe = self.providers == [CPU]
        # name, dtype, rank, ((axis, size), ...) for fixed dimensions: all predict needs.
        self._checks: list[tuple[str, np.dtype, int, tuple[tuple[int, int], ...]]] = [
            (
                spec.name,
                V2_TO_NUMPY[spec.datatype],
                len(spec.shape),
                tuple((axis, size) for axis, size in enumerate(spec.shape) if size >= 0),
            )
            for spec in signature.inputs
        ]
        self._output_names: list[str] = [spec.name for spec in signature.outputs]
        # A graph exported with a fixed batch dimension of 1 (torch.onnx.export without
        # dynamic_axes) still takes a batch of any size: it runs one row at a time, since the
        # server batches concurrent requests and the first axis is rows.
        self._one_row = bool(self._checks) and all(
            rank >= 1 and (0, 1) in fixed for _, _, rank, fixed in self._checks
        )
        if self._one_row:
            self._checks = [
                (name, dtype, rank, tuple(f for f in fixed if f[0] != 0))
                for name, dtype, rank, fixed in self._checks
            ]

    @classmethod
    def load(
        cls, path: Path, *, threads: int = 1, providers: list[str] | None = None
    ) -> OnnxRuntime:
        """Load the ONNX file at ``path``.

        ``threads`` is onnxruntime's intra-op pool size; replicas usually run several models
        and batch requests, so one thread per model is the default. ``providers`` defaults to
        CPU; a requested provider this installation lacks is skipped with a warning.
        """
        path = Path(path)
        check_external_data(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # onnxruntime logs to stderr on its own; keep only errors, ours go through `logging`.
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(
                str(path), sess_options=options, providers=_providers(providers)
            )
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            raise UnsupportedFormat(
                f"onnxruntime cannot load {path.name}: {exc}".strip()
                + "; check that the file is a complete ONNX model for an opset it supports"
            ) from exc
        signature = Signature(
            inputs=[_spec(arg, path) for arg in session.get_inputs()],
            outputs=[_spec(arg, path) for arg in session.get_outputs()],
        )
        return cls(session, signature)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch: arrays keyed by input name → every output keyed by name.

        Inputs of another numeric dtype are cast when the cast keeps the kind (float64 →
        float32, int32 → int64, int → float); anything lossier is a ``SchemaMismatch``.
        """
        session = self._session
        if session is None:
            raise ModelNotReady("the model was unloaded; load it again before predicting")
        if len(inputs) != len(self._checks):
            self._raise_names(inputs)
        feed: dict[str, np.ndarray] = {}
        for name, dtype, rank, fixed in self._checks:
            array = inputs.get(name)
            if array is None:
                self._raise_names(inputs)
            if array.ndim != rank:
                raise SchemaMismatch(
                    f"input {name!r} has shape {list(array.shape)} (rank {array.ndim});"
                    f" the model expects {self._shape_text(name)}"
                )
            shape = array.shape
            for axis, size in fixed:
                if shape[axis] != size:
                    raise SchemaMismatch(
                        f"input {name!r} has shape {list(shape)}; the model expects"
                        f" {self._shape_text(name)} (dimension {axis} must be {size})"
                    )
            if array.dtype != dtype:
                array = self._cast(name, array, dtype)
            if dtype == _OBJECT:
                array = _as_text(array)
            feed[name] = array
        try:
            if self._one_row:
                results = self._run_rows(session, feed)
            else:
                results = session.run(self._output_names, feed)
        except SchemaMismatch:
            raise
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            raise InferenceFailed(f"onnxruntime failed while running the batch: {exc}") from exc
        return dict(zip(self._output_names, results, strict=True))

    def _run_rows(self, session: ort.InferenceSession, feed: dict[str, np.ndarray]) -> list[Any]:
        """Run a graph whose batch dimension is fixed at 1 on each row; outputs stacked."""
        rows = {array.shape[0] for array in feed.values()}
        if len(rows) != 1:
            raise SchemaMismatch("all inputs must have the same number of rows")
        count = rows.pop()
        if count == 1:
            return list(session.run(self._output_names, feed))
        per_row = [
            session.run(self._output_names, {k: v[i : i + 1] for k, v in feed.items()})
            for i in range(count)
        ]
        return [
            np.concatenate([np.atleast_1d(row[j]) for row in per_row])
            for j in range(len(self._output_names))
        ]

    def unload(self) -> None:
        """Drop the session; its memory is freed once in-flight ``predict`` calls return."""
        self._session = None

    def _raise_names(self, inputs: dict[str, np.ndarray]) -> NoReturn:
        expected = [name for name, *_ in self._checks]
        missing = [name for name in expected if name not in inputs]
        unknown = [name for name in inputs if name not in expected]
        parts = []
        if missing:
            parts.append(f"missing input(s) {', '.join(map(repr, missing))}")
        if unknown:
            parts.append(f"unknown input(s) {', '.join(map(repr, unknown))}")
        raise SchemaMismatch(f"{'; '.join(parts)}; the model takes [{', '.join(expected)}]")

    def _shape_text(self, name: str) -> str:
        spec = next(s for s in self.signature.inputs if s.name == name)
        return "[" + ", ".join("N" if d < 0 else str(d) for d in spec.shape) + "]"

    @staticmethod
    def _cast(name: str, array: np.ndarray, dtype: np.dtype) -> np.ndarray:
        if dtype == _OBJECT:
            # String tensors: onnxruntime takes str/bytes numpy arrays as object arrays
            # (whose bytes _as_text then decodes).
            if array.dtype.kind in "SU":
                return array.astype(_OBJECT)
        elif array.dtype != _OBJECT and np.can_cast(array.dtype, dtype, casting="same_kind"):
            return array.astype(dtype)
        raise SchemaMismatch(
            f"input {name!r} has dtype {array.dtype}; the model expects {dtype}"
            " and the values cannot be converted without loss"
        )
