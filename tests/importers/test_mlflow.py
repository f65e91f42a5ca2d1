"""MLflow model directories as MLflow writes them (MLmodel YAML, pickles, ONNX, input example)."""

from __future__ import annotations

import json
from pathlib import Path

import cloudpickle
import httpx
import numpy as np
import pytest
import yaml
from sklearn.datasets import load_iris

from slipway.errors import InvalidInput, UnsafePath, UnsupportedFormat, UntrustedArtifact
from slipway.importers.mlflow import import_mlflow_model
from slipway.local import Registry
from slipway.runtimes.sklearn import convert_sklearn
from slipway.server import BackgroundServer

COLUMNS = list(load_iris().feature_names)


def _mlmodel(flavors: dict, *, example: bool = True) -> dict:
    signature_inputs = [{"type": "double", "name": c, "required": True} for c in COLUMNS]
    document = {
        "artifact_path": "model",
        "flavors": flavors,
        "mlflow_version": "2.14.1",
        "model_uuid": "0f3c2e0d9a4b4d5c8e7f6a5b4c3d2e1f",
        "run_id": "5a1f0c9e2b7d4e8f",
        "signature": {
            "inputs": json.dumps(signature_inputs),
            "outputs": json.dumps([{"type": "long", "required": True}]),
            "params": None,
        },
        "utc_time_created": "2026-11-20 10:00:00.000000",
    }
    if example:
        document["saved_input_example_info"] = {
            "artifact_path": "input_example.json",
            "pandas_orient": "split",
            "type": "dataframe",
        }
    return document


def _write(directory: Path, mlmodel: dict, x: np.ndarray | None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "MLmodel").write_text(yaml.safe_dump(mlmodel), encoding="utf-8")
    if x is not None:
        example = {"columns": COLUMNS, "data": x[::10].tolist()}
        (directory / "input_example.json").write_text(json.dumps(example), encoding="utf-8")
    return directory


@pytest.fixture
def sklearn_dir(tmp_path: Path, iris_model) -> Path:
    estimator, x = iris_model
    directory = tmp_path / "mlflow-sklearn"
    directory.mkdir()
    with (directory / "model.pkl").open("wb") as file:
        cloudpickle.dump(estimator, file)
    flavors = {
        "python_function": {"loader_module": "mlflow.sklearn", "model_path": "model.pkl"},
        "sklearn": {
            "pickled_model": "model.pkl",
            "serialization_format": "cloudpickle",
            "sklearn_version": "1.9.1",
            "code": None,
        },
    }
    return _write(directory, _mlmodel(flavors), x)


def test_sklearn_flavor_is_refused_unless_trusted(settings, sklearn_dir):
    with Registry(settings) as registry, pytest.raises(UntrustedArtifact):
        import_mlflow_model(registry.store, registry.artifacts, "iris", sklearn_dir)


def test_sklearn_flavor_serves_with_mlflow_column_names(settings, sklearn_dir, iris_model):
    estimator, x = iris_model
    with Registry(settings) as registry:
        version = import_mlflow_model(
            registry.store, registry.artifacts, "iris", sklearn_dir, trusted=True
        )
        registry.store.create_deployment("iris-prod", "iris", version.number)
    assert version.format == "onnx"
    assert version.meta.tags["mlflow_run_id"] == "5a1f0c9e2b7d4e8f"
    assert version.meta.tags["mlflow_flavor"] == "sklearn"
    assert version.profile is not None
    assert [f.name for f in version.profile.features] == COLUMNS
    records = [dict(zip(COLUMNS[::-1], row[::-1], strict=True)) for row in x[:9].tolist()]
    with BackgroundServer(settings) as server, httpx.Client(base_url=server.url) as http:
        answer = http.post("/invocations", json={"dataframe_records": records})
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == estimator.predict(x[:9]).tolist()


def test_sklearn_flavor_without_example_needs_sample(settings, tmp_path, iris_model):
    estimator, x = iris_model
    directory = tmp_path / "no-example"
    directory.mkdir()
    with (directory / "model.pkl").open("wb") as file:
        cloudpickle.dump(estimator, file)
    _write(directory, _mlmodel({"sklearn": {"pickled_model": "model.pkl"}}, example=False), None)
    with Registry(settings) as registry:
        with pytest.raises(InvalidInput, match="sample rows"):
            import_mlflow_model(registry.store, registry.artifacts, "iris", directory, trusted=True)
        version = import_mlflow_model(
            registry.store, registry.artifacts, "iris", directory, trusted=True, sample=x
        )
    assert version.number == 1


def test_onnx_flavor(settings, tmp_path, iris_model):
    estimator, x = iris_model
    directory = tmp_path / "mlflow-onnx"
    directory.mkdir()
    (directory / "model.onnx").write_bytes(convert_sklearn(estimator, x))
    flavors = {
        "python_function": {"loader_module": "mlflow.onnx", "data": "model.onnx"},
        "onnx": {
            "onnx_version": "1.16.0",
            "data": "model.onnx",
            "providers": ["CPUExecutionProvider"],
        },
    }
    _write(directory, _mlmodel(flavors), x)
    with Registry(settings) as registry:
        version = import_mlflow_model(registry.store, registry.artifacts, "iris", directory)
        registry.store.create_deployment("iris-prod", "iris", version.number)
    assert version.meta.tags["mlflow_flavor"] == "onnx"
    with BackgroundServer(settings) as server, httpx.Client(base_url=server.url) as http:
        answer = http.post("/v1/models/iris-prod:predict", json={"instances": x[:5].tolist()})
    assert answer.json()["predictions"] == estimator.predict(x[:5]).tolist()


@pytest.mark.parametrize(
    ("mlmodel", "error", "fragment"),
    [
        pytest.param(None, InvalidInput, "no MLmodel", id="no-mlmodel"),
        pytest.param(
            {"flavors": {"python_function": {}}}, UnsupportedFormat, "flavors", id="flavor"
        ),
        pytest.param(
            {"flavors": {"onnx": {"data": "../../outside.onnx"}}}, UnsafePath, "leave", id="escape"
        ),
        pytest.param(
            {"flavors": {"onnx": {"data": "missing.onnx"}}},
            InvalidInput,
            "not in",
            id="missing-file",
        ),
        pytest.param(
            {"flavors": {"pytorch": {"model_data": "data"}}},
            UnsupportedFormat,
            "pickled eager",
            id="eager-pytorch",
        ),
    ],
)
def test_bad_directories_are_refused_clearly(settings, tmp_path, mlmodel, error, fragment):
    directory = tmp_path / "model"
    directory.mkdir()
    (tmp_path / "outside.onnx").write_bytes(b"\x08\x07")
    (directory / "data").mkdir()
    (directory / "data" / "model.pth").write_bytes(b"\x80\x04not torchscript")
    if mlmodel is not None:
        (directory / "MLmodel").write_text(yaml.safe_dump(mlmodel), encoding="utf-8")
    with Registry(settings) as registry, pytest.raises(error, match=fragment):
        import_mlflow_model(registry.store, registry.artifacts, "m", directory)
