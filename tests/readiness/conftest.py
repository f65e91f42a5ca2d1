"""A real registry on its way to production, and a real bundle of its candidate.

``base_home`` holds iris@1 (registered without a training-data reference) serving on the
deployment ``iris-prod``, and iris@2 registered with its full lineage: the state right after
``slipway models register``. ``bundle`` is written once per session by ``write_bundle`` from a
copy of it (it builds slipway's wheel and asks pip for the serving lock); tests copy
``base_home`` and record that bundle, or look at the copy it was written from.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from slipway.local import Registry
from slipway.packaging.bundle import write_bundle
from slipway.packaging.manifest import BundleManifest
from slipway.settings import Settings
from slipway.validation.checks import Check, Report, StageResult
from slipway.validation.reports import StoredReport, save_report

DEPLOYMENT = "iris-prod"


def settings_for(home: Path, **overrides: object) -> Settings:
    return Settings.from_env({"SLIPWAY_HOME": str(home)}, port=0, **overrides)


@pytest.fixture(scope="session")
def base_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = load_iris()
    x = data.data.astype(np.float32)
    home = tmp_path_factory.mktemp("readiness") / "home"
    with Registry(settings_for(home)) as registry:
        first = LogisticRegression(C=0.01, max_iter=1000).fit(x, data.target)
        registry.register_sklearn("iris", first, x, actor="dev")
        registry.store.create_deployment(DEPLOYMENT, "iris", 1, actor="dev")
        second = LogisticRegression(max_iter=1000).fit(x, data.target)
        registry.register_sklearn(
            "iris",
            second,
            x,
            actor="dev",
            metrics={"accuracy": 0.97},
            training_data="s3://datasets/iris/2026-11.parquet",
        )
    return home


@pytest.fixture(scope="session")
def bundle(
    tmp_path_factory: pytest.TempPathFactory, base_home: Path
) -> tuple[Path, BundleManifest, Path]:
    """A bundle of iris@2, the manifest, and the home whose registry wrote it."""
    home = tmp_path_factory.mktemp("packaged") / "home"
    shutil.copytree(base_home, home)
    out = tmp_path_factory.mktemp("bundles") / "iris-2"
    with Registry(settings_for(home)) as registry:
        manifest = write_bundle(
            registry.store, registry.artifacts, "iris", 2, out, registry.settings, actor="dev"
        )
    return out, manifest, home


@pytest.fixture
def home(tmp_path: Path, base_home: Path) -> Path:
    copy = tmp_path / "home"
    shutil.copytree(base_home, copy)
    return copy


@pytest.fixture
def registry(home: Path) -> Iterator[Registry]:
    with Registry(settings_for(home)) as opened:
        yield opened


def validation_report(
    registry: Registry, stages: dict[str, list[Check]], *, version: int = 2
) -> StoredReport:
    """Store a validation report on iris@``version`` as ``slipway validate`` does."""
    report = Report(
        model="iris",
        version=version,
        policy="default",
        against=None,
        created_at="2026-11-29T12:00:00+00:00",
        stages=[StageResult(name, True, checks) for name, checks in stages.items()],
    )
    return save_report(registry.store, report, "<html></html>", actor="ci")


def passing(name: str, value: float = 1.0) -> Check:
    return Check(name, value, ">= 0.9", "pass")


def failing(name: str, value: float = 0.5) -> Check:
    return Check(name, value, ">= 0.9", "fail", "below the gate")
