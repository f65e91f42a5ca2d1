"""Bundles of TorchScript, TensorFlow SavedModel and GGUF versions: each serving lock pins the
format's runtime at exactly the version of requirements-extras.lock and holds no training
library or other format's framework; the Dockerfile passes hadolint; the manifests validate;
a fresh registry installs the bundle and serves the same outputs.

The models are built here, as in tests/runtimes. One bundle per format, once per module (each
builds slipway's wheel and asks pip's resolver); no virtual environment is created here (the
ONNX reproducibility test in test_reproducible.py is the one that installs a lock).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import kubernetes_validate
import numpy as np
import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from slipway.local import Registry
from slipway.packaging.bundle import write_bundle
from slipway.packaging.install import install_bundle
from slipway.packaging.lock import canonical
from slipway.packaging.manifest import BundleManifest, read_manifest, sha256_file
from slipway.runtimes.base import load_runtime
from tests.packaging.conftest import settings_for
from tests.packaging.test_files import K8S_VERSION, hadolint
from tests.runtimes.frameworks import require, scorer_savedmodel

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==(\S+)")
# The distribution that serves each format, as requirements-extras.lock names it.
RUNTIME_PACKAGE = {
    "torchscript": "torch",
    "savedmodel": "tensorflow-cpu",
    "gguf": "llama-cpp-python",
}
# Never in a serving lock: training libraries, test tools, and the converters only
# registration uses (XGBoost/LightGBM become ONNX there).
NEVER = {
    "scikit-learn", "skl2onnx", "xgboost", "xgboost-cpu", "lightgbm", "onnxmltools", "pytest",
    "mypy", "ruff", "hypothesis", "gguf", "pyarrow",
}  # fmt: skip
FORMATS = list(RUNTIME_PACKAGE)


def extras_lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements-extras.lock").read_text().splitlines():
        found = PIN.match(line)
        if found:
            pins[canonical(found[1])] = found[2]
    return pins


def lock_pins(bundle: Path) -> dict[str, str]:
    pins = {}
    for line in (bundle / "requirements.lock").read_text().splitlines():
        found = PIN.match(line)
        if found:
            pins[canonical(found[1])] = found[2]
    return pins


# -- the models, built here ---------------------------------------------------------------


def torchscript_model(directory: Path) -> tuple[Path, dict[str, np.ndarray]]:
    torch = require("torch")
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
    with warnings.catch_warnings():  # torch 2.10+ deprecates TorchScript; serving it is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(module.eval())
    path = directory / "net.pt"
    scripted.save(str(path))
    rows = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    return path, {"input": rows}


def savedmodel_model(directory: Path) -> tuple[Path, dict[str, np.ndarray]]:
    path, _ = scorer_savedmodel(directory, seed=1)
    rows = np.random.default_rng(2).normal(size=(16, 4)).astype(np.float32)
    return path, {"features": rows}


def gguf_model(directory: Path) -> tuple[Path, dict[str, np.ndarray]]:
    require("llama_cpp")
    require("gguf")
    from tests.runtimes.tiny_llama import write_tiny_llama

    prompts = np.array([b"the cat sat on", b"a big red dog"], dtype=object)
    return write_tiny_llama(directory / "tiny.gguf"), {"prompt": prompts}


BUILDERS = {"torchscript": torchscript_model, "savedmodel": savedmodel_model, "gguf": gguf_model}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("formats") / "home"


@pytest.fixture(scope="module", params=FORMATS)
def packaged(
    request: pytest.FixtureRequest, home: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path, BundleManifest, dict[str, np.ndarray]]:
    """(format, bundle directory, manifest, sample inputs) for one version of each format."""
    format = request.param
    path, inputs = BUILDERS[format](tmp_path_factory.mktemp(format))
    sample = None if format == "gguf" else next(iter(inputs.values()))
    out = tmp_path_factory.mktemp("bundles") / format
    settings = settings_for(home, max_tokens=4)
    with Registry(settings) as registry:
        record = registry.register_model(format, path, sample=sample)
        assert record.format == format
        manifest = write_bundle(
            registry.store, registry.artifacts, format, record.number, out, settings
        )
    return format, out, manifest, inputs


def test_the_lock_pins_the_formats_runtime_exactly(
    packaged: tuple[str, Path, BundleManifest, dict[str, np.ndarray]],
) -> None:
    format, bundle, manifest, _ = packaged
    pins = lock_pins(bundle)
    package = RUNTIME_PACKAGE[format]
    wanted = extras_lock()[package]
    # The local label of a CPU build (torch 2.13.0+cpu) is the same release as the lock's pin.
    assert Version(pins[package]) in SpecifierSet(f"=={wanted}"), (pins[package], wanted)
    assert f"{package}=={pins[package]}" in manifest.requirements
    # Everything a replica needs to serve, and nothing it does not.
    for needed in ["onnxruntime", "numpy", "uvicorn", "sqlalchemy", "psycopg-binary", "typer"]:
        assert needed in pins
    others = set(RUNTIME_PACKAGE.values()) - {package}
    assert not (NEVER | others) & set(pins), sorted((NEVER | others) & set(pins))
    text = (bundle / "requirements.lock").read_text()
    assert text.count("--hash=sha256:") == len(pins)  # every file pinned by hash
    assert manifest.lock.sha256 == sha256_file(bundle / "requirements.lock")


def test_the_dockerfile_passes_hadolint(
    packaged: tuple[str, Path, BundleManifest, dict[str, np.ndarray]],
) -> None:
    format, bundle, manifest, _ = packaged
    result = hadolint(bundle / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr
    text = (bundle / "Dockerfile").read_text()
    froms = [line for line in text.splitlines() if line.startswith("FROM ")]
    # llama-cpp-python ships no wheels: its locked source archive is compiled in a builder
    # that has the C/C++ toolchain; the runtime stage stays slim for every format.
    builder = f"python:{manifest.python}" + ("" if format == "gguf" else "-slim")
    assert froms == [f"FROM {builder} AS builder", f"FROM python:{manifest.python}-slim AS runtime"]
    lock = (bundle / "requirements.lock").read_text()
    assert ("Built from source" in lock) == (format == "gguf")


@pytest.mark.parametrize("name", ["deployment.yaml", "service.yaml", "hpa.yaml", "configmap.yaml"])
def test_the_manifests_validate(
    packaged: tuple[str, Path, BundleManifest, dict[str, np.ndarray]], name: str
) -> None:
    _, bundle, _, _ = packaged
    document = yaml.safe_load((bundle / "kubernetes" / name).read_text())
    kubernetes_validate.validate(document, K8S_VERSION, strict=True)


def test_a_fresh_registry_serves_the_bundle_as_the_source_does(
    packaged: tuple[str, Path, BundleManifest, dict[str, np.ndarray]], home: Path, tmp_path: Path
) -> None:
    format, bundle, manifest, inputs = packaged
    assert read_manifest(bundle) == manifest
    assert manifest.version.format == format
    assert manifest.artifact.path.startswith("model/")
    assert sha256_file(bundle / manifest.artifact.path) == manifest.version.digest
    outputs = []
    for source in (home, tmp_path / "fresh"):
        with Registry(settings_for(source)) as registry:
            if source != home:
                installed = install_bundle(bundle, registry.store, registry.artifacts)
                got, want = installed.version, manifest.version
                assert (got.number, got.format, got.digest, got.signature) == (
                    want.number, want.format, want.digest, want.signature
                )  # fmt: skip
            record = registry.store.get_version(format, manifest.version.number)
            runtime = load_runtime(format, registry.artifacts.verified_path(record.digest))
            try:
                outputs.append(runtime.predict(dict(inputs)))
            finally:
                runtime.unload()
    source_outputs, bundle_outputs = outputs
    assert source_outputs.keys() == bundle_outputs.keys()
    for name in source_outputs:
        np.testing.assert_array_equal(source_outputs[name], bundle_outputs[name])
