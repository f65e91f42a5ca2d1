"""A real registry with real ONNX models fitted here, and a real server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from slipway.local import Registry
from slipway.server import BackgroundServer
from slipway.settings import Settings

from ..auth import admin_headers


@pytest.fixture(scope="session")
def cancer() -> tuple[np.ndarray, np.ndarray]:
    data = load_breast_cancer()
    return data.data.astype(np.float32), data.target


@pytest.fixture(scope="session")
def cancer_models(cancer: tuple[np.ndarray, np.ndarray]) -> tuple[object, object]:
    x, y = cancer
    first = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, y)
    second = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=1000)).fit(x, y)
    return first, second


def make_settings(home: Path, **overrides: object) -> Settings:
    return Settings.from_env({"SLIPWAY_HOME": str(home)}, port=0, **overrides)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "home", reconcile_interval_s=0.2)


@pytest.fixture
def registry(settings: Settings, cancer, cancer_models) -> Iterator[Registry]:
    x, _ = cancer
    with Registry(settings) as registry:
        for estimator in cancer_models:
            registry.register_sklearn("cancer", estimator, x, metrics={"accuracy": 0.95})
        registry.store.create_deployment("cancer-prod", "cancer", 1)
        yield registry


@pytest.fixture
def server(settings: Settings, registry: Registry) -> Iterator[BackgroundServer]:
    with BackgroundServer(settings) as server:
        yield server


@pytest.fixture
def http(server: BackgroundServer, settings: Settings) -> Iterator[httpx.Client]:
    """A client of the server with an admin token (auth is on, as by default)."""
    with httpx.Client(base_url=server.url, timeout=10, headers=admin_headers(settings)) as client:
        yield client


@pytest.fixture(scope="session")
def iris_model() -> tuple[object, np.ndarray]:
    data = load_iris()
    x = data.data.astype(np.float32)
    return LogisticRegression(max_iter=1000).fit(x, data.target), x


def _identity_onnx(path: Path, element_type: int) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", element_type, ["N", 2])],
        [helper.make_tensor_value_info("y", element_type, ["N", 2])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture
def identity_server(settings: Settings, tmp_path: Path) -> Iterator[BackgroundServer]:
    """Identity ONNX models with two-column inputs that are not floats: ``small-prod`` (INT8),
    ``flags-prod`` (BOOL) and ``text-prod`` (BYTES: an ONNX string tensor)."""
    with Registry(settings) as registry:
        registry.register_onnx("small", _identity_onnx(tmp_path / "int8.onnx", TensorProto.INT8))
        registry.store.create_deployment("small-prod", "small", 1)
        registry.register_onnx("flags", _identity_onnx(tmp_path / "bool.onnx", TensorProto.BOOL))
        registry.store.create_deployment("flags-prod", "flags", 1)
        registry.register_onnx("text", _identity_onnx(tmp_path / "text.onnx", TensorProto.STRING))
        registry.store.create_deployment("text-prod", "text", 1)
    with BackgroundServer(settings) as server:
        yield server
