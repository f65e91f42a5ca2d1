"""Register a version straight from an MLflow model directory (the folder holding ``MLmodel``).

Flavors, tried in this order:

* ``onnx``: the ONNX file (``flavors.onnx.data``) is registered as is;
* ``tensorflow``: the SavedModel directory (``saved_model_dir``), through the SavedModel runtime;
* ``pytorch``: a TorchScript file (MLflow's ``model_data`` holding a ``torch.jit`` archive) through
  the TorchScript runtime; MLflow's usual eager pickle is refused with advice;
* ``sklearn``: the pickled estimator (``pickled_model``) is unpickled only when the caller trusts
  the source (``runtimes/trust.py``), then converted to ONNX and verified like any estimator.

What MLflow recorded comes along: the run id and flavor become tags, the column names of a
column-based signature become the feature names, and the saved input example serves as sample
rows when the caller gives none.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import yaml

from slipway.errors import InvalidInput, UnsafePath, UnsupportedFormat
from slipway.registry.artifacts import ArtifactStore
from slipway.registry.records import VersionMeta, VersionRecord
from slipway.registry.store import SqlStore

FLAVORS = ("onnx", "tensorflow", "pytorch", "sklearn")


def read_mlmodel(directory: Path) -> dict[str, Any]:
    """The parsed ``MLmodel`` file of an MLflow model directory."""
    path = Path(directory) / "MLmodel"
    if not path.is_file():
        raise InvalidInput(f"{directory} is not an MLflow model directory: it has no MLmodel file")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("flavors"), dict):
        raise InvalidInput(f"{path} has no flavors section")
    return document


def _inside(directory: Path, relative: Any, what: str) -> Path:
    # MLmodel is user-supplied: a path in it must not point outside the model directory.
    if not isinstance(relative, str) or not relative:
        raise InvalidInput(f"MLmodel gives no {what}")
    root = directory.resolve()
    path = (root / relative).resolve()
    if root != path and root not in path.parents:
        raise UnsafePath(relative)
    if not path.exists():
        raise InvalidInput(f"MLmodel names {what} {relative!r}, which is not in {directory}")
    return path


def signature_columns(mlmodel: dict[str, Any]) -> list[str] | None:
    """Column names of a column-based MLflow signature (None for tensor signatures)."""
    signature = mlmodel.get("signature") or {}
    raw = signature.get("inputs")
    if not raw:
        return None
    try:
        specs = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        return None
    if not isinstance(specs, list) or not specs:
        return None
    names = []
    for spec in specs:
        if not isinstance(spec, dict) or spec.get("type") == "tensor":
            return None
        if not isinstance(spec.get("name"), str):
            return None
        names.append(spec["name"])
    return names


def input_example(directory: Path, mlmodel: dict[str, Any]) -> np.ndarray | None:
    """The saved input example as rows, when MLflow saved one in a form Slipway reads."""
    info = mlmodel.get("saved_input_example_info") or {}
    candidates = [info.get("artifact_path"), "input_example.json", "serving_input_example.json"]
    for name in candidates:
        if not isinstance(name, str) or not (directory / name).is_file():
            continue
        path = _inside(directory, name, "input example")
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"{path} is not valid JSON: {exc}") from exc
        if isinstance(payload, dict):
            payload = payload.get("dataframe_split", payload)
            rows = payload.get("data", payload.get("inputs", payload.get("instances")))
        else:
            rows = payload
        try:
            array = np.asarray(rows, dtype=np.float32)
        except (TypeError, ValueError):
            return None
        return array if array.ndim == 2 else None
    return None


def import_mlflow_model(
    store: SqlStore,
    artifacts: ArtifactStore,
    model: str,
    directory: Path,
    *,
    trusted: bool = False,
    sample: np.ndarray | None = None,
    meta: VersionMeta | None = None,
    actor: str | None = None,
) -> VersionRecord:
    """Register the next version of ``model`` from an MLflow model directory.

    ``sample`` rows (training data) verify a scikit-learn conversion, give TorchScript its
    signature and build the drift profile; MLflow's saved input example is used when omitted.
    ``trusted`` allows unpickling a scikit-learn flavor (it runs code from the file).
    """
    from slipway.registry.registration import register_model, register_sklearn

    directory = Path(directory)
    mlmodel = read_mlmodel(directory)
    flavors: dict[str, Any] = mlmodel["flavors"]
    flavor = next((name for name in FLAVORS if name in flavors), None)
    if flavor is None:
        raise UnsupportedFormat(
            f"the MLflow model has flavors {', '.join(flavors)}; Slipway imports"
            f" {', '.join(FLAVORS)}"
        )
    config = flavors[flavor] or {}
    columns = signature_columns(mlmodel)
    rows = sample if sample is not None else input_example(directory, mlmodel)
    tags = {"source": "mlflow", "mlflow_flavor": flavor}
    if mlmodel.get("run_id"):
        tags["mlflow_run_id"] = str(mlmodel["run_id"])
    meta = meta or VersionMeta()
    meta = msgspec.structs.replace(meta, tags={**tags, **meta.tags})
    if flavor == "sklearn":
        from slipway.runtimes.trust import load_pickled_estimator

        path = _inside(directory, config.get("pickled_model"), "pickled_model")
        estimator = load_pickled_estimator(path, trusted=trusted)
        if rows is None:
            raise InvalidInput(
                "converting a scikit-learn model needs sample rows to verify the ONNX result;"
                " the MLflow model saved no input example, so pass sample rows"
            )
        return register_sklearn(
            store, artifacts, model, estimator, rows, meta=meta, feature_names=columns, actor=actor
        )
    if flavor == "onnx":
        path, format = _inside(directory, config.get("data"), "ONNX data"), "onnx"
    elif flavor == "tensorflow":
        saved = config.get("saved_model_dir") or config.get("data")
        path, format = _inside(directory, saved, "saved_model_dir"), "savedmodel"
    else:
        path, format = _torchscript_file(directory, config), "torchscript"
    return register_model(
        store,
        artifacts,
        model,
        path,
        format=format,
        sample=rows,
        meta=meta,
        reference=sample,  # a profile from the few rows of an input example would mislead
        feature_names=columns,
        actor=actor,
    )


def _torchscript_file(directory: Path, config: dict[str, Any]) -> Path:
    from slipway.runtimes.detect import is_torchscript_file

    data = _inside(directory, config.get("model_data", "data"), "model_data")
    candidates = [data] if data.is_file() else sorted(p for p in data.iterdir() if p.is_file())
    for candidate in candidates:
        if is_torchscript_file(candidate):
            return candidate
    raise UnsupportedFormat(
        "this MLflow pytorch model is a pickled eager module, which Slipway does not load; log a"
        " scripted model instead (mlflow.pytorch.log_model(torch.jit.script(model), ...))"
    )
