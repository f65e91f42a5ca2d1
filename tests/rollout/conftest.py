"""Real servers with real models for rollout tests, and runtimes that misbehave on purpose.

``FaultyRuntime`` wraps a real loaded model and adds one fault (raise, sleep) the way a broken
or slow new version would: it stands in for a bad model, not for any of our code.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from slipway.local import Registry
from slipway.registry.records import VersionRecord
from slipway.runtimes.base import Runtime, load_runtime
from slipway.server import BackgroundServer
from slipway.serving.app import SlipwayApp
from slipway.serving.repository import ModelRepository, warmup_inputs
from slipway.settings import Settings
from tests.serving.conftest import cancer, cancer_models  # noqa: F401  (fixtures)
from tests.waiting import wait_for  # noqa: F401  (re-exported to the tests here)

Fault = Callable[[dict[str, np.ndarray]], None]


def raises(inputs: dict[str, np.ndarray]) -> None:
    raise RuntimeError("candidate is broken")


def sleeps(seconds: float) -> Fault:
    def fault(inputs: dict[str, np.ndarray]) -> None:
        time.sleep(seconds)

    return fault


class FaultyRuntime:
    """A real runtime plus a fault run before each batch (after warm-up)."""

    def __init__(self, inner: Runtime, fault: Fault) -> None:
        self.inner = inner
        self.signature = inner.signature
        self.fault = fault

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.fault(inputs)
        return self.inner.predict(inputs)

    def unload(self) -> None:
        self.inner.unload()


def rollout_settings(home: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "reconcile_interval_s": 0.1,
        "evidence_flush_interval_s": 0.2,
        "rollout_interval_s": 0.2,
        "rollout_lease_s": 5.0,
        "auth": 0,  # tokens are governance's tests; these run on 127.0.0.1 only
    }
    values.update(overrides)
    return Settings.from_env({"SLIPWAY_HOME": str(home)}, port=0, **values)


class Loads:
    """A loader that loads real artifacts, counts loads and applies faults per version."""

    def __init__(self, registry: Registry, faults: dict[int, Fault] | None = None) -> None:
        self.registry = registry
        self.faults = faults or {}
        self.count = 0

    def __call__(self, record: VersionRecord) -> Runtime:
        self.count += 1
        path = self.registry.artifacts.verified_path(record.digest)
        runtime = load_runtime(record.format, path)
        runtime.predict(warmup_inputs(record.signature))
        fault = self.faults.get(record.number)
        return runtime if fault is None else FaultyRuntime(runtime, fault)


@pytest.fixture
def registry(tmp_path: Path, cancer, cancer_models) -> Iterator[Registry]:  # noqa: F811
    x, _ = cancer
    with Registry(rollout_settings(tmp_path / "home")) as registry:
        for estimator in cancer_models:
            registry.register_sklearn("cancer", estimator, x)
        registry.store.create_deployment("cancer-prod", "cancer", 1)
        yield registry


def start_server(
    registry: Registry, faults: dict[int, Fault] | None = None, **overrides: object
) -> tuple[BackgroundServer, Loads]:
    settings = rollout_settings(registry.settings.home, **overrides)
    loads = Loads(registry, faults)
    repository = ModelRepository(registry.store, registry.artifacts, loader=loads)
    app = SlipwayApp(settings, store=registry.store, repository=repository)
    return BackgroundServer(settings, app=app).start(), loads


def rows(cancer, n: int = 1) -> list[list[float]]:  # noqa: F811
    x, _ = cancer
    return x[:n].tolist()


def predict_version(http: httpx.Client, instances: list[list[float]], **headers: str) -> int:
    response = http.post("/predict/cancer-prod", json={"instances": instances}, headers=headers)
    assert response.status_code == 200, response.text
    return int(response.json()["version"])
