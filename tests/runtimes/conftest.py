"""Real scikit-learn models fitted on bundled datasets, converted once per session to ONNX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from slipway.runtimes.sklearn import convert_sklearn


@pytest.fixture(scope="session")
def cancer() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_breast_cancer(return_X_y=True)
    return x, y


@pytest.fixture(scope="session")
def iris() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_iris(return_X_y=True)
    return x, y


@pytest.fixture(scope="session")
def diabetes() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_diabetes(return_X_y=True)
    return x, y


@pytest.fixture(scope="session")
def cancer_lr(cancer: tuple[np.ndarray, np.ndarray]) -> LogisticRegression:
    # Unscaled breast-cancer features need many lbfgs iterations to converge without a warning.
    return LogisticRegression(max_iter=10_000).fit(*cancer)


@pytest.fixture(scope="session")
def cancer_pipeline(cancer: tuple[np.ndarray, np.ndarray]) -> object:
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(*cancer)


@pytest.fixture(scope="session")
def cancer_forest(cancer: tuple[np.ndarray, np.ndarray]) -> RandomForestClassifier:
    return RandomForestClassifier(n_estimators=20, random_state=0).fit(*cancer)


@pytest.fixture(scope="session")
def diabetes_ridge(diabetes: tuple[np.ndarray, np.ndarray]) -> Ridge:
    return Ridge(alpha=0.1).fit(*diabetes)


@pytest.fixture(scope="session")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="session")
def cancer_lr_path(onnx_dir: Path, cancer_lr: LogisticRegression, cancer) -> Path:
    path = onnx_dir / "cancer_lr.onnx"
    path.write_bytes(convert_sklearn(cancer_lr, cancer[0]))
    return path


@pytest.fixture(scope="session")
def cancer_forest_path(onnx_dir: Path, cancer_forest: RandomForestClassifier, cancer) -> Path:
    path = onnx_dir / "cancer_forest.onnx"
    path.write_bytes(convert_sklearn(cancer_forest, cancer[0]))
    return path


@pytest.fixture(scope="session")
def diabetes_ridge_path(onnx_dir: Path, diabetes_ridge: Ridge, diabetes) -> Path:
    path = onnx_dir / "diabetes_ridge.onnx"
    path.write_bytes(convert_sklearn(diabetes_ridge, diabetes[0]))
    return path
