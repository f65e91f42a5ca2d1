"""The TensorFlow SavedModel runtime: the ``serving_default`` signature behind ``Runtime``.

tensorflow-cpu is an optional extra (``pip install tensorflow-cpu==2.21.0``) imported only
here. A SavedModel is a directory, while the artifact store holds files, so registration packs
the directory into one tar archive (:func:`pack`: sorted entries, zeroed times and owners, so the
same directory always gives the same digest). Loading unpacks it into a private temporary
directory with tarfile's ``data`` filter (no absolute paths, no ``..``, no links out, no device
files), restores the model, and deletes the directory: TensorFlow reads the variables into
memory while restoring.

The signature is the ``serving_default`` signature's inputs and outputs, by name.
"""

from __future__ import annotations

import logging
import shutil
import tarfile
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from slipway.errors import (
    InferenceFailed,
    InvalidInput,
    ModelNotReady,
    SchemaMismatch,
    UnsupportedFormat,
)
from slipway.registry.records import Signature, TensorSpec
from slipway.runtimes.base import NUMPY_TO_V2
from slipway.runtimes.extras import import_extra

FORMAT = "savedmodel"
SIGNATURE_KEY = "serving_default"
MARKER = "saved_model.pb"

log = logging.getLogger(__name__)
_threads_lock = threading.Lock()


def is_saved_model_dir(path: Path) -> bool:
    """Whether ``path`` is a SavedModel directory (it holds ``saved_model.pb``)."""
    return path.is_dir() and (path / MARKER).is_file()


def pack(directory: Path, out: Path) -> None:
    """Write the SavedModel ``directory`` to the tar archive ``out``, reproducibly.

    Symlinks and special files are refused: an artifact must be self-contained.
    """
    directory = Path(directory)
    if not is_saved_model_dir(directory):
        raise UnsupportedFormat(
            f"{directory} is not a SavedModel directory (no {MARKER}); save it with"
            " tf.saved_model.save(model, directory)"
        )
    entries = sorted(p for p in directory.rglob("*"))
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as archive:
        for path in entries:
            relative = path.relative_to(directory).as_posix()
            if path.is_symlink() or not (path.is_dir() or path.is_file()):
                raise UnsupportedFormat(
                    f"{relative} in {directory.name} is a link or special file; a SavedModel"
                    " artifact must hold regular files only"
                )
            info = tarfile.TarInfo(relative)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if path.is_dir():
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                archive.addfile(info)
            else:
                info.size, info.mode = path.stat().st_size, 0o644
                with path.open("rb") as stream:
                    archive.addfile(info, stream)


