"""scikit-learn → ONNX conversion, checked against the estimator's own outputs."""

from __future__ import annotations

import copy
from pathlib import Path

import msgspec
import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from slipway.errors import (
    ConversionMismatch,
    InvalidInput,
    SchemaMismatch,
    UnsupportedFormat,
)
from slipway.registry.records import TensorSpec
from slipway.runtimes.onnx import OnnxRuntime
from slipway.runtimes.sklearn import convert_sklearn, describe_estimator, verify_conversion


def _load(tmp_path: Path, onnx_bytes: bytes) -> OnnxRuntime:
    path = tmp_path / "model.onnx"
    path.write_bytes(onnx_bytes)
    return OnnxRuntime.load(path)


@pytest.mark.parametrize(
    ("dataset", "make"),
    [
        pytest.param("cancer", lambda: LogisticRegression(max_iter=10_000), id="logistic"),
        pytest.param(
            "cancer", lambda: RandomForestClassifier(n_estimators=20, random_state=0), id="forest"
        ),
        pytest.param(
            "cancer",
            lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
            id="pipeline",
        ),
        pytest.param("iris", lambda: LogisticRegression(max_iter=1000), id="iris-multiclass"),
        pytest.param(
            "iris",
            lambda: RandomForestClassifier(n_estimators=20, random_state=0),
            id="iris-forest",
        ),
    ],
)
def test_classifier_converts_and_matches(
    request: pytest.FixtureRequest, tmp_path: Path, dataset: str, make
) -> None:
    x, y = request.getfixturevalue(dataset)
    estimator = make().fit(x, y)
    n_classes = len(np.unique(y))

    runtime = _load(tmp_path, convert_sklearn(estimator, x))

    assert runtime.signature.inputs == [TensorSpec("input", "FP32", [-1, x.shape[1]])]
    assert runtime.signature.outputs == [
        TensorSpec("label", "INT64", [-1]),
        TensorSpec("probabilities", "FP32", [-1, n_classes]),
    ]
    out = runtime.predict({"input": x.astype(np.float32)})
    expected = estimator.predict_proba(x.astype(np.float32).astype(np.float64))
    np.testing.assert_allclose(out["probabilities"], expected, atol=1e-4)
    assert np.mean(out["label"] == estimator.predict(x)) > 0.99


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: Ridge(alpha=0.1), id="ridge"),
        pytest.param(
            lambda: GradientBoostingRegressor(n_estimators=50, random_state=0), id="boosting"
        ),
    ],
)
def test_regressor_converts_and_matches(diabetes, tmp_path: Path, make) -> None:
    x, y = diabetes
    estimator = make().fit(x, y)

    runtime = _load(tmp_path, convert_sklearn(estimator, x, input_name="features"))

    assert runtime.signature.inputs == [TensorSpec("features", "FP32", [-1, 10])]
    assert runtime.signature.outputs == [TensorSpec("variable", "FP32", [-1, 1])]
    out = runtime.predict({"features": x})["variable"]
    np.testing.assert_allclose(out[:, 0], estimator.predict(x), rtol=1e-4, atol=1e-4)


def test_string_classes_give_a_bytes_label(iris, tmp_path: Path) -> None:
    x, y = iris
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    estimator = LogisticRegression(max_iter=1000).fit(x, names)

    runtime = _load(tmp_path, convert_sklearn(estimator, x))

    assert runtime.signature.outputs[0] == TensorSpec("label", "BYTES", [-1])
    assert list(runtime.predict({"input": x[:3]})["label"]) == ["setosa"] * 3


def test_changed_probabilities_raise_conversion_mismatch(cancer, cancer_pipeline) -> None:
    x, y = cancer
    onnx_bytes = convert_sklearn(cancer_pipeline, x)
    other = make_pipeline(StandardScaler(), LogisticRegression(C=0.001)).fit(x, y)

    with pytest.raises(ConversionMismatch, match=r"probability of class \d on row \d+ is"):
        verify_conversion(other, onnx_bytes, x)


def test_changed_regression_raises_conversion_mismatch(diabetes, diabetes_ridge) -> None:
    x, y = diabetes
    onnx_bytes = convert_sklearn(diabetes_ridge, x)
    other = Ridge(alpha=10.0).fit(x, y)

    with pytest.raises(ConversionMismatch, match=r"on row \d+: [\d.]+ vs [\d.]+"):
        verify_conversion(other, onnx_bytes, x)


class _FlippedLabels(LogisticRegression):
    """Predicts the other class: a stand-in for an ONNX model that disagrees on labels."""

    def predict(self, X):  # noqa: N803 - scikit-learn's argument name
        return 1 - super().predict(X)


def _flipped(template: LogisticRegression) -> _FlippedLabels:
    flipped = _FlippedLabels()
    flipped.__dict__.update(template.__dict__)
    return flipped


