"""The ONNX runtime on real converted models and on small hand-built graphs."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from slipway.errors import (
    InferenceFailed,
    ModelNotReady,
    SchemaMismatch,
    SlipwayError,
    UnsafePath,
    UnsupportedFormat,
)
from slipway.registry.records import Signature, TensorSpec
from slipway.runtimes.base import load_runtime
from slipway.runtimes.onnx import OnnxRuntime


def _add_model(weights: TensorProto, *, x_shape: list[int | str]) -> onnx.ModelProto:
    """y = x + w: the smallest graph with an initializer to point at external data."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, x_shape)],
        initializer=[weights],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _external_weights(location: str) -> TensorProto:
    tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[3])
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in {"location": location, "offset": "0", "length": "12"}.items():
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def test_signature_names_dtypes_and_batch_dimension(cancer_lr_path: Path) -> None:
    runtime = OnnxRuntime.load(cancer_lr_path)

    assert runtime.signature == Signature(
        inputs=[TensorSpec("input", "FP32", [-1, 30])],
        outputs=[
            TensorSpec("label", "INT64", [-1]),
            TensorSpec("probabilities", "FP32", [-1, 2]),
        ],
    )
    assert runtime.providers == ["CPUExecutionProvider"]


def test_predict_matches_the_estimator(cancer, cancer_lr, cancer_lr_path: Path) -> None:
    x = cancer[0].astype(np.float32)
    runtime = OnnxRuntime.load(cancer_lr_path)

    out = runtime.predict({"input": x})

    assert set(out) == {"label", "probabilities"}
    assert out["label"].dtype == np.int64 and out["probabilities"].dtype == np.float32
    np.testing.assert_allclose(
        out["probabilities"], cancer_lr.predict_proba(x.astype(np.float64)), atol=1e-4
    )
    np.testing.assert_array_equal(out["label"], cancer_lr.predict(x.astype(np.float64)))


def test_float64_and_integer_inputs_are_cast(cancer, cancer_lr_path: Path) -> None:
    x = cancer[0]
    runtime = OnnxRuntime.load(cancer_lr_path)
    want = runtime.predict({"input": x.astype(np.float32)})

    from_double = runtime.predict({"input": x})
    from_int = runtime.predict({"input": np.rint(x).astype(np.int64)})

    np.testing.assert_array_equal(from_double["probabilities"], want["probabilities"])
    assert from_int["probabilities"].shape == (len(x), 2)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        pytest.param({}, r"missing input\(s\) 'input'; the model takes \[input\]", id="missing"),
        pytest.param(
            {"features": np.zeros((1, 30), np.float32)},
            r"missing input\(s\) 'input'; unknown input\(s\) 'features'",
            id="wrong-name",
        ),
        pytest.param(
            {"input": np.zeros((1, 30), np.float32), "extra": np.zeros(1)},
            r"unknown input\(s\) 'extra'",
            id="extra",
        ),
        pytest.param(
            {"input": np.zeros(30, np.float32)},
            r"shape \[30\] \(rank 1\); the model expects \[N, 30\]",
            id="rank",
        ),
        pytest.param(
            {"input": np.zeros((2, 29), np.float32)},
            r"shape \[2, 29\]; the model expects \[N, 30\] \(dimension 1 must be 30\)",
            id="trailing",
        ),
        pytest.param(
            {"input": np.full((1, 30), "1.0")}, r"dtype <U3; the model expects float32", id="str"
        ),
        pytest.param(
            {"input": np.zeros((1, 30), np.complex64)}, "cannot be converted", id="complex"
        ),
    ],
)
def test_inputs_that_do_not_fit_raise_schema_mismatch(
    cancer_lr_path: Path, inputs: dict[str, np.ndarray], message: str
) -> None:
    runtime = OnnxRuntime.load(cancer_lr_path)
    with pytest.raises(SchemaMismatch, match=message):
        runtime.predict(inputs)


def test_lossy_cast_to_an_integer_input_is_refused(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.INT64, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, ["N", 2])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              tmp_path / "id.onnx")  # fmt: skip
    runtime = OnnxRuntime.load(tmp_path / "id.onnx")

    assert runtime.signature.inputs == [TensorSpec("x", "INT64", [-1, 2])]
    np.testing.assert_array_equal(
        runtime.predict({"x": np.array([[1, 2]], np.int32)})["y"], [[1, 2]]
    )
    with pytest.raises(SchemaMismatch, match="dtype float64; the model expects int64"):
        runtime.predict({"x": np.array([[1.5, 2.0]])})


def test_a_fixed_batch_dimension_of_one_takes_batches_of_any_size(tmp_path: Path) -> None:
    """torch.onnx.export without dynamic_axes writes [1, ...]: serving batches concurrent
    one-row requests, and every request in such a batch was refused."""
    weights = np.arange(8, dtype=np.float32).reshape(4, 2)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        initializer=[helper.make_tensor("w", TensorProto.FLOAT, [4, 2], weights.ravel())],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              tmp_path / "one.onnx")  # fmt: skip
    runtime = OnnxRuntime.load(tmp_path / "one.onnx")
    rows = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)

    out = runtime.predict({"x": rows})["y"]
    np.testing.assert_allclose(out, rows @ weights, rtol=1e-6)
    assert out.shape == (5, 2)
    with pytest.raises(SchemaMismatch, match="dimension 1 must be 4"):
        runtime.predict({"x": np.zeros((2, 3), np.float32)})