def _unpack(archive_path: Path, target: Path) -> None:
    try:
        with tarfile.open(archive_path, "r:") as archive:
            archive.extractall(target, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise UnsupportedFormat(
            f"{archive_path.name} is not a packed SavedModel ({type(exc).__name__}: {exc});"
            " register the SavedModel directory again"
        ) from exc


class SavedModelRuntime:
    """A restored SavedModel's ``serving_default`` function. Thread-safe (TF functions are)."""

    signature: Signature

    def __init__(self, function: Any, keep: Any, signature: Signature) -> None:
        self._function: Any | None = function
        self._keep: Any | None = keep  # the restored object owns the function's variables
        self.signature = signature
        self._tf = import_extra(FORMAT)
        self._inputs = {spec.name: spec for spec in signature.inputs}
        self._outputs = [spec.name for spec in signature.outputs]

    @classmethod
    def load(cls, path: Path, *, threads: int = 1) -> SavedModelRuntime:
        """Load a SavedModel from a packed archive (the artifact) or a SavedModel directory."""
        tf = import_extra(FORMAT)
        _set_threads(tf, threads)
        path = Path(path)
        if path.is_dir():
            return cls._restore(tf, path)
        scratch = Path(tempfile.mkdtemp(prefix="slipway-savedmodel-"))
        try:
            _unpack(path, scratch)
            return cls._restore(tf, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    @classmethod
    def _restore(cls, tf: Any, directory: Path) -> SavedModelRuntime:
        if not (directory / MARKER).is_file():
            raise UnsupportedFormat(f"the SavedModel has no {MARKER}")
        try:
            restored = tf.saved_model.load(str(directory))
        except Exception as exc:  # TF raises OSError, ValueError, its own errors, ...
            raise UnsupportedFormat(
                f"tensorflow cannot load the SavedModel ({type(exc).__name__}:"
                f" {str(exc).splitlines()[0] if str(exc) else ''}); save it again with"
                " tf.saved_model.save(model, directory)"
            ) from exc
        function = restored.signatures.get(SIGNATURE_KEY)
        if function is None:
            raise UnsupportedFormat(
                f"the SavedModel has no {SIGNATURE_KEY!r} signature (it has"
                f" {sorted(restored.signatures)}); save it with"
                f" signatures={{'{SIGNATURE_KEY}': model.__call__.get_concrete_function(...)}}"
            )
        return cls(function, restored, _signature(function))

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run ``serving_default`` on one batch; arrays keyed by input name → outputs by name."""
        function = self._function
        if function is None:
            raise ModelNotReady("the model was unloaded; load it again before predicting")
        tf = self._tf
        unknown = sorted(set(inputs) - set(self._inputs))
        missing = sorted(set(self._inputs) - set(inputs))
        if unknown or missing:
            raise SchemaMismatch(
                f"the model takes [{', '.join(self._inputs)}]; missing {missing}, unknown {unknown}"
            )
        try:
            feed = {name: tf.constant(value) for name, value in inputs.items()}
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"inputs cannot become tensors: {exc}") from exc
        try:
            result = function(**feed)
        except Exception as exc:  # TF raises InvalidArgumentError and friends
            raise InferenceFailed(f"the SavedModel failed on the batch: {exc}") from exc
        # In signature order (sorted names), so `/predict`'s first output is stable.
        return {name: np.asarray(result[name].numpy()) for name in self._outputs}

    def unload(self) -> None:
        """Drop the function and the restored object; TF frees them once no call holds them."""
        self._function = None
        self._keep = None


def _set_threads(tf: Any, threads: int) -> None:
    # TF's pools are process-wide and fixed once the runtime starts: set them before the first
    # load, and keep what is there afterwards.
    with _threads_lock:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            log.debug("tensorflow thread pools already initialised; keeping them")


def _signature(function: Any) -> Signature:
    _, kwargs = function.structured_input_signature
    inputs = [_spec(name, spec) for name, spec in sorted(kwargs.items())]
    outputs = [_spec(name, spec) for name, spec in sorted(function.structured_outputs.items())]
    return Signature(inputs=inputs, outputs=outputs)


def _spec(name: str, spec: Any) -> TensorSpec:
    dtype = spec.dtype
    if dtype.name == "string":
        datatype = "BYTES"
    else:
        datatype = NUMPY_TO_V2.get(np.dtype(dtype.as_numpy_dtype), "")
    if not datatype:
        raise UnsupportedFormat(
            f"signature {SIGNATURE_KEY!r}: {name!r} has dtype {dtype.name}, which V2 cannot carry"
        )
    dims = spec.shape.as_list() if spec.shape.rank is not None else None
    if dims is None:
        raise UnsupportedFormat(
            f"signature {SIGNATURE_KEY!r}: {name!r} has an unknown rank; give the"
            " tf.TensorSpec a shape such as [None, 4]"
        )
    return TensorSpec(name=name, datatype=datatype, shape=[-1 if d is None else d for d in dims])


def describe(archive: Path) -> Signature:
    """The ``serving_default`` signature of a packed SavedModel or SavedModel directory."""
    runtime = SavedModelRuntime.load(archive)
    try:
        return runtime.signature
    finally:
        runtime.unload()


def pack_to_bytes(directory: Path) -> bytes:
    """:func:`pack` into memory (small models and tests)."""
    with tempfile.TemporaryDirectory(prefix="slipway-pack-") as tmp:
        out = Path(tmp) / "model.tar"
        pack(directory, out)
        return out.read_bytes()
