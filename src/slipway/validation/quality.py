"""Stage 2, model quality: scikit-learn metrics on the holdout, held to absolute thresholds and
to the production version's own metrics on the same rows ("no worse by more than X")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slipway.errors import InvalidInput
from slipway.registry.records import Signature
from slipway.validation.checks import Check, at_least, at_most
from slipway.validation.policy import Bound

LOWER_IS_BETTER = frozenset({"rmse", "mae"})
MAX_CURVE_POINTS = 200


@dataclass(frozen=True)
class Scores:
    """The metrics of one version on the holdout, and what the plots need."""

    task: str  # "classification" | "regression"
    metrics: dict[str, float]
    plots: dict[str, Any] = field(default_factory=dict)


def score(signature: Signature, outputs: dict[str, np.ndarray], labels: np.ndarray) -> Scores:
    """Classification metrics when the model has an integer or string output (its predicted
    class), regression metrics when its first output is a float."""
    first = signature.outputs[0].name
    predicted = outputs[first]
    if predicted.dtype.kind in "iubUSO":
        probabilities = next(
            (a for name, a in outputs.items() if name != first and a.dtype.kind == "f"), None
        )
        return _classification(predicted.reshape(len(labels)), probabilities, labels)
    return _regression(predicted.reshape(len(labels), -1)[:, 0].astype(np.float64), labels)


def _classification(
    predicted: np.ndarray, probabilities: np.ndarray | None, labels: np.ndarray
) -> Scores:
    # Imported here: the slipway CLI (and so a serving replica) imports this module, and
    # scikit-learn is a registration/validation library, not in a bundle's serving lock.
    from sklearn import metrics as skm

    if labels.dtype.kind != predicted.dtype.kind and labels.dtype.kind in "iuf":
        predicted = predicted.astype(labels.dtype)
    elif labels.dtype.kind != predicted.dtype.kind:
        predicted, labels = predicted.astype(str), labels.astype(str)
    classes = np.unique(np.concatenate([labels, predicted]))
    binary = len(classes) == 2
    average = "binary" if binary else "macro"
    pos = classes[-1]
    kwargs: dict[str, Any] = {"zero_division": 0.0, "average": average}
    if binary:
        kwargs["pos_label"] = pos
    values = {
        "accuracy": skm.accuracy_score(labels, predicted),
        "precision": skm.precision_score(labels, predicted, **kwargs),
        "recall": skm.recall_score(labels, predicted, **kwargs),
        "f1": skm.f1_score(labels, predicted, **kwargs),
    }
    per_class = skm.precision_recall_fscore_support(
        labels, predicted, labels=classes, zero_division=0.0
    )
    for i, cls in enumerate(classes):
        values[f"precision[{cls}]"] = per_class[0][i]
        values[f"recall[{cls}]"] = per_class[1][i]
        values[f"f1[{cls}]"] = per_class[2][i]
    plots: dict[str, Any] = {
        "classes": [str(c) for c in classes],
        "confusion": skm.confusion_matrix(labels, predicted, labels=classes).tolist(),
    }
    present = np.unique(labels)
    if probabilities is not None and probabilities.ndim == 2 and len(present) > 1:
        if binary and probabilities.shape[1] == 2:
            positive = probabilities[:, 1].astype(np.float64)
            values["roc_auc"] = skm.roc_auc_score(labels == pos, positive)
            fpr, tpr, _ = skm.roc_curve(labels == pos, positive)
            step = max(1, len(fpr) // MAX_CURVE_POINTS)
            plots["roc"] = {"fpr": fpr[::step].tolist(), "tpr": tpr[::step].tolist()}
        elif probabilities.shape[1] == len(classes) == len(present):
            rows = probabilities.astype(np.float64)
            rows = rows / np.clip(rows.sum(axis=1, keepdims=True), 1e-12, None)
            values["roc_auc"] = skm.roc_auc_score(labels, rows, multi_class="ovr", labels=classes)
    return Scores("classification", {k: float(v) for k, v in values.items()}, plots)


def _regression(predicted: np.ndarray, labels: np.ndarray) -> Scores:
    from sklearn import metrics as skm

    if labels.dtype.kind not in "iuf":
        raise InvalidInput("the model predicts numbers but the label column holds text")
    truth = labels.astype(np.float64)
    values = {
        "rmse": float(np.sqrt(skm.mean_squared_error(truth, predicted))),
        "mae": float(skm.mean_absolute_error(truth, predicted)),
        "r2": float(skm.r2_score(truth, predicted)),
    }
    residuals = (predicted - truth).tolist()[:2000]
    return Scores("regression", values, {"residuals": residuals})


def quality_checks(
    candidate: Scores, production: Scores | None, bounds: dict[str, Bound], against: str
) -> list[Check]:
    """A check per metric: absolute bounds and, with a production version, the relative one."""
    unknown = sorted(set(bounds) - set(candidate.metrics))
    if unknown:
        raise InvalidInput(
            f"policy quality names metric(s) {', '.join(unknown)} that a {candidate.task} model"
            f" does not have; use {', '.join(sorted(candidate.metrics))}"
        )
    checks = []
    for name, value in candidate.metrics.items():
        bound = bounds.get(name, Bound())
        if bound.min is None and bound.max is None:
            checks.append(Check(name, round(value, 6), "", "info"))
        if bound.min is not None:
            checks.append(at_least(name, value, bound.min))
        if bound.max is not None:
            checks.append(at_most(name, value, bound.max))
        if bound.max_worse is not None:
            checks.append(_relative(name, value, production, bound.max_worse, against))
    return checks


def _relative(
    name: str, value: float, production: Scores | None, max_worse: float, against: str
) -> Check:
    label = f"{name} vs production"
    if production is None or name not in production.metrics:
        return Check(label, None, f"worse by <= {max_worse:g}", "fail", "no production version")
    theirs = production.metrics[name]
    worse = value - theirs if name in LOWER_IS_BETTER else theirs - value
    detail = f"candidate {value:.4f}, production {against} {theirs:.4f}"
    check = at_most(label, worse, max_worse, detail)
    return Check(label, check.value, f"worse by <= {max_worse:g}", check.verdict, detail)
