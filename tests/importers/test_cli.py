"""``slipway import ...`` run as a user runs it: a real process."""

from __future__ import annotations

import json

import cloudpickle
import numpy as np
import yaml

from slipway.runtimes.sklearn import convert_sklearn
from tests.test_cli import slipway


def test_import_triton_repository(tmp_path, iris_model):
    estimator, x = iris_model
    home = tmp_path / "home"
    version_dir = tmp_path / "repo" / "iris" / "4"
    version_dir.mkdir(parents=True)
    (version_dir / "model.onnx").write_bytes(convert_sklearn(estimator, x))
    result = slipway(home, "import", "triton", str(tmp_path / "repo"))
    assert result.returncode == 0, result.stderr
    assert "iris" in result.stdout and "onnx" in result.stdout


def test_import_mlflow_pickle_needs_trusted(tmp_path, iris_model):
    estimator, x = iris_model
    home = tmp_path / "home"
    directory = tmp_path / "mlflow-model"
    directory.mkdir()
    with (directory / "model.pkl").open("wb") as file:
        cloudpickle.dump(estimator, file)
    mlmodel = {"flavors": {"sklearn": {"pickled_model": "model.pkl"}}, "run_id": "r1"}
    (directory / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    (directory / "input_example.json").write_text(json.dumps({"data": x[:20].tolist()}))
    np.save(tmp_path / "train.npy", x)
    refused = slipway(home, "import", "mlflow", str(directory), "--model", "iris")
    assert refused.returncode != 0
    assert "pickle" in refused.stderr and "--trusted" in refused.stderr
    done = slipway(
        home, "import", "mlflow", str(directory), "--model", "iris", "--trusted",
        "--sample", str(tmp_path / "train.npy"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "sklearn" in done.stdout