def test_label_disagreement_raises_unless_probabilities_tie(cancer, cancer_lr) -> None:
    x, _ = cancer
    with pytest.raises(ConversionMismatch, match=r"predicts label \d on row 0 where"):
        verify_conversion(_flipped(cancer_lr), convert_sklearn(cancer_lr, x), x)

    # Zero weights: every row has probabilities 0.5 / 0.5, a tie either label may win.
    tied = copy.deepcopy(cancer_lr)
    tied.coef_[:] = 0.0
    tied.intercept_[:] = 0.0
    verify_conversion(_flipped(tied), convert_sklearn(tied, x), x)


def test_check_rows_limits_the_verification(cancer, cancer_lr) -> None:
    x, _ = cancer
    onnx_bytes = convert_sklearn(cancer_lr, x)
    flipped = _flipped(cancer_lr)
    with pytest.raises(ConversionMismatch, match="1 of 1 rows differ"):
        verify_conversion(flipped, onnx_bytes, x[:1])
    # Skipping the check is not an option: zero rows would verify nothing.
    with pytest.raises(InvalidInput, match="at least one row"):
        convert_sklearn(cancer_lr, x, check_rows=0)


def test_unfitted_estimator_is_refused(cancer) -> None:
    with pytest.raises(InvalidInput, match="not fitted"):
        convert_sklearn(LogisticRegression(), cancer[0])


def test_sample_of_the_wrong_width_is_refused(cancer, cancer_lr) -> None:
    with pytest.raises(SchemaMismatch, match="has 29 features but LogisticRegression"):
        convert_sklearn(cancer_lr, cancer[0][:, :29])
    with pytest.raises(InvalidInput, match="non-empty 2-D"):
        convert_sklearn(cancer_lr, cancer[0][0])


def test_registering_with_rows_that_are_not_numbers_is_invalid_input(iris, tmp_path: Path) -> None:
    from slipway.local import Registry
    from tests.runtimes.serve import make_settings

    x, y = iris
    estimator = LogisticRegression(max_iter=1000).fit(x, y)
    rows = np.column_stack([x, np.full(len(x), "red")]).astype(object)
    with Registry(make_settings(tmp_path / "home")) as registry:
        with pytest.raises(InvalidInput, match="numeric rows"):
            registry.register_sklearn("iris", estimator, rows)
        assert registry.store.list_models() == []


def test_clusterer_is_unsupported(iris) -> None:
    kmeans = KMeans(n_clusters=3, n_init=1, random_state=0).fit(iris[0])
    with pytest.raises(UnsupportedFormat, match="neither a classifier nor a regressor"):
        convert_sklearn(kmeans, iris[0])


class _HomeMadeClassifier(LogisticRegression):
    """A subclass skl2onnx has no converter for."""


def test_estimator_without_converter_is_unsupported(iris) -> None:
    x, y = iris
    with pytest.raises(UnsupportedFormat, match="skl2onnx cannot convert _HomeMadeClassifier"):
        convert_sklearn(_HomeMadeClassifier(max_iter=1000).fit(x, y), x)


def test_describe_estimator_is_json_safe(cancer_pipeline) -> None:
    lr = LogisticRegression(C=np.float64(0.5), max_iter=np.int64(300), tol=float("nan"))

    params = describe_estimator(lr)

    assert params["C"] == 0.5 and type(params["C"]) is float
    assert params["max_iter"] == 300 and type(params["max_iter"]) is int
    assert params["tol"] == "nan"
    assert params["class_weight"] is None
    assert params["fit_intercept"] is True
    assert params == msgspec.json.decode(msgspec.json.encode(params))

    steps = describe_estimator(cancer_pipeline)
    assert isinstance(steps["steps"], str) and "StandardScaler" in steps["steps"]
    assert msgspec.json.decode(msgspec.json.encode(steps)) == steps


def test_string_label_disagreement_names_both_labels(iris) -> None:
    x, y = iris
    names = np.array(["setosa", "versicolor", "virginica"])
    estimator = LogisticRegression(max_iter=1000).fit(x, names[y])
    onnx_bytes = convert_sklearn(estimator, x)

    class Renamed(LogisticRegression):
        def predict(self, X):  # noqa: N803 - scikit-learn's argument name
            return np.char.upper(super().predict(X).astype(str))

    renamed = Renamed()
    renamed.__dict__.update(estimator.__dict__)
    with pytest.raises(ConversionMismatch, match="label 'setosa' on row 0 where the estimator"):
        verify_conversion(renamed, onnx_bytes, x)


def test_the_same_estimator_converts_to_the_same_bytes(cancer, cancer_pipeline) -> None:
    # Content addressing: registering the same estimator twice stores one artifact.
    x, _ = cancer
    assert convert_sklearn(cancer_pipeline, x) == convert_sklearn(cancer_pipeline, x)
