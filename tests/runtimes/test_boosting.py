"""XGBoost and LightGBM: converted with onnxmltools, verified, registered and served."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris

from slipway.errors import ConversionMismatch, InvalidInput, UnsupportedFormat
from slipway.local import Registry
from slipway.runtimes.boosting import boosting_framework, convert_boosting
from slipway.runtimes.onnx import OnnxRuntime
from tests.runtimes.frameworks import require
from tests.runtimes.serve import make_settings, serving, v2_infer

xgboost = require("xgboost")
lightgbm = require("lightgbm")


def _xgb_classifier(x: np.ndarray, y: np.ndarray) -> object:
    return xgboost.XGBClassifier(n_estimators=15, max_depth=3, n_jobs=1).fit(x, y)


def _xgb_regressor(x: np.ndarray, y: np.ndarray) -> object:
    return xgboost.XGBRegressor(n_estimators=15, max_depth=3, n_jobs=1).fit(x, y)


def _lgbm_classifier(x: np.ndarray, y: np.ndarray) -> object:
    return lightgbm.LGBMClassifier(n_estimators=15, n_jobs=1, verbose=-1).fit(x, y)


def _lgbm_regressor(x: np.ndarray, y: np.ndarray) -> object:
    return lightgbm.LGBMRegressor(n_estimators=15, n_jobs=1, verbose=-1).fit(x, y)


CASES = [
    pytest.param(_xgb_classifier, load_breast_cancer, id="xgboost-binary"),
    pytest.param(_xgb_classifier, load_iris, id="xgboost-multiclass"),
    pytest.param(_xgb_regressor, load_diabetes, id="xgboost-regressor"),
    pytest.param(_lgbm_classifier, load_breast_cancer, id="lightgbm-binary"),
    pytest.param(_lgbm_classifier, load_iris, id="lightgbm-multiclass"),
    pytest.param(_lgbm_regressor, load_diabetes, id="lightgbm-regressor"),
]


@pytest.mark.parametrize(("fit", "dataset"), CASES)
def test_conversion_reproduces_the_framework(fit, dataset, tmp_path: Path) -> None:
    x, y = dataset(return_X_y=True)
    x = x.astype(np.float32)
    estimator = fit(x, y)

    path = tmp_path / "model.onnx"
    path.write_bytes(convert_boosting(estimator, x))
    outputs = OnnxRuntime.load(path).predict({"input": x})

    if hasattr(estimator, "predict_proba"):
        np.testing.assert_array_equal(outputs["label"], estimator.predict(x))
        np.testing.assert_allclose(outputs["probabilities"], estimator.predict_proba(x), atol=1e-4)
    else:
        expected = estimator.predict(x)
        np.testing.assert_allclose(outputs["variable"].ravel(), expected, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize(
    ("fit", "framework"),
    [
        pytest.param(_xgb_classifier, "xgboost", id="xgboost"),
        pytest.param(_lgbm_classifier, "lightgbm", id="lightgbm"),
    ],
)
def test_registered_and_served_through_v2_and_predict(fit, framework: str, tmp_path: Path) -> None:
    x, y = load_breast_cancer(return_X_y=True)
    x = x.astype(np.float32)
    estimator = fit(x, y)

    with Registry(make_settings(tmp_path / "home")) as registry:
        record = registry.register_sklearn("cancer", estimator, x, metrics={"auc": 0.99})
        assert record.format == "onnx"
        assert record.meta.tags["framework"] == f"{framework}:{type(estimator).__name__}"
        assert record.meta.hyperparameters["n_estimators"] == 15
        assert record.profile is not None and record.profile.rows == len(x)

        rows = x[:25]
        with serving(registry, "cancer", record.number) as client:
            outputs = v2_infer(
                client,
                "cancer",
                [
                    {
                        "name": "input",
                        "datatype": "FP32",
                        "shape": list(rows.shape),
                        "data": rows.ravel().tolist(),
                    }
                ],
            )
            predicted = client.post("/predict/cancer", json={"instances": rows.tolist()})

    np.testing.assert_array_equal(outputs["label"]["data"], estimator.predict(rows))
    probabilities = np.array(outputs["probabilities"]["data"]).reshape(
        outputs["probabilities"]["shape"]
    )
    np.testing.assert_allclose(probabilities, estimator.predict_proba(rows), atol=1e-4)
    assert predicted.status_code == 200, predicted.text
    assert predicted.json()["predictions"] == estimator.predict(rows).tolist()


def test_framework_is_recognised_by_module() -> None:
    assert boosting_framework(xgboost.XGBRegressor()) == "xgboost"
    assert boosting_framework(lightgbm.LGBMRegressor()) == "lightgbm"
    from sklearn.linear_model import Ridge

    assert boosting_framework(Ridge()) is None


def test_unfitted_model_is_refused() -> None:
    x, _ = load_iris(return_X_y=True)
    with pytest.raises(InvalidInput, match="not fitted"):
        convert_boosting(xgboost.XGBClassifier(), x)


def test_booster_without_the_sklearn_wrapper_is_refused() -> None:
    x, y = load_diabetes(return_X_y=True)
    booster = xgboost.train({"max_depth": 2}, xgboost.DMatrix(x, label=y), num_boost_round=2)
    with pytest.raises(UnsupportedFormat, match="XGBClassifier"):
        convert_boosting(booster, x)


def test_sample_with_the_wrong_width_is_refused() -> None:
    x, y = load_iris(return_X_y=True)
    estimator = _lgbm_classifier(x, y)
    with pytest.raises(InvalidInput, match="fitted on 4"):
        convert_boosting(estimator, x[:, :3])


def test_a_mismatch_names_the_converter_that_made_it() -> None:
    # onnxmltools leaves out reg:logistic's sigmoid: the check refuses the conversion, and
    # its advice must be about onnxmltools, which made it, not skl2onnx.
    x, y = load_breast_cancer(return_X_y=True)
    estimator = xgboost.XGBRegressor(
        n_estimators=5, max_depth=2, n_jobs=1, objective="reg:logistic"
    ).fit(x, y)
    with pytest.raises(ConversionMismatch, match="onnxmltools") as refused:
        convert_boosting(estimator, x)
    assert "skl2onnx" not in str(refused.value)


@pytest.mark.parametrize(("fit", "dataset"), CASES[::3])
def test_the_same_model_converts_to_the_same_bytes(fit, dataset) -> None:
    x, y = dataset(return_X_y=True)
    estimator = fit(x, y)
    assert convert_boosting(estimator, x) == convert_boosting(estimator, x)
