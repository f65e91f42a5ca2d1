"""TorchScript: a small module scripted here, registered, served, equal to torch's own outputs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from slipway.errors import InferenceFailed, InvalidInput, UnsupportedFormat
from slipway.local import Registry
from slipway.runtimes.base import load_runtime
from slipway.runtimes.detect import detect_format
from tests.runtimes.frameworks import require
from tests.runtimes.serve import make_settings, serving, v2_infer

torch = require("torch")


class TwoHeads(torch.nn.Module):
    """Scores and a class index from the same features: two outputs, FP32 and INT64."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = torch.nn.Linear(4, 8)
        self.out = torch.nn.Linear(8, 3)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = torch.softmax(self.out(torch.relu(self.hidden(features))), dim=1)
        return scores, torch.argmax(scores, dim=1)


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    torch.manual_seed(0)
    # torch 2.13 deprecates torch.jit.script in favour of torch.export, yet TorchScript files
    # are what many teams have in production: writing one here is the point of the test.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.script(TwoHeads().eval())
    path = tmp_path_factory.mktemp("torch") / "model.pt"
    module.save(str(path))
    return path, module


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)


def test_detected_and_refused_when_it_is_an_eager_pickle(scripted, tmp_path: Path) -> None:
    path, _ = scripted
    assert detect_format(path) == "torchscript"
    eager = tmp_path / "eager.pt"
    torch.save(TwoHeads().state_dict(), str(eager))
    with pytest.raises(UnsupportedFormat, match="torch.jit.script"):
        detect_format(eager)


def test_registered_and_served_equal_to_torch(scripted, rows: np.ndarray, tmp_path: Path) -> None:
    path, module = scripted
    with Registry(make_settings(tmp_path / "home")) as registry:
        record = registry.register_model("iris-net", path, reference=rows)
        assert record.format == "torchscript"
        assert record.meta.tags["framework"] == f"torch:{torch.__version__}"
        signature = record.signature
        assert [(s.name, s.datatype, s.shape) for s in signature.inputs] == [
            ("features", "FP32", [-1, 4])
        ]
        assert [(s.name, s.datatype, s.shape) for s in signature.outputs] == [
            ("output_0", "FP32", [-1, 3]),
            ("output_1", "INT64", [-1]),
        ]
        with serving(registry, "iris-net", record.number) as client:
            outputs = v2_infer(
                client,
                "iris-net",
                [
                    {
                        "name": "features",
                        "datatype": "FP32",
                        "shape": [10, 4],
                        "data": rows[:10].ravel().tolist(),
                    }
                ],
            )
            predicted = client.post("/predict/iris-net", json={"instances": rows[:10].tolist()})
            bad = client.post("/predict/iris-net", json={"instances": [[1.0, 2.0]]})

    with torch.inference_mode():
        scores, labels = module(torch.from_numpy(rows[:10]))
    served = np.array(outputs["output_0"]["data"], dtype=np.float32).reshape(10, 3)
    np.testing.assert_array_equal(served, scores.numpy())
    assert outputs["output_1"]["data"] == labels.tolist()
    assert predicted.status_code == 200, predicted.text
    np.testing.assert_array_equal(np.array(predicted.json()["predictions"], np.float32), scores)
    assert bad.status_code == 400 and "shape" in bad.json()["error"]


def test_runtime_matches_torch_on_every_row(scripted, rows: np.ndarray) -> None:
    path, module = scripted
    runtime = load_runtime("torchscript", path)
    outputs = runtime.predict({"features": rows})
    with torch.inference_mode():
        scores, labels = module(torch.from_numpy(rows))
    np.testing.assert_array_equal(outputs["output_0"], scores.numpy())
    np.testing.assert_array_equal(outputs["output_1"], labels.numpy())


def test_registration_needs_a_sample(scripted, tmp_path: Path) -> None:
    path, _ = scripted
    with Registry(make_settings(tmp_path / "home")) as registry:
        with pytest.raises(InvalidInput, match="sample rows"):
            registry.register_model("iris-net", path)
        assert registry.store.list_models() == []


def test_sample_rows_the_module_cannot_run_are_invalid_input(
    scripted, rows: np.ndarray, tmp_path: Path
) -> None:
    path, _ = scripted
    with Registry(make_settings(tmp_path / "home")) as registry:
        # float64 rows for a float32 module: the caller's sample is wrong, not the server (400).
        with pytest.raises(InvalidInput, match="sample rows") as refused:
            registry.register_model("iris-net", path, sample=rows.astype(np.float64))
        assert "float64" in str(refused.value) and "Double and Float" in str(refused.value)
        assert "\n" not in str(refused.value)  # one line, not TorchScript's two tracebacks
        assert registry.store.list_models() == []


def test_a_failing_batch_says_what_failed_in_one_line(scripted) -> None:
    path, _ = scripted
    runtime = load_runtime("torchscript", path)
    with pytest.raises(InferenceFailed) as failed:
        runtime.predict({"features": np.zeros((2, 5), dtype=np.float32)})
    message = str(failed.value)
    assert "\n" not in message and "Traceback" not in message
    assert "RuntimeError" in message and "shapes cannot be multiplied" in message


def test_a_file_that_is_not_torchscript_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.pt"
    path.write_bytes(b"not a zip at all")
    with pytest.raises(UnsupportedFormat, match="cannot load broken.pt as TorchScript"):
        load_runtime("torchscript", path)


class Blend(torch.nn.Module):
    """Two named inputs of different dtypes, a dict of outputs."""

    def forward(self, values: torch.Tensor, counts: torch.Tensor) -> dict[str, torch.Tensor]:
        total = values.sum(dim=1) * counts.to(torch.float32)
        return {"total": total, "doubled": counts * 2}


def test_two_inputs_and_a_dict_of_outputs(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.script(Blend())
    path = tmp_path / "blend.pt"
    module.save(str(path))
    values = np.arange(12, dtype=np.float32).reshape(4, 3)
    counts = np.array([1, 2, 3, 4], dtype=np.int64)

    with Registry(make_settings(tmp_path / "home")) as registry:
        with pytest.raises(InvalidInput, match="dict of arrays"):
            registry.register_model("blend", path, sample=values)
        record = registry.register_model("blend", path, sample={"values": values, "counts": counts})
        with serving(registry, "blend", record.number) as client:
            outputs = v2_infer(
                client,
                "blend",
                [
                    {"name": "values", "datatype": "FP32", "shape": [4, 3],
                     "data": values.ravel().tolist()},
                    {"name": "counts", "datatype": "INT64", "shape": [4], "data": counts.tolist()},
                ],
            )  # fmt: skip

    assert [(s.name, s.datatype, s.shape) for s in record.signature.inputs] == [
        ("values", "FP32", [-1, 3]),
        ("counts", "INT64", [-1]),
    ]
    with torch.inference_mode():
        expected = module(torch.from_numpy(values), torch.from_numpy(counts))
    assert outputs["total"]["data"] == expected["total"].tolist()
    assert outputs["doubled"]["data"] == expected["doubled"].tolist()
    assert outputs["doubled"]["datatype"] == "INT64"
