"""V2/Triton model repository folders: config.pbtxt, numbered version folders."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from slipway.errors import InvalidInput, UnsupportedFormat, VersionConflict
from slipway.importers.triton import (
    import_repository,
    import_repository_model,
    list_versions,
    parse_pbtxt,
    sample_from_config,
)
from slipway.local import Registry
from slipway.runtimes.onnx import OnnxRuntime
from slipway.runtimes.sklearn import convert_sklearn

CONFIG = """name: "iris"
platform: "onnxruntime_onnx"
max_batch_size: 64
input [
  { name: "input" data_type: TYPE_FP32 dims: [ 4 ] }
]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""


@pytest.fixture
def repository(tmp_path: Path, iris_model) -> Path:
    estimator, x = iris_model
    root = tmp_path / "repo"
    (root / "iris" / "1").mkdir(parents=True)
    (root / "iris" / "3").mkdir()
    (root / "iris" / "config.pbtxt").write_text(CONFIG)
    (root / "iris" / "1" / "model.onnx").write_bytes(convert_sklearn(estimator, x))
    weaker = LogisticRegression(C=0.01, max_iter=1000).fit(x, estimator.predict(x))
    (root / "iris" / "3" / "model.onnx").write_bytes(convert_sklearn(weaker, x))
    # A model without config.pbtxt: the format is found from the file name.
    (root / "plain" / "7").mkdir(parents=True)
    (root / "plain" / "7" / "model.onnx").write_bytes(convert_sklearn(estimator, x))
    (root / "README.md").write_text("not a model")
    return root


def test_repository_versions_register_in_order(settings, repository, iris_model):
    estimator, x = iris_model
    with Registry(settings) as registry:
        imported = import_repository(registry.store, registry.artifacts, repository)
        assert sorted(imported) == ["iris", "plain"]
        iris = imported["iris"]
        assert [v.number for v in iris] == [1, 2]
        assert [v.meta.tags["triton_version"] for v in iris] == ["1", "3"]
        assert imported["plain"][0].meta.tags["triton_version"] == "7"
        runtime = OnnxRuntime.load(registry.artifacts.verified_path(iris[0].digest))
        labels = runtime.predict({"input": x[:10]})["label"]
        runtime.unload()
    np.testing.assert_array_equal(labels, estimator.predict(x[:10]))


def test_a_repository_with_one_bad_version_imports_nothing(settings, repository):
    """Not iris@1 alone, nor plain@1: a re-run after the fix would number them again."""
    (repository / "plain" / "8").mkdir()
    (repository / "plain" / "8" / "model.onnx").write_text("not a model")
    with Registry(settings) as registry:
        with pytest.raises(UnsupportedFormat, match="model.onnx is not a valid ONNX model"):
            import_repository(registry.store, registry.artifacts, repository)
        assert registry.store.list_models() == []


def test_a_database_failure_part_way_through_the_record_step_records_nothing(settings, repository):
    """The versions are recorded in one transaction: when the database refuses the last one
    (here a trigger on plain's version, recorded after both of iris's), none stays recorded."""
    with Registry(settings) as registry:
        with registry.store.engine.begin() as connection:
            connection.exec_driver_sql(
                "CREATE TRIGGER refuse_plain BEFORE INSERT ON versions"
                " WHEN NEW.model_id = (SELECT id FROM models WHERE name = 'plain')"
                " BEGIN SELECT RAISE(ABORT, 'the disk is full'); END"
            )
        with pytest.raises(VersionConflict):  # the database's refusal, whatever its cause
            import_repository(registry.store, registry.artifacts, repository)
        assert registry.store.list_models() == []
        assert registry.store.events() == []
        with registry.store.engine.begin() as connection:
            connection.exec_driver_sql("DROP TRIGGER refuse_plain")
        imported = import_repository(registry.store, registry.artifacts, repository)
        assert [v.ref for v in imported["iris"]] == ["iris@1", "iris@2"]  # numbered as if first
        assert [v.ref for v in imported["plain"]] == ["plain@1"]


def test_one_models_versions_are_recorded_in_one_transaction(settings, repository):
    """import_repository_model: one transaction for all of the model's versions too."""
    with Registry(settings) as registry:
        with registry.store.engine.begin() as connection:
            connection.exec_driver_sql(
                "CREATE TRIGGER refuse_second BEFORE INSERT ON versions WHEN NEW.number = 2"
                " BEGIN SELECT RAISE(ABORT, 'the disk is full'); END"
            )
        with pytest.raises(VersionConflict):
            import_repository_model(registry.store, registry.artifacts, repository / "iris")
        assert registry.store.list_models() == []


