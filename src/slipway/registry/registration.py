"""Registering a version: store the artifact, read its signature, record metadata and profile.

One path for every source: an ONNX file or bytes, or a scikit-learn estimator that is first
converted to ONNX and checked against its own predictions (see ``runtimes/sklearn.py``).
The artifact is loaded (signature, reference profile) from its complete copy before that copy
takes its place in the store, so a file that is not a model, or reference rows that do not fit
it, leave nothing behind. The artifact is written before the registry row, so a crash in
between leaves at worst an unreferenced blob, never a version without its artifact.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from slipway.errors import UnsupportedFormat
from slipway.registry.artifacts import ArtifactStore, Check
from slipway.registry.profile import build_profile
from slipway.registry.records import NewVersion, Profile, Signature, VersionMeta, VersionRecord
from slipway.registry.store import SqlStore, check_meta
from slipway.runtimes.trust import is_pickle_file


def _onnx_signature_and_runtime(path: Path) -> Any:
    from slipway.runtimes.onnx import OnnxRuntime

    return OnnxRuntime.load(path)


@dataclasses.dataclass(frozen=True)
class StoredModel:
    """A model in the artifact store, read (signature, reference profile) but not yet a version:
    :func:`record_model` records it. Importers store every model of a batch first, so that one
    that fails leaves no version of the others behind."""

    format: str
    digest: str
    size: int
    signature: Signature
    profile: Profile | None
    meta: VersionMeta


def record_model(
    store: SqlStore, model: str, stored: StoredModel, *, actor: str | None = None
) -> VersionRecord:
    """Record ``stored`` as the next version of ``model``."""
    (record,) = record_models(store, [(model, stored)], actor=actor)
    return record


def record_models(
    store: SqlStore, batch: Sequence[tuple[str, StoredModel]], *, actor: str | None = None
) -> list[VersionRecord]:
    """Record each ``(model, stored)`` as the next version of its model, in order, in one
    transaction: all of them or, when the database refuses one, none."""
    return store.register_versions(
        [
            NewVersion(
                model=model,
                format=stored.format,
                digest=stored.digest,
                size=stored.size,
                signature=stored.signature,
                meta=stored.meta,
                profile=stored.profile,
            )
            for model, stored in batch
        ],
        actor=actor,
    )


def register_onnx(
    store: SqlStore,
    artifacts: ArtifactStore,
    model: str,
    source: Path | bytes,
    *,
    meta: VersionMeta | None = None,
    reference: np.ndarray | dict[str, np.ndarray] | None = None,
    feature_names: list[str] | None = None,
    actor: str | None = None,
) -> VersionRecord:
    """Register an ONNX model. ``reference`` (training rows) builds the drift reference profile."""
    from slipway.registry.names import check_name

    check_name("model", model)
    stored = store_onnx(
        artifacts,
        source,
        meta=meta,
        reference=reference,
        feature_names=feature_names,
        name=f"{model}.onnx",
    )
    return record_model(store, model, stored, actor=actor)


def store_onnx(
    artifacts: ArtifactStore,
    source: Path | bytes,
    *,
    meta: VersionMeta | None = None,
    reference: np.ndarray | dict[str, np.ndarray] | None = None,
    feature_names: list[str] | None = None,
    name: str = "model.onnx",
) -> StoredModel:
    """The first half of :func:`register_onnx`: store the model and read it. ``name`` names
    bytes in errors."""
    meta = meta or VersionMeta()
    check_meta(meta)  # before anything is stored
    if isinstance(source, Path) and is_pickle_file(source):
        raise UnsupportedFormat(
            f"{source.name} is a pickle file, not ONNX; register the estimator from Python"
            " with slipway.register_sklearn(...) so it is converted to ONNX"
        )
    found: dict[str, Any] = {}

    def inspect(path: Path) -> None:
        # The copy about to be stored: what we validate is exactly what will be served.
        runtime = _onnx_signature_and_runtime(path)
        try:
            found["signature"] = runtime.signature
            if reference is not None:
                found["profile"] = _profile(runtime, reference, feature_names)
        finally:
            runtime.unload()

    if isinstance(source, Path):
        digest, size = artifacts.put_file(source, check=inspect)
    else:
        digest, size = artifacts.put_bytes(source, name=name, check=inspect)
    return StoredModel("onnx", digest, size, found["signature"], found.get("profile"), meta)


def _profile(
    runtime: Any, reference: np.ndarray | dict[str, np.ndarray], feature_names: list[str] | None
) -> Profile:
    if isinstance(reference, dict):
        inputs = reference
        features: np.ndarray | dict[str, np.ndarray] = reference
    else:
        inputs = {runtime.signature.inputs[0].name: reference}
        features = reference
    outputs = runtime.predict(_as_signature_dtypes(runtime.signature, inputs))
    predictions = {
        name: value
        for name, value in outputs.items()
        if value.ndim == 1 or (value.ndim == 2 and value.shape[1] <= 32)
    }
    flat = {}
    for name, value in predictions.items():
        if value.ndim == 1:
            flat[name] = value
        else:
            for i in range(value.shape[1]):
                flat[f"{name}[{i}]"] = value[:, i]
    return build_profile(features, feature_names=feature_names, predictions=flat)


def _as_signature_dtypes(
    signature: Signature, inputs: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Reference rows cast to the dtypes the model takes, as serving casts requests: training
    rows are float64 unless someone converted them, and a float32 SavedModel or TorchScript
    module refuses those (ONNX casts by itself). Only casts within a kind (float64 → float32,
    int → float) are made; anything else goes to the runtime as given, which says what is
    wrong."""
    from slipway.runtimes.base import V2_TO_NUMPY

    wanted = {spec.name: V2_TO_NUMPY.get(spec.datatype) for spec in signature.inputs}
    cast = {}
    for name, value in inputs.items():
        array = np.asarray(value)
        dtype = wanted.get(name)
        if (
            dtype is not None
            and array.dtype != dtype
            and array.dtype.kind in "biuf"
            and dtype.kind in "biuf"
            and np.can_cast(array.dtype, dtype, casting="same_kind")
        ):
            array = array.astype(dtype)
        cast[name] = array
    return cast


