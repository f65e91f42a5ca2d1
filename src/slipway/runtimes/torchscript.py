"""The TorchScript runtime: a ``torch.jit`` module behind the ``Runtime`` protocol.

torch is an optional extra (``pip install torch==2.13.0``, the CPU build) and is imported only
here. A TorchScript file records the names of ``forward``'s arguments but not their dtypes or
shapes, so the signature comes from a sample batch at registration (:func:`describe`) and is
stored with the version; serving checks requests against that stored signature.

Outputs are named by what ``forward`` returns: one tensor is ``output``; a tuple or list of
tensors is ``output_0``, ``output_1``, ...; a dict of tensors keeps its keys.

Loading uses ``torch.jit.load``, which reads TorchScript code and tensors, not arbitrary
pickles, so a TorchScript file does not need ``--trusted``.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from slipway.errors import InferenceFailed, InvalidInput, ModelNotReady, UnsupportedFormat
from slipway.registry.records import Signature, TensorSpec
from slipway.runtimes.base import v2_datatype
from slipway.runtimes.extras import import_extra

FORMAT = "torchscript"
_threads_lock = threading.Lock()


def _torch() -> Any:
    return import_extra(FORMAT)


class TorchScriptRuntime:
    """A loaded TorchScript module. Thread-safe: ``forward`` runs under inference mode."""

    signature: Signature

    def __init__(self, module: Any, input_names: list[str], signature: Signature) -> None:
        self._module: Any | None = module
        self.input_names = input_names
        self.signature = signature
        self._torch = _torch()

    @classmethod
    def load(
        cls, path: Path, *, threads: int = 1, signature: Signature | None = None
    ) -> TorchScriptRuntime:
        """Load the TorchScript file at ``path`` on the CPU.

        ``threads`` sets torch's intra-op pool, which is process-wide in torch: the last model
        loaded decides it for all. ``signature`` is the one recorded at registration; without
        it the runtime knows only the input names.
        """
        torch = _torch()
        with _threads_lock:
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
        try:
            # torch >= 2.10 deprecates TorchScript in favour of torch.export; serving the files
            # teams already have is this runtime's job, so the warning would only be noise.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "`torch.jit", DeprecationWarning)
                module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # torch raises RuntimeError, ValueError, zip errors, ...
            raise UnsupportedFormat(
                f"torch cannot load {Path(path).name} as TorchScript ({type(exc).__name__}:"
                f" {str(exc).splitlines()[0] if str(exc) else ''}); save the model with"
                " torch.jit.script(model).save(path) or torch.jit.trace(...).save(path)"
            ) from exc
        module.eval()
        names = _input_names(module)
        if signature is None:
            signature = Signature(
                inputs=[TensorSpec(name=n, datatype="FP32", shape=[-1]) for n in names],
                outputs=[],
            )
        return cls(module, names, signature)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run ``forward`` on one batch; arrays keyed by input name → outputs keyed by name."""
        module = self._module
        if module is None:
            raise ModelNotReady("the model was unloaded; load it again before predicting")
        torch = self._torch
        try:
            args = [torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in self.input_names]
        except KeyError as exc:
            raise InvalidInput(
                f"missing input {exc.args[0]!r}; the model takes [{', '.join(self.input_names)}]"
            ) from None
        except TypeError as exc:  # object (string) arrays have no torch dtype
            raise InvalidInput(f"TorchScript inputs must be numeric tensors: {exc}") from exc
        try:
            with torch.inference_mode():
                result = module(*args)
        except Exception as exc:  # TorchScript raises torch.jit.Error, RuntimeError, ...
            raise InferenceFailed(
                f"the TorchScript module failed on the batch: {error_text(exc)}"
            ) from exc
        return named_outputs(result)

    def unload(self) -> None:
        """Drop the module; its memory is freed once in-flight ``predict`` calls return."""
        self._module = None


def error_text(exc: BaseException) -> str:
    """The error itself, in one line. An error raised inside TorchScript carries two tracebacks
    (of the serialized code and of the original source, with file paths of the machine that
    scripted the module) and ends with the error, e.g. ``RuntimeError: mat1 and mat2 must have
    the same dtype``: that last line is what a caller can act on."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _input_names(module: Any) -> list[str]:
    schema = module.forward.schema
    return [arg.name for arg in schema.arguments if arg.name != "self"]


def named_outputs(result: Any) -> dict[str, np.ndarray]:
    """``forward``'s return value as numpy arrays named per the module docstring."""
    if isinstance(result, dict):
        return {str(k): _array(v) for k, v in result.items()}
    if isinstance(result, tuple | list):
        return {f"output_{i}": _array(v) for i, v in enumerate(result)}
    return {"output": _array(result)}


def _array(value: Any) -> np.ndarray:
    try:
        return np.asarray(value.detach().cpu().numpy())
    except AttributeError:
        raise InferenceFailed(
            f"the TorchScript module returned {type(value).__name__}; Slipway serves tensors"
            " (a tensor, a tuple of tensors or a dict of tensors)"
        ) from None


def describe(runtime: TorchScriptRuntime, sample: dict[str, np.ndarray] | np.ndarray) -> Signature:
    """The signature of a loaded TorchScript module, from running it on ``sample``.

    A bare array is the batch for a single-input module. Every dimension after the first keeps
    the sample's size; the first (rows) accepts any size.
    """
    if not isinstance(sample, dict):
        if len(runtime.input_names) != 1:
            raise InvalidInput(
                f"the module takes inputs [{', '.join(runtime.input_names)}]; give the"
                " sample as a dict of arrays keyed by those names"
            )
        sample = {runtime.input_names[0]: sample}
    arrays = {name: np.asarray(value) for name, value in sample.items()}
    if sorted(arrays) != sorted(runtime.input_names):
        raise InvalidInput(
            f"the sample has inputs {sorted(arrays)}; the module takes"
            f" [{', '.join(runtime.input_names)}]"
        )
    try:
        outputs = runtime.predict(arrays)
    except InferenceFailed as exc:
        given = ", ".join(f"{n} {a.dtype} {list(a.shape)}" for n, a in arrays.items())
        cause = error_text(exc.__cause__) if exc.__cause__ is not None else exc.message
        raise InvalidInput(
            f"the module cannot run on the sample rows ({given}): {cause}; give sample rows"
            " of the dtypes and shapes forward expects"
        ) from exc
    return Signature(
        inputs=[_spec(name, arrays[name]) for name in runtime.input_names],
        outputs=[_spec(name, value) for name, value in outputs.items()],
    )


def _spec(name: str, array: np.ndarray) -> TensorSpec:
    if array.ndim == 0:
        raise InvalidInput(f"{name!r} is a scalar; Slipway serves batches with rows first")
    return TensorSpec(name=name, datatype=v2_datatype(array.dtype), shape=[-1, *array.shape[1:]])
