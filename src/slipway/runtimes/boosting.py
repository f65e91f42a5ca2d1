"""XGBoost and LightGBM models become ONNX at registration, checked against the framework.

The scikit-learn wrappers (``XGBClassifier``, ``XGBRegressor``, ``LGBMClassifier``,
``LGBMRegressor``) are converted with onnxmltools and then verified exactly as scikit-learn
estimators are (``runtimes/sklearn.verify_conversion``: the same tolerances, the same
float32-rounded rows on both sides), because the wrappers speak scikit-learn's
``predict``/``predict_proba``. Slipway then serves the ONNX file with onnxruntime, so neither
framework is needed on a serving replica.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from slipway.errors import InvalidInput, SchemaMismatch, UnsupportedFormat
from slipway.runtimes.extras import import_extra
from slipway.runtimes.sklearn import verify_conversion

# The newest opset onnxmltools' tree converters support; every onnxruntime >= 1.18 loads it.
TARGET_OPSET = 15

_WRAPPERS = {
    "xgboost": ("XGBClassifier", "XGBRegressor"),
    "lightgbm": ("LGBMClassifier", "LGBMRegressor"),
}


def boosting_framework(estimator: Any) -> str | None:
    """``"xgboost"`` or ``"lightgbm"`` for those libraries' estimators, else ``None``."""
    root = type(estimator).__module__.split(".")[0]
    return root if root in _WRAPPERS else None


def convert_boosting(
    estimator: Any, sample: np.ndarray, *, input_name: str = "input", check_rows: int = 200
) -> bytes:
    """Convert a fitted XGBoost/LightGBM scikit-learn wrapper to ONNX bytes and verify it.

    Outputs follow the scikit-learn conversion: classifiers give ``label`` (INT64) and
    ``probabilities`` (FP32 ``[N, n_classes]``), regressors ``variable`` (FP32 ``[N, 1]``).
    Raises ``MissingExtra`` without onnxmltools, ``UnsupportedFormat`` for an estimator it
    cannot convert, ``InvalidInput``/``SchemaMismatch`` for an unusable sample and
    ``ConversionMismatch`` when the ONNX model disagrees with the framework.
    """
    framework = boosting_framework(estimator)
    name = type(estimator).__name__
    if framework is None or name not in _WRAPPERS[framework]:
        raise UnsupportedFormat(
            f"{name} is not one of {', '.join(n for names in _WRAPPERS.values() for n in names)};"
            " fit the scikit-learn wrapper of XGBoost or LightGBM, or export the model to ONNX"
            " yourself and register the file"
        )
    import_extra(framework)
    onnxmltools = import_extra("onnxmltools")
    from onnxmltools.convert.common.data_types import FloatTensorType

    rows = _rows(estimator, sample)
    initial_types = [(input_name, FloatTensorType([None, rows.shape[1]]))]
    # A fixed graph name (the default is a random uuid): the same model, the same digest.
    try:
        if framework == "xgboost":
            model = onnxmltools.convert_xgboost(
                estimator, name=name, initial_types=initial_types, target_opset=TARGET_OPSET
            )
        else:
            # zipmap=False: probabilities as one [N, n_classes] tensor, as for scikit-learn.
            model = onnxmltools.convert_lightgbm(
                estimator,
                name=name,
                initial_types=initial_types,
                target_opset=TARGET_OPSET,
                zipmap=False,
            )
    except Exception as exc:  # onnxmltools raises RuntimeError, NotImplementedError, ...
        if "not fitted" in str(exc).lower() or "need to call fit" in str(exc).lower():
            raise InvalidInput(f"{name} is not fitted; call fit() before registering it") from exc
        raise UnsupportedFormat(
            f"onnxmltools cannot convert {name}: {exc}; export the model to ONNX yourself"
            " and register the file"
        ) from exc
    onnx_bytes: bytes = model.SerializeToString()
    verify_conversion(
        estimator, onnx_bytes, rows[:check_rows], input_name=input_name, converter="onnxmltools"
    )
    return onnx_bytes


def _rows(estimator: Any, sample: np.ndarray) -> np.ndarray:
    if not _is_fitted(estimator):
        raise InvalidInput(
            f"{type(estimator).__name__} is not fitted; call fit() before registering it"
        )
    try:
        rows = np.asarray(sample, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"the sample must be numeric rows: {exc}") from exc
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise InvalidInput(
            f"the sample must be a non-empty 2-D array of rows; got shape {list(rows.shape)}"
        )
    expected = getattr(estimator, "n_features_in_", None)
    if expected is not None and rows.shape[1] != expected:
        raise SchemaMismatch(
            f"the sample has {rows.shape[1]} features but {type(estimator).__name__} was"
            f" fitted on {expected}"
        )
    return rows


def _is_fitted(estimator: Any) -> bool:
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    try:
        check_is_fitted(estimator)
    except NotFittedError:
        return False
    return True


def describe_boosting(estimator: Any) -> dict[str, Any]:
    """Hyperparameters that were set (``None`` means the library's default), JSON-safe."""
    from slipway.runtimes.sklearn import describe_estimator

    return {k: v for k, v in describe_estimator(estimator).items() if v is not None}