def test_string_inputs_given_as_bytes_reach_the_model_as_text(tmp_path: Path) -> None:
    """Serving hands BYTES over as bytes; onnxruntime turned b"a" into the text "b'a'"."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.STRING, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.STRING, ["N", 2])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              tmp_path / "text.onnx")  # fmt: skip
    runtime = OnnxRuntime.load(tmp_path / "text.onnx")
    assert runtime.signature.inputs == [TensorSpec("x", "BYTES", [-1, 2])]
    given = np.array([[b"a", "b"], ["\u00e9".encode(), b"\xff"]], dtype=object)
    assert runtime.predict({"x": given})["y"].tolist() == [["a", "b"], ["\u00e9", "\ufffd"]]


def test_concurrent_predicts_from_eight_threads(cancer, cancer_forest_path: Path) -> None:
    x = cancer[0].astype(np.float32)
    runtime = OnnxRuntime.load(cancer_forest_path, threads=1)
    expected = runtime.predict({"input": x})["probabilities"]
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def worker(offset: int) -> None:
        try:
            start.wait()
            for i in range(offset, len(x), 8):
                got = runtime.predict({"input": x[i : i + 1]})["probabilities"]
                np.testing.assert_array_equal(got[0], expected[i])
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []


@pytest.mark.parametrize(
    "location",
    [
        pytest.param("../evil.bin", id="parent"),
        pytest.param("sub/../../evil.bin", id="parent-through-subdir"),
        pytest.param("/etc/passwd", id="absolute"),
    ],
)
def test_external_data_outside_the_model_directory_is_refused(
    tmp_path: Path, location: str
) -> None:
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    evil = tmp_path / "evil.bin"
    evil.write_bytes(np.ones(3, np.float32).tobytes())
    onnx.save(_add_model(_external_weights(location), x_shape=["N", 3]), model_dir / "m.onnx")

    with pytest.raises(UnsafePath) as info:
        OnnxRuntime.load(model_dir / "m.onnx")
    assert info.value.path == location


def test_external_data_beside_the_model_loads(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(np.array([1, 2, 3], np.float32).tobytes())
    onnx.save(_add_model(_external_weights("weights.bin"), x_shape=["N", 3]), tmp_path / "m.onnx")

    runtime = OnnxRuntime.load(tmp_path / "m.onnx")

    out = runtime.predict({"x": np.zeros((1, 3), np.float32)})
    np.testing.assert_array_equal(out["y"], [[1, 2, 3]])


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"this is not a model at all", id="garbage"),
        pytest.param(b"", id="empty"),
        pytest.param(None, id="truncated"),
        pytest.param(b"\x08\x07\x12\x07skl2onnx" + b"\xff" * 64, id="tampered"),
    ],
)
def test_broken_files_raise_slipway_errors(
    tmp_path: Path, cancer_lr_path: Path, content: bytes | None
) -> None:
    path = tmp_path / "broken.onnx"
    good = cancer_lr_path.read_bytes()
    path.write_bytes(good[: len(good) // 2] if content is None else content)

    with pytest.raises(SlipwayError) as info:
        OnnxRuntime.load(path)
    assert isinstance(info.value, UnsupportedFormat)
    assert "broken.onnx" in str(info.value)


def test_missing_file_is_a_slipway_error(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedFormat, match="nothing.onnx"):
        OnnxRuntime.load(tmp_path / "nothing.onnx")


def test_runtime_failure_becomes_inference_failed(tmp_path: Path) -> None:
    weights = helper.make_tensor("w", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0])
    onnx.save(_add_model(weights, x_shape=["N", "D"]), tmp_path / "m.onnx")
    runtime = OnnxRuntime.load(tmp_path / "m.onnx")

    # [1, 4] + [3] passes the signature check (D is symbolic) but cannot broadcast.
    with pytest.raises(InferenceFailed, match="onnxruntime failed") as info:
        runtime.predict({"x": np.zeros((1, 4), np.float32)})
    assert info.value.__cause__ is not None


def test_unavailable_provider_falls_back_to_cpu_with_a_warning(
    cancer_lr_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="slipway.runtimes.onnx"):
        runtime = OnnxRuntime.load(cancer_lr_path, providers=["NoSuchExecutionProvider"])

    assert runtime.providers == ["CPUExecutionProvider"]
    assert "NoSuchExecutionProvider is not available" in caplog.text
    assert "falling back to CPUExecutionProvider" in caplog.text


def test_unload_then_predict_raises_model_not_ready(cancer, cancer_lr_path: Path) -> None:
    runtime = load_runtime("onnx", cancer_lr_path, threads=2)
    assert runtime.predict({"input": cancer[0][:1]})["label"].shape == (1,)

    runtime.unload()

    with pytest.raises(ModelNotReady):
        runtime.predict({"input": cancer[0][:1]})


def test_external_data_through_a_symlink_out_is_refused(tmp_path: Path) -> None:
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    (tmp_path / "evil.bin").write_bytes(np.ones(3, np.float32).tobytes())
    (model_dir / "weights.bin").symlink_to(tmp_path / "evil.bin")
    onnx.save(_add_model(_external_weights("weights.bin"), x_shape=["N", 3]), model_dir / "m.onnx")

    with pytest.raises(UnsafePath):
        OnnxRuntime.load(model_dir / "m.onnx")