def register_sklearn(
    store: SqlStore,
    artifacts: ArtifactStore,
    model: str,
    estimator: Any,
    training_data: np.ndarray,
    *,
    meta: VersionMeta | None = None,
    feature_names: list[str] | None = None,
    actor: str | None = None,
) -> VersionRecord:
    """Convert a fitted scikit-learn estimator to ONNX, verify it, and register it.

    XGBoost and LightGBM scikit-learn wrappers are converted with onnxmltools instead
    (``runtimes/boosting.py``) and verified the same way.

    Hyperparameters come from the estimator, the training-data hash from ``training_data``,
    and the reference profile from the training rows and the model's outputs on them.
    """
    from slipway.runtimes.boosting import boosting_framework, convert_boosting, describe_boosting
    from slipway.runtimes.sklearn import convert_sklearn, describe_estimator

    try:
        data = np.asarray(training_data, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        from slipway.errors import InvalidInput

        raise InvalidInput(
            f"the training data must be numeric rows: {exc}; the converted model takes one"
            " float tensor, so encode text columns as numbers first"
        ) from None
    # XGBoost and LightGBM wrappers go through onnxmltools, the rest through skl2onnx.
    framework = boosting_framework(estimator)
    if framework is None:
        onnx_bytes = convert_sklearn(estimator, data)
        hyperparameters = describe_estimator
    else:
        onnx_bytes = convert_boosting(estimator, data)
        hyperparameters = describe_boosting
    meta = meta or VersionMeta()
    updates: dict[str, Any] = {}
    if not meta.hyperparameters:
        updates["hyperparameters"] = hyperparameters(estimator)
    if meta.training_data_sha256 is None:
        updates["training_data_sha256"] = hashlib.sha256(
            np.ascontiguousarray(data).tobytes()
        ).hexdigest()
    if not meta.tags.get("framework"):
        updates["tags"] = {
            **meta.tags,
            "framework": f"{framework or 'sklearn'}:{type(estimator).__name__}",
        }
    meta = msgspec.structs.replace(meta, **updates)
    return register_onnx(
        store,
        artifacts,
        model,
        onnx_bytes,
        meta=meta,
        reference=data,
        feature_names=feature_names,
        actor=actor,
    )


def register_model(
    store: SqlStore,
    artifacts: ArtifactStore,
    model: str,
    source: Path,
    *,
    format: str | None = None,
    sample: np.ndarray | dict[str, np.ndarray] | None = None,
    meta: VersionMeta | None = None,
    reference: np.ndarray | dict[str, np.ndarray] | None = None,
    feature_names: list[str] | None = None,
    actor: str | None = None,
) -> VersionRecord:
    """Register a model file or directory of any format (detected when ``format`` is None):
    :func:`store_model`, then :func:`record_model`."""
    from slipway.registry.names import check_name

    check_name("model", model)
    stored = store_model(
        artifacts,
        source,
        format=format,
        sample=sample,
        meta=meta,
        reference=reference,
        feature_names=feature_names,
    )
    return record_model(store, model, stored, actor=actor)


def store_model(
    artifacts: ArtifactStore,
    source: Path,
    *,
    format: str | None = None,
    sample: np.ndarray | dict[str, np.ndarray] | None = None,
    meta: VersionMeta | None = None,
    reference: np.ndarray | dict[str, np.ndarray] | None = None,
    feature_names: list[str] | None = None,
) -> StoredModel:
    """Store a model file or directory of any format and read it, without recording a version.

    ONNX goes through :func:`store_onnx`. For the other formats the runtime's package must
    be installed (else ``MissingExtra`` with the install command, before anything is stored);
    the artifact (a SavedModel directory packed into one archive) is loaded from its copy before
    that copy is stored, and its signature read: from the ``serving_default`` signature
    (SavedModel), fixed prompt → text (GGUF), or by running ``sample`` rows (TorchScript, which
    records no shapes; ``reference`` serves as the sample when none is given).
    """
    from slipway.runtimes.base import FORMATS, load_runtime
    from slipway.runtimes.detect import detect_format
    from slipway.runtimes.extras import import_extra

    check_meta(meta or VersionMeta())  # before anything is stored
    source = Path(source)
    format = format or detect_format(source)
    if format not in FORMATS:
        raise UnsupportedFormat(f"unknown format {format!r}; use one of {', '.join(FORMATS)}")
    if format == "onnx":
        return store_onnx(
            artifacts, source, meta=meta, reference=reference, feature_names=feature_names
        )
    framework = import_extra(format)  # refuse before storing anything
    example = sample if sample is not None else reference
    if format == "torchscript" and example is None:
        from slipway.errors import InvalidInput

        raise InvalidInput(
            "a TorchScript file records no input shapes or dtypes; give sample rows"
            " (--reference on the command line) so Slipway can read its signature"
        )
    found: dict[str, Any] = {}

    def inspect(path: Path) -> None:
        runtime = load_runtime(format, path)
        try:
            if format == "torchscript" and example is not None:
                from slipway.runtimes.torchscript import describe

                runtime.signature = describe(runtime, example)  # type: ignore[arg-type]
            found["signature"] = runtime.signature
            if reference is not None and format != "gguf":
                found["profile"] = _profile(runtime, reference, feature_names)
        finally:
            runtime.unload()

    digest, size = _put_model(artifacts, format, source, check=inspect)
    signature, profile = found["signature"], found.get("profile")
    meta = meta or VersionMeta()
    if not meta.tags.get("framework"):
        version = getattr(framework, "__version__", "unknown")
        meta = msgspec.structs.replace(
            meta, tags={**meta.tags, "framework": f"{framework.__name__}:{version}"}
        )
    return StoredModel(format, digest, size, signature, profile, meta)


def _put_model(
    artifacts: ArtifactStore, format: str, source: Path, *, check: Check
) -> tuple[str, int]:
    if format != "savedmodel":
        if source.is_dir():
            raise UnsupportedFormat(f"{source} is a directory; a {format} model is one file")
        return artifacts.put_file(source, check=check)
    import tempfile

    from slipway.runtimes.savedmodel import pack

    with tempfile.TemporaryDirectory(prefix="slipway-pack-") as tmp:
        archive = Path(tmp) / "savedmodel.tar"
        pack(source, archive)
        return artifacts.put_file(archive, check=check)
