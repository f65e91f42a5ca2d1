"""In-process API for notebooks, scripts and tests: the registry on this machine, no server.

import slipway.local as sw
version = sw.register_sklearn("churn", fitted_estimator, X_train, metrics={"auc": 0.91})
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from slipway.registry.artifacts import ArtifactStore
from slipway.registry.records import VersionMeta, VersionRecord
from slipway.registry.store import SqlStore
from slipway.settings import Settings


class Registry:
    """The SQL store and the artifact store of one Slipway home, opened together."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.from_env(os.environ)
        self.settings.home.mkdir(parents=True, exist_ok=True)
        self.store = SqlStore(self.settings.database_url)
        self.artifacts = ArtifactStore(self.settings.artifacts_dir)

    def register_sklearn(
        self,
        model: str,
        estimator: Any,
        data: np.ndarray,
        *,
        feature_names: list[str] | None = None,
        actor: str | None = None,
        **meta: Any,
    ) -> VersionRecord:
        """Convert a fitted estimator to ONNX, verify it, and register it with its metadata.

        ``data`` is a sample of the training rows: it checks the conversion and builds the
        drift profile. Keyword ``meta`` fields (``description``, ``metrics``, ``training_data``
        as a text reference, ``hyperparameters``, ``tags``) are stored with the version.
        """
        from slipway.registry.registration import register_sklearn

        return register_sklearn(
            self.store,
            self.artifacts,
            model,
            estimator,
            data,
            meta=VersionMeta(**meta),
            feature_names=feature_names,
            actor=actor,
        )

    def register_onnx(
        self,
        model: str,
        path: Path | str,
        *,
        reference: np.ndarray | None = None,
        feature_names: list[str] | None = None,
        actor: str | None = None,
        **meta: Any,
    ) -> VersionRecord:
        """Register an ONNX file; ``reference`` rows (training data) build the drift profile."""
        from slipway.registry.registration import register_onnx

        return register_onnx(
            self.store,
            self.artifacts,
            model,
            Path(path),
            meta=VersionMeta(**meta),
            reference=reference,
            feature_names=feature_names,
            actor=actor,
        )

    def register_model(
        self,
        model: str,
        path: Path | str,
        *,
        format: str | None = None,
        sample: np.ndarray | dict[str, np.ndarray] | None = None,
        reference: np.ndarray | dict[str, np.ndarray] | None = None,
        feature_names: list[str] | None = None,
        actor: str | None = None,
        **meta: Any,
    ) -> VersionRecord:
        """Register a model file or directory of any format (ONNX, TorchScript, SavedModel,
        GGUF); the format is detected from the file unless given. TorchScript needs
        ``sample`` rows (or ``reference`` rows) to read its signature. See docs/formats.md.
        """
        from slipway.registry.registration import register_model

        return register_model(
            self.store,
            self.artifacts,
            model,
            Path(path),
            format=format,
            sample=sample,
            meta=VersionMeta(**meta),
            reference=reference,
            feature_names=feature_names,
            actor=actor,
        )

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def register_sklearn(model: str, estimator: Any, data: np.ndarray, **kwargs: Any) -> VersionRecord:
    """Register a scikit-learn estimator in the registry of ``SLIPWAY_HOME``."""
    with Registry() as registry:
        return registry.register_sklearn(model, estimator, data, **kwargs)


def register_onnx(model: str, path: Path | str, **kwargs: Any) -> VersionRecord:
    """Register an ONNX file in the registry of ``SLIPWAY_HOME``."""
    with Registry() as registry:
        return registry.register_onnx(model, path, **kwargs)


def register_model(model: str, path: Path | str, **kwargs: Any) -> VersionRecord:
    """Register a model file or directory of any format in the registry of ``SLIPWAY_HOME``."""
    with Registry() as registry:
        return registry.register_model(model, path, **kwargs)
