"""An MLflow tensorflow flavor (a SavedModel inside the model directory) through the importer."""

from __future__ import annotations

import os

import numpy as np
import yaml

from slipway.importers.mlflow import import_mlflow_model
from slipway.local import Registry
from slipway.runtimes.base import load_runtime
from tests.runtimes.frameworks import require

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = require("tensorflow")


class Doubler(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def __call__(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": x * 2.0}


def test_tensorflow_flavor_registers_the_saved_model(settings, tmp_path):
    directory = tmp_path / "mlflow-tf"
    module = Doubler()
    tf.saved_model.save(
        module, str(directory / "tf2model"), signatures={"serving_default": module.__call__}
    )
    flavors = {"tensorflow": {"saved_model_dir": "tf2model", "model_type": "tf2-module"}}
    (directory / "MLmodel").write_text(yaml.safe_dump({"flavors": flavors, "run_id": "tf1"}))
    rows = np.arange(6, dtype=np.float32).reshape(2, 3)
    with Registry(settings) as registry:
        version = import_mlflow_model(registry.store, registry.artifacts, "doubler", directory)
        runtime = load_runtime("savedmodel", registry.artifacts.verified_path(version.digest))
        got = runtime.predict({version.signature.inputs[0].name: rows})
        runtime.unload()
    assert version.format == "savedmodel"
    assert version.meta.tags["mlflow_run_id"] == "tf1"
    np.testing.assert_allclose(got["y"], rows * 2.0)
