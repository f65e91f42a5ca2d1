"""A real registry with a fitted iris model, and real bundles written from it (once per session:
each bundle builds slipway's wheel and asks pip's resolver for the serving lock)."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from slipway.local import Registry
from slipway.packaging.bundle import BundleOptions, write_bundle
from slipway.packaging.manifest import BundleManifest
from slipway.settings import Settings

# Inputs arrive in millimetres (the model was fitted on centimetres); the answer gains names,
# returned as a plain list of strings (served as V2 BYTES).
HANDLER = """
import numpy as np

SPECIES = ["setosa", "versicolor", "virginica"]


def preprocess(request):
    rows = np.asarray(request["input"], dtype=np.float32)
    if (rows < 0).any():
        raise ValueError("measurements cannot be negative")
    return {"input": rows / 10.0}


def postprocess(outputs):
    return {**outputs, "species": [SPECIES[label] for label in outputs["label"]]}
"""

HANDLER_TEST = """
import numpy as np
import pytest

from handler import postprocess, preprocess


def test_millimetres_become_centimetres():
    out = preprocess({"input": np.array([[51.0, 35.0, 14.0, 2.0]])})
    np.testing.assert_allclose(out["input"], [[5.1, 3.5, 1.4, 0.2]], rtol=1e-6)


def test_negative_lengths_are_refused():
    with pytest.raises(ValueError):
        preprocess({"input": np.array([[-1.0, 0.0, 0.0, 0.0]])})


def test_labels_get_names():
    out = postprocess({"label": np.array([2, 0])})
    assert out["species"] == ["virginica", "setosa"]
"""


def settings_for(home: Path, **overrides: object) -> Settings:
    return Settings.from_env({"SLIPWAY_HOME": str(home)}, port=0, **overrides)


def write_handler(directory: Path, *, test: str = HANDLER_TEST, handler: str = HANDLER) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "handler.py").write_text(textwrap.dedent(handler))
    if test:
        (directory / "test_handler.py").write_text(textwrap.dedent(test))
    return directory / "handler.py"


def write_iris_bundle(
    home: Path, out: Path, options: BundleOptions = BundleOptions()
) -> BundleManifest:
    """Write the bundle of iris@2 from the registry in ``home`` into ``out``."""
    with Registry(settings_for(home)) as registry:
        return write_bundle(
            registry.store, registry.artifacts, "iris", 2, out, registry.settings, options
        )


@pytest.fixture(scope="session")
def iris() -> tuple[LogisticRegression, np.ndarray]:
    data = load_iris()
    x = data.data.astype(np.float32)
    return LogisticRegression(max_iter=1000).fit(x, data.target), x


@pytest.fixture(scope="session")
def source_home(
    tmp_path_factory: pytest.TempPathFactory, iris: tuple[LogisticRegression, np.ndarray]
) -> Iterator[Path]:
    """A registry holding iris@1 and iris@2 (the bundles are of version 2)."""
    home = tmp_path_factory.mktemp("source") / "home"
    estimator, x = iris
    with Registry(settings_for(home)) as registry:
        registry.register_sklearn("iris", LogisticRegression(C=0.01, max_iter=1000).fit(
            x, load_iris().target), x)  # fmt: skip
        registry.register_sklearn("iris", estimator, x, metrics={"accuracy": 0.97})
    yield home


@pytest.fixture(scope="session")
def bundle(
    tmp_path_factory: pytest.TempPathFactory, source_home: Path
) -> tuple[Path, BundleManifest]:
    """A bundle of iris@2 without a handler."""
    out = tmp_path_factory.mktemp("bundles") / "iris-2"
    return out, write_iris_bundle(source_home, out)


@pytest.fixture(scope="session")
def handler_bundle(
    tmp_path_factory: pytest.TempPathFactory, source_home: Path
) -> tuple[Path, BundleManifest]:
    """A bundle of iris@2 with the millimetre handler, served as deployment ``iris-mm``."""
    handler = write_handler(tmp_path_factory.mktemp("handler"))
    out = tmp_path_factory.mktemp("bundles") / "iris-2-mm"
    return out, write_iris_bundle(
        source_home, out, BundleOptions(deployment="iris-mm", handler=handler)
    )
