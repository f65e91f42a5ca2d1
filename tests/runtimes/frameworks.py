"""Import a format's framework in a test, or skip; where the extras must be there, fail.

``make test`` installs requirements-extras.lock and sets ``SLIPWAY_TEST_EXTRAS_REQUIRED=1``, so
on CI a missing framework is a failure, never a quiet skip: CI is where every format proves
it works. A developer without the extras gets skips that say what to install.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest


def require(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        why = f"{module} is not installed ({exc}); run `make extras`"
        if os.environ.get("SLIPWAY_TEST_EXTRAS_REQUIRED"):
            pytest.fail(why, pytrace=False)
        pytest.skip(why, allow_module_level=True)


def scorer_savedmodel(directory: Path, seed: int) -> tuple[Path, Any]:
    """A small TensorFlow SavedModel saved under ``directory/scorer``: ``features`` [N, 4]
    FP32 → softmax ``scores`` [N, 3], weights drawn with ``seed``; returns the path and the
    module (its own outputs are the reference)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tf = require("tensorflow")

    class Scorer(tf.Module):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            rng = np.random.default_rng(seed)
            self.weights = tf.Variable(rng.normal(size=(4, 3)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="features")])
        def __call__(self, features: Any) -> dict[str, Any]:
            return {"scores": tf.nn.softmax(tf.matmul(features, self.weights))}

    module = Scorer()
    path = directory / "scorer"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.__call__})
    return path, module
