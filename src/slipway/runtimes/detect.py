"""Which format a model file or directory holds, from its name and first bytes, without loading.

* a directory holding ``saved_model.pb`` → ``savedmodel``;
* a file starting with ``GGUF`` → ``gguf``;
* a zip archive with a ``code/`` folder (what ``torch.jit.save`` writes) → ``torchscript``;
* anything else → ``onnx`` (protobuf has no magic bytes; the ONNX loader says what is wrong).

A zip archive without ``code/`` is what ``torch.save`` writes for an eager model: a pickle,
refused with advice to script or trace the model. ``--format`` on the command line skips
detection.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from slipway.errors import UnsupportedFormat
from slipway.runtimes.gguf import is_gguf_file
from slipway.runtimes.savedmodel import is_saved_model_dir


def is_torchscript_file(path: Path) -> bool:
    """Whether ``path`` is a zip archive written by ``torch.jit.save`` (it has ``code/``)."""
    names = _zip_names(path)
    return names is not None and any(_is_code_entry(name) for name in names)


def _is_code_entry(name: str) -> bool:
    parts = name.split("/")
    return len(parts) >= 3 and parts[1] == "code"


def _zip_names(path: Path) -> list[str] | None:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return None


def detect_format(path: Path) -> str:
    """The format of the model at ``path`` (one of ``base.FORMATS``), or ``UnsupportedFormat``."""
    path = Path(path)
    if path.is_dir():
        if is_saved_model_dir(path):
            return "savedmodel"
        raise UnsupportedFormat(
            f"{path} is a directory without saved_model.pb; Slipway registers SavedModel"
            " directories and single model files"
        )
    if is_gguf_file(path):
        return "gguf"
    names = _zip_names(path)
    if names is not None:
        if any(_is_code_entry(name) for name in names):
            return "torchscript"
        raise UnsupportedFormat(
            f"{path.name} is a zip archive but not TorchScript (torch.save of an eager model is"
            " a pickle); save it with torch.jit.script(model).save(path) or torch.jit.trace"
        )
    # ONNX is protobuf, which has no magic bytes: everything else is tried as ONNX, and the
    # ONNX loader's error says what is wrong with the file.
    return "onnx"
