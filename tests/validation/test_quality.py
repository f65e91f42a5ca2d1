"""Quality metrics: multiclass and regression, on real fitted models and on plain values."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.model_selection import train_test_split

from slipway.commands.validation import serve_in_process
from slipway.local import Registry
from slipway.registry.records import Signature, TensorSpec
from slipway.settings import Settings
from slipway.validation.holdout import read_holdout
from slipway.validation.pipeline import Validation
from slipway.validation.policy import parse_policy
from slipway.validation.quality import quality_checks, score

CLASSES = Signature(
    [TensorSpec("input", "FP32", [-1, 4])],
    [TensorSpec("label", "INT64", [-1]), TensorSpec("probabilities", "FP32", [-1, 3])],
)


def test_multiclass_metrics_match_hand_counts() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 1, 1, 1, 2, 0])
    probabilities = np.eye(3, dtype=np.float32)[predicted] * 0.8 + 0.2 / 3
    scores = score(CLASSES, {"label": predicted, "probabilities": probabilities}, labels)
    assert scores.task == "classification"
    assert scores.metrics["accuracy"] == pytest.approx(4 / 6)
    assert scores.metrics["recall[0]"] == pytest.approx(0.5)
    assert scores.metrics["precision[1]"] == pytest.approx(2 / 3)
    assert scores.metrics["f1[2]"] == pytest.approx(2 / 3)
    assert 0.5 < scores.metrics["roc_auc"] < 1.0
    assert scores.plots["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_lower_is_better_metrics_are_held_the_other_way() -> None:
    signature = Signature([TensorSpec("x", "FP32", [-1, 1])], [TensorSpec("y", "FP32", [-1, 1])])
    truth = np.array([1.0, 2.0, 3.0])
    good = score(signature, {"y": np.array([[1.0], [2.0], [3.5]])}, truth)
    bad = score(signature, {"y": np.array([[2.0], [3.0], [4.0]])}, truth)
    assert good.metrics["mae"] == pytest.approx(0.5 / 3) and bad.metrics["rmse"] == 1.0
    bounds = {"rmse": parse_policy("quality: {rmse: {max_worse: 0.1}}").quality["rmse"]}
    worse = {c.name: c for c in quality_checks(bad, good, bounds, "m@1")}
    assert worse["rmse vs production"].verdict == "fail"
    assert worse["rmse vs production"].value == pytest.approx(1.0 - good.metrics["rmse"], abs=1e-6)
    better = {c.name: c for c in quality_checks(good, bad, bounds, "m@1")}
    assert better["rmse vs production"].verdict == "pass"
    assert better["mae"].verdict == "info"


def test_a_regression_model_worse_than_production_fails(tmp_path: Path) -> None:
    data = load_diabetes()
    x = data.data.astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(x, data.target, random_state=0)
    path = tmp_path / "holdout.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*(f"f{i}" for i in range(x.shape[1])), "progression"])
        writer.writerows([*row, y] for row, y in zip(x_test.tolist(), y_test, strict=True))
    settings = Settings.from_env({"SLIPWAY_HOME": str(tmp_path / "home")}, port=0)
    with Registry(settings) as registry:
        registry.register_sklearn("diabetes", LinearRegression().fit(x_train, y_train), x_train)
        # Degraded: so regularized it predicts almost the mean.
        degraded = Ridge(alpha=1e4).fit(x_train, y_train)
        registry.register_sklearn("diabetes", degraded, x_train)
        registry.store.create_deployment("diabetes-prod", "diabetes", 1)
        policy = parse_policy(
            "label: progression\nagainst: diabetes-prod\n"
            "quality: {rmse: {max_worse: 5}, r2: {min: 0.3}}\nintegration: {rows: 30}\n"
        )
        report = Validation(
            store=registry.store,
            artifacts=registry.artifacts,
            candidate=registry.store.get_version("diabetes", 2),
            holdout=read_holdout(path, "progression"),
            policy=policy,
            serve=serve_in_process(registry.artifacts),
        ).run()
    assert report.failed_required() == ["quality: rmse vs production", "quality: r2"]
    stages = {s.stage: s for s in report.stages}
    assert stages["integration"].passed and stages["quality"].data["task"] == "regression"


def test_iris_scores_from_a_real_model() -> None:
    from sklearn.linear_model import LogisticRegression

    data = load_iris()
    x = data.data.astype(np.float32)
    model = LogisticRegression(max_iter=1000).fit(x, data.target)
    outputs = {"label": model.predict(x), "probabilities": model.predict_proba(x)}
    metrics = score(CLASSES, outputs, data.target).metrics
    assert metrics["accuracy"] > 0.9 and metrics["roc_auc"] > 0.95
