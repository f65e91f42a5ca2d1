"""TensorFlow SavedModel: a small model saved here, registered, served, equal to TF's outputs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from slipway.errors import UnsupportedFormat
from slipway.local import Registry
from slipway.runtimes.base import load_runtime
from slipway.runtimes.detect import detect_format
from slipway.runtimes.savedmodel import pack
from tests.runtimes.frameworks import require
from tests.runtimes.serve import make_settings, serving, v2_infer

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF's C++ start-up chatter out of logs
tf = require("tensorflow")


class Scorer(tf.Module):
    """A linear layer with softmax, and the arg-max class: FP32 and INT64 outputs."""

    def __init__(self) -> None:
        super().__init__()
        rng = np.random.default_rng(0)
        self.weights = tf.Variable(rng.normal(size=(4, 3)).astype(np.float32))
        self.bias = tf.Variable(rng.normal(size=(3,)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="features")])
    def __call__(self, features: tf.Tensor) -> dict[str, tf.Tensor]:
        scores = tf.nn.softmax(tf.matmul(features, self.weights) + self.bias)
        return {"scores": scores, "label": tf.argmax(scores, axis=1)}


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tf") / "scorer"
    module = Scorer()
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.__call__})
    return directory


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(30, 4)).astype(np.float32)


def _framework(directory: Path, rows: np.ndarray) -> dict[str, np.ndarray]:
    restored = tf.saved_model.load(str(directory))
    result = restored.signatures["serving_default"](features=tf.constant(rows))
    return {name: value.numpy() for name, value in result.items()}


def test_registered_and_served_equal_to_tensorflow(
    saved: Path, rows: np.ndarray, tmp_path: Path
) -> None:
    assert detect_format(saved) == "savedmodel"
    with Registry(make_settings(tmp_path / "home")) as registry:
        record = registry.register_model("scorer", saved, reference=rows)
        assert record.format == "savedmodel"
        assert record.meta.tags["framework"] == f"tensorflow:{tf.__version__}"
        assert [(s.name, s.datatype, s.shape) for s in record.signature.inputs] == [
            ("features", "FP32", [-1, 4])
        ]
        assert [(s.name, s.datatype, s.shape) for s in record.signature.outputs] == [
            ("label", "INT64", [-1]),
            ("scores", "FP32", [-1, 3]),
        ]
        with serving(registry, "scorer", record.number) as client:
            outputs = v2_infer(
                client,
                "scorer",
                [
                    {
                        "name": "features",
                        "datatype": "FP32",
                        "shape": [8, 4],
                        "data": rows[:8].ravel().tolist(),
                    }
                ],
            )
            predicted = client.post("/predict/scorer", json={"instances": rows[:8].tolist()})
            bad = client.post("/predict/scorer", json={"instances": [[1.0, 2.0, 3.0]]})

    expected = _framework(saved, rows[:8])
    served = np.array(outputs["scores"]["data"], dtype=np.float32).reshape(8, 3)
    np.testing.assert_array_equal(served, expected["scores"])
    assert outputs["label"]["data"] == expected["label"].tolist()
    assert predicted.status_code == 200, predicted.text
    body = predicted.json()  # outputs in signature order: the first is the prediction
    assert body["predictions"] == expected["label"].tolist()
    np.testing.assert_array_equal(
        np.array(body["outputs"]["scores"], np.float32), expected["scores"]
    )
    assert bad.status_code == 400, bad.text


def test_reference_rows_of_another_float_dtype_are_cast_as_for_onnx(
    saved: Path, rows: np.ndarray, tmp_path: Path
) -> None:
    # Training rows are float64 unless someone converts them: numpy's default.
    with Registry(make_settings(tmp_path / "home")) as registry:
        record = registry.register_model("scorer", saved, reference=rows.astype(np.float64))
    assert record.profile is not None and record.profile.rows == len(rows)
    labels = next(p for p in record.profile.predictions if p.name == "label")
    expected = _framework(saved, rows)["label"]
    assert labels.count == len(rows) and labels.max == float(expected.max())


def test_packing_is_reproducible_and_loads(saved: Path, rows: np.ndarray, tmp_path: Path) -> None:
    first, second = tmp_path / "a.tar", tmp_path / "b.tar"
    pack(saved, first)
    os.utime(saved / "saved_model.pb", (1, 1))  # a touched file must not change the digest
    pack(saved, second)
    assert first.read_bytes() == second.read_bytes()

    runtime = load_runtime("savedmodel", first)
    outputs = runtime.predict({"features": rows})
    np.testing.assert_array_equal(outputs["scores"], _framework(saved, rows)["scores"])
    runtime.unload()


def test_archive_with_an_escaping_path_is_refused(tmp_path: Path) -> None:
    import io
    import tarfile

    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("../outside.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(UnsupportedFormat, match="not a packed SavedModel"):
        load_runtime("savedmodel", archive)
    assert not (tmp_path.parent / "outside.txt").exists()


def test_directory_without_saved_model_pb_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedFormat, match="saved_model.pb"):
        detect_format(tmp_path)
