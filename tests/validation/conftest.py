"""Real models fitted here: a good classifier and a deliberately degraded one, on scikit-learn's
bundled breast-cancer data, registered in a real registry; a holdout CSV of unseen rows."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from slipway.commands.validation import serve_in_process
from slipway.local import Registry
from slipway.settings import Settings
from slipway.validation.holdout import Holdout, read_holdout
from slipway.validation.pipeline import Serve


@pytest.fixture(scope="session")
def split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    data = load_breast_cancer()
    x = data.data.astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, data.target, test_size=0.3, random_state=0, stratify=data.target
    )
    return x_train, x_test, y_train, y_test


@pytest.fixture(scope="session")
def estimators(split) -> tuple[object, object]:
    x_train, _, y_train, _ = split
    good = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x_train, y_train)
    # Degraded: unscaled inputs and almost no capacity (about 0.88 accuracy against 0.97).
    bad = LogisticRegression(C=1e-7, max_iter=1000).fit(x_train, y_train)
    return good, bad


@pytest.fixture
def registry(tmp_path: Path, split, estimators) -> Iterator[Registry]:
    """``cancer@1`` good, ``cancer@2`` degraded, ``cancer@3`` good again; production
    deployment ``cancer-prod`` serves 1."""
    x_train = split[0]
    settings = Settings.from_env({"SLIPWAY_HOME": str(tmp_path / "home")}, port=0)
    good, bad = estimators
    with Registry(settings) as registry:
        for estimator in (good, bad, good):
            registry.register_sklearn("cancer", estimator, x_train)
        registry.store.create_deployment("cancer-prod", "cancer", 1)
        yield registry


@pytest.fixture
def holdout_csv(tmp_path: Path, split) -> Path:
    _, x_test, _, y_test = split
    path = tmp_path / "holdout.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*(f"f{i}" for i in range(x_test.shape[1])), "label"])
        for row, label in zip(x_test.tolist(), y_test.tolist(), strict=True):
            writer.writerow([*row, label])
    return path


@pytest.fixture
def holdout(holdout_csv: Path) -> Holdout:
    return read_holdout(holdout_csv, "label")


@pytest.fixture
def serve(registry: Registry) -> Serve:
    return serve_in_process(registry.artifacts)
