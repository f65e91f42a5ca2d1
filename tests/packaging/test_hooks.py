"""A bundle's preprocess/postprocess hooks, run by a real server around the runtime."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from slipway.errors import HandlerFailed, HandlerRejected, PackagingFailed
from slipway.packaging.hooks import Hooks, load_hooks
from slipway.packaging.install import install_bundle
from slipway.packaging.manifest import BundleManifest
from slipway.registry.artifacts import ArtifactStore
from slipway.registry.store import SqlStore
from slipway.runtimes.onnx import OnnxRuntime
from slipway.server import BackgroundServer
from slipway.serving.app import SlipwayApp
from tests.packaging.conftest import settings_for, write_handler

SAMPLES_CM = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)


@pytest.fixture
def hooked_server(
    handler_bundle: tuple[Path, BundleManifest], tmp_path: Path
) -> Iterator[tuple[httpx.Client, OnnxRuntime]]:
    """A fresh replica serving the handler bundle, and the bundle's model loaded directly."""
    path, manifest = handler_bundle
    settings = settings_for(tmp_path / "replica")
    store = SqlStore(settings.database_url)
    artifacts = ArtifactStore(settings.artifacts_dir)
    installed = install_bundle(path, store, artifacts)
    app = SlipwayApp(settings, store=store, artifacts=artifacts)
    assert installed.hooks is not None
    app.repository.hooks[("iris", 2)] = installed.hooks
    runtime = OnnxRuntime.load(path / manifest.artifact.path)
    with (
        BackgroundServer(settings, app=app) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        yield client, runtime
    runtime.unload()
    store.close()


def test_hooks_run_around_the_model_on_v2_and_predict(
    hooked_server: tuple[httpx.Client, OnnxRuntime],
) -> None:
    client, runtime = hooked_server
    expected = runtime.predict({"input": SAMPLES_CM})
    species = np.array(["setosa", "versicolor", "virginica"])[expected["label"]].tolist()
    millimetres = (SAMPLES_CM * 10).tolist()

    answer = client.post("/predict/iris-mm", json={"instances": millimetres})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["predictions"] == expected["label"].tolist()
    assert body["outputs"]["species"] == species
    np.testing.assert_allclose(
        body["outputs"]["probabilities"], expected["probabilities"], rtol=1e-6
    )

    v2 = client.post(
        "/v2/models/iris-mm/infer",
        json={"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32",
                          "data": sum(millimetres, [])}]},
    )  # fmt: skip
    assert v2.status_code == 200, v2.text
    outputs = {o["name"]: o for o in v2.json()["outputs"]}
    assert outputs["species"]["datatype"] == "BYTES"
    assert outputs["species"]["data"] == species
    assert outputs["label"]["data"] == expected["label"].tolist()


def test_a_rejected_request_is_a_400_and_the_server_keeps_serving(
    hooked_server: tuple[httpx.Client, OnnxRuntime],
) -> None:
    client, _ = hooked_server
    refused = client.post("/predict/iris-mm", json={"instances": [[-1, 1, 1, 1]]})
    assert refused.status_code == 400
    assert refused.json() == {
        "error": "the model's preprocess hook rejected the request:"
        " ValueError: measurements cannot be negative"
    }
    assert client.post("/predict/iris-mm", json={"instances": [[51, 35, 14, 2]]}).status_code == 200


def test_hooks_that_return_the_wrong_thing_fail_clearly() -> None:
    def bad_post(outputs: dict[str, np.ndarray]) -> object:
        return [1, 2]

    def scalar(outputs: dict[str, np.ndarray]) -> object:
        return {"x": 3}

    def crash(outputs: dict[str, np.ndarray]) -> object:
        raise KeyError("label")

    def ragged(outputs: dict[str, np.ndarray]) -> object:
        return {"x": [[1, 2], [3]]}

    def empty(outputs: dict[str, np.ndarray]) -> object:
        return {}

    x = {"input": np.zeros((1, 4), np.float32)}
    assert Hooks(None, None, name="n").preprocess(x) is x
    with pytest.raises(HandlerFailed, match="must return a dict of name → array, got list"):
        Hooks(None, bad_post, name="n").postprocess(x)
    with pytest.raises(HandlerFailed, match="'x' is a scalar"):
        Hooks(None, scalar, name="n").postprocess(x)
    # Was a bare ValueError: the server's anonymous 500, not one naming the hook.
    with pytest.raises(HandlerFailed, match="postprocess hook failed: 'x' is not an array"):
        Hooks(None, ragged, name="n").postprocess(x)
    with pytest.raises(HandlerFailed, match="preprocess hook failed: 'x' is not an array"):
        Hooks(ragged, None, name="n").preprocess(x)
    # Was an IndexError in /predict, which answers with the first output.
    with pytest.raises(HandlerFailed, match="postprocess hook failed: it returned an empty dict"):
        Hooks(None, empty, name="n").postprocess(x)
    with pytest.raises(HandlerFailed, match="postprocess hook failed: KeyError"):
        Hooks(None, crash, name="n").postprocess(x)
    with pytest.raises(HandlerRejected, match="KeyError"):
        Hooks(crash, None, name="n").preprocess(x)


def test_loading_a_handler_that_cannot_import(tmp_path: Path) -> None:
    path = write_handler(tmp_path, handler="import not_a_module_anywhere\n")
    with pytest.raises(PackagingFailed, match="ModuleNotFoundError"):
        load_hooks(path)
    path.write_text("preprocess = 3\n")
    with pytest.raises(PackagingFailed, match="preprocess must be a function"):
        load_hooks(path)


def test_a_handler_named_by_a_relative_path_runs_its_tests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`slipway package --handler hooks/handler.py`, as docs/packaging.md writes it."""
    from slipway.packaging.hooks import run_handler_tests

    write_handler(tmp_path / "hooks")
    monkeypatch.chdir(tmp_path)
    assert "passed" in run_handler_tests(Path("hooks"))
