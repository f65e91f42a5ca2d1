"""The ``slipway`` command, run as a user runs it: a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from skl2onnx import to_onnx
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression


def slipway(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SLIPWAY_HOME": str(home), "COLUMNS": "200", "NO_COLOR": "1"}
    env.pop("SLIPWAY_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "slipway.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def iris_onnx(tmp_path: Path) -> tuple[Path, np.ndarray]:
    data = load_iris()
    x = data.data.astype(np.float32)
    estimator = LogisticRegression(max_iter=1000).fit(x, data.target)
    path = tmp_path / "iris.onnx"
    path.write_bytes(
        to_onnx(estimator, x[:1], options={id(estimator): {"zipmap": False}}).SerializeToString()
    )
    np.save(tmp_path / "train.npy", x)
    return path, x


def test_register_list_show_deploy(tmp_path, iris_onnx) -> None:
    home = tmp_path / "home"
    path, _ = iris_onnx
    assert slipway(home, "init").returncode == 0
    result = slipway(
        home,
        "models",
        "register",
        "iris",
        str(path),
        "--description",
        "first",
        "--metric",
        "accuracy=0.97",
        "--param",
        "C=1.0",
        "--tag",
        "team=ml",
        "--reference",
        str(tmp_path / "train.npy"),
    )
    assert result.returncode == 0, result.stderr
    assert "registered iris@1" in result.stdout
    assert slipway(home, "models", "register", "iris", str(path)).returncode == 0
    listing = slipway(home, "models", "list")
    assert "iris" in listing.stdout and " 2 " in listing.stdout
    shown = slipway(home, "models", "show", "iris@1", "--json")
    record = json.loads(shown.stdout)
    assert record["meta"]["metrics"] == {"accuracy": 0.97}
    assert record["meta"]["hyperparameters"] == {"C": "1.0"}
    assert record["profile"]["rows"] == 150
    assert "first" in slipway(home, "models", "show", "iris").stdout
    deployed = slipway(home, "deploy", "iris-prod", "iris@1")
    assert deployed.returncode == 0 and "iris@1" in deployed.stdout
    moved = slipway(home, "deploy", "iris-prod", "iris")
    assert "iris@2" in moved.stdout and "previous 1" in moved.stdout
    assert "iris-prod" in slipway(home, "deployments", "list").stdout


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        pytest.param(["models", "show", "ghost"], 3, "not found", id="unknown-model"),
        pytest.param(["models", "show", "ghost@x"], 2, "", id="bad-ref"),
        pytest.param(["deploy", "d", "ghost@1"], 3, "not found", id="deploy-unknown"),
        pytest.param(
            ["models", "register", "bad/name", "README.md"], 2, "invalid model name", id="bad-name"
        ),
    ],
)
def test_failures_exit_nonzero_with_one_line(tmp_path, args, code, fragment) -> None:
    home = tmp_path / "home"
    if args[-1] == "README.md":
        args = [*args[:-1], str(Path(__file__).parents[1] / "README.md")]
    result = slipway(home, *args)
    assert result.returncode == code, (result.stdout, result.stderr)
    assert result.stderr.startswith("error:")
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


def test_a_long_error_is_one_line_in_a_log_of_any_width(tmp_path) -> None:
    # CI captures stderr through a pipe: no terminal, so rich would wrap at 80 columns.
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "SLIPWAY_DATABASE_URL")}
    env.update(SLIPWAY_HOME=str(tmp_path / "home"), NO_COLOR="1")
    name = "model-" + "x" * 80
    result = subprocess.run(
        [sys.executable, "-m", "slipway.cli", "models", "show", name],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("error:") and result.stderr.count("\n") == 1, result.stderr
    assert name in result.stderr


def test_pickle_refused_unless_trusted_then_converted(tmp_path, iris_onnx) -> None:
    import joblib

    _, x = iris_onnx
    data = load_iris()
    path = tmp_path / "model.joblib"
    joblib.dump(LogisticRegression(max_iter=1000).fit(x, data.target), path)
    home = tmp_path / "home"
    result = slipway(home, "models", "register", "m", str(path))
    assert result.returncode == 5 and "pickle" in result.stderr and "--trusted" in result.stderr
    result = slipway(home, "models", "register", "m", str(path), "--trusted")
    assert result.returncode != 0 and "--reference" in result.stderr
    train = str(tmp_path / "train.npy")
    result = slipway(home, "models", "register", "m", str(path), "--trusted", "--reference", train)
    assert result.returncode == 0, result.stderr
    shown = slipway(home, "models", "show", "m@1", "--json")
    version = json.loads(shown.stdout)
    assert version["format"] == "onnx"
    assert version["meta"]["tags"]["framework"] == "sklearn:LogisticRegression"


def test_demo_once(tmp_path) -> None:
    result = slipway(tmp_path / "home", "demo", "--once", "--port", "0", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "registered breast-cancer@1" in out and "registered breast-cancer@2" in out
    assert "/v2/models/breast-cancer/infer" in out and '"predictions"' in out
    assert '"model_version": "1"' in out
