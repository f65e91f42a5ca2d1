"""scikit-learn estimators become ONNX at registration, and the result is checked.

``convert_sklearn`` converts a fitted classifier, regressor or ``Pipeline`` ending in one with
skl2onnx, then runs the ONNX model with onnxruntime on rows of the sample and compares it with
the estimator's own outputs. Slipway serves the ONNX file, never the pickle, so a conversion
that changes predictions must fail here rather than in production.

Tolerances. The ONNX graph takes float32 input and mostly computes in float32, while
scikit-learn computes in float64, so the two differ by rounding: about 1e-7 relative per
operation, growing with the number of operations (features, trees). We allow

* probabilities: ``|onnx - sklearn| <= 1e-4`` (absolute; probabilities live in [0, 1]);
* regression outputs: ``|onnx - sklearn| <= 1e-4 + 1e-4 * |sklearn|``;
* labels: equal, except on rows where the estimator's two highest probabilities are within
  1e-4 of each other, where float32 rounding may legitimately pick the other class.

Both sides see the same input values: the sample is rounded to float32 first and scikit-learn
gets those rounded values, so only arithmetic differs, not the data.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from slipway.errors import ConversionMismatch, InvalidInput, SchemaMismatch, UnsupportedFormat

PROBABILITY_ATOL = 1e-4
REGRESSION_RTOL = 1e-4
REGRESSION_ATOL = 1e-4
TIE_MARGIN = 1e-4

# Opset 17 / ai.onnx.ml 3 hold every operator skl2onnx emits for common estimators and load in
# every onnxruntime Slipway supports (>= 1.18), so a model registered on a new install still
# serves on an older replica. A pinned opset also keeps conversions reproducible across
# skl2onnx upgrades, which otherwise pick their newest tested opset.
TARGET_OPSET: dict[str, int] = {"": 17, "ai.onnx.ml": 3}


def _advice(converter: str) -> str:
    return (
        f"{converter} does not convert this estimator faithfully; export it to ONNX yourself,"
        " check its outputs, and register the ONNX file"
    )


def convert_sklearn(
    estimator: Any, sample: np.ndarray, *, input_name: str = "input", check_rows: int = 200
) -> bytes:
    """Convert a fitted estimator to ONNX bytes and verify the result on ``sample`` rows.

    The model takes one FP32 input ``input_name`` of shape ``[N, n_features]``. Classifiers
    output ``label`` (INT64, or BYTES for string classes) and ``probabilities`` (FP32
    ``[N, n_classes]``); regressors output ``variable`` (FP32 ``[N, n_targets]``).

    Raises ``UnsupportedFormat`` when skl2onnx cannot convert the estimator, ``InvalidInput``
    when it is not fitted or ``sample`` is unusable, and ``ConversionMismatch`` when the ONNX
    model's outputs differ from the estimator's beyond the tolerances in the module docstring.
    """
    from sklearn.base import is_classifier, is_regressor
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    classifier = is_classifier(estimator)
    if not classifier and not is_regressor(estimator):
        raise UnsupportedFormat(
            f"{type(estimator).__name__} is neither a classifier nor a regressor; Slipway"
            " converts those (or a Pipeline ending in one). Export other estimators to ONNX"
            " yourself and register the file"
        )
    try:
        check_is_fitted(estimator)
    except NotFittedError as exc:
        raise InvalidInput(
            f"{type(estimator).__name__} is not fitted; call fit() before registering it"
        ) from exc

    rows = _check_sample(estimator, sample)
    onnx_bytes = _convert(estimator, rows.shape[1], input_name, classifier)
    verify_conversion(estimator, onnx_bytes, rows[:check_rows], input_name=input_name)
    return onnx_bytes


def _check_sample(estimator: Any, sample: np.ndarray) -> np.ndarray:
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


def _convert(estimator: Any, n_features: int, input_name: str, classifier: bool) -> bytes:
    import skl2onnx
    from skl2onnx.common.data_types import FloatTensorType

    # Without zipmap a classifier's probabilities are one [N, n_classes] tensor instead of a
    # list of dicts, which is what V2 clients and the drift profile need. For a Pipeline the
    # option goes to the pipeline's id and skl2onnx passes it on to the final classifier.
    options = {id(estimator): {"zipmap": False}} if classifier else None
    try:
        model = skl2onnx.convert_sklearn(
            estimator,
            # A fixed graph name: skl2onnx's default is a random uuid, which gave the same
            # estimator a new digest on every registration.
            name=type(estimator).__name__,
            initial_types=[(input_name, FloatTensorType([None, n_features]))],
            options=options,
            target_opset=TARGET_OPSET,
        )
    except Exception as exc:  # skl2onnx raises RuntimeError, NotImplementedError, ...
        raise UnsupportedFormat(
            f"skl2onnx cannot convert {type(estimator).__name__}: {exc}; see"
            " `skl2onnx.supported_converters()`, or export the model to ONNX yourself"
        ) from exc
    data: bytes = model.SerializeToString()
    return data


def verify_conversion(
    estimator: Any,
    onnx_bytes: bytes,
    rows: np.ndarray,
    *,
    input_name: str = "input",
    converter: str = "skl2onnx",
) -> None:
    """Raise ``ConversionMismatch`` unless the ONNX model reproduces ``estimator`` on ``rows``;
    its advice names ``converter``, the tool that made ``onnx_bytes``."""
    import onnxruntime as ort
    from sklearn.base import is_classifier

    rows = np.asarray(rows, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise InvalidInput(
            f"verification needs at least one row of features; got shape {list(rows.shape)}"
        )
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        names = [out.name for out in session.get_outputs()]
        outputs = dict(zip(names, session.run(None, {input_name: rows}), strict=True))
    except Exception as exc:  # onnxruntime raises its own pybind exception types
        raise ConversionMismatch(
            f"onnxruntime cannot run the converted {type(estimator).__name__}: {exc}"
        ) from exc
    # The same float32-rounded values for both sides: only the arithmetic may differ.
    as_seen = rows.astype(np.float64)
    if is_classifier(estimator):
        _verify_classifier(estimator, as_seen, outputs, _advice(converter))
    else:
        _verify_regressor(estimator, as_seen, outputs, _advice(converter))


def _verify_classifier(
    estimator: Any, rows: np.ndarray, outputs: dict[str, np.ndarray], advice: str
) -> None:
    name = type(estimator).__name__
    expected_labels = np.asarray(estimator.predict(rows))
    labels = outputs.get("label")
    if labels is None:
        raise ConversionMismatch(f"the ONNX model of {name} has no 'label' output")
    labels = labels.reshape(expected_labels.shape)
    proba = None
    if hasattr(estimator, "predict_proba"):
        proba = np.asarray(estimator.predict_proba(rows), dtype=np.float64)
        got = outputs.get("probabilities")
        if got is None or got.shape != proba.shape:
            shape = None if got is None else list(got.shape)
            raise ConversionMismatch(
                f"the ONNX model of {name} outputs probabilities of shape {shape};"
                f" the estimator gives {list(proba.shape)}"
            )
        diff = _excess(got.astype(np.float64), proba, PROBABILITY_ATOL, 0.0) + PROBABILITY_ATOL
        row, col = np.unravel_index(int(np.argmax(diff)), diff.shape)
        if diff[row, col] > PROBABILITY_ATOL:
            raise ConversionMismatch(
                f"the ONNX model of {name} differs from the estimator: probability of class"
                f" {col} on row {row} is {got[row, col]:.6g} vs {proba[row, col]:.6g}"
                f" (|diff| {diff[row, col]:.3g} > {PROBABILITY_ATOL:g}); {advice}"
            )
    wrong = expected_labels != labels
    if proba is not None and proba.shape[1] >= 2:
        top2 = np.sort(proba, axis=1)[:, -2:]
        wrong &= (top2[:, 1] - top2[:, 0]) > TIE_MARGIN
    if np.any(wrong):
        first = int(np.flatnonzero(wrong)[0])
        onnx_label, sklearn_label = labels.tolist()[first], expected_labels.tolist()[first]
        raise ConversionMismatch(
            f"the ONNX model of {name} predicts label {onnx_label!r} on row {first} where the"
            f" estimator predicts {sklearn_label!r} ({int(wrong.sum())} of {len(wrong)} rows"
            f" differ); {advice}"
        )


def _verify_regressor(
    estimator: Any, rows: np.ndarray, outputs: dict[str, np.ndarray], advice: str
) -> None:
    name = type(estimator).__name__
    expected = np.asarray(estimator.predict(rows), dtype=np.float64)
    got = next(iter(outputs.values())).astype(np.float64)
    if got.size != expected.size:
        raise ConversionMismatch(
            f"the ONNX model of {name} outputs shape {list(got.shape)}; the estimator gives"
            f" {list(expected.shape)}"
        )
    got = got.reshape(expected.shape)
    excess = _excess(got, expected, REGRESSION_ATOL, REGRESSION_RTOL)
    worst = np.unravel_index(int(np.argmax(excess)), excess.shape)
    if excess[worst] > 0:
        raise ConversionMismatch(
            f"the ONNX model of {name} differs from the estimator on row {worst[0]}:"
            f" {got[worst]:.8g} vs {expected[worst]:.8g} (allowed |diff| <="
            f" {REGRESSION_ATOL:g} + {REGRESSION_RTOL:g}*|expected|); {advice}"
        )


def _excess(got: np.ndarray, expected: np.ndarray, atol: float, rtol: float) -> np.ndarray:
    """How far each value is beyond its tolerance (> 0 fails); a NaN on one side only is inf."""
    excess = np.abs(got - expected) - (atol + rtol * np.abs(expected))
    both_nan = np.isnan(got) & np.isnan(expected)
    return np.where(both_nan, -np.inf, np.where(np.isnan(excess), np.inf, excess))


def describe_estimator(estimator: Any) -> dict[str, Any]:
    """Hyperparameters from ``get_params(deep=False)``, JSON-safe.

    Strings, booleans, ``None`` and finite numbers stay as they are (numpy scalars become
    Python ones); anything else, including nested estimators and NaN, becomes ``str(value)``.
    """
    params: dict[str, Any] = {}
    for key, value in estimator.get_params(deep=False).items():
        if isinstance(value, np.generic):
            value = value.item()
        finite = isinstance(value, float) and math.isfinite(value)
        plain = value is None or isinstance(value, bool | int | str) or finite
        params[key] = value if plain else str(value)
    return params