def test_unsupported_platform_and_empty_folders(tmp_path):
    model = tmp_path / "trt"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text('platform: "tensorrt_plan"\n')
    with pytest.raises(UnsupportedFormat, match="tensorrt_plan"):
        list_versions(model)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidInput, match="numbered version"):
        list_versions(empty)
    (empty / "1").mkdir()
    with pytest.raises(InvalidInput, match="no model.onnx"):
        list_versions(empty)


def test_folders_named_with_other_digits_are_not_versions(tmp_path, iris_model):
    # "²" and "١" are digits to str.isdigit but no version number: not a version folder.
    estimator, x = iris_model
    model = tmp_path / "iris"
    for name in ("1", "\u00b2", "\u0661"):
        (model / name).mkdir(parents=True)
        (model / name / "model.onnx").write_bytes(convert_sklearn(estimator, x))
    assert [v.number for v in list_versions(model)] == [1]
    only = tmp_path / "odd" / "\u00b2"
    only.mkdir(parents=True)
    with pytest.raises(InvalidInput, match="numbered version"):
        list_versions(only.parent)


def test_default_model_filename_is_honoured(tmp_path, iris_model):
    estimator, x = iris_model
    model = tmp_path / "custom"
    (model / "2").mkdir(parents=True)
    (model / "config.pbtxt").write_text(
        'backend: "onnxruntime"\ndefault_model_filename: "iris.onnx"\n'
    )
    (model / "2" / "iris.onnx").write_bytes(convert_sklearn(estimator, x))
    [version] = list_versions(model)
    assert (version.number, version.format, version.path.name) == (2, "onnx", "iris.onnx")


def test_torchscript_versions_from_mlflow_and_triton(settings, tmp_path):
    torch = pytest.importorskip("torch")
    from slipway.importers.mlflow import import_mlflow_model

    eager = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.Softmax(dim=1)).eval()
    with warnings.catch_warnings():  # torch deprecates jit.script; TorchScript files live on
        warnings.simplefilter("ignore", DeprecationWarning)
        model = torch.jit.script(eager)
    rows = np.random.default_rng(0).random((8, 4), dtype=np.float32)
    expected = model(torch.from_numpy(rows)).detach().numpy()
    triton = tmp_path / "repo" / "ranker"
    (triton / "1").mkdir(parents=True)
    (triton / "config.pbtxt").write_text(
        'platform: "pytorch_libtorch"\nmax_batch_size: 8\n'
        'input [ { name: "x", data_type: TYPE_FP32, dims: [ 4 ] } ]\n'
    )
    model.save(str(triton / "1" / "model.pt"))
    mlflow = tmp_path / "mlflow-torch"
    (mlflow / "data").mkdir(parents=True)
    model.save(str(mlflow / "data" / "model.pth"))
    (mlflow / "MLmodel").write_text(
        "flavors:\n  pytorch:\n    model_data: data\n    pytorch_version: 2.3.0\n"
    )
    with Registry(settings) as registry:
        [first] = import_repository(registry.store, registry.artifacts, tmp_path / "repo")["ranker"]
        second = import_mlflow_model(
            registry.store, registry.artifacts, "ranker", mlflow, sample=rows
        )
        assert (first.format, second.format, second.number) == ("torchscript", "torchscript", 2)
        from slipway.runtimes.base import load_runtime

        runtime = load_runtime("torchscript", registry.artifacts.verified_path(second.digest))
        got = next(iter(runtime.predict({second.signature.inputs[0].name: rows}).values()))
        runtime.unload()
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_config_inputs_give_sample_rows():
    config = parse_pbtxt(CONFIG + 'output [{ name: "label" data_type: TYPE_INT64 dims: [1] }]\n')
    assert config["platform"] == ["onnxruntime_onnx"]
    assert config["output"][0]["name"] == ["label"]
    sample = sample_from_config(config)
    assert sample is not None
    assert sample["input"].shape == (2, 4) and sample["input"].dtype == np.float32
    unbatched = parse_pbtxt('input [{ name: "t" data_type: TYPE_INT64 dims: [-1, 3] }]  # no batch')
    assert sample_from_config(unbatched)["t"].shape == (2, 3)
    with pytest.raises(InvalidInput, match="middle"):
        parse_pbtxt('input [{ name: "t" ')
