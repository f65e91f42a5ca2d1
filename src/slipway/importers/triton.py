"""Register versions from a V2/Triton-style model repository folder.

The layout Triton, KServe and MLServer share::

    repository/
      churn/
        config.pbtxt            # optional here; platform/backend and default_model_filename
        1/model.onnx
        2/model.onnx
      images/
        1/model.savedmodel/     # a SavedModel directory
      ranker/
        3/model.pt              # a TorchScript file

Each numbered version folder becomes the next Slipway version of the model, in ascending
order; the repository's own number is kept in the ``triton_version`` tag. Slipway numbers
versions itself (1, 2, 3 per model), so an import appends to a model's history rather than
overwriting versions with the same number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slipway.errors import InvalidInput, UnsupportedFormat
from slipway.registry.artifacts import ArtifactStore
from slipway.registry.records import VersionMeta, VersionRecord
from slipway.registry.registration import StoredModel
from slipway.registry.store import SqlStore
from slipway.runtimes.base import V2_TO_NUMPY

# Triton platform/backend names → Slipway formats and the default file name in a version folder.
PLATFORMS: dict[str, tuple[str, str]] = {
    "onnxruntime_onnx": ("onnx", "model.onnx"),
    "onnxruntime": ("onnx", "model.onnx"),
    "pytorch_libtorch": ("torchscript", "model.pt"),
    "pytorch": ("torchscript", "model.pt"),
    "tensorflow_savedmodel": ("savedmodel", "model.savedmodel"),
    "tensorflow": ("savedmodel", "model.savedmodel"),
}
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}:,]|[^\s\[\]{}:,"#]+|#[^\n]*')
# Triton's TYPE_* data types → V2 datatypes.
TRITON_TYPES = {
    "TYPE_BOOL": "BOOL",
    "TYPE_UINT8": "UINT8",
    "TYPE_UINT16": "UINT16",
    "TYPE_UINT32": "UINT32",
    "TYPE_UINT64": "UINT64",
    "TYPE_INT8": "INT8",
    "TYPE_INT16": "INT16",
    "TYPE_INT32": "INT32",
    "TYPE_INT64": "INT64",
    "TYPE_FP16": "FP16",
    "TYPE_FP32": "FP32",
    "TYPE_FP64": "FP64",
    "TYPE_STRING": "BYTES",
}


@dataclass(frozen=True)
class RepositoryVersion:
    """One version folder of a repository model: its number, format and model file."""

    number: int
    format: str
    path: Path


def parse_pbtxt(text: str) -> dict[str, list[Any]]:
    """Protobuf text format → field name → list of values (scalars as str, messages as dicts).

    Enough of the format for model configurations: scalars, nested messages, lists, comments.
    """
    tokens = [t for t in _TOKEN.findall(text) if not t.startswith("#")]
    position = 0

    def value() -> Any:
        nonlocal position
        token = tokens[position]
        position += 1
        if token == "{":
            return message("}")
        if token == "[":
            items = []
            while tokens[position] != "]":
                items.append(value())
                if tokens[position] == ",":
                    position += 1
            position += 1
            return items
        return token[1:-1] if token.startswith('"') else token

    def message(end: str | None) -> dict[str, list[Any]]:
        nonlocal position
        fields: dict[str, list[Any]] = {}
        while position < len(tokens) and tokens[position] != end:
            name = tokens[position]
            position += 1
            if tokens[position] == ":":
                position += 1
            item = value()
            fields.setdefault(name, []).extend(item if isinstance(item, list) else [item])
            if position < len(tokens) and tokens[position] == ",":
                position += 1
        position += 1
        return fields

    try:
        return message(None)
    except IndexError:
        raise InvalidInput("config.pbtxt ends in the middle of a field") from None


def read_config(model_dir: Path) -> dict[str, list[Any]]:
    """The parsed config.pbtxt of a repository model ({} when it has none)."""
    path = model_dir / "config.pbtxt"
    if not path.is_file():
        return {}
    try:
        return parse_pbtxt(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path} is not UTF-8 text") from exc


def _scalar(config: dict[str, list[Any]], name: str) -> str | None:
    values = config.get(name)
    return str(values[0]) if values else None


def sample_from_config(config: dict[str, list[Any]], rows: int = 2) -> dict[str, np.ndarray] | None:
    """Zero rows shaped by the config's declared inputs (for a TorchScript signature), if any.

    With ``max_batch_size`` > 0 Triton's ``dims`` leave out the batch dimension; otherwise the
    first dim is the batch. Variable dims (-1) become 1.
    """
    inputs = [i for i in config.get("input", []) if isinstance(i, dict)]
    if not inputs:
        return None
    batched = int(_scalar(config, "max_batch_size") or 0) > 0
    sample: dict[str, np.ndarray] = {}
    for spec in inputs:
        name = _scalar(spec, "name")
        datatype = TRITON_TYPES.get(_scalar(spec, "data_type") or "")
        if name is None or datatype is None or datatype == "BYTES":
            return None
        try:
            dims = [max(int(d), 1) for d in spec.get("dims", [])]
        except ValueError:
            return None
        shape = [rows, *dims] if batched else [rows, *dims[1:]]
        sample[name] = np.zeros(shape, dtype=V2_TO_NUMPY[datatype])
    return sample


def is_version_folder(path: Path) -> bool:
    """Whether ``path`` is a numbered version folder: a directory named with ASCII digits
    (``str.isdigit`` also takes "²" and "١", which are no version number)."""
    return path.is_dir() and path.name.isascii() and path.name.isdigit()


def _guess(version_dir: Path) -> tuple[str, Path] | None:
    for platform in ("onnxruntime_onnx", "pytorch_libtorch", "tensorflow_savedmodel"):
        format, filename = PLATFORMS[platform]
        if (version_dir / filename).exists():
            return format, version_dir / filename
    return None


def list_versions(model_dir: Path) -> list[RepositoryVersion]:
    """The version folders of one repository model, lowest number first."""
    model_dir = Path(model_dir)
    config = read_config(model_dir)
    platform = _scalar(config, "platform") or _scalar(config, "backend")
    if platform is not None and platform not in PLATFORMS:
        raise UnsupportedFormat(
            f"{model_dir.name}: Triton platform {platform!r} is not one Slipway serves; supported:"
            f" {', '.join(sorted(PLATFORMS))}"
        )
    versions = []
    for child in model_dir.iterdir():
        if not is_version_folder(child):
            continue
        if platform is not None:
            format, filename = PLATFORMS[platform]
            path = child / (_scalar(config, "default_model_filename") or filename)
            if not path.exists():
                raise InvalidInput(f"{model_dir.name}/{child.name} has no {path.name}")
        else:
            found = _guess(child)
            if found is None:
                raise InvalidInput(
                    f"{model_dir.name}/{child.name} holds no model.onnx, model.pt or"
                    " model.savedmodel, and there is no config.pbtxt naming its platform"
                )
            format, path = found
        versions.append(RepositoryVersion(int(child.name), format, path))
    if not versions:
        raise InvalidInput(f"{model_dir} has no numbered version folders (1/, 2/, ...)")
    return sorted(versions, key=lambda v: v.number)


def import_repository_model(
    store: SqlStore,
    artifacts: ArtifactStore,
    model_dir: Path,
    *,
    model: str | None = None,
    sample: np.ndarray | None = None,
    actor: str | None = None,
) -> list[VersionRecord]:
    """Register every version folder of one repository model, in order; returns the versions.

    ``model`` defaults to the folder's name. TorchScript versions need ``sample`` rows, or
    inputs declared in config.pbtxt (zero rows of those shapes then give the signature).
    Every version is stored and read before any is recorded, and all are recorded in one
    transaction: one that fails records none.
    """
    from slipway.registry.names import check_name
    from slipway.registry.registration import record_models

    name = model or Path(model_dir).name
    check_name("model", name)
    stored = _store_repository_model(artifacts, Path(model_dir), sample)
    return record_models(store, [(name, version) for version in stored], actor=actor)


def _store_repository_model(
    artifacts: ArtifactStore, model_dir: Path, sample: np.ndarray | None
) -> list[StoredModel]:
    from slipway.registry.registration import store_model

    example: np.ndarray | dict[str, np.ndarray] | None = sample
    if example is None:
        example = sample_from_config(read_config(model_dir))
        if example is not None and len(example) == 1:
            # Triton names libtorch inputs INPUT__0, ...; the module knows its own names.
            example = next(iter(example.values()))
    return [
        store_model(
            artifacts,
            version.path,
            format=version.format,
            sample=example,
            meta=VersionMeta(
                tags={"source": "triton-repository", "triton_version": str(version.number)}
            ),
        )
        for version in list_versions(model_dir)
    ]


def import_repository(
    store: SqlStore,
    artifacts: ArtifactStore,
    repository: Path,
    *,
    sample: np.ndarray | None = None,
    actor: str | None = None,
) -> dict[str, list[VersionRecord]]:
    """Register every model of a repository folder (each sub-folder with version folders), all
    or none."""
    repository = Path(repository)
    if not repository.is_dir():
        raise InvalidInput(f"{repository} is not a directory")
    models = sorted(
        child
        for child in repository.iterdir()
        if child.is_dir() and any(is_version_folder(g) for g in child.iterdir())
    )
    if not models:
        raise InvalidInput(f"{repository} holds no model folders with numbered versions")
    from slipway.registry.names import check_name
    from slipway.registry.registration import record_models

    for path in models:
        check_name("model", path.name)
    # Every model's versions stored and read first, then all recorded in one transaction: one
    # that fails, in either step, records nothing.
    stored = {path.name: _store_repository_model(artifacts, path, sample) for path in models}
    batch = [(name, version) for name, versions in stored.items() for version in versions]
    imported: dict[str, list[VersionRecord]] = {name: [] for name in stored}
    for record in record_models(store, batch, actor=actor):
        imported[record.model].append(record)
    return imported
